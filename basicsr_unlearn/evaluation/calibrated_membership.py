"""Difficulty-calibrated membership inference: the model's per-image loss minus a reference model's on the same image.

A raw loss threshold mostly measures how hard each image is: if the forget-train images are easier to restore than
the held-out ones, even a model that never saw them "recognises" them (the demo's retrained model scored AUC 0.35).
Subtracting the loss of a model that never saw the image (the retrained reference, which an auditor has) removes
that difficulty, as in difficulty calibration (Watson et al., ICLR 2022) and the offline variant of LiRA: what stays
is how much better *this* model fits an image than retraining does. A model indistinguishable from retraining scores
AUC ~ 0.5; a second retrained reference (another seed) calibrated by the first gives the measured no-membership
level, whose distance from 0.5 is sampling noise plus seed-to-seed variation.

Example:
    >>> result = calibrated_attack([0.01, 0.02], [0.05, 0.06], [0.03, 0.04], [0.05, 0.06])
    >>> result['auc'], result['mean_member_score']
    (1.0, -0.02)
"""
from collections.abc import Sequence

import numpy as np

from basicsr_unlearn.evaluation.membership_inference import attack_summary, tpr_at_fpr

ROC_FPR = tuple(float(f) for f in np.logspace(-3, 0, 25))  # grid of the stored and plotted ROC curves


def calibrated_scores(model_losses: Sequence[float], calibrator_losses: Sequence[float], where: str) -> np.ndarray:
    """Per-image ``loss_model - loss_calibrator`` (lower = fits the image better than the calibrator), shape (N,)."""
    model, calibrator = np.asarray(model_losses, np.float64), np.asarray(calibrator_losses, np.float64)
    if model.shape != calibrator.shape:
        raise ValueError(f'{where}: the model has {model.size} per-image losses but the calibrator '
                         f'{calibrator.size}; both must score the same images')
    return model - calibrator


def calibrated_attack(member_losses: Sequence[float], nonmember_losses: Sequence[float],
                      calibrator_member_losses: Sequence[float], calibrator_nonmember_losses: Sequence[float]) -> dict:
    """Calibrated loss attack: members = forget-train images, non-members = held-out images of the same type.

    Args:
        member_losses: the model's per-image losses on the members, shape (M,).
        nonmember_losses: the model's per-image losses on the non-members, shape (N,).
        calibrator_member_losses: the calibrating reference's losses on the same members, shape (M,).
        calibrator_nonmember_losses: its losses on the same non-members, shape (N,).

    Returns:
        :func:`~basicsr_unlearn.evaluation.membership_inference.attack_summary` of the calibrated scores plus
        ``'mean_member_score'``, ``'mean_nonmember_score'`` and ``'roc_tpr'`` (TPR at each FPR of :data:`ROC_FPR`).
    """
    members = calibrated_scores(member_losses, calibrator_member_losses, 'members')
    nonmembers = calibrated_scores(nonmember_losses, calibrator_nonmember_losses, 'non-members')
    return {
        **attack_summary(members, nonmembers),
        'mean_member_score': float(members.mean()),
        'mean_nonmember_score': float(nonmembers.mean()),
        'roc_tpr': tpr_at_fpr(members, nonmembers, ROC_FPR),
    }
