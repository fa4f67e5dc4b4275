"""SCRUB-style (Kurmanji et al. 2023) for restoration: move away from the original's outputs on the forget samples
(bounded max step), stay with the original's outputs (distillation) and the clean targets on the retain samples."""
from typing import Literal

import torch
from basicsr.losses.basic_loss import L1Loss

from basicsr_unlearn.losses.gradient_ascent_loss import GradientAscentLoss
from basicsr_unlearn.unlearning.method import METHOD_REGISTRY, Needs, Step, UnlearnMethod, present
from basicsr_unlearn.unlearning.methods.finetune import Finetune


@METHOD_REGISTRY.register()
class Scrub(UnlearnMethod):
    """``l_forget = GradientAscentLoss(out_f, original(lq_f))``, ``l_distill = w_d * L1(out_r, original(lq_r))``,
    ``l_retain`` (:class:`Finetune`). The original's outputs come from the frozen copy, without gradients.

    Args:
        tau: ascent bound from the original's output (number, or ``'input'``: each forget input's own distance to
            the original's output).
        forget_weight, distill_weight, retain_weight: term weights.

    Example:
        >>> Scrub().needs
        Needs(original=True, adapted=False, forget=True, retain=True)
    """

    needs = Needs(original=True, forget=True, retain=True)

    def __init__(self, tau: float | Literal['input'] = 'input', forget_weight: float = 1.0,
                 distill_weight: float = 1.0, retain_weight: float = 1.0) -> None:
        self.forget_loss = GradientAscentLoss(forget_weight, tau)
        self.distill_loss = L1Loss(distill_weight)
        self.retain = Finetune(retain_weight)

    def losses(self, step: Step) -> dict[str, torch.Tensor]:
        """``l_forget``, ``l_distill`` and ``l_retain``."""
        original = step.nets.original
        with torch.no_grad():
            target = original(step.lq)
        return {**present(forget=step.on_forget(lambda out, gt, lq: self.forget_loss(out, target[step.forget], lq)),
                          distill=step.on_retain(lambda out, gt, lq: self.distill_loss(out, target[~step.forget]))),
                **self.retain.losses(step)}
