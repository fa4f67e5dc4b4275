"""Option loading for BasicSR launchers: YAML ``_base_`` inheritance and ``--cfg-options`` via mmengine ``Config``.

:func:`parse_options` replaces ``basicsr.utils.options.parse_options`` (installed by ``compat.apply()``).
It resolves ``_base_`` and ``--cfg-options a.b=v``, validates the registered names, writes the fully merged options
to a temporary YAML and hands that to BasicSR's own ``parse_options`` (distributed init, seeds, ``--debug``,
``num_gpu: auto``, experiment paths). BasicSR's ``copy_opt_file`` then saves the merged YAML, with the command line
as a header comment, into the experiment folder, so a run can be repeated from its folder alone.

Example:
    >>> opt = load_options('options/train/train_promptir-tiny_demo3_l1_2kit.yml', {'train.total_iter': 10})
    >>> check_keys({'forgett': 'haze'}, ['forget', 'retain'], 'unlearn')
    Traceback (most recent call last):
    ValueError: unlearn: unknown key 'forgett'; expected one of forget, retain (did you mean 'forget'?)
"""
import argparse
import atexit
import copy
import difflib
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable
from os import path as osp
from typing import Any

import yaml
from mmengine.config import Config, DictAction

from basicsr_unlearn.fileio import write_text


def check_keys(block: dict, allowed: Iterable[str], where: str) -> None:
    """Raise if ``block`` has a key outside ``allowed``, naming the option path ``where`` and a close match.

    Args:
        block: an option block, e.g. ``opt['unlearn']``.
        allowed: the keys the block may hold.
        where: option path of the block, used in the message (e.g. ``'unlearn'`` or ``'datasets.train'``).
    """
    allowed = list(allowed)
    for key in block:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ''
            raise ValueError(f"{where}: unknown key '{key}'; expected one of {', '.join(allowed)}{hint}")


def load_options(path: str, cfg_options: dict[str, Any] | None = None) -> dict:
    """Read an option YAML with ``_base_`` inheritance resolved and ``cfg_options`` (``{'a.b': v}``) merged in.

    Args:
        path: option YAML file.
        cfg_options: dotted keys to override or add, as produced by ``--cfg-options``.

    Returns:
        The merged options as plain nested dicts (base keys first, in file order).
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'-opt: option file not found: {path}')
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg.to_dict()


def dump_options(opt: dict) -> str:
    """Readable YAML of merged options, in key order, loadable by BasicSR's ``ordered_yaml`` loader."""
    return yaml.safe_dump(opt, sort_keys=False, default_flow_style=None, allow_unicode=True)


def _registered(registry: Any) -> str:
    return ', '.join(sorted(registry._obj_map))


def validate_options(opt: dict, where: str = 'options') -> None:
    """Fail fast on names BasicSR would only reject deep inside a run.

    Checks ``model_type`` and ``network_*.type`` against the registries (listing the registered names), runs the
    model class's ``check_options(opt)`` if it has one, checks the ``datasets.*.type`` names (and runs a dataset
    class's ``check_options(block, where)``), and that
    ``path.pretrain_network_*`` files exist.
    """
    from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, MODEL_REGISTRY

    model_type = opt.get('model_type')
    if model_type not in MODEL_REGISTRY._obj_map:
        raise ValueError(f"{where}: model_type: unknown '{model_type}'; expected one of {_registered(MODEL_REGISTRY)}")
    check = getattr(MODEL_REGISTRY.get(model_type), 'check_options', None)
    if check is not None:  # plugin models check their own option blocks (see AllInOneModel.check_options)
        check(opt)
    for key, block in opt.items():
        if key.startswith('network_') and isinstance(block, dict):
            if block.get('type') not in ARCH_REGISTRY._obj_map:
                raise ValueError(f"{where}: {key}.type: unknown '{block.get('type')}'; "
                                 f'expected one of {_registered(ARCH_REGISTRY)}')
    for phase, block in (opt.get('datasets') or {}).items():
        if block.get('type') not in DATASET_REGISTRY._obj_map:
            raise ValueError(f"{where}: datasets.{phase}.type: unknown '{block.get('type')}'; "
                             f'expected one of {_registered(DATASET_REGISTRY)}')
        check = getattr(DATASET_REGISTRY.get(block['type']), 'check_options', None)
        if check is not None:  # plugin datasets check their sources and names without reading files
            check(block, f'datasets.{phase}')
    for key, value in (opt.get('path') or {}).items():
        if key.startswith('pretrain_network_') and value is not None and not osp.isfile(osp.expanduser(value)):
            raise FileNotFoundError(f'{where}: path.{key}: file not found: {value}')


def inprocess_options(opt: dict, root: str, is_train: bool = True, **path: str | None) -> dict:
    """Options as BasicSR's ``parse_options`` leaves them (CPU, one process), for building a model in-process.

    Benchmarks, studies and tests that call ``build_model`` directly (no launcher) use this one function.

    Args:
        opt: merged options (e.g. from :func:`load_options`); not modified.
        root: folder for the run's ``models/``, ``training_states/``, ``log/`` and ``visualization/``.
        is_train: training (True) or test (False) options.
        path: extra or overriding ``path.*`` entries (e.g. ``pretrain_network_g=None``).

    Returns:
        A deep copy of ``opt`` with ``num_gpu: 0``, ``dist: False``, ``rank: 0``, ``world_size: 1``, ``is_train``
        and the experiment paths set.

    Example:
        >>> opt = inprocess_options({'name': 'x', 'path': {}}, '/tmp/x', is_train=False)
        >>> opt['dist'], opt['path']['models']
        (False, '/tmp/x/models')
    """
    opt = copy.deepcopy(opt)
    opt.update(num_gpu=0, dist=False, rank=0, world_size=1, is_train=is_train)
    opt.setdefault('path', {})
    opt['path'].setdefault('pretrain_network_g', None)
    opt['path'].setdefault('strict_load_g', True)
    opt['path'].setdefault('resume_state', None)
    opt['path'].update({key: osp.join(root, key) for key in ('models', 'training_states', 'log', 'visualization')})
    opt['path']['experiments_root'] = root
    opt['path'].update(path)
    return opt


def rewrite_local_rank(argv: list[str]) -> list[str]:
    """Return ``argv`` with ``--local-rank[=N]`` (passed by ``torch.distributed.launch`` >= 2.0) as ``--local_rank``."""
    return [a.replace('--local-rank', '--local_rank', 1) if a.startswith('--local-rank') else a for a in argv]


def build_parser() -> argparse.ArgumentParser:
    """BasicSR's launcher flags plus ``--cfg-options``."""
    parser = argparse.ArgumentParser(description='BasicSR launcher with _base_ inheritance and --cfg-options')
    parser.add_argument('-opt', type=str, required=True, help='Path to option YAML file.')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none', help='job launcher')
    parser.add_argument('--auto_resume', action='store_true')
    parser.add_argument('--debug', action='store_true')
    parser.add_argument('--local_rank', type=int, default=0)
    parser.add_argument('--force_yml', nargs='+', default=None, help='BasicSR style: train:ema_decay=0.999')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default=None,
                        help='override or add options, e.g. train.total_iter=100 network_g.dim=16')
    return parser


def parse_options(root_path: str, is_train: bool = True) -> tuple[dict, argparse.Namespace]:
    """Drop-in replacement of BasicSR's ``parse_options`` (same return values) reading merged options.

    ``args.opt`` of the result points at a temporary copy of the merged YAML (same file name), which BasicSR's
    ``copy_opt_file`` saves into the experiment folder; ``args.source_opt`` is the YAML given on the command line.
    """
    from basicsr.utils.options import parse_options as basicsr_parse_options

    args = build_parser().parse_args(rewrite_local_rank(sys.argv[1:]))
    opt = load_options(args.opt, args.cfg_options)
    validate_options(opt, where=args.opt)
    merged_dir = tempfile.mkdtemp(prefix='basicsr_unlearn_opt_')
    atexit.register(shutil.rmtree, merged_dir, True)
    merged_path = osp.join(merged_dir, osp.basename(args.opt))
    with open(merged_path, 'w') as f:
        f.write(dump_options(opt))

    argv = [sys.argv[0], '-opt', merged_path, '--launcher', args.launcher, '--local_rank', str(args.local_rank)]
    argv += ['--auto_resume'] * args.auto_resume + ['--debug'] * args.debug
    if args.force_yml:
        argv += ['--force_yml', *args.force_yml]
    saved_argv = sys.argv
    sys.argv = argv
    try:
        opt, basicsr_args = basicsr_parse_options(root_path, is_train=is_train)
    finally:
        sys.argv = saved_argv
    basicsr_args.source_opt = args.opt
    basicsr_args.cfg_options = args.cfg_options
    return opt, basicsr_args


def save_options(opt_file: str, folder: str) -> str:
    """Copy the merged option YAML ``opt_file`` into ``folder`` with the command line as a header; returns the path.

    Used by ``tools/test.py`` (BasicSR's ``copy_opt_file`` does the same for training runs).
    """
    target = osp.join(folder, osp.basename(opt_file))
    with open(opt_file) as f:
        body = f.read()
    write_text(target, f'# GENERATE TIME: {time.asctime()}\n# CMD:\n# {" ".join(sys.argv)}\n\n{body}')
    return target


__all__ = ['build_parser', 'check_keys', 'dump_options', 'inprocess_options', 'load_options', 'parse_options',
           'rewrite_local_rank', 'save_options', 'validate_options']
