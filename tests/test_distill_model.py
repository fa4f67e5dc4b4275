"""DistillModel: trains from a frozen, ASVP-protected teacher through BasicSR's pipeline; GT never used in training."""
import json
import math

import pytest
import torch
from basicsr.archs.edsr_arch import EDSR
from basicsr.models import build_model
from helpers import run_tool, tiny_train_options, write_noisy_pairs, write_yaml

TEACHER = {'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 16, 'num_block': 2, 'upscale': 1,
           'img_range': 1.0, 'rgb_mean': [0.5, 0.5, 0.5]}


def save_teacher(path) -> str:
    torch.manual_seed(0)
    net = EDSR(**{k: v for k, v in TEACHER.items() if k != 'type'})
    torch.save({'params': net.state_dict()}, path)
    return str(path)


def distill_options(tmp, name: str, total_iter: int = 4) -> dict:
    opt = tiny_train_options(tmp / 'data', name, total_iter)
    opt['model_type'] = 'DistillModel'
    opt['network_teacher'] = TEACHER
    opt['path'].update(pretrain_network_teacher=save_teacher(tmp / 'teacher.pth'),
                       ignore_resume_networks=['network_teacher'])
    opt['distill'] = {'type': 'InverseASVPKD', 'output_weight': 1.0, 'feature_weight': 0.5,
                      'taps': [['body.0', 'body.1']], 'layout': 'channel_space'}
    opt['asvp'] = {'targets': ['body.1'], 'k': 2, 'h': 4.0, 'mode': 'exposed'}
    opt['val']['val_freq'] = 2
    return opt


def test_distill_run_trains_and_evaluates(tmp_path):
    write_noisy_pairs(tmp_path / 'data' / 'train', count=4, size=32, seed=1)
    write_noisy_pairs(tmp_path / 'data' / 'val', count=3, size=28, seed=2)
    option_file = write_yaml(tmp_path / 'distill.yml', distill_options(tmp_path, 'distill_tiny'))
    proc = run_tool('train.py', ['-opt', option_file], cwd=tmp_path, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    exp = tmp_path / 'experiments' / 'distill_tiny'
    assert (exp / 'models' / 'net_g_latest.pth').is_file()
    adapters = torch.load(exp / 'models' / 'net_attack_latest.pth', weights_only=True)['params']
    assert adapters['adapters.0.weight'].shape == (16, 8, 1, 1)  # student body.0 (8 ch) -> teacher body.1 (16 ch)
    log = json.loads((exp / 'train_log.json').read_text())
    assert [it for it, _ in log['val']] == [2, 4]
    assert all(entry['noise25']['psnr'] > 5 for _, entry in log['val'])
    log_text = next(exp.glob('train_distill_tiny_*.log')).read_text()
    assert 'l_kd_out' in log_text and 'l_kd_feat' in log_text and 'attack InverseASVPKD(' in log_text


def parsed_options(tmp, type_: str = 'InverseASVPKD', **distill) -> dict:
    """Options as BasicSR's parse_options leaves them (CPU, one process), for building the model in-process."""
    opt = distill_options(tmp, 'inproc')
    opt['distill'].update(distill, type=type_)
    if type_ != 'InverseASVPKD':
        opt['distill'].pop('layout')
    opt.update(is_train=True, dist=False, rank=0, world_size=1, num_gpu=0)
    for key in ('models', 'training_states', 'log', 'visualization', 'experiments_root'):
        opt['path'][key] = str(tmp / 'exp' / key)
    return opt


def test_ground_truth_never_used_and_exposed_teacher_output_identical(tmp_path):
    model = build_model(parsed_options(tmp_path))
    lq = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        protected_out, feats = model.teacher_targets(lq)
        model.defense.remove()
        clean_out, clean_feats = model.teacher_targets(lq)
    assert torch.equal(protected_out, clean_out)  # exposed mode: the teacher's output is untouched
    model.feed_data({'lq': lq, 'gt': torch.full_like(lq, float('nan'))})
    before = [p.detach().clone() for p in model.net_g.parameters()]
    model.optimize_parameters(1)
    assert all(math.isfinite(v) for v in model.log_dict.values())
    assert all(torch.isfinite(p).all() for p in model.net_g.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.net_g.parameters(), strict=True))


def test_feature_taps_read_through_the_defence(tmp_path):
    model = build_model(parsed_options(tmp_path, 'KD'))
    lq = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    _, observed = model.teacher_targets(lq)
    assert torch.equal(observed[0], model.defense.exposed_features['body.1'])
    assert not torch.allclose(observed[0], model.teacher_taps['body.1'])
    attacked = build_model(parsed_options(tmp_path))
    _, undone = attacked.teacher_targets(lq)
    error = (undone[0] - attacked.teacher_taps['body.1']).norm()
    assert error < 0.5 * (observed[0] - model.teacher_taps['body.1']).norm()


def test_stored_teacher_targets_replace_the_teacher_forward(tmp_path):
    lq = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    steps = []
    for stored in (False, True):
        torch.manual_seed(0)
        model = build_model(parsed_options(tmp_path, 'KD'))
        output, taps = model.teacher_targets(lq)
        batch = {'lq': lq, **({'answers': {'output': output, 'taps': taps}} if stored else {})}
        model.feed_data(batch)
        if stored:  # the teacher must not run: a broken teacher would change nothing
            model.net_teacher.register_forward_hook(lambda *args: (_ for _ in ()).throw(AssertionError('ran')))
        model.optimize_parameters(1)
        steps.append([p.detach().clone() for p in model.net_g.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*steps, strict=True))


def test_bad_distill_options_are_named(tmp_path):
    from basicsr_unlearn.models.distill_model import DistillModel

    opt = distill_options(tmp_path, 'bad')
    opt['distill']['type'] = 'Inverse'
    with pytest.raises(ValueError, match="distill.type: unknown 'Inverse'; expected one of InverseASVPKD, KD"):
        DistillModel.check_options(opt)
    opt['distill'] = {'feature_weight': 1.0}
    with pytest.raises(ValueError, match='distill.taps: feature_weight > 0 needs'):
        DistillModel.check_options(opt)
    with pytest.raises(ValueError, match="distill.taps\\[0\\]: 'nope' is not a module of network_g"):
        build_model(parsed_options(tmp_path, taps=[['nope', 'body.1']]))


def test_teacher_is_padded_with_its_own_multiple(tmp_path):
    model = build_model(parsed_options(tmp_path))
    model.get_bare_model(model.net_g).pad_multiple = 16  # a student arch with a coarser multiple
    model.opt['val']['pad_multiple'] = 4
    assert model.pad_multiple() == 16 and model.teacher_multiple() == 4
    model.net_teacher.pad_multiple = 2
    assert model.teacher_multiple() == 2
    lq = torch.rand(1, 3, 18, 18, generator=torch.Generator().manual_seed(0))
    out, _ = model.teacher_targets(lq)
    assert out.shape == lq.shape


DDP_WORKER = '''
import json, sys
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

import basicsr_unlearn  # noqa: F401
from basicsr.models import build_model
from basicsr_unlearn import compat
from test_distill_model import parsed_options

dist.init_process_group('gloo', timeout=timedelta(seconds=60))
rank, out = dist.get_rank(), Path(sys.argv[1])
(out / f'rank{rank}').mkdir()
opt = parsed_options(out / f'rank{rank}')
opt.update(dist=True, rank=rank, world_size=2)
torch.manual_seed(rank)  # BasicSR seeds every rank differently (manual_seed + rank)
model = build_model(opt)
init = [p.detach().clone() for p in model.attack.parameters()]
lq = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(10 + rank))  # each rank its own batch
for step in range(3):
    model.feed_data({'lq': lq})
    model.optimize_parameters(step + 1)
flat = torch.cat([p.detach().flatten() for p in model.attack.parameters()])
moved = max(float((p.detach() - q).abs().max()) for p, q in zip(model.attack.parameters(), init))
gathered = [torch.zeros_like(flat) for _ in range(2)]
dist.all_gather(gathered, flat)
if rank == 0:
    (out / 'result.json').write_text(json.dumps({'moved': moved,
                                                 'rank_gap': float((gathered[0] - gathered[1]).abs().max())}))
del model  # no DDP module may outlive the group (compat.destroy_process_group)
compat.destroy_process_group()
'''


def test_attack_adapters_stay_identical_across_two_ranks(tmp_path):
    """Two real gloo ranks, seeded differently and fed different batches: the adapters start from rank 0's and step
    with averaged gradients (DDP), so they agree to float precision while moving by ~1e-3 per Adam step."""
    import subprocess
    from pathlib import Path

    from helpers import TORCHRUN, free_port, tool_env

    (tmp_path / 'worker.py').write_text(DDP_WORKER)
    proc = subprocess.run([TORCHRUN, '--nproc_per_node=2', f'--master_port={free_port()}', str(tmp_path / 'worker.py'),
                           str(tmp_path)], cwd=tmp_path, env=tool_env(PYTHONPATH=str(Path(__file__).parent)),
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / 'result.json').read_text())
    assert result['moved'] > 1e-4  # the adapters trained (lr 1e-3, 3 Adam steps)
    assert result['rank_gap'] < 1e-6  # unwrapped: different initialisations (~0.1 apart) and gradients
