"""LMDB in BasicSR's format: a per-process environment cache for reading, and an atomic writer.

Format (``basicsr/utils/lmdb_util.py``): ``X.lmdb/`` holds ``data.mdb``, ``lock.mdb`` and ``meta_info.txt`` whose
lines read ``<key>.png (h,w,c) <compress_level>``; each value is the image re-encoded as PNG (BGR). This module adds
``meta_labels.txt`` (``<key> <de_name> <de_type>`` per line) when the images carry one degradation label.

Reading: py-lmdb >= 2 refuses to open one environment twice in a process (``The environment '...' is already open``),
and forked DataLoader workers inherit that state. So environments live in a module-level ``{realpath: Environment}``
cache, opened lazily on first read and shared by every dataset of the process and by forked children; readers keep
only the path, so they pickle (spawn workers open their own environment on first use). Reads go through one
read-only transaction per LMDB, thread and process, kept open (the LMDBs are never written while read; a forked child
starts its own): resolving the path and beginning a transaction for every image cost more than reading a small PNG
file from a folder.

Writing: keys are sanitised (``[A-Za-z0-9_-]`` only: BasicSR splits ``meta_info.txt`` names at the first dot), the
LMDB is built in a temporary sibling folder and renamed at the end, so an interrupted run leaves nothing at the
target (and the next write to that target removes the temporaries of killed writers); the map grows on
``MapFullError`` from an explicit initial size. Readers check ``data.mdb`` against its meta page first
(:func:`check_lmdb`): a truncated file is an error naming it, not a SIGBUS.
"""
import os
import re
import struct
import threading
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path

import lmdb
import numpy as np

from basicsr_unlearn.data.degradation_names import de_type
from basicsr_unlearn.data.image_io import decode_image, encode_png
from basicsr_unlearn.fileio import atomic_path, fault_point

_ENVS: dict[str, lmdb.Environment] = {}


class _ThreadTxns(threading.local):
    """This thread's open read transactions, ``{path as given: Transaction}``."""

    def __init__(self) -> None:
        self.txns: dict[str, lmdb.Transaction] = {}


def _drop_parent_txns() -> None:
    _TXNS.txns = {}  # a transaction belongs to the process that began it; the forked child begins its own


_TXNS = _ThreadTxns()
os.register_at_fork(after_in_child=_drop_parent_txns)
META_INFO = 'meta_info.txt'
META_LABELS = 'meta_labels.txt'
LMDB_MAGIC = 0xBEEFC0DE
META_END = 152  # page header (16) + MDB_meta up to mm_txnid (64-bit build)


def check_lmdb(path: str | os.PathLike, where: str | None = None) -> None:
    """Raise unless ``<path>/data.mdb`` is as long as its own meta page says (a truncated file would SIGBUS readers).

    LMDB keeps two meta pages (pages 0 and 1, 64-bit little-endian ``MDB_meta``: magic ``0xBEEFC0DE`` at byte 16,
    page size at 40, last used page at 136, transaction id at 144); the newer one gives the pages in use.

    Example:
        >>> check_lmdb('/nowhere.lmdb', 'datasets.train.dataroot_gt')
        Traceback (most recent call last):
        FileNotFoundError: datasets.train.dataroot_gt: /nowhere.lmdb: not an LMDB folder (no data.mdb)
    """
    at = f'{where}: ' if where else ''
    data = os.path.join(path, 'data.mdb')
    if not os.path.isfile(data):
        raise FileNotFoundError(f'{at}{path}: not an LMDB folder (no data.mdb)')
    size = os.path.getsize(data)
    with open(data, 'rb') as f:
        head = f.read(META_END)
        page_size = struct.unpack_from('<I', head, 40)[0] if len(head) == META_END else 0
        f.seek(page_size)
        second = f.read(META_END)
    metas = [struct.unpack_from('<IIQQ', page, 16)[:2] + struct.unpack_from('<QQ', page, 136)
             for page in (head, second) if len(page) == META_END]
    metas = [m for m in metas if m[0] == LMDB_MAGIC]
    if not metas or page_size < META_END:
        raise ValueError(f'{at}{data}: not an LMDB data file ({size} bytes, no valid meta page); re-create it '
                         'with tools/create_lmdb.py')
    last_page = max(metas, key=lambda m: m[3])[2]
    needed = (last_page + 1) * page_size
    if size < needed:
        raise ValueError(f'{at}{data}: truncated LMDB: {size} bytes, but its meta page uses {last_page + 1} '
                         f'pages of {page_size} bytes ({needed}); re-create it with tools/create_lmdb.py')


def open_env(path: str | os.PathLike) -> lmdb.Environment:
    """Read-only environment of the LMDB folder ``path``, opened once per process (and reused by forked children).

    The first open checks ``data.mdb`` against its meta page (:func:`check_lmdb`).
    """
    real = os.path.realpath(path)
    env = _ENVS.get(real)
    if env is None:
        check_lmdb(path)
        env = lmdb.open(real, readonly=True, lock=False, readahead=False, meminit=False)
        _ENVS[real] = env
    return env


def read_txn(path: str) -> lmdb.Transaction:
    """This thread's read-only transaction on the LMDB folder ``path`` (begun on first use, then kept open)."""
    txn = _TXNS.txns.get(path)
    if txn is None:
        txn = _TXNS.txns[path] = open_env(path).begin(write=False)
    return txn


def read_meta_info(path: str | os.PathLike) -> list[str]:
    """Keys listed in ``<path>/meta_info.txt`` (the part before ``.png``, dots inside a key kept)."""
    meta = Path(path) / META_INFO
    if not meta.is_file():
        raise FileNotFoundError(f'{path}: LMDB has no {META_INFO}')
    keys = [os.path.splitext(line.split(' ')[0])[0] for line in meta.read_text().splitlines() if line.strip()]
    if not keys:
        raise ValueError(f'{meta}: no keys listed')
    return keys


def read_labels(path: str | os.PathLike) -> dict[str, str] | None:
    """``{key: de_name}`` from ``<path>/meta_labels.txt``, or ``None`` when the LMDB has no label file."""
    labels = Path(path) / META_LABELS
    if not labels.is_file():
        return None
    return {parts[0]: parts[1] for parts in (line.split() for line in labels.read_text().splitlines()) if parts}


class LmdbReader:
    """Reads encoded images by key from one LMDB folder; picklable (holds only the path).

    Args:
        path: the ``X.lmdb`` folder.

    Example:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> paths = write_lmdbs({'gt': f'{folder}/x.lmdb'}, [('a', {'gt': np.zeros((4, 4, 3), np.uint8)})])
        >>> reader = LmdbReader(paths['gt'])
        >>> reader.keys(), reader.get('a')[1:4]
        (['a'], b'PNG')
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = str(path)

    def keys(self) -> list[str]:
        """Keys in ``meta_info.txt`` order."""
        return read_meta_info(self.path)

    def get(self, key: str) -> bytes:
        """Encoded bytes stored under ``key``; raises ``KeyError`` naming the key and the LMDB."""
        buf = read_txn(self.path).get(key.encode('ascii'))
        if buf is None:
            raise KeyError(f"{self.path}: key '{key}' not found in LMDB")
        return buf


def sanitize_key(name: str) -> str:
    """LMDB key for a file name: extension dropped, every character outside ``[A-Za-z0-9_-]`` replaced by ``_``."""
    return re.sub(r'[^A-Za-z0-9_-]', '_', os.path.splitext(os.path.basename(name))[0])


def _put(env: lmdb.Environment, batch: list[tuple[bytes, bytes]]) -> None:
    """Commit ``batch`` in one transaction, doubling the map size while it is full."""
    while True:
        try:
            with env.begin(write=True) as txn:
                for key, value in batch:
                    txn.put(key, value)
            return
        except lmdb.MapFullError:
            env.set_mapsize(env.info()['map_size'] * 2)


def write_lmdbs(targets: dict[str, str | os.PathLike], items: Iterable[tuple[str, dict[str, np.ndarray]]],
                de_name: str | None = None, map_size: int = 1 << 26, compress_level: int = 0, batch: int = 256,
                overwrite: bool = False) -> dict[str, Path]:
    """Write one or more parallel LMDBs (e.g. ``{'lq': 'x_lq.lmdb', 'gt': 'x_gt.lmdb'}``) atomically.

    Args:
        targets: ``{role: path}``; each path must end in ``.lmdb``.
        items: ``(key, {role: image})`` pairs; images uint8 or float RGB ``(H, W, 3)`` in ``[0, 1]``; keys are
            sanitised with :func:`sanitize_key` and must stay unique.
        de_name: degradation label written to ``meta_labels.txt`` (vocabulary name) or ``None``.
        map_size: initial map size in bytes (grown automatically when full).
        compress_level: PNG compression level 0-9. 0 (stored, no deflate) decodes about 2x faster than BasicSR's
            default 1 and takes about 1.7x the disk on natural photos (``bench/data.py``).
        batch: images per write transaction.
        overwrite: replace existing targets; otherwise an existing target is an error.

    Returns:
        ``{role: Path}`` of the written LMDBs.
    """
    paths = {role: Path(p) for role, p in targets.items()}
    for role, path in paths.items():
        if path.suffix != '.lmdb':
            raise ValueError(f"{role} output {path}: the folder name must end in '.lmdb' (BasicSR's convention)")
        if path.exists() and not overwrite:
            raise FileExistsError(f'{path}: already exists; pass --overwrite (overwrite=True) to replace it')
    label = f' {de_name} {de_type(de_name, "degradation")}' if de_name is not None else None
    with ExitStack() as stack:
        tmps = {role: stack.enter_context(atomic_path(path)) for role, path in paths.items()}
        envs = {}
        for role, tmp in tmps.items():
            tmp.mkdir()
            envs[role] = lmdb.open(str(tmp), map_size=map_size)
            stack.callback(envs[role].close)
        meta = {role: [] for role in paths}
        pending = {role: [] for role in paths}
        seen: dict[str, str] = {}
        for name, images in items:
            key = sanitize_key(name)
            if key in seen:
                raise ValueError(f"key collision: '{name}' and '{seen[key]}' both sanitise to '{key}'")
            seen[key] = name
            for role in paths:
                if role not in images:
                    raise KeyError(f"item '{name}': no '{role}' image")
                img = images[role]
                h, w = img.shape[:2]
                c = 1 if img.ndim == 2 else img.shape[2]
                pending[role].append((key.encode('ascii'), encode_png(img, compress_level)))
                meta[role].append(f'{key}.png ({h},{w},{c}) {compress_level}')
                if len(pending[role]) >= batch:
                    _put(envs[role], pending[role])
                    pending[role] = []
        for role, tmp in tmps.items():
            _put(envs[role], pending[role])
            fault_point(tmp / META_INFO)  # fault tests: every image written, nothing renamed yet
            (tmp / META_INFO).write_text('\n'.join(meta[role]) + '\n')
            if label is not None:
                (tmp / META_LABELS).write_text(''.join(f'{key}{label}\n' for key in seen))
    return paths


def verify_lmdb(path: str | os.PathLike) -> Iterator[str]:
    """Re-read every key of ``meta_info.txt`` and decode it; yields each verified key, raises on the first bad one."""
    reader = LmdbReader(path)
    for key in reader.keys():
        decode_image(reader.get(key), f'{path}:{key}')
        yield key
