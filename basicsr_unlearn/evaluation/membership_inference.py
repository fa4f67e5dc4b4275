"""Loss-based membership inference: can an attacker tell forget-train images from held-out ones?

The attacker sees one score per image (here the restoration loss, e.g. per-image L1) and guesses "member" when the
loss is low, since a model fits its training pairs better than unseen ones. The AUC of that guess is 0.5 when the
two groups are indistinguishable; a model retrained without the forgotten data is the true reference level.

Besides the AUC, the true-positive rate at a low false-positive rate (1%, 10%) says whether *some* members are
exposed with confidence, which an average such as the AUC hides (Carlini et al., LiRA, 2022).

Example:
    >>> membership_auc([0.01, 0.02], [0.03, 0.04])
    1.0
    >>> membership_auc([0.1, 0.2], [0.1, 0.2])
    0.5
    >>> tpr_at_fpr([0.01, 0.05], [0.03, 0.04], [0.0, 0.5])
    [0.5, 0.5]
"""
from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata

FPR_LEVELS = {'1%': 0.01, '10%': 0.1}


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


def auc_null_sd(n_members: int, n_nonmembers: int) -> float:
    """Standard deviation of the AUC when members and non-members come from one distribution (no ties).

    The Mann-Whitney null: ``sqrt((M + N + 1) / (12 M N))``; an AUC within about two of these of 0.5 is chance.

    Example:
        >>> round(auc_null_sd(30, 12), 4)
        0.0998
    """
    if n_members < 1 or n_nonmembers < 1:
        raise ValueError(f'auc_null_sd: needs at least one member and one non-member; got {n_members}, {n_nonmembers}')
    return float(np.sqrt((n_members + n_nonmembers + 1) / (12.0 * n_members * n_nonmembers)))


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


def tpr_at_fpr(member_scores: Sequence[float] | np.ndarray, nonmember_scores: Sequence[float] | np.ndarray,
               fprs: Sequence[float], lower_is_member: bool = True) -> list[float]:
    """Exact best true-positive rate of a threshold attack whose false-positive rate is at most each of ``fprs``.

    The attack says "member" when the (oriented) score is at or beyond a threshold; every observed score and one
    threshold that calls nobody a member are tried, so with N non-members the achievable FPRs are multiples of 1/N
    (an FPR level below 1/N allows no false positive at all).

    Args:
        member_scores: per-image scores of training members, shape (M,).
        nonmember_scores: per-image scores of held-out images, shape (N,).
        fprs: false-positive-rate levels in [0, 1], e.g. ``[0.01, 0.1]``.
        lower_is_member: True for losses, False for scores such as PSNR.

    Returns:
        ``max {TPR(t) : FPR(t) <= level}`` for each level, in [0, 1].
    """
    levels = np.asarray(fprs, dtype=np.float64)
    if levels.ndim != 1 or ((levels < 0) | (levels > 1)).any():
        raise ValueError(f'fprs: expected a sequence of rates in [0, 1]; got {fprs!r}')
    members, nonmembers = _oriented(member_scores, nonmember_scores, lower_is_member)
    candidates = np.append(np.unique(np.concatenate([members, nonmembers])), np.inf)
    tpr = 1.0 - np.searchsorted(np.sort(members), candidates, side='left') / members.size
    fpr = 1.0 - np.searchsorted(np.sort(nonmembers), candidates, side='left') / nonmembers.size
    allowed = fpr[None, :] <= levels[:, None] + 1e-12
    return [float(tpr[row].max()) for row in allowed]  # the inf threshold (FPR 0) is always allowed


def attack_summary(member_scores: Sequence[float] | np.ndarray, nonmember_scores: Sequence[float] | np.ndarray,
                   lower_is_member: bool = True) -> dict:
    """AUC, best balanced accuracy (and its threshold) and TPR at the :data:`FPR_LEVELS` of one attack (JSON-ready).

    Returns:
        ``{'auc', 'balanced_accuracy', 'threshold', 'tpr_at_fpr': {'1%', '10%'}, 'n_members', 'n_nonmembers'}``.
    """
    accuracy, threshold = best_threshold_accuracy(member_scores, nonmember_scores, lower_is_member)
    tprs = tpr_at_fpr(member_scores, nonmember_scores, list(FPR_LEVELS.values()), lower_is_member)
    return {
        'auc': membership_auc(member_scores, nonmember_scores, lower_is_member),
        'balanced_accuracy': accuracy,
        'threshold': threshold,
        'tpr_at_fpr': dict(zip(FPR_LEVELS, tprs)),
        'n_members': len(member_scores),
        'n_nonmembers': len(nonmember_scores),
    }


def loss_attack(member_losses: Sequence[float] | np.ndarray, nonmember_losses: Sequence[float] | np.ndarray) -> dict:
    """Loss-threshold membership attack summary (JSON-ready).

    Args:
        member_losses: per-image losses of the forget-train images, shape (M,).
        nonmember_losses: per-image losses of held-out images of the same degradation, shape (N,).

    Returns:
        :func:`attack_summary` plus ``'mean_member_loss'``, ``'mean_nonmember_loss'``.
    """
    return {
        **attack_summary(member_losses, nonmember_losses),
        'mean_member_loss': float(np.mean(member_losses)),
        'mean_nonmember_loss': float(np.mean(nonmember_losses)),
    }
