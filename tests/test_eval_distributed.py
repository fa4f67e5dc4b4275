"""evaluate() under a real 2-process gloo group (torchrun): a DistributedSampler's interleaved shards come back in
dataset order, each image once; a non-finite output on one rank is refused on both, with the same message."""
import json
import subprocess
from pathlib import Path

import pytest
import torch
from helpers import TORCHRUN, free_port, tool_env
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from basicsr_unlearn.evaluation.metrics import evaluate


class Pairs(Dataset):
    """Five noisy 16-px pairs of two degradations; ``black`` lists the items whose ``lq`` is all zeros."""

    opt = {'name': 'pairs'}

    def __init__(self, black: tuple[int, ...] = ()) -> None:
        g = torch.Generator().manual_seed(0)
        self.gt = torch.rand(5, 3, 16, 16, generator=g)
        self.lq = (self.gt + 0.1 * torch.randn(5, 3, 16, 16, generator=g)).clamp(0.01, 1)
        self.lq[list(black)] = 0
        self.names = ['rain', 'haze', 'rain', 'haze', 'rain']

    def __len__(self) -> int:
        return 5

    def __getitem__(self, i: int) -> dict:
        return {'lq': self.lq[i], 'gt': self.gt[i], 'lq_path': f'x/{i}.png', 'de_name': self.names[i]}


def nan_on_black(lq: torch.Tensor) -> torch.Tensor:
    """Identity, except an all-black input gives NaN (a broken model on one image)."""
    black = lq.flatten(1).amax(1).view(-1, 1, 1, 1) == 0
    return torch.where(black, torch.full_like(lq, float('nan')), lq)


def key_error_on_black(lq: torch.Tensor) -> torch.Tensor:
    """Identity, except an all-black input raises a KeyError (a failure other than a refusal)."""
    if (lq.flatten(1).amax(1) == 0).any():
        raise KeyError('prompt')
    return lq


WORKER = '''
import json, sys
from datetime import timedelta

import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

import basicsr_unlearn  # noqa: F401
from basicsr_unlearn.evaluation.metrics import evaluate
from test_eval_distributed import Pairs, key_error_on_black, nan_on_black

dist.init_process_group('gloo', timeout=timedelta(seconds=30))  # a rank left waiting fails in 30 s, not never
rank, out = dist.get_rank(), sys.argv[1]
record = {}
for shuffle in (False, True):
    sampler = DistributedSampler(Pairs(), shuffle=shuffle, seed=3)  # 5 images: shards of 3, one image repeated
    record[f'sampler_shuffle_{shuffle}'] = {
        'shard': list(sampler), 'result': evaluate(nan_on_black, DataLoader(Pairs(), batch_size=2, sampler=sampler))}
try:
    evaluate(nan_on_black, DataLoader(Pairs(black=(3,)), batch_size=2), source='model broken')  # item 3: rank 1
except Exception as err:
    record['error'] = [type(err).__name__, str(err)]
try:
    evaluate(key_error_on_black, DataLoader(Pairs(black=(3,)), batch_size=2))  # any other failure on rank 1
except Exception as err:
    record['other_error'] = [type(err).__name__, str(err)]
with open(f'{out}/rank{rank}.json', 'w') as f:
    json.dump(record, f)
dist.destroy_process_group()
'''


@pytest.fixture(scope='module')
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """What each of 2 ranks recorded (one torchrun for every case)."""
    out = tmp_path_factory.mktemp('eval_dist')
    (out / 'worker.py').write_text(WORKER)
    env = tool_env(PYTHONPATH=str(Path(__file__).parent))
    proc = subprocess.run([TORCHRUN, '--nproc_per_node=2', f'--master_port={free_port()}', str(out / 'worker.py'),
                           str(out)], cwd=out, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads((out / f'rank{r}.json').read_text()) for r in range(2)]


@pytest.mark.parametrize('shuffle', [False, True])
def test_distributed_sampler_shards_come_back_in_dataset_order_once(ranks: list[dict], shuffle: bool) -> None:
    single = evaluate(nan_on_black, DataLoader(Pairs(), batch_size=2))
    key = f'sampler_shuffle_{shuffle}'
    shards = [r[key]['shard'] for r in ranks]
    assert sorted(shards[0] + shards[1]) != list(range(5)) and set(shards[0] + shards[1]) == set(range(5))  # padded
    if not shuffle:
        assert shards == [[0, 2, 4], [1, 3, 0]]  # interleaved, not contiguous
    for rank in ranks:
        result = rank[key]['result']
        assert [r['name'] for r in result['per_image']] == ['0', '1', '2', '3', '4']
        assert {k: v['count'] for k, v in result['per_degradation'].items()} == {'rain': 3, 'haze': 2}
        for got, want in zip(result['per_image'], single['per_image'], strict=True):
            assert got['de_name'] == want['de_name']
            assert got['psnr'] == pytest.approx(want['psnr'], abs=1e-6)  # the same image, whichever rank scored it
            assert got['l1'] == pytest.approx(want['l1'], abs=1e-6)


def test_a_nan_output_on_one_rank_is_refused_on_every_rank(ranks: list[dict]) -> None:
    errors = [r['error'] for r in ranks]
    assert errors[0] == errors[1]
    kind, message = errors[0]
    assert kind == 'ValueError'
    assert message.startswith('model broken: non-finite output for x/3.png (768 of 768 values are NaN/inf)')


def test_single_process_sampler_shard_names_line_up_with_images() -> None:
    """Without a group, a 2-rank sampler's shard (rank 1: images 1, 3 and 0 again) is scored once each, in order."""
    sampler = DistributedSampler(Pairs(), num_replicas=2, rank=1, shuffle=False)
    result = evaluate(nan_on_black, DataLoader(Pairs(), batch_size=2, sampler=sampler))
    single = {r['name']: r for r in evaluate(nan_on_black, DataLoader(Pairs(), batch_size=2))['per_image']}
    assert [r['name'] for r in result['per_image']] == ['0', '1', '3']
    for got in result['per_image']:
        want = single[got['name']]
        assert got['de_name'] == want['de_name'] and got['psnr'] == pytest.approx(want['psnr'], abs=1e-6)



def test_any_other_failure_on_one_rank_reaches_every_rank(ranks: list[dict]) -> None:
    """Rank 1 (which holds image 3) re-raises its KeyError; rank 0 raises at once instead of waiting in the gather."""
    assert ranks[1]['other_error'] == ['KeyError', "'prompt'"]
    assert ranks[0]['other_error'] == ['RuntimeError', "rank 1: KeyError: 'prompt'"]
