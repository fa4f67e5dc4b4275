"""Spectrum re-projection: an attacker that whitens (or compresses) the spectrum of the exposed features.

ASVP scales singular values and keeps the singular vectors. Re-projecting each observed matrix
``M' = U diag(s') V^T`` to ``U_r diag(s'^p) V_r^T``, rescaled by ``median(s')^(1 - p)``, turns a gain ``h`` on the
top-k values into ``h^p``: ``power: 0`` (whitening) removes any gain whatever k, h or their randomisation, at the
price of the clean features' own spectrum; ``rank: r`` also drops everything below the top r (low-rank
re-projection). The median keeps the scale of the features and is untouched by the top-k gain while ``k < r / 2``.

Example:
    >>> from basicsr_unlearn.defenses.asvp import ASVP
    >>> x = torch.randn(2, 8, 6, 6, dtype=torch.float64)
    >>> white = reproject(x, 'channel_space', power=0.0)
    >>> bool(torch.allclose(reproject(ASVP(['x'], k=2, h=8.0).perturb(x), 'channel_space', power=0.0), white))
    True
"""
import torch

from basicsr_unlearn.attacks import ATTACK_REGISTRY
from basicsr_unlearn.attacks.kd import KD
from basicsr_unlearn.defenses.asvp import LAYOUTS, REL_EPS, from_matrices, gram_eigh, to_matrices


@torch.no_grad()
def reproject(x: torch.Tensor, layout: str, power: float = 0.0, rank: int | None = None) -> torch.Tensor:
    """Re-project every matrix of ``x`` onto its top-``rank`` singular pairs with singular values ``s^power``.

    Args:
        x: features ``(B, C, H, W)`` (or ``(B, N, C)`` tokens with ``channel_space``).
        layout: ``channel_space`` or ``channel_map`` (as :func:`~basicsr_unlearn.defenses.asvp.to_matrices`).
        power: exponent of the singular values (0 = whitening, 0.5 = square root, 1 = unchanged).
        rank: singular pairs kept (``None`` = all).

    Returns:
        Features of the same shape and dtype.
    """
    m = to_matrices(x, layout)
    wide = m.shape[-2] <= m.shape[-1]
    mat = m.double() if wide else m.double().transpose(-1, -2)
    s2, u = gram_eigh(mat)
    s = s2.sqrt()
    keep = s > REL_EPS * s[:, :1]
    if rank is not None:
        keep[:, rank:] = False
    scale = s.median(-1, keepdim=True).values.clamp_min(torch.finfo(s.dtype).tiny) ** (1 - power)
    gain = torch.where(keep, scale * s.clamp_min(torch.finfo(s.dtype).tiny) ** (power - 1), torch.zeros_like(s))
    out = u @ (gain[..., None] * (u.transpose(-1, -2) @ mat))  # U diag(gain) U^T M = U diag(gain * s) V^T
    return from_matrices((out if wide else out.transpose(-1, -2)).to(m.dtype), x, layout)


@ATTACK_REGISTRY.register()
class SpectrumKD(KD):
    """KD on teacher taps re-projected by :func:`reproject` (spectrum whitening / low-rank re-projection).

    Args:
        layout: the layout the attacker assumes.
        power: exponent of the singular values (0 = whitening).
        rank: singular pairs kept (``None`` = all).
        output_weight, feature_weight, taps, where: as in :class:`~basicsr_unlearn.attacks.kd.KD`.
    """

    def __init__(self, layout: str = 'channel_map', power: float = 0.0, rank: int | None = None,
                 output_weight: float = 1.0, feature_weight: float = 1.0, taps: list | None = None,
                 where: str = 'distill') -> None:
        super().__init__(output_weight, feature_weight, taps, where)
        if layout not in LAYOUTS:
            raise ValueError(f"{where}.layout: unknown '{layout}'; expected one of {', '.join(LAYOUTS)}")
        if isinstance(power, bool) or not isinstance(power, (int, float)) or not 0 <= power < 1:
            raise ValueError(f'{where}.power: expected a number in [0, 1) (1 would change nothing), got {power!r}')
        if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
            raise ValueError(f'{where}.rank: expected null or an int >= 1, got {rank!r}')
        self.layout, self.power, self.rank = layout, float(power), rank

    def observe(self, feat: torch.Tensor) -> torch.Tensor:
        """The re-projected tap (invariant to the ASVP gain when ``power`` is 0)."""
        return reproject(feat, self.layout, self.power, self.rank)
