"""The demo data set: photos bundled with scikit-image, split by photo, degraded like the 3-task benchmarks.

Split by photo (:data:`SPLITS`: 10 train, 2 val, 4 test photos), so no scene is in two splits. Test holds the
natural photos a restoration paper would show (cameraman of Set12, astronaut, the cat Chelsea, coffee), val two more
natural photos (rocket, clock); train keeps the outdoor motorcycle scene, whose stereo disparity map gives the haze
depth (every other photo uses :func:`~basicsr_unlearn.data.degradations.pseudo_depth`), plus the remaining bundled
photos and textures. ``skimage.data.cat`` is Chelsea, so it is not used elsewhere. Grey photos are replicated to RGB.

Like the benchmarks, noise is synthesised on the fly from clean train images (BSD400 style: sources ``noise15``,
``noise25``, ``noise50`` of type ``synth``), while rain and haze are fixed pre-synthesised lq/gt pairs
(Rain100L / SOTS style). Val and test sets are fixed lq/gt folders, one per degradation: each photo is fitted like a
train photo, degraded whole (seeded per photo; haze sees the photo's full depth range, as in training), then cut
into crops. ``test/<type>_members`` holds the exact training pairs of each pre-synthesised type, so membership
inference can compare members with the held-out ``test/<type>`` non-members.

Layout under ``out`` (all PNG, paired files share a name)::

    manifest.json
    train/clean/<photo>.png                  clean train images (noise sources)
    train/{rain,haze}/{gt,lq}/<photo>_<v>.png    pre-synthesised train pairs
    val/{noise15,noise25,noise50,rain,haze}/{gt,lq}/<photo>_<k>.png
    test/{noise15,noise25,noise50,rain,haze}/{gt,lq}/<photo>_<k>.png
    test/{rain,haze}_members/{gt,lq}/<photo>_<v>.png
    lmdb/train_clean.lmdb, lmdb/train_{rain,haze}_{gt,lq}.lmdb     (only with ``lmdb=True``)

Sizes: ``demo`` resizes every photo to a 224-px short side (long side at most 320, so 64-px patches are plentiful),
pre-synthesises 3 rain and 3 haze versions of each train photo (30 pairs per type, ``<photo>_<v>.png``) and cuts 3
crops of 96 px per val/test photo: 6 val and 12 test images per degradation. ``tiny`` (tests) uses a 64-px short
side (long side at most 96), 3 versions per photo and one 32-px crop per val/test photo. (With 128-px photos and one
version each, the 3-task model memorised the 10 haze pairs and fell 8-10 dB below the 2-task reference on every val
set.)

Example (``build_demo('datasets/demo', size='tiny')`` writes the whole tiny set in a few seconds; tests use it):
    >>> {split: len(photos) for split, photos in SPLITS.items()}
    {'train': 10, 'val': 2, 'test': 4}
    >>> [crop.shape for crop in crops(np.zeros((64, 96, 3)), SIZES['tiny'].crop, 2)]
    [(32, 32, 3), (32, 32, 3)]
"""
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from skimage import data as skdata

from basicsr_unlearn.data.degradation_names import DEGRADATIONS
from basicsr_unlearn.data.degradations import depth_from_disparity, synthesize
from basicsr_unlearn.data.image_io import list_images, read_image, write_image
from basicsr_unlearn.data.lmdb_backend import write_lmdbs
from basicsr_unlearn.fileio import atomic_path, write_json

SPLITS = {
    'train': ('motorcycle', 'coins', 'moon', 'hubble_deep_field', 'brick', 'grass', 'gravel', 'page',
              'immunohistochemistry', 'retina'),
    'val': ('rocket', 'clock'),
    'test': ('camera', 'astronaut', 'chelsea', 'coffee'),
}
PRESYNTH = ('rain', 'haze')
RAIN_STYLES: dict[str, dict[str, list[float]]] = {
    'light': {},  # RAIN_DEFAULTS: Rain100L-like, density 0.002-0.006, intensity 0.6-0.9
    'heavy': {'density': [0.006, 0.018], 'intensity': [0.8, 1.0]},  # Rain100H-like, 3x the streaks
}
"""Rain synthesis parameters of the demo's rain pairs by style (overrides of ``RAIN_DEFAULTS``). Heavy rain is the
default: on light rain a tiny PromptIR under L1 stays at the identity (1000 iterations), so the original has no rain
skill to forget; on the heavy fixed pairs the 3-task original beats a model retrained without rain by +5.7 dB on the
test rain (bench/base_diagnosis.py, closing note of issue 14). Degraded-input PSNR of the test rain: light 23.61 dB,
heavy 16.22 dB."""
EVAL_TYPES = ('noise15', 'noise25', 'noise50', 'rain', 'haze')
CENTRE_FRACTION = {'retina': 0.6, 'hubble_deep_field': 0.6}  # keep the informative centre of these photos


@dataclass(frozen=True)
class DemoSize:
    """Image sizes of one demo variant (pixels)."""

    train_short: int
    train_long: int
    crop: int
    val_crops: int
    test_crops: int
    variants: int  # pre-synthesised (lq, gt) pairs per train photo and type, as RESIDE has several hazy versions


SIZES = {'demo': DemoSize(224, 320, 96, 3, 3, 3), 'tiny': DemoSize(64, 96, 32, 1, 1, 3)}


def load_photo(name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """A scikit-image photo as float32 RGB ``(H, W, 3)`` in ``[0, 1]``, and its depth in ``[0, 1]`` or ``None``."""
    if name == 'motorcycle':
        left, _, disparity = skdata.stereo_motorcycle()
        img, depth = left, depth_from_disparity(disparity)
    else:
        img, depth = getattr(skdata, name)(), None
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    img = img[..., :3].astype(np.float32) / 255.0
    frac = CENTRE_FRACTION.get(name)
    if frac is not None:
        h, w = img.shape[:2]
        top, left = int(h * (1 - frac) / 2), int(w * (1 - frac) / 2)
        img = img[top:h - top, left:w - left]
    return img, depth


def fit(img: np.ndarray, short: int, long_max: int, depth: np.ndarray | None = None
        ) -> tuple[np.ndarray, np.ndarray | None]:
    """Resize so the short side is ``short`` (area filter), centre-crop the long side to ``long_max`` and to a
    multiple of 8; the depth map (if any) follows with nearest-neighbour resizing (non-finite values kept)."""
    h, w = img.shape[:2]
    scale = short / min(h, w)
    size = (max(short, round(w * scale)), max(short, round(h * scale)))
    img = np.clip(cv2.resize(img, size, interpolation=cv2.INTER_AREA), 0.0, 1.0)
    if depth is not None:
        depth = cv2.resize(depth, size, interpolation=cv2.INTER_NEAREST)
    h, w = img.shape[:2]
    th, tw = min(h, long_max) // 8 * 8, min(w, long_max) // 8 * 8
    top, left = (h - th) // 2, (w - tw) // 2
    box = np.s_[top:top + th, left:left + tw]
    return img[box], None if depth is None else depth[box]


def crops(img: np.ndarray, size: int, count: int) -> list[np.ndarray]:
    """``count`` square crops of ``size`` evenly spaced along the image diagonal (one centred crop if ``count`` 1)."""
    h, w = img.shape[:2]
    steps = [0.5] if count == 1 else np.linspace(0.0, 1.0, count)
    return [img[round(s * (h - size)):round(s * (h - size)) + size, round(s * (w - size)):round(s * (w - size)) + size]
            for s in steps]


def _rng(seed: int, split: str, name: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, list(SPLITS).index(split), DEGRADATIONS[name], index])


def _write_pair(root: Path, stem: str, gt: np.ndarray, lq: np.ndarray) -> None:
    write_image(root / 'gt' / f'{stem}.png', gt)
    write_image(root / 'lq' / f'{stem}.png', lq)


def _degrade(de_name: str, gt: np.ndarray, depth: np.ndarray | None, rng: np.random.Generator,
             rain: str = 'heavy') -> np.ndarray:
    extra = {'haze': {'depth': depth}, 'rain': RAIN_STYLES[rain]}.get(de_name, {})
    return synthesize(de_name, gt, rng, **extra)


def _eval_sets(root: Path, split: str, photos: dict, size: DemoSize, count: int, seed: int, rain: str) -> dict:
    """Per-degradation lq/gt folders of ``split`` (val or test); returns the manifest entries.

    Each photo is fitted like a train photo and degraded whole (seed ``(seed, split, degradation, photo index)``),
    then ``count`` crops are cut from the same places of gt and lq.
    """
    fitted = [(name, *fit(img, size.train_short, size.train_long, depth)) for name, (img, depth) in photos.items()]
    entries = {}
    for de_name in EVAL_TYPES:
        for index, (name, gt, depth) in enumerate(fitted):
            lq = _degrade(de_name, gt, depth, _rng(seed, split, de_name, index), rain)
            for k, (gt_crop, lq_crop) in enumerate(zip(crops(gt, size.crop, count), crops(lq, size.crop, count))):
                _write_pair(root / split / de_name, f'{name}_{k}', gt_crop, lq_crop)
        entries[de_name] = {'gt': f'{split}/{de_name}/gt', 'lq': f'{split}/{de_name}/lq', 'count': count * len(fitted)}
    return entries


def build_demo(out: str | os.PathLike, size: str = 'demo', seed: int = 0, lmdb: bool = False,
               overwrite: bool = False, progress: Callable[[str], None] | None = None, rain: str = 'heavy') -> dict:
    """Build the demo set under ``out`` atomically (a temporary sibling renamed at the end); returns the manifest.

    Args:
        out: target folder, e.g. ``datasets/demo``.
        size: ``'demo'`` or ``'tiny'`` (see :data:`SIZES`).
        seed: seed of every synthesis (per image: ``(seed, split, degradation, index)``).
        lmdb: also write the train sources as BasicSR LMDBs under ``lmdb/``.
        overwrite: replace an existing ``out``; otherwise it is an error.
        progress: called with a short description after each step (the CLI feeds a progress bar).
        rain: rain style of every rain pair, train, val and test alike (:data:`RAIN_STYLES`).
    """
    if size not in SIZES:
        raise ValueError(f"size: unknown {size!r}; expected one of {', '.join(SIZES)}")
    if rain not in RAIN_STYLES:
        raise ValueError(f"rain: unknown {rain!r}; expected one of {', '.join(RAIN_STYLES)}")
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f'{out}: already exists; pass --overwrite (overwrite=True) to rebuild it')
    dims = SIZES[size]
    step = progress or (lambda _: None)
    photos = {split: {name: load_photo(name) for name in names} for split, names in SPLITS.items()}
    step('loaded photos')
    manifest = {'size': size, 'seed': seed, 'rain': rain,
                'photos': {split: list(names) for split, names in SPLITS.items()},
                'train': {'clean': 'train/clean'}, 'val': {}, 'test': {}, 'lmdb': None}
    with atomic_path(out) as tmp:
        for index, (name, (img, depth)) in enumerate(photos['train'].items()):
            gt, depth = fit(img, dims.train_short, dims.train_long, depth)
            write_image(tmp / 'train' / 'clean' / f'{name}.png', gt)
            for de_name in PRESYNTH:
                for v in range(dims.variants):
                    lq = _degrade(de_name, gt, depth, _rng(seed, 'train', de_name, index * dims.variants + v),
                                  rain)
                    _write_pair(tmp / 'train' / de_name, f'{name}_{v}', gt, lq)
        count = len(SPLITS['train']) * dims.variants
        for de_name in PRESYNTH:
            manifest['train'][de_name] = {'gt': f'train/{de_name}/gt', 'lq': f'train/{de_name}/lq', 'count': count}
            shutil.copytree(tmp / 'train' / de_name, tmp / 'test' / f'{de_name}_members')
            manifest['test'][f'{de_name}_members'] = {'gt': f'test/{de_name}_members/gt',
                                                      'lq': f'test/{de_name}_members/lq', 'count': count}
        step('train pairs')
        manifest['val'] = _eval_sets(tmp, 'val', photos['val'], dims, dims.val_crops, seed, rain)
        step('val sets')
        manifest['test'].update(_eval_sets(tmp, 'test', photos['test'], dims, dims.test_crops, seed, rain))
        step('test sets')
        if lmdb:
            manifest['lmdb'] = _write_lmdbs(tmp)
            step('lmdb')
        write_json(tmp / 'manifest.json', manifest)
    return manifest


def _write_lmdbs(root: Path) -> dict:
    """LMDB copies of the train sources (clean images; rain and haze pairs with labels)."""
    clean = list_images(root / 'train' / 'clean', 'train/clean')
    write_lmdbs({'gt': root / 'lmdb' / 'train_clean.lmdb'}, ((p.name, {'gt': read_image(p)}) for p in clean))
    entries = {'clean': 'lmdb/train_clean.lmdb'}
    for de_name in PRESYNTH:
        pair = root / 'train' / de_name
        targets = {role: root / 'lmdb' / f'train_{de_name}_{role}.lmdb' for role in ('gt', 'lq')}
        items = ((p.name, {'gt': read_image(p), 'lq': read_image(pair / 'lq' / p.name)})
                 for p in list_images(pair / 'gt', f'train/{de_name}/gt'))
        write_lmdbs(targets, items, de_name=de_name)
        entries[de_name] = {role: str(path.relative_to(root)) for role, path in targets.items()}
    return entries
