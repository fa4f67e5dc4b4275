"""Unlearning report as files: ``report.json`` (every number), ``report.md`` (every figure per model, mean ± std over
seeds, ending in the headline table and plots) and PNG charts, from :func:`~.unlearning_report.build_report`.

Example:
    >>> plus_minus_at({'forget_gap_db': 0.3, 'std': {'forget_gap_db': 0.1}}, 'forget_gap_db')
    '0.30 ± 0.10'
"""
import math
import os
from pathlib import Path

from basicsr_unlearn.evaluation.model_specs import plateau_gain
from basicsr_unlearn.evaluation.report import bar_chart, line_chart, markdown_table, roc_chart, scatter_chart
from basicsr_unlearn.evaluation.seed_statistics import plus_minus
from basicsr_unlearn.evaluation.unlearning_report import GOALS, TARGETS
from basicsr_unlearn.fileio import write_json, write_text

CHARTS = {'psnr': 'psnr_per_degradation.png', 'tradeoff': 'forget_gap_vs_retain_change.png',
          'curves': 'training_curves.png', 'roc': 'mia_roc.png', 'relearn': 'relearning_curves.png'}


def _get(tree: object, path: tuple[str | int, ...]) -> object:
    """The value at ``path`` (dict keys, list indices) or ``None`` where the path does not exist."""
    for key in path:
        if isinstance(tree, dict):
            tree = tree.get(key)
        elif isinstance(tree, list) and isinstance(key, int) and key < len(tree):
            tree = tree[key]
        else:
            return None
    return tree


def plus_minus_at(row: dict, *path: str | int, fmt: str = '.2f') -> str:
    """``'mean ± std'`` of the figure at ``path`` of a report row (its std read at the same path under ``std``)."""
    std = _get(row.get('std'), path)
    return plus_minus(_get(row, path), std if isinstance(std, float) else None, fmt)


def label(row: dict) -> str:
    """Row label: the name, its role unless a method, the seed count, and "oracle stop" when a run used one."""
    text = row['name'] if row['role'] == 'method' or row['name'].startswith(row['role']) else \
        f'{row["name"]} ({row["role"]})'
    if row['n_seeds'] > 1:
        text += f' [{row["n_seeds"]} seeds]'
    return text + (' (oracle stop)' if row['oracle_stop'] else '')


def _forget_gap(row: dict, floor: dict | None) -> str:
    text = plus_minus_at(row, 'forget_gap_db')
    return text if floor is None else f'{text} (floor {floor["forget_gap_db"]:.2f})'


def _steps(row: dict) -> str:
    relearn = row.get('relearn')
    if not relearn:
        return '–'
    if relearn['steps_to_original'] is not None:
        return plus_minus_at(row, 'relearn', 'steps_to_original', fmt='.0f')
    reached = relearn['reached']
    share = f' ({round(reached * row["n_seeds"])}/{row["n_seeds"]} seeds reached)' if reached else ''
    return 'not within budget' + share


def _attacks(row: dict) -> str:
    """``'MIA ✓, KS ✓, relearn ✗'`` from the row's attack verdicts (``?`` where not measured)."""
    if 'attacks' not in row:
        return '–'
    marks = {True: '✓', False: '✗', None: '?'}
    return ', '.join(f'{name} {marks[row["attacks"][key]]}' for name, key in
                     (('MIA', 'calibrated_mia'), ('KS', 'forget_quality'), ('relearn', 'relearning')))


def _verdict(row: dict) -> str:
    if 'meets' not in row:
        return '–'
    text = 'no: ' + '; '.join(row['missed_target']) if row['meets'] == 'no' else row['meets']
    return text + (' (oracle stop)' if row['oracle_stop'] else '')


def main_table(report: dict) -> str:
    """The headline markdown table: PSNR per type, gaps beside the noise floor, attacks, cost and the verdict."""
    forget, space, floor = report['forget'], report['metric_space'], report['noise_floor']
    header = ['model', *[f'{d} (forgotten)' if d == forget else d for d in report['degradations']],
              'forget gap', 'forget SSIM gap', 'worst retained Δ', 'Avg.Gap', 'cal. MIA AUC', 'TPR@1%FPR',
              'forget quality', 'relearn steps', 'attacks passed', 'time (s)', 'cost vs retrain', 'meets']
    rows = []
    if report.get('input_psnr'):
        rows.append(['degraded input (no model)', *[f'{report["input_psnr"][d]:.2f}' for d in report['degradations']],
                     *['–'] * (len(header) - 1 - len(report['degradations']))])
    for m in report['models']:
        cost = '–' if m['cost_ratio'] is None else plus_minus_at(m, 'cost_ratio', fmt='.1%')
        calibrated = m['mia_calibrated'] is not None
        rows.append([label(m), *[plus_minus_at(m, 'psnr', d) for d in report['degradations']], _forget_gap(m, floor),
                     plus_minus_at(m, 'forget_gap_ssim', fmt='.4f'), plus_minus_at(m, 'worst_retain_change_db'),
                     plus_minus_at(m, 'avg_gap_db'),
                     plus_minus_at(m, 'mia_calibrated', 'auc', fmt='.3f') if calibrated else '–',
                     plus_minus_at(m, 'mia_calibrated', 'tpr_at_fpr', '1%', fmt='.2f') if calibrated else '–',
                     plus_minus_at(m, 'forget_quality', 'p_value', fmt='.3f'), _steps(m), _attacks(m),
                     plus_minus_at(m, 'wall_time_s', fmt='.0f'), cost, _verdict(m)])
    floor_text = ('no second reference, so no noise floor' if floor is None else
                  f'floor = the second reference\'s own forget gap ({floor["forget_gap_db"]:.2f} dB): the level of '
                  '"indistinguishable from retraining"')
    caption = (f'PSNR in dB on {space}, held-out test images, mean ± std over seeds; forget gap = |PSNR − '
               f'PSNR_{report["reference"]}| on {forget} ({floor_text}); worst retained Δ = lowest PSNR change vs the '
               'original over the retained types; Avg.Gap = mean |PSNR − PSNR_reference| over all types; cal. MIA = '
               f'membership attack on per-image L1 calibrated by the reference (0.5 = no signal); forget quality = KS '
               f'p-value of per-image {forget} PSNRs vs the reference (1 = indistinguishable); relearn steps = '
               'fine-tuning steps to regain the original\'s forgotten-type PSNR; attacks passed: calibrated AUC within '
               f'{report["mia_null_band"]:.3f} of 0.5 (two null standard deviations), KS p ≥ {report["ks_alpha"]}, '
               'mean relearning lead over the reference within the noise floor (else within the forget-gap goal).\n\n')
    return caption + markdown_table(header, rows)


def _gap_section(report: dict) -> list[str]:
    degs, floor = report['degradations'], report['noise_floor']
    header = ['model', *[f'{d} {unit}' for d in degs for unit in ('ΔPSNR', 'ΔSSIM')], 'Avg.Gap dB', 'Avg.Gap SSIM']
    rows = [[label(m), *[plus_minus_at(m, key, d, fmt=fmt) for d in degs for key, fmt in
                         (('gap_db', '.2f'), ('gap_ssim', '.4f'))],
             plus_minus_at(m, 'avg_gap_db'), plus_minus_at(m, 'avg_gap_ssim', fmt='.4f')] for m in report['models']]
    lines = ['## Gaps to the retrained reference (PSNR and SSIM)\n',
             f'|x − x_{report["reference"]}| per type, and their mean over all types (Avg.Gap, SalUn); lower is '
             'closer to retraining.']
    if floor is not None:
        lines.append(f'Noise floor (second reference vs the first): forget gap {floor["forget_gap_db"]:.2f} dB / '
                     f'{floor["forget_gap_ssim"]:.4f} SSIM, Avg.Gap {floor["avg_gap_db"]:.2f} dB / '
                     f'{floor["avg_gap_ssim"]:.4f} SSIM.')
    return [*lines, '', markdown_table(header, rows)]


def _mia_section(report: dict) -> list[str]:
    forget, models = report['forget'], report['models']
    references = [m for m in models if m['role'] == 'reference']
    header = ['model', 'AUC', 'TPR@1%FPR', 'TPR@10%FPR', 'cal. AUC', 'cal. TPR@1%FPR', 'cal. TPR@10%FPR',
              'members/non-members']
    rows = []
    for m in models:
        cal = [plus_minus_at(m, 'mia_calibrated', *path, fmt=fmt) for path, fmt in
               ((('auc',), '.3f'), (('tpr_at_fpr', '1%'), '.2f'), (('tpr_at_fpr', '10%'), '.2f'))] \
            if m['mia_calibrated'] is not None else ['calibrator'] * 3
        rows.append([label(m), plus_minus_at(m, 'mia', 'auc', fmt='.3f'),
                     plus_minus_at(m, 'mia', 'tpr_at_fpr', '1%'), plus_minus_at(m, 'mia', 'tpr_at_fpr', '10%'), *cal,
                     f'{m["mia"]["n_members"]:.0f}/{m["mia"]["n_nonmembers"]:.0f}'])
    n_non = models[0]['mia']['n_nonmembers']
    lines = [f'## Membership inference on {forget}\n',
             f'Members = the forget-train {forget} pairs, non-members = held-out {forget} test images; the attack '
             'calls an image a member when its score is low. Raw score: per-image L1 of the model; it also measures '
             'how hard each image is, so even a model that never saw the members can score far from 0.5. '
             f'Calibrated score: L1_model − L1_{report["reference"]} on the same image (difficulty calibration: the '
             'auditor has the retrained reference); each reference is calibrated by another reference. AUC 0.5 = no '
             'signal; TPR at a low FPR = members exposed with confidence (with '
             f'{n_non:.0f} non-members the FPR moves in steps of {1 / n_non:.1%}: 1% allows no false positive). '
             f'With these sample sizes an AUC within {report["mia_null_band"]:.3f} of 0.5 (two standard deviations '
             'of the Mann-Whitney null) is chance.']
    second = [m for m in references[1:] if m['mia_calibrated'] is not None]
    if second:
        auc = second[0]['mia_calibrated']['auc']
        lines.append(f'No-membership level measured: {second[0]["name"]} calibrated by {references[0]["name"]} scores '
                     f'AUC {auc:.3f} (offset {auc - 0.5:+.3f} from 0.5). That offset is what sampling noise and '
                     'the seed-to-seed difference of two retrainings produce; a method within it of 0.5 shows no '
                     'membership signal, one beyond it still fits the forgotten training pairs better (or, below 0.5, '
                     'worse) than retraining does.')
    else:
        lines.append('With a single reference its calibrated attack would compare it with itself; pass a second '
                     '`--reference` (another retraining seed) to measure the no-membership level.')
    return [*lines, '', markdown_table(header, rows), f'![calibrated MIA ROC]({CHARTS["roc"]})\n']


def _distance_section(report: dict) -> list[str]:
    forget = report['forget']
    header = ['model', 'mean \\|f − f_ref\\|', 'PSNR(f, f_ref) dB', 'KS D', 'forget quality (KS p)']
    rows = [[label(m), plus_minus_at(m, 'distance', 'l1', fmt='.4f'), plus_minus_at(m, 'distance', 'psnr_db'),
             plus_minus_at(m, 'forget_quality', 'ks_statistic', fmt='.3f'),
             plus_minus_at(m, 'forget_quality', 'p_value', fmt='.3f')]
            for m in report['models'] if m['name'] != report['reference']]
    return [f'## Distance to retraining on held-out {forget}\n',
            f'Outputs compared with {report["reference"]}\'s on the same held-out {forget} images (8-bit, '
            f'{report["metric_space"]}): mean per-pixel |f_model − f_ref| in [0, 1] (lower = closer) and PSNR between '
            'the two outputs (higher = closer). Forget quality: two-sample Kolmogorov-Smirnov test between the '
            'per-image PSNR distributions of the model and of the reference (D = largest CDF gap; p near 1 = '
            'indistinguishable from retraining, small p = the model is told apart).\n',
            markdown_table(header, rows)]


def _relearn_section(report: dict) -> list[str]:
    settings, forget, floor = report['relearn'], report['forget'], report['noise_floor']
    steps = settings['curve_steps']
    header = ['model', *[f'{s} steps' for s in steps], 'steps to original', 'mean lead over reference (dB)']
    rows = [[label(m), *[plus_minus_at(m, 'relearn', 'psnr', i) for i in range(len(steps))], _steps(m),
             plus_minus_at(m, 'relearn', 'lead_db')] for m in report['models'] if m.get('relearn')]
    floor_text = ('' if floor is None or 'relearn_curve_gap_db' not in floor else
                  ' Noise floor: the two references\' curves lie a mean '
                  f'{floor["relearn_curve_gap_db"]:.2f} dB apart (mean |PSNR_B − PSNR_A| over the budgets).')
    return ['## Relearning attack\n',
            f'Each model is fine-tuned (a copy; Adam lr {settings["lr"]:g}, L1, seed {settings["seed"]}) on '
            f'{settings["pairs"]} {forget} pairs of the members set, random {settings["patch"]}-px crops, '
            f'and its held-out {forget} PSNR (dB) is measured after each budget. Steps to original = the first budget '
            f'at which it reaches the original\'s {settings["target_db"]:.2f} dB. Mean lead = PSNR minus the '
            'reference\'s PSNR after the same fine-tuning, averaged over the budgets (steadier than one budget on a '
            'few pairs): well above the floor means the skill was hidden, not removed; '
            f'at or below it, the model relearns no faster than a model that never learned {forget}.{floor_text}\n',
            markdown_table(header, rows), f'![relearning recovery curves]({CHARTS["relearn"]})\n']


def _fmt_gain(gain: float | None) -> str:
    return 'n/a' if gain is None else f'{gain:+.2f} dB'


def _curve_panels(curves: dict[str, dict]) -> dict[str, dict[str, list[tuple[float, float]]]]:
    panels = {'training loss': {name: [tuple(p) for p in log.get('loss', [])] for name, log in curves.items()}}
    for name, log in curves.items():
        for it, per_de in log.get('val', []):
            for de_name, metrics in per_de.items():
                panels.setdefault(f'val PSNR {de_name} (dB)', {}).setdefault(name, []).append((it, metrics['psnr']))
    return panels


def render_markdown(report: dict, curves: dict[str, dict]) -> str:
    """The full ``report.md``: setup, gaps, SSIM, MIA, distance, relearning, training curves, then the main table."""
    forget, space, degs, models = report['forget'], report['metric_space'], report['degradations'], report['models']
    refs = [m['name'] for m in models if m['role'] == 'reference']
    seeds = ', '.join(f'{m["name"]} {m["n_seeds"]}' for m in models if m['role'] == 'method')
    lines = [f'# Unlearning report: forgetting {forget}\n',
             f'Metrics on {space} (PSNR dB / SSIM), held-out test images; counts per degradation: '
             + ', '.join(f'{d} {models[0]["count"][d]:.0f}' for d in degs) + '.',
             f'Every gap, distance and calibration is measured against {refs[0]} (retrained without {forget})'
             + (f'; {", ".join(refs[1:])} (another retraining seed) gives the noise floor.' if refs[1:] else '.'),
             f'Seeds per method: {seeds or "none"}; every figure of a method is mean ± std over its seeds.',
             'A row marked "oracle stop" stopped training by looking at a retrained reference: not a result a user '
             'could get at deletion time.',
             f'Targets: forget gap ≤ {TARGETS["forget_gap_db"]} dB, every retained type at most '
             f'{TARGETS["retain_drop_db"]} dB below the original, cost ≤ {TARGETS["cost_ratio"]:.0%} of retraining; '
             f'goals {GOALS["forget_gap_db"]} dB / {GOALS["retain_drop_db"]} dB / {GOALS["cost_ratio"]:.0%}.',
             f'Cost: {report["cost_basis"]}.\n',
             *_gap_section(report),
             f'## SSIM per degradation ({space})\n',
             markdown_table(['model', *degs], [[label(m), *[plus_minus_at(m, 'ssim', d, fmt='.4f') for d in degs]]
                                               for m in models]),
             *_mia_section(report), *_distance_section(report)]
    if report['relearn'] is not None:
        lines += _relearn_section(report)
    if curves:
        lines += ['## Training curves (fair comparison needs a plateau)\n',
                  'Mean validation-PSNR gain over the last quarter of training (≈ 0 dB = plateau): '
                  + ', '.join(f'{name} {_fmt_gain(plateau_gain(log))}' for name, log in curves.items()) + '.\n',
                  f'![training curves]({CHARTS["curves"]})\n']
    lines += ['## Results\n', main_table(report),
              f'![PSNR per degradation]({CHARTS["psnr"]}) ![forget gap vs retained change]({CHARTS["tradeoff"]})\n']
    return '\n'.join(lines)


def _charts(report: dict, out: Path, curves: dict[str, dict]) -> None:
    space, models, forget = report['metric_space'], report['models'], report['forget']
    bar_chart(out / CHARTS['psnr'], {label(m): m['psnr'] for m in models}, f'PSNR (dB, {space})',
              'Held-out PSNR per degradation (mean over seeds)')
    scatter_chart(out / CHARTS['tradeoff'],
                  [{'x': m['forget_gap_db'], 'y': m['worst_retain_change_db'], 'label': m['name'], 'group': m['role']}
                   for m in models],
                  f'forget gap |PSNR − PSNR_ref| on {forget} (dB, {space})',
                  'worst retained PSNR change vs original (dB)', 'Forgetting vs retention (best: bottom-left to 0, 0)')
    roc_chart(out / CHARTS['roc'], report['roc_fpr'],
              {label(m): m['mia_calibrated']['roc_tpr'] for m in models if m['mia_calibrated'] is not None},
              f'Calibrated membership attack on {forget} (mean over seeds)')
    if report['relearn'] is not None:
        steps = report['relearn']['curve_steps']
        target = report['relearn']['target_db']
        attacked = [m for m in models if m.get('relearn')]
        reference = next(m for m in attacked if m['name'] == report['reference'])['relearn']['psnr']
        lines = {label(m): list(zip(steps, m['relearn']['psnr'])) for m in attacked}
        lines["original's level"] = [(steps[0], target), (steps[-1], target)]
        leads = {label(m): [(s, p - r) for s, p, r in zip(steps, m['relearn']['psnr'], reference)] for m in attacked}
        line_chart(out / CHARTS['relearn'], {f'held-out {forget} PSNR (dB)': lines,
                                             f'lead over {report["reference"]} (dB)': leads},
                   'fine-tuning steps', 'Relearning attack (mean over seeds)')
    if curves:
        line_chart(out / CHARTS['curves'], _curve_panels(curves), 'iteration', 'Original vs retrained reference')


def write_report(report: dict, out: str | os.PathLike, curves: dict[str, dict]) -> Path:
    """Write ``report.json`` (with ``headline_md`` and ``plateau_gain_db``), ``report.md`` and the PNG charts into
    ``out``; returns the markdown path."""
    out = Path(out)
    _charts(report, out, curves)
    report = {**report, 'headline_md': main_table(report)}
    if curves:
        report['plateau_gain_db'] = {name: plateau_gain(log) for name, log in curves.items()}
    write_json(out / 'report.json', _finite(report))
    md_path = out / 'report.md'
    write_text(md_path, render_markdown(report, curves))
    return md_path


def _finite(obj: object) -> object:
    """Replace NaN/inf by None so the JSON stays standard."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
