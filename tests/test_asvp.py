"""ASVP hooks and the inverse-ASVP attacker: exact spectral behaviour, batching, hooks, modes, determinism."""
import pytest
import torch
from basicsr.archs.edsr_arch import EDSR

from basicsr_unlearn.defenses import build_defense
from basicsr_unlearn.defenses.asvp import ASVP, scale_top_singular, to_matrices
from basicsr_unlearn.defenses.inverse_asvp import estimate_k_h, inverse_asvp


def tiny_net(seed: int = 0) -> EDSR:
    torch.manual_seed(seed)
    return EDSR(3, 3, num_feat=16, num_block=2, upscale=1, img_range=1.0, rgb_mean=[0.5, 0.5, 0.5]).eval()


def image(b: int = 2, size: int = 24, seed: int = 1) -> torch.Tensor:
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(seed))


def geometric_features(b: int = 3, c: int = 12, hw: int = 8, ratio: float = 0.8) -> torch.Tensor:
    """(b, c, hw, hw) float64 features whose C x HW matrices have the spectrum ratio**i (log-linear)."""
    g = torch.Generator().manual_seed(3)
    u, _ = torch.linalg.qr(torch.randn(b, c, c, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(b, hw * hw, c, generator=g, dtype=torch.float64))
    s = ratio ** torch.arange(c, dtype=torch.float64)
    return ((u * s) @ v.transpose(-1, -2)).reshape(b, c, hw, hw)


@pytest.mark.parametrize('layout', ['channel_space', 'channel_map'])
def test_h1_is_identity(layout):
    x = torch.randn(2, 8, 6, 10, dtype=torch.float64)
    out = ASVP(['x'], k=3, h=1.0, layout=layout).perturb(x)
    assert torch.allclose(out, x, rtol=0, atol=1e-12)


@pytest.mark.parametrize('layout,shape', [('channel_space', (2, 6, 5, 7)), ('channel_space', (2, 40, 3, 3)),
                                          ('channel_map', (2, 3, 9, 5)), ('channel_map', (2, 3, 5, 9))])
def test_top_k_scaled_rest_unchanged(layout, shape):
    x = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    k, h = 2, 3.5
    out = ASVP(['x'], k=k, h=h, layout=layout).perturb(x)
    before = torch.linalg.svdvals(to_matrices(x, layout))
    after = torch.linalg.svdvals(to_matrices(out, layout))
    assert torch.allclose(after[:, :k], h * before[:, :k], rtol=1e-10)
    assert torch.allclose(after[:, k:], before[:, k:], rtol=1e-10, atol=1e-12)


def test_energy_rank_and_float32():
    x = geometric_features().float()
    defense = ASVP(['x'], k='energy:0.9', h=2.0)
    out = defense.perturb(x)
    s = torch.linalg.svdvals(to_matrices(x.double(), 'channel_space'))
    k_expected = int(((s ** 2).cumsum(-1) / (s ** 2).sum(-1, keepdim=True) < 0.9).sum(-1)[0]) + 1
    ratio = torch.linalg.svdvals(to_matrices(out.double(), 'channel_space')) / s
    assert out.dtype == torch.float32
    assert torch.allclose(ratio[:, :k_expected], torch.full_like(ratio[:, :k_expected], 2.0), rtol=1e-4)
    assert torch.allclose(ratio[:, k_expected:], torch.ones_like(ratio[:, k_expected:]), rtol=1e-4)


def test_batched_equals_per_sample():
    x = torch.randn(4, 8, 6, 6, generator=torch.Generator().manual_seed(2))
    for layout in ('channel_space', 'channel_map'):
        defense = ASVP(['x'], k=2, h=4.0, layout=layout)
        batched = defense.perturb(x)
        single = torch.cat([defense.perturb(x[i:i + 1]) for i in range(4)])
        assert torch.allclose(batched, single, rtol=1e-6, atol=1e-6)
    random = ASVP(['x'], randomize={'k': [1, 4], 'h': [1.5, 8.0]}, seed=7)
    assert torch.allclose(random.perturb(x), torch.cat([random.perturb(x[i:i + 1]) for i in range(4)]), atol=1e-6)


def test_exposed_mode_output_bit_identical_and_remove_restores():
    net, x = tiny_net(), image()
    with torch.no_grad():
        clean = net(x)
        defense = build_defense({'type': 'ASVP', 'targets': ['body.?'], 'k': 2, 'h': 8.0}).attach(net)
        protected = net(x)
        assert defense.module_names == ['body.0', 'body.1']
        assert torch.equal(protected, clean)
        tapped, raw = defense.exposed_features['body.1'], {}
        handle = net.body[1].register_forward_hook(lambda m, a, o: raw.update(o=o))
        net(x)
        handle.remove()
        assert not torch.allclose(tapped, raw['o'])
        assert torch.allclose(tapped, defense.perturb(raw['o']))
        defense.remove()
        assert torch.equal(net(x), clean) and not defense.exposed_features


def test_inline_mode_changes_output_and_remove_restores():
    net, x = tiny_net(), image()
    with torch.no_grad():
        clean = net(x)
        defense = ASVP(['body.0'], k=2, h=4.0, mode='inline').attach(net)
        assert not torch.allclose(net(x), clean, atol=1e-4)
        defense.remove()
        assert torch.equal(net(x), clean)


def test_inline_gradients_flow_through_clean_part():
    net = tiny_net()
    defense = ASVP(['body.0'], k=1, h=2.0, mode='inline').attach(net)
    net(image()).mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())
    defense.remove()


def test_determinism_and_randomisation():
    net, x = tiny_net(), image(b=3)
    feats = []
    for _ in range(2):
        defense = ASVP(['body.1'], randomize={'k': [1, 6], 'h': [1.5, 8.0]}, seed=11).attach(net)
        with torch.no_grad():
            net(x)
        feats.append(defense.exposed_features['body.1'])
        params = defense.last_params['body.1']
        defense.remove()
    assert torch.equal(feats[0], feats[1])  # same query, same seed -> same answer (no averaging out)
    k, h = params
    assert len(set(k.tolist())) > 1 or len(set(h.tolist())) > 1  # different queries draw different k/h
    assert ((k >= 1) & (k <= 6)).all() and ((h >= 1.5) & (h <= 8.0)).all()
    other = ASVP(['body.1'], randomize={'k': [1, 6], 'h': [1.5, 8.0]}, seed=12).attach(net)
    with torch.no_grad():
        net(x)
    assert not torch.equal(other.exposed_features['body.1'], feats[0])


def test_errors_name_the_option():
    net = tiny_net()
    with pytest.raises(ValueError, match=r"asvp.targets: 'encoder\*' matches no module"):
        ASVP(['encoder*']).attach(net)
    with pytest.raises(ValueError, match=r"asvp.layout: unknown 'space'"):
        build_defense({'type': 'ASVP', 'targets': ['body.0'], 'layout': 'space'})
    with pytest.raises(ValueError, match=r"asvp.k: expected an int >= 1 or 'energy:<tau>'"):
        build_defense({'type': 'ASVP', 'targets': ['body.0'], 'k': 'energy:2'})
    with pytest.raises(ValueError, match=r"asvp: unknown key 'hh'"):
        build_defense({'type': 'ASVP', 'targets': ['body.0'], 'hh': 2})
    with pytest.raises(ValueError, match=r"asvp.type: unknown 'ASVQ'"):
        build_defense({'type': 'ASVQ'})
    with pytest.raises(ValueError, match=r'asvp.randomize.h: expected \[lo, hi\]'):
        ASVP(['body.0'], randomize={'k': [1, 2], 'h': [3.0]})


def test_inverse_asvp_known_and_estimated_parameters_recover_exactly():
    x = geometric_features()
    for k, h in ((1, 2.0), (3, 4.0), (5, 1.5)):
        y = ASVP(['x'], k=k, h=h).perturb(x)
        assert torch.allclose(inverse_asvp(y, k=k, h=h), x, rtol=0, atol=1e-12)
        s2 = torch.linalg.svdvals(to_matrices(y, 'channel_space')) ** 2
        k_hat, h_hat = estimate_k_h(s2)
        assert (k_hat == k).all() and torch.allclose(h_hat, torch.full_like(h_hat, h), rtol=1e-9)
        assert torch.allclose(inverse_asvp(y), x, rtol=0, atol=1e-12)


def test_inverse_asvp_on_real_features_and_randomisation_hurts_it():
    net, x = tiny_net(), image(b=8, size=32)
    raw = {}
    net.body[1].register_forward_hook(lambda m, a, o: raw.update(o=o))

    def error(defense: ASVP, pool: bool) -> tuple[float, float]:
        defense.attach(net)
        with torch.no_grad():
            net(x)
        observed = defense.exposed_features['body.1']
        defense.remove()
        recovered = inverse_asvp(observed, pool=pool)
        norm = raw['o'].norm()
        return float((observed - raw['o']).norm() / norm), float((recovered - raw['o']).norm() / norm)

    fixed_before, fixed_after = error(ASVP(['body.1'], k=2, h=8.0), pool=True)
    # a large fixed h stands out of the natural spectrum: k is found and most of the perturbation undone
    assert fixed_after < fixed_before / 50
    rand_before, rand_after = error(ASVP(['body.1'], randomize={'k': [1, 6], 'h': [1.2, 8.0]}, seed=5), pool=True)
    # per-query k/h: the pooled (fixed-parameter) attacker leaves most of the perturbation in place
    assert rand_after > 10 * fixed_after and rand_after > rand_before / 2


def test_scale_top_singular_validates_energy_spec():
    with pytest.raises(ValueError, match='energy'):
        scale_top_singular(torch.randn(1, 3, 4), 'energy:x', 2.0)
