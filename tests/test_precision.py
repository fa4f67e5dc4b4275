"""train.amp / train.channels_last: option checks, ignored on CPU (same training as without), the fp16 grad-scaler
path and channels_last on the CPU through :class:`~basicsr_unlearn.precision.Precision`."""
import logging
from pathlib import Path

import pytest
import torch
from basicsr.archs import build_network
from basicsr.models.sr_model import SRModel
from helpers import ROOT, run_tool, tiny_train_options, tiny_workspace
from torch import nn

from basicsr_unlearn.config import load_options, validate_options
from basicsr_unlearn.models.all_in_one_model import AllInOneModel
from basicsr_unlearn.precision import Precision

TINY_PROMPTIR = ROOT / 'options' / '_base_' / 'archs' / 'promptir-tiny.yml'


def make_model(tmp_path: Path, **train) -> AllInOneModel:
    opt = tiny_train_options(tmp_path)
    opt.update(num_gpu=0, dist=False, rank=0, world_size=1, is_train=True)
    opt['train'].update(ema_decay=0.9, **train)
    opt['path'].update(experiments_root=str(tmp_path), models=str(tmp_path / 'models'), log=str(tmp_path),
                       training_states=str(tmp_path / 'states'), visualization=str(tmp_path / 'vis'))
    torch.manual_seed(0)
    return AllInOneModel(opt)


def batch(seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    gt = torch.rand(2, 3, 16, 16, generator=gen)
    return {'lq': (gt + 0.1 * torch.randn(gt.shape, generator=gen)).clamp(0, 1), 'gt': gt}


def params(model: AllInOneModel) -> dict[str, torch.Tensor]:
    return {**{f'g.{k}': v for k, v in model.net_g.state_dict().items()},
            **{f'ema.{k}': v for k, v in model.net_g_ema.state_dict().items()}}


@pytest.mark.parametrize(('train', 'message'), [
    ({'amp': {'dtype': 'fp32'}}, "train.amp.dtype: unknown 'fp32'; expected one of bf16, fp16"),
    ({'amp': 'bf16'}, r"train.amp: expected a block \{dtype: bf16\} or \{dtype: fp16\}, got 'bf16'"),
    ({'amp': {'dtype': 'bf16', 'scale': 2}}, "train.amp: unknown key 'scale'; expected one of dtype"),
    ({'amp': {}}, "train.amp.dtype: unknown None; expected one of bf16, fp16"),
    ({'channels_last': 'yes'}, "train.channels_last: expected true or false, got 'yes'"),
])
def test_bad_options_fail_before_any_folder(tmp_path: Path, monkeypatch, train: dict, message: str) -> None:
    monkeypatch.chdir(tmp_path)
    opt = load_options(tiny_workspace(tmp_path), {f'train.{k}': v for k, v in train.items()})
    with pytest.raises(ValueError, match=message):
        validate_options(opt)  # what the launchers call before BasicSR's parse_options
    with pytest.raises(ValueError, match=message):
        make_model(tmp_path / 'model', **train)
    assert not (tmp_path / 'experiments').exists()


def test_good_options_pass() -> None:
    for train in ({'amp': {'dtype': 'bf16'}, 'channels_last': True}, {'amp': {'dtype': 'fp16'}}, {'amp': None}):
        AllInOneModel.check_options({'train': train})


def test_cpu_ignores_the_options_with_one_log_line_and_trains_as_srmodel(tmp_path: Path) -> None:
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logger = logging.getLogger('basicsr')
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)  # as train_pipeline's log file sets it
    try:
        fast = make_model(tmp_path / 'a', amp={'dtype': 'bf16'}, channels_last=True)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert [r for r in records if 'ignored' in r] == [
        'train.amp / train.channels_last: ignored on the cpu (CUDA only); training in fp32 with contiguous tensors']
    assert fast.precision.dtype is None and fast.precision.scaler is None and not fast.precision.channels_last
    plain, reference = make_model(tmp_path / 'b'), make_model(tmp_path / 'c')
    for it in (1, 2, 3):
        for model in (fast, plain, reference):
            model.feed_data(batch(it))
            model.update_learning_rate(it)
        fast.optimize_parameters(it)
        plain.optimize_parameters(it)
        SRModel.optimize_parameters(reference, it)  # the step AllInOneModel inherited before
        assert fast.log_dict == plain.log_dict == reference.log_dict and list(plain.log_dict) == ['l_pix']
    assert fast.lq.is_contiguous() and fast.net_g.conv_first.weight.is_contiguous()
    for key, value in params(reference).items():
        assert torch.equal(params(fast)[key], value) and torch.equal(params(plain)[key], value), key


def test_cpu_run_with_the_options_matches_a_run_without(tmp_path: Path) -> None:
    option_file = tiny_workspace(tmp_path, total_iter=4)
    runs = {'plain': [], 'amp': ['train.amp.dtype=bf16', 'train.channels_last=True']}
    for name, extra in runs.items():
        proc = run_tool('train.py', ['-opt', option_file, '--cfg-options', f'name={name}', *extra], tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
    logs = {name: ''.join(log.read_text() for log in (tmp_path / 'experiments' / name).glob('train_*.log'))
            for name in runs}
    assert 'train.amp / train.channels_last: ignored on the cpu' in logs['amp']
    assert 'ignored on the cpu' not in logs['plain']
    weights = {name: torch.load(tmp_path / 'experiments' / name / 'models' / 'net_g_latest.pth', weights_only=True)
               for name in runs}
    for key, value in weights['plain']['params'].items():
        assert torch.equal(weights['amp']['params'][key], value), key


def test_fp16_grad_scaler_on_cpu_unscales_and_skips_inf_steps() -> None:
    torch.manual_seed(0)
    net = nn.Conv2d(3, 3, 3, padding=1)
    x = torch.rand(2, 3, 8, 8)
    precision = Precision('fp16', device_type='cpu')
    assert precision.scaler.get_scale() == 65536.0
    precision.scaler = torch.amp.GradScaler('cpu', init_scale=1024.0)  # CPU fp16 conv backward overflows at 2**16
    optim = torch.optim.SGD(net.parameters(), lr=0.1)
    with precision.autocast():
        loss = net(x).mean()
    assert loss.dtype == torch.float16
    expected = torch.autograd.grad(loss, net.weight, retain_graph=True)[0]  # the unscaled fp16-autocast gradient
    precision.backward(loss, optim)
    # unscaled before step: clipping, masks or projections in between see true gradients
    torch.testing.assert_close(net.weight.grad, expected, rtol=1e-3, atol=1e-6)
    before = net.weight.detach().clone()
    precision.step(optim)
    torch.testing.assert_close(net.weight.detach(), before - 0.1 * expected, rtol=1e-3, atol=1e-6)
    assert precision.scaler.get_scale() == 1024.0
    optim.zero_grad()
    with precision.autocast():
        loss = net(x).mean() * float('inf')
    precision.backward(loss, optim)
    before = net.weight.detach().clone()
    precision.step(optim)
    assert torch.equal(net.weight.detach(), before)  # inf gradients: step skipped
    assert precision.scaler.get_scale() == 512.0  # and the scale halved
    restored = Precision('fp16', device_type='cpu')
    restored.load_state_dict(precision.state_dict())
    assert restored.scaler.get_scale() == 512.0


def test_without_amp_backward_and_step_are_plain() -> None:
    nets = [nn.Linear(4, 2) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    x = torch.rand(3, 4)
    plain, precision = torch.optim.Adam(nets[0].parameters()), torch.optim.Adam(nets[1].parameters())
    nets[0](x).sum().backward()
    plain.step()
    helper = Precision()
    with helper.autocast():
        loss = nets[1](x).sum()
    helper.backward(loss, precision)
    helper.step(precision)
    assert helper.state_dict() == {} and torch.equal(nets[0].weight, nets[1].weight)


def test_model_fp16_step_and_scaler_in_the_training_state(tmp_path: Path) -> None:
    model = make_model(tmp_path)
    model.precision = Precision('fp16', device_type='cpu')  # what a CUDA model with amp.dtype fp16 holds
    model.feed_data(batch(0))
    before = model.net_g.conv_first.weight.detach().clone()
    dtypes = []
    model.net_g.conv_first.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    model.optimize_parameters(1)
    assert dtypes == [torch.float16]  # the forward ran under fp16 autocast
    assert not torch.equal(before, model.net_g.conv_first.weight) and list(model.log_dict) == ['l_pix']
    model.precision.scaler.update(new_scale=1024.0)
    model.save_training_state(0, 1)
    state = torch.load(tmp_path / 'states' / '1.state', weights_only=True)
    assert state['grad_scaler']['scale'] == 1024.0
    resumed = make_model(tmp_path / 'resumed')
    resumed.precision = Precision('fp16', device_type='cpu')
    resumed.resume_training(state)
    assert resumed.precision.scaler.get_scale() == 1024.0


def test_channels_last_tiny_promptir_matches_contiguous() -> None:
    opt = load_options(str(TINY_PROMPTIR))['network_g']
    torch.manual_seed(0)
    net = build_network(dict(opt))
    twin = build_network(dict(opt))
    twin.load_state_dict(net.state_dict())
    precision = Precision(channels_last=True, device_type='cpu')
    twin = precision.to_memory_format(twin)
    x = torch.rand(1, 3, 16, 16)
    fast_x = precision.to_memory_format(x)
    assert fast_x.is_contiguous(memory_format=torch.channels_last) and not fast_x.is_contiguous()
    conv = next(m for m in twin.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    out, fast = net(x), twin(fast_x)
    torch.testing.assert_close(fast, out, atol=1e-5, rtol=1e-4)
    out.mean().backward()
    fast.mean().backward()
    for (name, p), q in zip(net.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.filterwarnings('ignore:torch.cuda.amp.GradScaler is enabled, but CUDA is not available')
def test_cuda_options_without_a_gpu_device(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda *a, **k: True)
    cuda = torch.device('cuda')
    precision = Precision.from_options({'amp': {'dtype': 'bf16'}, 'channels_last': True}, cuda)
    assert (precision.device_type, precision.dtype, precision.channels_last) == ('cuda', torch.bfloat16, True)
    assert precision.scaler is None
    assert Precision.from_options({'amp': {'dtype': 'fp16'}}, cuda).scaler is not None
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda *a, **k: False)
    with pytest.raises(ValueError, match='train.amp.dtype: bf16 needs a GPU with bfloat16 support.*use fp16'):
        Precision.from_options({'amp': {'dtype': 'bf16'}}, cuda)
