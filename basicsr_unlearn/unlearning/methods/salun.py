"""SalUn (Fan et al., ICLR 2024): saliency unlearning — only the weights most salient for the forget loss move."""
import math

import torch
import torch.distributed as dist

from basicsr_unlearn.losses.criteria import per_sample_loss
from basicsr_unlearn.unlearning.method import METHOD_REGISTRY, Needs, Nets, Step, UnlearnMethod
from basicsr_unlearn.unlearning.methods.identity_target import IdentityTarget


def saliency_masks(net: torch.nn.Module, lq: torch.Tensor, gt: torch.Tensor, sparsity: float) -> list[torch.Tensor]:
    """0/1 masks of the ``sparsity`` share of weights with the largest ``|d L1(net(lq), gt) / d theta|``.

    One global threshold over all parameters; under a process group the gradients are summed over ranks first, so
    every rank masks the same weights. ``.grad`` of ``net`` is left untouched.

    Args:
        net: the network at ``theta_0``.
        lq, gt: forget samples ``(B, 3, h, w)``.
        sparsity: share of weights kept trainable, in (0, 1].

    Returns:
        One float mask per parameter of ``net`` (same shapes).

    Example:
        >>> net = torch.nn.Conv2d(3, 3, 1)
        >>> masks = saliency_masks(net, torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4), 0.5)
        >>> sum(m.numel() for m in masks), int(sum(m.sum() for m in masks)) >= 6  # ties at the threshold are kept
        (12, True)
    """
    params = list(net.parameters())
    with torch.enable_grad():
        grads = torch.autograd.grad(per_sample_loss(net(lq), gt).mean(), params, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g.detach().abs() for p, g in zip(params, grads, strict=True)]
    if dist.is_available() and dist.is_initialized():
        for g in grads:
            dist.all_reduce(g)
    flat = torch.cat([g.flatten() for g in grads])
    keep = max(1, math.ceil(sparsity * flat.numel()))
    threshold = flat.kthvalue(flat.numel() - keep + 1).values
    return [(g >= threshold).to(g.dtype) for g in grads]


@METHOD_REGISTRY.register()
class SalUn(UnlearnMethod):
    """:class:`IdentityTarget`'s terms (SalUn's random-label step for restoration: forget inputs mapped to themselves,
    retained ones to clean) with every gradient multiplied by a saliency mask.

    The mask keeps the ``sparsity`` share of weights whose gradient magnitude of the forget loss (L1 of the forget
    outputs against their clean targets) at ``theta_0`` is largest; it is computed once, from the first batch that
    holds forget samples, before the first update. The other weights never move with a plain optimiser (Adam/SGD
    without weight decay: a decay term moves them even at zero gradient).

    Args:
        sparsity: share of weights updated, in (0, 1] (SalUn's default: 0.5).
        forget_weight, retain_weight: term weights.

    Example:
        >>> SalUn(sparsity=0.5).needs
        Needs(original=False, adapted=False, forget=True, retain=True)
    """

    needs = Needs(forget=True, retain=True)

    def __init__(self, sparsity: float = 0.5, forget_weight: float = 1.0, retain_weight: float = 1.0) -> None:
        if not 0 < sparsity <= 1:
            raise ValueError(f'sparsity: expected a share in (0, 1]; got {sparsity}')
        self.sparsity = sparsity
        self.terms = IdentityTarget(forget_weight, retain_weight)
        self.masks: list[torch.Tensor] | None = None

    def extra_inputs(self, lq: torch.Tensor, gt: torch.Tensor, forget: torch.Tensor,
                     nets: Nets) -> torch.Tensor | None:
        """No extra inputs; computes the masks on the first batch that holds forget samples."""
        if self.masks is None and forget.any():
            self.masks = saliency_masks(nets.net, lq[forget], gt[forget], self.sparsity)
        return None

    def losses(self, step: Step) -> dict[str, torch.Tensor]:
        """``l_forget`` and ``l_retain`` of :class:`IdentityTarget`."""
        return self.terms.losses(step)

    def after_backward(self, nets: Nets) -> None:
        """Zero the gradients of the weights outside the mask."""
        for p, mask in zip(nets.net.parameters(), self.masks, strict=True):
            if p.grad is not None:
                p.grad.mul_(mask)
