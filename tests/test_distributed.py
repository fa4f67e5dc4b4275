"""Real 2-process torchrun (gloo on CPU): SIGKILL mid-run then --auto_resume; sharded evaluation equals 1 process."""
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import torch
import yaml
from helpers import ROOT, TORCHRUN, descendants, free_port, run_tool, tiny_workspace, tool_env, write_yaml


def torchrun(tool: str, args: list[str], cwd: Path) -> list[str]:
    return [TORCHRUN, '--nproc_per_node=2', f'--master_port={free_port()}', str(ROOT / 'tools' / tool), *args,
            '--launcher', 'pytorch']


def test_torchrun_sigkill_then_auto_resume(tmp_path: Path) -> None:
    """Rank 0 pauses on an explicit "about to write" marker before ``20.state`` (10.state and both net files of 10
    and 20 written); launcher and workers are SIGKILLed there; ``--auto_resume`` takes the dead run's lock over and
    continues from iteration 10."""
    total = 40
    option_file = tiny_workspace(tmp_path, total_iter=total)
    overrides = ['--cfg-options', 'val.val_freq=1000', 'logger.print_freq=10', 'logger.save_checkpoint_freq=10']
    exp = tmp_path / 'experiments' / 'tiny'
    states = exp / 'training_states'
    marker = tmp_path / 'about_to_write'
    env = tool_env(BASICSR_UNLEARN_HOLD_BEFORE_WRITE='*/training_states/.20.state.tmp*',
                   BASICSR_UNLEARN_HOLD_MARKER=str(marker))
    proc = subprocess.Popen(torchrun('train.py', ['-opt', option_file, *overrides], tmp_path), cwd=tmp_path,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, 'training never reached the marker'
        time.sleep(0.05)
    lock = json.loads((tmp_path / 'experiments' / '.tiny.lock').read_text())
    assert lock['pid'] == int(marker.read_text())  # rank 0 holds the experiment lock
    for pid in [proc.pid, *descendants(proc.pid)]:  # the launcher and both workers, at once
        os.kill(pid, signal.SIGKILL)
    proc.wait()
    assert sorted(p.name for p in states.iterdir()) == ['10.state']
    assert not (exp / 'models' / 'net_g_latest.pth').exists()

    resumed = subprocess.run(torchrun('train.py', ['-opt', option_file, *overrides, '--auto_resume'], tmp_path),
                             cwd=tmp_path, env=tool_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = (resumed.stdout + resumed.stderr)
    assert 'Resuming training from epoch: ' in log and 'iter: 10.' in log
    assert json.loads((tmp_path / 'experiments' / '.tiny.lock').read_text())['pid'] != lock['pid']  # taken over
    assert not list((tmp_path / 'experiments').glob('tiny_archived_*'))
    models = exp / 'models'
    assert (states / f'{total}.state').is_file()
    for name in (f'net_g_{total}.pth', 'net_g_latest.pth'):
        params = torch.load(models / name, map_location='cpu', weights_only=True)['params']
        assert params['conv_first.weight'].shape == (8, 3, 3, 3)
    state = torch.load(states / f'{total}.state', weights_only=True)
    assert state['iter'] == total and state['wall_time_s'] > 0
    train_log = json.loads((exp / 'train_log.json').read_text())
    iters = [it for it, _ in train_log['loss']]
    assert train_log['iter'] == total and iters == sorted(set(iters)) and iters[-1] == total
    assert train_log['val'][-1][0] == total and 'noise25' in train_log['val'][-1][1]


def test_sharded_evaluation_matches_single_process(tmp_path: Path) -> None:
    option_file = tiny_workspace(tmp_path, total_iter=2)
    assert run_tool('train.py', ['-opt', option_file], tmp_path).returncode == 0
    opt = yaml.safe_load(Path(option_file).read_text())
    opt['datasets'] = {'test_1': dict(opt['datasets']['val'], name='noise25')}
    opt['path']['pretrain_network_g'] = 'experiments/tiny/models/net_g_latest.pth'
    for name in ('single', 'sharded'):
        write_yaml(tmp_path / f'{name}.yml', dict(opt, name=name))
    single = run_tool('test.py', ['-opt', 'single.yml'], tmp_path)
    assert single.returncode == 0, single.stderr[-2000:]
    sharded = subprocess.run(torchrun('test.py', ['-opt', 'sharded.yml'], tmp_path), cwd=tmp_path, env=tool_env(),
                             capture_output=True, text=True, timeout=300)
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    one, two = (json.loads((tmp_path / 'results' / n / 'metrics.json').read_text()) for n in ('single', 'sharded'))
    assert [r['name'] for r in two['per_image']] == ['000', '001', '002']
    assert two['per_image'] == one['per_image']
    assert two['per_degradation'] == one['per_degradation']
