"""Fine-tuning on retained data only: forgets by catastrophic forgetting (usually weakly). Its retain term is the
one every method with retained data uses."""
import torch
from basicsr.losses.basic_loss import L1Loss

from basicsr_unlearn.unlearning.method import METHOD_REGISTRY, Needs, Step, UnlearnMethod, present


@METHOD_REGISTRY.register()
class Finetune(UnlearnMethod):
    """``l_retain = w * L1(output, gt)`` on the retain samples (BasicSR's ``L1Loss``).

    Args:
        retain_weight: ``w``.

    Example:
        >>> Finetune().needs.retain
        True
    """

    needs = Needs(retain=True)

    def __init__(self, retain_weight: float = 1.0) -> None:
        self.retain_loss = L1Loss(retain_weight)

    def losses(self, step: Step) -> dict[str, torch.Tensor]:
        """``{'l_retain'}`` when the batch holds retain samples."""
        return present(retain=step.on_retain(lambda out, gt, lq: self.retain_loss(out, gt)))
