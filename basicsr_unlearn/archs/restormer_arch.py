"""Restormer (Zamir et al., CVPR 2022): the U-Net backbone shared by PromptIR and AdaIR, registered as ``Restormer``.

Feature taps (stable module names, identical in ``Restormer``, ``PromptIR`` and ``AdaIR``; defences and feature
distillation name them in YAML): ``encoder_level1`` (dim, H), ``encoder_level2`` (2dim, H/2), ``encoder_level3``
(4dim, H/4), ``latent`` (8dim, H/8), ``decoder_level3`` (4dim, H/4), ``decoder_level2`` (2dim, H/2),
``decoder_level1`` (2dim, H), ``refinement`` (2dim, H). Each is an ``nn.Sequential`` of Transformer blocks; its
output is taken *before* any PromptIR prompt stage or AdaIR frequency block that follows it.

Any input size works: ``forward`` pads H and W to ``pad_multiple`` (8, three PixelUnshuffle levels) and crops the
output back. Default arguments give the published 26,126,644-parameter model.

Example:
    >>> net = Restormer(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 1, 2, 2))
    >>> net(torch.rand(1, 3, 67, 45)).shape
    torch.Size([1, 3, 67, 45])
"""
from collections.abc import Sequence

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor, nn

from basicsr_unlearn.archs.restormer_blocks import (
    Downsample,
    OverlapPatchEmbed,
    Upsample,
    check_backbone_args,
    transformer_stage,
)
from basicsr_unlearn.inference import pad_to_multiple

DEFAULT_NUM_BLOCKS = (4, 6, 6, 8)
DEFAULT_HEADS = (1, 2, 4, 8)


class RestormerUNet(nn.Module):
    """Restormer encoder-decoder with a hook after ``latent``, ``decoder_level3`` and ``decoder_level2``.

    Subclasses override :meth:`adapt` to insert their degradation-aware stages at those three points; a stage that
    changes the latent width passes ``latent_out_channels`` (the width fed to ``up4_3``).

    Args:
        where: class name for error messages.
        latent_out_channels: channels entering ``up4_3``; ``None`` means the plain 8*dim.
        Other arguments: see :class:`Restormer`.
    """

    pad_multiple = 8

    def __init__(self, where: str, inp_channels: int, out_channels: int, dim: int, num_blocks: Sequence[int],
                 num_refinement_blocks: int, heads: Sequence[int], ffn_expansion_factor: float, bias: bool,
                 LayerNorm_type: str, latent_out_channels: int | None = None) -> None:
        super().__init__()
        check_backbone_args(where, dim, num_blocks, num_refinement_blocks, heads, ffn_expansion_factor, LayerNorm_type)
        if inp_channels < 1 or out_channels < 1:
            raise ValueError(f'{where}: inp_channels={inp_channels} and out_channels={out_channels} must be >= 1')
        self.inp_channels, self.out_channels = inp_channels, out_channels

        def stage(width: int, n: int, h: int) -> nn.Sequential:
            return transformer_stage(width, n, h, ffn_expansion_factor, bias, LayerNorm_type)

        latent_out = dim * 8 if latent_out_channels is None else latent_out_channels
        self.patch_embed = OverlapPatchEmbed(inp_channels, dim, bias)
        self.encoder_level1 = stage(dim, num_blocks[0], heads[0])
        self.down1_2 = Downsample(dim)
        self.encoder_level2 = stage(dim * 2, num_blocks[1], heads[1])
        self.down2_3 = Downsample(dim * 2)
        self.encoder_level3 = stage(dim * 4, num_blocks[2], heads[2])
        self.down3_4 = Downsample(dim * 4)
        self.latent = stage(dim * 8, num_blocks[3], heads[3])
        self.up4_3 = Upsample(latent_out)
        self.reduce_chan_level3 = nn.Conv2d(latent_out // 2 + dim * 4, dim * 4, 1, bias=bias)
        self.decoder_level3 = stage(dim * 4, num_blocks[2], heads[2])
        self.up3_2 = Upsample(dim * 4)
        self.reduce_chan_level2 = nn.Conv2d(dim * 4, dim * 2, 1, bias=bias)
        self.decoder_level2 = stage(dim * 2, num_blocks[1], heads[1])
        self.up2_1 = Upsample(dim * 2)
        self.decoder_level1 = stage(dim * 2, num_blocks[0], heads[0])
        self.refinement = stage(dim * 2, num_refinement_blocks, heads[0])
        self.output = nn.Conv2d(dim * 2, out_channels, 3, padding=1, bias=bias)

    def adapt(self, point: str, feat: Tensor, img: Tensor) -> Tensor:
        """Hook after ``point`` in ``('latent', 'decoder_level3', 'decoder_level2')``; identity here.

        Args:
            point: name of the stage whose output ``feat`` is.
            feat: (B, C, h, w) that stage's output.
            img: (B, inp_channels, H, W) the padded input image.
        """
        return feat

    def forward(self, img: Tensor) -> Tensor:
        """Restore ``img`` (B, inp_channels, H, W), any H and W, to (B, out_channels, H, W).

        The global residual adds the input, so ``out_channels`` must equal ``inp_channels`` for it to apply.
        """
        if img.ndim != 4 or img.shape[1] != self.inp_channels:
            raise ValueError(f'{type(self).__name__}: expected input (B, {self.inp_channels}, H, W), '
                             f'got {tuple(img.shape)}')
        x, (h, w) = pad_to_multiple(img, self.pad_multiple)
        e1 = self.encoder_level1(self.patch_embed(x))
        e2 = self.encoder_level2(self.down1_2(e1))
        e3 = self.encoder_level3(self.down2_3(e2))
        lat = self.adapt('latent', self.latent(self.down3_4(e3)), x)
        d3 = self.decoder_level3(self.reduce_chan_level3(torch.cat([self.up4_3(lat), e3], 1)))
        d3 = self.adapt('decoder_level3', d3, x)
        d2 = self.decoder_level2(self.reduce_chan_level2(torch.cat([self.up3_2(d3), e2], 1)))
        d2 = self.adapt('decoder_level2', d2, x)
        d1 = self.decoder_level1(torch.cat([self.up2_1(d2), e1], 1))
        out = self.output(self.refinement(d1))
        if self.out_channels == self.inp_channels:
            out = out + x
        return out[..., :h, :w]


@ARCH_REGISTRY.register()
class Restormer(RestormerUNet):
    """Plain Restormer U-Net (the baseline backbone of PromptIR and AdaIR).

    Args:
        inp_channels: input image channels.
        out_channels: output channels (global input residual when equal to ``inp_channels``).
        dim: level-1 width; levels 2..4 have 2dim, 4dim, 8dim. Positive and even.
        num_blocks: Transformer blocks per level 1..4 (decoder levels 1..3 mirror the encoder).
        num_refinement_blocks: blocks of the refinement stage (width 2dim).
        heads: attention heads per level 1..4; ``heads[i]`` divides ``dim * 2**i`` (and ``heads[0]`` divides 2dim).
        ffn_expansion_factor: GDFN hidden width factor.
        bias: bias in the convolutions.
        LayerNorm_type: ``'WithBias'`` or ``'BiasFree'``.
    """

    def __init__(self, inp_channels: int = 3, out_channels: int = 3, dim: int = 48,
                 num_blocks: Sequence[int] = DEFAULT_NUM_BLOCKS, num_refinement_blocks: int = 4,
                 heads: Sequence[int] = DEFAULT_HEADS, ffn_expansion_factor: float = 2.66, bias: bool = False,
                 LayerNorm_type: str = 'WithBias') -> None:
        super().__init__('Restormer', inp_channels, out_channels, dim, num_blocks, num_refinement_blocks, heads,
                         ffn_expansion_factor, bias, LayerNorm_type)
