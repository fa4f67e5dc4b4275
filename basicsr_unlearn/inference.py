"""Inference on any image size: pad to the arch's multiple and crop back, optionally in overlapping tiles.

The one copy of padding and tiling that every part of the plugin uses (archs, ``AllInOneModel.restore``, stop rules,
reports), so every evaluation measures exactly what a model's ``restore`` gives.

Example:
    >>> net = torch.nn.Conv2d(3, 3, 3, padding=1)
    >>> restore_image(net, torch.rand(1, 3, 30, 21), multiple=8).shape
    torch.Size([1, 3, 30, 21])
    >>> restore_image(net, torch.rand(1, 3, 30, 21), multiple=8, tile={'size': 16, 'overlap': 4}).shape
    torch.Size([1, 3, 30, 21])
"""
import torch
import torch.nn.functional as F
from torch import nn


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad the bottom/right of ``x`` so H and W are multiples of ``multiple``.

    Reflect padding where the image is large enough, replicate padding otherwise (reflect needs pad < size).

    Args:
        x: ``(B, C, H, W)`` image or feature map.
        multiple: required divisor of H and W (>= 1).

    Returns:
        The padded ``(B, C, H', W')`` tensor and the original ``(H, W)`` for cropping back with ``out[..., :H, :W]``.

    Example:
        >>> padded, (h, w) = pad_to_multiple(torch.zeros(1, 3, 5, 8), 4)
        >>> tuple(padded.shape), h, w
        ((1, 3, 8, 8), 5, 8)
    """
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    if pad_h == 0 and pad_w == 0:
        return x, (h, w)
    mode = 'reflect' if pad_h < h and pad_w < w else 'replicate'
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode), (h, w)


def tile_starts(length: int, size: int, stride: int) -> list[int]:
    """Start offsets of tiles of ``size`` covering ``length`` with step ``stride`` (last tile flush with the end).

    Example:
        >>> tile_starts(10, 4, 3)
        [0, 3, 6]
    """
    if length <= size:
        return [0]
    starts = list(range(0, length - size, stride))
    return starts + [length - size]


def forward_padded(net: nn.Module, x: torch.Tensor, multiple: int) -> torch.Tensor:
    """``net`` on ``x`` padded to ``multiple``, cropped back to ``x``'s H and W."""
    padded, (h, w) = pad_to_multiple(x, multiple)
    return net(padded)[..., :h, :w]


@torch.no_grad()
def restore_image(net: nn.Module, lq: torch.Tensor, multiple: int = 8, tile: dict | None = None) -> torch.Tensor:
    """Eval-mode inference of ``net`` on ``lq`` of any size (the train/eval flag of ``net`` is restored after).

    Args:
        net: restoration network ``(B, 3, H, W) -> (B, 3, H, W)``.
        lq: degraded images ``(B, 3, H, W)`` on ``net``'s device.
        multiple: input size multiple of the arch.
        tile: ``None``, or ``{'size': s, 'overlap': o}`` (``s > o``): overlapping tiles whose outputs are averaged.

    Returns:
        Restored ``(B, 3, H, W)``.
    """
    was_training = net.training
    net.eval()
    try:
        if not tile:
            return forward_padded(net, lq, multiple)
        size, overlap = int(tile['size']), int(tile.get('overlap', 0))
        if size <= overlap:
            raise ValueError(f'val.tile: size ({size}) must be larger than overlap ({overlap})')
        b, _, h, w = lq.shape
        out, weight = None, lq.new_zeros(1, 1, h, w)
        for top in tile_starts(h, size, size - overlap):
            for left in tile_starts(w, size, size - overlap):
                patch = forward_padded(net, lq[..., top:top + size, left:left + size], multiple)
                if out is None:
                    out = lq.new_zeros(b, patch.shape[1], h, w)
                out[..., top:top + patch.shape[-2], left:left + patch.shape[-1]] += patch
                weight[..., top:top + patch.shape[-2], left:left + patch.shape[-1]] += 1
        return out / weight
    finally:
        net.train(was_training)


__all__ = ['forward_padded', 'pad_to_multiple', 'restore_image', 'tile_starts']
