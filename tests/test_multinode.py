"""Real 2-node run on one machine: two ``torchrun --nnodes=2 --nproc_per_node=1`` agents meet through the c10d
rendezvous on 127.0.0.1 (gloo) and train, then unlearn, a few iterations (the README's "Multi-node" commands)."""
import json
import subprocess
from pathlib import Path

import pytest
from helpers import CONSTANT_SCHEDULE, LAUNCHER_LOADER, ROOT, TINY_EDSR, TORCHRUN, free_port, tool_env, write_yaml

BASE = ROOT / 'options' / '_base_'


def two_nodes(option_file: str, cwd: Path, run_id: str) -> list[subprocess.CompletedProcess]:
    """Start the two node agents at once (as two hosts would), wait for both; returns their completed processes."""
    endpoint = f'127.0.0.1:{free_port()}'
    cmd = [TORCHRUN, '--nnodes=2', '--nproc_per_node=1', '--rdzv_backend=c10d', f'--rdzv_endpoint={endpoint}',
           f'--rdzv_id={run_id}', '--local_addr=127.0.0.1', '--max_restarts=0', str(ROOT / 'tools' / 'train.py'),
           '-opt', option_file, '--launcher', 'pytorch']
    nodes = [subprocess.Popen(cmd, cwd=cwd, env=tool_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    done = []
    for node in nodes:
        try:
            out, err = node.communicate(timeout=400)
        except subprocess.TimeoutExpired:
            for other in nodes:
                other.kill()
            raise
        done.append(subprocess.CompletedProcess(cmd, node.returncode, out, err))
    return done


@pytest.mark.slow
def test_two_node_torchrun_trains_then_unlearns(demo_root: Path) -> None:
    cwd = demo_root.parents[1]
    train = {'_base_': [str(BASE / 'runtime.yml'), str(BASE / 'datasets' / 'demo3.yml')],
             'name': 'multinode_train', 'model_type': 'AllInOneModel', 'network_g': TINY_EDSR,
             'datasets': {'train': {**LAUNCHER_LOADER, 'batch_size_per_gpu': 2}},
             'train': {**CONSTANT_SCHEDULE, 'total_iter': 4}, 'val': {'val_freq': 4},
             'logger': {'print_freq': 1, 'save_checkpoint_freq': 4}}
    nodes = two_nodes(write_yaml(cwd / 'multinode_train.yml', train), cwd, 'train')
    for node in nodes:
        assert node.returncode == 0, node.stderr[-3000:]
    exp = cwd / 'experiments' / 'multinode_train'
    log_text = next(exp.glob('train_*.log')).read_text()
    assert 'dist: True' in log_text and 'world_size: 2' in log_text
    train_log = json.loads((exp / 'train_log.json').read_text())
    assert train_log['iter'] == 4 and train_log['val'][-1][0] == 4
    original = exp / 'models' / 'net_g_latest.pth'
    assert original.is_file()

    unlearn = {'_base_': [str(BASE / 'runtime.yml'), str(BASE / 'unlearn' / 'demo3_forget-haze.yml')],
               'name': 'multinode_unlearn', 'model_type': 'UnlearnModel', 'network_g': TINY_EDSR,
               'path': {'pretrain_network_g': str(original)},
               'datasets': {'train': {**LAUNCHER_LOADER, 'batch_size_per_gpu': 1}},
               'train': {**CONSTANT_SCHEDULE, 'total_iter': 3,
                         'method': {'type': 'GaAdv', 'tau': 'input', 'eps': 0.008, 'steps': 1}},
               'val': {'val_freq': 3}, 'logger': {'print_freq': 1, 'save_checkpoint_freq': 3}}
    nodes = two_nodes(write_yaml(cwd / 'multinode_unlearn.yml', unlearn), cwd, 'unlearn')
    for node in nodes:
        assert node.returncode == 0, node.stderr[-3000:]
    exp = cwd / 'experiments' / 'multinode_unlearn'
    assert 'world_size: 2' in next(exp.glob('train_*.log')).read_text()
    unlearn_log = json.loads((exp / 'train_log.json').read_text())
    assert unlearn_log['iter'] == 3 and 'haze' in unlearn_log['val'][-1][1]
    assert (exp / 'models' / 'net_g_latest.pth').is_file()
