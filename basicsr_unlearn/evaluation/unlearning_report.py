"""Unlearning report numbers: the original, the retrained-without-X reference(s) and each unlearned model (seeds).

For every run: PSNR/SSIM per degradation on held-out test images; PSNR and SSIM gaps |x - x_reference| per type and
their mean over all types (SalUn's "Avg. Gap"); change of each retained type vs the original; membership inference
on the forgotten type (members = the exact forget-train pairs, non-members = held-out images of that type), raw and
calibrated by the reference's per-image loss; distance to the reference's outputs and the KS "forget quality"; the
relearning attack; wall time and its ratio to the reference's retraining time. A method's figures are mean ± std
over its seeds. Every gap is measured against the first reference; a second reference (another seed of retraining)
gives the noise floor (its own gaps), printed beside every forget gap. The project's targets and goals are checked
on the means.

Pipeline: :func:`evaluate_models` (checkpoints -> :class:`ModelScores`), :func:`build_report` (-> JSON-ready
numbers), then ``unlearning_markdown.write_report`` (``report.json``, ``report.md``, PNGs).

Example:
    >>> rows = [{key: 0.0 for key in FLOOR_KEYS}, {key: 0.25 for key in FLOOR_KEYS}]  # reference A, reference B
    >>> noise_floor(rows)['forget_gap_db']
    0.25
"""
import copy
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from basicsr.archs import build_network
from basicsr.data import build_dataloader, build_dataset
from basicsr.utils import tensor2img
from torch.utils.data import DataLoader

from basicsr_unlearn.checkpoint import load_checkpoint
from basicsr_unlearn.data.degradation_names import DEGRADATIONS, check_name
from basicsr_unlearn.evaluation.calibrated_membership import ROC_FPR, calibrated_attack
from basicsr_unlearn.evaluation.distance_to_reference import forget_quality, output_distance
from basicsr_unlearn.evaluation.membership_inference import auc_null_sd, loss_attack
from basicsr_unlearn.evaluation.metrics import evaluate, summarize
from basicsr_unlearn.evaluation.model_specs import ROLES, ModelSpec, wall_time
from basicsr_unlearn.evaluation.relearning_attack import RelearnOptions, relearn_curve, steps_to_reach
from basicsr_unlearn.evaluation.seed_statistics import mean_std
from basicsr_unlearn.inference import restore_image

TARGETS = {'forget_gap_db': 1.0, 'retain_drop_db': 0.3, 'cost_ratio': 0.10}
GOALS = {'forget_gap_db': 0.5, 'retain_drop_db': 0.1, 'cost_ratio': 0.05}
FLOOR_KEYS = ('forget_gap_db', 'forget_gap_ssim', 'avg_gap_db', 'avg_gap_ssim')
WALL_TIME_BASIS = 'training wall time of each method over that of the first reference (train_log.json)'
KS_ALPHA = 0.05  # forget quality below this: the model's per-image PSNRs are told apart from the reference's


@dataclass
class ModelScores:
    """Evaluation of one run: held-out metrics, per-image forget-type data, distance and relearning results."""

    name: str
    role: str
    checkpoint: str
    per_degradation: dict[str, dict[str, float]]
    member_losses: list[float]
    nonmember_losses: list[float]
    wall_time_s: float | None = None
    forget_psnrs: list[float] = field(default_factory=list)
    distance: dict | None = None
    relearn_psnr: list[float] | None = None
    seed: int = 0
    oracle_stop: bool = False


def _dataset_name(key: str, dataset_opt: dict) -> str:
    return dataset_opt.get('name') or key.split('_', 1)[-1]


def split_test_sets(datasets: dict, forget: str, where: str) -> tuple[list[str], str]:
    """Held-out test sets and the forget-members set among an option file's ``datasets`` block.

    A set whose ``name`` ends in ``_members`` holds training pairs (membership inference and the relearning attack
    only); every other set is held out. The members of the forgotten type are the set named ``<forget>_members``.

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


class _Recorder:
    """A restore function that keeps every output as an 8-bit image (the order ``evaluate`` sees them)."""

    def __init__(self, restore: Callable[[torch.Tensor], torch.Tensor]):
        self.restore, self.images = restore, []

    def __call__(self, lq: torch.Tensor) -> torch.Tensor:
        output = self.restore(lq)
        self.images += [tensor2img(o.detach().float().cpu().clamp(0, 1)) for o in output]
        return output


def score_model(restore: Callable[[torch.Tensor], torch.Tensor], held_out: Sequence[DataLoader], members: DataLoader,
                forget: str, **metric_kwargs) -> dict:
    """Evaluate one model: held-out per-degradation metrics and the forget type's per-image data.

    Args:
        restore: inference function, (B, 3, H, W) in [0, 1] -> (B, 3, H, W).
        held_out: dataloaders of the held-out test sets.
        members: dataloader of the forget-train pairs.
        forget: the forgotten degradation name.
        metric_kwargs: ``y_channel``, ``crop_border``, ``source`` of
            :func:`~basicsr_unlearn.evaluation.metrics.evaluate`.

    Returns:
        ``{'per_degradation', 'member_losses', 'nonmember_losses', 'forget_psnrs', 'forget_outputs' (uint8 HWC),
        'forget_sets' (indices into held_out of the sets holding forget images)}``.
    """
    per_image, outputs, forget_sets = [], [], []
    for index, loader in enumerate(held_out):
        recorder = _Recorder(restore)
        rows = evaluate(recorder, loader, **metric_kwargs)['per_image']
        picked = [(row, image) for row, image in zip(rows, recorder.images) if row['de_name'] == forget]
        forget_sets += [index] if picked else []
        outputs += [image for _, image in picked]
        per_image += rows
    per_degradation = summarize(per_image)
    if forget not in per_degradation:
        raise ValueError(f'held-out test sets contain no {forget!r} images (found {", ".join(per_degradation)}); '
                         'the forget gap needs them')
    forget_rows = [row for row in per_image if row['de_name'] == forget]
    return {'per_degradation': per_degradation,
            'member_losses': [row['l1'] for row in evaluate(restore, members, **metric_kwargs)['per_image']],
            'nonmember_losses': [row['l1'] for row in forget_rows],
            'forget_psnrs': [row['psnr'] for row in forget_rows],
            'forget_outputs': outputs, 'forget_sets': forget_sets}


def relearn_pairs(dataset: object, count: int, where: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``count`` ``(lq, gt)`` pairs of the forget-members set, the relearning attacker's data."""
    if len(dataset) < count:
        raise ValueError(f'{where}: the relearning attack needs {count} pairs but the members set holds '
                         f'{len(dataset)}; lower relearn.pairs')
    return [(dataset[i]['lq'].float(), dataset[i]['gt'].float()) for i in range(count)]


def test_loaders(opt: dict, forget: str, where: str = '--opt') -> tuple[list[DataLoader], DataLoader]:
    """The held-out test loaders and the forget-members loader of ``opt['datasets']`` (see :func:`split_test_sets`)."""
    held_keys, member_key = split_test_sets(opt['datasets'], forget, f'{where}: datasets')
    loaders = {}
    for key, dataset_opt in opt['datasets'].items():
        dataset_opt = {**copy.deepcopy(dataset_opt), 'phase': 'test', 'scale': opt.get('scale', 1)}
        loaders[key] = build_dataloader(build_dataset(dataset_opt), dataset_opt, num_gpu=0, dist=False)
    return [loaders[k] for k in held_keys], loaders[member_key]


def input_psnr(opt: dict, forget: str, y_channel: bool = False, crop_border: int = 0, where: str = '--opt'
               ) -> dict[str, float]:
    """PSNR of the degraded input itself (no model) per degradation on the held-out test sets: where restoration
    starts, and what a model that never learned a type roughly scores on it."""
    held_out, _ = test_loaders(opt, forget, where)
    rows = [row for loader in held_out for row in evaluate(lambda lq: lq, loader, y_channel=y_channel,
                                                           crop_border=crop_border, source='degraded input')[
        'per_image']]
    return {name: metrics['psnr'] for name, metrics in summarize(rows).items()}


def evaluate_models(opt: dict, specs: Iterable[ModelSpec], forget: str, y_channel: bool = False,
                    crop_border: int = 0, where: str = '--opt', relearn: RelearnOptions | None = None,
                    progress: Callable[[list[ModelSpec]], Iterable[ModelSpec]] = iter) -> list[ModelScores]:
    """Build the network once and the test sets from ``opt['datasets']``, then score every run.

    The first reference is scored first: its outputs on the forgotten type are what every other model's outputs
    are compared with.

    Args:
        opt: merged BasicSR options with ``network_g`` and ``datasets`` (``test_*`` sets incl. ``<forget>_members``).
        specs: the runs to score (see :func:`~basicsr_unlearn.evaluation.model_specs.resolve_model`).
        forget: the forgotten degradation name.
        y_channel: PSNR/SSIM on the Y channel instead of RGB.
        crop_border: pixels cropped from each border before the metrics.
        where: the option file, named in errors.
        relearn: settings of the relearning attack, run on every model; ``None`` skips it.
        progress: wraps the list of runs while they are scored (e.g. a tqdm bar in a tool).

    Returns:
        One :class:`ModelScores` per spec, in the order of ``specs``.
    """
    for key in ('network_g', 'datasets'):
        if key not in opt:
            raise KeyError(f'{where}: missing {key!r} block')
    specs = list(specs)
    references = [s for s in specs if s.role == 'reference']
    if not references:
        raise ValueError('evaluate_models: needs a reference model (retrained without the forgotten type)')
    held_out, members = test_loaders(opt, forget, where)
    net = build_network(copy.deepcopy(opt['network_g'])).eval()
    multiple = int(getattr(net, 'pad_multiple', None) or (opt.get('val') or {}).get('pad_multiple', 8))
    tile = (opt.get('val') or {}).get('tile')
    metric_kwargs = {'y_channel': y_channel, 'crop_border': crop_border}
    # the EMA weights (load_checkpoint falls back to params in a file without them) unless path.param_key_g says
    # otherwise (~: the file's root, a bare state dict)
    param_key = (opt.get('path') or {}).get('param_key_g', 'params_ema')
    pairs = None if relearn is None else relearn_pairs(members.dataset, relearn.pairs,
                                                       f'{where}: datasets: {forget}_members')

    def restorer(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda lq: restore_image(model, lq, multiple, tile)

    results, reference_outputs = {}, None
    for spec in progress([references[0], *[s for s in specs if s is not references[0]]]):
        load_checkpoint(net, spec.checkpoint, param_key, where=f'--{spec.role} {spec.name}')
        result = score_model(restorer(net), held_out, members, forget, source=f'model {spec.name}',
                             **metric_kwargs)
        if reference_outputs is None:
            reference_outputs = result['forget_outputs']
            distance = None
        else:
            distance = output_distance(result['forget_outputs'], reference_outputs, crop_border, y_channel)
        curve = None
        if relearn is not None:
            forget_loaders = [held_out[i] for i in result['forget_sets']]

            def forget_psnr(model: torch.nn.Module, loaders: list[DataLoader] = forget_loaders) -> float:
                rows = [row for loader in loaders for row in evaluate(restorer(model), loader, **metric_kwargs)[
                    'per_image'] if row['de_name'] == forget]
                return float(np.mean([row['psnr'] for row in rows]))

            curve = relearn_curve(net, pairs, forget_psnr, relearn, multiple)
        results[id(spec)] = ModelScores(
            spec.name, spec.role, str(spec.checkpoint), result['per_degradation'], result['member_losses'],
            result['nonmember_losses'], wall_time(spec), result['forget_psnrs'], distance, curve, spec.seed,
            spec.oracle_stop)
    return [results[id(spec)] for spec in specs]


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


def _run_entry(s: ModelScores, original: ModelScores, reference: ModelScores, calibrator: ModelScores | None,
               degradations: list[str], forget: str, relearn_steps: Sequence[int]) -> dict:
    """Every figure of one run (JSON-ready), measured against ``reference`` and ``original``."""
    def metric(scores: ModelScores, key: str) -> dict[str, float]:
        return {d: scores.per_degradation[d][key] for d in degradations}

    psnr, ssim = metric(s, 'psnr'), metric(s, 'ssim')
    ref_psnr, ref_ssim, orig_psnr, orig_ssim = (metric(reference, 'psnr'), metric(reference, 'ssim'),
                                                metric(original, 'psnr'), metric(original, 'ssim'))
    retained = [d for d in degradations if d != forget]
    gap_db = {d: abs(psnr[d] - ref_psnr[d]) for d in degradations}
    gap_ssim = {d: abs(ssim[d] - ref_ssim[d]) for d in degradations}
    entry = {
        'psnr': psnr, 'ssim': ssim, 'count': {d: s.per_degradation[d]['count'] for d in degradations},
        'gap_db': gap_db, 'gap_ssim': gap_ssim, 'forget_gap_db': gap_db[forget], 'forget_gap_ssim': gap_ssim[forget],
        'retain_change_db': {d: psnr[d] - orig_psnr[d] for d in retained},
        'retain_change_ssim': {d: ssim[d] - orig_ssim[d] for d in retained},
        'avg_gap_db': float(np.mean(list(gap_db.values()))), 'avg_gap_ssim': float(np.mean(list(gap_ssim.values()))),
        'mia': loss_attack(s.member_losses, s.nonmember_losses),
        'mia_calibrated': None if calibrator is None else calibrated_attack(
            s.member_losses, s.nonmember_losses, calibrator.member_losses, calibrator.nonmember_losses),
        'distance': None if s.distance is None else {k: s.distance[k] for k in ('l1', 'psnr_db')},
        'forget_quality': None if s is reference else forget_quality(s.forget_psnrs, reference.forget_psnrs),
        'relearn': None,
        'wall_time_s': s.wall_time_s,
        'cost_ratio': (s.wall_time_s / reference.wall_time_s
                       if s.wall_time_s is not None and reference.wall_time_s else None),
        'per_image': {'forget_psnr': s.forget_psnrs, 'member_l1': s.member_losses, 'nonmember_l1': s.nonmember_losses,
                      **({} if s.distance is None else {'l1_to_reference': s.distance['per_image_l1'],
                                                        'psnr_to_reference_db': s.distance['per_image_psnr_db']})},
    }
    entry['worst_retain_change_db'] = min(entry['retain_change_db'].values(), default=0.0)
    if s.relearn_psnr is not None and reference.relearn_psnr is not None:
        curve = [psnr[forget], *s.relearn_psnr]  # step 0 = the model as it is
        leads = np.subtract(s.relearn_psnr, reference.relearn_psnr)  # after each budget
        steps = steps_to_reach([0, *relearn_steps], curve, orig_psnr[forget])
        entry['relearn'] = {'psnr': curve, 'steps_to_original': steps, 'reached': float(steps is not None),
                            'lead_db': float(np.mean(leads)), 'curve_gap_db': float(np.mean(np.abs(leads)))}
    return entry


def _aggregate(name: str, role: str, runs: list[ModelScores], entries: list[dict]) -> dict:
    """One report row: mean figures at the run keys, ``std`` beside them, and every run under ``seeds``."""
    mean, std = mean_std([{k: v for k, v in e.items() if k != 'per_image'} for e in entries])
    return {'name': name, 'role': role, 'n_seeds': len(runs), 'checkpoints': [r.checkpoint for r in runs],
            'oracle_stop': any(r.oracle_stop for r in runs), **mean, 'std': std,
            'seeds': [{'checkpoint': r.checkpoint, **e} for r, e in zip(runs, entries)]}


def noise_floor(reference_rows: list[dict]) -> dict | None:
    """Gaps of the extra references to the first one (mean over them): the level of "indistinguishable from
    retraining" (``FLOOR_KEYS`` and, with the relearning attack, ``relearn_curve_gap_db``: how far apart two
    retrainings' recovery curves lie); ``None`` with one reference.
    """
    extra = reference_rows[1:]
    if not extra:
        return None
    floor = {key: float(np.mean([row[key] for row in extra])) for key in FLOOR_KEYS}
    if all(row.get('relearn') for row in extra):
        floor['relearn_curve_gap_db'] = float(np.mean([row['relearn']['curve_gap_db'] for row in extra]))
    return floor


def attack_verdicts(row: dict, floor: dict | None, mia_band: float) -> dict[str, bool | None]:
    """Whether a model passes each attack (``None`` = not measured), from its mean figures.

    - ``calibrated_mia``: calibrated AUC within ``mia_band`` (two null standard deviations) of 0.5;
    - ``forget_quality``: KS p-value >= :data:`KS_ALPHA`;
    - ``relearning``: mean lead over the reference after the same fine-tuning budgets at most the distance between
      the two references' recovery curves, or at most the forget-gap goal without a second reference.
    """
    calibrated, quality, relearn = row['mia_calibrated'], row['forget_quality'], row['relearn']
    tolerance = floor.get('relearn_curve_gap_db', GOALS['forget_gap_db']) if floor else GOALS['forget_gap_db']
    return {'calibrated_mia': None if calibrated is None else abs(calibrated['auc'] - 0.5) <= mia_band,
            'forget_quality': None if quality is None else quality['p_value'] >= KS_ALPHA,
            'relearning': None if relearn is None else relearn['lead_db'] <= tolerance}


def build_report(scores: list[ModelScores], forget: str, metric_space: str,
                 relearn: RelearnOptions | None = None,
                 cost_basis: str = WALL_TIME_BASIS, degraded_input: dict[str, float] | None = None) -> dict:
    """Compute every figure per run, aggregate seeds, the noise floor and the target checks (JSON-ready).

    Args:
        scores: exactly one ``original`` run, one or more ``reference`` runs (distinct names; the first is the
            yardstick, the others give the noise floor) and any number of ``method`` runs (a name repeated = seeds).
        forget: the forgotten degradation.
        metric_space: ``'RGB'`` or ``'Y'``; stored with every number.
        relearn: the relearning attack's settings when ``scores`` carry recovery curves.
        cost_basis: how ``cost_ratio`` was timed (stored, and printed in the markdown).
        degraded_input: PSNR of the degraded input per degradation (:func:`input_psnr`), stored as ``input_psnr``
            and printed as the table's first row; ``None``: not measured.

    Returns:
        ``{'forget', 'metric_space', 'degradations', 'retained', 'targets', 'goals', 'reference', 'noise_floor',
        'mia_null_band', 'ks_alpha', 'relearn', 'roc_fpr', 'cost_basis', 'input_psnr', 'models': [...]}``; each
        model row holds the mean of every figure of :func:`_run_entry` at its key (``psnr``, ``forget_gap_db``,
        ``mia``, ``mia_calibrated``, ``distance``, ``forget_quality``, ``relearn``, ...), ``std`` (same shape),
        ``seeds`` (every run), ``n_seeds``, ``oracle_stop``, ``attacks`` (:func:`attack_verdicts`; all but the first
        reference), and for methods ``meets`` (``'goal'``, ``'target'`` or ``'no'``) with
        ``missed_target``/``missed_goal`` and ``within_noise_floor``.
    """
    check_name(forget, '--forget')
    by_role = {role: [s for s in scores if s.role == role] for role in ROLES}
    ref_names = [s.name for s in by_role['reference']]
    if len(by_role['original']) != 1 or not ref_names or len(set(ref_names)) != len(ref_names):
        raise ValueError('build_report: needs exactly one original and one or more references of distinct names; '
                         f'got {len(by_role["original"])} original(s) and references {ref_names}')
    original, references = by_role['original'][0], by_role['reference']
    degradations = sorted(set().union(*(s.per_degradation for s in scores)), key=lambda d: DEGRADATIONS.get(d, 99))
    missing = [(s.name, d) for s in scores for d in degradations if d not in s.per_degradation]
    if missing or forget not in degradations:
        raise ValueError(f'build_report: every model needs every degradation incl. {forget!r}; missing {missing}')
    steps = list(relearn.steps) if relearn is not None else []
    groups: dict[tuple[str, str], list[ModelScores]] = {}
    for s in [original, *references, *by_role['method']]:
        groups.setdefault((s.role, s.name), []).append(s)
    models = []
    for (role, name), runs in groups.items():
        calibrator = references[0] if role != 'reference' else next((r for r in references if r.name != name), None)
        entries = [_run_entry(s, original, references[0], calibrator, degradations, forget, steps) for s in runs]
        models.append(_aggregate(name, role, runs, entries))
    floor = noise_floor([m for m in models if m['role'] == 'reference'])
    mia_band = 2 * auc_null_sd(len(original.member_losses), len(original.nonmember_losses))
    for row in models:
        if row['role'] != 'reference' or row['name'] != references[0].name:
            row['attacks'] = attack_verdicts(row, floor, mia_band)
        if row['role'] == 'method':
            row['missed_target'] = _checks(row['forget_gap_db'], row['retain_change_db'], row['cost_ratio'], TARGETS)
            row['missed_goal'] = _checks(row['forget_gap_db'], row['retain_change_db'], row['cost_ratio'], GOALS)
            row['meets'] = 'goal' if not row['missed_goal'] else 'target' if not row['missed_target'] else 'no'
            row['within_noise_floor'] = None if floor is None else row['forget_gap_db'] <= floor['forget_gap_db']
    report = {'forget': forget, 'metric_space': metric_space, 'degradations': degradations,
              'retained': [d for d in degradations if d != forget], 'targets': TARGETS, 'goals': GOALS,
              'reference': references[0].name, 'noise_floor': floor, 'mia_null_band': mia_band, 'ks_alpha': KS_ALPHA,
              'relearn': None if relearn is None else {**vars(relearn), 'steps': steps, 'curve_steps': [0, *steps],
                                                       'target_db': original.per_degradation[forget]['psnr']},
              'roc_fpr': list(ROC_FPR), 'cost_basis': cost_basis, 'input_psnr': degraded_input, 'models': models}
    return report
