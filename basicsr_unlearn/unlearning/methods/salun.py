"""SalUn (Fan et al., ICLR 2024): saliency unlearning — only the weights most salient for the forget loss move."""
import torch

from basicsr_unlearn.losses.criteria import per_sample_loss
from basicsr_unlearn.unlearning.hooks import any_rank_true, sum_over_ranks
from basicsr_unlearn.unlearning.method import METHOD_REGISTRY, Needs, Nets, Step, UnlearnMethod
from basicsr_unlearn.unlearning.methods.identity_target import IdentityTarget


def saliency_masks(net: torch.nn.Module, lq: torch.Tensor, gt: torch.Tensor, sparsity: float) -> list[torch.Tensor]:
    """Boolean masks of the ``round(sparsity * n)`` weights (at least one) with the largest ``|d L / d theta|``, ``L``
    the summed L1 of ``net`` on the forget samples of every rank.

    One global ranking over all ``n`` parameters (a stable sort); ties (e.g. many zero gradients) go to the lower
    index in parameter order, so exactly that many weights are kept. Under a process group every rank must call it
    (one all-reduce of the gradients; a rank without forget samples passes empty ``lq``/``gt`` and adds zero), and
    every rank gets the same masks. ``.grad`` of ``net`` is left untouched.

    Args:
        net: the network at ``theta_0``.
        lq, gt: this rank's forget samples ``(B, 3, h, w)``, ``B >= 0``.
        sparsity: share of weights kept trainable, in (0, 1].

    Returns:
        One boolean mask per parameter of ``net`` (same shapes).

    Example:
        >>> net = torch.nn.Conv2d(3, 3, 1)
        >>> masks = saliency_masks(net, torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4), 0.5)
        >>> sum(m.numel() for m in masks), int(sum(m.sum() for m in masks))
        (12, 6)
    """
    params = list(net.parameters())
    grads = [None] * len(params)
    if lq.shape[0]:
        with torch.enable_grad():
            grads = torch.autograd.grad(per_sample_loss(net(lq), gt).sum(), params, allow_unused=True)
    flat = sum_over_ranks(torch.cat([(torch.zeros_like(p) if g is None else g.detach()).flatten()
                                     for p, g in zip(params, grads, strict=True)]))
    keep = max(1, round(sparsity * flat.numel()))
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask[flat.abs().sort(descending=True, stable=True).indices[:keep]] = True
    return [m.view_as(p) for m, p in zip(mask.split([p.numel() for p in params]), params, strict=True)]


@METHOD_REGISTRY.register()
class SalUn(UnlearnMethod):
    """:class:`IdentityTarget`'s terms (SalUn's random-label step for restoration: forget inputs mapped to themselves,
    retained ones to clean) with every gradient multiplied by a saliency mask.

    The mask keeps the ``sparsity`` share of weights whose gradient magnitude of the forget loss (L1 of the forget
    outputs against their clean targets) at ``theta_0`` is largest; it is computed once, before the first update, at
    the first step where any rank's batch holds forget samples (every rank takes part, with the forget samples it
    has), and kept across resumes. Steps before that leave the weights unchanged. The other weights never move with a
    plain optimiser (Adam/SGD without weight decay: a decay term moves them even at zero gradient).

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
        """No extra inputs; computes the masks at the first step where any rank has forget samples."""
        if self.masks is None and any_rank_true(bool(forget.any()), lq.device):
            self.masks = saliency_masks(nets.net, lq[forget], gt[forget], self.sparsity)
        return None

    def state_dict(self) -> dict:
        """The boolean masks (None before the first forget step)."""
        return {'masks': self.masks}

    def load_state_dict(self, state: dict, nets: Nets) -> None:
        masks = state['masks']
        self.masks = None if masks is None else [m.to(p.device) for m, p in zip(masks, nets.net.parameters(),
                                                                                 strict=True)]

    def losses(self, step: Step) -> dict[str, torch.Tensor]:
        """``l_forget`` and ``l_retain`` of :class:`IdentityTarget`."""
        return self.terms.losses(step)

    def after_backward(self, nets: Nets) -> None:
        """Zero the gradients of the weights outside the mask (drop all of them while there is no mask yet)."""
        if self.masks is None:
            for p in nets.net.parameters():
                p.grad = None
            return
        for p, mask in zip(nets.net.parameters(), self.masks, strict=True):
            if p.grad is not None:
                p.grad.mul_(mask)
