"""Mean ± std over seeds of nested per-run figures, and how to print them.

Every figure of a method is reported as the mean over its seeds with the sample standard deviation (ddof = 1; none
for a single seed). Runs are nested dicts of the same shape; numbers (and equal-length lists of numbers, such as a
recovery curve) are averaged leaf by leaf; a leaf that is ``None`` in any run stays ``None`` (e.g. "not within
budget"); other leaves (names, flags) are kept when all runs agree and listed otherwise.

Example:
    >>> mean, std = mean_std([{'gap': 1.0, 'curve': [1, 2]}, {'gap': 3.0, 'curve': [3, 4]}])
    >>> mean, std['gap']
    ({'gap': 2.0, 'curve': [2.0, 3.0]}, 1.4142135623730951)
    >>> plus_minus(2.0, 1.4142)
    '2.00 ± 1.41'
"""
import math

import numpy as np


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _stats(values: list[float]) -> tuple[float | None, float | None]:
    if any(not math.isfinite(v) for v in values):
        return (float(np.mean(values)), None)
    return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else None)


def mean_std(runs: list[dict]) -> tuple[dict, dict]:
    """Leaf-wise mean and sample std of ``runs`` (dicts of one shape); returns ``(mean_tree, std_tree)``.

    ``std_tree`` holds only the numeric leaves; a std is ``None`` for one run or a non-finite value.
    """
    if not runs:
        raise ValueError('mean_std: needs at least one run')
    mean, std = {}, {}
    for key in dict.fromkeys(k for run in runs for k in run):
        values = [run.get(key) for run in runs]
        if all(isinstance(v, dict) for v in values):
            mean[key], std[key] = mean_std(values)
        elif all(_is_number(v) for v in values):
            mean[key], std[key] = _stats([float(v) for v in values])
        elif (all(isinstance(v, list) and v and all(_is_number(x) for x in v) for v in values)
              and len({len(v) for v in values}) == 1):
            columns = [_stats([float(v[i]) for v in values]) for i in range(len(values[0]))]
            mean[key], std[key] = [c[0] for c in columns], [c[1] for c in columns]
        elif any(v is None for v in values) and all(v is None or _is_number(v) for v in values):
            mean[key], std[key] = None, None
        else:
            mean[key] = values[0] if all(v == values[0] for v in values) else values
    return mean, std


def plus_minus(mean: float | None, std: float | None, fmt: str = '.2f') -> str:
    """``'m ± s'`` (``'m'`` without a std, ``'–'`` without a mean)."""
    if mean is None:
        return '–'
    return format(mean, fmt) if std is None else f'{format(mean, fmt)} ± {format(std, fmt)}'
