"""The seed method (accurate forgetting, L_UL + L_UL^Adv): bounded gradient ascent on the forget samples, the
retain samples restored to their clean targets, and PGD copies of the retain inputs restored too."""
from typing import Literal

import torch

from basicsr_unlearn.losses.adversarial_retain_loss import AdversarialRetainLoss
from basicsr_unlearn.unlearning.method import METHOD_REGISTRY, Needs, Nets, Step, UnlearnMethod
from basicsr_unlearn.unlearning.methods.finetune import Finetune
from basicsr_unlearn.unlearning.methods.ga import GradientAscent


@METHOD_REGISTRY.register()
class GaAdv(UnlearnMethod):
    """``l_forget`` (:class:`GradientAscent`) + ``l_retain`` (:class:`Finetune`) + ``l_adv``.

    ``l_adv = adv_weight * L1(net(x_adv), gt)`` with ``x_adv`` from an L-inf PGD attack on the retain inputs
    (:class:`~basicsr_unlearn.losses.adversarial_retain_loss.AdversarialRetainLoss`) made against the frozen
    original (``attack: original``) or the current network (``current``); ``x_adv`` joins the step's one forward.

    Args:
        tau: ascent bound (number or ``'input'``).
        forget_weight, retain_weight, adv_weight: term weights.
        eps: PGD radius in [0, 1] pixel units; steps: PGD iterations; step_size: PGD step (None: ``eps / 4``).
        attack: ``'original'`` or ``'current'``.

    Example:
        >>> GaAdv().needs
        Needs(original=True, adapted=False, forget=True, retain=True)
    """

    def __init__(self, tau: float | Literal['input'] = 'input', forget_weight: float = 1.0,
                 retain_weight: float = 1.0, adv_weight: float = 1.0, eps: float = 2 / 255, steps: int = 1,
                 step_size: float | None = None, attack: Literal['original', 'current'] = 'original') -> None:
        self.forget = GradientAscent(tau, forget_weight)
        self.retain = Finetune(retain_weight)
        self.adv = AdversarialRetainLoss(adv_weight, eps, steps, step_size)
        self.attack = attack
        self.needs = Needs(original=attack == 'original', forget=True, retain=True)

    def extra_inputs(self, lq: torch.Tensor, gt: torch.Tensor, forget: torch.Tensor,
                     nets: Nets) -> torch.Tensor | None:
        """PGD copies ``(R, 3, h, w)`` of the ``R`` retain inputs (None without retain samples)."""
        r = ~forget
        if not r.any():
            return None
        return self.adv.perturb(nets.original if self.attack == 'original' else nets.net, lq[r], gt[r])

    def losses(self, step: Step) -> dict[str, torch.Tensor]:
        """``l_forget``, ``l_retain`` and ``l_adv``, each when the batch allows it."""
        terms = {**self.forget.losses(step), **self.retain.losses(step)}
        if step.extra_output is not None:
            terms['l_adv'] = self.adv.restoration_loss(step.extra_output, step.gt[~step.forget])
        return terms
