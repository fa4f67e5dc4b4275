"""Image files <-> float RGB arrays, with errors that name the file.

Images are stored as 8-bit PNG (BGR on disk, as OpenCV and BasicSR write them) and handled in memory as float32
RGB ``(H, W, 3)`` in ``[0, 1]``; grey images are replicated to three channels.

Example:
    >>> img = np.random.default_rng(0).random((4, 5, 3)).astype(np.float32)
    >>> back = decode_image(encode_png(img), 'example')
    >>> back.shape, bool(np.all(back == to_uint8(img) / np.float32(255)))  # 8-bit round trip
    ((4, 5, 3), True)
    >>> decode_image(b'not a png', 'lq/0001.png')
    Traceback (most recent call last):
    ValueError: lq/0001.png: unreadable or corrupt image
"""
import os
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')


def decode_image(buffer: bytes | np.ndarray, where: str) -> np.ndarray:
    """Decode encoded image bytes to float32 RGB ``(H, W, 3)`` in ``[0, 1]``; ``where`` names the source on error."""
    img = cv2.imdecode(np.frombuffer(buffer, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f'{where}: unreadable or corrupt image')
    if img.dtype != np.uint8:
        raise ValueError(f'{where}: expected an 8-bit image, got {img.dtype}')
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    elif img.shape[2] == 4:
        img = img[..., :3]
    return img[..., ::-1].astype(np.float32) / 255.0


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as float32 RGB ``(H, W, 3)`` in ``[0, 1]``; raises naming ``path`` if missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'{path}: image file not found')
    return decode_image(path.read_bytes(), str(path))


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Float RGB ``(H, W, 3)`` in ``[0, 1]`` to uint8 (rounded)."""
    return np.rint(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)


def encode_png(img: np.ndarray, compress_level: int = 1) -> bytes:
    """Float RGB ``(H, W, 3)`` in ``[0, 1]`` or uint8 RGB to PNG bytes (BGR order inside, as BasicSR's LMDBs)."""
    img = img if img.dtype == np.uint8 else to_uint8(img)
    ok, buf = cv2.imencode('.png', np.ascontiguousarray(img[..., ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, compress_level])
    if not ok:
        raise ValueError(f'could not encode an image of shape {img.shape} as PNG')
    return buf.tobytes()


def write_image(path: str | os.PathLike, img: np.ndarray) -> None:
    """Write float RGB ``(H, W, 3)`` in ``[0, 1]`` (or uint8 RGB) as a PNG file, creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(img, compress_level=3))


def list_images(folder: str | os.PathLike, where: str) -> list[Path]:
    """Sorted image files of ``folder``; raises naming ``where`` and the folder if it is missing or has none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f'{where}: folder not found: {folder}')
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f'{where}: no images ({", ".join(IMAGE_SUFFIXES)}) in {folder}')
    return files


def paired_images(gt_root: str | os.PathLike, lq_root: str | os.PathLike, where: str) -> list[tuple[str, str]]:
    """``(gt_path, lq_path)`` of the equally named images of two folders; raises naming ``where`` and the folders on
    a missing folder, unequal counts or a GT image without its LQ counterpart."""
    gt_root, lq_root = Path(gt_root), Path(lq_root)
    gts = list_images(gt_root, f'{where}.dataroot_gt')
    lqs = list_images(lq_root, f'{where}.dataroot_lq')
    if len(gts) != len(lqs):
        raise ValueError(f'{where}: unequal pair counts: {len(gts)} GT images in {gt_root}, '
                         f'{len(lqs)} LQ images in {lq_root}')
    lq_names = {p.name for p in lqs}
    for gt in gts:
        if gt.name not in lq_names:
            raise ValueError(f'{where}: GT image {gt} has no LQ image of the same name in {lq_root}')
    return [(str(gt), str(lq_root / gt.name)) for gt in gts]


def meta_pairs(meta_file: str | os.PathLike, gt_root: str | os.PathLike, lq_root: str | os.PathLike,
               where: str) -> list[tuple[str, str]]:
    """``(gt_path, lq_path)`` listed in a pair file: lines ``<gt path> [<lq path>]`` relative to the two roots (one
    column: the same name in both; ``#`` starts a comment line). For benchmarks whose pairs differ in name, e.g.
    Rain100L ``norain-1.png rain-1.png`` or SOTS ``0001.png 0001_0.8_0.2.jpg``."""
    meta = Path(meta_file)
    if not meta.is_file():
        raise FileNotFoundError(f'{where}: file not found: {meta}')
    pairs = []
    for number, line in enumerate(meta.read_text().splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith('#'):
            continue
        if len(parts) > 2:
            raise ValueError(f'{meta}:{number}: expected "<gt path> [<lq path>]", got {line!r}')
        gt, lq = Path(gt_root) / parts[0], Path(lq_root) / parts[-1]
        for path in (gt, lq):
            if not path.is_file():
                raise FileNotFoundError(f'{meta}:{number}: image file not found: {path}')
        pairs.append((str(gt), str(lq)))
    if not pairs:
        raise ValueError(f'{where}: no pairs listed in {meta}')
    return pairs
