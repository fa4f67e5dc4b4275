"""Membership inference, raw and calibrated: AUC, accuracy and TPR at low FPR vs hand and brute-force values."""
import numpy as np
import pytest

from basicsr_unlearn.evaluation.calibrated_membership import ROC_FPR, calibrated_attack
from basicsr_unlearn.evaluation.membership_inference import (
    auc_null_sd,
    best_threshold_accuracy,
    loss_attack,
    membership_auc,
    tpr_at_fpr,
)


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


def _brute_force_tpr(member_losses: np.ndarray, nonmember_losses: np.ndarray, level: float) -> float:
    """Every cut "member iff loss <= t" (below, between, above the observed losses): best TPR at FPR <= level."""
    values = np.unique(np.concatenate([member_losses, nonmember_losses]))
    cuts = [values[0] - 1.0, *((values[:-1] + values[1:]) / 2), values[-1] + 1.0]
    best = 0.0
    for t in cuts:
        fpr = float(np.mean(nonmember_losses <= t))
        if fpr <= level:
            best = max(best, float(np.mean(member_losses <= t)))
    return best


@pytest.mark.parametrize('seed', range(5))
def test_tpr_at_fpr_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    members = rng.integers(0, 12, 40).astype(float) / 10  # ties within and across groups
    nonmembers = rng.integers(3, 15, 90).astype(float) / 10
    levels = [0.0, 0.01, 0.05, 0.1, 0.25, 1.0]
    assert tpr_at_fpr(members, nonmembers, levels) == pytest.approx(
        [_brute_force_tpr(members, nonmembers, level) for level in levels], abs=1e-12)


def test_tpr_at_fpr_hand_computed_and_summary():
    # losses: members 1, 2, 6; non-members 3, 4, 5, 7 -> at FPR 0 the cut "<= 2" catches 2 of 3 members
    assert tpr_at_fpr([1, 2, 6], [3, 4, 5, 7], [0.0, 0.25, 0.5, 0.75]) == pytest.approx([2 / 3, 2 / 3, 2 / 3, 1.0])
    assert loss_attack([1, 2, 6], [3, 4, 5, 7])['tpr_at_fpr'] == pytest.approx({'1%': 2 / 3, '10%': 2 / 3})
    with pytest.raises(ValueError, match=r'fprs: expected a sequence of rates in \[0, 1\]'):
        tpr_at_fpr([1.0], [2.0], [1.5])


def test_calibrated_attack_same_distribution_is_chance_and_separated_is_one():
    rng = np.random.default_rng(3)
    n = 3000
    calibrator_m, calibrator_n = rng.uniform(0.02, 0.1, n), rng.uniform(0.02, 0.1, n)
    same = calibrated_attack(calibrator_m + rng.normal(0, 0.01, n), calibrator_n + rng.normal(0, 0.01, n),
                             calibrator_m, calibrator_n)
    assert abs(same['auc'] - 0.5) < 0.03  # standard error ~0.0075
    assert same['tpr_at_fpr']['10%'] < 0.15
    separated = calibrated_attack(calibrator_m - 0.02 + rng.normal(0, 0.002, n), calibrator_n + rng.normal(0, 0.002, n),
                                  calibrator_m, calibrator_n)
    assert separated['auc'] > 0.99 and separated['tpr_at_fpr']['1%'] > 0.9
    assert separated['roc_tpr'][-1] == 1.0 and len(separated['roc_tpr']) == len(ROC_FPR)


def test_calibration_removes_image_difficulty():
    """Members easier than non-members for every model: the raw attack 'detects' them, the calibrated one does not."""
    rng = np.random.default_rng(4)
    n = 2000
    reference_m, reference_n = rng.uniform(0.01, 0.03, n), rng.uniform(0.04, 0.08, n)  # easy vs hard images
    model_m, model_n = reference_m + rng.normal(0, 0.003, n), reference_n + rng.normal(0, 0.003, n)
    assert loss_attack(model_m, model_n)['auc'] > 0.99
    assert abs(calibrated_attack(model_m, model_n, reference_m, reference_n)['auc'] - 0.5) < 0.04
    with pytest.raises(ValueError, match='members: the model has 2 per-image losses but the calibrator 3'):
        calibrated_attack([0.1, 0.2], [0.1], [0.1, 0.2, 0.3], [0.1])


def test_auc_null_sd_matches_simulation():
    rng = np.random.default_rng(5)
    aucs = [membership_auc(rng.normal(size=30), rng.normal(size=12)) for _ in range(3000)]
    assert np.std(aucs) == pytest.approx(auc_null_sd(30, 12), rel=0.06)  # sd of the sample sd ~1.3%
    assert abs(np.mean(aucs) - 0.5) < 0.01
    with pytest.raises(ValueError, match='needs at least one member and one non-member'):
        auc_null_sd(0, 5)
