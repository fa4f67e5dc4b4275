"""``MixedDegradationDataset``: several degradation sources in one dataset, each sample labelled and given a role.

Options (``datasets.<phase>``)::

    type: MixedDegradationDataset
    sources:                                  # one entry per source; `repeat` balances them (default 1)
      - {degradation: noise25, type: synth, dataroot_gt: datasets/demo/train/clean}          # folder or X.lmdb
      - {degradation: rain, type: folder, dataroot_gt: .../gt, dataroot_lq: .../lq, repeat: 3}
      - {degradation: haze, type: meta, dataroot_gt: ..., dataroot_lq: ..., meta_info_file: pairs.txt}
      - {degradation: haze, type: lmdb, dataroot_gt: .../gt.lmdb, dataroot_lq: .../lq.lmdb}
      - {degradation: haze, type: synth, dataroot_gt: ..., beta: [0.6, 1.8], airlight: 0.9}  # rain/haze params
    forget: [haze]            # degradations whose samples get role 'forget'; every other one 'retain'
    gt_size: 64               # train: paired random crop size
    use_hflip: true           # train: random horizontal flip
    use_rot: true             # train: random vertical flip + transpose (BasicSR's `augment`)
    seed: 0                   # val/test noise and role-group assembly
    role_group: {forget: 2, retain: 6}   # train only: each item is a group of 2 forget + 6 retain samples
    # role_group: {forget: 0, retain: 4, retain_only: true}   # deliberate retain-only training (fine-tuning)

Source types: ``folder`` pairs files of equal name in ``dataroot_gt``/``dataroot_lq``; ``meta`` reads
``meta_info_file`` lines ``<gt relative path> [<lq relative path>]`` (one column: same name in both); ``lmdb`` reads
two BasicSR LMDBs with equal keys (``meta_labels.txt``, when present, must agree with ``degradation``); ``synth``
degrades clean ``dataroot_gt`` images (a folder or an ``.lmdb``) on the fly: ``noiseXX`` at sigma ``XX``, ``rain``
with ``density, length, angle, intensity`` and ``haze`` with ``beta, airlight`` (a number or a ``[low, high]`` range
drawn per sample; defaults in :mod:`basicsr_unlearn.data.degradations`).

Items (single samples): ``lq``, ``gt`` float32 RGB ``(3, H, W)`` in ``[0, 1]``, ``lq_path``, ``gt_path`` (str),
``de_name`` (str), ``de_type`` (int), ``role`` ('forget' or 'retain'). With ``role_group: {forget: n_f, retain: n_r}``
an item stacks ``n = n_f + n_r`` samples, forget first: ``lq``, ``gt`` ``(n, 3, h, w)``, ``de_type`` LongTensor
``(n,)``, ``is_forget`` BoolTensor ``(n,)``, and lists of ``n`` str ``de_name``, ``role``, ``lq_path``, ``gt_path``
(a DataLoader batch is then ``(B, n, 3, h, w)``, so every batch holds exactly the configured ratio, also under DDP
where BasicSR's ``EnlargedSampler`` shards item indices). Group ``i`` takes forget samples
``P_f[(i n_f + j) mod F]`` and retain samples ``P_r[(i n_r + j) mod R]`` of fixed permutations drawn from ``seed``,
so the groups are a function of ``(seed, i)`` and one pass over the items covers both pools. A group may not ask for
more samples of a role than its pool holds distinct samples (it would repeat them); ``forget: 0`` beside a ``forget``
list means no forget sample ever reaches the model, so it needs ``retain_only: true`` (fine-tuning or Adapt-then-
Unlearn stage 2 on retained data, the forget types kept out); a ``forget`` list naming every source is an error.

:meth:`MixedDegradationDataset.check_options` (run by the launchers before any folder exists) does every check that
needs no image decoding: keys, names, folders and LMDBs (:func:`~basicsr_unlearn.data.lmdb_backend.check_lmdb`),
pairing, and the role groups against the pool sizes.

Randomness: train crops, flips and noise come from a generator seeded with ``(seed, index, torch.initial_seed(),
draw count)``: reproducible under BasicSR's ``manual_seed`` (which fixes ``torch.initial_seed()`` in the main process
and in each worker) yet different every epoch. Val/test (``phase != 'train'``) is deterministic: noise seeded by
``(seed, index)``, no augmentation, images cropped (top-left) to a multiple of 8 for 3-level U-Nets. Usually one
source per val/test dataset, so BasicSR's multiple val loaders report per task.
"""
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data

from basicsr_unlearn.config import check_keys
from basicsr_unlearn.data.degradation_names import check_name, de_type
from basicsr_unlearn.data.degradations import HAZE_DEFAULTS, NOISE_SIGMAS, RAIN_DEFAULTS, synthesize
from basicsr_unlearn.data.image_io import decode_image, list_images, meta_pairs, paired_images, read_image
from basicsr_unlearn.data.lmdb_backend import LmdbReader, check_lmdb, read_labels

SIZE_MULTIPLE = 8
SOURCE_KEYS = {
    'folder': ('degradation', 'type', 'dataroot_gt', 'dataroot_lq', 'repeat'),
    'meta': ('degradation', 'type', 'dataroot_gt', 'dataroot_lq', 'meta_info_file', 'repeat'),
    'lmdb': ('degradation', 'type', 'dataroot_gt', 'dataroot_lq', 'repeat'),
    'synth': ('degradation', 'type', 'dataroot_gt', 'repeat'),
}
SYNTH_PARAMS = {**{name: () for name in NOISE_SIGMAS}, 'rain': tuple(RAIN_DEFAULTS), 'haze': tuple(HAZE_DEFAULTS)}
DATASET_KEYS = ('name', 'type', 'phase', 'scale', 'sources', 'forget', 'gt_size', 'use_hflip', 'use_rot', 'seed',
                'role_group', 'num_worker_per_gpu', 'batch_size_per_gpu', 'dataset_enlarge_ratio', 'prefetch_mode',
                'pin_memory', 'persistent_workers', 'num_prefetch_queue')


@dataclass(frozen=True)
class Record:
    """One sample: source index, GT and LQ references (file paths, or keys for LMDB; ``lq=None`` for synth)."""

    source: int
    gt: str
    lq: str | None


@dataclass(frozen=True)
class Layout:
    """What :meth:`MixedDegradationDataset.check_options` establishes: checked sources, records, roles, group."""

    sources: list[dict]
    records: list[Record]
    forget: frozenset[str]
    group: tuple[int, int] | None


def _lmdb_pairs(src: dict, where: str) -> list[tuple[str, str]]:
    gt_keys = LmdbReader(src['dataroot_gt']).keys()
    lq_keys = set(LmdbReader(src['dataroot_lq']).keys())
    for key in gt_keys:
        if key not in lq_keys:
            raise ValueError(f"{where}: key '{key}' of {src['dataroot_gt']} is missing from {src['dataroot_lq']}")
    if len(lq_keys) != len(gt_keys):
        raise ValueError(f"{where}: unequal pair counts: {len(gt_keys)} keys in {src['dataroot_gt']}, "
                         f"{len(lq_keys)} in {src['dataroot_lq']}")
    for root in (src['dataroot_gt'], src['dataroot_lq']):
        labels = read_labels(root) or {}
        wrong = sorted(k for k, v in labels.items() if v != src['degradation'])
        if wrong:
            raise ValueError(f"{where}: {root}/meta_labels.txt labels '{wrong[0]}' as '{labels[wrong[0]]}', "
                             f"but the source is '{src['degradation']}'")
    return [(key, key) for key in gt_keys]


def _check_source(src: object, where: str) -> dict:
    if not isinstance(src, dict):
        raise ValueError(f'{where}: expected a mapping with degradation, type, dataroot_gt, ...; got {src!r}')
    check_name(src.get('degradation'), f'{where}.degradation')
    kind = src.get('type')
    if kind not in SOURCE_KEYS:
        raise ValueError(f"{where}.type: unknown {kind!r}; expected one of {', '.join(SOURCE_KEYS)}")
    allowed = SOURCE_KEYS[kind] + (SYNTH_PARAMS.get(src['degradation'], ()) if kind == 'synth' else ())
    check_keys(src, allowed, where)
    if kind == 'synth' and src['degradation'] not in SYNTH_PARAMS:
        raise ValueError(f"{where}.degradation: no synthesis for '{src['degradation']}'; type synth supports "
                         f"{', '.join(SYNTH_PARAMS)}")
    required = [k for k in allowed if k not in ('repeat', *SYNTH_PARAMS.get(src['degradation'], ()))]
    missing = [k for k in required if src.get(k) is None]
    if missing:
        raise ValueError(f'{where}: missing {", ".join(missing)} (required for type {kind})')
    if kind == 'lmdb':
        for key in ('dataroot_gt', 'dataroot_lq'):
            if not str(src[key]).endswith('.lmdb'):
                raise ValueError(f"{where}.{key}: type lmdb needs an '.lmdb' folder, got {src[key]}")
    repeat = src.get('repeat', 1)
    if not isinstance(repeat, int) or repeat < 1:
        raise ValueError(f'{where}.repeat: expected a positive integer, got {repeat!r}')
    paths = ('dataroot_gt', 'dataroot_lq', 'meta_info_file')
    return {key: os.path.expanduser(str(value)) if key in paths else value for key, value in src.items()}


def _check_forget(forget: object, sources: list[dict], where: str) -> frozenset[str]:
    if isinstance(forget, str):
        forget = [forget]
    if not isinstance(forget, list):
        raise ValueError(f'{where}: expected a list of degradation names, got {forget!r}')
    present = sorted({src['degradation'] for src in sources})
    for name in forget:
        check_name(name, where)
        if name not in present:
            raise ValueError(f"{where}: '{name}' is not the degradation of any source; sources have "
                             f"{', '.join(present)}")
    if forget and set(present) <= set(forget):
        raise ValueError(f"{where}: {sorted(set(forget))} covers every source's degradation; nothing would be "
                         'retained (that is training from scratch, not unlearning); expected a strict subset of '
                         f"{', '.join(present)}")
    return frozenset(forget)


def _scan(i: int, src: dict, where: str) -> list[Record]:
    """Records of source ``i``: file pairs, LMDB keys or clean images (folders listed, LMDB sizes checked)."""
    kind = src['type']
    for key in ('dataroot_gt', 'dataroot_lq'):
        if str(src.get(key)).endswith('.lmdb'):
            check_lmdb(src[key], f'{where}.{key}')
    if kind == 'folder':
        pairs = paired_images(Path(src['dataroot_gt']), Path(src['dataroot_lq']), where)
    elif kind == 'meta':
        pairs = meta_pairs(src['meta_info_file'], src['dataroot_gt'], src['dataroot_lq'], f'{where}.meta_info_file')
    elif kind == 'lmdb':
        pairs = _lmdb_pairs(src, where)
    elif str(src['dataroot_gt']).endswith('.lmdb'):
        pairs = [(key, None) for key in LmdbReader(src['dataroot_gt']).keys()]
    else:
        pairs = [(str(p), None) for p in list_images(src['dataroot_gt'], f'{where}.dataroot_gt')]
    return [Record(i, gt, lq) for gt, lq in pairs]


def _check_group(group: object, phase: str, forget: frozenset[str], sources: list[dict], records: list[Record],
                 where: str) -> tuple[int, int] | None:
    """``(n_f, n_r)`` of ``role_group``, checked against the roles and the distinct samples of each pool."""
    if group is None:
        return None
    if phase != 'train':
        raise ValueError(f'{where}: role groups are for the train phase only (phase is {phase!r})')
    if not isinstance(group, dict):
        raise ValueError(f'{where}: expected {{forget: n_f, retain: n_r}}, got {group!r}')
    check_keys(group, ('forget', 'retain', 'retain_only'), where)
    n_f, n_r, retain_only = group.get('forget', 0), group.get('retain', 0), group.get('retain_only', False)
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in (n_f, n_r)) or n_f + n_r == 0:
        raise ValueError(f'{where}: expected non-negative integer counts with a positive sum, got {group!r}')
    data = where.removesuffix('.role_group')
    if retain_only not in (True, False):
        raise ValueError(f'{where}.retain_only: expected true or false, got {retain_only!r}')
    if n_f and not forget:
        raise ValueError(f'{where}: forget: {n_f} needs a non-empty {data}.forget list')
    if retain_only and (n_f or not forget):
        raise ValueError(f'{where}.retain_only: true means no forget samples and a {data}.forget list of the types '
                         f'kept out; got forget: {n_f}, {data}.forget: {sorted(forget)}')
    if forget and not n_f and not retain_only:
        raise ValueError(f'{where}: forget: 0 with {data}.forget {sorted(forget)}: no forget sample ever reaches the '
                         'model, so the run only trains on retained data (it does not unlearn); expected '
                         'forget >= 1, or retain_only: true if retain-only training (fine-tuning, Adapt-then-Unlearn '
                         'stage 2) is intended')
    is_forget = [sources[r.source]['degradation'] in forget for r in records]
    for role, n, members in (('forget', n_f, True), ('retain', n_r, False)):
        pool = {(r.source, r.gt, r.lq) for r, f in zip(records, is_forget) if f == members}
        if n > len(pool):
            raise ValueError(f'{where}.{role}: {n} per group, but the {role} pool holds {len(pool)} distinct samples '
                             f'(every group would repeat some); expected <= {len(pool)}')
    return n_f, n_r


@DATASET_REGISTRY.register()
class MixedDegradationDataset(data.Dataset):
    """Mixed-degradation paired dataset with degradation labels and forget/retain roles (see the module docstring).

    Args:
        opt: the ``datasets.<phase>`` option block.
    """

    @staticmethod
    def check_options(opt: dict, where: str) -> Layout:
        """Check the option block and its files without decoding an image; returns the checked layout.

        The launchers call it before creating any folder (``config.validate_options``), so an unknown degradation
        name or key, a missing folder, a truncated LMDB or a role group the pools cannot fill fails at once,
        naming its option path.
        """
        check_keys(opt, DATASET_KEYS, where)
        if opt.get('phase', 'train') == 'train' and not isinstance(opt.get('gt_size'), int):
            raise ValueError(f'{where}.gt_size: expected the train patch size (int), got {opt.get("gt_size")!r}')
        sources = opt.get('sources')
        if not isinstance(sources, list) or not sources:
            raise ValueError(f'{where}.sources: expected a non-empty list of source mappings')
        checked = [_check_source(src, f'{where}.sources[{i}]') for i, src in enumerate(sources)]
        forget = _check_forget(opt.get('forget') or [], checked, f'{where}.forget')
        records = []
        for i, src in enumerate(checked):
            records += _scan(i, src, f'{where}.sources[{i}]') * src.get('repeat', 1)
        group = _check_group(opt.get('role_group'), opt.get('phase', 'train'), forget, checked, records,
                             f'{where}.role_group')
        return Layout(checked, records, forget, group)

    def __init__(self, opt: dict) -> None:
        super().__init__()
        self.opt = opt  # BasicSR convention: validation reads dataloader.dataset.opt["name"]
        self.phase = opt.get('phase', 'train')
        where = f'datasets.{self.phase}'
        layout = self.check_options(opt, where)
        self.sources, self.records, self.forget, self.group = (layout.sources, layout.records, layout.forget,
                                                               layout.group)
        self.train = self.phase == 'train'
        self.seed = int(opt.get('seed', 0))
        self.gt_size = opt.get('gt_size')
        self.use_hflip = bool(opt.get('use_hflip', False))
        self.use_rot = bool(opt.get('use_rot', False))
        self.readers = {src[key]: LmdbReader(src[key]) for src in self.sources for key in ('dataroot_gt', 'dataroot_lq')
                        if str(src.get(key)).endswith('.lmdb')}
        if self.group is not None:
            rng = np.random.default_rng([self.seed, 0])
            is_forget = np.array([self.role(r) == 'forget' for r in self.records])
            self.pools = [rng.permutation(np.flatnonzero(is_forget)), rng.permutation(np.flatnonzero(~is_forget))]
        self._draws = 0

    def role(self, record: Record) -> str:
        """``'forget'`` if the record's degradation is in ``forget``, else ``'retain'``."""
        return 'forget' if self.sources[record.source]['degradation'] in self.forget else 'retain'

    def __len__(self) -> int:
        if self.group is None:
            return len(self.records)
        return max(math.ceil(len(pool) / n) for pool, n in zip(self.pools, self.group) if n)

    def __getitem__(self, index: int) -> dict:
        if self.train:
            rng = np.random.default_rng([self.seed, index, torch.initial_seed() % 2**32, self._draws])
            self._draws += 1
        else:
            rng = np.random.default_rng([self.seed, index])
        if self.group is None:
            return self._sample(self.records[index], rng)
        picks = [int(pool[(index * n + j) % len(pool)]) for pool, n in zip(self.pools, self.group) for j in range(n)]
        samples = [self._sample(self.records[k], rng) for k in picks]
        return {
            'lq': torch.stack([s['lq'] for s in samples]),
            'gt': torch.stack([s['gt'] for s in samples]),
            'de_type': torch.tensor([s['de_type'] for s in samples], dtype=torch.long),
            'is_forget': torch.tensor([s['role'] == 'forget' for s in samples], dtype=torch.bool),
            **{key: [s[key] for s in samples] for key in ('de_name', 'role', 'lq_path', 'gt_path')},
        }

    def _read(self, src: dict, root_key: str, ref: str) -> np.ndarray:
        if str(src[root_key]).endswith('.lmdb'):
            return decode_image(self.readers[src[root_key]].get(ref), f'{src[root_key]}:{ref}')
        return read_image(ref)

    def _sample(self, record: Record, rng: np.random.Generator) -> dict:
        src = self.sources[record.source]
        name = src['degradation']
        gt = self._read(src, 'dataroot_gt', record.gt)
        gt_path = os.path.join(src['dataroot_gt'], record.gt) if src['dataroot_gt'].endswith('.lmdb') else record.gt
        if record.lq is None:
            gt = self._crop(gt, None, rng, gt_path)[0]
            params = {k: src[k] for k in SYNTH_PARAMS[name] if k in src}
            lq, lq_path = synthesize(name, gt, rng, **params), gt_path
        else:
            lq = self._read(src, 'dataroot_lq', record.lq)
            lq_path = (os.path.join(src['dataroot_lq'], record.lq) if src['dataroot_lq'].endswith('.lmdb')
                       else record.lq)
            if lq.shape != gt.shape:
                raise ValueError(f'lq/gt size mismatch: {lq_path} is {lq.shape[:2]}, {gt_path} is {gt.shape[:2]}')
            gt, lq = self._crop(gt, lq, rng, gt_path)
        if self.train:
            gt, lq = self._augment(gt, lq, rng)
        return {
            'lq': torch.from_numpy(np.ascontiguousarray(lq.transpose(2, 0, 1))),
            'gt': torch.from_numpy(np.ascontiguousarray(gt.transpose(2, 0, 1))),
            'lq_path': lq_path, 'gt_path': gt_path,
            'de_name': name, 'de_type': de_type(name), 'role': self.role(record),
        }

    def _crop(self, gt: np.ndarray, lq: np.ndarray | None, rng: np.random.Generator,
              gt_path: str) -> tuple[np.ndarray, np.ndarray | None]:
        """Train: the same random ``gt_size`` crop of both; val/test: top-left crop to a multiple of 8."""
        h, w = gt.shape[:2]
        if self.train:
            size = self.gt_size
            if h < size or w < size:
                raise ValueError(f'{gt_path}: image {h}x{w} is smaller than gt_size {size}')
            top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
            box = np.s_[top:top + size, left:left + size]
        else:
            box = np.s_[:h - h % SIZE_MULTIPLE, :w - w % SIZE_MULTIPLE]
            if h < SIZE_MULTIPLE or w < SIZE_MULTIPLE:
                raise ValueError(f'{gt_path}: image {h}x{w} is smaller than {SIZE_MULTIPLE} pixels')
        return gt[box], None if lq is None else lq[box]

    def _augment(self, gt: np.ndarray, lq: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """BasicSR's ``augment``: horizontal flip, vertical flip, transpose, each with probability 1/2."""
        hflip, vflip, transpose = rng.random(3) < 0.5
        out = []
        for img in (gt, lq):
            if self.use_hflip and hflip:
                img = img[:, ::-1]
            if self.use_rot and vflip:
                img = img[::-1]
            if self.use_rot and transpose:
                img = img.transpose(1, 0, 2)
            out.append(img)
        return out[0], out[1]
