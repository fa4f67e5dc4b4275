"""Restormer building blocks shared by ``Restormer``, ``PromptIR`` and ``AdaIR``.

Module and parameter names follow the Restormer reference (``norm1.body.weight``, ``attn.qkv``, ``ffn.project_in``,
``down1_2.body.0``...) so checkpoints trained with the reference code load without key renaming.
"""
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LAYER_NORM_TYPES = ('WithBias', 'BiasFree')


class _PixelLayerNorm(nn.Module):
    """Normalises each pixel's C-vector over channels (eps 1e-5); weight always, bias only if ``with_bias``."""

    def __init__(self, channels: int, with_bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels)) if with_bias else None

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        x = x.permute(0, 2, 3, 1)  # B, H, W, C
        if self.bias is None:  # BiasFree: scale only, no mean subtraction (as in the reference)
            out = x * torch.rsqrt(x.var(-1, keepdim=True, unbiased=False) + 1e-5) * self.weight
        else:  # fused kernel: same result as the reference's explicit mean/var, about 3x faster on CPU
            out = F.layer_norm(x, x.shape[-1:], self.weight, self.bias, eps=1e-5)
        return out.permute(0, 3, 1, 2)


class LayerNorm(nn.Module):
    """Per-pixel channel LayerNorm, ``LayerNorm_type`` in ``('WithBias', 'BiasFree')``; (B, C, H, W) in and out."""

    def __init__(self, channels: int, layer_norm_type: str) -> None:
        super().__init__()
        self.body = _PixelLayerNorm(channels, with_bias=layer_norm_type == 'WithBias')

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


def channel_attention(q: Tensor, k: Tensor, v: Tensor, heads: int, temperature: Tensor) -> Tensor:
    """Transposed (channel) attention: a (C/h)x(C/h) map per head, so the cost is linear in H*W.

    Args:
        q, k, v: (B, C, H, W) query, key and value maps.
        heads: number of heads h (divides C).
        temperature: (h, 1, 1) learnable scale.

    Returns:
        (B, C, H, W) attended values.
    """
    b, c, h, w = q.shape
    q, k, v = (t.reshape(b, heads, c // heads, h * w) for t in (q, k, v))
    q = F.normalize(q, dim=-1)
    k = F.normalize(k, dim=-1)
    attn = (q @ k.transpose(-2, -1) * temperature).softmax(dim=-1)
    return (attn @ v).reshape(b, c, h, w)


class Attention(nn.Module):
    """MDTA: multi-Dconv head transposed self-attention over channels; (B, C, H, W) in and out."""

    def __init__(self, dim: int, num_heads: int, bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)
        return self.project_out(channel_attention(q, k, v, self.num_heads, self.temperature))


class FeedForward(nn.Module):
    """GDFN: gated-Dconv feed-forward with hidden width ``int(dim * ffn_expansion_factor)``."""

    def __init__(self, dim: int, ffn_expansion_factor: float, bias: bool) -> None:
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.project_in = nn.Conv2d(dim, hidden * 2, 1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(a) * b)


class TransformerBlock(nn.Module):
    """``x + MDTA(LN(x))`` then ``x + GDFN(LN(x))``; (B, C, H, W) in and out."""

    def __init__(self, dim: int, num_heads: int, ffn_expansion_factor: float, bias: bool,
                 LayerNorm_type: str) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim, LayerNorm_type)
        self.attn = Attention(dim, num_heads, bias)
        self.norm2 = LayerNorm(dim, LayerNorm_type)
        self.ffn = FeedForward(dim, ffn_expansion_factor, bias)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


def transformer_stage(dim: int, num_blocks: int, num_heads: int, ffn_expansion_factor: float, bias: bool,
                      LayerNorm_type: str) -> nn.Sequential:
    """``num_blocks`` Transformer blocks of width ``dim`` in sequence."""
    return nn.Sequential(*[TransformerBlock(dim, num_heads, ffn_expansion_factor, bias, LayerNorm_type)
                           for _ in range(num_blocks)])


class OverlapPatchEmbed(nn.Module):
    """Patch embedding: conv 3x3 ``in_c -> embed_dim``."""

    def __init__(self, in_c: int, embed_dim: int, bias: bool) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_c, embed_dim, 3, padding=1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


class Downsample(nn.Module):
    """(B, C, H, W) -> (B, 2C, H/2, W/2): conv 3x3 C -> C/2, PixelUnshuffle(2)."""

    def __init__(self, n_feat: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n_feat, n_feat // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class Upsample(nn.Module):
    """(B, C, H, W) -> (B, C/2, 2H, 2W): conv 3x3 C -> 2C, PixelShuffle(2)."""

    def __init__(self, n_feat: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n_feat, n_feat * 2, 3, padding=1, bias=False), nn.PixelShuffle(2))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


def check_heads_divide(where: str, arg: str, width: int, heads: int) -> None:
    """Raise ``ValueError`` unless ``heads`` is positive and divides the attention ``width``."""
    if heads < 1 or width % heads:
        raise ValueError(f'{where}: {arg}={heads} must be a positive divisor of the attention width {width}')


def check_backbone_args(where: str, dim: int, num_blocks: Sequence[int], num_refinement_blocks: int,
                        heads: Sequence[int], ffn_expansion_factor: float, LayerNorm_type: str) -> None:
    """Validate the Restormer U-Net arguments shared by the three archs; errors name the argument.

    Raises:
        ValueError: on lengths other than 4, a non-positive or odd ``dim``, negative block counts, heads that do not
            divide their level's width (levels 1..4 have widths dim, 2dim, 4dim, 8dim; decoder level 1 and refinement
            run at 2dim with ``heads[0]``), a non-positive expansion, or an unknown ``LayerNorm_type``.
    """
    if len(num_blocks) != 4 or len(heads) != 4:
        raise ValueError(f'{where}: num_blocks and heads need 4 entries each (levels 1..4), got '
                         f'num_blocks={list(num_blocks)}, heads={list(heads)}')
    if dim < 2 or dim % 2:
        raise ValueError(f'{where}: dim={dim} must be a positive even number (Downsample halves it)')
    if min(num_blocks) < 0 or num_refinement_blocks < 0:
        raise ValueError(f'{where}: block counts must be >= 0, got num_blocks={list(num_blocks)}, '
                         f'num_refinement_blocks={num_refinement_blocks}')
    if ffn_expansion_factor <= 0:
        raise ValueError(f'{where}: ffn_expansion_factor={ffn_expansion_factor} must be > 0')
    if LayerNorm_type not in LAYER_NORM_TYPES:
        raise ValueError(f'{where}: LayerNorm_type={LayerNorm_type!r}; expected one of {", ".join(LAYER_NORM_TYPES)}')
    for i in range(4):
        check_heads_divide(where, f'heads[{i}]', dim * 2**i, heads[i])
    check_heads_divide(where, 'heads[0]', dim * 2, heads[0])
