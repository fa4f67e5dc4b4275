"""Loading BasicSR checkpoints (``net_*.pth``, ``<iter>.state``) with errors that name the file and the option.

Every network load of the plugin goes through :func:`load_checkpoint`; ``compat.apply()`` routes BasicSR's own
``BaseModel.load_network`` there too (:func:`load_network`). It always uses ``torch.load(weights_only=True)``,
rejects non-finite weights, and turns torch's raw errors into messages naming the file, the option
(``path.pretrain_network_g``) and what to change: a truncated or foreign file, a missing ``param_key`` (listing the
keys the file holds and the ``path.param_key_*`` to set), or a wrong arch / size (a key and shape report).
:func:`state_files` lists the ``.state`` files ``--auto_resume`` tries, newest first (``compat.load_resume_state``
falls back to an older one when the newest is unreadable).

Example:
    >>> import torch
    >>> net = torch.nn.Linear(2, 3)
    >>> _ = torch.save({'params': torch.nn.Linear(2, 4).state_dict()}, '/tmp/ckpt_doctest.pth')
    >>> load_checkpoint(net, '/tmp/ckpt_doctest.pth')
    Traceback (most recent call last):
    ValueError: path.pretrain_network_g: /tmp/ckpt_doctest.pth does not fit Linear: 2 of 2 shared tensors differ in \
shape (weight: file (4, 2), net (3, 2); bias: file (4,), net (3,)); check network_g or the checkpoint
"""
import logging
import os
import pickle
import re
import zipfile
from os import path as osp

import torch
from torch import nn
from torch.nn.parallel import DataParallel, DistributedDataParallel

SHOWN = 3  # mismatching keys quoted per kind in an error


def _option_suffix(where: str) -> str | None:
    """``'g'`` for ``'path.pretrain_network_g'``; ``None`` for another ``where``."""
    prefix = 'path.pretrain_network_'
    return where[len(prefix):] if where.startswith(prefix) else None


def _examples(keys: list[str]) -> str:
    shown = ', '.join(keys[:SHOWN])
    return shown + (', ...' if len(keys) > SHOWN else '')


def read_checkpoint(path: str | os.PathLike, where: str, map_location: str | torch.device = 'cpu') -> object:
    """``torch.load(path, weights_only=True)`` with errors naming ``where`` (option path) and the file.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: truncated / not a torch file, or objects that ``weights_only=True`` refuses.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'{where}: file not found: {path}')
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r'Unsupported global: GLOBAL (\S+)', str(err))
        if found is None:  # a damaged or foreign pickle stream
            raise ValueError(f'{where}: {path}: cannot read the checkpoint ({osp.getsize(path)} bytes; not a torch '
                             f'file: {_first_line(err)})') from err
        raise ValueError(f'{where}: {path}: holds an object that torch.load(weights_only=True) refuses '
                         f'({found.group(1)}); checkpoints must hold plain types (tensors, numbers, str, lists, '
                         'dicts)') from err
    except Exception as err:  # torch raises RuntimeError, EOFError, OSError, KeyError, ... on a damaged file
        raise ValueError(f'{where}: {path}: cannot read the checkpoint ({osp.getsize(path)} bytes; truncated or not '
                         f'a torch file: {_first_line(err)})') from err


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return f'{type(err).__name__}: {text.splitlines()[0]}' if text else type(err).__name__


def _select(loaded: object, param_key: str | None, path: str | os.PathLike, where: str) -> dict[str, torch.Tensor]:
    """The state dict under ``param_key`` (BasicSR: ``params_ema`` falls back to ``params``); ``None`` = the root."""
    suffix = _option_suffix(where)
    key_option = f'path.param_key_{suffix}' if suffix else 'param_key'
    if not isinstance(loaded, dict):
        raise ValueError(f'{where}: {path}: expected a dict of tensors, got {type(loaded).__name__}')
    tensors_at_root = bool(loaded) and all(isinstance(v, torch.Tensor) for v in loaded.values())
    if param_key is not None:
        if param_key not in loaded and param_key == 'params_ema' and 'params' in loaded:
            logging.getLogger('basicsr').info('Loading: params_ema does not exist, use params.')
            param_key = 'params'
        if param_key not in loaded:
            if tensors_at_root:
                hint = (f'it is a bare state dict ({len(loaded)} tensors, e.g. {_examples(list(loaded))}): '
                        f'set {key_option}: ~')
            else:
                nested = [k for k, v in loaded.items() if isinstance(v, dict)]
                hint = (f"its top-level keys are {_examples([str(k) for k in loaded])}"
                        + (f"; set {key_option}: {nested[0]}" if nested else ''))
            raise ValueError(f"{where}: {path} has no '{param_key}' entry ({key_option}: {param_key}); {hint}")
        loaded = loaded[param_key]
        where_key = f"{path}['{param_key}']"
    else:
        where_key = str(path)
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        found = ', '.join(f'{k}: {type(v).__name__}' for k, v in list(loaded.items())[:SHOWN]) \
            if isinstance(loaded, dict) else type(loaded).__name__
        raise ValueError(f'{where}: {where_key} is not a state dict of tensors (found {found}); '
                         f'check {key_option}')
    return {k.removeprefix('module.'): v for k, v in loaded.items()}


def check_finite(state: dict[str, torch.Tensor], what: str) -> None:
    """Raise ``ValueError`` naming ``what`` and the tensors holding NaN/Inf (floating tensors only)."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(f'{what}: non-finite weights (NaN/Inf) in {len(bad)} of {len(state)} tensors '
                         f'({_examples(bad)}); the run that wrote it diverged')


def mismatch_report(net: nn.Module, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str], list[str]]:
    """``(missing, unexpected, shape)`` descriptions of ``state`` against ``net.state_dict()`` (sorted)."""
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shape = [f'{k}: file {tuple(state[k].shape)}, net {tuple(own[k].shape)}'
             for k in own if k in state and state[k].shape != own[k].shape]
    return missing, unexpected, shape


def load_checkpoint(net: nn.Module, path: str | os.PathLike, param_key: str | None = 'params', strict: bool = True,
                    where: str = 'path.pretrain_network_g') -> dict[str, torch.Tensor]:
    """Load the BasicSR checkpoint ``path`` into ``net`` (bare or DDP/DP-wrapped); returns the loaded state dict.

    Args:
        net: the network to fill.
        path: a ``.pth`` file, e.g. ``{'params': state_dict, 'params_ema': state_dict}``.
        param_key: entry to load (``params_ema`` falls back to ``params``, as in BasicSR); ``None`` = the file's root.
        strict: every key and shape must match (else missing/unexpected keys are logged and tensors of another shape
            skipped with a warning, as BasicSR's ``load_network`` does).
        where: the option naming the file, quoted in every error.

    Raises:
        FileNotFoundError, ValueError: naming ``where`` and ``path`` (see the module docstring).
    """
    bare = net.module if isinstance(net, (DataParallel, DistributedDataParallel)) else net
    state = _select(read_checkpoint(path, where), param_key, path, where)
    check_finite(state, f'{where}: {path}')
    missing, unexpected, shape = mismatch_report(bare, state)
    name = type(bare).__name__
    suffix = _option_suffix(where)
    net_option = f'network_{suffix}' if suffix else 'the network options'
    if strict and (missing or unexpected or shape):
        shared = len(set(state) & set(bare.state_dict()))
        parts = [f'{len(shape)} of {shared} shared tensors differ in shape ({"; ".join(shape[:SHOWN])}'
                 + ('; ...)' if len(shape) > SHOWN else ')')] if shape else []
        parts += [f'{len(missing)} net keys missing from the file ({_examples(missing)})'] if missing else []
        parts += [f'{len(unexpected)} file keys unknown to the net ({_examples(unexpected)})'] if unexpected else []
        raise ValueError(f'{where}: {path} does not fit {name}: {", ".join(parts)}; check {net_option} or the '
                         'checkpoint')
    logger = logging.getLogger('basicsr')
    for text, keys in (('missing from the file', missing), ('unknown to the net', unexpected),
                       ('skipped (other shape)', shape)):
        if keys:
            logger.warning(f'{where}: {path}: {len(keys)} keys {text}: {_examples(keys)}')
    own = bare.state_dict()
    state = {k: v for k, v in state.items() if k not in own or v.shape == own[k].shape}
    bare.load_state_dict(state, strict=strict)
    logger.info(f'Loading {name} model from {path}, with param key: [{param_key}].')
    return state


def load_network(model: object, net: nn.Module, load_path: str, strict: bool = True,
                 param_key: str | None = 'params') -> None:
    """Replacement of ``basicsr.models.base_model.BaseModel.load_network`` (installed by ``compat.apply()``).

    The option quoted in errors is the ``path.pretrain_network_*`` entry of ``model.opt`` holding ``load_path``.
    """
    paths = (getattr(model, 'opt', None) or {}).get('path') or {}
    keys = [k for k, v in paths.items() if k.startswith('pretrain_network_') and v == load_path]
    load_checkpoint(net, load_path, param_key, strict, f'path.{keys[0]}' if keys else 'load_network')


def state_files(folder: str | os.PathLike) -> list[str]:
    """``<iter>.state`` paths in ``folder``, newest (largest iteration) first; ``[]`` without the folder."""
    if not osp.isdir(folder):
        return []
    iters = sorted((int(f[:-len('.state')]) for f in os.listdir(folder)
                    if f.endswith('.state') and f[:-len('.state')].isdigit()), reverse=True)
    return [osp.join(folder, f'{it}.state') for it in iters]


def check_whole(path: str | os.PathLike, where: str) -> None:
    """Raise ``ValueError`` unless ``path`` is a complete torch zip archive (cheap: reads its directory only)."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'{where}: file not found: {path}')
    if not zipfile.is_zipfile(path):
        raise ValueError(f'{where}: {path}: not a complete torch file ({osp.getsize(path)} bytes; truncated?)')
