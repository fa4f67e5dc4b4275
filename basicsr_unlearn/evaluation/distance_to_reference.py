"""Distance to retraining on held-out images of the forgotten type: outputs and per-image quality vs the reference.

A matching mean PSNR does not mean matching behaviour: a model can restore the forgotten type as badly as the
retrained reference while producing very different images. Two views, both on the 8-bit outputs a user would save:

- output distance: mean per-pixel ``|f_model(x) - f_ref(x)|`` (in [0, 1] units) and ``PSNR(f_model(x), f_ref(x))``
  averaged over the images (lower distance / higher PSNR = closer to retraining);
- forget quality (as in TOFU): the p-value of a two-sample Kolmogorov-Smirnov test between the per-image PSNR
  distributions of the model and of the reference (near 1 = indistinguishable, small = tell-apart).

Example:
    >>> a = [np.zeros((4, 4, 3), np.uint8)]
    >>> output_distance(a, [np.full((4, 4, 3), 51, np.uint8)])['l1']
    0.2
    >>> round(forget_quality([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])['p_value'], 6)
    0.1
"""
from collections.abc import Sequence

import numpy as np
from basicsr.metrics import calculate_psnr
from scipy.stats import ks_2samp


def output_distance(outputs: Sequence[np.ndarray], reference_outputs: Sequence[np.ndarray], crop_border: int = 0,
                    y_channel: bool = False) -> dict:
    """Per-image distance between a model's and the reference's restored images of the same inputs.

    Args:
        outputs: the model's restored images, uint8 (H, W, 3) each, in dataset order.
        reference_outputs: the reference's restored images of the same inputs, same shapes.
        crop_border: pixels cropped from each border for the PSNR.
        y_channel: PSNR on the Y channel instead of RGB.

    Returns:
        ``{'l1', 'psnr_db', 'per_image_l1', 'per_image_psnr_db'}``; ``l1`` in [0, 1] pixel units; an image
        identical to the reference has infinite PSNR.
    """
    if len(outputs) != len(reference_outputs) or not outputs:
        raise ValueError(f'output_distance: {len(outputs)} outputs vs {len(reference_outputs)} reference outputs; '
                         'expected the same, non-zero number of images')
    l1 = [float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean() / 255.0)
          for a, b in zip(outputs, reference_outputs)]
    psnr = [float(calculate_psnr(a, b, crop_border, test_y_channel=y_channel)) for a, b in zip(outputs,
                                                                                             reference_outputs)]
    return {'l1': float(np.mean(l1)), 'psnr_db': float(np.mean(psnr)), 'per_image_l1': l1, 'per_image_psnr_db': psnr}


def forget_quality(model_psnrs: Sequence[float], reference_psnrs: Sequence[float]) -> dict:
    """Two-sample Kolmogorov-Smirnov test (two-sided; exact p-value for small samples) of per-image PSNRs.

    Args:
        model_psnrs: the model's per-image PSNR on held-out images of the forgotten type, shape (N,).
        reference_psnrs: the reference's per-image PSNR on the same kind of images, shape (M,).

    Returns:
        ``{'ks_statistic', 'p_value'}``: the largest gap between the two empirical CDFs, and the p-value ("forget
        quality": 1 = indistinguishable from retraining, small = the model's distribution differs).
    """
    if len(model_psnrs) == 0 or len(reference_psnrs) == 0:
        raise ValueError('forget_quality: needs per-image PSNRs of both the model and the reference')
    result = ks_2samp(np.asarray(model_psnrs, np.float64), np.asarray(reference_psnrs, np.float64))
    return {'ks_statistic': float(result.statistic), 'p_value': float(result.pvalue)}
