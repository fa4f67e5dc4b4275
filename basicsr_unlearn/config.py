"""Option loading for BasicSR launchers: YAML ``_base_`` inheritance and ``--cfg-options`` via mmengine ``Config``.

:func:`parse_options` replaces ``basicsr.utils.options.parse_options`` (installed by ``compat.apply()``).
It resolves ``_base_``, ``--cfg-options a.b=v`` and BasicSR's ``--force_yml a:b=v``, validates the result, writes the
fully merged options to a temporary YAML and hands that to BasicSR's own ``parse_options`` (distributed init, seeds,
``--debug``, ``num_gpu: auto``, experiment paths). BasicSR's ``copy_opt_file`` then saves the merged YAML, with the
command line as a header comment, into the experiment folder, so a run can be repeated from its folder alone.

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
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable
from os import path as osp
from typing import Any

import yaml
from mmengine.config import Config, DictAction

from basicsr_unlearn import experiment_lock
from basicsr_unlearn.fileio import write_text

SIGNED_NUMBER = re.compile(r'[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?')  # -0.5, 1e-4, +3: strings to BasicSR

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


def _expected(integer: bool, minimum: float | None, above: float | None, below: float | None,
              maximum: float | None) -> str:
    bounds = [f'>= {minimum}' if minimum is not None else '', f'> {above}' if above is not None else '',
              f'< {below}' if below is not None else '', f'<= {maximum}' if maximum is not None else '']
    return ' '.join(['an integer' if integer else 'a number', *(b for b in bounds if b)])


def check_number(value: object, where: str, *, minimum: float | None = None, above: float | None = None,
                 below: float | None = None, maximum: float | None = None, integer: bool = False,
                 optional: bool = False, hint: str = '') -> float | int | None:
    """Return ``value`` if it is a number (an integer, or an integral float, with ``integer``) within the bounds.

    Raises ``ValueError`` naming the option path ``where`` and the expected form; a numeric string (YAML reads
    ``2e-4`` as one) gets the ``!!float`` hint.

    Example:
        >>> check_number('2e-4', 'train.optim_g.lr', above=0)
        Traceback (most recent call last):
        ValueError: train.optim_g.lr: expected a number > 0, got '2e-4' (a string: write !!float 2e-4)
    """
    if value is None and optional:
        return None
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if number and integer and isinstance(value, float) and value.is_integer():
        value = int(value)
    in_range = number and (not integer or isinstance(value, int)) and value == value and all((
        minimum is None or value >= minimum, above is None or value > above,
        below is None or value < below, maximum is None or value <= maximum))
    if in_range:
        return value
    extra = f' {hint}' if hint else ''
    note = ''
    if isinstance(value, str):
        try:
            float(value)
            note = f' (a string: write !!float {value})'
        except ValueError:
            pass
    raise ValueError(f'{where}: expected {_expected(integer, minimum, above, below, maximum)}{extra}, got '
                     f'{value!r}{note}')


def check_list(value: object, where: str, **bounds: float | bool) -> list:
    """Return ``value`` if it is a non-empty list of numbers, each passing :func:`check_number` with ``bounds``."""
    if not isinstance(value, (list, tuple)) or not value:
        kind = 'integers' if bounds.get('integer') else 'numbers'
        raise ValueError(f'{where}: expected a non-empty list of {kind}, got {value!r}')
    return [check_number(v, f'{where}[{i}]', **bounds) for i, v in enumerate(value)]


def check_choice(value: object, choices: tuple, where: str) -> object:
    """Return ``value`` if it is one of ``choices``; else ``ValueError`` naming ``where`` and the choices."""
    if any(value is c or (type(value) is type(c) and value == c) for c in choices):
        return value
    shown = ', '.join('~' if c is None else str(c).lower() if isinstance(c, bool) else str(c) for c in choices)
    raise ValueError(f'{where}: unknown {value!r}; expected one of {shown}')


def check_yaml(path: str, where: str = '-opt') -> None:
    """Parse ``path`` and its ``_base_`` files; a syntax error or a missing base names the file and the line."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'{where}: option file not found: {path}')
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as err:
        mark, start = getattr(err, 'problem_mark', None), getattr(err, 'context_mark', None)
        at = f':{mark.line + 1}:{mark.column + 1}' if mark is not None else ''
        problem = getattr(err, 'problem', None) or str(err).splitlines()[0]
        if getattr(err, 'context', None) and start is not None:
            problem += f' ({err.context} from line {start.line + 1})'
        raise ValueError(f'{path}{at}: YAML syntax error: {problem}') from err
    if not isinstance(data, dict):
        raise ValueError(f'{path}: expected a mapping of options at the top level, got {type(data).__name__}')
    bases = data.get('_base_') or []
    for base in [bases] if isinstance(bases, str) else bases:
        check_yaml(osp.join(osp.dirname(path), base), f'{path}: _base_')


def load_options(path: str, cfg_options: dict[str, Any] | None = None) -> dict:
    """Read an option YAML with ``_base_`` inheritance resolved and ``cfg_options`` (``{'a.b': v}``) merged in.

    Args:
        path: option YAML file.
        cfg_options: dotted keys to override or add, as produced by ``--cfg-options``.

    Returns:
        The merged options as plain nested dicts (base keys first, in file order).
    """
    check_yaml(path)
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg.to_dict()


def apply_force_yml(opt: dict, entries: list[str]) -> dict:
    """Set BasicSR's ``--force_yml key:subkey=value`` overrides in ``opt`` (in place), values read as BasicSR reads
    them (``~``/``none``, ``true``/``false``, numbers, ``!!float``, ``[lists]``, else strings) and signed or
    exponent numbers (``-0.5``, ``1e-4``, which BasicSR leaves as strings) as numbers; returns ``opt``.

    Applied before :func:`validate_options`, so an override is checked like the YAML it overrides.

    Example:
        >>> apply_force_yml({'train': {'ema_decay': 0}}, ['train:ema_decay=0.999'])
        {'train': {'ema_decay': 0.999}}
        >>> apply_force_yml({'train': {'stop': {}}}, ['train:stop:margin=-0.5', 'train:stop:lr=1e-4'])
        {'train': {'stop': {'margin': -0.5, 'lr': 0.0001}}}
        >>> apply_force_yml({'data': {'sources': [{'repeat': 1}]}}, ['data:sources:0:repeat=3'])
        {'data': {'sources': [{'repeat': 3}]}}
        >>> apply_force_yml({'train': {}}, ['trian:ema_decay=0.999'])
        Traceback (most recent call last):
        ValueError: --force_yml trian:ema_decay=0.999: no option block 'trian'; expected one of train
    """
    for entry in entries:
        keys, equals, value = entry.partition('=')
        path = [key.strip() for key in keys.split(':')]
        if not equals or not all(path):
            raise ValueError(f'--force_yml: expected key:subkey=value (e.g. train:ema_decay=0.999), got {entry!r}')
        block = opt
        for depth, key in enumerate(path):
            last = depth == len(path) - 1
            if isinstance(block, list):  # an index into a list block, e.g. datasets:train:sources:0:repeat=2
                if not (key.isdigit() and int(key) < len(block)):
                    raise ValueError(f"--force_yml {entry}: '{':'.join(path[:depth])}' is a list of {len(block)}; "
                                     f"expected an index 0..{len(block) - 1}, got '{key}'")
                key = int(key)
            elif not last and not isinstance(block.get(key), (dict, list)):
                where = ':'.join(path[:depth + 1])
                known = ', '.join(k for k, v in block.items() if isinstance(v, dict))
                raise ValueError(f"--force_yml {entry}: no option block '{where}'; expected one of {known}")
            if last:
                block[key] = _force_value(value.strip())
            else:
                block = block[key]
    return opt


def _force_value(text: str) -> Any:
    """A ``--force_yml`` value as BasicSR reads it, except that a signed or exponent number is a number."""
    from basicsr.utils.options import _postprocess_yml_value

    value = _postprocess_yml_value(text)
    if isinstance(value, str) and SIGNED_NUMBER.fullmatch(value):
        return float(value) if any(c in value for c in '.eE') else int(value)
    return value


def dump_options(opt: dict) -> str:
    """Readable YAML of merged options, in key order, loadable by BasicSR's ``ordered_yaml`` loader."""
    return yaml.safe_dump(opt, sort_keys=False, default_flow_style=None, allow_unicode=True)


def _registered(registry: Any) -> str:
    return ', '.join(sorted(registry._obj_map))


def validate_options(opt: dict, where: str = 'options', is_train: bool = True) -> None:
    """Check every option the plugin or BasicSR reads, before any folder is created (the launchers call it).

    In order: ``model_type`` and ``network_*.type`` against the registries (listing the registered names); BasicSR's
    own blocks (top level, ``train``, ``val``, ``logger``, ``path`` with its checkpoints: see
    :mod:`basicsr_unlearn.basicsr_options`); every ``datasets`` entry (type, loader keys, files, and the dataset
    class's ``check_options(block, where)``); the model class's ``check_options(opt)``. Errors name the option path
    and the expected form, prefixed by ``where`` (the option file) when BasicSR's wording lacks it.

    Args:
        opt: merged options (:func:`load_options`), before BasicSR's ``parse_options``.
        where: the option file, for messages.
        is_train: training (``tools/train.py``) or test options.
    """
    from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, MODEL_REGISTRY

    from basicsr_unlearn.basicsr_options import check_basicsr_options, check_dataset

    model_type = opt.get('model_type')
    if model_type not in MODEL_REGISTRY._obj_map:
        raise ValueError(f"{where}: model_type: unknown '{model_type}'; expected one of {_registered(MODEL_REGISTRY)}")
    for key, block in opt.items():
        if key.startswith('network_'):
            found = block.get('type') if isinstance(block, dict) else block
            if found not in ARCH_REGISTRY._obj_map:
                raise ValueError(f"{where}: {key}.type: unknown '{found}'; "
                                 f'expected one of {_registered(ARCH_REGISTRY)}')
    model_cls = MODEL_REGISTRY.get(model_type)
    check_basicsr_options(opt, model_cls, is_train)
    for phase, block in opt['datasets'].items():
        found = block.get('type') if isinstance(block, dict) else block
        if found not in DATASET_REGISTRY._obj_map:
            raise ValueError(f"{where}: datasets.{phase}.type: unknown '{found}'; "
                             f'expected one of {_registered(DATASET_REGISTRY)}')
        check_dataset(block, phase, is_train)
        check = getattr(DATASET_REGISTRY.get(block['type']), 'check_options', None)
        if check is not None:  # plugin datasets check their sources, names and files
            check({**block, 'phase': phase.split('_')[0]}, f'datasets.{phase}')
    check = getattr(model_cls, 'check_options', None)
    if check is not None:  # plugin models check their own option blocks (see AllInOneModel.check_options)
        check({**opt, 'is_train': is_train})


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
    parser.add_argument('--force_yml', nargs='+', default=None,
                        help='override options BasicSR style, e.g. train:ema_decay=0.999 (validated like the YAML)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default=None,
                        help='override or add options, e.g. train.total_iter=100 network_g.dim=16')
    return parser


def parse_options(root_path: str, is_train: bool = True) -> tuple[dict, argparse.Namespace]:
    """Drop-in replacement of BasicSR's ``parse_options`` (same return values) reading merged options.

    ``args.opt`` of the result points at a temporary copy of the merged YAML (same file name), which BasicSR's
    ``copy_opt_file`` saves into the experiment folder; ``args.source_opt`` is the YAML given on the command line.
    Training options then get :func:`keep_original` (the network the run started from, kept for resumes).
    Rank 0 then holds the experiment (or results) folder's lock (:mod:`basicsr_unlearn.experiment_lock`) for the
    rest of the process: a second run of the same ``name`` is refused while this one lives.
    """
    from basicsr.utils.options import parse_options as basicsr_parse_options

    args = build_parser().parse_args(rewrite_local_rank(sys.argv[1:]))
    opt = load_options(args.opt, args.cfg_options)
    apply_force_yml(opt, args.force_yml or [])  # here, not in BasicSR: validated, and saved with the merged YAML
    validate_options(opt, where=args.opt, is_train=is_train)
    merged_dir = tempfile.mkdtemp(prefix='basicsr_unlearn_opt_')
    atexit.register(shutil.rmtree, merged_dir, True)
    merged_path = osp.join(merged_dir, osp.basename(args.opt))
    with open(merged_path, 'w') as f:
        f.write(dump_options(opt))

    argv = [sys.argv[0], '-opt', merged_path, '--launcher', args.launcher, '--local_rank', str(args.local_rank)]
    argv += ['--auto_resume'] * args.auto_resume + ['--debug'] * args.debug
    saved_argv = sys.argv
    sys.argv = argv
    try:
        opt, basicsr_args = basicsr_parse_options(root_path, is_train=is_train)
    finally:
        sys.argv = saved_argv
    if is_train:
        keep_original(opt)
    if opt['rank'] == 0:  # before BasicSR creates or archives the folder (make_exp_dirs, rank 0)
        experiment_lock.acquire(opt['path']['experiments_root' if is_train else 'results_root'])
    basicsr_args.source_opt = args.opt
    basicsr_args.cfg_options = args.cfg_options
    return opt, basicsr_args


def keep_original(opt: dict) -> None:
    """Record ``path.pretrain_network_g`` / ``param_key_g`` as ``path.original_pretrain_network_g`` /
    ``original_param_key_g`` before BasicSR's ``check_resume`` points ``pretrain_network_g`` at
    ``models/net_g_<iter>.pth`` (and ``params_ema`` at ``params``) on resume. Plugin-owned: a YAML may not set them;
    the names are ones BasicSR neither rewrites on resume nor takes for folders (``make_exp_dirs``).

    Example:
        >>> opt = {'path': {'pretrain_network_g': 'orig.pth', 'param_key_g': 'params_ema'}}
        >>> keep_original(opt)
        >>> opt['path']['pretrain_network_g'] = 'models/net_g_3.pth'  # what check_resume does
        >>> original_checkpoint(opt)
        ('orig.pth', 'params_ema')
    """
    path = opt['path']
    path.update(original_pretrain_network_g=path.get('pretrain_network_g'),
                original_param_key_g=path.get('param_key_g', 'params'))


def original_checkpoint(opt: dict) -> tuple[str | None, str | None]:
    """``(checkpoint, param_key)`` of the network a training run started from, the same on resume: those kept by
    :func:`keep_original`, else (options built in-process) ``path.pretrain_network_g`` / ``param_key_g``."""
    path = opt['path']
    if 'original_pretrain_network_g' in path:
        return path['original_pretrain_network_g'], path['original_param_key_g']
    return path.get('pretrain_network_g'), path.get('param_key_g', 'params')


def save_options(opt_file: str, folder: str) -> str:
    """Copy the merged option YAML ``opt_file`` into ``folder`` with the command line as a header; returns the path.

    Used by ``tools/test.py`` (BasicSR's ``copy_opt_file`` does the same for training runs).
    """
    target = osp.join(folder, osp.basename(opt_file))
    with open(opt_file) as f:
        body = f.read()
    write_text(target, f'# GENERATE TIME: {time.asctime()}\n# CMD:\n# {" ".join(sys.argv)}\n\n{body}')
    return target


__all__ = ['apply_force_yml', 'build_parser', 'check_choice', 'check_keys', 'check_list', 'check_number', 'check_yaml',
           'dump_options', 'inprocess_options', 'keep_original', 'load_options', 'original_checkpoint', 'parse_options',
           'rewrite_local_rank', 'save_options', 'validate_options']
