"""Low-pass attacker: match only the low spatial frequencies of the exposed features.

The observed teacher tap and the adapted student tap are both blurred by the same Gaussian (depthwise, reflect
padding) before the L1, so whatever high-frequency structure a defence adds to the tap does not enter the loss. The
L1 skips a border of one blur radius, where the blur reads the padding: there a teacher tap blurred whole and then
cropped (stored answers, tools/asvp_study.py) and the student crop's own blur see different surroundings.

Example:
    >>> x = torch.zeros(1, 2, 9, 9)
    >>> x[..., 4, 4] = 1.0
    >>> y = gaussian_blur(x, 1.0)
    >>> round(float(y.sum()), 4), bool(y[..., 4, 4].max() < 0.2)
    (2.0, True)
"""
import math

import torch
import torch.nn.functional as F

from basicsr_unlearn.attacks import ATTACK_REGISTRY
from basicsr_unlearn.attacks.kd import KD


def blur_radius(sigma: float, size: tuple[int, int]) -> int:
    """Radius of :func:`gaussian_blur` on a map of ``size``: ``ceil(3 sigma)``, clipped to the map."""
    return max(1, min(math.ceil(3 * sigma), min(size) - 1))


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(B, C, H, W)`` features (radius :func:`blur_radius`, reflect padding)."""
    radius = blur_radius(sigma, x.shape[-2:])
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    row = (kernel / kernel.sum()).expand(x.shape[1], 1, 1, -1)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode='reflect'), row, groups=x.shape[1])
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode='reflect'), row.transpose(-1, -2), groups=x.shape[1])


@ATTACK_REGISTRY.register()
class LowPassKD(KD):
    """KD whose feature loss compares Gaussian-blurred taps (``sigma`` in pixels of the tap).

    Args:
        sigma: standard deviation of the blur (> 0).
        output_weight, feature_weight, taps, where: as in :class:`~basicsr_unlearn.attacks.kd.KD`.
    """

    def __init__(self, sigma: float = 2.0, output_weight: float = 1.0, feature_weight: float = 1.0,
                 taps: list | None = None, where: str = 'distill') -> None:
        super().__init__(output_weight, feature_weight, taps, where)
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or sigma <= 0:
            raise ValueError(f'{where}.sigma: expected a number > 0, got {sigma!r}')
        self.sigma = float(sigma)

    def observe(self, feat: torch.Tensor) -> torch.Tensor:
        """The blurred observed tap."""
        return gaussian_blur(feat, self.sigma)

    def match(self, adapted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """L1 between the blurred adapted student tap and the (already blurred) teacher tap, one blur radius away
        from the border (the whole maps when they are too small for that)."""
        m = blur_radius(self.sigma, adapted.shape[-2:])
        inner = (..., slice(m, -m), slice(m, -m)) if min(adapted.shape[-2:]) > 2 * m else (...,)
        return F.l1_loss(gaussian_blur(adapted, self.sigma)[inner], target[inner])
