"""Random-label analogue (SalUn's RL) for restoration: forget inputs are mapped to themselves, retained to clean."""
import torch
from basicsr.losses.basic_loss import L1Loss

from basicsr_unlearn.unlearning.method import METHOD_REGISTRY, Needs, Step, UnlearnMethod, present
from basicsr_unlearn.unlearning.methods.finetune import Finetune


@METHOD_REGISTRY.register()
class IdentityTarget(UnlearnMethod):
    """``l_forget = forget_weight * L1(output, lq)`` on forget samples (the degraded input is the target) plus
    :class:`Finetune`'s ``l_retain``.

    Args:
        forget_weight, retain_weight: term weights.

    Example:
        >>> IdentityTarget().needs
        Needs(original=False, adapted=False, forget=True, retain=True)
    """

    needs = Needs(forget=True, retain=True)

    def __init__(self, forget_weight: float = 1.0, retain_weight: float = 1.0) -> None:
        self.forget_loss = L1Loss(forget_weight)
        self.retain = Finetune(retain_weight)

    def losses(self, step: Step) -> dict[str, torch.Tensor]:
        """``l_forget`` and ``l_retain``."""
        return {**present(forget=step.on_forget(lambda out, gt, lq: self.forget_loss(out, lq))),
                **self.retain.losses(step)}
