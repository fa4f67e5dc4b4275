"""ASVP: adaptive singular value perturbation of internal feature maps (anti-distillation hooks).

For a feature matrix ``M = U S V^T`` the top-k singular values are multiplied by ``h`` and the rest kept:
``M' = M + (h - 1) U_k U_k^T M``. Only the top-k left singular vectors are needed; they come from the Gram matrix
``G = M M^T`` (one batched GEMM) and a symmetric eigendecomposition in float64, under ``no_grad``.

Layouts: ``channel_space`` treats each sample's ``(C, H*W)`` map as one matrix (``(B, N, C)`` tokens as
``(C, N)``); ``channel_map`` treats each channel's ``(H, W)`` map as one matrix. Modes: ``exposed`` leaves the
network's computation untouched and only records the perturbed features in :attr:`ASVP.exposed_features` (the
feature tap an API, a dump or a KD interface reads), so the output is bit-identical; ``inline`` replaces the
features by the perturbed ones (gradients still flow through the clean part). With ``randomize`` each query
(sample) draws its own ``k`` and ``h`` from a secret seed keyed on the feature content, so repeating a query gives
the same answer and cannot be averaged out, while different queries get different k and h.

Example:
    >>> defense = ASVP(targets=['body.*'], k=4, h=4.0).attach(net)
    >>> y = net(x)                                  # identical to the unprotected output
    >>> tapped = defense.exposed_features['body.2']  # perturbed (B, C, H, W)
    >>> defense.remove()
"""
import fnmatch
import hashlib
import math

import numpy as np
import torch
from torch import nn

from basicsr_unlearn.config import check_keys
from basicsr_unlearn.defenses import DEFENSE_REGISTRY

LAYOUTS = ('channel_space', 'channel_map')
MODES = ('exposed', 'inline')
REL_EPS = 1e-6  # singular values below REL_EPS * sigma_1 are never amplified


def gram_eigh(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared singular values and left singular vectors of a batch of matrices via ``eigh(M M^T)`` in float64.

    Args:
        m: ``(N, a, b)`` matrices with ``a <= b`` (any float dtype).

    Returns:
        ``s2`` ``(N, a)`` squared singular values in descending order (clamped at 0) and ``u`` ``(N, a, a)`` whose
        columns are the matching left singular vectors (float64).
    """
    m = m.double()
    evals, evecs = torch.linalg.eigh(m @ m.transpose(-1, -2))
    return evals.flip(-1).clamp_min(0), evecs.flip(-1)


def energy_rank(s2: torch.Tensor, tau: float) -> torch.Tensor:
    """Smallest k per matrix whose top-k squared singular values hold a fraction ``tau`` of the energy.

    Args:
        s2: ``(N, r)`` squared singular values, descending.
        tau: energy fraction in (0, 1].

    Returns:
        ``(N,)`` int64 ranks in ``[1, r]``.
    """
    total = s2.sum(-1, keepdim=True).clamp_min(torch.finfo(s2.dtype).tiny)
    below = (s2.cumsum(-1) / total) < tau - 1e-12
    return (below.sum(-1) + 1).clamp(max=s2.shape[-1])


def scale_top_singular(m: torch.Tensor, k: torch.Tensor | int | str, h: torch.Tensor | float) -> torch.Tensor:
    """Multiply the top-k singular values of each matrix by ``h`` (the ASVP map), batched.

    Args:
        m: ``(N, a, b)`` matrices (float32/float64/half; computed in float64, returned in ``m.dtype``).
        k: rank per matrix: an int, an ``(N,)`` int tensor, or ``'energy:<tau>'`` (smallest k holding a
            fraction tau of the spectral energy).
        h: gain, a float or an ``(N,)`` tensor; ``h = 1`` is the identity, ``1 / h`` undoes ``h``.

    Returns:
        ``(N, a, b)`` perturbed matrices ``M + U diag((h - 1) w) U^T M`` with ``w`` the top-k indicator (values
        below ``1e-6 * sigma_1`` excluded).

    Example:
        >>> m2 = scale_top_singular(m, 2, 3.0)
        >>> torch.linalg.svdvals(m2.double())[..., :2] / torch.linalg.svdvals(m.double())[..., :2]   # == 3
    """
    wide = m.shape[-2] <= m.shape[-1]
    mat = m.double() if wide else m.double().transpose(-1, -2)
    n, r = mat.shape[0], mat.shape[-2]
    s2, u = gram_eigh(mat)
    if isinstance(k, str):
        k = energy_rank(s2, parse_energy(k, 'k'))
    k = torch.as_tensor(k, dtype=torch.int64).expand(n)
    h = torch.as_tensor(h, dtype=torch.float64).expand(n)
    k_max = int(k.max().clamp(max=r))
    if k_max <= 0:
        return m.clone()
    s2, u = s2[:, :k_max], u[:, :, :k_max]
    rank = torch.arange(k_max)
    w = (rank[None] < k[:, None]) & (s2 > (REL_EPS ** 2) * s2[:, :1])
    gain = (h[:, None] - 1) * w
    out = mat + u @ (gain[..., None] * (u.transpose(-1, -2) @ mat))
    return (out if wide else out.transpose(-1, -2)).to(m.dtype)


def parse_energy(k: str, where: str) -> float:
    """``'energy:0.9'`` -> 0.9, with a clear error naming ``where`` otherwise."""
    name, _, value = k.partition(':')
    try:
        tau = float(value)
    except ValueError:
        tau = -1.0
    if name != 'energy' or not 0 < tau <= 1:
        raise ValueError(f"{where}: expected an int >= 1 or 'energy:<tau>' with 0 < tau <= 1, got '{k}'")
    return tau


def to_matrices(x: torch.Tensor, layout: str) -> torch.Tensor:
    """Feature tensor -> batch of matrices: ``channel_space`` ``(B, C, H*W)``, ``channel_map`` ``(B*C, H, W)``.

    ``x`` is ``(B, C, H, W)``; for ``channel_space`` also ``(B, N, C)`` tokens (-> ``(B, C, N)``).
    """
    if layout == 'channel_space' and x.dim() == 4:
        return x.flatten(2)
    if layout == 'channel_space' and x.dim() == 3:
        return x.transpose(1, 2)
    if layout == 'channel_map' and x.dim() == 4:
        return x.flatten(0, 1)
    raise ValueError(f'ASVP layout {layout!r}: unsupported feature shape {tuple(x.shape)}; expected (B, C, H, W)'
                     + (' or (B, N, C) tokens' if layout == 'channel_space' else ''))


def from_matrices(m: torch.Tensor, like: torch.Tensor, layout: str) -> torch.Tensor:
    """Inverse of :func:`to_matrices` for a tensor shaped like ``like``."""
    if layout == 'channel_space' and like.dim() == 3:
        return m.transpose(1, 2)
    return m.reshape(like.shape)


def per_matrix(values: torch.Tensor, x: torch.Tensor, layout: str) -> torch.Tensor:
    """Repeat per-sample ``values`` ``(B,)`` to one value per matrix of :func:`to_matrices`."""
    return values.repeat_interleave(x.shape[1]) if layout == 'channel_map' else values


@DEFENSE_REGISTRY.register()
class ASVP:
    """Forward hooks that amplify the top-k singular values of chosen feature maps by ``h``.

    Args:
        targets: module names or ``fnmatch`` globs over ``net.named_modules()`` (e.g. ``['encoder_level3',
            'decoder_level*']``); each must match at least one module.
        k: rank to amplify, an int >= 1 or ``'energy:<tau>'`` (adaptive: smallest k holding fraction tau).
        h: gain > 0 (``1`` = identity).
        layout: ``'channel_space'`` (per sample C x HW) or ``'channel_map'`` (per channel H x W).
        mode: ``'exposed'`` (output bit-identical, taps see F') or ``'inline'`` (F' replaces F).
        randomize: ``None`` or ``{'k': [lo, hi], 'h': [lo, hi]}``: per-query k uniform in [lo, hi] and h
            log-uniform in [lo, hi], drawn from ``seed`` and the query's content (replaces ``k``/``h``).
        seed: the secret seed of the randomisation.
        where: option path used in error messages.
    """

    def __init__(self, targets: list[str] | str, k: int | str = 4, h: float = 4.0, layout: str = 'channel_space',
                 mode: str = 'exposed', randomize: dict | None = None, seed: int = 0, where: str = 'asvp') -> None:
        self.targets = [targets] if isinstance(targets, str) else list(targets or [])
        if not self.targets:
            raise ValueError(f'{where}.targets: expected a non-empty list of module names or globs')
        if isinstance(k, str):
            parse_energy(k, f'{where}.k')
        elif isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"{where}.k: expected an int >= 1 or 'energy:<tau>', got {k!r}")
        if not isinstance(h, (int, float)) or h <= 0:
            raise ValueError(f'{where}.h: expected a number > 0, got {h!r}')
        if layout not in LAYOUTS:
            raise ValueError(f"{where}.layout: unknown '{layout}'; expected one of {', '.join(LAYOUTS)}")
        if mode not in MODES:
            raise ValueError(f"{where}.mode: unknown '{mode}'; expected one of {', '.join(MODES)}")
        if randomize is not None:
            check_keys(randomize, ('k', 'h'), f'{where}.randomize')
            for key, kind in (('k', int), ('h', (int, float))):
                lo_hi = randomize.get(key)
                if (not isinstance(lo_hi, (list, tuple)) or len(lo_hi) != 2 or not all(isinstance(v, kind)
                                                                                    for v in lo_hi)
                        or not 0 < lo_hi[0] <= lo_hi[1]):
                    raise ValueError(f'{where}.randomize.{key}: expected [lo, hi] with 0 < lo <= hi, got {lo_hi!r}')
        self.k, self.h, self.layout, self.mode = k, float(h), layout, mode
        self.randomize, self.seed, self.where = randomize, int(seed), where
        self.exposed_features: dict[str, torch.Tensor] = {}
        self.last_params: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.module_names: list[str] = []
        self._handles: list = []

    def attach(self, net: nn.Module) -> 'ASVP':
        """Register a forward hook on every module of ``net`` matched by ``targets``; returns ``self``."""
        if self._handles:
            raise RuntimeError(f'{self.where}: this ASVP is already attached; call remove() first')
        modules = dict(net.named_modules())
        names = []
        for pattern in self.targets:
            matched = [n for n in modules if n and fnmatch.fnmatchcase(n, pattern)]
            if not matched:
                sample = ', '.join(n for n in list(modules)[1:20])
                raise ValueError(f"{self.where}.targets: '{pattern}' matches no module of {type(net).__name__}; "
                                 f'module names look like: {sample}, ...')
            names += [n for n in matched if n not in names]
        self.module_names = names
        self._handles = [modules[n].register_forward_hook(self._make_hook(n)) for n in names]
        return self

    def remove(self) -> None:
        """Remove every hook and forget the recorded features; the network computes exactly as before."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.exposed_features.clear()
        self.last_params.clear()

    def _make_hook(self, name: str):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"{self.where}.targets: module '{name}' returns {type(output).__name__}; ASVP "
                                'hooks modules that return one feature tensor')
            with torch.no_grad():
                perturbed = self.perturb(output.detach(), name)
            self.exposed_features[name] = perturbed
            if self.mode == 'inline':
                return output + (perturbed - output.detach())
            return None

        return hook

    def query_params(self, x: torch.Tensor, name: str) -> tuple[torch.Tensor | str, torch.Tensor]:
        """Per-sample ``k`` (``(B,)`` int64, or the energy spec) and ``h`` (``(B,)`` float64) for features ``x``."""
        b = x.shape[0]
        if self.randomize is None:
            k = self.k if isinstance(self.k, str) else torch.full((b,), self.k, dtype=torch.int64)
            return k, torch.full((b,), self.h, dtype=torch.float64)
        (k_lo, k_hi), (h_lo, h_hi) = self.randomize['k'], self.randomize['h']
        ks, hs = [], []
        for sample in x.detach().float().cpu().contiguous():
            digest = hashlib.blake2b(sample.numpy().tobytes(), digest_size=8,
                                     key=f'{self.seed}:{name}'.encode()[:64]).digest()
            rng = np.random.default_rng(int.from_bytes(digest, 'little'))
            ks.append(int(rng.integers(k_lo, k_hi + 1)))
            hs.append(math.exp(rng.uniform(math.log(h_lo), math.log(h_hi))))
        return torch.tensor(ks, dtype=torch.int64), torch.tensor(hs, dtype=torch.float64)

    @torch.no_grad()
    def perturb(self, x: torch.Tensor, name: str = '') -> torch.Tensor:
        """The ASVP map of one feature tensor (``(B, C, H, W)``, or ``(B, N, C)`` tokens in ``channel_space``).

        Returns a tensor of the same shape and dtype; ``name`` keys the randomisation (the hooked module's name).
        """
        k, h = self.query_params(x, name)
        self.last_params[name] = (k, h)
        if not isinstance(k, str):
            k = per_matrix(k, x, self.layout)
        m = scale_top_singular(to_matrices(x, self.layout), k, per_matrix(h, x, self.layout))
        return from_matrices(m, x, self.layout)

    def __repr__(self) -> str:
        params = f'randomize={self.randomize}' if self.randomize else f'k={self.k}, h={self.h}'
        return f'ASVP(targets={self.targets}, {params}, layout={self.layout}, mode={self.mode})'
