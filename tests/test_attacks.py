"""Distillation attacks (basicsr_unlearn/attacks): each trains a tiny student from an ASVP-protected teacher and is
evaluated, and each does what its docstring says to the taps it observes."""
import math

import pytest
import torch
from basicsr.archs.edsr_arch import EDSR
from basicsr.models import build_model
from skimage import data as skdata

from basicsr_unlearn.attacks import ATTACK_REGISTRY, build_attack
from basicsr_unlearn.attacks.low_pass import gaussian_blur
from basicsr_unlearn.attacks.spectrum import reproject
from basicsr_unlearn.config import inprocess_options
from basicsr_unlearn.defenses.asvp import ASVP

TEACHER = {'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 16, 'num_block': 2, 'upscale': 1,
           'img_range': 1.0, 'rgb_mean': [0.5, 0.5, 0.5]}
STUDENT = {**TEACHER, 'num_feat': 8}
ASVP_BLOCK = {'targets': ['body.1'], 'k': 2, 'h': 8.0, 'layout': 'channel_map', 'mode': 'exposed'}
ATTACKS = {  # one tiny configuration per registered attack
    'KD': {'output_weight': 1.0, 'feature_weight': 1.0, 'taps': [['body.1', 'body.1']]},
    'InverseASVPKD': {'layout': 'channel_map', 'taps': [['body.1', 'body.1']]},
    'SpectrumKD': {'layout': 'channel_map', 'power': 0.0, 'taps': [['body.1', 'body.1']]},
    'LowPassKD': {'sigma': 1.5, 'taps': [['body.1', 'body.1']]},
    'SkepticalKD': {'aux': 'body.0', 'taps': [['body.0', 'body.1']]},
}


def photo_batches(n: int, size: int = 24, seed: int = 0) -> list[torch.Tensor]:
    """``n`` noisy (sigma 25) batches of 2 random crops of scikit-image photos, ``(2, 3, size, size)`` in [0, 1]."""
    photos = [torch.from_numpy(p.copy()).permute(2, 0, 1).float() / 255 for p in (skdata.astronaut(), skdata.coffee())]
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        crops = []
        for p in photos:
            top, left = (int(torch.randint(0, s - size, (1,), generator=g)) for s in p.shape[1:])
            crops.append(p[:, top:top + size, left:left + size])
        clean = torch.stack(crops)
        out.append((clean + 25 / 255 * torch.randn(clean.shape, generator=g)).clamp(0, 1))
    return out


@pytest.fixture(scope='module')
def teacher_path(tmp_path_factory) -> str:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp('teacher') / 'teacher.pth'
    torch.save({'params': EDSR(**{k: v for k, v in TEACHER.items() if k != 'type'}).state_dict()}, path)
    return str(path)


def distill_model(tmp_path, teacher_path: str, distill: dict, asvp: dict | None = ASVP_BLOCK, iters: int = 80):
    opt = {'name': 'attack', 'model_type': 'DistillModel', 'scale': 1, 'manual_seed': 0, 'network_g': STUDENT,
           'network_teacher': TEACHER, 'distill': distill, 'asvp': asvp, 'val': {'pad_multiple': 8},
           'train': {'optim_g': {'type': 'Adam', 'lr': 2e-3},
                     'scheduler': {'type': 'MultiStepLR', 'milestones': [iters], 'gamma': 1.0},
                     'total_iter': iters, 'warmup_iter': -1}}
    torch.manual_seed(0)
    return build_model(inprocess_options(opt, str(tmp_path / 'run'), pretrain_network_teacher=teacher_path))


def test_every_registered_attack_has_a_tiny_configuration():
    assert set(ATTACK_REGISTRY._obj_map) == set(ATTACKS)


@torch.no_grad()
def attack_loss(model, lq: torch.Tensor) -> float:
    """The attack's total loss on a fixed batch, without a step."""
    t_out, t_feats = model.teacher_targets(lq)
    model.student_taps.clear()
    s_out = model.net_g(lq)
    s_feats = [model.student_taps[s] for s in model.attack.student_modules.values()]
    return float(sum(model.attack.losses(lq, s_out, t_out, s_feats, t_feats).values()))


@pytest.mark.parametrize('name', sorted(ATTACKS))
def test_attack_trains_a_student_and_is_evaluated(tmp_path, teacher_path, name):
    model = distill_model(tmp_path, teacher_path, {'type': name, **ATTACKS[name]})
    held_out = photo_batches(1, seed=9)[0]
    before = attack_loss(model, held_out)
    for it, lq in enumerate(photo_batches(80), 1):
        model.feed_data({'lq': lq})
        model.optimize_parameters(it)
        assert math.isfinite(model.log_dict['l_total'])
    after = attack_loss(model, held_out)
    assert after < 0.7 * before  # the student learns what the attack asks, on unseen crops
    evaluation = photo_batches(1, size=32, seed=10)[0]
    restored, teacher = model.restore(evaluation), model.restore(evaluation, net=model.net_teacher)
    assert restored.shape == evaluation.shape and torch.isfinite(restored).all()
    assert (restored - teacher).abs().mean() < (evaluation - teacher).abs().mean() * 2


def test_observed_taps_per_attack(tmp_path, teacher_path):
    lq = photo_batches(1)[0]
    plain = distill_model(tmp_path, teacher_path, {'type': 'KD', **ATTACKS['KD']})
    _, (exposed,) = plain.teacher_targets(lq)
    clean = plain.teacher_taps['body.1']
    assert torch.equal(exposed, plain.defense.exposed_features['body.1']) and not torch.allclose(exposed, clean)
    # feature KD on a layer ASVP does not hook reads the plain output
    unprotected = distill_model(tmp_path, teacher_path, {'type': 'KD', 'feature_weight': 1.0,
                                                         'taps': [['body.0', 'body.0']]})
    _, (raw,) = unprotected.teacher_targets(lq)
    assert torch.equal(raw, unprotected.teacher_taps['body.0'])
    # whitening removes the ASVP gain: the target is the same as from the unprotected teacher
    white = distill_model(tmp_path, teacher_path, {'type': 'SpectrumKD', **ATTACKS['SpectrumKD']})
    _, (whitened,) = white.teacher_targets(lq)
    assert torch.allclose(whitened, reproject(clean, 'channel_map'), rtol=1e-3, atol=1e-4)
    assert not torch.allclose(whitened, exposed, atol=1e-3)
    low = distill_model(tmp_path, teacher_path, {'type': 'LowPassKD', **ATTACKS['LowPassKD']})
    _, (blurred,) = low.teacher_targets(lq)
    assert torch.allclose(blurred, gaussian_blur(ASVP(**ASVP_BLOCK).perturb(clean, 'body.1'), 1.5), atol=1e-5)


def test_low_pass_match_ignores_the_border_a_crop_of_a_whole_blurred_map_changes():
    attack = build_attack({'type': 'LowPassKD', 'sigma': 2.0, 'taps': [['a', 'b']]})
    whole = torch.rand(1, 4, 64, 64, generator=torch.Generator().manual_seed(0))
    crop = whole[..., 16:48, 16:48]
    stored = attack.observe(whole)[..., 16:48, 16:48]  # blurred whole, then cropped (stored answers)
    assert not torch.allclose(attack.observe(crop), stored, atol=1e-3)  # the border differs
    assert float(attack.match(crop, stored)) < 1e-6  # but the student's own crop still matches exactly
    assert float(attack.match(crop + 0.1, stored)) == pytest.approx(0.1, abs=1e-5)


def test_skeptical_student_keeps_the_teacher_out_of_the_deep_layers(tmp_path, teacher_path):
    model = distill_model(tmp_path, teacher_path, {'type': 'SkepticalKD', **ATTACKS['SkepticalKD'],
                                                   'self_weight': 0.0})
    model.feed_data({'lq': photo_batches(1)[0]})
    model.optimize_parameters(1)
    assert {'l_skeptic_aux', 'l_skeptic_self', 'l_kd_feat'} <= set(model.log_dict)
    deep = ('body.1', 'conv_after_body', 'conv_last')
    grads = {n: p.grad for n, p in model.net_g.named_parameters()}
    assert all(grads[n] is None or not grads[n].any() for n in grads if n.startswith(deep))
    assert any(grads[n] is not None and grads[n].any() for n in grads if n.startswith('body.0'))


def test_attack_options_are_checked():
    with pytest.raises(ValueError, match=r"distill.type: unknown 'Nope'; expected one of InverseASVPKD, KD"):
        build_attack({'type': 'Nope'})
    with pytest.raises(ValueError, match=r'distill.power: expected a number in \[0, 1\)'):
        build_attack({'type': 'SpectrumKD', 'power': 1.0, 'taps': [['a', 'b']]})
    with pytest.raises(ValueError, match=r'distill.sigma: expected a number > 0'):
        build_attack({'type': 'LowPassKD', 'sigma': 0, 'taps': [['a', 'b']]})
    with pytest.raises(ValueError, match=r'distill.aux: expected the name of an early student module'):
        build_attack({'type': 'SkepticalKD', 'aux': '', 'taps': [['a', 'b']]})
    with pytest.raises(ValueError, match=r"distill: unknown key 'pool'"):
        build_attack({'type': 'KD', 'pool': True})
    with pytest.raises(ValueError, match=r'distill.taps\[0\]: expected \[student_module, teacher_module\]'):
        build_attack({'type': 'KD', 'feature_weight': 1.0, 'taps': ['body.0']})
