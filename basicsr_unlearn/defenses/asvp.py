"""ASVP: adaptive singular value perturbation of internal feature maps (anti-distillation hooks).

For a feature matrix ``M = U S V^T`` the top-k singular values are multiplied by ``h`` and the rest kept:
``M' = M + (h - 1) U_k U_k^T M``. Only the top-k left singular vectors are needed; they come from the Gram matrix
``G = M M^T`` (one batched GEMM) and a symmetric eigendecomposition in float64, under ``no_grad``.

Layouts: ``channel_space`` treats each sample's ``(C, H*W)`` map as one matrix (``(B, N, C)`` tokens as
``(C, N)``); ``channel_map`` treats each channel's ``(H, W)`` map as one matrix. Modes: ``exposed`` leaves the
network's computation untouched and only records the perturbed features in :attr:`ASVP.exposed_features` (the
feature tap an API, a dump or a KD interface reads), so the output is bit-identical; ``inline`` replaces the
features by the perturbed ones (gradients still flow through the clean part). In exposed mode the features are
perturbed lazily, when the tap is read, so an unread tap costs nothing. With ``randomize`` each query
(sample) draws its own ``k`` and ``h`` from a secret seed keyed on the feature content, so repeating a query gives
the same answer and cannot be averaged out, while different queries get different k and h.

Options that change nothing are rejected: ``h = 1`` (the identity) and ``k`` at or above the rank of the hooked
matrices (known at the first forward pass: a plain rescale by ``h``).

Example:
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))
    >>> x = torch.rand(1, 3, 16, 16)
    >>> clean = net(x)
    >>> defense = ASVP(targets=['0'], k=2, h=4.0).attach(net)
    >>> torch.equal(net(x), clean)                    # exposed mode: the output is bit-identical
    True
    >>> defense.exposed_features['0'].shape           # what a feature tap sees (perturbed on this read)
    torch.Size([1, 8, 16, 16])
    >>> defense.remove()
"""
import fnmatch
import hashlib
import math
from collections.abc import Mapping

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
        >>> m = torch.randn(2, 4, 6, dtype=torch.float64)
        >>> ratio = torch.linalg.svdvals(scale_top_singular(m, 2, 3.0)) / torch.linalg.svdvals(m)
        >>> [round(v, 6) for v in ratio[0].tolist()]
        [3.0, 3.0, 1.0, 1.0]
    """
    wide = m.shape[-2] <= m.shape[-1]
    mat = m.double() if wide else m.double().transpose(-1, -2)
    out = apply_top_scale(mat, *gram_eigh(mat), k, h)
    return (out if wide else out.transpose(-1, -2)).to(m.dtype)


def apply_top_scale(mat: torch.Tensor, s2: torch.Tensor, u: torch.Tensor, k: torch.Tensor | int | str,
                    h: torch.Tensor | float) -> torch.Tensor:
    """The ASVP map from a given decomposition (of :func:`gram_eigh`), so callers that need the spectrum too
    (the inverse attacker, spectrum re-projection) decompose once.

    Args:
        mat: ``(N, a, b)`` float64 matrices with ``a <= b``.
        s2, u: their squared singular values ``(N, a)`` (descending) and left singular vectors ``(N, a, a)``.
        k, h: as in :func:`scale_top_singular`.

    Returns:
        ``(N, a, b)`` float64 ``M + U diag((h - 1) w) U^T M``.

    Example:
        >>> mat = torch.randn(3, 4, 9, dtype=torch.float64)
        >>> torch.allclose(apply_top_scale(mat, *gram_eigh(mat), 2, 0.5), scale_top_singular(mat, 2, 0.5))
        True
    """
    n, r = mat.shape[0], mat.shape[-2]
    if isinstance(k, str):
        k = energy_rank(s2, parse_energy(k, 'k'))
    k = torch.as_tensor(k, dtype=torch.int64).expand(n)
    h = torch.as_tensor(h, dtype=torch.float64).expand(n)
    k_max = int(k.max().clamp(max=r))
    if k_max <= 0:
        return mat.clone()
    s2, u = s2[:, :k_max], u[:, :, :k_max]
    rank = torch.arange(k_max)
    w = (rank[None] < k[:, None]) & (s2 > (REL_EPS ** 2) * s2[:, :1])
    gain = (h[:, None] - 1) * w
    return mat + u @ (gain[..., None] * (u.transpose(-1, -2) @ mat))


def parse_energy(k: str, where: str) -> float:
    """``'energy:0.9'`` -> 0.9, with a clear error naming ``where`` otherwise.

    Example:
        >>> parse_energy('energy:0.9', 'asvp.k')
        0.9
    """
    name, _, value = k.partition(':')
    try:
        tau = float(value)
    except ValueError:
        tau = -1.0
    if name != 'energy' or not 0 < tau < 1:
        raise ValueError(f"{where}: expected an int >= 1 or 'energy:<tau>' with 0 < tau < 1 (tau = 1 amplifies "
                         f"every singular value, a plain rescale), got '{k}'")
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


class ExposedFeatures(Mapping):
    """The feature tap of an exposed-mode ASVP: ``{module name: perturbed features}``, perturbed on first read.

    The hooks only keep a reference to each module's output (no copy, no decomposition), so a forward pass whose
    features nobody reads costs nothing; reading a name runs :meth:`ASVP.perturb` once and caches the result.
    """

    def __init__(self, defense: 'ASVP') -> None:
        self.defense = defense
        self._raw: dict[str, tuple[torch.Tensor, int]] = {}
        self._done: dict[str, torch.Tensor] = {}

    def record(self, name: str, features: torch.Tensor, perturbed: bool = False) -> None:
        """Keep ``features`` of module ``name`` (already ``perturbed``, or raw to perturb on read)."""
        self._done.pop(name, None)
        self._raw.pop(name, None)
        if perturbed:
            self._done[name] = features
        else:
            self._raw[name] = (features, features._version)

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._done:
            raw, version = self._raw.pop(name)
            if raw._version != version:
                raise RuntimeError(f"{self.defense.where}.targets: the output of '{name}' was modified in place "
                                   'after the forward hook, so its exposed copy would be wrong; hook a module whose '
                                   'output is not changed in place (or use mode: inline)')
            self._done[name] = self.defense.perturb(raw, name)
        return self._done[name]

    def __contains__(self, name: object) -> bool:
        return name in self._done or name in self._raw

    def __iter__(self):
        return iter([*self._done, *self._raw])

    def __len__(self) -> int:
        return len(self._done) + len(self._raw)

    def clear(self) -> None:
        """Forget every recorded feature."""
        self._raw.clear()
        self._done.clear()


@DEFENSE_REGISTRY.register()
class ASVP:
    """Forward hooks that amplify the top-k singular values of chosen feature maps by ``h``.

    Args:
        targets: module names or ``fnmatch`` globs over ``net.named_modules()`` (e.g. ``['encoder_level3',
            'decoder_level*']``); each must match at least one module.
        k: rank to amplify, an int >= 1 below the rank of the hooked matrices (checked on every forward, as it
            depends on the feature size), or ``'energy:<tau>'`` with 0 < tau < 1 (adaptive: smallest k holding
            fraction tau).
        h: gain > 0 other than 1 (``1`` is the identity and is rejected).
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
        if isinstance(h, bool) or not isinstance(h, (int, float)) or h <= 0 or h == 1:
            raise ValueError(f'{where}.h: expected a number > 0 other than 1 (h = 1 is the identity, no '
                             f'protection), got {h!r}')
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
            if randomize['h'][0] == randomize['h'][1] == 1:
                raise ValueError(f'{where}.randomize.h: [1, 1] is the identity (no protection); expected a range '
                                 'other than [1, 1]')
        self.k, self.h, self.layout, self.mode = k, float(h), layout, mode
        self.randomize, self.seed, self.where = randomize, int(seed), where
        self.exposed_features = ExposedFeatures(self)
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
            if self.mode == 'exposed':  # perturbed only when read: no work when nothing taps the features
                self.exposed_features.record(name, output.detach())
                return None
            perturbed = self.perturb(output.detach(), name)
            self.exposed_features.record(name, perturbed, perturbed=True)
            return output + (perturbed - output.detach())

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
        m = to_matrices(x, self.layout)
        self.check_rank(min(m.shape[-2:]), name)
        k, h = self.query_params(x, name)
        self.last_params[name] = (k, h)
        if not isinstance(k, str):
            k = per_matrix(k, x, self.layout)
        return from_matrices(scale_top_singular(m, k, per_matrix(h, x, self.layout)), x, self.layout)

    def check_rank(self, rank: int, name: str) -> None:
        """Raise when ``k`` (or ``randomize.k``'s upper end) reaches the rank of the hooked matrices: amplifying
        every singular value is a plain rescale by ``h``, which any student absorbs."""
        k_hi, key = (self.randomize['k'][1], 'randomize.k') if self.randomize else (self.k, 'k')
        if isinstance(k_hi, int) and k_hi >= rank:
            side = 'C x H*W per sample' if self.layout == 'channel_space' else 'H x W per channel'
            raise ValueError(f"{self.where}.{key}: {k_hi} >= {rank}, the rank of the {self.layout} matrices "
                             f"({side}) of module '{name}'; amplifying every singular value is a plain rescale by "
                             f'h; expected k < {rank}')

    def __repr__(self) -> str:
        params = f'randomize={self.randomize}' if self.randomize else f'k={self.k}, h={self.h}'
        return f'ASVP(targets={self.targets}, {params}, layout={self.layout}, mode={self.mode})'
