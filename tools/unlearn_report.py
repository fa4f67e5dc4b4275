"""Unlearning report: original vs retrained-without-X reference(s) vs each unlearned model (mean ± std over seeds).

Usage:
    python tools/unlearn_report.py --opt options/test/test_promptir-tiny_demo3.yml \\
        --original experiments/train_promptir-tiny_demo3_l1_2kit \\
        --reference experiments/train_promptir-tiny_demo3-wo-haze_l1_1714it \\
        --reference experiments/train_promptir-tiny_demo3-wo-haze_l1_1714it_seed1 \\
        --method ga_adv=experiments/unlearn_ga-adv_s0,experiments/unlearn_ga-adv_s1,experiments/unlearn_ga-adv_s2 \\
        --method adapt_then_unlearn=experiments/adapt+experiments/repulse \\
        --forget haze --out results/unlearn_haze [--relearn-pairs 4 --relearn-steps 10,25,50 --relearn-lr 2e-4] \\
        [--retrain-step-time experiments/step_time_wo_haze]

A model is a checkpoint ``.pth`` or an experiment folder (``models/net_g_latest.pth``, ``train_log.json`` for the
wall time, the saved option YAML for the oracle-stop label); ``+`` joins the stages of a multi-stage method; ``,``
(or repeating ``--method`` with the same NAME) gives the seeds of a method. The first ``--reference`` is the yardstick
of every gap; a second one (another retraining seed) gives the noise floor. The relearning attack's settings come
from the option file's ``relearn:`` block (keys pairs, steps, lr, seed, patch), overridden by the flags;
``--relearn-pairs 0`` skips the attack. Cost is each method's training wall time over the first reference's; with
``--retrain-step-time RUN`` (a short run of the reference's training YAML beside the methods, e.g. shipped references
trained elsewhere) the reference's time is its iterations × that run's median step time. Writes ``report.json``,
``report.md`` and PNG charts.
"""
import argparse
import sys
from dataclasses import replace

from tqdm import tqdm

import basicsr_unlearn  # noqa: F401  (torchvision alias before basicsr)
from basicsr_unlearn.config import check_keys, load_options
from basicsr_unlearn.data.degradation_names import check_name
from basicsr_unlearn.evaluation.model_specs import (
    measured_step_time,
    resolve_model,
    resolve_runs,
    retraining_time,
    training_curves,
)
from basicsr_unlearn.evaluation.relearning_attack import RelearnOptions
from basicsr_unlearn.evaluation.unlearning_markdown import main_table, write_report
from basicsr_unlearn.evaluation.unlearning_report import WALL_TIME_BASIS, build_report, evaluate_models, input_psnr

RELEARN_TYPES = {'pairs': int, 'steps': lambda v: tuple(int(b) for b in v), 'lr': float, 'seed': int, 'patch': int}


def parse_method(text: str) -> tuple[str, str]:
    name, sep, spec = text.partition('=')
    if not sep or not name or not spec:
        raise argparse.ArgumentTypeError(f'--method: expected NAME=PATH[,PATH...] (one PATH per seed); got {text!r}')
    return name, spec


def parse_steps(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(','))
    except ValueError:
        raise argparse.ArgumentTypeError(f'--relearn-steps: expected comma-separated integers, e.g. 10,25,50; '
                                         f'got {text!r}') from None


def relearn_options(opt: dict, args: argparse.Namespace, where: str) -> RelearnOptions | None:
    """The relearning attack's settings: defaults < the option file's ``relearn`` block < the command line."""
    block = dict(opt.get('relearn') or {})
    check_keys(block, RELEARN_TYPES, f'{where}: relearn')
    for key, kind in RELEARN_TYPES.items():
        value = getattr(args, f'relearn_{key}')
        if value is not None:
            block[key] = value
        if key in block:
            try:
                block[key] = kind(block[key])
            except (TypeError, ValueError):
                raise ValueError(f'{where}: relearn.{key}: cannot read {block[key]!r} as {key} (e.g. pairs: 4, '
                                 'steps: [10, 25, 50], lr: 5.0e-4, seed: 0, patch: 64)') from None
    return None if block.get('pairs') == 0 else RelearnOptions(**block)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--opt', required=True, help='test YAML with network_g and the per-degradation test sets')
    parser.add_argument('--original', required=True, help='original model: checkpoint or experiment folder')
    parser.add_argument('--reference', required=True, action='append', metavar='PATH',
                        help='model retrained without the forgotten type; repeat for another retraining seed '
                             '(the first is the yardstick, the others give the noise floor)')
    parser.add_argument('--method', action='append', type=parse_method, default=[], metavar='NAME=PATH[,PATH...]',
                        help='unlearned model (repeatable); one PATH per seed, stages joined with +')
    parser.add_argument('--forget', required=True, help='forgotten degradation name, e.g. haze')
    parser.add_argument('--out', required=True, help='output folder, e.g. results/unlearn_haze')
    parser.add_argument('--y-channel', action='store_true', help='PSNR/SSIM on the Y channel (default RGB)')
    parser.add_argument('--crop-border', type=int, default=0, help='pixels cropped at each border for metrics')
    parser.add_argument('--retrain-step-time', metavar='RUN',
                        help="experiment folder of a short run of the reference's training YAML made beside the "
                             "methods: a reference's cost becomes its iterations x that run's median step time")
    relearn = parser.add_argument_group('relearning attack (defaults: the option file\'s relearn block, else 4 '
                                        'pairs, 10,25,50 steps, lr 2e-4, seed 0, 48-px crops)')
    relearn.add_argument('--relearn-pairs', type=int, help='k forgotten-type pairs fine-tuned on; 0 skips the attack')
    relearn.add_argument('--relearn-steps', type=parse_steps, help='cumulative step budgets, e.g. 10,25,50')
    relearn.add_argument('--relearn-lr', type=float, help='Adam learning rate')
    relearn.add_argument('--relearn-seed', type=int, help='seed of the random crops')
    relearn.add_argument('--relearn-patch', type=int, help='crop size in px')
    args = parser.parse_args(argv)
    try:
        check_name(args.forget, '--forget')
        names = [name for name, _ in args.method]
        if {'original'} & set(names) or any(n.startswith('reference') for n in names):
            raise ValueError(f'--method: names must not be original or reference*; got {names}')
        ref_names = ['reference', *[f'reference_{i}' for i in range(2, len(args.reference) + 1)]]
        specs = [resolve_model('original', 'original', args.original, '--original'),
                 *[resolve_model(name, 'reference', path, '--reference') for name, path in zip(ref_names,
                                                                                               args.reference)]]
        for name in dict.fromkeys(names):
            runs = ','.join(path for n, path in args.method if n == name)
            specs += resolve_runs(name, 'method', runs, f'--method {name}')
        opt = load_options(args.opt)
        relearn_opts = relearn_options(opt, args, args.opt)
        step = args.retrain_step_time and measured_step_time(args.retrain_step_time, '--retrain-step-time')
        scores = evaluate_models(opt, specs, args.forget, y_channel=args.y_channel, crop_border=args.crop_border,
                                 where=args.opt, relearn=relearn_opts,
                                 progress=lambda runs: tqdm(runs, desc='evaluating checkpoints', unit='model'))
        degraded = input_psnr(opt, args.forget, args.y_channel, args.crop_border, args.opt)
    except (ValueError, FileNotFoundError, KeyError) as error:
        sys.exit(f'unlearn_report: {error}')
    cost_basis = WALL_TIME_BASIS
    if step:
        retrain = {s.name: retraining_time(s, step) for s in specs if s.role == 'reference'}
        scores = [replace(s, wall_time_s=retrain[s.name]) if s.role == 'reference' else s for s in scores]
        cost_basis = (f'training wall time of each method over the first reference\'s iterations x {step:.3f} s, the '
                      f'median step time of {args.retrain_step_time} (its training YAML, run beside the methods)')
    report = build_report(scores, args.forget, 'Y' if args.y_channel else 'RGB', relearn_opts, cost_basis, degraded)
    md_path = write_report(report, args.out, training_curves(specs))
    print(f'{main_table(report)}\nReport: {md_path}')


if __name__ == '__main__':
    main()
