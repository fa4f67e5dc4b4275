"""Write the pair files of the PromptIR / AdaIR data tree, for ``type: meta`` sources and ``create_lmdb.py --meta``.

Usage::

    python tools/make_pair_lists.py --root data

Writes, where the LQ folder exists (lines ``<gt path> <lq path>``, relative to the source's two roots):

- ``data/Train/Derain/pairs.txt``: Rain100L train, ``gt/norain-N.png`` <- ``rainy/rain-N.png``
- ``data/Train/Dehaze/pairs.txt``: RESIDE OTS, ``original/<id>.<ext>`` <- ``synthetic/part*/<id>_<A>_<beta>.jpg``
- ``data/test/dehaze/pairs.txt``: SOTS outdoor, ``target/<id>.<ext>`` <- ``input/<id>_<A>_<beta>.jpg``

The equally named sets (Rain100L test, GoPro, LOL) need none (``type: folder``). A missing GT image is an error
naming the LQ file; each file is written atomically.
"""
import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from basicsr_unlearn.data.image_io import IMAGE_SUFFIXES
from basicsr_unlearn.fileio import write_text

# (pair file, GT folder, LQ folder, LQ name -> GT stem), relative to --root
LAYOUT: list[tuple[str, str, str, Callable[[str], str]]] = [
    ('Train/Derain/pairs.txt', 'Train/Derain/gt', 'Train/Derain/rainy', lambda stem: 'no' + stem),
    ('Train/Dehaze/pairs.txt', 'Train/Dehaze/original', 'Train/Dehaze/synthetic', lambda stem: stem.split('_')[0]),
    ('test/dehaze/pairs.txt', 'test/dehaze/target', 'test/dehaze/input', lambda stem: stem.split('_')[0]),
]


def pair_lines(gt_root: Path, lq_root: Path, gt_stem: Callable[[str], str]) -> list[str]:
    """``'<gt rel> <lq rel>'`` for every image under ``lq_root`` (recursively), GT found by stem in ``gt_root``."""
    gts = {p.stem: p.name for p in gt_root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    lines = []
    for lq in sorted(p for p in lq_root.rglob('*') if p.suffix.lower() in IMAGE_SUFFIXES):
        stem = gt_stem(lq.stem)
        if stem not in gts:
            raise FileNotFoundError(f'{lq}: no GT image named {stem}.* in {gt_root}')
        lines.append(f'{gts[stem]} {lq.relative_to(lq_root).as_posix()}')
    if not lines:
        raise FileNotFoundError(f'no images ({", ".join(IMAGE_SUFFIXES)}) under {lq_root}')
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--root', type=Path, default=Path('data'), help='the tree holding Train/ and test/')
    args = parser.parse_args(argv)
    written = 0
    for pair_file, gt, lq, rule in LAYOUT:
        if not (args.root / lq).is_dir():
            continue
        try:
            lines = pair_lines(args.root / gt, args.root / lq, rule)
        except FileNotFoundError as err:
            print(f'error: {err}', file=sys.stderr)
            return 1
        write_text(args.root / pair_file, '\n'.join(lines) + '\n')
        print(f'{args.root / pair_file}: {len(lines)} pairs')
        written += 1
    if not written:
        print(f'error: none of {", ".join(lq for _, _, lq, _ in LAYOUT)} exists under {args.root}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
