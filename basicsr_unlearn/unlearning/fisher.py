"""Diagonal empirical Fisher of a restoration loss (EWC importance for Adapt-then-Unlearn's stage-1 anchor)."""
import torch
from torch import nn

from basicsr_unlearn.losses.criteria import per_sample_loss
from basicsr_unlearn.unlearning.hooks import sum_over_ranks


def diagonal_fisher(net: nn.Module, lq: torch.Tensor, target: torch.Tensor) -> list[torch.Tensor]:
    """Mean squared per-sample gradient of the L1 loss, per trainable parameter, normalised to mean 1.

    Under a process group the mean is over the samples of every rank (one all-reduce), so all ranks get the same
    Fisher; every rank must call it, one without samples with empty ``lq``/``target``.

    Args:
        net: the network at ``theta_0``, possibly frozen (gradients via ``torch.autograd.grad``; ``.grad`` and
            ``requires_grad`` flags are left as they were).
        lq: this rank's inputs ``(B, C, H, W)``, ``B >= 0``.
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
                    f.add_(g.detach().square())
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)
    flat = sum_over_ranks(torch.cat([f.flatten() for f in fisher]))  # the sample count cancels in the normalisation
    flat = flat / flat.mean().clamp(min=1e-20)
    return [f.view_as(p) for f, p in zip(flat.split([p.numel() for p in params]), params, strict=True)]
