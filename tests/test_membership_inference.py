"""Membership-inference AUC and threshold accuracy against hand-computed and brute-force values."""
import numpy as np
import pytest

from basicsr_unlearn.evaluation.membership_inference import best_threshold_accuracy, loss_attack, membership_auc


def _pairwise_auc(members: np.ndarray, nonmembers: np.ndarray) -> float:
    """O(M*N) definition: a member with a lower loss than a non-member wins, a tie counts one half."""
    diff = nonmembers[None, :] - members[:, None]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def test_auc_hand_computed_with_ties():
    # pairs (member, nonmember): (1,2) win, (1,4) win, (2,2) tie, (2,4) win, (3,2) loss, (3,4) win -> 4.5 / 6
    assert membership_auc([1, 2, 3], [2, 4]) == pytest.approx(0.75)
    assert membership_auc([1, 2, 3], [2, 4], lower_is_member=False) == pytest.approx(0.25)


def test_auc_extremes_and_identical_distributions():
    assert membership_auc([0.1, 0.2], [0.3, 0.4]) == 1.0
    assert membership_auc([0.3, 0.4], [0.1, 0.2]) == 0.0
    assert membership_auc([0.5] * 4, [0.5] * 7) == 0.5
    values = np.random.default_rng(0).random(20)
    assert membership_auc(values, values) == pytest.approx(0.5)


def test_auc_matches_pairwise_definition_on_random_data_with_ties():
    rng = np.random.default_rng(1)
    members = rng.integers(0, 6, 37).astype(float)
    nonmembers = rng.integers(1, 8, 23).astype(float)
    assert membership_auc(members, nonmembers) == pytest.approx(_pairwise_auc(members, nonmembers), abs=1e-12)


def test_auc_large_samples_from_one_distribution_is_near_half():
    rng = np.random.default_rng(2)
    auc = membership_auc(rng.normal(size=4000), rng.normal(size=4000))
    assert abs(auc - 0.5) < 0.02  # standard error ~0.0065


def test_best_threshold_balanced_accuracy():
    # member iff loss <= t: t=1 -> (1/3+1)/2, t=2 -> (2/3+1/2)/2, t=3 -> (1+1/2)/2 = 0.75 (best), t=4 -> 0.5
    accuracy, threshold = best_threshold_accuracy([1, 2, 3], [2, 4])
    assert accuracy == pytest.approx(0.75)
    assert threshold == 3.0
    accuracy, threshold = best_threshold_accuracy([0.1, 0.2, 0.25], [0.3, 0.4])
    assert (accuracy, threshold) == (1.0, 0.25)
    accuracy, threshold = best_threshold_accuracy([5.0, 6.0], [1.0, 2.0], lower_is_member=False)
    assert (accuracy, threshold) == (1.0, 5.0)


def test_no_signal_gives_chance_accuracy():
    accuracy, threshold = best_threshold_accuracy([0.5, 0.5], [0.5, 0.5, 0.5])
    assert accuracy == 0.5
    assert threshold < 0.5  # nobody is called a member


def test_loss_attack_summary():
    result = loss_attack([0.01, 0.02, 0.05], [0.04, 0.06])
    assert result['auc'] == pytest.approx(5 / 6)
    assert result['n_members'] == 3 and result['n_nonmembers'] == 2
    assert result['mean_member_loss'] == pytest.approx(0.08 / 3)
    assert result['balanced_accuracy'] == pytest.approx(5 / 6)  # t=0.02: TPR 2/3, TNR 1
    assert result['threshold'] == 0.02


@pytest.mark.parametrize('members, nonmembers, message', [
    ([], [1.0], 'member_scores: needs at least one score'),
    ([1.0], [float('nan')], 'nonmember_scores: scores must be finite'),
])
def test_bad_scores_raise(members, nonmembers, message):
    with pytest.raises(ValueError, match=message):
        membership_auc(members, nonmembers)
