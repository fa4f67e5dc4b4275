"""Unlearning report: the original model, the retrained-without-X reference and each unlearned model, side by side.

For every model: PSNR/SSIM per degradation on held-out test images; forget gap |PSNR - PSNR_reference| on the
forgotten type; change of each retained type vs the original; average gap to the reference over all types (SalUn's
"Avg. Gap"); a loss-based membership-inference attack on the forgotten type (members = the exact forget-train pairs,
non-members = held-out images of the same degradation); wall time and its ratio to the reference's retraining time.
Targets and goals of issue 5 are checked per method. Outputs: ``report.json``, ``report.md`` and PNG charts.

Example:
    >>> specs = [resolve_model('original', 'original', 'experiments/orig', '--original'), ...]
    >>> scores = evaluate_models(opt, specs, forget='haze')
    >>> report = build_report(scores, forget='haze', metric_space='RGB')
    >>> write_report(report, 'results/unlearn', curves=training_curves(specs))
"""
import copy
import json
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from basicsr.archs import build_network
from basicsr.data import build_dataloader, build_dataset

from basicsr_unlearn.data.degradation_names import DEGRADATIONS, check_name
from basicsr_unlearn.evaluation.membership_inference import loss_attack
from basicsr_unlearn.evaluation.metrics import evaluate, summarize
from basicsr_unlearn.evaluation.report import bar_chart, line_chart, markdown_table, scatter_chart
from basicsr_unlearn.fileio import write_json, write_text
from basicsr_unlearn.inference import restore_image

TARGETS = {'forget_gap_db': 1.0, 'retain_drop_db': 0.3, 'cost_ratio': 0.10}
GOALS = {'forget_gap_db': 0.5, 'retain_drop_db': 0.1, 'cost_ratio': 0.05}
ROLES = ('original', 'reference', 'method')
CHARTS = {'psnr': 'psnr_per_degradation.png', 'tradeoff': 'forget_gap_vs_retain_change.png',
          'curves': 'training_curves.png'}


@dataclass
class ModelSpec:
    """One model of the report: its checkpoint and the ``train_log.json`` of every stage that produced it."""

    name: str
    role: str
    checkpoint: Path
    train_logs: list[Path] = field(default_factory=list)
    stages: int = 1


@dataclass
class ModelScores:
    """Evaluation of one model: per-degradation held-out metrics and per-image losses for membership inference."""

    name: str
    role: str
    checkpoint: str
    per_degradation: dict[str, dict[str, float]]
    member_losses: list[float]
    nonmember_losses: list[float]
    wall_time_s: float | None = None


def resolve_model(name: str, role: str, spec: str, where: str) -> ModelSpec:
    """Turn a command-line model spec into a checkpoint and its training logs.

    Args:
        name: the model's name in the report.
        role: ``'original'``, ``'reference'`` or ``'method'``.
        spec: a checkpoint file (``.../models/net_g_latest.pth``) or an experiment folder (``experiments/<name>``,
            whose ``models/net_g_latest.pth`` is used); several stages joined with ``+``
            (``experiments/adapt+experiments/repulse``) add up their wall times and use the last stage's checkpoint.
        where: the command-line flag, named in errors.

    Returns:
        A :class:`ModelSpec`; stages without ``train_log.json`` are left out of ``train_logs``.
    """
    if role not in ROLES:
        raise ValueError(f'{where}: role must be one of {", ".join(ROLES)}; got {role!r}')
    parts = [Path(p) for p in spec.split('+') if p]
    if not parts:
        raise ValueError(f'{where}: empty model spec; expected a checkpoint .pth or an experiment folder')
    logs = []
    for part in parts:
        folder = part if part.is_dir() else part.parent.parent if part.parent.name == 'models' else None
        if folder is not None and (folder / 'train_log.json').is_file():
            logs.append(folder / 'train_log.json')
    checkpoint = parts[-1] / 'models' / 'net_g_latest.pth' if parts[-1].is_dir() else parts[-1]
    if not checkpoint.is_file():
        raise FileNotFoundError(f'{where} {name}: checkpoint {checkpoint} does not exist; expected a .pth file or an '
                                'experiment folder holding models/net_g_latest.pth')
    return ModelSpec(name, role, checkpoint, logs, len(parts))


def read_train_log(path: str | os.PathLike) -> dict:
    """Load an AllInOneModel ``train_log.json`` (``wall_time_s``, ``iter``, ``loss``, ``val``), checking its keys."""
    log = json.loads(Path(path).read_text())
    if not isinstance(log, dict) or not isinstance(log.get('wall_time_s'), (int, float)):
        raise ValueError(f'{path}: expected a JSON object with a numeric "wall_time_s"; got keys '
                         f'{sorted(log) if isinstance(log, dict) else type(log).__name__}')
    return log


def wall_time(spec: ModelSpec) -> float | None:
    """Total training seconds over all stages of a model, or ``None`` when a stage has no training log."""
    if len(spec.train_logs) != spec.stages:
        return None
    return float(sum(read_train_log(p)['wall_time_s'] for p in spec.train_logs))


def load_weights(net: torch.nn.Module, checkpoint: str | os.PathLike, param_key: str | None = None) -> None:
    """Load a BasicSR checkpoint (``{'params': ..., 'params_ema': ...}``) into ``net`` with ``weights_only=True``.

    ``param_key=None`` takes ``params_ema`` when present, else ``params`` — the net ``AllInOneModel.restore`` uses.
    """
    state = torch.load(checkpoint, map_location='cpu', weights_only=True)
    key = param_key or ('params_ema' if 'params_ema' in state else 'params')
    if key not in state:
        raise KeyError(f'{checkpoint}: no {key!r} entry (path.param_key_g); found {", ".join(state)}')
    net.load_state_dict(state[key], strict=True)


def _dataset_name(key: str, dataset_opt: dict) -> str:
    return dataset_opt.get('name') or key.split('_', 1)[-1]


def split_test_sets(datasets: dict, forget: str, where: str) -> tuple[list[str], str]:
    """Held-out test sets and the forget-members set among an option file's ``datasets`` block.

    A set whose ``name`` ends in ``_members`` holds training pairs (membership inference only); every other set is
    held out. The members of the forgotten type are the set named ``<forget>_members``.

    Returns:
        ``(held_out_keys, member_key)``.
    """
    check_name(forget, '--forget')
    members = {key for key, d in datasets.items() if _dataset_name(key, d).endswith('_members')}
    held_out = [key for key in datasets if key not in members]
    wanted = [key for key in members if _dataset_name(key, datasets[key]) == f'{forget}_members']
    if len(wanted) != 1:
        raise ValueError(f'{where}: datasets needs exactly one set named {forget + "_members"!r} (the forget-train '
                         f'pairs for membership inference); found {[_dataset_name(k, datasets[k]) for k in datasets]}')
    if not held_out:
        raise ValueError(f'{where}: datasets has no held-out test set (only *_members sets)')
    return held_out, wanted[0]


def score_model(restore: Callable[[torch.Tensor], torch.Tensor], held_out: Iterable, members: Iterable, forget: str,
                **metric_kwargs) -> tuple[dict, list[float], list[float]]:
    """Evaluate one model: held-out per-degradation metrics and the per-image L1 losses for membership inference.

    Args:
        restore: inference function, (B, 3, H, W) in [0, 1] -> (B, 3, H, W).
        held_out: dataloaders of the held-out test sets.
        members: dataloader of the forget-train pairs.
        forget: the forgotten degradation name.
        metric_kwargs: ``y_channel``, ``crop_border`` of :func:`~basicsr_unlearn.evaluation.metrics.evaluate`.

    Returns:
        ``(per_degradation, member_losses, nonmember_losses)``; ``per_degradation`` as in ``evaluate``.
    """
    per_image = [row for loader in held_out for row in evaluate(restore, loader, **metric_kwargs)['per_image']]
    per_degradation = summarize(per_image)
    if forget not in per_degradation:
        raise ValueError(f'held-out test sets contain no {forget!r} images (found {", ".join(per_degradation)}); '
                         'the forget gap needs them')
    member_losses = [row['l1'] for row in evaluate(restore, members, **metric_kwargs)['per_image']]
    nonmember_losses = [row['l1'] for row in per_image if row['de_name'] == forget]
    return per_degradation, member_losses, nonmember_losses


def _checks(forget_gap: float, retain_change: dict[str, float], cost_ratio: float | None, limits: dict) -> list[str]:
    """Names of the failed criteria (empty when all pass)."""
    failed = []
    if forget_gap > limits['forget_gap_db']:
        failed.append(f'forget gap {forget_gap:.2f} > {limits["forget_gap_db"]}')
    failed += [f'{de} {delta:+.2f} < -{limits["retain_drop_db"]}' for de, delta in retain_change.items()
               if delta < -limits['retain_drop_db']]
    if cost_ratio is None:
        failed.append('cost unknown (no train_log.json)')
    elif cost_ratio > limits['cost_ratio']:
        failed.append(f'cost {cost_ratio:.0%} > {limits["cost_ratio"]:.0%}')
    return failed


def build_report(scores: list[ModelScores], forget: str, metric_space: str) -> dict:
    """Compute gaps, changes, membership inference, cost and target checks (JSON-ready).

    Args:
        scores: exactly one ``original``, one ``reference`` and any number of ``method`` entries.
        forget: the forgotten degradation.
        metric_space: ``'RGB'`` or ``'Y'``; stored with every number.

    Returns:
        ``{'forget', 'metric_space', 'degradations', 'retained', 'targets', 'goals', 'models': [...],
        'headline_md'}``; each model entry has ``psnr``/``ssim`` per degradation, ``forget_gap_db``,
        ``retain_change_db``, ``worst_retain_change_db``, ``avg_gap_db``, ``mia``, ``wall_time_s``, ``cost_ratio``,
        and for methods ``meets`` (``'goal'``, ``'target'`` or ``'no'``) with ``missed_target``/``missed_goal``.
    """
    check_name(forget, '--forget')
    by_role = {role: [s for s in scores if s.role == role] for role in ROLES}
    if len(by_role['original']) != 1 or len(by_role['reference']) != 1:
        raise ValueError('build_report: needs exactly one original and one reference model; got '
                         f'{len(by_role["original"])} and {len(by_role["reference"])}')
    original, reference = by_role['original'][0], by_role['reference'][0]
    degradations = sorted(set().union(*(s.per_degradation for s in scores)), key=lambda d: DEGRADATIONS.get(d, 99))
    missing = [(s.name, d) for s in scores for d in degradations if d not in s.per_degradation]
    if missing or forget not in degradations:
        raise ValueError(f'build_report: every model needs every degradation incl. {forget!r}; missing {missing}')
    retained = [d for d in degradations if d != forget]
    psnr = {s.name: {d: s.per_degradation[d]['psnr'] for d in degradations} for s in scores}
    ref_time = reference.wall_time_s
    models = []
    for s in scores:
        entry = {
            'name': s.name, 'role': s.role, 'checkpoint': s.checkpoint, 'psnr': psnr[s.name],
            'ssim': {d: s.per_degradation[d]['ssim'] for d in degradations},
            'count': {d: s.per_degradation[d]['count'] for d in degradations},
            'forget_gap_db': abs(psnr[s.name][forget] - psnr[reference.name][forget]),
            'retain_change_db': {d: psnr[s.name][d] - psnr[original.name][d] for d in retained},
            'avg_gap_db': float(np.mean([abs(psnr[s.name][d] - psnr[reference.name][d]) for d in degradations])),
            'mia': loss_attack(s.member_losses, s.nonmember_losses),
            'wall_time_s': s.wall_time_s,
            'cost_ratio': s.wall_time_s / ref_time if s.wall_time_s is not None and ref_time else None,
        }
        entry['worst_retain_change_db'] = min(entry['retain_change_db'].values(), default=0.0)
        if s.role == 'method':
            entry['missed_target'] = _checks(entry['forget_gap_db'], entry['retain_change_db'], entry['cost_ratio'],
                                             TARGETS)
            entry['missed_goal'] = _checks(entry['forget_gap_db'], entry['retain_change_db'], entry['cost_ratio'],
                                           GOALS)
            entry['meets'] = 'goal' if not entry['missed_goal'] else 'target' if not entry['missed_target'] else 'no'
        models.append(entry)
    report = {'forget': forget, 'metric_space': metric_space, 'degradations': degradations, 'retained': retained,
              'targets': TARGETS, 'goals': GOALS, 'models': models}
    report['headline_md'] = main_table(report)
    return report


def _fmt_seconds(seconds: float | None) -> str:
    return '–' if seconds is None else f'{seconds:.0f}'


def _verdict(entry: dict) -> str:
    if 'meets' not in entry:
        return '–'
    if entry['meets'] == 'no':
        return 'no: ' + '; '.join(entry['missed_target'])
    return entry['meets']


def main_table(report: dict) -> str:
    """The headline markdown table: PSNR per degradation, gaps, MIA AUC, cost and the target verdict."""
    forget, space = report['forget'], report['metric_space']
    header = ['model', *[f'{d} (forgotten)' if d == forget else d for d in report['degradations']],
              'forget gap', 'worst retained Δ', 'avg gap', 'MIA AUC', 'time (s)', 'cost vs retrain', 'meets']
    rows = []
    for m in report['models']:
        cost = '–' if m['cost_ratio'] is None else f'{m["cost_ratio"]:.1%}'
        rows.append([m['name'] if m['role'] in ('method', m['name']) else f'{m["name"]} ({m["role"]})',
                     *[m['psnr'][d] for d in report['degradations']], m['forget_gap_db'],
                     m['worst_retain_change_db'], m['avg_gap_db'], f'{m["mia"]["auc"]:.3f}',
                     _fmt_seconds(m['wall_time_s']), cost, _verdict(m)])
    caption = (f'PSNR in dB on {space}, held-out test images; forget gap = |PSNR − PSNR_reference| on {forget}; '
               'worst retained Δ = lowest PSNR change vs the original over the retained types; avg gap = mean '
               '|PSNR − PSNR_reference| over all types; MIA AUC on the per-image L1 of forget-train vs held-out '
               f'{forget} images (0.5 = no signal).\n\n')
    return caption + markdown_table(header, rows)


def plateau_gain(log: dict, tail: float = 0.25) -> float | None:
    """Mean validation-PSNR gain (dB) over the last ``tail`` of training; near 0 means the run reached a plateau."""
    val = log.get('val') or []
    if len(val) < 2:
        return None
    last_iter = val[-1][0]
    start = next(entry for entry in val if entry[0] >= last_iter * (1 - tail))
    if start is val[-1]:
        start = val[-2]
    gains = [val[-1][1][d]['psnr'] - start[1][d]['psnr'] for d in val[-1][1] if d in start[1]]
    return float(np.mean(gains)) if gains else None


def training_curves(specs: list[ModelSpec]) -> dict[str, dict]:
    """Training loss and validation PSNR curves of the original and the reference, from their ``train_log.json``.

    Returns:
        ``{model name: train_log dict}`` for the original and reference specs that have a log.
    """
    return {s.name: read_train_log(s.train_logs[-1]) for s in specs
            if s.role in ('original', 'reference') and s.train_logs}


def _curve_panels(curves: dict[str, dict]) -> dict[str, dict[str, list[tuple[float, float]]]]:
    panels = {'training loss': {name: [tuple(p) for p in log.get('loss', [])] for name, log in curves.items()}}
    for name, log in curves.items():
        for it, per_de in log.get('val', []):
            for de_name, metrics in per_de.items():
                panels.setdefault(f'val PSNR {de_name} (dB)', {}).setdefault(name, []).append((it, metrics['psnr']))
    return panels


def render_markdown(report: dict, curves: dict[str, dict]) -> str:
    """The full ``report.md``: setup, SSIM, membership inference, plateau check, then the main table and charts."""
    forget, space, degs = report['forget'], report['metric_space'], report['degradations']
    models = report['models']
    reference = next(m for m in models if m['role'] == 'reference')
    lines = [f'# Unlearning report: forgetting {forget}\n',
             f'Metrics on {space} (PSNR dB / SSIM), held-out test images; counts per degradation: '
             + ', '.join(f'{d} {models[0]["count"][d]}' for d in degs) + '.',
             f'Targets (issue 5): forget gap ≤ {TARGETS["forget_gap_db"]} dB, every retained type at most '
             f'{TARGETS["retain_drop_db"]} dB below the original, cost ≤ {TARGETS["cost_ratio"]:.0%} of retraining; '
             f'goals {GOALS["forget_gap_db"]} dB / {GOALS["retain_drop_db"]} dB / {GOALS["cost_ratio"]:.0%}.\n',
             f'## SSIM per degradation ({space})\n',
             markdown_table(['model', *degs], [[m['name'], *[m['ssim'][d] for d in degs]] for m in models], '.4f'),
             f'## Membership inference on {forget}\n',
             f'Loss-threshold attack, score = per-image L1 ({space} pixels in [0, 1]); members = forget-train pairs, '
             f'non-members = held-out {forget} test images. The retrained reference (AUC '
             f'{reference["mia"]["auc"]:.3f}) is the true no-membership level; balanced accuracy at the best '
             'threshold.\n',
             markdown_table(['model', 'AUC', 'balanced acc.', 'mean L1 members', 'mean L1 non-members', 'n'],
                            [[m['name'], m['mia']['auc'], m['mia']['balanced_accuracy'], m['mia']['mean_member_loss'],
                              m['mia']['mean_nonmember_loss'], f'{m["mia"]["n_members"]}/{m["mia"]["n_nonmembers"]}']
                             for m in models], '.4f')]
    if curves:
        lines += ['## Training curves (fair comparison needs a plateau)\n',
                  'Mean validation-PSNR gain over the last quarter of training (≈ 0 dB = plateau): '
                  + ', '.join(f'{name} {_fmt_gain(plateau_gain(log))}' for name, log in curves.items()) + '.\n',
                  f'![training curves]({CHARTS["curves"]})\n']
    lines += ['## Results\n', report['headline_md'],
              f'![PSNR per degradation]({CHARTS["psnr"]}) ![forget gap vs retained change]({CHARTS["tradeoff"]})\n']
    return '\n'.join(lines)


def _fmt_gain(gain: float | None) -> str:
    return 'n/a' if gain is None else f'{gain:+.2f} dB'


def write_report(report: dict, out: str | os.PathLike, curves: dict[str, dict]) -> Path:
    """Write ``report.json``, ``report.md`` and the PNG charts into ``out``; returns the markdown path."""
    out = Path(out)
    space, models = report['metric_space'], report['models']
    bar_chart(out / CHARTS['psnr'], {m['name']: m['psnr'] for m in models}, f'PSNR (dB, {space})',
              'Held-out PSNR per degradation')
    scatter_chart(out / CHARTS['tradeoff'],
                  [{'x': m['forget_gap_db'], 'y': m['worst_retain_change_db'], 'label': m['name'], 'group': m['role']}
                   for m in models],
                  f'forget gap |PSNR − PSNR_ref| on {report["forget"]} (dB, {space})',
                  'worst retained PSNR change vs original (dB)', 'Forgetting vs retention (best: bottom-left to 0, 0)')
    if curves:
        line_chart(out / CHARTS['curves'], _curve_panels(curves), 'iteration', 'Original vs retrained reference')
        report = {**report, 'plateau_gain_db': {name: plateau_gain(log) for name, log in curves.items()}}
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


def evaluate_models(opt: dict, specs: Iterable[ModelSpec], forget: str, y_channel: bool = False,
                    crop_border: int = 0, where: str = '--opt') -> list[ModelScores]:
    """Build the network once and the test sets from ``opt['datasets']``, then score every checkpoint.

    Args:
        opt: merged BasicSR options with ``network_g`` and ``datasets`` (``test_*`` sets incl. ``<forget>_members``).
        specs: the models to score (see :func:`resolve_model`).
        forget: the forgotten degradation name.
        y_channel: PSNR/SSIM on the Y channel instead of RGB.
        crop_border: pixels cropped from each border before the metrics.
        where: the option file, named in errors.
    """
    for key in ('network_g', 'datasets'):
        if key not in opt:
            raise KeyError(f'{where}: missing {key!r} block')
    held_keys, member_key = split_test_sets(opt['datasets'], forget, f'{where}: datasets')
    loaders = {}
    for key, dataset_opt in opt['datasets'].items():
        dataset_opt = {**copy.deepcopy(dataset_opt), 'phase': 'test', 'scale': opt.get('scale', 1)}
        loaders[key] = build_dataloader(build_dataset(dataset_opt), dataset_opt, num_gpu=0, dist=False)
    net = build_network(copy.deepcopy(opt['network_g'])).eval()
    multiple = int(getattr(net, 'pad_multiple', None) or (opt.get('val') or {}).get('pad_multiple', 8))

    tile = (opt.get('val') or {}).get('tile')

    def restore(lq: torch.Tensor) -> torch.Tensor:
        return restore_image(net, lq, multiple, tile)

    param_key = (opt.get('path') or {}).get('param_key_g')
    scores = []
    for spec in specs:
        load_weights(net, spec.checkpoint, param_key)
        per_de, member_losses, nonmember_losses = score_model(
            restore, [loaders[k] for k in held_keys], loaders[member_key], forget, y_channel=y_channel,
            crop_border=crop_border)
        scores.append(ModelScores(spec.name, spec.role, str(spec.checkpoint), per_de, member_losses,
                                  nonmember_losses, wall_time(spec)))
    return scores
