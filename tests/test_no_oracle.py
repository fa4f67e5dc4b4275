"""No oracle in the shipped unlearning YAMLs: none names a retrained checkpoint (a path with ``wo-``) or a
``reference:`` key, nor uses an oracle stop criterion, unless the file's name says ``oracle``. Parametrised over the
files, so a new YAML is checked automatically."""
from pathlib import Path

import pytest
import yaml

from basicsr_unlearn.config import load_options
from basicsr_unlearn.unlearning.stops import STOP_REGISTRY

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted((ROOT / 'options' / 'unlearn').rglob('*.yml'))


def oracle_traces(node: object, where: str = '') -> list[str]:
    """Option paths whose key is ``reference`` or whose string value names a ``wo-`` (retrained-without) model."""
    if isinstance(node, dict):
        return [hit for k, v in node.items()
                for hit in ([f'{where}{k}'] if k == 'reference' else []) + oracle_traces(v, f'{where}{k}.')]
    if isinstance(node, list):
        return [hit for i, v in enumerate(node) for hit in oracle_traces(v, f'{where}[{i}].')]
    return [where.rstrip('.')] if isinstance(node, str) and 'wo-' in node else []


def test_oracle_traces_finds_both_kinds() -> None:
    opt = {'train': {'stop': {'type': 'OracleStop', 'reference': 'experiments/x/models/net_g_latest.pth'}},
           'notes': ['experiments/train_promptir-tiny_demo3-wo-haze_l1_1714it']}
    assert oracle_traces(opt) == ['train.stop.reference', 'notes.[0]']
    assert oracle_traces({'train': {'stop': {'type': 'InputLevelStop', 'margin': 0.0}}}) == []


def test_there_are_oracle_free_method_files() -> None:
    assert len([f for f in FILES if 'oracle' not in f.name]) >= 8


@pytest.mark.parametrize('path', FILES, ids=[f.name for f in FILES])
def test_no_retrained_checkpoint_unless_named_oracle(path: Path) -> None:
    raw = yaml.safe_load(path.read_text())
    merged = load_options(str(path))  # _base_ resolved: a base cannot smuggle a reference in either
    stop = (merged.get('train') or {}).get('stop')
    oracle_stop = stop is not None and STOP_REGISTRY.get(stop['type']).oracle
    if 'oracle' in path.name:
        assert oracle_traces(raw) and oracle_stop, f'{path.name} says oracle but uses no oracle'
    else:
        assert oracle_traces(raw) == [] and oracle_traces(merged) == [], path.name
        assert not oracle_stop, f'{path.name}: train.stop {stop["type"]} is an oracle stop'
