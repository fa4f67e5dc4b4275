"""Diagonal empirical Fisher of a restoration loss (EWC importance for Adapt-then-Unlearn's stage-1 anchor)."""
import torch
from torch import nn

from basicsr_unlearn.losses.criteria import per_sample_loss


def diagonal_fisher(net: nn.Module, lq: torch.Tensor, target: torch.Tensor) -> list[torch.Tensor]:
    """Mean squared per-sample gradient of the L1 loss, per trainable parameter, normalised to mean 1.

    Args:
        net: the network at ``theta_0``, possibly frozen (gradients via ``torch.autograd.grad``; ``.grad`` and
            ``requires_grad`` flags are left as they were).
        lq: inputs ``(B, C, H, W)``.
        target: targets ``(B, C, H, W)``.

    Returns:
        One tensor per parameter (in ``net.parameters()`` order), same shapes, mean 1 over all elements.
    """
    params = list(net.parameters())
    flags = [p.requires_grad for p in params]
    fisher = [torch.zeros_like(p) for p in params]
    try:
        for p in params:
            p.requires_grad_(True)
        for i in range(lq.shape[0]):
            with torch.enable_grad():
                loss = per_sample_loss(net(lq[i:i + 1]), target[i:i + 1]).sum()
                grads = torch.autograd.grad(loss, params, allow_unused=True)
            for f, g in zip(fisher, grads, strict=True):
                if g is not None:
                    f.add_(g.detach().square() / lq.shape[0])
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)
    mean = torch.cat([f.flatten() for f in fisher]).mean().clamp(min=1e-20)
    return [f / mean for f in fisher]
