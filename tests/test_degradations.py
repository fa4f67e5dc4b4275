"""Degradation synthesis: measured statistics, determinism, parameter errors."""
import numpy as np
import pytest
from skimage import data as skdata

from basicsr_unlearn.data.degradations import (
    add_gaussian_noise,
    add_haze,
    add_rain,
    depth_from_disparity,
    pseudo_depth,
    rain_streaks,
    synthesize,
)


def grey(value: float = 0.5, size: int = 128) -> np.ndarray:
    return np.full((size, size, 3), value, np.float32)


def photo() -> np.ndarray:
    return skdata.astronaut()[::4, ::4].astype(np.float32) / 255.0


@pytest.mark.parametrize('sigma', [15, 25, 50])
def test_noise_sigma_measured_on_the_255_scale(sigma):
    clean = grey(0.5, 256)
    noisy = add_gaussian_noise(clean, sigma, np.random.default_rng(1))
    measured = float((noisy - clean).std()) * 255
    assert measured == pytest.approx(sigma, rel=0.03)
    assert abs(float((noisy - clean).mean())) * 255 < 0.5
    assert np.array_equal(np.rint(noisy * 255), noisy * 255)  # 8-bit grid
    assert noisy.dtype == np.float32 and noisy.min() >= 0 and noisy.max() <= 1


def test_noise_is_clipped_at_the_range_ends():
    noisy = add_gaussian_noise(grey(0.0), 50, np.random.default_rng(0))
    assert noisy.min() == 0 and (noisy == 0).mean() == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize('name', ['noise25', 'rain', 'haze'])
def test_synthesis_is_deterministic_given_the_generator(name):
    img = photo()
    first = synthesize(name, img, np.random.default_rng([3, 7]))
    again = synthesize(name, img, np.random.default_rng([3, 7]))
    other = synthesize(name, img, np.random.default_rng([3, 8]))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert first.shape == img.shape and first.dtype == np.float32


def test_haze_transmission_spans_exp_minus_beta_to_one():
    clean, beta, airlight = grey(0.2, 64), 1.5, 0.9
    depth = np.tile(np.linspace(0, 10, 64, dtype=np.float32)[:, None], (1, 64))  # any scale; normalised inside
    hazy = add_haze(clean, beta=beta, airlight=airlight, depth=depth)
    t = (hazy[..., 0] - airlight) / (clean[..., 0] - airlight)
    assert t[0].mean() == pytest.approx(1.0, abs=0.01)  # depth 0: no haze
    assert t[-1].mean() == pytest.approx(np.exp(-beta), abs=0.01)  # farthest: exp(-beta)
    assert np.all(np.diff(t.mean(axis=1)) <= 1e-3)  # transmission falls with depth


def test_haze_pseudo_depth_is_normalised_and_far_at_the_top():
    img = photo()
    depth = pseudo_depth(img)
    assert depth.min() == 0 and depth.max() == pytest.approx(1.0)
    assert depth[:10].mean() > depth[-10:].mean()
    hazy = add_haze(img, beta=1.0, airlight=0.95)
    assert hazy[:10].mean() > img[:10].mean()  # far rows pulled towards the airlight
    assert np.abs(hazy - img).mean() > 0.05


def test_depth_from_disparity_inverts_and_marks_occlusions_far():
    disparity = np.array([[10.0, 20.0], [np.inf, 0.0]], np.float32)
    depth = depth_from_disparity(disparity)
    assert depth[0, 0] > depth[0, 1]  # larger disparity = nearer
    assert depth[0, 1] == 0 and depth[1, 0] == 1 and depth[1, 1] == 1


def test_rain_coverage_grows_with_density_and_streaks_follow_the_angle():
    shape = (256, 256)
    sparse = rain_streaks(shape, np.random.default_rng(0), density=0.001, length=15, angle=0)
    dense = rain_streaks(shape, np.random.default_rng(0), density=0.004, length=15, angle=0)
    cover_sparse, cover_dense = (sparse > 0.1).mean(), (dense > 0.1).mean()
    assert 0.015 < cover_sparse < 0.06  # density x length x streak width (2-3 px after the softening blur)
    assert cover_dense == pytest.approx(4 * cover_sparse, rel=0.35)
    assert dense.max() <= 0.8 + 1e-6
    assert lag_correlation(dense, 4, axis=0) > 5 * lag_correlation(dense, 4, axis=1)  # along the streaks
    tilted = rain_streaks(shape, np.random.default_rng(0), density=0.004, length=15, angle=90)
    assert lag_correlation(tilted, 4, axis=1) > 5 * lag_correlation(tilted, 4, axis=0)


def lag_correlation(layer: np.ndarray, lag: int, axis: int) -> float:
    """Autocovariance of ``layer`` between pixels ``lag`` apart along ``axis`` (0 = vertical)."""
    c = layer - layer.mean()
    a, b = (c[lag:], c[:-lag]) if axis == 0 else (c[:, lag:], c[:, :-lag])
    return float((a * b).mean())


def test_rain_only_brightens():
    img = photo()
    rainy = add_rain(img, np.random.default_rng(0), density=0.004, length=12, angle=10, intensity=0.8)
    assert np.all(rainy >= np.rint(img * 255) / 255 - 1e-6)
    assert (rainy - img > 0.1).mean() > 0.01


def test_synthesize_rejects_bad_names_and_parameters():
    img = grey()
    with pytest.raises(ValueError, match="unknown 'hazy'; expected one of noise15"):
        synthesize('hazy', img, np.random.default_rng(0))
    with pytest.raises(ValueError, match="no synthesis for 'blur'"):
        synthesize('blur', img, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"haze: unknown parameter\(s\) \['sigma'\]"):
        synthesize('haze', img, np.random.default_rng(0), sigma=3)
    with pytest.raises(ValueError, match='sigma is implied by the name'):
        synthesize('noise15', img, np.random.default_rng(0), sigma=3)
    with pytest.raises(ValueError, match='rain density'):
        synthesize('rain', img, np.random.default_rng(0), density=2)
    hazy = synthesize('haze', img, np.random.default_rng(0), beta=[1.0, 1.0], airlight=0.9)
    assert np.array_equal(hazy, add_haze(img, beta=1.0, airlight=0.9))
