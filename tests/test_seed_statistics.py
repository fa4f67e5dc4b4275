"""Mean ± std over seeds of nested report figures."""
import math

import pytest

from basicsr_unlearn.evaluation.seed_statistics import mean_std, plus_minus


def test_nested_mean_and_sample_std():
    runs = [{'psnr': {'haze': 18.0, 'rain': 28.0}, 'curve': [10.0, 12.0], 'steps': 10, 'name': 'ga', 'mia': None},
            {'psnr': {'haze': 18.4, 'rain': 28.0}, 'curve': [11.0, 14.0], 'steps': 25, 'name': 'ga', 'mia': None},
            {'psnr': {'haze': 18.8, 'rain': 28.0}, 'curve': [12.0, 16.0], 'steps': None, 'name': 'ga', 'mia': None}]
    mean, std = mean_std(runs)
    assert mean['psnr'] == pytest.approx({'haze': 18.4, 'rain': 28.0})
    assert std['psnr'] == pytest.approx({'haze': 0.4, 'rain': 0.0})  # ddof = 1: sqrt((0.16 + 0 + 0.16) / 2)
    assert mean['curve'] == pytest.approx([11.0, 14.0]) and std['curve'] == pytest.approx([1.0, 2.0])
    assert mean['steps'] is None  # one seed "not within budget" -> no mean
    assert mean['name'] == 'ga' and mean['mia'] is None and 'name' not in std


def test_single_run_has_no_std_and_disagreeing_labels_are_listed():
    mean, std = mean_std([{'gap': 0.3, 'tag': 'a'}])
    assert mean == {'gap': 0.3, 'tag': 'a'} and std == {'gap': None}
    mean, _ = mean_std([{'tag': 'a'}, {'tag': 'b'}])
    assert mean['tag'] == ['a', 'b']
    mean, std = mean_std([{'p': math.inf}, {'p': 30.0}])
    assert mean['p'] == math.inf and std['p'] is None
    with pytest.raises(ValueError, match='needs at least one run'):
        mean_std([])


def test_plus_minus_formatting():
    assert plus_minus(0.4, 0.4) == '0.40 ± 0.40'
    assert plus_minus(0.4, None) == '0.40'
    assert plus_minus(None, None) == '–'
    assert plus_minus(0.51234, 0.0312, '.3f') == '0.512 ± 0.031'
