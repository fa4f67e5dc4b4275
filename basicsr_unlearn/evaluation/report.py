"""Report building blocks: markdown tables and PNG charts (matplotlib, headless)."""
import os
from collections.abc import Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

from basicsr_unlearn.fileio import atomic_path  # noqa: E402


def _cell(value: object, floatfmt: str) -> str:
    if isinstance(value, float):
        return format(value, floatfmt)
    return '–' if value is None else str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]], floatfmt: str = '.2f') -> str:
    """Render rows as a GitHub markdown table; floats use ``floatfmt``, ``None`` shows as a dash.

    Example:
        >>> print(markdown_table(['model', 'PSNR'], [['original', 30.123]]))
        | model | PSNR |
        |---|---|
        | original | 30.12 |
    """
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f'markdown_table: row {row!r} has {len(row)} cells; header has {len(header)}')
        lines.append('| ' + ' | '.join(_cell(v, floatfmt) for v in row) + ' |')
    return '\n'.join(lines) + '\n'


def bar_chart(path: str | os.PathLike, groups: dict[str, dict[str, float]], ylabel: str, title: str) -> None:
    """Grouped bar chart: one group per outer key (e.g. model), one bar per inner key (e.g. degradation)."""
    series = list(dict.fromkeys(k for bars in groups.values() for k in bars))
    width = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(groups)), 4))
    for i, name in enumerate(series):
        xs = [g + i * width for g in range(len(groups))]
        ax.bar(xs, [bars.get(name, float('nan')) for bars in groups.values()], width, label=name)
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))], list(groups), rotation=30, ha='right')
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize='small')
    _save(fig, path)


def scatter_chart(path: str | os.PathLike, points: Sequence[dict], xlabel: str, ylabel: str, title: str) -> None:
    """Scatter plot of ``points`` (dicts with ``x``, ``y``, ``label`` and optional ``group`` for colour)."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for group in dict.fromkeys(p.get('group', '') for p in points):
        sel = [p for p in points if p.get('group', '') == group]
        ax.scatter([p['x'] for p in sel], [p['y'] for p in sel], label=group or None, s=24)
        for p in sel:
            ax.annotate(p['label'], (p['x'], p['y']), fontsize=6, alpha=0.7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if any(p.get('group') for p in points):
        ax.legend(fontsize='small')
    _save(fig, path)


def line_chart(path: str | os.PathLike, panels: dict[str, dict[str, Sequence[tuple[float, float]]]], xlabel: str,
               title: str) -> None:
    """Line plots in a grid: one panel per outer key (e.g. a metric), one line of ``(x, y)`` points per inner key."""
    cols = min(len(panels), 3)
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, (panel, lines) in zip(axes.flat, panels.items()):
        for name, points in lines.items():
            ax.plot([p[0] for p in points], [p[1] for p in points], label=name, linewidth=1)
        ax.set_title(panel, fontsize='small')
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize='x-small')
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title)
    _save(fig, path)


def roc_chart(path: str | os.PathLike, fpr: Sequence[float], curves: dict[str, Sequence[float]], title: str) -> None:
    """ROC curves on a logarithmic FPR axis (low-FPR behaviour visible), with the chance diagonal TPR = FPR."""
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.plot(fpr, fpr, color='grey', linestyle=':', linewidth=1, label='chance')
    for name, tpr in curves.items():
        ax.step(fpr, tpr, where='post', label=name, linewidth=1)
    ax.set_xscale('log')
    ax.set_xlim(min(fpr), 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel('false-positive rate (log)')
    ax.set_ylabel('true-positive rate')
    ax.set_title(title)
    ax.grid(alpha=0.3, which='both')
    ax.legend(fontsize='x-small')
    _save(fig, path)


def _save(fig: plt.Figure, path: str | os.PathLike) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format='png')
    plt.close(fig)
