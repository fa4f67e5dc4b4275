"""Gradient ascent (OPTML-Group Unlearn-Sparse ``GA``), bounded: forget samples only, no retain term."""
from typing import Literal

import torch

from basicsr_unlearn.losses.gradient_ascent_loss import GradientAscentLoss
from basicsr_unlearn.unlearning.method import METHOD_REGISTRY, Needs, Step, UnlearnMethod, present


@METHOD_REGISTRY.register()
class GradientAscent(UnlearnMethod):
    """``l_forget = GradientAscentLoss(tau)`` on the forget samples' outputs against their clean targets.

    Args:
        tau: the ascent bound (a number, or ``'input'``: each sample's own degraded-input loss).
        forget_weight: weight of the term.
        criterion: ``'l1'``, ``'mse'`` or ``'charbonnier'``.

    Example:
        >>> method = GradientAscent(tau='input')
        >>> method.needs.forget, method.needs.retain
        (True, False)
    """

    needs = Needs(forget=True)

    def __init__(self, tau: float | Literal['input'] = 'input', forget_weight: float = 1.0,
                 criterion: str = 'l1') -> None:
        self.forget_loss = GradientAscentLoss(forget_weight, tau, criterion)

    def losses(self, step: Step) -> dict[str, torch.Tensor]:
        """``{'l_forget'}`` when the batch holds forget samples."""
        return present(forget=step.on_forget(self.forget_loss))
