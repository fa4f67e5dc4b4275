"""Degradation synthesis: Gaussian noise, rain streaks and haze, vectorised and deterministic given a generator.

Every function takes clean images as float32 arrays in ``[0, 1]`` with channels last, ``(..., H, W, 3)`` RGB, and
never touches a global RNG: randomness comes from the ``numpy.random.Generator`` passed in, so the same generator
state gives the same output bit for bit. Outputs are 8-bit quantised (``round(255 x) / 255``) like the benchmark
files they imitate (BSD68 noise, Rain100L, RESIDE/SOTS).

Example:
    >>> rng = np.random.default_rng(0)
    >>> clean = np.full((64, 64, 3), 0.5, np.float32)
    >>> noisy = add_gaussian_noise(clean, 25, rng)
    >>> round(float((noisy - clean).std() * 255))
    25
"""
import math

import cv2
import numpy as np

from basicsr_unlearn.data.degradation_names import check_name

NOISE_SIGMAS: dict[str, float] = {'noise15': 15.0, 'noise25': 25.0, 'noise50': 50.0}
"""Sigma (0-255 scale) implied by each noise name of the vocabulary."""

RAIN_DEFAULTS: dict[str, tuple[float, float]] = {
    'density': (0.002, 0.006), 'length': (8.0, 20.0), 'angle': (-25.0, 25.0), 'intensity': (0.6, 0.9)}
"""Parameter ranges sampled per image by :func:`synthesize` for ``rain`` (Rain100L-like light rain)."""

HAZE_DEFAULTS: dict[str, tuple[float, float]] = {'beta': (0.6, 1.8), 'airlight': (0.75, 0.95)}
"""Parameter ranges sampled per image by :func:`synthesize` for ``haze`` (RESIDE-like: beta 0.6-1.8, A 0.7-1.0)."""


def quantize(img: np.ndarray) -> np.ndarray:
    """Clip to ``[0, 1]`` and round to the 8-bit grid; returns float32 of the same shape."""
    return (np.rint(np.clip(img, 0.0, 1.0) * 255.0) / 255.0).astype(np.float32)


def add_gaussian_noise(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Add white Gaussian noise of standard deviation ``sigma`` on the 0-255 scale, clip and quantise.

    Args:
        img: clean image(s) ``(..., H, W, C)`` in ``[0, 1]``.
        sigma: noise standard deviation in 0-255 units (15, 25, 50 for the benchmark levels).
        rng: source of randomness.

    Returns:
        Noisy image(s), same shape, float32 in ``[0, 1]`` on the 8-bit grid.
    """
    if sigma < 0:
        raise ValueError(f'sigma: expected >= 0 (0-255 scale), got {sigma}')
    noise = rng.standard_normal(img.shape, dtype=np.float32) * np.float32(sigma / 255.0)
    return quantize(img.astype(np.float32) + noise)


def line_kernel(length: float, angle: float) -> np.ndarray:
    """Motion-blur kernel: an anti-aliased line of ``length`` pixels tilted ``angle`` degrees from vertical.

    Returns:
        ``(k, k)`` float32 kernel with odd ``k >= length``, peak 1 (not normalised: a streak keeps its seed's value).
    """
    size = int(math.ceil(length)) | 1
    kernel = np.zeros((size, size), np.float32)
    kernel[:, size // 2] = 1.0
    rot = cv2.getRotationMatrix2D((size / 2 - 0.5, size / 2 - 0.5), angle, 1.0)
    kernel = cv2.warpAffine(kernel, rot, (size, size), flags=cv2.INTER_LINEAR)
    return kernel / max(float(kernel.max()), 1e-6)


def rain_streaks(shape: tuple[int, int], rng: np.random.Generator, density: float = 0.004, length: float = 14.0,
                 angle: float = 0.0, intensity: float = 0.8) -> np.ndarray:
    """Rain layer: sparse random seeds smeared along one direction by a line kernel, then softened.

    Args:
        shape: ``(H, W)`` of the layer.
        rng: source of randomness.
        density: fraction of pixels that seed a streak, in ``(0, 1)``.
        length: streak length in pixels.
        angle: streak tilt from vertical, degrees (positive = clockwise in image coordinates).
        intensity: peak streak brightness in ``[0, 1]``.

    Returns:
        ``(H, W)`` float32 streak layer in ``[0, intensity]``.
    """
    if not 0 < density < 1:
        raise ValueError(f'rain density: expected a fraction in (0, 1), got {density}')
    if length < 1:
        raise ValueError(f'rain length: expected >= 1 pixel, got {length}')
    h, w = shape
    seeds = (rng.random((h, w), dtype=np.float32) < density).astype(np.float32)
    seeds *= rng.uniform(0.6, 1.0, (h, w)).astype(np.float32)
    layer = cv2.filter2D(seeds, -1, line_kernel(length, angle), borderType=cv2.BORDER_REFLECT)
    layer = cv2.GaussianBlur(layer, (3, 3), 0.6)
    return np.clip(layer, 0.0, 1.0) * np.float32(intensity)


def add_rain(img: np.ndarray, rng: np.random.Generator, **params: float) -> np.ndarray:
    """Add rain streaks (screen blend ``1 - (1 - J)(1 - R)``, so streaks brighten like Rain100L's), quantised.

    Args:
        img: clean image ``(H, W, C)`` in ``[0, 1]``.
        rng: source of randomness.
        **params: ``density``, ``length``, ``angle``, ``intensity`` of :func:`rain_streaks`.

    Returns:
        Rainy image ``(H, W, C)`` float32 in ``[0, 1]``.
    """
    layer = rain_streaks(img.shape[:2], rng, **params)[..., None]
    return quantize(1.0 - (1.0 - img.astype(np.float32)) * (1.0 - layer))


def pseudo_depth(img: np.ndarray) -> np.ndarray:
    """Depth guess for haze when no depth map exists, normalised to ``[0, 1]`` (1 = far).

    Outdoor heuristic: the top of a photo is usually farther than the bottom, and bright smooth regions (sky, far
    haze) are far: ``d = 0.6 * (1 - y / H) + 0.4 * blur(luminance)``, the blur being a Gaussian of sigma
    ``max(H, W) / 16`` so texture does not leak into the depth, then min-max normalised.

    Args:
        img: image ``(H, W, 3)`` in ``[0, 1]``.

    Returns:
        ``(H, W)`` float32 depth in ``[0, 1]``.
    """
    h, w = img.shape[:2]
    lum = img[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    lum = cv2.GaussianBlur(lum, (0, 0), max(h, w) / 16.0, borderType=cv2.BORDER_REFLECT)
    vertical = np.linspace(1.0, 0.0, h, dtype=np.float32)[:, None]
    return normalize_depth(0.6 * vertical + 0.4 * lum)


def normalize_depth(depth: np.ndarray) -> np.ndarray:
    """Min-max normalise a depth map to ``[0, 1]``; non-finite entries (no measurement) count as farthest."""
    depth = np.asarray(depth, np.float32)
    finite = np.isfinite(depth)
    if not finite.any():
        raise ValueError('depth map has no finite value')
    lo, hi = float(depth[finite].min()), float(depth[finite].max())
    out = np.where(finite, (depth - lo) / max(hi - lo, 1e-6), 1.0)
    return out.astype(np.float32)


def depth_from_disparity(disparity: np.ndarray) -> np.ndarray:
    """Depth from a stereo disparity map (depth ~ 1 / disparity), normalised to ``[0, 1]``.

    Non-finite or non-positive disparities (occlusions) become the farthest depth.
    """
    disparity = np.asarray(disparity, np.float32)
    valid = np.isfinite(disparity) & (disparity > 0)
    inv = np.where(valid, 1.0 / np.where(valid, disparity, 1.0), np.nan)
    return normalize_depth(inv)


def add_haze(img: np.ndarray, beta: float = 1.0, airlight: float = 0.9,
             depth: np.ndarray | None = None) -> np.ndarray:
    """Atmospheric scattering model ``I = J t + A (1 - t)``, ``t = exp(-beta d)``, quantised.

    Args:
        img: clean image ``(H, W, C)`` in ``[0, 1]``.
        beta: scattering coefficient; with ``d`` in ``[0, 1]`` the transmission spans ``[exp(-beta), 1]``.
        airlight: global atmospheric light ``A`` in ``[0, 1]``.
        depth: ``(H', W')`` depth map (any scale, resized to ``(H, W)`` and min-max normalised); ``None`` uses
            :func:`pseudo_depth`.

    Returns:
        Hazy image ``(H, W, C)`` float32 in ``[0, 1]``.
    """
    if beta < 0 or not 0 <= airlight <= 1:
        raise ValueError(f'haze: expected beta >= 0 and airlight in [0, 1], got beta={beta}, airlight={airlight}')
    h, w = img.shape[:2]
    if depth is None:
        d = pseudo_depth(img)
    else:
        depth = np.asarray(depth, np.float32)
        if depth.shape != (h, w):
            depth = cv2.resize(np.nan_to_num(depth, nan=np.inf, posinf=np.inf), (w, h),
                               interpolation=cv2.INTER_NEAREST)
        d = normalize_depth(depth)
    t = np.exp(-np.float32(beta) * d)[..., None]
    return quantize(img.astype(np.float32) * t + np.float32(airlight) * (1.0 - t))


def _draw(value: float | list | tuple, rng: np.random.Generator) -> float:
    """A parameter given as a number or a ``[low, high]`` range (sampled uniformly)."""
    if isinstance(value, (list, tuple)):
        low, high = (float(v) for v in value)
        return float(rng.uniform(low, high))
    return float(value)


def synthesize(name: str, img: np.ndarray, rng: np.random.Generator, depth: np.ndarray | None = None,
               **params: float | list) -> np.ndarray:
    """Degrade a clean image with the degradation named ``name`` (vocabulary name).

    ``noiseXX`` uses sigma ``XX``; ``rain`` and ``haze`` draw each parameter from ``params`` (a number or a
    ``[low, high]`` range) or from :data:`RAIN_DEFAULTS` / :data:`HAZE_DEFAULTS`.

    Args:
        name: ``noise15``, ``noise25``, ``noise50``, ``rain`` or ``haze``.
        img: clean image ``(H, W, 3)`` in ``[0, 1]``.
        rng: source of randomness (parameters and noise).
        depth: optional depth/disparity-derived depth for ``haze`` (see :func:`add_haze`).
        **params: parameter overrides, e.g. ``beta=[0.8, 1.2]``.

    Returns:
        Degraded image ``(H, W, 3)`` float32 in ``[0, 1]``.
    """
    check_name(name, 'synthesize')
    if name in NOISE_SIGMAS:
        if params:
            raise ValueError(f'{name}: the sigma is implied by the name; unexpected parameters {sorted(params)}')
        return add_gaussian_noise(img, NOISE_SIGMAS[name], rng)
    if name == 'rain':
        defaults = RAIN_DEFAULTS
    elif name == 'haze':
        defaults = HAZE_DEFAULTS
    else:
        raise ValueError(f"synthesize: no synthesis for '{name}'; expected one of "
                         f"{', '.join([*NOISE_SIGMAS, 'rain', 'haze'])}")
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ValueError(f"{name}: unknown parameter(s) {unknown}; expected some of {', '.join(defaults)}")
    values = {key: _draw(params.get(key, default), rng) for key, default in defaults.items()}
    if name == 'rain':
        return add_rain(img, rng, **values)
    return add_haze(img, depth=depth, **values)
