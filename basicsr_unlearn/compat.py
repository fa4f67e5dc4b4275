"""Run BasicSR 1.4.2 on today's torch, on CPU and GPU, one process or many (see notes, compat table §9).

:func:`apply` is idempotent and patches module globals that BasicSR looks up at call time (never site-packages):

- ``basicsr.utils.dist_util._init_dist_pytorch``: backend from ``BASICSR_DIST_BACKEND``, else ``nccl`` with CUDA
  and ``gloo`` without; ``torch.cuda.set_device(LOCAL_RANK)`` only for NCCL; timeout from
  ``BASICSR_DIST_TIMEOUT`` (seconds). BasicSR computes ``rank % cuda.device_count()`` (ZeroDivisionError on CPU).
- ``basicsr.train.load_resume_state``: device-aware ``map_location``, ``weights_only=True``, auto-resume from
  ``opt['path']['training_states']`` (BasicSR maps to CUDA unconditionally and scans a CWD-relative folder), falling
  back to the previous ``.state`` when the newest (or its network checkpoint) is unreadable.
- ``BaseModel.load_network``: :func:`basicsr_unlearn.checkpoint.load_network` (``weights_only=True``, finite
  weights, errors naming the file and the ``path.pretrain_network_*`` option, key/shape report).
- ``basicsr.train.parse_options`` / ``basicsr.test.parse_options``: :func:`basicsr_unlearn.config.parse_options`
  (``_base_``, ``--cfg-options``, fail-fast validation, merged options saved).
- ``sys.argv``: ``--local-rank=N`` rewritten to ``--local_rank=N``.
- Linux: the ``fork`` start method (``init_dist`` would set ``spawn``: workers re-import torch+basicsr per epoch).

DDP on CPU without ``device_ids`` lives in ``AllInOneModel.model_to_device``. Launchers call
:func:`destroy_process_group` at the end (BasicSR never does).
"""
import datetime
import gc
import logging
import os
import sys
from os import path as osp

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from basicsr_unlearn import checkpoint
from basicsr_unlearn.config import parse_options, rewrite_local_rank


def resolve_backend() -> str:
    """Distributed backend: env ``BASICSR_DIST_BACKEND``, else ``'nccl'`` if CUDA is available, else ``'gloo'``."""
    return os.environ.get('BASICSR_DIST_BACKEND') or ('nccl' if torch.cuda.is_available() else 'gloo')


def init_dist_pytorch(backend: str | None = None, **kwargs) -> None:
    """Replacement of ``basicsr.utils.dist_util._init_dist_pytorch`` for ``torchrun`` environments.

    Reads ``LOCAL_RANK`` (default 0), ``BASICSR_DIST_BACKEND`` and ``BASICSR_DIST_TIMEOUT``; ``RANK``,
    ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` are read by ``init_process_group`` itself (``env://``). With
    NCCL the process uses GPU ``LOCAL_RANK`` (``torch.cuda.set_device``) and binds the process group to it
    (``device_id``), so collectives and barriers never guess a device; BasicSR's ``RANK % device_count`` picks the
    wrong GPU on every node but the first.

    Args:
        backend: ignored when ``BASICSR_DIST_BACKEND`` is set; BasicSR always passes ``'nccl'``, which falls back
            to ``gloo`` without CUDA.
        kwargs: forwarded to ``torch.distributed.init_process_group``.
    """
    chosen = os.environ.get('BASICSR_DIST_BACKEND')
    if chosen is None:
        chosen = backend if backend and (backend != 'nccl' or torch.cuda.is_available()) else resolve_backend()
    if chosen == 'nccl':
        if not torch.cuda.is_available():
            raise RuntimeError('BASICSR_DIST_BACKEND=nccl: NCCL needs CUDA and none is available; unset it (gloo '
                               'is chosen on CPU)')
        local_rank = int(os.environ.get('LOCAL_RANK', 0))
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f'LOCAL_RANK={local_rank}: only {torch.cuda.device_count()} CUDA device(s) visible '
                               f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); start at most "
                               'that many processes per node (torchrun --nproc_per_node)')
        torch.cuda.set_device(local_rank)
        kwargs.setdefault('device_id', torch.device('cuda', local_rank))
    if 'BASICSR_DIST_TIMEOUT' in os.environ and 'timeout' not in kwargs:
        kwargs['timeout'] = datetime.timedelta(seconds=float(os.environ['BASICSR_DIST_TIMEOUT']))
    dist.init_process_group(backend=chosen, **kwargs)


def load_resume_state(opt: dict) -> dict | None:
    """Replacement of ``basicsr.train.load_resume_state``: returns the resume state (or None) on the right device.

    With ``opt['auto_resume']`` the newest ``<iter>.state`` in ``opt['path']['training_states']`` whose file and
    network checkpoints (``models/net_<x>_<iter>.pth``) are whole is used, falling back to the previous one with a
    warning (an error when states exist but none is readable); else ``opt['path']['resume_state']``. Loaded with
    ``weights_only=True``; ``check_resume`` rewrites the network paths.
    """
    from basicsr.utils import check_resume

    if opt.get('num_gpu', 0) != 0 and torch.cuda.is_available():
        map_location = f'cuda:{torch.cuda.current_device()}'
    else:
        map_location = 'cpu'
    if not opt.get('auto_resume'):
        path = opt['path'].get('resume_state')
        if not path:
            return None
        state = checkpoint.read_checkpoint(path, 'path.resume_state', map_location)
        check_resume(opt, state['iter'])
        return state
    ignored = opt['path'].get('ignore_resume_networks') or []
    networks = [k.removeprefix('network_') for k in opt if k.startswith('network_') and k not in ignored]
    skipped = []
    for path in checkpoint.state_files(opt['path']['training_states']):
        try:
            state = checkpoint.read_checkpoint(path, '--auto_resume', map_location)
            for net in networks:
                net_file = osp.join(opt['path']['models'], f"net_{net}_{state['iter']}.pth")
                checkpoint.check_whole(net_file, '--auto_resume')
        except (FileNotFoundError, ValueError) as err:
            logging.getLogger('basicsr').warning(f'{err}; falling back to the previous state')
            skipped.append(str(err))
            continue
        opt['path']['resume_state'] = path
        check_resume(opt, state['iter'])
        return state
    if skipped:  # never start afresh (and archive the folder) when states exist but none is readable
        raise ValueError(f'--auto_resume: no readable training state in {opt["path"]["training_states"]}: '
                         + ' | '.join(skipped))
    return None


def apply() -> None:
    """Install every fix (idempotent; call before ``train_pipeline`` / ``test_pipeline``)."""
    import basicsr.test
    import basicsr.train
    from basicsr.models.base_model import BaseModel
    from basicsr.utils import dist_util

    dist_util._init_dist_pytorch = init_dist_pytorch
    BaseModel.load_network = checkpoint.load_network
    basicsr.train.load_resume_state = load_resume_state
    basicsr.train.parse_options = parse_options
    basicsr.test.parse_options = parse_options
    sys.argv[:] = rewrite_local_rank(sys.argv)
    if sys.platform.startswith('linux') and mp.get_start_method(allow_none=True) is None:
        mp.set_start_method('fork')


def destroy_process_group() -> None:
    """Destroy the default process group if one exists (end of a launcher).

    Unreachable objects are collected first: a DDP module caught in a reference cycle (a model and its hooks)
    would otherwise be freed after its group is gone, and its destructor aborts the process at exit (measured: 3
    of 6 runs of a 2-rank gloo test under torch 2.14 on CPU; ``terminate called without an active exception``,
    exit -6). Drop your own references to DDP-wrapped models before calling this. After a failed launch the
    exception's traceback still holds the model, so such a run may still end with -6 instead of exit code 1.
    """
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()
