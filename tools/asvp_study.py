"""ASVP defence study: teacher PSNR change vs student PSNR drop over defences x attacks x students x seeds.

Usage:
    OMP_NUM_THREADS=1 python tools/asvp_study.py --quick --opt options/distill/asvp-study_promptir-tiny_demo3.yml \
        --teacher experiments/train_promptir-tiny_demo3_l1_2kit/models/net_g_latest.pth --out results/demo/asvp

``--opt`` gives the teacher arch (``network_g``), the teacher's train set (``datasets.train``, only used to train a
teacher when ``--teacher`` is absent), the attacker's query images (``datasets.query``: photos the teacher never
saw, checked disjoint from the train set by photo name; their GT is never used) and the evaluation sets (every other
``datasets`` entry, one per task). Each student (a DistillModel with a registered attack, ``basicsr_unlearn/attacks``)
trains on random crops of the query images and of the teacher's stored targets for them (the attacker queries the
released model once per whole image, as a thief paying per query would, and keeps what it got back: the output and
the exposed taps, after the attack's own observation; :class:`StoredAnswers`) and is validated on the evaluation
sets (whole images; 64-px centre crops in ``--quick``), the last validation being its result
(:func:`validation_points`: every ``val_every`` iterations over the last 20%, every ``max(val_every, iters // 10)``
before, and at 50% and 80%); it counts as converged when its mean val PSNR stays within 0.1 dB over its last 20% of
iterations (:func:`plateau`, recorded per student). A student drop is paired by seed: the student distilled by the
same attack, seed, initialisation and crops from the clean teacher, minus the one from the protected teacher; cells
report mean +- std over seeds. A student whose stored targets are bit-identical to the clean teacher's (checked:
output KD, or feature KD on a layer the defence does not hook, against an exposed-mode defence) is not trained: it is
the clean-teacher student.

Presets (one BLAS thread per worker; ``--workers 2`` uses both cores):

- ``--quick`` (the demo, <= 5 min): 1 seed, the shipped defence, every attack, 60 iterations (students NOT converged,
  the report says so), 64-px val crops.
- ``--standard`` (52 min on 2 cores with ``--workers 2``: 60 students of ~100 s, ~0.034 s per iteration at batch 4,
  32-px patches, two at a time): 3 seeds, the clean teacher and two blocks (the shipped one and ``CHALLENGER``, the
  default is re-chosen from them), every attack, 3000 iterations, whole val images.
- ``--full`` (~1 day): 3 seeds, 16 defences (both layouts, both modes, latent too, the randomised block), both
  student archs, 3000 iterations.

Writes ``report.json``, ``report.md`` (tables, verdict per attack, the best defence) and ``frontier.png``.
"""
import argparse
import copy
import itertools
import math
import multiprocessing
import statistics
import time
from dataclasses import dataclass
from os import path as osp
from pathlib import Path

# isort: off
import basicsr_unlearn  # noqa: F401  (plugin first: torchvision alias, registration)
# isort: on
import torch
from basicsr.data import build_dataset
from basicsr.models import build_model
from basicsr.utils import set_random_seed
from torch.utils.data import ConcatDataset, DataLoader, Dataset
from tqdm import tqdm

from basicsr_unlearn.config import inprocess_options, load_options
from basicsr_unlearn.evaluation.metrics import evaluate
from basicsr_unlearn.evaluation.report import markdown_table, scatter_chart
from basicsr_unlearn.fileio import write_json, write_text

STUDENTS = {  # name: (arch, {role: module}) with roles: tap (matched to the protected tap), early, other
    'restormer-tiny': ({'type': 'Restormer', 'inp_channels': 3, 'out_channels': 3, 'dim': 8,
                        'num_blocks': [1, 1, 1, 1], 'num_refinement_blocks': 1, 'heads': [1, 1, 2, 2],
                        'ffn_expansion_factor': 2.66, 'bias': False, 'LayerNorm_type': 'WithBias'},
                       {'tap': 'decoder_level1', 'early': 'encoder_level1', 'other': 'decoder_level2'}),
    'edsr-cnn': ({'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 24, 'num_block': 4, 'upscale': 1,
                  'img_range': 1.0, 'rgb_mean': [0.5, 0.5, 0.5]},
                 {'tap': 'body.3', 'early': 'body.0', 'other': 'body.1'}),
}
UNPROTECTED_TEACHER_TAP = 'decoder_level2'  # a teacher layer the studied defences do not hook
ATTACKS = ('out', 'feat', 'feat+out', 'inverse+feat+out', 'whiten+feat+out', 'lowpass+feat+out', 'skeptical',
           'unprotected-feat+out')
SHIPPED = {'targets': ['decoder_level1'], 'k': 4, 'h': 32.0, 'layout': 'channel_map', 'mode': 'exposed'}
CHALLENGER = {**SHIPPED, 'k': 2, 'h': 8.0}  # --standard pits it against SHIPPED (the default before 2026-12-04)
RANDOMISED = {'targets': ['decoder_level1'], 'layout': 'channel_map', 'mode': 'exposed',
              'randomize': {'k': [1, 4], 'h': [2.0, 16.0]}, 'seed': 1234}


@dataclass(frozen=True)
class Preset:
    """Budget of one study preset."""

    iters: int
    seeds: int
    val_every: int  # validation interval over the last 20% (the convergence check); every 10% before that
    eval_crop: int  # centre crop (px) of val images, 0 = whole
    students: tuple[str, ...]


PRESETS = {
    'quick': Preset(iters=60, seeds=1, val_every=10, eval_crop=64, students=('restormer-tiny',)),
    'standard': Preset(iters=3000, seeds=3, val_every=75, eval_crop=0, students=('restormer-tiny',)),
    'full': Preset(iters=3000, seeds=3, val_every=75, eval_crop=0, students=tuple(STUDENTS)),
}


def defence_grid(preset: str) -> list[dict]:
    """ASVP blocks swept by the preset (the clean teacher is always run too)."""
    if preset == 'quick':
        return [SHIPPED]
    if preset == 'standard':
        return [SHIPPED, CHALLENGER]
    grid = []
    for target, layout in itertools.product(['decoder_level1', 'latent'], ['channel_space', 'channel_map']):
        grid += [{'targets': [target], 'k': k, 'h': h, 'layout': layout, 'mode': 'exposed'}
                 for k, h in ((1, 2.0), (2, 8.0), (4, 32.0))]
        grid.append({**RANDOMISED, 'targets': [target], 'layout': layout})
    return grid + [{'targets': ['decoder_level1'], 'k': 1, 'h': h, 'layout': layout, 'mode': 'inline'}
                   for h in (1.1, 1.5) for layout in ('channel_space', 'channel_map')]


def attack_block(attack: str, student: str, block: dict | None) -> dict:
    """The ``distill:`` block of one study attack for ``student`` against the teacher protected by ``block``."""
    roles = STUDENTS[student][1]
    t_tap = block['targets'][0] if block else SHIPPED['targets'][0]
    layout = block['layout'] if block else SHIPPED['layout']  # the attacker's guess of the layout
    taps = [[roles['tap'], t_tap]]
    return {
        'out': {'type': 'KD', 'output_weight': 1.0},
        'feat': {'type': 'KD', 'output_weight': 0.0, 'feature_weight': 1.0, 'taps': taps},
        'feat+out': {'type': 'KD', 'feature_weight': 1.0, 'taps': taps},
        'inverse+feat+out': {'type': 'InverseASVPKD', 'layout': layout, 'taps': taps},
        'whiten+feat+out': {'type': 'SpectrumKD', 'layout': layout, 'power': 0.0, 'taps': taps},
        'lowpass+feat+out': {'type': 'LowPassKD', 'sigma': 2.0, 'taps': taps},
        'skeptical': {'type': 'SkepticalKD', 'aux': roles['early'], 'taps': [[roles['early'], t_tap]]},
        'unprotected-feat+out': {'type': 'KD', 'feature_weight': 1.0,
                                 'taps': [[roles['other'], UNPROTECTED_TEACHER_TAP]]},
    }[attack]


def validation_points(iters: int, every: int) -> list[int]:
    """Iterations at which a student is validated: every ``every`` over the last 20% (the convergence check reads
    them), at 50% and 80% (the curve drop), at the last one, and every ``max(every, iters // 10)`` before.

    Example:
        >>> validation_points(100, 5)
        [10, 20, 30, 40, 50, 60, 70, 80, 85, 90, 95, 100]
    """
    sparse = max(every, iters // 10)
    marks = {iters, math.ceil(0.5 * iters), math.ceil(0.8 * iters)}
    return [it for it in range(1, iters + 1)
            if it in marks or it % (every if it >= 0.8 * iters else sparse) == 0]


def plateau(curve: list[tuple[int, float]], tail: float = 0.2, tol: float = 0.1) -> tuple[bool, float]:
    """Convergence check: is the val PSNR flat within ``tol`` dB over the last ``tail`` of the iterations?

    Args:
        curve: ``[(iteration, val PSNR), ...]`` in iteration order (at least two points in the tail).
        tail: fraction of the last iteration that forms the tail.
        tol: largest allowed max - min of the PSNRs in the tail (dB).

    Returns:
        ``(converged, tail range in dB)``.

    Example:
        >>> plateau([(10, 20.0), (20, 24.0), (80, 25.00), (90, 25.05), (100, 25.02)])
        (True, 0.05)
        >>> plateau([(10, 20.0), (80, 24.0), (90, 24.3), (100, 24.6)])[0]
        False
    """
    last = curve[-1][0]
    values = [psnr for it, psnr in curve if it >= (1 - tail) * last]
    if len(values) < 2:
        raise ValueError(f'plateau: need at least two validations in the last {tail:.0%} of {last} iterations, got '
                         f'{len(values)}; validate more often')
    spread = round(max(values) - min(values), 6)
    return spread <= tol, spread


class CenterCrop(Dataset):
    """Centre ``size`` x ``size`` crops of ``lq`` and ``gt`` of a paired dataset (whole images when ``size`` is 0)."""

    def __init__(self, dataset: Dataset, size: int) -> None:
        self.dataset, self.size = dataset, size

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        item = dict(self.dataset[index])
        h, w = item['lq'].shape[-2:]
        if self.size and min(h, w) > self.size:
            top, left = (h - self.size) // 2, (w - self.size) // 2
            for key in ('lq', 'gt'):
                item[key] = item[key][..., top:top + self.size, left:left + self.size]
        return item


class StoredAnswers(Dataset):
    """Random aligned crops of whole query images and of the teacher targets stored for them.

    Each item crops ``patch`` x ``patch`` px of the image and the same region of its output and taps (a tap of
    stride ``s`` at ``patch / s``, crop corners on multiples of every stride), then flips / rotates all of
    them alike. The crops come from a generator seeded by ``seed``: two students with the same seed see the same
    crops, whatever ran before them in the process.

    Args:
        lqs: query images, each ``(3, H, W)``.
        answers: per image ``(output (3, H, W), [tap (C, H / s, W / s), ...])``.
        patch: crop size (px).
        seed: seed of the crop and augmentation sequence.

    Example:
        >>> lq = torch.rand(3, 16, 16)
        >>> data = StoredAnswers([lq], [(2 * lq, [torch.nn.functional.avg_pool2d(lq, 2)])], patch=8, seed=0)
        >>> item = data[0]
        >>> item['lq'].shape, item['answers']['taps'][0].shape
        (torch.Size([3, 8, 8]), torch.Size([3, 4, 4]))
        >>> torch.equal(item['answers']['output'], 2 * item['lq'])
        True
    """

    def __init__(self, lqs: list[torch.Tensor], answers: list[tuple[torch.Tensor, list[torch.Tensor]]], patch: int,
                 seed: int) -> None:
        self.lqs, self.answers, self.patch = lqs, answers, patch
        self.generator = torch.Generator().manual_seed(seed)
        self.strides = [self.tap_strides(i) for i in range(len(lqs))]  # checked once, before any training

    def tap_strides(self, index: int) -> list[int]:
        """Stride of each tap of query image ``index``; an error unless every tap and ``patch`` fit it."""
        (h, w), taps = self.lqs[index].shape[-2:], self.answers[index][1]
        strides = [h // t.shape[-2] for t in taps]
        if any(t.shape[-2] * s != h or t.shape[-1] * s != w for t, s in zip(taps, strides, strict=True)):
            raise ValueError(f'query image {index}: its size {h}x{w} must be a multiple of every tap stride (taps '
                             f'{[tuple(t.shape[-2:]) for t in taps]}); crop the query images to a multiple of 8')
        step = math.lcm(1, *strides)
        if min(h, w) < self.patch or self.patch % step:
            raise ValueError(f'--patch: {self.patch} px must fit the {h}x{w} query image {index} and be a multiple '
                             f'of every tap stride (lcm {step})')
        return strides

    def __len__(self) -> int:
        return len(self.lqs)

    def __getitem__(self, index: int) -> dict:
        lq, (output, taps), strides = self.lqs[index], self.answers[index], self.strides[index]
        (h, w), patch, step = lq.shape[-2:], self.patch, math.lcm(1, *strides)
        top, left = (step * int(torch.randint((size - patch) // step + 1, (1,), generator=self.generator))
                     for size in (h, w))
        flips = torch.rand(3, generator=self.generator) < 0.5  # hflip, vflip, transpose

        def crop(x: torch.Tensor, stride: int) -> torch.Tensor:
            x = x[..., top // stride:(top + patch) // stride, left // stride:(left + patch) // stride]
            x = x.flip(-1) if flips[0] else x
            x = x.flip(-2) if flips[1] else x
            return x.transpose(-2, -1) if flips[2] else x

        return {'lq': crop(lq, 1), 'answers': {'output': crop(output, 1),
                                               'taps': [crop(t, s) for t, s in zip(taps, strides, strict=True)]}}


def photo_names(block: dict) -> set[str]:
    """Photo names behind a MixedDegradationDataset block (file stems without a ``_<version>`` suffix)."""
    names = set()
    for source in block.get('sources', []):
        for key in ('dataroot_lq', 'dataroot_gt'):
            if source.get(key) and osp.isdir(source[key]):
                names |= {p.stem.rsplit('_', 1)[0] if p.stem.rsplit('_', 1)[-1].isdigit() else p.stem
                          for p in Path(source[key]).iterdir()}
    return names


def defence_label(block: dict | None) -> str:
    if block is None:
        return 'clean'
    params = 'rand' if block.get('randomize') else f"k{block['k']}h{block['h']:g}"
    return f"{block['mode']}/{block['layout']}/{block['targets'][0]}/{params}"


STUDENT_RECIPE = {'lr': 3e-3, 'eta_min_ratio': 0.01, 'ema_decay': 0.99}
"""Student training: AdamW at 3e-3, cosine to 1% of it, validated on an EMA of the weights (decay 0.99, ~100
iterations). Chosen on pilot runs (feature+output KD, seed 0): at 1e-3 without EMA students were still gaining
0.5-1 dB after 600 iterations and the raw weights swung +-0.5 dB between validations, so no tail was ever flat."""


def model_options(work: str, name: str, network_g: dict, is_train: bool, iters: int = 1, lr: float = 1e-3,
                  eta_min_ratio: float = 0.1, ema_decay: float = 0.0, **extra) -> dict:
    """In-process options of a study model: AdamW, cosine LR from ``lr`` to ``lr * eta_min_ratio``, optional EMA."""
    path = extra.pop('path', {})
    opt = {'name': name, 'model_type': extra.pop('model_type', 'AllInOneModel'), 'scale': 1, 'manual_seed': 0,
           'network_g': network_g, 'val': {'pad_multiple': 8},
           'train': {'optim_g': {'type': 'AdamW', 'lr': lr, 'weight_decay': 0.0, 'betas': [0.9, 0.999],
                                 'foreach': True},
                     'scheduler': {'type': 'CosineAnnealingRestartLR', 'periods': [iters],
                                   'eta_min': lr * eta_min_ratio},
                     'total_iter': iters, 'warmup_iter': -1, 'ema_decay': ema_decay}, **extra}
    return inprocess_options(opt, osp.join(work, name), is_train, **path)


def batches(dataset, batch_size: int, seed: int):
    """Endless shuffled batches, the same sequence for every run with the same seed."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        yield from DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True, generator=generator)


def per_task(model, loader: DataLoader) -> dict[str, dict[str, float]]:
    """``{task: {'psnr', 'ssim'}}`` of ``model.restore`` over the evaluation set (all tasks in one loader)."""
    return {de_name: {'psnr': m['psnr'], 'ssim': m['ssim']}
            for de_name, m in evaluate(model.restore, loader)['per_degradation'].items()}


def mean_psnr(metrics: dict) -> float:
    return statistics.fmean(m['psnr'] for m in metrics.values())


def time_pair(model, base, images: list[torch.Tensor], repeats: int = 3) -> tuple[float, float]:
    """Best-of-``repeats`` ms per image of ``model.restore`` and ``base.restore``, interleaved image by image."""
    best = [float('inf'), float('inf')]
    for _ in range(repeats):
        spent = [0.0, 0.0]
        for lq in images:
            for i, m in enumerate((model, base)):
                start = time.perf_counter()
                m.restore(lq)
                spent[i] += time.perf_counter() - start
        best = [min(b, t / len(images) * 1e3) for b, t in zip(best, spent, strict=True)]
    return best[0], best[1]


CONTEXT: dict = {}  # set by main() before the workers fork: data sets, loaders, teacher, preset


def student_model(block: dict | None, student: str, attack: str, seed: int):
    """The DistillModel of one student (seeded init) for ``attack`` against the teacher protected by ``block``."""
    ctx = CONTEXT
    set_random_seed(seed)
    return build_model(model_options(
        ctx['work'], f'student_{seed}', copy.deepcopy(STUDENTS[student][0]), True, ctx['preset'].iters,
        **STUDENT_RECIPE, model_type='DistillModel', network_teacher=ctx['teacher_block'],
        distill=attack_block(attack, student, block), asvp=block,
        path={'pretrain_network_teacher': ctx['teacher_path']}))


def stored_answers(model, lqs: list[torch.Tensor]) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
    """``model.teacher_targets`` of each whole query image ``(3, H, W)``: what the attacker keeps."""
    answers = []
    for lq in lqs:
        output, taps = model.teacher_targets(lq[None])
        answers.append((output[0], [t[0] for t in taps]))
    return answers


def same_answers(a: list, b: list) -> bool:
    """Whether two :func:`stored_answers` lists are bit-identical."""
    return all(torch.equal(x, y) for (out_a, taps_a), (out_b, taps_b) in zip(a, b, strict=True)
               for x, y in zip([out_a, *taps_a], [out_b, *taps_b], strict=True))


def train_student(run: tuple) -> dict:
    """Train one student (``(label, block, student, attack, seed)``) with validations; its row of the study."""
    label, block, student, attack, seed = run
    ctx, started = CONTEXT, time.perf_counter()
    torch.set_num_threads(1)
    preset: Preset = ctx['preset']
    model = student_model(block, student, attack, seed)
    queries = StoredAnswers(ctx['query_images'], ctx['answers'][label, student, attack], ctx['patch'], seed)
    stream, curve = batches(queries, ctx['batch'], seed=seed), []
    points = set(validation_points(preset.iters, preset.val_every))
    for it in range(1, preset.iters + 1):
        model.update_learning_rate(it, -1)
        model.feed_data(next(stream))
        model.optimize_parameters(it)
        if it in points:
            metrics = per_task(model, ctx['val_loader'])
            curve.append((it, mean_psnr(metrics)))
    converged, spread = plateau(curve)
    return {'defence': label, 'student': student, 'attack': attack, 'seed': seed, 'derived_from_clean': False,
            'metrics': metrics, 'curve': curve, 'converged': converged,
            'tail_range_db': spread, 'seconds': time.perf_counter() - started}


def summarise(rows: list[dict], defences: dict, teacher_clean: dict) -> list[dict]:
    """Cells (defence, student, attack) with mean +- std over seeds of student PSNR and of the paired drop."""
    clean = {(r['student'], r['attack'], r['seed']): r for r in rows if r['defence'] == 'clean'}
    cells: dict[tuple, list[dict]] = {}
    for r in rows:
        cells.setdefault((r['defence'], r['student'], r['attack']), []).append(r)
    out = []
    for (label, student, attack), runs in cells.items():
        drops = [mean_psnr(clean[student, attack, r['seed']]['metrics']) - mean_psnr(r['metrics']) for r in runs]
        curve_drops = [[c - p for (_, c), (_, p) in zip(clean[student, attack, r['seed']]['curve'], r['curve'],
                                                        strict=True)] for r in runs]
        iterations = [it for it, _ in runs[0]['curve']]
        psnrs = [mean_psnr(r['metrics']) for r in runs]
        teacher = defences.get(label, {}).get('teacher', teacher_clean)
        out.append({
            'defence': label, 'student': student, 'attack': attack, 'seeds': [r['seed'] for r in runs],
            'teacher_delta_psnr': {t: teacher[t]['psnr'] - teacher_clean[t]['psnr'] for t in teacher_clean},
            'student_psnr_mean': statistics.fmean(psnrs), 'student_psnr_std': std(psnrs),
            'drop_mean': statistics.fmean(drops), 'drop_std': std(drops),
            'drop_per_task': {t: statistics.fmean(clean[student, attack, r['seed']]['metrics'][t]['psnr']
                                                  - r['metrics'][t]['psnr'] for r in runs) for t in teacher_clean},
            'drop_curve': [(it, statistics.fmean(d)) for it, d in zip(iterations, zip(*curve_drops), strict=True)],
            'converged': sum(r['converged'] for r in runs), 'derived_from_clean': runs[0]['derived_from_clean']})
    return out


def drop_trend(drop_curve: list[tuple[int, float]]) -> str:
    """The paired drop on the validation curve at 50%, 80% and 100% of the iterations: a drop that shrinks as the
    students train is slower learning, one that holds is a lasting loss.

    Example:
        >>> drop_trend([(10, 3.0), (50, 2.0), (80, 1.5), (100, 1.2)])
        '+2.00 / +1.50 / +1.20'
    """
    last = drop_curve[-1][0]
    at = lambda frac: [d for it, d in drop_curve if it <= frac * last][-1]  # noqa: E731
    return ' / '.join(f'{at(frac):+.2f}' for frac in (0.5, 0.8, 1.0))


def std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def verdict(cell: dict, min_drop: float = 1.0) -> str:
    """``stops`` when the mean drop is >= ``min_drop`` dB and more than two standard deviations above 0."""
    if cell['defence'] == 'clean':
        return '-'
    return 'stops' if cell['drop_mean'] >= min_drop and cell['drop_mean'] > 2 * cell['drop_std'] else 'does not stop'


def best_points(cells: list[dict], student: str, max_teacher_change: float = 0.1) -> dict:
    """Best defences whose teacher PSNR change is within ``max_teacher_change`` dB on every task.

    Returns:
        ``{'per_attack': {attack: cell}, 'best': {defence, mean_drop, min_mean_drop, per_attack}}``: the cell with
        the largest mean drop for each attack, and the defence (run against the most attacks) with the largest drop
        averaged over its attacks, the one to ship; ``min_mean_drop`` is its weakest attack.
    """
    rows = [c for c in cells if c['student'] == student and c['defence'] != 'clean'
            and max(abs(v) for v in c['teacher_delta_psnr'].values()) <= max_teacher_change]
    per_attack = {}
    for c in rows:
        if c['attack'] not in per_attack or c['drop_mean'] > per_attack[c['attack']]['drop_mean']:
            per_attack[c['attack']] = c
    by_defence: dict[str, dict[str, float]] = {}
    for c in rows:
        by_defence.setdefault(c['defence'], {})[c['attack']] = c['drop_mean']
    full = [d for d, drops in by_defence.items() if len(drops) == max(map(len, by_defence.values()))]
    best = max(full, key=lambda d: statistics.fmean(by_defence[d].values()), default=None)
    return {'per_attack': per_attack, 'best': best and {
        'defence': best, 'mean_drop': statistics.fmean(by_defence[best].values()),
        'min_mean_drop': min(by_defence[best].values()), 'per_attack': by_defence[best]}}


def report_markdown(results: dict) -> str:
    """The study's markdown: setup, verdict per attack for the best defence, all cells."""
    cells, tasks = results['cells'], sorted(results['teacher_clean'])
    fmt = lambda m, s: f'{m:+.2f} ± {s:.2f}'  # noqa: E731
    rows = [[c['defence'], c['student'], c['attack'] + (' (= clean, bit-identical)' if c['derived_from_clean'] else ''),
             f"{statistics.fmean(c['teacher_delta_psnr'].values()):+.2f}",
             f"{c['student_psnr_mean']:.2f} ± {c['student_psnr_std']:.2f}", fmt(c['drop_mean'], c['drop_std']),
             ' '.join(f"{c['drop_per_task'][t]:+.2f}" for t in tasks), drop_trend(c['drop_curve']),
             f"{c['converged']}/{len(c['seeds'])}", verdict(c)] for c in cells]
    best = results['best']['best']
    best_text = ('none (no defence within 0.1 dB teacher change)' if best is None else
                 f"`{best['defence']}`: student drop {best['mean_drop']:+.2f} dB averaged over attacks, "
                 f"{best['min_mean_drop']:+.2f} dB under its weakest attack")
    verdicts = [[c['attack'], fmt(c['drop_mean'], c['drop_std']), verdict(c)] for c in cells
                if best and c['defence'] == best['defence'] and c['student'] == results['students'][0]]
    n_students = sum(1 for r in results['students_runs'] if not r['derived_from_clean'])
    n_converged = sum(r['converged'] for r in results['students_runs'] if not r['derived_from_clean'])
    clean_text = ', '.join(f"{t} {m['psnr']:.2f}" for t, m in results['teacher_clean'].items())
    return (f"# ASVP study ({results['preset']}: {results['iters']} student iterations, seeds "
            f"{results['seeds']}, PSNR on RGB, dB)\n\n"
            f"Teacher `{results['teacher']}`; clean teacher PSNR: {clean_text}. Attacker queries: "
            f"{results['query_images']} degraded photos the teacher never saw ({', '.join(results['query_photos'])}); "
            f"evaluation on {results['eval']} of the val sets. Converged students (val PSNR within 0.1 dB over the "
            f"last 20% of iterations): {n_converged}/{n_students}. Drop = PSNR (mean over tasks) of the student "
            f"distilled by the same attack and seed from the clean teacher minus that from the protected teacher "
            f"(positive = the defence hurts the student); mean ± std over seeds; `stops` = drop >= 1 dB and > 2 std; "
            f"curve drop = the same difference on the validation curve, mean over seeds. "
            f"Unprotected forward {results['clean_ms_per_image']:.1f} ms/img; study runtime "
            f"{results['runtime_s'] / 60:.1f} min.\n\n"
            f"## Verdict per attack, best defence within 0.1 dB teacher change\n\nBest defence: {best_text}\n\n"
            + markdown_table(['attack', 'drop (dB)', 'verdict'], verdicts)
            + '\n\n## All cells\n\n'
            + markdown_table(['defence', 'student', 'attack', 'teacher dPSNR', 'student PSNR', 'drop',
                              f'drop per task ({" ".join(tasks)})', 'curve drop at 50/80/100%', 'converged',
                              'verdict'], rows)
            + '\n\n![frontier](frontier.png)\n')


def main() -> None:  # noqa: C901  (one linear script)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--opt', required=True, help='YAML with the teacher arch (network_g) and datasets')
    parser.add_argument('--teacher', help='teacher checkpoint ({params: ...}); trained here when absent')
    parser.add_argument('--teacher-iters', type=int, default=600)
    choice = parser.add_mutually_exclusive_group()
    for name in PRESETS:
        choice.add_argument(f'--{name}', action='store_const', dest='preset', const=name)
    parser.add_argument('--iters', type=int, help='student iterations (default: the preset\'s)')
    parser.add_argument('--seeds', type=int, help='seeds per cell (default: the preset\'s)')
    parser.add_argument('--attacks', help=f"comma-separated subset of {','.join(ATTACKS)} (default: all)")
    parser.add_argument('--val-every', type=int, help='student validation interval (default: the preset\'s)')
    parser.add_argument('--batch', type=int, default=4)
    parser.add_argument('--patch', type=int, default=32)
    parser.add_argument('--workers', type=int, default=1, help='student runs in parallel, one thread each')
    parser.add_argument('--out', default='results/asvp_study')
    args = parser.parse_args()
    args.preset = args.preset or 'quick'
    preset = PRESETS[args.preset]
    iters = args.iters or preset.iters
    preset = Preset(iters, args.seeds or preset.seeds, args.val_every or min(preset.val_every, max(1, iters // 6)),
                    preset.eval_crop, preset.students)
    if iters < 5 or preset.val_every < 1:
        parser.error(f'--iters {iters} / --val-every {preset.val_every}: expected --iters >= 5 (the convergence check '
                     'needs two validations in the last 20% of the iterations) and --val-every >= 1')
    attacks = ATTACKS if args.attacks is None else tuple(args.attacks.split(','))
    unknown = sorted(set(attacks) - set(ATTACKS))
    if unknown:
        parser.error(f"--attacks: unknown {', '.join(unknown)}; expected a comma-separated subset of "
                     f"{', '.join(ATTACKS)}")
    torch.set_num_threads(1)
    started = time.perf_counter()

    opt = load_options(args.opt)
    blocks = dict(opt['datasets'])
    if 'query' not in blocks:
        raise ValueError(f'{args.opt}: datasets.query: expected the attacker\'s query images (photos the teacher '
                         'never saw)')
    query_block, train_block = blocks.pop('query'), blocks.pop('train')
    shared = photo_names(query_block) & photo_names(train_block)
    if shared:
        raise ValueError(f'{args.opt}: datasets.query: photos {sorted(shared)} are also in datasets.train; the '
                         'attacker must query photos the teacher never saw')
    query_images = [item['lq'] for item in build_dataset({**query_block, 'phase': 'val', 'scale': 1})]
    val_sets = [CenterCrop(build_dataset({**block, 'phase': 'val', 'scale': 1}), preset.eval_crop)
                for block in blocks.values()]
    if not val_sets:
        raise ValueError(f'{args.opt}: datasets needs at least one val set besides datasets.train and datasets.query')
    val_loader = DataLoader(ConcatDataset(val_sets), batch_size=8 if preset.eval_crop else 1)
    timing_images = [val_sets[i % len(val_sets)][i // len(val_sets)]['lq'][None] for i in range(8)
                     if i // len(val_sets) < len(val_sets[i % len(val_sets)])]
    work = osp.join(args.out, 'runs')

    teacher_block, teacher_path = opt['network_g'], args.teacher
    if teacher_path is None:
        set_random_seed(0)
        teacher = build_model(model_options(work, 'teacher', teacher_block, True, args.teacher_iters))
        stream = batches(build_dataset({**train_block, 'phase': 'train', 'gt_size': args.patch, 'scale': 1}),
                         args.batch * 2, 0)
        for it in tqdm(range(1, args.teacher_iters + 1), desc='teacher (L1 on GT)', leave=False):
            teacher.update_learning_rate(it, -1)
            teacher.feed_data(next(stream))
            teacher.optimize_parameters(it)
        teacher.save_network(teacher.net_g, 'net_g', -1)
        teacher_path = osp.join(work, 'teacher', 'models', 'net_g_latest.pth')
    elif not osp.isfile(teacher_path):
        raise FileNotFoundError(f'--teacher: file not found: {teacher_path}')

    def teacher_model(block: dict | None):
        return build_model(model_options(work, 'teacher_eval', teacher_block, False,
                                         path={'pretrain_network_g': teacher_path}, asvp=block))

    clean_teacher = teacher_model(None)
    teacher_clean = per_task(clean_teacher, val_loader)
    probe = timing_images[0]
    clean_probe = clean_teacher.restore(probe)
    defences = [None, *defence_grid(args.preset)]
    results = {'preset': args.preset, 'iters': preset.iters, 'seeds': list(range(preset.seeds)),
               'student_recipe': {**STUDENT_RECIPE, 'batch': args.batch, 'patch': args.patch,
                                  'val_every': preset.val_every}, 'attacks': list(attacks),
               'students': list(preset.students), 'teacher': teacher_path, 'teacher_clean': teacher_clean,
               'metric_space': 'RGB', 'defences': {}, 'query_images': len(query_images),
               'query_photos': sorted(photo_names(query_block)),
               'eval': f'{preset.eval_crop}-px centre crops' if preset.eval_crop else 'whole images'}
    base_times = []
    for block in defences[1:]:
        model = teacher_model(block)
        ms, base_ms = time_pair(model, clean_teacher, timing_images)
        base_times.append(base_ms)
        results['defences'][defence_label(block)] = {
            'block': block, 'teacher': per_task(model, val_loader), 'ms_per_image': ms, 'overhead_ratio': ms / base_ms,
            'output_bit_identical': bool(torch.equal(model.restore(probe), clean_probe))}
    results['clean_ms_per_image'] = min(base_times, default=float('nan'))

    CONTEXT.update(preset=preset, work=work, teacher_block=teacher_block, teacher_path=teacher_path,
                   query_images=query_images, patch=args.patch, batch=args.batch, val_loader=val_loader,
                   answers={})
    runs, derived = [], []
    for block, student, attack in tqdm(list(itertools.product(defences, preset.students, attacks)),
                                       desc='teacher answers', leave=False):
        label = defence_label(block)
        answers = CONTEXT['answers'][label, student, attack] = stored_answers(
            student_model(block, student, attack, 0), query_images)
        same = block is not None and same_answers(answers, CONTEXT['answers']['clean', student, attack])
        (derived if same else runs).extend((label, block, student, attack, seed) for seed in range(preset.seeds))
    if args.workers > 1:
        with multiprocessing.get_context('fork').Pool(args.workers) as pool:
            rows = list(tqdm(pool.imap(train_student, runs), total=len(runs), desc='students'))
    else:
        rows = [train_student(run) for run in tqdm(runs, desc='students')]
    clean_rows = {(r['student'], r['attack'], r['seed']): r for r in rows if r['defence'] == 'clean'}
    rows += [{**clean_rows[student, attack, seed], 'defence': label, 'derived_from_clean': True}
             for label, _, student, attack, seed in derived]
    results['students_runs'] = rows
    results['cells'] = summarise(rows, results['defences'], teacher_clean)
    results['best'] = best_points(results['cells'], preset.students[0])
    results['runtime_s'] = time.perf_counter() - started
    points = [{'x': statistics.fmean(c['teacher_delta_psnr'].values()), 'y': c['drop_mean'], 'group': c['attack'],
               'label': c['defence'].split('/')[-1]} for c in results['cells'] if c['defence'] != 'clean']
    scatter_chart(osp.join(args.out, 'frontier.png'), points, 'teacher PSNR change (dB)', 'student PSNR drop (dB)',
                  'ASVP frontier (mean over tasks and seeds)')
    write_json(osp.join(args.out, 'report.json'), results)
    md = report_markdown(results)
    write_text(osp.join(args.out, 'report.md'), md)
    tqdm.write(md)


if __name__ == '__main__':
    main()
