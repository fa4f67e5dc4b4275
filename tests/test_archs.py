"""Registered archs (Restormer, PromptIR, AdaIR): published sizes, any input size, gradients, determinism, loading."""
from pathlib import Path

import pytest
import torch
import yaml
from basicsr.archs import build_network
from basicsr.models.base_model import BaseModel
from basicsr.utils.registry import ARCH_REGISTRY

from basicsr_unlearn import inference
from basicsr_unlearn.archs.adair_arch import FreModule, soft_lowpass_mask
from basicsr_unlearn.archs.restormer_blocks import LayerNorm

ROOT = Path(__file__).resolve().parents[1]
NAMES = ('Restormer', 'PromptIR', 'AdaIR')
# published totals (PromptIR without the six unused reference convs)
PUBLISHED_PARAMS = {'Restormer': 26_126_644, 'PromptIR': 35_376_967, 'AdaIR': 28_780_000}
TAPS = ('encoder_level1', 'encoder_level2', 'encoder_level3', 'latent', 'decoder_level3', 'decoder_level2',
        'decoder_level1', 'refinement')


pytestmark = pytest.mark.usefixtures('one_thread')


def tiny_opt(name: str) -> dict:
    """The ``network_g`` block of ``options/_base_/archs/<name>-tiny.yml``."""
    with open(ROOT / 'options' / '_base_' / 'archs' / f'{name.lower()}-tiny.yml') as f:
        return yaml.safe_load(f)['network_g']


def build_tiny(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_network(tiny_opt(name))


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize('name', NAMES)
def test_published_parameter_count(name: str) -> None:
    count = n_params(ARCH_REGISTRY.get(name)())
    assert abs(count - PUBLISHED_PARAMS[name]) <= 0.005 * PUBLISHED_PARAMS[name], count


@pytest.mark.parametrize('name', NAMES)
def test_tiny_config_builds_small_net_with_taps(name: str) -> None:
    net = build_tiny(name)
    assert type(net).__name__ == name
    assert net.pad_multiple == 8
    assert 100_000 < n_params(net) < 1_000_000
    modules = dict(net.named_modules())
    for tap in TAPS:
        assert isinstance(modules[tap], torch.nn.Sequential), tap


@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('size', [(67, 45), (5, 3), (16, 24)])
def test_any_input_size_restores_same_size(name: str, size: tuple[int, int]) -> None:
    net = build_tiny(name).eval()
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        out = net(x)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


@pytest.mark.parametrize('name', NAMES)
def test_restore_pads_once_and_matches_the_arch_padding_itself(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """restore_image pads to the arch's multiple; the arch's own pad then finds nothing to do (no second copy)."""
    net = build_tiny(name).eval()
    x = torch.rand(1, 3, 30, 21)
    with torch.no_grad():
        direct = net(x)  # the arch pads by itself
    calls = []
    pad = inference.F.pad
    monkeypatch.setattr(inference.F, 'pad', lambda *a, **k: calls.append(a[0].shape) or pad(*a, **k))
    out = inference.restore_image(net, x, multiple=net.pad_multiple)
    assert calls == [x.shape]
    torch.testing.assert_close(out, direct)


@pytest.mark.parametrize('name', NAMES)
def test_every_parameter_gets_a_gradient(name: str) -> None:
    net = build_tiny(name).train()
    x = torch.rand(2, 3, 128, 128)
    torch.nn.functional.l1_loss(net(x), torch.rand_like(x)).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    assert not missing
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())


def test_adair_frequency_ratios_learn() -> None:
    """With the block switched on (alpha != 0), the mask ratios' predictor gets a non-zero gradient."""
    torch.manual_seed(0)
    block = FreModule(16, 4, bias=False)
    with torch.no_grad():
        block.para1.fill_(1.0)
    out = block(torch.rand(2, 3, 64, 64), torch.rand(2, 16, 16, 16))
    out.square().mean().backward()
    for p in block.rate_conv.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0


@pytest.mark.parametrize('name', NAMES)
def test_identical_seed_gives_identical_output(name: str) -> None:
    x = torch.rand(1, 3, 32, 40)
    with torch.no_grad():
        a = build_tiny(name, seed=3).eval()(x)
        b = build_tiny(name, seed=3).eval()(x)
        c = build_tiny(name, seed=4).eval()(x)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize('name', NAMES)
def test_state_dict_roundtrip_through_basicsr_load_network(name: str, tmp_path: Path) -> None:
    net = build_tiny(name, seed=1).eval()
    with torch.no_grad():  # move AdaIR's blocks off their identity initialisation so they matter
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = tmp_path / 'net_g.pth'
    torch.save({'params': net.state_dict()}, path)
    other = build_tiny(name, seed=2).eval()
    BaseModel({'num_gpu': 0, 'is_train': False}).load_network(other, str(path), strict=True)
    x = torch.rand(1, 3, 24, 31)
    with torch.no_grad():
        assert torch.equal(net(x), other(x))


def test_fresh_adair_equals_restormer_with_same_weights() -> None:
    restormer = build_tiny('Restormer', seed=5).eval()
    adair = build_tiny('AdaIR', seed=6).eval()
    missing, unexpected = adair.load_state_dict(restormer.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith(('fre1.', 'fre2.', 'fre3.')) for k in missing)
    x = torch.rand(2, 3, 40, 24)
    with torch.no_grad():
        assert torch.equal(adair(x), restormer(x))


@pytest.mark.parametrize('name', ['PromptIR', 'AdaIR'])
def test_decoder_false_is_plain_restormer(name: str) -> None:
    opt = {k: v for k, v in tiny_opt(name).items() if not k.startswith('prompt_')}
    opt['decoder'] = False
    assert n_params(build_network(opt)) == n_params(build_tiny('Restormer'))


@pytest.mark.parametrize(('name', 'change', 'message'), [
    ('Restormer', {'heads': [1, 3, 2, 2]}, 'heads[1]=3'),
    ('PromptIR', {'prompt_dims': [8, 16, 31]}, 'heads[2]=2'),
    ('PromptIR', {'prompt_sizes': [8, 4]}, 'prompt_sizes'),
    ('AdaIR', {'dim': 4, 'heads': [1, 1, 1, 1]}, 'dim=4'),
    ('AdaIR', {'LayerNorm_type': 'Batch'}, 'LayerNorm_type'),
    ('Restormer', {'num_blocks': [1, 1, 1]}, 'num_blocks'),
])
def test_bad_arguments_raise_naming_them(name: str, change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=name) as err:
        build_network(dict(tiny_opt(name), **change))
    assert message in str(err.value)


def test_soft_lowpass_mask_is_centred_soft_box_of_relative_extent() -> None:
    ratios = torch.tensor([[0.25, 0.5], [0.0, 1.0]])
    mask = soft_lowpass_mask(ratios, 32, 16)
    assert mask.shape == (2, 1, 32, 16)
    assert ((mask > 0) & (mask < 1)).all()
    # r_h = 0.25 of the 16-bin half-spectrum -> 4 bins: |f| <= 3 kept, |f| >= 5 dropped (DC at index 0)
    assert mask[0, 0, 3, 0] > 0.6 and mask[0, 0, 5, 0] < 0.4 * mask[0, 0, 0, 0]
    assert torch.allclose(mask[0, 0, 1], mask[0, 0, -1])  # symmetric in +-f
    assert mask[1].max() <= 0.5  # r_h = 0: at most the edge value at DC
    # size-independent: the kept fraction of the spectrum does not depend on the map size
    small = soft_lowpass_mask(ratios[:1], 32, 16).mean()
    large = soft_lowpass_mask(ratios[:1], 128, 64).mean()
    assert abs(small - large) < 0.02


def test_soft_lowpass_mask_grows_with_ratio_and_is_differentiable() -> None:
    ratios = torch.tensor([[0.1, 0.1], [0.3, 0.3], [0.6, 0.6]], requires_grad=True)
    mask = soft_lowpass_mask(ratios, 24, 24)
    kept = mask.flatten(1).sum(1)
    assert (kept.diff() > 0).all()
    kept.sum().backward()
    assert (ratios.grad > 0).all()


@pytest.mark.parametrize('layer_norm_type', ['WithBias', 'BiasFree'])
def test_layer_norm_matches_reference_formula(layer_norm_type: str) -> None:
    torch.manual_seed(0)
    norm = LayerNorm(6, layer_norm_type)
    with torch.no_grad():
        for p in norm.parameters():
            p.normal_()
    x = torch.randn(2, 6, 5, 7) * 3 + 1
    y = x.permute(0, 2, 3, 1)
    var = y.var(-1, keepdim=True, unbiased=False)
    if layer_norm_type == 'WithBias':
        ref = (y - y.mean(-1, keepdim=True)) / torch.sqrt(var + 1e-5) * norm.body.weight + norm.body.bias
    else:
        ref = y / torch.sqrt(var + 1e-5) * norm.body.weight
    assert torch.allclose(norm(x), ref.permute(0, 3, 1, 2), atol=1e-5)
    assert [n for n, _ in norm.named_parameters()] == (
        ['body.weight', 'body.bias'] if layer_norm_type == 'WithBias' else ['body.weight'])
