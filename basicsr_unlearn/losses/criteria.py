"""Per-sample pixel criteria shared by the unlearning losses (one number per image, so bounds apply per sample)."""
from collections.abc import Callable

import torch

CRITERIA: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    'l1': lambda d: d.abs(),
    'mse': lambda d: d.square(),
    'charbonnier': lambda d: torch.sqrt(d.square() + 1e-6),
}


def check_criterion(name: str, where: str) -> str:
    """Return ``name`` if it is a known criterion, else raise naming the option path ``where``."""
    if name not in CRITERIA:
        raise ValueError(f"{where}: unknown criterion '{name}'; expected one of {', '.join(CRITERIA)}")
    return name


def per_sample_loss(pred: torch.Tensor, target: torch.Tensor, criterion: str = 'l1') -> torch.Tensor:
    """Mean pixel loss of each sample.

    Args:
        pred: restored images ``(B, C, H, W)``.
        target: targets ``(B, C, H, W)``.
        criterion: ``'l1'``, ``'mse'`` or ``'charbonnier'``.

    Returns:
        ``(B,)`` losses.

    Example:
        >>> per_sample_loss(torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4))
        tensor([1., 1.])
    """
    if pred.shape != target.shape:
        raise ValueError(f'pred and target must have the same shape; got {tuple(pred.shape)} and {tuple(target.shape)}')
    return CRITERIA[criterion](pred - target).flatten(1).mean(1)
