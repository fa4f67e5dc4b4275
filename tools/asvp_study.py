"""ASVP defence study: teacher PSNR change vs student PSNR drop over defences x attacks x students, in one process.

Usage:
    OMP_NUM_THREADS=1 python tools/asvp_study.py --quick --opt options/distill/asvp-study_promptir-tiny_demo3.yml \
        --teacher experiments/train_promptir-tiny_demo3_l1_2kit/models/net_g_latest.pth --out results/demo/asvp

``--opt`` gives the teacher arch (``network_g``), the train set (``datasets.train``; its GT is never used by the
students) and the evaluation sets (every other ``datasets`` entry, one per task). Without ``--teacher`` a teacher is
trained first in this process (``--teacher-iters``, L1 on the train set). Every student run uses DistillModel with the
same seed, data order and initialisation, so a student drop is the defence's effect alone. Output-only KD against an
exposed-mode defence is not run: the teacher's outputs are bit-identical (checked here), so its student is the
clean-teacher student, and the table says so. Writes ``report.json``, ``report.md`` (table, best points, a link to
the PNG) and ``frontier.png`` under ``--out``.

Speed (one BLAS thread, ``--threads 1`` is the default): every model is evaluated on centre crops of the val images
(``--eval-crop``, quick 64 px) in batches, hook overhead is timed on at most 8 of them (clean and protected forward
interleaved), and the quick preset trains ~14 students (restormer-tiny against every attack, edsr-cnn as a cross-check
on the clean and the randomised defence): about 4 min wall at 60 student iterations on one loaded core. ``--full``
sweeps 40 defences and trains 270 students (both archs, every attack) x 600 iterations, evaluated on whole images:
about 12 h on one core at ~0.27 s per student iteration (batch 4, 48 px); it need not run on the demo machine.
"""
import argparse
import copy
import itertools
import statistics
import time
from os import path as osp

# isort: off
import basicsr_unlearn  # noqa: F401  (plugin first: torchvision alias, registration)
# isort: on
import torch
from basicsr.data import build_dataset
from basicsr.models import build_model
from basicsr.utils import set_random_seed
from torch.utils.data import ConcatDataset, DataLoader, Dataset
from tqdm import tqdm

from basicsr_unlearn.config import load_options
from basicsr_unlearn.evaluation.metrics import evaluate
from basicsr_unlearn.evaluation.report import markdown_table, scatter_chart
from basicsr_unlearn.fileio import write_json, write_text

STUDENTS = {
    'restormer-tiny': ({'type': 'Restormer', 'inp_channels': 3, 'out_channels': 3, 'dim': 8,
                        'num_blocks': [1, 1, 1, 1], 'num_refinement_blocks': 1, 'heads': [1, 1, 2, 2],
                        'ffn_expansion_factor': 2.66, 'bias': False, 'LayerNorm_type': 'WithBias'}, 'same'),
    'edsr-cnn': ({'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 24, 'num_block': 4, 'upscale': 1,
                  'img_range': 1.0, 'rgb_mean': [0.5, 0.5, 0.5]}, 'body.3'),
}
ATTACKS = {  # name: (output KD weight, feature KD weight, attack)
    'out': (1.0, 0.0, None),
    'feat': (0.0, 1.0, None),
    'feat+out': (1.0, 1.0, None),
    'inverse+feat+out': (1.0, 1.0, 'inverse_asvp'),
}


def defence_grid(preset: str) -> list[dict]:
    """ASVP blocks swept by the preset (``None``-free; the clean teacher is always run too)."""
    if preset == 'quick':
        return [
            {'targets': ['decoder_level1'], 'k': 2, 'h': 8.0, 'layout': 'channel_map', 'mode': 'exposed'},
            {'targets': ['decoder_level1'], 'layout': 'channel_map', 'mode': 'exposed',
             'randomize': {'k': [1, 4], 'h': [2.0, 16.0]}, 'seed': 1234},
            {'targets': ['decoder_level1'], 'k': 1, 'h': 1.5, 'layout': 'channel_space', 'mode': 'inline'},
        ]
    grid = []
    for target, layout, (k, h) in itertools.product(['decoder_level1', 'latent'], ['channel_space', 'channel_map'],
                                                   [(1, 2.0), (2, 4.0), (2, 8.0), (4, 8.0), (8, 8.0), (4, 32.0)]):
        grid.append({'targets': [target], 'k': k, 'h': h, 'layout': layout, 'mode': 'exposed'})
    for target, layout in itertools.product(['decoder_level1', 'latent'], ['channel_space', 'channel_map']):
        grid.append({'targets': [target], 'layout': layout, 'mode': 'exposed',
                     'randomize': {'k': [1, 4], 'h': [2.0, 16.0]}, 'seed': 1234})
        for h in (1.1, 1.5, 2.0):
            grid.append({'targets': [target], 'k': 1, 'h': h, 'layout': layout, 'mode': 'inline'})
    return grid


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


def defence_label(block: dict | None) -> str:
    if block is None:
        return 'clean'
    params = 'rand' if block.get('randomize') else f"k{block['k']}h{block['h']:g}"
    return f"{block['mode']}/{block['layout']}/{block['targets'][0]}/{params}"


def model_options(tmp: str, name: str, network_g: dict, is_train: bool, iters: int = 1, **extra) -> dict:
    """Options as BasicSR's ``parse_options`` leaves them (CPU, one process) for an in-process model."""
    opt = {'name': name, 'model_type': extra.pop('model_type', 'AllInOneModel'), 'scale': 1, 'num_gpu': 0,
           'is_train': is_train, 'dist': False, 'rank': 0, 'world_size': 1, 'manual_seed': 0,
           'network_g': network_g, 'val': {'pad_multiple': 8},
           'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None,
                    **{k: osp.join(tmp, name, k) for k in ('models', 'training_states', 'log', 'visualization',
                                                           'experiments_root')}},
           'train': {'optim_g': {'type': 'AdamW', 'lr': 1e-3, 'weight_decay': 0.0, 'betas': [0.9, 0.999]},
                     'scheduler': {'type': 'CosineAnnealingRestartLR', 'periods': [iters], 'eta_min': 1e-5},
                     'total_iter': iters, 'warmup_iter': -1}}
    for key, value in extra.items():
        if key == 'path':
            opt['path'].update(value)
        else:
            opt[key] = value
    return opt


def batches(dataset, batch_size: int, seed: int):
    """Endless shuffled batches, the same sequence for every run with the same seed."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        yield from DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True, generator=generator)


def train(model, dataset, iters: int, batch_size: int, desc: str) -> None:
    """``iters`` optimisation steps of ``model`` (feed_data / optimize_parameters / LR update) on ``dataset``."""
    stream = batches(dataset, batch_size, seed=0)
    for it in tqdm(range(1, iters + 1), desc=desc, leave=False):
        model.update_learning_rate(it, -1)
        model.feed_data(next(stream))
        model.optimize_parameters(it)


def per_task(model, loader: DataLoader) -> dict[str, dict[str, float]]:
    """``{task: {'psnr', 'ssim'}}`` of ``model.restore`` over the evaluation set (all tasks in one loader)."""
    return {de_name: {'psnr': m['psnr'], 'ssim': m['ssim']}
            for de_name, m in evaluate(model.restore, loader)['per_degradation'].items()}


def time_pair(model, base, images: list[torch.Tensor], repeats: int = 3) -> tuple[float, float]:
    """Best-of-``repeats`` ms per image of ``model.restore`` and ``base.restore``, timed interleaved image by image
    so that load from other processes hits both alike."""
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


def mean_drop(row: dict) -> float:
    """Mean student PSNR drop over the tasks of one study row."""
    return statistics.fmean(row['student_drop_psnr'].values())


def best_points(results: dict, student: str, max_teacher_change: float = 0.1) -> dict:
    """Best defences whose teacher PSNR change is within ``max_teacher_change`` dB on every task.

    Returns:
        ``{'per_attack': {attack: row}, 'best': {defence, block, mean_drop, min_mean_drop, per_attack}}``: the row
        with the largest mean student drop for each attack, and the defence (run against the most attacks) with the
        largest student drop averaged over its attacks, the one to ship; ``min_mean_drop`` is its weakest attack.
    """
    rows = [r for r in results['students'] if r['student'] == student and r['defence'] != 'clean'
            and max(abs(v) for v in r['teacher_delta_psnr'].values()) <= max_teacher_change]
    per_attack = {}
    for r in rows:
        if r['attack'] not in per_attack or mean_drop(r) > mean_drop(per_attack[r['attack']]):
            per_attack[r['attack']] = r
    by_defence: dict[str, dict[str, float]] = {}
    for r in rows:
        by_defence.setdefault(r['defence'], {})[r['attack']] = mean_drop(r)
    full = [d for d, drops in by_defence.items() if len(drops) == max(map(len, by_defence.values()))]
    best = max(full, key=lambda d: statistics.fmean(by_defence[d].values()), default=None)
    return {'per_attack': per_attack, 'best': best and {
        'defence': best, 'block': results['defences'][best]['block'],
        'mean_drop': statistics.fmean(by_defence[best].values()), 'min_mean_drop': min(by_defence[best].values()),
        'per_attack': by_defence[best]}}


def main() -> None:  # noqa: C901  (one linear script)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--opt', required=True, help='YAML with the teacher arch (network_g) and datasets')
    parser.add_argument('--teacher', help='teacher checkpoint ({params: ...}); trained here when absent')
    parser.add_argument('--teacher-iters', type=int, default=600)
    preset = parser.add_mutually_exclusive_group()
    preset.add_argument('--quick', action='store_const', dest='preset', const='quick')
    preset.add_argument('--full', action='store_const', dest='preset', const='full')
    parser.add_argument('--iters', type=int, help='student iterations (default: quick 60, full 600)')
    parser.add_argument('--batch', type=int, default=4)
    parser.add_argument('--patch', type=int, default=48)
    parser.add_argument('--eval-crop', type=int, help='centre crop (px) of val images, 0 = whole (quick 64, full 0)')
    parser.add_argument('--threads', type=int, default=1, help='torch intra-op threads (default 1)')
    parser.add_argument('--out', default='results/asvp_study')
    args = parser.parse_args()
    args.preset = args.preset or 'quick'
    iters = args.iters or (60 if args.preset == 'quick' else 600)
    crop = args.eval_crop if args.eval_crop is not None else (64 if args.preset == 'quick' else 0)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    opt = load_options(args.opt)
    teacher_block = opt['network_g']
    train_opt = {**opt['datasets']['train'], 'phase': 'train', 'gt_size': args.patch, 'dataset_enlarge_ratio': 1,
                 'scale': 1}
    train_set = build_dataset(train_opt)
    val_sets = [CenterCrop(build_dataset({**block, 'phase': 'val', 'scale': 1}), crop)
                for phase, block in opt['datasets'].items() if phase != 'train']
    if not val_sets:
        raise ValueError(f'{args.opt}: datasets needs at least one val set besides datasets.train')
    val_loader = DataLoader(ConcatDataset(val_sets), batch_size=8 if crop else 1)
    timing_images = [val_sets[i % len(val_sets)][i // len(val_sets)]['lq'][None] for i in range(8)
                     if i // len(val_sets) < len(val_sets[i % len(val_sets)])]
    work = osp.join(args.out, 'runs')

    teacher_path = args.teacher
    if teacher_path is None:
        set_random_seed(0)
        teacher = build_model(model_options(work, 'teacher', teacher_block, True, args.teacher_iters))
        train(teacher, train_set, args.teacher_iters, args.batch * 2, 'teacher (L1 on GT)')
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
    students = list(STUDENTS) if args.preset == 'full' else ['restormer-tiny']
    runs = []
    for block in defences:
        label = defence_label(block)
        for student in students:
            for attack in ATTACKS:
                if block is None and attack == 'inverse+feat+out':
                    continue
                if args.preset == 'quick' and block is not None and block['mode'] == 'inline' and attack != 'out':
                    continue
                runs.append((label, block, student, attack))
    if args.preset == 'quick':  # the second student arch on the baseline and the strongest exposed setting
        second = 'edsr-cnn'
        runs += [(defence_label(b), b, second, attack) for b in (None, defences[2]) for attack in ('feat', 'feat+out')]

    results = {'teacher_clean': teacher_clean, 'defences': {}, 'students': [], 'iters': iters, 'preset': args.preset,
               'teacher': teacher_path, 'metric_space': 'RGB', 'eval_crop': crop, 'timing_images': len(timing_images)}
    base_times = []
    for block in defences[1:]:
        model = teacher_model(block)
        ms, base_ms = time_pair(model, clean_teacher, timing_images)
        base_times.append(base_ms)
        identical = bool(torch.equal(model.restore(probe), clean_probe))
        results['defences'][defence_label(block)] = {
            'block': block, 'teacher': per_task(model, val_loader), 'ms_per_image': ms,
            'overhead_ratio': ms / base_ms, 'output_bit_identical': identical}
    clean_ms = min(base_times, default=float('nan'))
    results['clean_ms_per_image'] = clean_ms

    students_clean: dict = {}
    for label, block, student, attack in tqdm(runs, desc='distillation runs'):
        exposed_out = block is not None and block['mode'] == 'exposed' and attack == 'out'
        if exposed_out and results['defences'][label]['output_bit_identical']:
            metrics, derived = students_clean[(student, 'out')], True
        else:
            arch, tap = STUDENTS[student]
            t_tap = block['targets'][0] if block else 'decoder_level1'
            out_w, feat_w, attacker = ATTACKS[attack]
            distill = {'output_weight': out_w, 'feature_weight': feat_w,
                       'taps': [[t_tap if tap == 'same' else tap, t_tap]], 'attack': attacker,
                       'attack_opt': {'layout': block['layout']} if attacker and block else {}}
            set_random_seed(0)
            model = build_model(model_options(
                work, 'student', copy.deepcopy(arch), True, iters, model_type='DistillModel',
                network_teacher=teacher_block, distill=distill, asvp=block,
                path={'pretrain_network_teacher': teacher_path}))
            train(model, train_set, iters, args.batch, f'{student} {attack} {label}')
            metrics, derived = per_task(model, val_loader), False
        if block is None:
            students_clean[(student, attack)] = metrics
        base = students_clean[(student, attack.removeprefix('inverse+'))]
        t_delta = {task: results['defences'][label]['teacher'][task]['psnr'] - teacher_clean[task]['psnr']
                   for task in teacher_clean} if block else {task: 0.0 for task in teacher_clean}
        results['students'].append({
            'defence': label, 'student': student, 'attack': attack, 'derived_from_clean': derived,
            'metrics': metrics, 'teacher_delta_psnr': t_delta,
            'student_drop_psnr': {task: base[task]['psnr'] - metrics[task]['psnr'] for task in metrics}})
        write_json(osp.join(args.out, 'report.json'), results)

    rows, points = [], []
    for r in results['students']:
        d = results['defences'].get(r['defence'], {})
        tasks = sorted(r['metrics'])
        rows.append([r['defence'], r['student'], r['attack'] + (' (=clean, bit-identical)' if r['derived_from_clean']
                                                                 else ''),
                     ' '.join(f"{r['teacher_delta_psnr'][t]:+.2f}" for t in tasks),
                     ' '.join(f"{r['metrics'][t]['psnr']:.2f}" for t in tasks),
                     ' '.join(f"{r['student_drop_psnr'][t]:+.2f}" for t in tasks),
                     f"{d.get('ms_per_image', clean_ms):.1f}", f"{d.get('overhead_ratio', 1.0):.2f}"])
        if r['defence'] != 'clean':
            for t in tasks:
                points.append({'x': r['teacher_delta_psnr'][t], 'y': r['student_drop_psnr'][t], 'group': t,
                               'label': f"{r['attack']}|{r['defence'].split('/')[1][8:]}|{r['student'][:4]}"})
    tasks = ' '.join(sorted(teacher_clean))
    clean_text = ', '.join(f"{t} {m['psnr']:.2f}" for t, m in teacher_clean.items())
    header = ['defence', 'student', 'attack', f'teacher dPSNR ({tasks})', f'student PSNR ({tasks})',
              f'student drop ({tasks})', 'ms/img', 'overhead x']
    results['best'] = best_points(results, students[0])
    results['runtime_s'] = time.perf_counter() - started
    best_rows = [[attack, r['defence'], f'{mean_drop(r):+.2f}',
                  ' '.join(f"{r['student_drop_psnr'][t]:+.2f}" for t in sorted(r['student_drop_psnr']))]
                 for attack, r in results['best']['per_attack'].items()]
    best = results['best']['best']
    best_text = ('none (no defence within 0.1 dB teacher change)' if best is None else
                 f"`{best['defence']}`: student drop {best['mean_drop']:+.2f} dB averaged over tasks and attacks, "
                 f"{best['min_mean_drop']:+.2f} dB under its weakest attack "
                 f"(per attack: {', '.join(f'{a} {d:+.2f}' for a, d in best['per_attack'].items())})")
    md = (f"# ASVP study ({args.preset}, {iters} student iters, PSNR on RGB, dB)\n\n"
          f"teacher `{teacher_path}`; clean teacher PSNR: {clean_text}; evaluation on "
          f"{f'{crop}-px centre crops' if crop else 'whole images'} of the val sets; unprotected forward "
          f"{clean_ms:.1f} ms/img; study runtime {results['runtime_s'] / 60:.1f} min. Student drop = PSNR of the "
          f"student distilled from the clean teacher by the same attack minus PSNR of the student distilled from the "
          f"protected teacher (positive = the defence hurts the student).\n\n"
          f"## Best points for {students[0]} (teacher change <= 0.1 dB on every task)\n\n"
          + markdown_table(['attack', 'best defence', 'mean drop', f'drop ({tasks})'], best_rows)
          + f"\n\nBest defence over all attacks (the shipped default): {best_text}\n\n"
          f"## All runs\n\n" + markdown_table(header, rows) + '\n\n![frontier](frontier.png)\n')
    scatter_chart(osp.join(args.out, 'frontier.png'), points, 'teacher PSNR change (dB)', 'student PSNR drop (dB)',
                  'ASVP frontier (per task)')
    write_json(osp.join(args.out, 'report.json'), results)
    write_text(osp.join(args.out, 'report.md'), md)
    tqdm.write(md)

if __name__ == '__main__':
    main()
