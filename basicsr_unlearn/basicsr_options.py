"""Checks of the option blocks BasicSR itself reads: top level, ``datasets`` (loader keys, files), ``train``
(``optim_*``, ``scheduler``, iterations), ``val``, ``logger`` and ``path`` (keys, checkpoints).

BasicSR reads these deep inside a run, after it has created (or archived) the experiment folder, and fails with a
raw ``KeyError`` / ``TypeError`` or a mid-run crash (e.g. ``CosineAnnealingRestartLR`` past its last period).
:func:`check_basicsr_options` runs in ``config.validate_options`` before any folder exists; every error names the
option path and the expected form.

Example:
    >>> check_scheduler({'type': 'CosineAnnealingRestartLR', 'periods': [100], 'eta_min': 0}, 300)
    Traceback (most recent call last):
    ValueError: train.scheduler.periods: [100] ends at iteration 100, before train.total_iter 300 (BasicSR's \
CosineAnnealingRestartLR fails past its last period); expected sum(periods) >= total_iter - 1
"""
import inspect
import os
import re
from os import path as osp

from basicsr_unlearn.checkpoint import check_finite, load_checkpoint, read_checkpoint
from basicsr_unlearn.config import check_choice, check_keys, check_list, check_number

TOP_LEVEL_KEYS = ('name', 'model_type', 'scale', 'num_gpu', 'manual_seed', 'find_unused_parameters', 'datasets',
                  'path', 'train', 'val', 'logger', 'dist_params', 'asvp', 'distill')
SCHEDULER_KEYS = {
    'MultiStepLR': ('type', 'milestones', 'gamma', 'restarts', 'restart_weights'),
    'MultiStepRestartLR': ('type', 'milestones', 'gamma', 'restarts', 'restart_weights'),
    'CosineAnnealingRestartLR': ('type', 'periods', 'restart_weights', 'eta_min'),
}
PATH_KEYS = ('resume_state', 'ignore_resume_networks', 'experiments_root', 'models', 'training_states', 'log',
             'visualization', 'results_root')
PATH_PATTERN = re.compile(r'(pretrain_network|param_key|strict_load)_\w+')
IO_BACKENDS = ('disk', 'lmdb', 'memcached')
PREFETCH_MODES = (None, 'cpu', 'cuda')
LOGGER_KEYS = ('print_freq', 'save_checkpoint_freq', 'use_tb_logger', 'wandb')


def check_top_level(opt: dict) -> None:
    """Known top-level keys (``network_*`` blocks included), ``name``, ``num_gpu``, ``scale``, ``manual_seed``."""
    allowed = list(TOP_LEVEL_KEYS) + [k for k in opt if k.startswith('network_')]
    check_keys(opt, allowed, 'options')
    name = opt.get('name')
    if not isinstance(name, str) or not name or os.sep in name or name in ('.', '..'):
        raise ValueError(f'name: expected a non-empty folder name without {os.sep!r}, got {name!r}')
    if opt.get('num_gpu') != 'auto':
        check_number(opt.get('num_gpu'), 'num_gpu', minimum=0, integer=True, hint="or 'auto'")
    check_number(opt.get('scale', 1), 'scale', minimum=1, integer=True)
    check_number(opt.get('manual_seed'), 'manual_seed', minimum=0, integer=True, optional=True)
    check_choice(opt.get('find_unused_parameters', False), (True, False), 'find_unused_parameters')


def _check_files(block: dict, where: str) -> None:
    for key, value in block.items():
        if (key.startswith('dataroot_') or key == 'meta_info_file') and value is not None:
            if not osp.exists(osp.expanduser(str(value))):
                raise FileNotFoundError(f'{where}.{key}: not found: {value}')


def check_dataset(block: object, phase: str, is_train: bool) -> None:
    """Loader keys BasicSR reads, ``io_backend``, and the files of a BasicSR dataset block (``dataroot_*``)."""
    from basicsr_unlearn.data.lmdb_backend import check_lmdb

    where = f'datasets.{phase}'
    if not isinstance(block, dict):
        raise ValueError(f'{where}: expected a mapping with name, type, ...; got {block!r}')
    if not isinstance(block.get('name'), str):
        raise ValueError(f'{where}.name: expected a string (the name used in logs and results), got '
                         f'{block.get("name")!r}')
    if phase == 'train':
        check_number(block.get('batch_size_per_gpu'), f'{where}.batch_size_per_gpu', minimum=1, integer=True)
        check_number(block.get('num_worker_per_gpu'), f'{where}.num_worker_per_gpu', minimum=0, integer=True)
        check_number(block.get('dataset_enlarge_ratio', 1), f'{where}.dataset_enlarge_ratio', above=0)
        check_choice(block.get('prefetch_mode'), PREFETCH_MODES, f'{where}.prefetch_mode')
        for key in ('pin_memory', 'persistent_workers', 'use_hflip', 'use_rot'):
            check_choice(block.get(key, False), (True, False), f'{where}.{key}')
        if block.get('persistent_workers') and not block.get('num_worker_per_gpu'):
            raise ValueError(f'{where}.persistent_workers: true needs num_worker_per_gpu >= 1 (torch refuses it '
                             'without workers)')
    if 'gt_size' in block:
        check_number(block['gt_size'], f'{where}.gt_size', minimum=1, integer=True)
    backend = block.get('io_backend')
    if backend is not None:
        if not isinstance(backend, dict):
            raise ValueError(f'{where}.io_backend: expected a mapping such as {{type: disk}}, got {backend!r}')
        check_choice(backend.get('type'), IO_BACKENDS, f'{where}.io_backend.type')
    _check_files(block, where)
    if (backend or {}).get('type') == 'lmdb':
        for key in ('dataroot_gt', 'dataroot_lq'):
            if block.get(key) is not None:
                if not str(block[key]).endswith('.lmdb'):
                    raise ValueError(f"{where}.{key}: io_backend lmdb needs an '.lmdb' folder, got {block[key]}")
                check_lmdb(osp.expanduser(str(block[key])), f'{where}.{key}')


def check_phases(datasets: object, is_train: bool) -> None:
    """``datasets`` is a mapping; training needs ``train`` and accepts only ``train`` and ``val*`` phases."""
    if not isinstance(datasets, dict) or not datasets:
        raise ValueError('datasets: expected a mapping of phases (train, val_*, test_*) to dataset blocks')
    if is_train:
        if 'train' not in datasets:
            raise ValueError('datasets.train: required for training')
        for phase in datasets:
            if phase != 'train' and phase.split('_')[0] != 'val':
                raise ValueError(f"datasets.{phase}: unknown phase '{phase.split('_')[0]}' for training; expected "
                                 'train, val or val_<suffix>')


def check_optimizer(block: object, where: str, get_optimizer: object) -> None:
    """``type`` known to the model's ``get_optimizer`` and a positive ``lr``; the optimizer is built on a dummy."""
    import torch

    if not isinstance(block, dict) or not isinstance(block.get('type'), str):
        raise ValueError(f'{where}: expected a mapping with type and lr, e.g. {{type: Adam, lr: !!float 2e-4}}, got '
                         f'{block!r}')
    check_number(block.get('lr'), f'{where}.lr', above=0)
    kwargs = {k: v for k, v in block.items() if k not in ('type', 'lr')}
    try:  # the model's own builder: unknown types and bad arguments (betas, weight_decay, ...) fail here
        get_optimizer(None, block['type'], [torch.nn.Parameter(torch.zeros(1))], block['lr'], **kwargs)
    except AttributeError:  # an override that needs the model instance: checked when the model is built
        pass
    except (ValueError, TypeError, NotImplementedError, KeyError) as err:
        message = str(err)
        raise ValueError(message if message.startswith(f'{where}') else f'{where}: {message}') from err


def check_scheduler(block: object, total_iter: int) -> None:
    """Known ``type``, its keys and their types; a cosine schedule must cover ``total_iter``."""
    where = 'train.scheduler'
    if not isinstance(block, dict):
        raise ValueError(f'{where}: required, a mapping with type ({", ".join(SCHEDULER_KEYS)}), got {block!r}')
    kind = check_choice(block.get('type'), tuple(SCHEDULER_KEYS), f'{where}.type')
    check_keys(block, SCHEDULER_KEYS[kind], where)
    if kind == 'CosineAnnealingRestartLR':
        periods = check_list(block.get('periods'), f'{where}.periods', minimum=1, integer=True)
        weights = check_list(block.get('restart_weights', [1]), f'{where}.restart_weights', minimum=0)
        if len(weights) != len(periods):
            raise ValueError(f'{where}.restart_weights: {len(weights)} weights for {len(periods)} periods; expected '
                             'one weight per period')
        check_number(block.get('eta_min', 0), f'{where}.eta_min', minimum=0)
        if sum(periods) < total_iter - 1:
            raise ValueError(f'{where}.periods: {periods} ends at iteration {sum(periods)}, before train.total_iter '
                             f"{total_iter} (BasicSR's CosineAnnealingRestartLR fails past its last period); expected "
                             'sum(periods) >= total_iter - 1')
    else:
        check_list(block.get('milestones'), f'{where}.milestones', minimum=0, integer=True)
        check_number(block.get('gamma', 0.1), f'{where}.gamma', above=0)
        restarts = check_list(block.get('restarts', [0]), f'{where}.restarts', minimum=0, integer=True)
        weights = check_list(block.get('restart_weights', [1]), f'{where}.restart_weights', minimum=0)
        if len(weights) != len(restarts):
            raise ValueError(f'{where}.restart_weights: {len(weights)} weights for {len(restarts)} restarts; '
                             'expected one weight per restart')


def check_train(opt: dict, model_cls: type) -> None:
    """``train``: iterations, EMA decay, every ``optim_*`` block and the scheduler."""
    train = opt.get('train')
    if not isinstance(train, dict):
        raise ValueError('train: required for training, a mapping with total_iter, optim_g and scheduler')
    total = check_number(train.get('total_iter'), 'train.total_iter', minimum=0, integer=True)
    check_number(train.get('warmup_iter', -1), 'train.warmup_iter', minimum=-1, integer=True)
    if train.get('ema_decay') is not None:
        check_number(train['ema_decay'], 'train.ema_decay', minimum=0, below=1)
    if 'optim_g' not in train:
        raise ValueError('train.optim_g: required, e.g. {type: AdamW, lr: !!float 2e-4}')
    for key in train:
        if key.startswith('optim_'):
            check_optimizer(train[key], f'train.{key}', model_cls.get_optimizer)
    check_scheduler(train.get('scheduler'), total)


def check_val(opt: dict, is_train: bool) -> None:
    """``val``: what BasicSR's training loop reads (``val_freq``, ``save_img``) and registered metric types."""
    from basicsr.utils.registry import METRIC_REGISTRY

    val = opt.get('val')
    has_val_sets = any(phase.split('_')[0] == 'val' for phase in opt.get('datasets') or {})
    if val is None:
        if is_train and has_val_sets:
            raise ValueError('val: required with val datasets (BasicSR never validates without it), e.g. '
                             'val: {val_freq: 500, save_img: false}')
        return
    if not isinstance(val, dict):
        raise ValueError(f'val: expected a mapping (val_freq, save_img, ...), got {val!r}')
    if is_train and has_val_sets:
        check_number(val.get('val_freq'), 'val.val_freq', above=0)
    check_choice(val.get('save_img', False), (True, False), 'val.save_img')
    check_choice(val.get('pbar', False), (True, False), 'val.pbar')
    if val.get('suffix') is not None and not isinstance(val['suffix'], str):
        raise ValueError(f"val.suffix: expected a string or ~, got {val['suffix']!r}")
    metrics = val.get('metrics') or {}
    if not isinstance(metrics, dict):
        raise ValueError(f'val.metrics: expected a mapping of names to {{type: ...}} blocks, got {metrics!r}')
    for name, block in metrics.items():
        where = f'val.metrics.{name}'
        if not isinstance(block, dict) or block.get('type') not in METRIC_REGISTRY._obj_map:
            found = block.get('type') if isinstance(block, dict) else block
            raise ValueError(f"{where}.type: unknown {found!r}; expected one of "
                             f"{', '.join(sorted(METRIC_REGISTRY._obj_map))}")
        if 'better' in block:
            check_choice(block['better'], ('higher', 'lower'), f'{where}.better')
        if 'crop_border' in block:
            check_number(block['crop_border'], f'{where}.crop_border', minimum=0, integer=True)


def check_logger(opt: dict) -> None:
    """``logger``: ``print_freq``, ``save_checkpoint_freq``, ``use_tb_logger`` (all read unconditionally), wandb."""
    logger = opt.get('logger')
    if not isinstance(logger, dict):
        raise ValueError('logger: required for training, e.g. {print_freq: 100, save_checkpoint_freq: 5000, '
                         'use_tb_logger: true}')
    check_keys(logger, LOGGER_KEYS, 'logger')
    check_number(logger.get('print_freq'), 'logger.print_freq', above=0)
    check_number(logger.get('save_checkpoint_freq'), 'logger.save_checkpoint_freq', above=0)
    check_choice(logger.get('use_tb_logger'), (True, False), 'logger.use_tb_logger')
    wandb = logger.get('wandb') or {}
    check_keys(wandb, ('project', 'resume_id'), 'logger.wandb')
    if wandb.get('project') is not None and not logger['use_tb_logger']:
        raise ValueError('logger.wandb.project: needs logger.use_tb_logger: true (BasicSR syncs wandb from '
                         'tensorboard)')


def _arch_kwargs(block: dict, where: str) -> None:
    """Every ``network_*`` key is an argument of the arch's constructor (else BasicSR's raw ``TypeError``)."""
    from basicsr.utils.registry import ARCH_REGISTRY

    params = inspect.signature(ARCH_REGISTRY.get(block['type'])).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    check_keys({k: v for k, v in block.items() if k != 'type'}, [k for k in params if k != 'self'], where)


def check_path(opt: dict, is_train: bool) -> None:
    """``path``: known keys; ``resume_state`` and every ``pretrain_network_*`` readable, finite, and fitting its
    ``network_*`` block (built on the CPU) with ``param_key_*`` / ``strict_load_*``; testing needs
    ``pretrain_network_g``."""
    from basicsr.utils.registry import ARCH_REGISTRY

    paths = opt.get('path') or {}
    if not isinstance(paths, dict):
        raise ValueError(f'path: expected a mapping (pretrain_network_g, param_key_g, ...), got {paths!r}')
    nets = [k.removeprefix('network_') for k in opt if k.startswith('network_')] or ['g']
    known = list(PATH_KEYS) + [f'{kind}_{n}' for n in nets for kind in ('pretrain_network', 'param_key', 'strict_load')]
    for key in paths:
        if key not in known and not PATH_PATTERN.fullmatch(key):
            check_keys({key: None}, known, 'path')
    for key, value in paths.items():
        if key.startswith('strict_load_'):
            check_choice(value, (True, False), f'path.{key}')
        elif key.startswith('param_key_') and value is not None and not isinstance(value, str):
            raise ValueError(f'path.{key}: expected a key of the checkpoint (params, params_ema) or ~, got {value!r}')
    if not is_train and not paths.get('pretrain_network_g'):
        raise ValueError('path.pretrain_network_g: required for testing (without it the test scores a randomly '
                         'initialised network)')
    if paths.get('resume_state') is not None:
        read_checkpoint(osp.expanduser(str(paths['resume_state'])), 'path.resume_state')
    for key, value in paths.items():
        if not key.startswith('pretrain_network_') or value is None:
            continue
        suffix, file = key.removeprefix('pretrain_network_'), osp.expanduser(str(value))
        param_key = paths.get(f'param_key_{suffix}', 'params')
        block = opt.get(f'network_{suffix}')
        if isinstance(block, dict):  # not build_network: it would set up BasicSR's logger before the run's log file
            net = ARCH_REGISTRY.get(block['type'])(**{k: v for k, v in block.items() if k != 'type'})
            load_checkpoint(net, file, param_key, paths.get(f'strict_load_{suffix}', True), f'path.{key}')
        else:  # e.g. path.pretrain_network_adapted: no arch block of its own
            state = read_checkpoint(file, f'path.{key}')
            tensors = state.get(param_key, state) if isinstance(state, dict) and param_key else state
            if isinstance(tensors, dict):
                check_finite({k: v for k, v in tensors.items() if hasattr(v, 'is_floating_point')},
                             f'path.{key}: {file}')


def check_basicsr_options(opt: dict, model_cls: type, is_train: bool) -> None:
    """Every check of this module, in option order: top level, datasets, network kwargs, train, val, logger, path."""
    check_top_level(opt)
    check_phases(opt.get('datasets'), is_train)
    for key, block in opt.items():
        if key.startswith('network_'):
            _arch_kwargs(block, key)
    if is_train:
        check_train(opt, model_cls)
        check_logger(opt)
    check_val(opt, is_train)
    check_path(opt, is_train)
