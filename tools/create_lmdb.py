"""Image folders (an lq/gt pair or one folder) or a synthesis spec -> LMDB(s) in BasicSR's format.

Usage:
    # paired folders (e.g. Rain100L) -> rain_gt.lmdb + rain_lq.lmdb, labelled 'rain'
    python tools/create_lmdb.py --gt Rain100L/target --lq Rain100L/input --degradation rain \\
        --out-gt datasets/rain_gt.lmdb --out-lq datasets/rain_lq.lmdb --verify
    # pairs of different names (SOTS: input/0001_0.8_0.2.jpg -> target/0001.png), listed in a pair file
    python tools/create_lmdb.py --gt SOTS/outdoor/target --lq SOTS/outdoor/input --meta sots_pairs.txt \\
        --degradation haze --out-gt datasets/sots_gt.lmdb --out-lq datasets/sots_lq.lmdb
    # one folder of clean images (e.g. the denoising GT shared by the noise15/25/50 synth sources)
    python tools/create_lmdb.py --gt BSD400 --out-gt datasets/bsd400.lmdb
    # synthesis spec: clean folder + degradation -> fixed pairs (seeded), e.g. a frozen noise25 test set
    python tools/create_lmdb.py --gt BSD68 --synth noise25 --seed 0 --out-gt bsd68_gt.lmdb --out-lq bsd68_n25_lq.lmdb

Keys are sanitised file names (``0025_0.8_0.04.png`` -> ``0025_0_8_0_04``); ``meta_info.txt`` lines read
``<key>.png (h,w,c) <compress_level>`` and, with a degradation, ``meta_labels.txt`` lines ``<key> <name> <id>``.
Each LMDB is written to a temporary sibling and renamed at the end: an interrupted run (Ctrl-C, SIGTERM) leaves
nothing at the target; the hidden temporaries a SIGKILLed run cannot remove (``.X.lmdb.tmp<pid>``) are removed by the
next run that targets the same path, once their process is dead. BasicSR's ``PairedImageDataset``
(``io_backend: {type: lmdb}``) reads the result.
"""
import argparse
import signal
import sys

import numpy as np
from tqdm import tqdm

import basicsr_unlearn  # noqa: F401  (plugin first: torchvision alias, registration)
from basicsr_unlearn.data.degradation_names import check_name
from basicsr_unlearn.data.degradations import synthesize
from basicsr_unlearn.data.image_io import list_images, meta_pairs, paired_images, read_image
from basicsr_unlearn.data.lmdb_backend import verify_lmdb, write_lmdbs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--gt', required=True, help='folder of GT (clean) images')
    parser.add_argument('--lq', help='folder of LQ images paired with --gt by file name (or by --meta)')
    parser.add_argument('--meta', help='pair file, lines "<gt path> <lq path>" relative to --gt/--lq (names differ, '
                                       'e.g. Rain100L, SOTS); keys are then the LQ names')
    parser.add_argument('--synth', help='synthesise LQ from --gt with this degradation (noise15/25/50, rain, haze)')
    parser.add_argument('--seed', type=int, default=0, help='synthesis seed (image i uses (seed, i))')
    parser.add_argument('--degradation', help='label written to meta_labels.txt (defaults to --synth)')
    parser.add_argument('--out-gt', required=True, help='output GT LMDB folder (name ends in .lmdb)')
    parser.add_argument('--out-lq', help='output LQ LMDB folder (with --lq or --synth)')
    parser.add_argument('--map-size', type=int, default=1 << 28,
                        help='initial LMDB map size in bytes (default 256 MiB; doubled automatically when full)')
    parser.add_argument('--compress-level', type=int, default=0, choices=range(10),
                        help='PNG level: 0 (default) decodes ~2x faster than BasicSR\'s 1, ~1.7x the disk')
    parser.add_argument('--overwrite', action='store_true', help='replace existing output LMDBs')
    parser.add_argument('--verify', action='store_true', help='re-read and decode every key after writing')
    args = parser.parse_args(argv)
    if args.meta and not args.lq:
        parser.error('--meta needs --lq')
    if args.lq and args.synth:
        parser.error('--lq and --synth are exclusive: LQ images are either read or synthesised')
    if bool(args.lq or args.synth) != bool(args.out_lq):
        parser.error('--out-lq is required with --lq or --synth, and only then')
    if args.synth:
        check_name(args.synth, '--synth')
    args.degradation = args.degradation or args.synth
    if args.degradation:
        check_name(args.degradation, '--degradation')
    return args


def items(args: argparse.Namespace) -> tuple[list, int]:
    """The ``(key, {role: image})`` generator for :func:`write_lmdbs` and the number of items."""
    if args.meta:
        pairs = meta_pairs(args.meta, args.gt, args.lq, '--meta')
        return ((lq, {'gt': read_image(gt), 'lq': read_image(lq)}) for gt, lq in pairs), len(pairs)
    if args.lq:
        pairs = paired_images(args.gt, args.lq, '--gt/--lq')
        return ((gt, {'gt': read_image(gt), 'lq': read_image(lq)}) for gt, lq in pairs), len(pairs)
    files = list_images(args.gt, '--gt')
    if args.synth:
        def synth(index: int, path: str) -> dict[str, np.ndarray]:
            gt = read_image(path)
            return {'gt': gt, 'lq': synthesize(args.synth, gt, np.random.default_rng([args.seed, index]))}

        return ((p.name, synth(i, p)) for i, p in enumerate(files)), len(files)
    return ((p.name, {'gt': read_image(p)}) for p in files), len(files)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: the temporary LMDBs are removed
    targets = {'gt': args.out_gt, **({'lq': args.out_lq} if args.out_lq else {})}
    gen, total = items(args)
    written = write_lmdbs(targets, tqdm(gen, total=total, desc='lmdb', unit='img'), de_name=args.degradation,
                          map_size=args.map_size, compress_level=args.compress_level, overwrite=args.overwrite)
    if args.verify:
        for role, path in written.items():
            count = sum(1 for _ in tqdm(verify_lmdb(path), total=total, desc=f'verify {role}', unit='key'))
            tqdm.write(f'{path}: {count} keys verified')
    tqdm.write(f"wrote {total} images to {', '.join(str(p) for p in written.values())}")


if __name__ == '__main__':
    try:
        main()
    except (FileNotFoundError, FileExistsError, ValueError, KeyError) as err:
        sys.exit(f'create_lmdb: error: {err}')
