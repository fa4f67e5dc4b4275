"""Data-loading benchmark: samples/s of LMDB vs folder vs synth sources, and the data share of a training iteration.

Builds the demo set (``--quick``: the tiny one) in a temporary folder, then times ``MixedDegradationDataset``
through a ``DataLoader`` (train mode: random 64-px crops and flips) for the same rain pairs read from PNG folders and
from LMDBs, and for noise synthesised on the fly from the clean photos. Finally it times one tiny-PromptIR training
iteration (forward, L1, backward, AdamW step) against fetching its batch, with and without workers.

Usage:
    python bench/data.py [--quick] [--workers 2] [--batch 8]
"""
import argparse
import tempfile
import time
from pathlib import Path

import torch
import yaml
from torch.utils.data import DataLoader

import basicsr_unlearn  # noqa: F401  (plugin first: torchvision alias, registration)
from basicsr_unlearn.data.demo_data import SPLITS, build_demo
from basicsr_unlearn.data.mixed_degradation_dataset import MixedDegradationDataset

ROOT = Path(__file__).resolve().parents[1]


def sources(root: Path) -> dict[str, dict]:
    """The three source kinds over the same demo photos."""
    return {
        'folder': {'degradation': 'rain', 'type': 'folder', 'dataroot_gt': str(root / 'train/rain/gt'),
                   'dataroot_lq': str(root / 'train/rain/lq')},
        'lmdb': {'degradation': 'rain', 'type': 'lmdb', 'dataroot_gt': str(root / 'lmdb/train_rain_gt.lmdb'),
                 'dataroot_lq': str(root / 'lmdb/train_rain_lq.lmdb')},
        'synth': {'degradation': 'noise25', 'type': 'synth', 'dataroot_gt': str(root / 'train/clean')},
    }


def dataset(source: dict, gt_size: int, repeat: int) -> MixedDegradationDataset:
    return MixedDegradationDataset({'phase': 'train', 'gt_size': gt_size, 'use_hflip': True, 'use_rot': True,
                                    'sources': [{**source, 'repeat': repeat}]})


def loader(ds: MixedDegradationDataset, batch: int, workers: int) -> DataLoader:
    return DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
                      multiprocessing_context='fork' if workers else None, persistent_workers=workers > 0)


def samples_per_second(dl: DataLoader, batches: int) -> float:
    it = iter(dl)
    next(it)  # warm-up: workers started, envs opened
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * dl.batch_size / (time.perf_counter() - start)


def tiny_promptir() -> torch.nn.Module:
    from basicsr.utils.registry import ARCH_REGISTRY

    opt = yaml.safe_load((ROOT / 'options/_base_/archs/promptir-tiny.yml').read_text())['network_g']
    return ARCH_REGISTRY.get(opt.pop('type'))(**opt)


def training_share(dl: DataLoader, iters: int) -> tuple[float, float]:
    """Seconds per iteration spent waiting for data and in the step (forward, backward, update)."""
    net = tiny_promptir()
    optim = torch.optim.AdamW(net.parameters(), lr=1e-4)
    it = iter(dl)
    next(it)
    wait = step = 0.0
    for _ in range(iters):
        t0 = time.perf_counter()
        batch = next(it)
        t1 = time.perf_counter()
        loss = torch.nn.functional.l1_loss(net(batch['lq']), batch['gt'])
        optim.zero_grad()
        loss.backward()
        optim.step()
        t2 = time.perf_counter()
        wait, step = wait + t1 - t0, step + t2 - t1
    return wait / iters, step / iters


def main() -> dict[str, float]:
    """Print the rates; return the headline ratios (bench/run_all.py collects them)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='tiny demo set, fewer batches (make bench)')
    parser.add_argument('--workers', type=int, default=2, help='DataLoader workers for the with-workers runs')
    parser.add_argument('--batch', type=int, default=8)
    args = parser.parse_args()
    size, batches, iters = ('tiny', 10, 4) if args.quick else ('demo', 40, 10)
    gt_size = 32 if args.quick else 64
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / 'demo'
        build_demo(root, size=size, lmdb=True)
        repeat = (max(batches, iters) + 2) * args.batch // len(SPLITS["train"]) + 1  # one epoch covers the timing
        loaders = {kind: loader(dataset(src, gt_size, repeat), args.batch, 0) for kind, src in sources(root).items()}
        rates = dict.fromkeys(loaders, 0.0)
        for _ in range(3):  # interleaved rounds, best of 3: the machine is shared
            for kind, dl in loaders.items():
                rates[kind] = max(rates[kind], samples_per_second(dl, batches))
        ratios = {f'data: {kind} samples/s / folder samples/s': rate / rates['folder'] for kind, rate in rates.items()
                  if kind != 'folder'}
        print(f'samples/s, {gt_size}-px train crops, batch {args.batch}, main process, best of 3 rounds:')
        for kind, rate in rates.items():
            print(f'  {kind:6s} {rate:8.1f}   x{rate / rates["folder"]:.2f} of folder')
        with_workers = samples_per_second(loader(dataset(sources(root)['lmdb'], gt_size, repeat), args.batch,
                                                 args.workers), batches)
        print(f'  lmdb with {args.workers} fork workers {with_workers:8.1f}   x{with_workers / rates["lmdb"]:.2f} '
              f'of the main process')
        for workers in (0, args.workers):
            ds = dataset(sources(root)['synth'], gt_size, repeat)
            wait, step = training_share(loader(ds, args.batch, workers), iters)
            print(f'tiny PromptIR iteration, {workers} workers: data wait {wait * 1e3:.1f} ms, step '
                  f'{step * 1e3:.1f} ms, data share {wait / (wait + step):.1%}')
            ratios[f'data: share of data wait in a training iteration, {workers} workers'] = wait / (wait + step)
    return ratios


if __name__ == '__main__':
    main()
