"""Every YAML under options/ loads (``_base_`` resolved) and validates; a new YAML is tested automatically.

Experiment YAMLs validate as they are; a ``_base_`` fragment that no YAML inherits validates merged over a complete
training YAML. Each runs in a fresh folder holding the tiny demo set under ``datasets/demo`` (the paths the YAMLs
use) and no ``experiments/``: each checkpoint a YAML references must then be reported missing, as
``FileNotFoundError`` naming its option path and file, before validation passes with a real checkpoint of the
YAML's arch put in its place.
"""
from pathlib import Path

import pytest
import torch
from basicsr.archs import build_network
from helpers import ROOT

from basicsr_unlearn.config import load_options, validate_options

OPTIONS = ROOT / 'options'
BASES = sorted(p for p in OPTIONS.glob('_base_/**/*.yml'))
EXPERIMENTS = sorted(p for p in OPTIONS.rglob('*.yml') if '_base_' not in p.relative_to(OPTIONS).parts)
HOST = OPTIONS / 'train' / 'train_promptir-tiny_demo3_l1_2kit.yml'  # a complete run for fragments no YAML inherits


def referenced_checkpoints(block: object, where: str = '') -> dict[str, str]:
    """``{option path: file}`` of every ``*.pth`` string in the options (``path.pretrain_network_*``, references)."""
    if isinstance(block, dict):
        return {k: v for key, value in block.items()
                for k, v in referenced_checkpoints(value, f'{where}.{key}' if where else str(key)).items()}
    if isinstance(block, list):
        return {k: v for i, value in enumerate(block)
                for k, v in referenced_checkpoints(value, f'{where}[{i}]').items()}
    return {where: block} if isinstance(block, str) and block.endswith('.pth') else {}


def write_checkpoint(opt: dict, option_path: str, file: Path) -> None:
    """A randomly initialised checkpoint of the arch that ``option_path`` loads (``path.pretrain_network_<x>`` ->
    ``network_<x>`` if the YAML has it, else ``network_g``), in BasicSR's ``{'params': ...}`` format."""
    label = option_path.removeprefix('path.pretrain_network_') if option_path.startswith('path.') else 'g'
    net = build_network(dict(opt.get(f'network_{label}') or opt['network_g']))
    file.parent.mkdir(parents=True, exist_ok=True)
    torch.save({'params': net.state_dict()}, file)


def test_options_are_discovered() -> None:
    assert len(EXPERIMENTS) >= 10 and {p.parent.name for p in EXPERIMENTS} >= {'train', 'unlearn', 'test', 'distill'}


def merged(base: dict, override: dict) -> dict:
    """``base`` with ``override`` merged in: nested dicts key by key unless their ``type`` differs (then replaced, as
    a new arch block replaces the old one), any other value replaced."""
    out = dict(base)
    for key, value in override.items():
        same_kind = isinstance(out.get(key), dict) and out[key].get('type') == value.get('type', out[key].get('type'))
        out[key] = merged(out[key], value) if isinstance(value, dict) and same_kind else value
    return out


def check_validates(opt: dict, where: str, demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                    is_train: bool = True) -> None:
    """Validate ``opt`` in a folder with the tiny demo set and no checkpoints: each referenced checkpoint must be
    reported missing (option path and file), then validation passes with a checkpoint of the right arch there."""
    (tmp_path / 'datasets').symlink_to(demo_root.parent, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    missing = referenced_checkpoints(opt)
    reported: list[str] = []
    while True:
        try:
            validate_options(opt, where=where, is_train=is_train)
            break
        except FileNotFoundError as error:
            hits = [k for k, file in missing.items() if k not in reported and k in str(error) and file in str(error)]
            assert hits, f'FileNotFoundError names none of the missing checkpoints {missing}: {error}'
            reported += hits
            for key in hits:
                write_checkpoint(opt, key, tmp_path / missing[key])
    assert sorted(reported) == sorted(missing)  # every referenced checkpoint was checked before any work


@pytest.mark.parametrize('option_file', EXPERIMENTS, ids=lambda p: str(p.relative_to(OPTIONS)))
def test_experiment_yaml_loads_and_validates(option_file: Path, demo_root: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A launcher YAML validates as it is (``options/test/``: as test options); a tool's input without ``model_type``
    (e.g. the ASVP study's arch + data) validates merged over :data:`HOST`, as a run on it would."""
    opt = load_options(str(option_file))
    assert '_base_' not in opt
    if 'model_type' not in opt:
        check_validates(merged(load_options(str(HOST)), opt), f'{HOST.name} + {option_file.name}', demo_root,
                        tmp_path, monkeypatch)
        return
    assert opt['name'] == option_file.stem  # mmagic-style: the file is named after the run
    check_validates(opt, str(option_file), demo_root, tmp_path, monkeypatch, is_train=option_file.parent.name != 'test')


@pytest.mark.parametrize('base_file', BASES, ids=lambda p: str(p.relative_to(OPTIONS)))
def test_base_fragment_loads_and_validates_where_used(base_file: Path, demo_root: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A fragment inherited by an experiment YAML is validated there; any other one over :data:`HOST`."""
    fragment = load_options(str(base_file))
    assert fragment and '_base_' not in fragment
    if not any(base_file.name in p.read_text() for p in EXPERIMENTS + BASES if p != base_file):
        opt = merged(load_options(str(HOST)), fragment)
        check_validates(opt, f'{HOST.name} + {base_file.name}', demo_root, tmp_path, monkeypatch)
