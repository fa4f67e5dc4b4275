"""tools/convert_checkpoint.py + our archs reproduce the official PromptIR / AdaIR / Restormer code (fixtures made by
tools/make_official_fixtures.py from the reference repositories); mismatches and pickled objects are refused."""
import argparse
import pathlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from basicsr.archs import build_network
from basicsr.models.base_model import BaseModel
from helpers import run_tool, write_yaml

from basicsr_unlearn.checkpoint_conversion import CheckpointConversionError, convert_loaded, read_official

FIXTURES = Path(__file__).resolve().parent / 'fixtures' / 'official'
WEIGHTS = {'promptir': 'promptir_tiny.ckpt', 'adair': 'adair_tiny.ckpt', 'restormer': 'restormer_tiny.pth'}
# tensors the reference builds but never calls: PromptIR's six 1x1 convs (bias-free), AdaIR's conv and score_gen
DROPPED = {'promptir': 6, 'adair': 9, 'restormer': 0}
TOLERANCE = 1e-5  # float64 (the fixtures' outputs are float64; measured ~1e-15)
TOLERANCE_FP32 = 1e-4  # float32 forward against the float64 reference: rounding only (measured ~1e-5 at 512 px)


pytestmark = pytest.mark.usefixtures('one_thread')


def fixture_io(arch: str) -> dict:
    return torch.load(FIXTURES / f'{arch}_tiny_io.pt', weights_only=True)


def case_errors(net: torch.nn.Module, case: dict) -> tuple[float, float]:
    """Max abs differences of ``net`` against the reference on a fixture case: (pooled view, full-res window).

    ``net`` runs in its own dtype (float64 reproduces the reference's float64 outputs; float32 is the usual case).
    """
    dtype = next(net.parameters()).dtype
    x = (case['lq'].to(dtype) / 255).repeat_interleave(case['upscale'], -2).repeat_interleave(case['upscale'], -1)
    with torch.no_grad():
        out = net(x)
    pooled = F.avg_pool2d(out, case['pool']) if case['pool'] > 1 else out
    top, left, h, w = case['window']
    return (float((pooled - case['out_pool']).abs().max()),
            float((out[..., top:top + h, left:left + w] - case['out_window']).abs().max()))


def converted_net(arch: str, **changes: object) -> torch.nn.Module:
    io = fixture_io(arch)
    net = build_network(dict(io['network_g'], **changes)).eval()
    params, _ = convert_loaded(read_official(FIXTURES / WEIGHTS[arch]), net, WEIGHTS[arch])
    net.load_state_dict(params, strict=True)
    return net


@pytest.mark.parametrize('arch', ['promptir', 'adair', 'restormer'])
def test_converted_official_weights_reproduce_reference_outputs(arch: str, tmp_path: Path) -> None:
    io = fixture_io(arch)
    opt = write_yaml(tmp_path / 'arch.yml', {'network_g': io['network_g']})
    out = tmp_path / 'converted.pth'
    done = run_tool('convert_checkpoint.py', ['--opt', opt, str(FIXTURES / WEIGHTS[arch]), str(out)], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f'dropped {DROPPED[arch]} tensors never used in forward' in done.stdout
    if arch == 'promptir':
        assert 'chnl_reduce1.weight' in done.stdout and 'reduce_noise_channel_3.weight' in done.stdout
    if arch == 'adair':
        assert 'fre1.conv.weight' in done.stdout and 'fre3.score_gen.bias' in done.stdout
    assert 'reshaped 0' in done.stdout
    assert set(torch.load(out, weights_only=True)) == {'params'}
    net = build_network(dict(io['network_g'])).eval()
    BaseModel({'num_gpu': 0, 'is_train': False}).load_network(net, str(out), strict=True)
    for case in io['cases']:
        assert max(case_errors(net, case)) <= TOLERANCE_FP32, case['name']
        assert float(case['out_pool'].abs().mean()) > 0.1  # a real output, not a vacuous match of zeros
    net.double()  # float64 at small sizes only (a 512-px float64 forward takes ~30 s on one core)
    for case in io['cases']:
        if case['upscale'] == 1:
            errors = case_errors(net, case)
            assert max(errors) <= TOLERANCE, (case['name'], errors)


def fre3_errors(net: torch.nn.Module, case: dict) -> tuple[float, float]:
    """Max abs differences of ``net.fre3`` (float64) against the reference's fre3 on the 256-px fixture case."""
    x = (case['lq'].double() / 255).repeat_interleave(case['upscale'], -2).repeat_interleave(case['upscale'], -1)
    feat = case['feat'].double().repeat_interleave(case['feat_upscale'], -2).repeat_interleave(case['feat_upscale'], -1)
    with torch.no_grad():
        out = net.fre3(x, feat)
    top, left, h, w = case['window']
    return (float((F.avg_pool2d(out, case['pool']) - case['out_pool']).abs().max()),
            float((out[..., top:top + h, left:left + w] - case['out_window']).abs().max()))


def test_adair_official_split_needs_the_reference_mask() -> None:
    """At 256 px the official integer-cast box is non-empty in fre3: reproduced exactly; the soft mask differs."""
    case = fixture_io('adair')['fre3_case']
    reference = converted_net('adair').double()
    x = (case['lq'].double() / 255).repeat_interleave(8, -2).repeat_interleave(8, -1)
    with torch.no_grad():
        guide = reference.fre3.conv1(F.interpolate(x, size=(256, 256), mode='bilinear', align_corners=False))
        ratios = torch.sigmoid(reference.fre3.rate_conv(F.adaptive_avg_pool2d(guide, 1))).flatten()
    assert ((ratios * (256 // 128)).int() >= 1).all(), ratios
    errors = fre3_errors(reference, case)
    assert max(errors) <= TOLERANCE, errors
    soft = converted_net('adair', fre_mask='soft').double()
    assert max(fre3_errors(soft, case)) > 10 * TOLERANCE  # measured 4e-4: the official split matters


def test_mismatched_arch_is_refused_naming_first_keys(tmp_path: Path) -> None:
    io = fixture_io('promptir')
    wrong = dict(io['network_g'], prompt_len=4)
    opt = write_yaml(tmp_path / 'wrong.yml', {'network_g': wrong})
    out = tmp_path / 'converted.pth'
    done = run_tool('convert_checkpoint.py', ['--opt', opt, str(FIXTURES / WEIGHTS['promptir']), str(out)],
                    tmp_path)
    assert done.returncode == 1
    assert 'shape mismatches 9: prompt1.prompt_param: file (1, 5, 8, 8, 8), arch (1, 4, 8, 8, 8)' in done.stderr
    assert 'prompt1.linear_layer.weight: file (5, 12), arch (4, 12)' in done.stderr
    assert not out.exists() and not list(tmp_path.glob('.converted.pth.tmp*'))

    restormer = build_network(dict(fixture_io('restormer')['network_g']))
    with pytest.raises(CheckpointConversionError) as err:
        convert_loaded(read_official(FIXTURES / WEIGHTS['promptir']), restormer, 'promptir_tiny.ckpt')
    message = str(err.value)
    assert "promptir_tiny.ckpt['state_dict'] does not match Restormer" in message
    assert 'not in the arch 54: prompt1.prompt_param, prompt1.linear_layer.weight' in message
    assert 'shape mismatches 91: patch_embed.proj.weight: file (6, 3, 3, 3), arch (4, 3, 3, 3)' in message


def test_singleton_axes_are_reshaped_and_reported() -> None:
    """A ChannelGate MLP saved as Linear weights (C', C) loads into the 1x1 convs (C', C, 1, 1)."""
    net = converted_net('adair')
    state = {f'net.{k}': v for k, v in net.state_dict().items()}
    key = 'net.fre1.frequency_refine.ChannelGate.mlp.0.weight'
    state[key] = state[key].flatten(1)
    params, report = convert_loaded({'state_dict': state}, net, 'linear.ckpt')
    assert report.reshaped == ['fre1.frequency_refine.ChannelGate.mlp.0.weight (4, 64) -> (4, 64, 1, 1)']
    assert torch.equal(params[key.removeprefix('net.')], net.state_dict()[key.removeprefix('net.')])


def test_pickled_objects_need_the_explicit_allow_flag(tmp_path: Path) -> None:
    official = torch.load(FIXTURES / WEIGHTS['restormer'], weights_only=True)
    ckpt = tmp_path / 'with_hparams.ckpt'
    torch.save({'state_dict': official['params'], 'hyper_parameters': argparse.Namespace(lr=2e-4),
                'log_dir': pathlib.PurePosixPath('logs')}, ckpt)
    opt = write_yaml(tmp_path / 'arch.yml', {'network_g': fixture_io('restormer')['network_g']})
    out = tmp_path / 'converted.pth'
    refused = run_tool('convert_checkpoint.py', ['--opt', opt, str(ckpt), str(out)], tmp_path)
    assert refused.returncode == 1 and not out.exists()
    assert 'holds a pickled argparse.Namespace' in refused.stderr
    assert 'rerun with --allow-global argparse.Namespace' in refused.stderr
    one = run_tool('convert_checkpoint.py', ['--opt', opt, str(ckpt), str(out), '--allow-global', 'argparse.Namespace'],
                   tmp_path)
    assert one.returncode == 1 and 'pickled pathlib.PurePosixPath' in one.stderr  # only what was named is allowed
    both = run_tool('convert_checkpoint.py', ['--opt', opt, str(ckpt), str(out), '--allow-global', 'argparse.Namespace',
                                              '--allow-global', 'pathlib.PurePosixPath'], tmp_path)
    assert both.returncode == 0, both.stderr[-2000:]
    assert 'ignored (not weights): hyper_parameters, log_dir' in both.stdout
    assert len(torch.load(out, weights_only=True)['params']) == len(official['params'])
