"""Loss-based membership inference: can an attacker tell forget-train images from held-out ones?

The attacker sees one score per image (here the restoration loss, e.g. per-image L1) and guesses "member" when the
loss is low, since a model fits its training pairs better than unseen ones. The AUC of that guess is 0.5 when the
two groups are indistinguishable; a model retrained without the forgotten data is the true reference level.

Example:
    >>> membership_auc([0.01, 0.02], [0.03, 0.04])
    1.0
    >>> membership_auc([0.1, 0.2], [0.1, 0.2])
    0.5
"""
from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata


def _as_scores(scores: Sequence[float] | np.ndarray, where: str) -> np.ndarray:
    array = np.asarray(scores, dtype=np.float64).reshape(-1)
    if array.size == 0:
        raise ValueError(f'{where}: needs at least one score; got none')
    if not np.isfinite(array).all():
        raise ValueError(f'{where}: scores must be finite; got {array[~np.isfinite(array)][:3].tolist()} ...')
    return array


def _oriented(member_scores, nonmember_scores, lower_is_member: bool) -> tuple[np.ndarray, np.ndarray]:
    """Both score arrays flipped so that a larger value means "more likely a member"."""
    members = _as_scores(member_scores, 'member_scores')
    nonmembers = _as_scores(nonmember_scores, 'nonmember_scores')
    return (-members, -nonmembers) if lower_is_member else (members, nonmembers)


def membership_auc(member_scores: Sequence[float] | np.ndarray, nonmember_scores: Sequence[float] | np.ndarray,
                   lower_is_member: bool = True) -> float:
    """Area under the ROC curve of a threshold attack (Mann-Whitney U with mid-ranks, so ties count one half).

    Args:
        member_scores: per-image scores of training members, shape (M,).
        nonmember_scores: per-image scores of held-out images, shape (N,).
        lower_is_member: True for losses (a low loss suggests a member), False for scores such as PSNR.

    Returns:
        P(a random member scores more member-like than a random non-member) + 0.5 P(tie), in [0, 1].
        0.5 means no signal; below 0.5 means members look *less* like members than held-out images.
    """
    members, nonmembers = _oriented(member_scores, nonmember_scores, lower_is_member)
    ranks = rankdata(np.concatenate([members, nonmembers]))  # average ranks resolve ties
    m, n = members.size, nonmembers.size
    u_members = ranks[:m].sum() - m * (m + 1) / 2
    return float(u_members / (m * n))


def best_threshold_accuracy(member_scores: Sequence[float] | np.ndarray,
                            nonmember_scores: Sequence[float] | np.ndarray,
                            lower_is_member: bool = True) -> tuple[float, float]:
    """Best balanced accuracy of a single-threshold attack and the threshold that reaches it.

    Balanced accuracy ``(TPR + TNR) / 2`` is used so that unequal group sizes still give 0.5 for chance. The attack
    says "member" when the score is ``<= threshold`` (``lower_is_member``) or ``>= threshold`` otherwise. Every
    observed score is tried as a threshold, plus one that calls nobody a member.

    Args:
        member_scores: per-image scores of training members, shape (M,).
        nonmember_scores: per-image scores of held-out images, shape (N,).
        lower_is_member: True for losses, False for scores such as PSNR.

    Returns:
        ``(balanced_accuracy, threshold)`` with the threshold in the caller's score units.
    """
    members, nonmembers = _oriented(member_scores, nonmember_scores, lower_is_member)
    candidates = np.unique(np.concatenate([members, nonmembers]))  # "member" when oriented score >= candidate
    sorted_m, sorted_n = np.sort(members), np.sort(nonmembers)
    tpr = 1.0 - np.searchsorted(sorted_m, candidates, side='left') / members.size
    tnr = np.searchsorted(sorted_n, candidates, side='left') / nonmembers.size
    balanced = (tpr + tnr) / 2
    best = int(np.argmax(balanced))
    if balanced[best] <= 0.5:  # no threshold beats calling nobody a member
        threshold = candidates[-1] + 1.0
        return 0.5, float(-threshold if lower_is_member else threshold)
    threshold = candidates[best]
    return float(balanced[best]), float(-threshold if lower_is_member else threshold)


def loss_attack(member_losses: Sequence[float] | np.ndarray, nonmember_losses: Sequence[float] | np.ndarray) -> dict:
    """Loss-threshold membership attack summary (JSON-ready).

    Args:
        member_losses: per-image losses of the forget-train images, shape (M,).
        nonmember_losses: per-image losses of held-out images of the same degradation, shape (N,).

    Returns:
        ``{'auc', 'balanced_accuracy', 'threshold', 'n_members', 'n_nonmembers', 'mean_member_loss',
        'mean_nonmember_loss'}``.
    """
    accuracy, threshold = best_threshold_accuracy(member_losses, nonmember_losses)
    return {
        'auc': membership_auc(member_losses, nonmember_losses),
        'balanced_accuracy': accuracy,
        'threshold': threshold,
        'n_members': len(member_losses),
        'n_nonmembers': len(nonmember_losses),
        'mean_member_loss': float(np.mean(member_losses)),
        'mean_nonmember_loss': float(np.mean(nonmember_losses)),
    }
