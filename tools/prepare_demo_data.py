"""Build the demo data set from scikit-image's bundled photos (layout: ``basicsr_unlearn/data/demo_data.py``).

Usage:
    python tools/prepare_demo_data.py --out datasets/demo [--size tiny|demo] [--lmdb] [--seed 0] [--overwrite] \
        [--rain heavy|light]
"""
import argparse

from tqdm import tqdm

import basicsr_unlearn  # noqa: F401  (plugin first: torchvision alias, registration)
from basicsr_unlearn.data.demo_data import RAIN_STYLES, SIZES, build_demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='datasets/demo', help='output folder (default: datasets/demo)')
    parser.add_argument('--size', choices=sorted(SIZES), default='demo', help='demo (default) or tiny (tests)')
    parser.add_argument('--lmdb', action='store_true', help='also write the train sources as LMDBs')
    parser.add_argument('--seed', type=int, default=0, help='synthesis seed')
    parser.add_argument('--rain', choices=sorted(RAIN_STYLES), default='heavy',
                        help='rain style of every rain pair: heavy (default, Rain100H-like) or light (Rain100L-like)')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing --out folder')
    args = parser.parse_args()
    with tqdm(total=4 + args.lmdb, desc='demo data', unit='step') as bar:
        manifest = build_demo(args.out, args.size, args.seed, args.lmdb, args.overwrite,
                              progress=lambda what: (bar.set_postfix_str(what), bar.update()), rain=args.rain)
    counts = ', '.join(f"{name} {entry['count']}" for name, entry in manifest['test'].items())
    tqdm.write(f'{args.out}: {len(manifest["photos"]["train"])} train photos; test sets: {counts}')


if __name__ == '__main__':
    main()
