"""Unlearning report: original vs retrained-without-X reference vs each unlearned model.

Usage:
    python tools/unlearn_report.py --opt options/test/test_promptir-tiny_demo3.yml \\
        --original experiments/train_promptir-tiny_demo3_l1_2kit \\
        --reference experiments/train_promptir-tiny_demo3-wo-haze_l1_2kit \\
        --method ga_adv=experiments/unlearn_promptir-tiny_demo3_ga-adv_300it \\
        --method adapt_then_unlearn=experiments/adapt+experiments/repulse \\
        --forget haze --out results/unlearn_haze

A model is a checkpoint ``.pth`` or an experiment folder (``models/net_g_latest.pth`` and ``train_log.json`` for the
wall time); ``+`` joins the stages of a multi-stage method. Writes ``report.json``, ``report.md`` and PNG charts.
"""
import argparse
import sys

from tqdm import tqdm

import basicsr_unlearn  # noqa: F401  (torchvision alias before basicsr)
from basicsr_unlearn.config import load_options
from basicsr_unlearn.data.degradation_names import check_name
from basicsr_unlearn.evaluation.unlearning_report import (
    build_report,
    evaluate_models,
    resolve_model,
    training_curves,
    write_report,
)


def parse_method(text: str) -> tuple[str, str]:
    name, sep, spec = text.partition('=')
    if not sep or not name or not spec:
        raise argparse.ArgumentTypeError(f'--method: expected NAME=<checkpoint-or-experiment-dir>; got {text!r}')
    return name, spec


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--opt', required=True, help='test YAML with network_g and the per-degradation test sets')
    parser.add_argument('--original', required=True, help='original model: checkpoint or experiment folder')
    parser.add_argument('--reference', required=True, help='model retrained without the forgotten type')
    parser.add_argument('--method', action='append', type=parse_method, default=[], metavar='NAME=PATH',
                        help='unlearned model (repeatable); PATH as above, stages joined with +')
    parser.add_argument('--forget', required=True, help='forgotten degradation name, e.g. haze')
    parser.add_argument('--out', required=True, help='output folder, e.g. results/unlearn_haze')
    parser.add_argument('--y-channel', action='store_true', help='PSNR/SSIM on the Y channel (default RGB)')
    parser.add_argument('--crop-border', type=int, default=0, help='pixels cropped at each border for metrics')
    args = parser.parse_args(argv)
    try:
        check_name(args.forget, '--forget')
        names = [name for name, _ in args.method]
        if len(set(names)) != len(names) or {'original', 'reference'} & set(names):
            raise ValueError(f'--method: names must be unique and not original/reference; got {names}')
        specs = [resolve_model('original', 'original', args.original, '--original'),
                 resolve_model('reference', 'reference', args.reference, '--reference'),
                 *[resolve_model(name, 'method', spec, f'--method {name}') for name, spec in args.method]]
        opt = load_options(args.opt)
        scores = evaluate_models(opt, tqdm(specs, desc='evaluating checkpoints', unit='model'), args.forget,
                                 y_channel=args.y_channel, crop_border=args.crop_border,
                                 where=args.opt)
    except (ValueError, FileNotFoundError, KeyError) as error:
        sys.exit(f'unlearn_report: {error}')
    report = build_report(scores, args.forget, 'Y' if args.y_channel else 'RGB')
    md_path = write_report(report, args.out, training_curves(specs))
    print(f'{report["headline_md"]}\nReport: {md_path}')


if __name__ == '__main__':
    main()
