"""PromptIR (Potlapalli et al., NeurIPS 2023): Restormer with three prompt stages in the decoder, as ``PromptIR``.

Feature taps: the Restormer names ``encoder_level1..3``, ``latent``, ``decoder_level3..1``, ``refinement`` (see
:mod:`basicsr_unlearn.archs.restormer_arch`); ``latent``, ``decoder_level3`` and ``decoder_level2`` are taken before
their prompt stage. Degradation-specific parts: ``prompt1..3`` (prompt generation) and ``noise_level1..3`` +
``reduce_noise_level1..3`` (prompt interaction), the reference names, so reference checkpoints load.

Deviations from the reference: the six 1x1 convs the reference builds but never calls (``chnl_reduce1..3``,
``reduce_noise_channel_1..3``; 215,296 parameters) are omitted, so every parameter gets a gradient and DDP needs no
``find_unused_parameters``; official checkpoints (Lightning ``.ckpt``, keys ``net.*``) are converted with
``tools/convert_checkpoint.py``, which drops those keys (``strict_load_g: false`` would silently load nothing).
``decoder=False`` builds the plain Restormer (the reference's is a shape mismatch). Prompt widths, sizes and length,
hard-coded in the reference, are arguments. Defaults give 35,376,967 parameters.
"""
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor, nn

from basicsr_unlearn.archs.restormer_arch import DEFAULT_HEADS, DEFAULT_NUM_BLOCKS, RestormerUNet
from basicsr_unlearn.archs.restormer_blocks import TransformerBlock, check_heads_divide


class PromptGenBlock(nn.Module):
    """Prompt generation: a feature-conditioned softmax mix of ``prompt_len`` learnable prompt components.

    Args:
        prompt_dim: prompt channels Cp.
        prompt_len: number of components L.
        prompt_size: component resolution S (bilinearly resized to the feature size, so any size works).
        lin_dim: channels Cf of the conditioning feature.
    """

    def __init__(self, prompt_dim: int, prompt_len: int, prompt_size: int, lin_dim: int) -> None:
        super().__init__()
        self.prompt_param = nn.Parameter(torch.rand(1, prompt_len, prompt_dim, prompt_size, prompt_size))
        self.linear_layer = nn.Linear(lin_dim, prompt_len)
        self.conv3x3 = nn.Conv2d(prompt_dim, prompt_dim, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """(B, Cf, H, W) feature -> (B, Cp, H, W) prompt."""
        weights = self.linear_layer(x.mean(dim=(-2, -1))).softmax(dim=1)  # B, L
        prompt = torch.einsum('bl,lchw->bchw', weights, self.prompt_param[0])
        prompt = F.interpolate(prompt, size=x.shape[-2:], mode='bilinear', align_corners=False)
        return self.conv3x3(prompt)


@ARCH_REGISTRY.register()
class PromptIR(RestormerUNet):
    """PromptIR all-in-one restoration network.

    Args:
        inp_channels, out_channels, dim, num_blocks, num_refinement_blocks, heads, ffn_expansion_factor, bias,
            LayerNorm_type: the Restormer backbone (see :class:`~basicsr_unlearn.archs.restormer_arch.Restormer`).
        decoder: build the prompt stages (the published model); ``False`` gives the plain Restormer.
        prompt_dims: prompt channels of P1, P2, P3 (applied after decoder_level2, decoder_level3, latent).
        prompt_sizes: initial prompt resolutions of P1, P2, P3.
        prompt_len: prompt components per block.

    The interaction blocks use ``heads[2]`` heads, which must divide 2dim+Cp1, 4dim+Cp2 and 8dim+Cp3.

    Example:
        >>> net = PromptIR(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 1, 2, 2),
        ...                prompt_dims=(8, 16, 32), prompt_sizes=(32, 16, 8))
        >>> net(torch.rand(2, 3, 64, 64)).shape
        torch.Size([2, 3, 64, 64])
    """

    def __init__(self, inp_channels: int = 3, out_channels: int = 3, dim: int = 48,
                 num_blocks: Sequence[int] = DEFAULT_NUM_BLOCKS, num_refinement_blocks: int = 4,
                 heads: Sequence[int] = DEFAULT_HEADS, ffn_expansion_factor: float = 2.66, bias: bool = False,
                 LayerNorm_type: str = 'WithBias', decoder: bool = True,
                 prompt_dims: Sequence[int] = (64, 128, 320), prompt_sizes: Sequence[int] = (64, 32, 16),
                 prompt_len: int = 5) -> None:
        super().__init__('PromptIR', inp_channels, out_channels, dim, num_blocks, num_refinement_blocks, heads,
                         ffn_expansion_factor, bias, LayerNorm_type,
                         latent_out_channels=dim * 4 if decoder else None)
        self.decoder = decoder
        if not decoder:
            return
        if len(prompt_dims) != 3 or len(prompt_sizes) != 3:
            raise ValueError(f'PromptIR: prompt_dims and prompt_sizes need 3 entries (P1, P2, P3), got '
                             f'prompt_dims={list(prompt_dims)}, prompt_sizes={list(prompt_sizes)}')
        if min(prompt_dims) < 1 or min(prompt_sizes) < 1 or prompt_len < 1:
            raise ValueError(f'PromptIR: prompt_dims={list(prompt_dims)}, prompt_sizes={list(prompt_sizes)} and '
                             f'prompt_len={prompt_len} must be >= 1')
        # (feature width at the stage, width after the 1x1 reduce) for P1, P2, P3
        widths = ((dim * 2, dim * 2), (dim * 4, dim * 4), (dim * 8, dim * 4))
        for i, ((feat, out), cp, size) in enumerate(zip(widths, prompt_dims, prompt_sizes, strict=True), start=1):
            check_heads_divide('PromptIR', 'heads[2]', feat + cp, heads[2])
            setattr(self, f'prompt{i}', PromptGenBlock(cp, prompt_len, size, feat))
            setattr(self, f'noise_level{i}',
                    TransformerBlock(feat + cp, heads[2], ffn_expansion_factor, bias, LayerNorm_type))
            setattr(self, f'reduce_noise_level{i}', nn.Conv2d(feat + cp, out, 1, bias=bias))

    _STAGE = {'decoder_level2': 1, 'decoder_level3': 2, 'latent': 3}

    def adapt(self, point: str, feat: Tensor, img: Tensor) -> Tensor:
        """Prompt stage after ``point``: concat the prompt, one Transformer block, 1x1 reduce."""
        if not self.decoder:
            return feat
        i = self._STAGE[point]
        prompt = getattr(self, f'prompt{i}')(feat)
        feat = getattr(self, f'noise_level{i}')(torch.cat([feat, prompt], 1))
        return getattr(self, f'reduce_noise_level{i}')(feat)
