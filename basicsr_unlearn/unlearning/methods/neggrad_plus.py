"""NegGrad+ (Kurmanji et al. 2023): ``beta * L(retain) - (1 - beta) * L(forget)``, the ascent bounded."""
from typing import Literal

import torch

from basicsr_unlearn.unlearning.method import METHOD_REGISTRY, Needs, Step, UnlearnMethod
from basicsr_unlearn.unlearning.methods.finetune import Finetune
from basicsr_unlearn.unlearning.methods.ga import GradientAscent


@METHOD_REGISTRY.register()
class NegGradPlus(UnlearnMethod):
    """:class:`Finetune` weighted ``beta`` plus :class:`GradientAscent` weighted ``1 - beta``.

    Args:
        beta: retain share in [0, 1].
        tau: ascent bound (number or ``'input'``).

    Example:
        >>> NegGradPlus(beta=0.8).forget.forget_loss.loss_weight
        0.19999999999999996
    """

    needs = Needs(forget=True, retain=True)

    def __init__(self, beta: float = 0.8, tau: float | Literal['input'] = 'input') -> None:
        if not 0 <= beta <= 1:
            raise ValueError(f'beta: expected a value in [0, 1]; got {beta}')
        self.forget = GradientAscent(tau, 1 - beta)
        self.retain = Finetune(beta)

    def losses(self, step: Step) -> dict[str, torch.Tensor]:
        """``l_forget`` and ``l_retain``."""
        return {**self.forget.losses(step), **self.retain.losses(step)}
