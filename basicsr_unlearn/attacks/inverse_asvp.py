"""Inverse-ASVP: an adaptive attacker that estimates k and h from a perturbed spectrum and undoes them.

ASVP with h > 1 keeps the order of the singular values, so the top-k subspace of F' is that of F and dividing
its singular values by h recovers F exactly. Unknown k and h show as a jump in the log-spectrum: the log-ratio
``d_i = log(s_i / s_{i+1})`` is raised by ``log h`` at ``i = k``. The attacker takes the local excess of d over the
mean of its neighbours, picks k at the largest excess (among ``i <= k_max``) and h = exp(excess); on a spectrum that
is log-linear around k the estimate is exact. Fixed k/h across queries can also be pooled (median over matrices).

``InverseASVPKD`` is the KD attacker (:class:`~basicsr_unlearn.attacks.kd.KD`) that matches the undone features.

Example:
    >>> from basicsr_unlearn.defenses.asvp import ASVP
    >>> x = torch.randn(2, 8, 6, 6, dtype=torch.float64)
    >>> observed = ASVP(['x'], k=2, h=8.0).perturb(x)
    >>> undone = inverse_asvp(observed, layout='channel_space', k=2, h=8.0)
    >>> bool(torch.allclose(undone, x))
    True
"""
import torch

from basicsr_unlearn.attacks import ATTACK_REGISTRY
from basicsr_unlearn.attacks.kd import KD
from basicsr_unlearn.defenses.asvp import LAYOUTS, apply_top_scale, from_matrices, gram_eigh, to_matrices


def estimate_k_h(s2: torch.Tensor, k_max: int = 16, min_jump: float = 1.05) -> tuple[torch.Tensor, torch.Tensor]:
    """Estimate the amplified rank k and gain h of each spectrum.

    Args:
        s2: ``(N, r)`` squared singular values, descending (r >= 3).
        k_max: largest rank considered.
        min_jump: excess ratios below this are read as "not perturbed" (h = 1).

    Returns:
        ``k`` ``(N,)`` int64 and ``h`` ``(N,)`` float64 (h = 1 where no jump was found).
    """
    if s2.shape[-1] < 3:
        raise ValueError(f'inverse_asvp: need at least 3 singular values per matrix, got {s2.shape[-1]}')
    k_max = min(k_max, s2.shape[-1] - 2)
    s = s2[:, :k_max + 2].clamp_min(torch.finfo(s2.dtype).tiny).sqrt().log()
    d = s[:, :-1] - s[:, 1:]  # d[:, i] = log s_{i+1} / s_{i+2} (0-based i -> rank i + 1)
    excess = d[:, :k_max] - d[:, 1:k_max + 1]
    best, idx = excess.max(-1)
    h = best.exp()
    found = h >= min_jump
    return torch.where(found, idx + 1, torch.ones_like(idx)), torch.where(found, h, torch.ones_like(h))


@torch.no_grad()
def inverse_asvp(x: torch.Tensor, layout: str = 'channel_space', k: int | None = None, h: float | None = None,
                 k_max: int = 16, pool: bool = False) -> torch.Tensor:
    """Undo ASVP on observed features: divide the (estimated) top-k singular values by the (estimated) h.

    Args:
        x: observed features ``(B, C, H, W)`` (or ``(B, N, C)`` tokens with ``channel_space``).
        layout: the layout the defence used (an attacker tries both; ``'channel_space'`` or ``'channel_map'``).
        k: known rank (else estimated per matrix).
        h: known gain (else estimated per matrix).
        k_max: largest rank the estimator considers.
        pool: use one (k, h) for the whole batch, the median of the per-matrix estimates (fixed-parameter defence).

    Returns:
        The estimate of the clean features, same shape and dtype as ``x``.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"inverse_asvp: unknown layout '{layout}'; expected one of {', '.join(LAYOUTS)}")
    m = to_matrices(x, layout)
    wide = m.shape[-2] <= m.shape[-1]
    mat = m.double() if wide else m.double().transpose(-1, -2)
    n = mat.shape[0]
    s2, u = gram_eigh(mat)
    if k is None or h is None:
        k_est, h_est = estimate_k_h(s2, k_max)
        if pool:
            k_est, h_est = k_est.median().expand(n), h_est.median().expand(n)
        k = k_est if k is None else torch.full((n,), k, dtype=torch.int64)
        h = h_est if h is None else torch.full((n,), float(h), dtype=torch.float64)
    out = apply_top_scale(mat, s2, u, k, 1 / torch.as_tensor(h, dtype=torch.float64))
    return from_matrices((out if wide else out.transpose(-1, -2)).to(m.dtype), x, layout)


@ATTACK_REGISTRY.register()
class InverseASVPKD(KD):
    """KD on teacher taps after :func:`inverse_asvp` (estimated k and h per matrix, or pooled).

    Args:
        layout: the layout the attacker assumes (``channel_space`` or ``channel_map``).
        k_max: largest rank the estimator considers.
        pool: one (k, h) for the whole batch (right against a fixed-parameter defence).
        output_weight, feature_weight, taps, where: as in :class:`~basicsr_unlearn.attacks.kd.KD`.
    """

    def __init__(self, layout: str = 'channel_space', k_max: int = 16, pool: bool = False, output_weight: float = 1.0,
                 feature_weight: float = 1.0, taps: list | None = None, where: str = 'distill') -> None:
        super().__init__(output_weight, feature_weight, taps, where)
        if layout not in LAYOUTS:
            raise ValueError(f"{where}.layout: unknown '{layout}'; expected one of {', '.join(LAYOUTS)}")
        if isinstance(k_max, bool) or not isinstance(k_max, int) or k_max < 1:
            raise ValueError(f'{where}.k_max: expected an int >= 1, got {k_max!r}')
        self.layout, self.k_max, self.pool = layout, k_max, bool(pool)

    def observe(self, feat: torch.Tensor) -> torch.Tensor:
        """The estimate of the clean tap: :func:`inverse_asvp` of the observed one."""
        return inverse_asvp(feat, self.layout, k_max=self.k_max, pool=self.pool)
