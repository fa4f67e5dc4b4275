"""AdaIR (Cui et al., ICLR 2025): Restormer plus three image-guided frequency blocks, registered as ``AdaIR``.

Feature taps: the Restormer names ``encoder_level1..3``, ``latent``, ``decoder_level3..1``, ``refinement`` (see
:mod:`basicsr_unlearn.archs.restormer_arch`); ``latent``, ``decoder_level3`` and ``decoder_level2`` are taken before
their frequency block ``fre1``, ``fre2``, ``fre3`` (the degradation-specific parts, reference names).

Layers, names and shapes follow the reference (``c-yn/AdaIR`` ``net/model.py``): the cross-attentions use ``heads[2]``
heads, the ChannelGate MLP is two bias-free 1x1 convs, the SpatialGate 7x7 conv has no bias. The reference's ``conv``
(3->C) and ``score_gen`` (7x7, 2->2), built but never called, are omitted (``tools/convert_checkpoint.py`` drops them
from official checkpoints). Defaults give 28,766,086 parameters.

The low-frequency mask, ``fre_mask``:

- ``'reference'``: the official split, a centred box of half-extent ``int((H // 128) * r)`` frequency bins
  (``r = sigmoid(rate_conv(...))``). Use it for official checkpoints and anything fine-tuned or unlearned from
  them: converted official weights then give the official outputs. The integer cast gives ``rate_conv`` no gradient
  (DDP then needs ``find_unused_parameters: true``), and for maps under 128 px (all maps of 128-px training patches)
  the box is empty, so "low" is zero in training and non-empty only on large test images.
- ``'soft'`` (default): a soft, size-independent box (:func:`soft_lowpass_mask`): the half-extent is the fraction
  ``r`` of the half-spectrum with sigmoid edges one bin wide. The split exists at every size, is the same relative
  band at training and test resolution, and ``rate_conv`` learns through it. Use it to train from scratch.

Each block ends in ``out * para1 + feat * para2`` with ``para1 = 0``, ``para2 = 1`` at initialisation, so a fresh
AdaIR computes exactly the Restormer with the same backbone weights.
"""
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor, nn

from basicsr_unlearn.archs.restormer_arch import DEFAULT_HEADS, DEFAULT_NUM_BLOCKS, RestormerUNet
from basicsr_unlearn.archs.restormer_blocks import channel_attention, check_heads_divide

FRE_MASKS = ('soft', 'reference')
REFERENCE_MASK_DIVISOR = 128


def _signed_bins(n: int, device: torch.device) -> Tensor:
    """Signed frequency index of each bin of an unshifted length-``n`` spectrum (``0, 1, ..., -2, -1``)."""
    return torch.fft.fftfreq(n, d=1.0 / n, device=device).round().long()


def soft_lowpass_mask(ratios: Tensor, height: int, width: int, softness: float = 1.0) -> Tensor:
    """Soft centred low-frequency box for an *unshifted* 2-D spectrum (DC at index 0, as ``torch.fft.fft2`` gives).

    Along each axis a frequency bin ``f`` (signed index from ``torch.fft.fftfreq``) is kept with weight
    ``sigmoid((r * n / 2 - |f|) / softness)``, so the half-extent is the fraction ``r`` of the half-spectrum.

    Args:
        ratios: (B, 2) extents (r_h, r_w) in [0, 1].
        height, width: spectrum size.
        softness: edge width in frequency bins.

    Returns:
        (B, 1, height, width) mask in (0, 1), differentiable w.r.t. ``ratios``.

    Example:
        >>> soft_lowpass_mask(torch.tensor([[0.5, 0.5]]), 8, 8).shape
        torch.Size([1, 1, 8, 8])
    """
    def axis(r: Tensor, n: int) -> Tensor:
        freq = _signed_bins(n, r.device).abs().to(r.dtype)  # |f| in bins
        return torch.sigmoid((r[:, None] * n / 2 - freq) / softness)  # B, n

    return (axis(ratios[:, 0], height)[:, :, None] * axis(ratios[:, 1], width)[:, None, :])[:, None]


def reference_lowpass_mask(ratios: Tensor, height: int, width: int,
                           divisor: int = REFERENCE_MASK_DIVISOR) -> Tensor:
    """The official AdaIR box for an *unshifted* spectrum: 1 where ``-k <= f < k`` on both axes, else 0.

    ``k = int((n // divisor) * r)`` per axis and sample, truncated in the dtype of ``ratios`` as in the reference; the
    reference sets rows ``n//2 - k .. n//2 + k - 1`` of the ``roll``-centred spectrum, i.e. signed bins ``-k .. k-1``.

    Args:
        ratios: (B, 2) ratios (r_h, r_w) in (0, 1).
        height, width: spectrum size.
        divisor: the reference's ``n`` (128).

    Returns:
        (B, 1, height, width) float mask of 0s and 1s (no gradient w.r.t. ``ratios``).

    Example:
        >>> m = reference_lowpass_mask(torch.tensor([[0.9, 0.5]]), 512, 256)
        >>> int(m[0, 0, :, 0].sum()), int(m[0, 0, 0, :].sum())  # k = int(4 * 0.9) = 3, int(2 * 0.5) = 1
        (6, 2)
    """
    def axis(r: Tensor, n: int) -> Tensor:
        k = (r * (n // divisor)).int()[:, None]  # B, 1
        f = _signed_bins(n, r.device)[None]  # 1, n
        return ((f >= -k) & (f < k)).float()  # B, n

    return (axis(ratios[:, 0], height)[:, :, None] * axis(ratios[:, 1], width)[:, None, :])[:, None]


class ChannelCrossAttention(nn.Module):
    """Channel cross-attention: query from ``x``, key and value from ``y``; (B, C, H, W) in and out."""

    def __init__(self, dim: int, num_head: int, bias: bool) -> None:
        super().__init__()
        self.num_head = num_head
        self.temperature = nn.Parameter(torch.ones(num_head, 1, 1))
        self.q = nn.Conv2d(dim, dim, 1, bias=bias)
        self.q_dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim, bias=bias)
        self.kv = nn.Conv2d(dim, dim * 2, 1, bias=bias)
        self.kv_dwconv = nn.Conv2d(dim * 2, dim * 2, 3, padding=1, groups=dim * 2, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=bias)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        q = self.q_dwconv(self.q(x))
        k, v = self.kv_dwconv(self.kv(y)).chunk(2, dim=1)
        return self.project_out(channel_attention(q, k, v, self.num_head, self.temperature))


class ChannelGate(nn.Module):
    """(B, C, H, W) -> (B, C, 1, 1) sigmoid weights from avg- and max-pooled descriptors through a shared MLP.

    The MLP is two bias-free 1x1 convs C -> C/16 -> C with a ReLU between (the reference layout).
    """

    def __init__(self, dim: int, reduction: int = 16) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Conv2d(dim, dim // reduction, 1, bias=False), nn.ReLU(),
                                 nn.Conv2d(dim // reduction, dim, 1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        att = self.mlp(x.mean(dim=(-2, -1), keepdim=True)) + self.mlp(x.amax(dim=(-2, -1), keepdim=True))
        return torch.sigmoid(att)


class SpatialGate(nn.Module):
    """(B, C, H, W) -> (B, 1, H, W) sigmoid weights from the per-pixel channel max and mean (bias-free conv 7x7)."""

    def __init__(self) -> None:
        super().__init__()
        self.spatial = nn.Conv2d(2, 1, 7, padding=3, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], 1)
        return torch.sigmoid(self.spatial(pooled))


class FreRefine(nn.Module):
    """Bidirectional modulation: ``proj(high * ChannelGate(low) + low * SpatialGate(high))``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.SpatialGate = SpatialGate()
        self.ChannelGate = ChannelGate(dim)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, low: Tensor, high: Tensor) -> Tensor:
        return self.proj(high * self.ChannelGate(low) + low * self.SpatialGate(high))


class FreModule(nn.Module):
    """Adaptive frequency learning block guided by the input image.

    Args:
        dim: feature width C (divisible by ``num_heads``, C >= 16 so C/8 and C/16 are >= 1).
        num_heads: heads of the three cross-attentions.
        bias: bias in the cross-attention convolutions.
        in_dim: image channels.
        fre_mask: ``'soft'`` or ``'reference'`` low-frequency mask (see the module docstring).
    """

    def __init__(self, dim: int, num_heads: int, bias: bool, in_dim: int = 3, fre_mask: str = 'soft') -> None:
        super().__init__()
        if fre_mask not in FRE_MASKS:
            raise ValueError(f"AdaIR: fre_mask={fre_mask!r}; expected one of {', '.join(FRE_MASKS)}")
        self.mask_fn = soft_lowpass_mask if fre_mask == 'soft' else reference_lowpass_mask
        self.conv1 = nn.Conv2d(in_dim, dim, 3, padding=1, bias=False)
        self.para1 = nn.Parameter(torch.zeros(dim, 1, 1))
        self.para2 = nn.Parameter(torch.ones(dim, 1, 1))
        self.channel_cross_l = ChannelCrossAttention(dim, num_heads, bias)
        self.channel_cross_h = ChannelCrossAttention(dim, num_heads, bias)
        self.channel_cross_agg = ChannelCrossAttention(dim, num_heads, bias)
        self.frequency_refine = FreRefine(dim)
        self.rate_conv = nn.Sequential(nn.Conv2d(dim, dim // 8, 1, bias=False), nn.GELU(),
                                       nn.Conv2d(dim // 8, 2, 1, bias=False))

    def split_frequencies(self, guide: Tensor) -> tuple[Tensor, Tensor]:
        """(B, C, H, W) guidance feature -> (high, low) magnitude maps, each (B, C, H, W). FFT in fp32 or wider."""
        work = torch.promote_types(guide.dtype, torch.float32)  # half-precision FFTs support only 2^n sizes
        ratios = torch.sigmoid(self.rate_conv(F.adaptive_avg_pool2d(guide, 1))).flatten(1).to(work)  # B, 2
        spectrum = torch.fft.fft2(guide.to(work), norm='forward')
        mask = self.mask_fn(ratios, *guide.shape[-2:])
        low = torch.fft.ifft2(spectrum * mask, norm='forward').abs().to(guide.dtype)
        high = torch.fft.ifft2(spectrum * (1 - mask), norm='forward').abs().to(guide.dtype)
        return high, low

    def forward(self, img: Tensor, feat: Tensor) -> Tensor:
        """``img`` (B, in_dim, H, W) guides ``feat`` (B, C, h, w); returns (B, C, h, w)."""
        guide = self.conv1(F.interpolate(img, size=feat.shape[-2:], mode='bilinear', align_corners=False))
        high, low = self.split_frequencies(guide)
        high = self.channel_cross_l(high, feat)
        low = self.channel_cross_h(low, feat)
        out = self.channel_cross_agg(feat, self.frequency_refine(low, high))
        return out * self.para1 + feat * self.para2


@ARCH_REGISTRY.register()
class AdaIR(RestormerUNet):
    """AdaIR all-in-one restoration network: the unchanged Restormer plus ``fre1..3``.

    Args:
        inp_channels, out_channels, dim, num_blocks, num_refinement_blocks, heads, ffn_expansion_factor, bias,
            LayerNorm_type: the Restormer backbone (see :class:`~basicsr_unlearn.archs.restormer_arch.Restormer`).
            ``dim >= 8`` so that the smallest frequency block (width 2dim) keeps C/16 >= 1; ``heads[2]`` (the
            frequency blocks' heads, as in the reference) must divide 2dim.
        decoder: build the frequency blocks (the published model); ``False`` gives the plain Restormer.
        fre_mask: ``'soft'`` (train from scratch) or ``'reference'`` (official checkpoints); see the module docstring.

    Example:
        >>> net = AdaIR(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 1, 2, 2))
        >>> net(torch.rand(1, 3, 40, 40)).shape
        torch.Size([1, 3, 40, 40])
    """

    def __init__(self, inp_channels: int = 3, out_channels: int = 3, dim: int = 48,
                 num_blocks: Sequence[int] = DEFAULT_NUM_BLOCKS, num_refinement_blocks: int = 4,
                 heads: Sequence[int] = DEFAULT_HEADS, ffn_expansion_factor: float = 2.66, bias: bool = False,
                 LayerNorm_type: str = 'WithBias', decoder: bool = True, fre_mask: str = 'soft') -> None:
        super().__init__('AdaIR', inp_channels, out_channels, dim, num_blocks, num_refinement_blocks, heads,
                         ffn_expansion_factor, bias, LayerNorm_type)
        self.decoder = decoder
        if not decoder:
            return
        if dim < 8:
            raise ValueError(f'AdaIR: dim={dim} must be >= 8 (the smallest frequency block has width 2*dim and needs '
                             f'2*dim/16 >= 1 channels in its ChannelGate)')
        check_heads_divide('AdaIR', 'heads[2]', dim * 2, heads[2])
        self.fre1 = FreModule(dim * 8, heads[2], bias, inp_channels, fre_mask)
        self.fre2 = FreModule(dim * 4, heads[2], bias, inp_channels, fre_mask)
        self.fre3 = FreModule(dim * 2, heads[2], bias, inp_channels, fre_mask)

    _STAGE = {'latent': 'fre1', 'decoder_level3': 'fre2', 'decoder_level2': 'fre3'}

    def adapt(self, point: str, feat: Tensor, img: Tensor) -> Tensor:
        """Frequency block after ``point``, guided by the (padded) input image."""
        if not self.decoder:
            return feat
        return getattr(self, self._STAGE[point])(img, feat)
