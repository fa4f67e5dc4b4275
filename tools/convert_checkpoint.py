"""Convert an official PromptIR / AdaIR Lightning ``.ckpt`` or Restormer ``.pth`` to a BasicSR ``{'params': ...}`` file.

Usage::

    python tools/convert_checkpoint.py --arch PromptIR model.ckpt experiments/pretrained_models/promptir_official.pth
    python tools/convert_checkpoint.py --arch AdaIR adair5d.ckpt experiments/pretrained_models/adair5d_official.pth
    python tools/convert_checkpoint.py in.ckpt out.pth --opt options/test/X.yml [--cfg-options network_g.dim=8]

``--arch`` builds the published default of the registered arch; ``--opt`` takes ``network_g`` from an option YAML
(``_base_`` and ``--cfg-options`` resolved). The output loads with ``path.strict_load_g: true``; what was dropped
(layers the reference never calls) or reshaped is printed. A file holding pickled objects beyond tensors and plain
types is refused unless each needed global is named with ``--allow-global module.Name``. The write is atomic.
Converted AdaIR weights reproduce the official outputs with ``network_g.fre_mask: reference``.
"""
import argparse
import sys

# isort: off
import basicsr_unlearn  # noqa: F401  (torchvision alias + registration)
# isort: on
import torch
from basicsr.archs import build_network
from mmengine.config import DictAction

from basicsr_unlearn.checkpoint_conversion import ALLOW_FLAG, CheckpointConversionError, convert_loaded, read_official
from basicsr_unlearn.config import load_options
from basicsr_unlearn.fileio import atomic_path


def network_options(args: argparse.Namespace) -> dict:
    """The ``network_g`` block from ``--opt`` (with ``--cfg-options``) or the published ``--arch`` defaults."""
    if args.opt:
        opt = load_options(args.opt, args.cfg_options)
        if not isinstance(opt.get('network_g'), dict):
            raise CheckpointConversionError(f'--opt {args.opt}: no network_g block')
        return opt['network_g']
    return {'type': args.arch}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help='official checkpoint (.ckpt Lightning file or .pth)')
    parser.add_argument('dst', help='output BasicSR file ({"params": state_dict})')
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument('--arch', choices=['PromptIR', 'AdaIR', 'Restormer'], help='published default arch')
    target.add_argument('--opt', help='option YAML whose network_g is the target arch')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='overrides for --opt, e.g. network_g.dim=8')
    parser.add_argument(ALLOW_FLAG, dest='allow_globals', action='append', default=[], metavar='MODULE.NAME',
                        help='allow-list one pickled global the file needs (only for files you trust)')
    args = parser.parse_args(argv)
    try:
        net_opt = network_options(args)
        net = build_network(dict(net_opt))
        params, report = convert_loaded(read_official(args.src, args.allow_globals), net, args.src, net_opt['type'])
    except (CheckpointConversionError, FileNotFoundError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    with atomic_path(args.dst) as tmp:
        torch.save({'params': params}, tmp)
    print(f'{args.src} -> {args.dst}: {len(params)} tensors for {net_opt["type"]}')
    for line in report.lines():
        print(f'  {line}')
    if net_opt['type'] == 'AdaIR' and net_opt.get('fre_mask', 'soft') != 'reference':
        print('  note: set network_g.fre_mask: reference to reproduce the official outputs')
    return 0


if __name__ == '__main__':
    sys.exit(main())
