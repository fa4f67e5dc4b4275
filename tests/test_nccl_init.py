"""Distributed init code paths without a GPU or NCCL: BasicSR's ``init_dist('pytorch')`` with the compat layer picks
NCCL on GPU ``LOCAL_RANK`` when CUDA is available and gloo otherwise (torch.cuda and init_process_group faked)."""
import datetime
import os

import pytest
import torch
import torch.distributed as dist
from basicsr.utils import dist_util

from basicsr_unlearn import compat

TORCHRUN_ENV = {'RANK': '6', 'LOCAL_RANK': '1', 'WORLD_SIZE': '8', 'MASTER_ADDR': '10.0.0.1', 'MASTER_PORT': '29500'}


class RecordingEnviron(dict):
    """``os.environ`` stand-in that records the names read."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.read: list[str] = []

    def get(self, key: str, default: str | None = None) -> str | None:
        self.read.append(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.read.append(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.read.append(str(key))
        return super().__contains__(key)


@pytest.fixture
def fake_torch(monkeypatch):
    """Fake CUDA (4 devices, ``cuda`` toggles availability) and a recording ``init_process_group``; BasicSR's
    ``init_dist`` routed to the compat replacement without touching the start method."""
    calls = {'set_device': [], 'init': [], 'cuda': True}
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: calls['cuda'])
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 4 if calls['cuda'] else 0)
    monkeypatch.setattr(torch.cuda, 'set_device', lambda device: calls['set_device'].append(device))
    monkeypatch.setattr(dist, 'init_process_group', lambda **kwargs: calls['init'].append(kwargs))
    monkeypatch.setattr(dist_util.mp, 'get_start_method', lambda allow_none=False: 'fork')
    monkeypatch.setattr(dist_util, '_init_dist_pytorch', compat.init_dist_pytorch)  # what compat.apply() installs
    return calls


def init(monkeypatch, **env: str) -> RecordingEnviron:
    environ = RecordingEnviron({**TORCHRUN_ENV, **env})
    monkeypatch.setattr(os, 'environ', environ)
    dist_util.init_dist('pytorch')  # BasicSR's entry point; it passes backend='nccl'
    return environ


def test_cuda_gives_nccl_on_the_local_rank_gpu(fake_torch, monkeypatch) -> None:
    environ = init(monkeypatch)
    assert fake_torch['set_device'] == [1]  # LOCAL_RANK, not BasicSR's RANK % device_count (= 2)
    assert fake_torch['init'] == [{'backend': 'nccl', 'device_id': torch.device('cuda', 1)}]
    assert set(environ.read) == {'BASICSR_DIST_BACKEND', 'LOCAL_RANK', 'BASICSR_DIST_TIMEOUT'}


def test_no_cuda_gives_gloo_and_no_device(fake_torch, monkeypatch) -> None:
    fake_torch['cuda'] = False
    environ = init(monkeypatch)
    assert fake_torch['set_device'] == []
    assert fake_torch['init'] == [{'backend': 'gloo'}]
    assert set(environ.read) == {'BASICSR_DIST_BACKEND', 'BASICSR_DIST_TIMEOUT'}


def test_env_backend_and_timeout(fake_torch, monkeypatch) -> None:
    init(monkeypatch, BASICSR_DIST_BACKEND='gloo', BASICSR_DIST_TIMEOUT='90')
    assert fake_torch['set_device'] == []  # gloo on a GPU machine: the device is left to the model
    assert fake_torch['init'] == [{'backend': 'gloo', 'timeout': datetime.timedelta(seconds=90)}]
    init(monkeypatch, BASICSR_DIST_TIMEOUT='30', LOCAL_RANK='3')
    assert fake_torch['set_device'] == [3]
    assert fake_torch['init'][-1] == {'backend': 'nccl', 'device_id': torch.device('cuda', 3),
                                      'timeout': datetime.timedelta(seconds=30)}


def test_nccl_misconfigurations_are_clear_errors(fake_torch, monkeypatch) -> None:
    with pytest.raises(RuntimeError, match=r'LOCAL_RANK=4: only 4 CUDA device\(s\) visible.*--nproc_per_node'):
        init(monkeypatch, LOCAL_RANK='4')
    fake_torch['cuda'] = False
    with pytest.raises(RuntimeError, match='BASICSR_DIST_BACKEND=nccl: NCCL needs CUDA and none is available'):
        init(monkeypatch, BASICSR_DIST_BACKEND='nccl')
    assert fake_torch['set_device'] == [] and fake_torch['init'] == []


def test_resume_state_maps_to_the_current_gpu(fake_torch, monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(torch.cuda, 'current_device', lambda: 1)
    seen = []
    monkeypatch.setattr(compat.checkpoint, 'read_checkpoint',
                        lambda path, where, map_location: seen.append(map_location) or {'iter': 4})
    for cuda in (True, False):
        fake_torch['cuda'] = cuda
        opt = {'num_gpu': 1, 'network_g': {}, 'path': {'resume_state': str(tmp_path / '4.state'),
                                                       'models': str(tmp_path / 'models')}}
        assert compat.load_resume_state(opt) == {'iter': 4}
    assert seen == ['cuda:1', 'cpu']
