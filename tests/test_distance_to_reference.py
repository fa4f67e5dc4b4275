"""Distance to retraining: output L1/PSNR against hand values, KS forget quality against exact and scipy values."""
import math

import numpy as np
import pytest
from scipy.stats import ks_2samp

from basicsr_unlearn.evaluation.distance_to_reference import forget_quality, output_distance


def test_output_distance_hand_computed():
    ref = [np.zeros((4, 4, 3), np.uint8), np.full((2, 2, 3), 100, np.uint8)]
    model = [np.full((4, 4, 3), 51, np.uint8), np.full((2, 2, 3), 100, np.uint8)]
    model[1][0, 0, 0] = 110
    result = output_distance(model, ref)
    l1 = [51 / 255, 10 / 12 / 255]
    assert result['per_image_l1'] == pytest.approx(l1)
    assert result['l1'] == pytest.approx(np.mean(l1))
    assert result['per_image_psnr_db'][0] == pytest.approx(10 * math.log10(255 ** 2 / 51 ** 2))
    assert result['per_image_psnr_db'][1] == pytest.approx(10 * math.log10(255 ** 2 / (100 / 12)))
    assert output_distance(ref, ref)['psnr_db'] == math.inf and output_distance(ref, ref)['l1'] == 0.0
    with pytest.raises(ValueError, match='1 outputs vs 2 reference outputs'):
        output_distance(model[:1], ref)


def test_ks_forget_quality_exact_small_samples():
    # fully separated samples of 3 and 3: D = 1; exactly 2 of the C(6, 3) = 20 orderings reach D = 1 -> p = 0.1
    result = forget_quality([20.1, 20.5, 20.9], [17.0, 17.2, 18.0])
    assert result == pytest.approx({'ks_statistic': 1.0, 'p_value': 0.1})
    same = forget_quality([17.0, 18.0, 19.0], [17.0, 18.0, 19.0])
    assert same == pytest.approx({'ks_statistic': 0.0, 'p_value': 1.0})
    # interleaved 4 vs 4: ECDF gap at most 1/4 -> D = 0.25, p = 1 (every ordering reaches D >= 1/4)
    assert forget_quality([1, 3, 5, 7], [2, 4, 6, 8]) == pytest.approx({'ks_statistic': 0.25, 'p_value': 1.0})


def test_ks_forget_quality_matches_scipy_on_fixed_inputs():
    rng = np.random.default_rng(0)
    model, reference = rng.normal(18.0, 1.0, 12), rng.normal(18.6, 1.2, 12)
    expected = ks_2samp(model, reference, alternative='two-sided', method='exact')
    result = forget_quality(model, reference)
    assert result['ks_statistic'] == pytest.approx(expected.statistic)
    assert result['p_value'] == pytest.approx(expected.pvalue)
    with pytest.raises(ValueError, match='needs per-image PSNRs of both'):
        forget_quality([], [1.0])
