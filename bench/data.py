"""Data-loading benchmark: samples/s of LMDB vs folder vs synth sources, and the data share of a training iteration.

Builds the demo set (``--quick``: the tiny one) in a temporary folder, then times ``MixedDegradationDataset``
through a ``DataLoader`` (train mode: random 64-px crops and flips) for the same rain pairs read from PNG folders, from
the demo's LMDBs (PNG level 0, the plugin's and ``tools/create_lmdb.py``'s default) and from LMDBs of PNG level 1
(BasicSR's default), and for
noise synthesised on the fly from the clean photos. Then the same folder-vs-LMDB comparison on a generated set of many
small pairs (``--scale-pairs``, 32-px PNG crops of scikit-image photos, LQ with noise; deleted afterwards), where
per-file open/stat/read costs show against decoding, plus the bare reads (bytes, no decoding). Finally it times one
tiny-PromptIR training iteration (forward, L1, backward, AdamW step) against fetching its batch, with and without
workers. The machine may be shared: each comparison runs interleaved rounds and reports medians.

Usage:
    python bench/data.py [--quick] [--workers 2] [--batch 8] [--scale-pairs 5000] [--scale-batches 150] [--rounds 5]
"""
import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader

import basicsr_unlearn  # noqa: F401  (plugin first: torchvision alias, registration)
from basicsr_unlearn.data.demo_data import SPLITS, build_demo, load_photo
from basicsr_unlearn.data.image_io import read_image, to_uint8, write_image
from basicsr_unlearn.data.lmdb_backend import LmdbReader, write_lmdbs
from basicsr_unlearn.data.mixed_degradation_dataset import MixedDegradationDataset

ROOT = Path(__file__).resolve().parents[1]


def paired(kind: str, gt: Path, lq: Path) -> dict:
    """A rain source of ``kind`` (``folder`` or ``lmdb``) over the pairs ``gt``/``lq``."""
    return {'degradation': 'rain', 'type': kind, 'dataroot_gt': str(gt), 'dataroot_lq': str(lq)}


def sources(root: Path) -> dict[str, dict]:
    """The source kinds over the same demo photos: folder, the demo's LMDB (PNG level 0), synth."""
    return {
        'folder': paired('folder', root / 'train/rain/gt', root / 'train/rain/lq'),
        'lmdb': paired('lmdb', root / 'lmdb/train_rain_gt.lmdb', root / 'lmdb/train_rain_lq.lmdb'),
        'synth': {'degradation': 'noise25', 'type': 'synth', 'dataroot_gt': str(root / 'train/clean')},
    }


def write_pair_lmdbs(items: list[tuple[str, dict[str, np.ndarray]]], out: Path, level: int) -> dict:
    """``items`` as ``out/{gt,lq}.lmdb`` with PNG compression ``level``; returns their lmdb source."""
    write_lmdbs({'gt': out / 'gt.lmdb', 'lq': out / 'lq.lmdb'}, items, compress_level=level)
    return paired('lmdb', out / 'gt.lmdb', out / 'lq.lmdb')


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


def median_rates(runs: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Median over ``rounds`` interleaved rounds of each rate (the machine is shared: load moves between rounds)."""
    rates: dict[str, list[float]] = {kind: [] for kind in runs}
    for _ in range(rounds):
        for kind, run in runs.items():
            rates[kind].append(run())
    return {kind: statistics.median(values) for kind, values in rates.items()}


def scale_pairs(root: Path, pairs: int, size: int = 32) -> list[tuple[str, dict[str, np.ndarray]]]:
    """Write ``pairs`` small PNG pairs to ``root/{gt,lq}`` (crops of the demo's train photos, LQ = GT + noise
    sigma 25, PNG level 3 as the demo folders) and return them as ``(key, {'gt', 'lq'})`` items."""
    rng = np.random.default_rng(0)
    photos = [load_photo(name)[0] for name in SPLITS['train'][:4]]
    items = []
    for i in range(pairs):
        photo = photos[i % len(photos)]
        top, left = (int(rng.integers(0, n - size + 1)) for n in photo.shape[:2])
        gt = to_uint8(photo[top:top + size, left:left + size])
        lq = to_uint8(gt / 255.0 + rng.normal(0.0, 25 / 255, gt.shape))
        key = f'{i:06d}'
        write_image(root / 'gt' / f'{key}.png', gt)
        write_image(root / 'lq' / f'{key}.png', lq)
        items.append((key, {'gt': gt, 'lq': lq}))
    return items


def report(title: str, rates: dict[str, float]) -> None:
    print(title)
    for kind, rate in rates.items():
        print(f'  {kind:14s} {rate:9.1f}   x{rate / rates["folder"]:.2f} of folder')


def at_scale(root: Path, pairs: int, batch: int, batches: int, rounds: int) -> dict[str, float]:
    """Folder vs LMDB (levels 0 and 1) on ``pairs`` generated 32-px pairs: samples/s of shuffled batches drawn from
    all of them, and bare shuffled reads/s of the GT bytes."""
    items = scale_pairs(root, pairs)
    srcs = {'folder': paired('folder', root / 'gt', root / 'lq'),
            'lmdb': write_pair_lmdbs(items, root / 'level0', 0),
            'lmdb level 1': write_pair_lmdbs(items, root / 'level1', 1)}
    loaders = {kind: loader(dataset(src, 32, 1), batch, 0) for kind, src in srcs.items()}
    rates = median_rates({kind: lambda dl=dl: samples_per_second(dl, batches) for kind, dl in loaders.items()}, rounds)
    order = np.random.default_rng(1).permutation(pairs)
    files = sorted((root / 'gt').iterdir())
    reader = LmdbReader(srcs['lmdb']['dataroot_gt'])

    def reads(read: Callable[[int], bytes]) -> float:
        start = time.perf_counter()
        for i in order:
            read(i)
        return pairs / (time.perf_counter() - start)

    raw = median_rates({'folder': lambda: reads(lambda i: files[i].read_bytes()),
                        'lmdb': lambda: reads(lambda i: reader.get(f'{i:06d}'))}, rounds)
    images = f'{2 * pairs} small images'
    report(f'{images} ({pairs} generated 32-px PNG pairs), samples/s of {batches} shuffled batches of {batch}, '
           f'median of {rounds} interleaved rounds:', rates)
    report(f'{images}, bare shuffled reads/s of the GT bytes (no decoding), median of {rounds} rounds:', raw)
    return {f'data: lmdb samples/s / folder samples/s, {images}': rates['lmdb'] / rates['folder'],
            f'data: lmdb level-1 samples/s / folder samples/s, {images}': rates['lmdb level 1'] / rates['folder'],
            f'data: lmdb reads/s / folder reads/s, {images}': raw['lmdb'] / raw['folder']}


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
    parser.add_argument('--scale-pairs', type=int, default=5000, help='generated pairs of the at-scale comparison')
    parser.add_argument('--scale-batches', type=int, default=150, help='timed batches per round at scale')
    parser.add_argument('--rounds', type=int, default=5, help='interleaved rounds per comparison (median)')
    args = parser.parse_args()
    size, batches, iters = ('tiny', 10, 4) if args.quick else ('demo', 20, 10)
    gt_size = 32 if args.quick else 64
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / 'demo'
        build_demo(root, size=size, lmdb=True)
        repeat = (max(batches, iters) + 2) * args.batch // len(SPLITS["train"]) + 1  # one epoch covers the timing
        srcs = sources(root)
        gts = sorted((root / 'train/rain/gt').iterdir())
        srcs['lmdb level 1'] = write_pair_lmdbs(
            [(p.stem, {'gt': read_image(p), 'lq': read_image(root / 'train/rain/lq' / p.name)}) for p in gts],
            root / 'lmdb_level1', 1)
        loaders = {kind: loader(dataset(src, gt_size, repeat), args.batch, 0) for kind, src in srcs.items()}
        rates = median_rates({kind: lambda dl=dl: samples_per_second(dl, batches) for kind, dl in loaders.items()},
                             args.rounds)
        ratios = {f'data: {kind} samples/s / folder samples/s': rate / rates['folder'] for kind, rate in rates.items()
                  if kind != 'folder'}
        report(f'samples/s, {gt_size}-px train crops of the {size} set, batch {args.batch}, main process, median of '
               f'{args.rounds} interleaved rounds:', rates)
        with_workers = samples_per_second(loader(dataset(srcs['lmdb'], gt_size, repeat), args.batch, args.workers),
                                          batches)
        print(f'  lmdb with {args.workers} fork workers {with_workers:8.1f}   x{with_workers / rates["lmdb"]:.2f} '
              f'of the main process')
        for workers in (0, args.workers):
            ds = dataset(srcs['synth'], gt_size, repeat)
            wait, step = training_share(loader(ds, args.batch, workers), iters)
            print(f'tiny PromptIR iteration, {workers} workers: data wait {wait * 1e3:.1f} ms, step '
                  f'{step * 1e3:.1f} ms, data share {wait / (wait + step):.1%}')
            ratios[f'data: share of data wait in a training iteration, {workers} workers'] = wait / (wait + step)
    with tempfile.TemporaryDirectory() as tmp:
        ratios.update(at_scale(Path(tmp), args.scale_pairs, args.batch, args.scale_batches, args.rounds))
    return ratios


if __name__ == '__main__':
    main()
