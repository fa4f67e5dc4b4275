"""Each compat fix, observed in a real interpreter (would fail on stock BasicSR 1.4.2)."""
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import free_port, run_python, run_tool, tiny_workspace, tool_env

from basicsr_unlearn import checkpoint, compat
from basicsr_unlearn.config import rewrite_local_rank


def test_init_dist_pytorch_uses_gloo_on_cpu_and_fork(tmp_path: Path) -> None:
    code = ('import basicsr_unlearn\nfrom basicsr_unlearn import compat\ncompat.apply()\n'
            'from basicsr.utils.dist_util import init_dist\n'
            'import torch.distributed as d, torch.multiprocessing as mp\n'
            "init_dist('pytorch')\nprint('RESULT', d.get_backend(), d.get_world_size(), mp.get_start_method())\n"
            'compat.destroy_process_group()\nprint("DESTROYED", d.is_initialized())\n')
    env = tool_env(RANK='0', LOCAL_RANK='0', WORLD_SIZE='1', MASTER_ADDR='127.0.0.1', MASTER_PORT=str(free_port()))
    env.pop('BASICSR_DIST_BACKEND', None)
    proc = run_python(code, tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'RESULT gloo 1 fork' in proc.stdout
    assert 'DESTROYED False' in proc.stdout


def _state(tmp_path: Path, iters: list[int], extra: object = None) -> dict:
    """``iters`` training states (and their ``net_g_<iter>.pth``) under ``tmp_path/exp``; auto-resume options."""
    folder, models = tmp_path / 'exp' / 'training_states', tmp_path / 'exp' / 'models'
    folder.mkdir(parents=True)
    models.mkdir()
    for it in iters:
        state = {'epoch': 1, 'iter': it, 'optimizers': [{'state': {0: {'exp_avg': torch.ones(2)}}}], 'schedulers': []}
        if extra is not None:
            state['extra'] = extra
        torch.save(state, folder / f'{it}.state')
        torch.save({'params': {'w': torch.ones(1)}}, models / f'net_g_{it}.pth')
    return {'auto_resume': True, 'num_gpu': 0, 'network_g': {'type': 'EDSR'},
            'path': {'training_states': str(folder), 'models': str(models), 'resume_state': None}}


def test_resume_state_loads_on_cpu_from_training_states_folder(tmp_path: Path, monkeypatch) -> None:
    import basicsr.train

    compat.apply()
    opt = _state(tmp_path, [2, 10, 4])
    monkeypatch.chdir(tmp_path)  # BasicSR's own lookup would scan ./experiments/<name>: absent here
    state = basicsr.train.load_resume_state(opt)
    assert state['iter'] == 10
    assert state['optimizers'][0]['state'][0]['exp_avg'].device.type == 'cpu'
    assert opt['path']['resume_state'].endswith('10.state')
    assert opt['path']['pretrain_network_g'] == str(tmp_path / 'exp' / 'models' / 'net_g_10.pth')


def test_resume_state_is_loaded_weights_only(tmp_path: Path) -> None:
    opt = _state(tmp_path, [3], extra=np.float64(1.5))  # not a plain type: rejected by weights_only=True
    opt.update(auto_resume=False)
    opt['path']['resume_state'] = str(tmp_path / 'exp' / 'training_states' / '3.state')
    with pytest.raises(ValueError, match=r'path\.resume_state: .*3\.state: holds an object that '
                                         r'torch\.load\(weights_only=True\) refuses \(numpy'):
        compat.load_resume_state(opt)


@pytest.mark.parametrize('damage', ['truncated state', 'missing net', 'truncated net'])
def test_auto_resume_falls_back_to_the_previous_state(tmp_path: Path, damage: str, caplog) -> None:
    opt = _state(tmp_path, [4, 8])
    exp = tmp_path / 'exp'
    victim = exp / 'training_states' / '8.state' if damage == 'truncated state' else exp / 'models' / 'net_g_8.pth'
    if damage == 'missing net':
        victim.unlink()
    else:
        victim.write_bytes(victim.read_bytes()[:100])
    with caplog.at_level('WARNING', logger='basicsr'):
        state = compat.load_resume_state(opt)
    assert state['iter'] == 4 and opt['path']['resume_state'].endswith('4.state')
    assert opt['path']['pretrain_network_g'].endswith('net_g_4.pth')
    assert str(victim) in caplog.text and 'falling back to the previous state' in caplog.text


def test_auto_resume_refuses_when_no_state_is_readable(tmp_path: Path) -> None:
    opt = _state(tmp_path, [5])
    (tmp_path / 'exp' / 'training_states' / '5.state').write_bytes(b'')
    with pytest.raises(ValueError, match=r'--auto_resume: no readable training state in .*training_states: '
                                         r'--auto_resume: .*5\.state: cannot read the checkpoint \(0 bytes'):
        compat.load_resume_state(opt)
    assert compat.load_resume_state(_state(tmp_path / 'fresh', [])) is None


def test_local_rank_hyphen_is_accepted(tmp_path: Path) -> None:
    assert rewrite_local_rank(['-opt', 'x.yml', '--local-rank=1', '--local-rank', '2']) == \
        ['-opt', 'x.yml', '--local_rank=1', '--local_rank', '2']
    option_file = tiny_workspace(tmp_path, total_iter=2)
    proc = run_tool('train.py', ['-opt', option_file, '--local-rank=0'], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / 'experiments' / 'tiny' / 'models' / 'net_g_latest.pth').is_file()


def test_apply_is_idempotent() -> None:
    import basicsr.train
    from basicsr.models.base_model import BaseModel
    from basicsr.utils import dist_util

    compat.apply()
    compat.apply()
    assert dist_util._init_dist_pytorch is compat.init_dist_pytorch
    assert BaseModel.load_network is checkpoint.load_network
    assert basicsr.train.load_resume_state is compat.load_resume_state
