"""Bounded gradient ascent on the forget samples (the forgetting loss L_UL)."""
import torch
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

from basicsr_unlearn.losses.criteria import check_criterion, per_sample_loss


@LOSS_REGISTRY.register()
class GradientAscentLoss(nn.Module):
    """Negated reconstruction loss on forget samples, bounded per sample: ``w * mean_i max(0, tau_i - l_i)``.

    ``l_i`` is the pixel loss of sample ``i`` (``criterion``). Minimising the hinge ascends ``l_i`` while it is below
    ``tau_i`` and stops pushing a sample once its loss reaches it, so the objective lies in ``[0, w * max tau]`` and
    cannot diverge (plain ``-l`` is unbounded below: outputs blow up or saturate).

    ``tau`` is a number (the same bound for every sample) or ``'input'``: each sample's bound is the loss of its own
    degraded input, ``tau_i = criterion(lq_i, target_i)`` — ascend until the output is no closer to the target than
    the input itself (a restorer that never learned the degradation roughly passes it through). ``'input'`` needs
    nothing but the forget data, so no number has to be taken from a retrained model.

    Args:
        loss_weight: ``w``.
        tau: the bound in units of the criterion (> 0), or ``'input'``.
        criterion: ``'l1'``, ``'mse'`` or ``'charbonnier'``.

    Shape:
        ``pred``, ``target``, ``lq``: ``(B, C, H, W)``; output: scalar.

    Example:
        >>> loss = GradientAscentLoss(tau=0.2)
        >>> loss(torch.zeros(1, 3, 8, 8), torch.full((1, 3, 8, 8), 0.05))  # l = 0.05 -> 0.2 - 0.05
        tensor(0.1500)
        >>> GradientAscentLoss(tau='input')(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8),
        ...                                 lq=torch.full((1, 3, 8, 8), 0.3))  # bound 0.3, l = 0
        tensor(0.3000)
    """

    def __init__(self, loss_weight: float = 1.0, tau: float | str = 0.2, criterion: str = 'l1') -> None:
        super().__init__()
        if tau != 'input' and (isinstance(tau, str | bool) or not tau > 0):
            raise ValueError(f"GradientAscentLoss.tau: expected a positive bound or 'input'; got {tau!r}")
        self.loss_weight = float(loss_weight)
        self.tau = tau if tau == 'input' else float(tau)
        self.criterion = check_criterion(criterion, 'GradientAscentLoss.criterion')

    def forward(self, pred: torch.Tensor, target: torch.Tensor, lq: torch.Tensor | None = None) -> torch.Tensor:
        """Bounded negated loss of ``pred`` against ``target``; ``lq`` (the degraded inputs) for ``tau: input``."""
        if self.tau == 'input':
            if lq is None:
                raise ValueError("GradientAscentLoss.tau: 'input' needs the degraded inputs (lq=...)")
            tau = per_sample_loss(lq, target, self.criterion).detach()
        else:
            tau = self.tau
        per_sample = per_sample_loss(pred, target, self.criterion)
        return self.loss_weight * torch.clamp(tau - per_sample, min=0).mean()
