"""Bounded gradient ascent on the forget samples (the forgetting loss L_UL)."""
import torch
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

from basicsr_unlearn.losses.criteria import check_criterion, per_sample_loss


@LOSS_REGISTRY.register()
class GradientAscentLoss(nn.Module):
    """Negated reconstruction loss on forget samples, bounded per sample: ``w * mean_i max(0, tau - l_i)``.

    ``l_i`` is the pixel loss of sample ``i`` (``criterion``). Minimising the hinge ascends ``l_i`` while it is below
    ``tau`` and stops pushing a sample once its loss reaches ``tau``, so the objective lies in ``[0, w * tau]`` and
    cannot diverge (plain ``-l`` is unbounded below: outputs blow up or saturate). Choose ``tau`` at or a little above
    the loss the model retrained without the degradation has on it (e.g. its L1 on hazy inputs).

    Args:
        loss_weight: ``w``.
        tau: the bound, in units of the criterion (> 0).
        criterion: ``'l1'``, ``'mse'`` or ``'charbonnier'``.

    Shape:
        ``pred``, ``target``: ``(B, C, H, W)``; output: scalar.

    Example:
        >>> loss = GradientAscentLoss(tau=0.2)
        >>> loss(torch.zeros(1, 3, 8, 8), torch.full((1, 3, 8, 8), 0.05))  # l = 0.05 -> 0.2 - 0.05
        tensor(0.1500)
    """

    def __init__(self, loss_weight: float = 1.0, tau: float = 0.2, criterion: str = 'l1') -> None:
        super().__init__()
        if not tau > 0:
            raise ValueError(f'GradientAscentLoss.tau: expected a positive bound; got {tau}')
        self.loss_weight = float(loss_weight)
        self.tau = float(tau)
        self.criterion = check_criterion(criterion, 'GradientAscentLoss.criterion')

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Bounded negated loss of ``pred`` against ``target`` (both ``(B, C, H, W)``)."""
        per_sample = per_sample_loss(pred, target, self.criterion)
        return self.loss_weight * torch.clamp(self.tau - per_sample, min=0).mean()
