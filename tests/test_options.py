"""Every YAML under options/ loads (``_base_`` resolved) and validates; a new YAML is tested automatically.

Launcher YAMLs validate as they are (``options/test/``: as test options); a tool's input without ``model_type`` and a
``_base_`` fragment that no YAML inherits validate merged over a complete training YAML, as a run on them would.
Each runs in a fresh folder holding only the tiny demo set, under ``datasets/demo`` (the paths the demo YAMLs use).
Every other file a YAML references (checkpoints under ``experiments/``, benchmark data under ``data/``) is missing
there, so validation must report each, as ``FileNotFoundError`` naming the option path and the file, before it
passes with a stand-in put in its place: a randomly initialised checkpoint of the YAML's arch, a folder of tiny
PNG pairs, a pair file listing them.
"""
from pathlib import Path

import numpy as np
import pytest
import torch
from basicsr.archs import build_network
from helpers import ROOT

from basicsr_unlearn.config import load_options, validate_options
from basicsr_unlearn.data.image_io import write_image

OPTIONS = ROOT / 'options'
BASES = sorted(p for p in OPTIONS.glob('_base_/**/*.yml'))
EXPERIMENTS = sorted(p for p in OPTIONS.rglob('*.yml') if '_base_' not in p.relative_to(OPTIONS).parts)
HOST = OPTIONS / 'train' / 'train_promptir-tiny_demo3_l1_2kit.yml'  # a complete run for fragments and tool inputs
PHASES = ('train', 'val', 'test')  # BasicSR's phase prefixes; a tool's own phase is validated as val_<phase>
STAND_IN_IMAGES = 8  # images per stand-in data folder (role groups and pools of a few samples fit)


def referenced_files(block: object, where: str = '') -> dict[str, str]:
    """``{option path: path}`` of every checkpoint (``*.pth``), data root (``dataroot_*``) and ``meta_info_file``."""
    if isinstance(block, dict):
        return {k: v for key, value in block.items()
                for k, v in referenced_files(value, f'{where}.{key}' if where else str(key)).items()}
    if isinstance(block, list):
        return {k: v for i, value in enumerate(block) for k, v in referenced_files(value, f'{where}[{i}]').items()}
    key = where.rsplit('.', 1)[-1]
    is_file = key.startswith('dataroot_') or key == 'meta_info_file' or str(block).endswith('.pth')
    return {where: block} if isinstance(block, str) and is_file else {}


def write_stand_in(opt: dict, option_path: str, path: Path, files: dict[str, str]) -> list[str]:
    """Put a stand-in for the missing ``path`` of ``option_path``; returns the paths now provided.

    A checkpoint of the arch it loads (``path.pretrain_network_<x>`` -> ``network_<x>`` if the YAML has it, else
    ``network_g``; BasicSR's ``{'params': ...}``); a folder of tiny PNGs (the same names in every folder); a pair file
    of those names, written with the images in its source's data roots (``files``: the referenced files), which it
    lists.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == '.pth':
        label = option_path.removeprefix('path.pretrain_network_') if option_path.startswith('path.') else 'g'
        torch.save({'params': build_network(dict(opt.get(f'network_{label}') or opt['network_g'])).state_dict()}, path)
        return [str(path)]
    names = [f'img{i}.png' for i in range(STAND_IN_IMAGES)]
    if not option_path.endswith('meta_info_file'):
        rng = np.random.default_rng(0)
        for name in names:
            write_image(path / name, rng.random((16, 16, 3)))
        return [str(path)]
    path.write_text(''.join(f'{name} {name}\n' for name in names))
    source = option_path.removesuffix('meta_info_file')
    roots = [v for k, v in files.items() if k.startswith(source) and k.rsplit('.', 1)[-1].startswith('dataroot_')]
    for root in roots:
        if not Path(root).exists():
            write_stand_in(opt, f'{source}dataroot', Path(root), files)
    return [str(path), *roots]


def merged(base: dict, override: dict) -> dict:
    """``base`` with ``override`` merged in: nested dicts key by key unless their ``type`` differs (then replaced, as
    a new arch block replaces the old one), any other value replaced."""
    out = dict(base)
    for key, value in override.items():
        same_kind = isinstance(out.get(key), dict) and out[key].get('type') == value.get('type', out[key].get('type'))
        out[key] = merged(out[key], value) if isinstance(value, dict) and same_kind else value
    return out


def over_host(fragment: dict) -> dict:
    """``fragment`` merged over :data:`HOST`, a tool's own dataset phases (e.g. ``query``) renamed ``val_<phase>``."""
    datasets = {phase if phase.split('_')[0] in PHASES else f'val_{phase}': block
                for phase, block in (fragment.get('datasets') or {}).items()}
    return merged(load_options(str(HOST)), {**fragment, **({'datasets': datasets} if datasets else {})})


def check_validates(opt: dict, where: str, demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                    is_train: bool = True) -> None:
    """Validate ``opt`` in a folder holding only the tiny demo set: each missing file must be reported (option path
    and file) before validation passes with its stand-in there."""
    (tmp_path / 'datasets').symlink_to(demo_root.parent, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    missing = {k: v for k, v in referenced_files(opt).items() if not Path(v).exists()}
    provided: set[str] = set()  # stand-ins written, each after validation reported it (or the pair file listing it)
    while True:
        try:
            validate_options(opt, where=where, is_train=is_train)
            break
        except FileNotFoundError as error:
            hits = [k for k, path in missing.items() if path not in provided and k in str(error) and path in str(error)]
            assert hits, f'FileNotFoundError names none of the missing files {missing}: {error}'
            provided.update(write_stand_in(opt, hits[0], Path(missing[hits[0]]), missing))
    assert provided == set(missing.values())  # every referenced file was checked before any work


def test_options_are_discovered() -> None:
    assert len(EXPERIMENTS) >= 10 and {p.parent.name for p in EXPERIMENTS} >= {'train', 'unlearn', 'test', 'distill'}


@pytest.mark.parametrize('option_file', EXPERIMENTS, ids=lambda p: str(p.relative_to(OPTIONS)))
def test_experiment_yaml_loads_and_validates(option_file: Path, demo_root: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    opt = load_options(str(option_file))
    assert '_base_' not in opt
    if 'model_type' not in opt:  # a tool's input (e.g. the ASVP study's arch and data)
        check_validates(over_host(opt), f'{HOST.name} + {option_file.name}', demo_root, tmp_path, monkeypatch)
        return
    assert opt['name'] == option_file.stem  # mmagic-style: the file is named after the run
    check_validates(opt, str(option_file), demo_root, tmp_path, monkeypatch, is_train=option_file.parent.name != 'test')


@pytest.mark.parametrize('base_file', BASES, ids=lambda p: str(p.relative_to(OPTIONS)))
def test_base_fragment_loads_and_validates_where_used(base_file: Path, demo_root: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A fragment inherited by another YAML is validated there; any other one over :data:`HOST`."""
    fragment = load_options(str(base_file))
    assert fragment and '_base_' not in fragment
    if not any(base_file.name in p.read_text() for p in EXPERIMENTS + BASES if p != base_file):
        check_validates(over_host(fragment), f'{HOST.name} + {base_file.name}', demo_root, tmp_path, monkeypatch)
