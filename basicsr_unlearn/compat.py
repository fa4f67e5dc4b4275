"""Run BasicSR 1.4.2 on today's torch, on CPU and GPU, one process or many (see notes, compat table §9).

:func:`apply` is idempotent and patches module globals that BasicSR looks up at call time (never site-packages):

- ``basicsr.utils.dist_util._init_dist_pytorch``: backend from ``BASICSR_DIST_BACKEND``, else ``nccl`` with CUDA
  and ``gloo`` without; ``torch.cuda.set_device(LOCAL_RANK)`` only for NCCL; timeout from
  ``BASICSR_DIST_TIMEOUT`` (seconds). BasicSR computes ``rank % cuda.device_count()`` (ZeroDivisionError on CPU).
- ``basicsr.train.load_resume_state``: device-aware ``map_location``, ``weights_only=True``, auto-resume from
  ``opt['path']['training_states']`` (BasicSR maps to CUDA unconditionally and scans a CWD-relative folder).
- ``basicsr.train.parse_options`` / ``basicsr.test.parse_options``: :func:`basicsr_unlearn.config.parse_options`
  (``_base_``, ``--cfg-options``, fail-fast validation, merged options saved).
- ``sys.argv``: ``--local-rank=N`` rewritten to ``--local_rank=N``.
- Linux: the ``fork`` start method (``init_dist`` would set ``spawn``: workers re-import torch+basicsr per epoch).

DDP on CPU without ``device_ids`` lives in ``AllInOneModel.model_to_device``. Launchers call
:func:`destroy_process_group` at the end (BasicSR never does).
"""
import datetime
import os
import sys
from os import path as osp

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from basicsr_unlearn.config import parse_options, rewrite_local_rank


def resolve_backend() -> str:
    """Distributed backend: env ``BASICSR_DIST_BACKEND``, else ``'nccl'`` if CUDA is available, else ``'gloo'``."""
    return os.environ.get('BASICSR_DIST_BACKEND') or ('nccl' if torch.cuda.is_available() else 'gloo')


def init_dist_pytorch(backend: str | None = None, **kwargs) -> None:
    """Replacement of ``basicsr.utils.dist_util._init_dist_pytorch`` for ``torchrun`` environments.

    Args:
        backend: ignored when ``BASICSR_DIST_BACKEND`` is set; BasicSR always passes ``'nccl'``, which falls back
            to ``gloo`` without CUDA.
        kwargs: forwarded to ``torch.distributed.init_process_group``.
    """
    chosen = os.environ.get('BASICSR_DIST_BACKEND')
    if chosen is None:
        chosen = backend if backend and (backend != 'nccl' or torch.cuda.is_available()) else resolve_backend()
    if chosen == 'nccl':
        torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', 0)))
    if 'BASICSR_DIST_TIMEOUT' in os.environ and 'timeout' not in kwargs:
        kwargs['timeout'] = datetime.timedelta(seconds=float(os.environ['BASICSR_DIST_TIMEOUT']))
    dist.init_process_group(backend=chosen, **kwargs)


def load_resume_state(opt: dict) -> dict | None:
    """Replacement of ``basicsr.train.load_resume_state``: returns the resume state (or None) on the right device.

    With ``opt['auto_resume']`` the newest ``<iter>.state`` in ``opt['path']['training_states']`` is used, else
    ``opt['path']['resume_state']``. Loaded with ``weights_only=True``; ``check_resume`` rewrites the network paths.
    """
    from basicsr.utils import check_resume

    path = None
    if opt.get('auto_resume'):
        folder = opt['path']['training_states']
        if osp.isdir(folder):
            iters = [int(f[:-len('.state')]) for f in os.listdir(folder)
                     if f.endswith('.state') and f[:-len('.state')].isdigit()]
            if iters:
                path = osp.join(folder, f'{max(iters)}.state')
                opt['path']['resume_state'] = path
    elif opt['path'].get('resume_state'):
        path = opt['path']['resume_state']
    if path is None:
        return None
    if opt.get('num_gpu', 0) != 0 and torch.cuda.is_available():
        map_location = f'cuda:{torch.cuda.current_device()}'
    else:
        map_location = 'cpu'
    state = torch.load(path, map_location=map_location, weights_only=True)
    check_resume(opt, state['iter'])
    return state


def apply() -> None:
    """Install every fix (idempotent; call before ``train_pipeline`` / ``test_pipeline``)."""
    import basicsr.test
    import basicsr.train
    from basicsr.utils import dist_util

    dist_util._init_dist_pytorch = init_dist_pytorch
    basicsr.train.load_resume_state = load_resume_state
    basicsr.train.parse_options = parse_options
    basicsr.test.parse_options = parse_options
    sys.argv[:] = rewrite_local_rank(sys.argv)
    if sys.platform.startswith('linux') and mp.get_start_method(allow_none=True) is None:
        mp.set_start_method('fork')


def destroy_process_group() -> None:
    """Destroy the default process group if one exists (end of a launcher)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
