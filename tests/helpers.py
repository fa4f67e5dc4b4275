"""Shared test helpers: run a launcher in a real subprocess, write tiny real-image pairs and tiny option files."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import yaml
from skimage import data as skdata

ROOT = Path(__file__).resolve().parents[1]


def load_tool(name: str, module_name: str):
    """Import ``tools/<name>.py`` as the module ``module_name`` (once per process)."""
    spec = importlib.util.spec_from_file_location(module_name, ROOT / 'tools' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(module_name, module)
    spec.loader.exec_module(module)
    return module
TINY_EDSR = {'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1, 'upscale': 1,
             'img_range': 1.0, 'rgb_mean': [0.5, 0.5, 0.5]}  # BasicSR's arch, scale 1, 3k parameters
CONSTANT_SCHEDULE = {'warmup_iter': -1, 'optim_g': {'type': 'Adam', 'lr': 1e-3},
                     'scheduler': {'type': 'MultiStepRestartLR', 'milestones': [1000], 'gamma': 1.0}}
LAUNCHER_LOADER = {'gt_size': 32, 'num_worker_per_gpu': 0, 'persistent_workers': False}
PYTHON = sys.executable
TORCHRUN = str(Path(PYTHON).with_name('torchrun'))


def tool_env(**extra: str) -> dict[str, str]:
    """Environment for a tool subprocess: one thread per process (2 shared cores), plus ``extra``."""
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', PYTHONWARNINGS='ignore')
    env.update(extra)
    return env


def run_tool(tool: str, args: list[str], cwd: str | os.PathLike, timeout: float = 300,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``python tools/<tool> <args>`` with working directory ``cwd``; returns the completed process (text)."""
    return subprocess.run([PYTHON, str(ROOT / 'tools' / tool), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env or tool_env())


def run_python(code: str, cwd: str | os.PathLike, timeout: float = 120,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``python -c code`` in a fresh interpreter (for process-global state such as a process group)."""
    return subprocess.run([PYTHON, '-c', code], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env or tool_env())


def write_noisy_pairs(folder: str | os.PathLike, count: int = 4, size: int = 32, sigma: float = 25,
                      seed: int = 0) -> tuple[str, str]:
    """Write ``count`` PNG pairs (GT crops of scikit-image photos, LQ = GT + Gaussian noise ``sigma``/255).

    Returns:
        ``(gt_dir, lq_dir)`` as strings; files ``000.png``, ``001.png``, ... in both.
    """
    rng = np.random.default_rng(seed)
    photos = [skdata.astronaut(), skdata.chelsea(), skdata.coffee(), skdata.rocket()]
    gt_dir, lq_dir = Path(folder) / 'gt', Path(folder) / 'lq'
    gt_dir.mkdir(parents=True, exist_ok=True)
    lq_dir.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        photo = photos[i % len(photos)]
        top = int(rng.integers(0, photo.shape[0] - 4 * size))
        left = int(rng.integers(0, photo.shape[1] - 4 * size))
        gt = cv2.resize(photo[top:top + 4 * size, left:left + 4 * size], (size, size), interpolation=cv2.INTER_AREA)
        lq = np.clip(gt + rng.normal(0, sigma, gt.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(gt_dir / f'{i:03d}.png'), gt[..., ::-1])
        cv2.imwrite(str(lq_dir / f'{i:03d}.png'), lq[..., ::-1])
    return str(gt_dir), str(lq_dir)


def tiny_train_options(data_root: str | os.PathLike, name: str = 'tiny', total_iter: int = 6, **overrides) -> dict:
    """Options of a tiny EDSR (BasicSR's arch, scale 1) trained with AllInOneModel on noisy pairs of ``data_root``.

    ``data_root`` must hold ``train/{gt,lq}`` and ``val/{gt,lq}`` (see :func:`write_noisy_pairs`).
    """
    root = Path(data_root)
    paired = {'type': 'PairedImageDataset', 'io_backend': {'type': 'disk'}}
    opt = {
        'name': name,
        'model_type': 'AllInOneModel',
        'scale': 1,
        'num_gpu': 'auto',
        'manual_seed': 0,
        'datasets': {
            'train': {**paired, 'name': 'noise_train', 'dataroot_gt': str(root / 'train/gt'),
                      'dataroot_lq': str(root / 'train/lq'), 'gt_size': 16, 'use_hflip': True, 'use_rot': False,
                      'num_worker_per_gpu': 0, 'batch_size_per_gpu': 2, 'dataset_enlarge_ratio': 1},
            'val': {**paired, 'name': 'noise25', 'dataroot_gt': str(root / 'val/gt'),
                    'dataroot_lq': str(root / 'val/lq')},
        },
        'network_g': dict(TINY_EDSR),
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {'optim_g': {'type': 'AdamW', 'lr': 1e-3, 'weight_decay': 0.0, 'betas': [0.9, 0.99]},
                  'scheduler': {'type': 'CosineAnnealingRestartLR', 'periods': [total_iter], 'eta_min': 1e-5},
                  'total_iter': total_iter, 'warmup_iter': -1},
        'val': {'val_freq': 3, 'save_img': False, 'suffix': None},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': 2, 'use_tb_logger': True},
        'dist_params': {'backend': 'gloo', 'port': 29500},
    }
    for key, value in overrides.items():
        opt[key] = value
    return opt


def write_yaml(path: str | os.PathLike, opt: dict) -> str:
    """Write ``opt`` as YAML to ``path``; returns the path as a string."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(opt, sort_keys=False))
    return str(path)


def tiny_workspace(tmp: Path, total_iter: int = 6, name: str = 'tiny', **overrides) -> str:
    """Write train/val pairs under ``tmp/data`` and ``tmp/tiny.yml``; returns the option file path."""
    write_noisy_pairs(tmp / 'data' / 'train', count=4, size=32, seed=1)
    write_noisy_pairs(tmp / 'data' / 'val', count=3, size=28, seed=2)
    return write_yaml(tmp / f'{name}.yml', tiny_train_options(tmp / 'data', name, total_iter, **overrides))


def descendants(pid: int) -> list[int]:
    """Pids of every descendant of ``pid`` (torchrun starts its workers in their own process groups)."""
    children: dict[int, list[int]] = {}
    for entry in Path('/proc').iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / 'stat').read_text().rsplit(')', 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def free_port() -> int:
    """A TCP port that is free right now (for ``torchrun --master_port`` / ``MASTER_PORT``)."""
    import socket

    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]
