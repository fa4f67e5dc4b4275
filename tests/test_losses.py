"""Unlearning losses: bounded gradient ascent, PGD adversarial retain, parameter repulsion and anchor."""
import pytest
import torch
from basicsr.losses import build_loss
from torch import nn

from basicsr_unlearn.losses.adversarial_retain_loss import AdversarialRetainLoss
from basicsr_unlearn.losses.criteria import per_sample_loss
from basicsr_unlearn.losses.gradient_ascent_loss import GradientAscentLoss
from basicsr_unlearn.losses.parameter_repulsion_loss import (
    ParameterAnchorLoss,
    ParameterRepulsionLoss,
    parameter_distance,
)


def tiny_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GELU(), nn.Conv2d(8, 3, 3, padding=1))


def pairs(seed: int = 0, n: int = 4, haze: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth clean images and a noisy (or hazy: ``0.5 * gt + 0.4``) degraded copy."""
    g = torch.Generator().manual_seed(seed)
    gt = nn.functional.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=16, mode='bilinear')
    if haze:
        return 0.5 * gt + 0.4, gt
    return (gt + 0.1 * torch.randn(n, 3, 16, 16, generator=g)).clamp(0, 1), gt


def recon(net: nn.Module, lq: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    return per_sample_loss(net(lq), gt).mean()


def test_registered_losses_build_from_options():
    for opt in ({'type': 'GradientAscentLoss', 'tau': 0.1}, {'type': 'AdversarialRetainLoss', 'eps': 0.01},
                {'type': 'ParameterRepulsionLoss', 'form': 'il2'}, {'type': 'ParameterAnchorLoss'}):
        assert type(build_loss(opt)).__name__ == opt['type']


def test_gradient_ascent_value_and_bound():
    loss = GradientAscentLoss(loss_weight=2.0, tau=0.3)
    gt = torch.zeros(2, 3, 4, 4)
    pred = torch.stack([torch.full((3, 4, 4), 0.1), torch.full((3, 4, 4), 0.5)])
    # sample 0: 0.3 - 0.1 = 0.2; sample 1 is past the bound: 0 -> mean 0.1, times weight 2
    assert loss(pred, gt).item() == pytest.approx(0.2)
    far = torch.full((2, 3, 4, 4), 100.0, requires_grad=True)
    value = loss(far, gt)
    value.backward()
    assert value.item() == 0 and far.grad.abs().max() == 0  # no push once the bound is reached: cannot diverge


def test_gradient_ascent_tau_input_bounds_each_sample_by_its_own_input_loss():
    loss = GradientAscentLoss(tau='input')
    gt = torch.zeros(2, 3, 4, 4)
    lq = torch.stack([torch.full((3, 4, 4), 0.4), torch.full((3, 4, 4), 0.1)])  # input losses 0.4 and 0.1
    pred = torch.full((2, 3, 4, 4), 0.2, requires_grad=True)  # output loss 0.2 for both
    value = loss(pred, gt, lq)
    value.backward()
    assert value.item() == pytest.approx((0.4 - 0.2 + 0) / 2)  # sample 1 is already worse than its input
    assert pred.grad[0].abs().sum() > 0 and pred.grad[1].abs().sum() == 0
    with pytest.raises(ValueError, match="tau: 'input' needs the degraded inputs"):
        loss(pred, gt)
    with pytest.raises(ValueError, match="tau: expected a positive bound or 'input'; got 'abc'"):
        GradientAscentLoss(tau='abc')


def test_gradient_ascent_raises_forget_loss_while_retain_loss_holds():
    net = tiny_net()
    forget_lq, forget_gt = pairs(1, haze=True)
    retain_lq, retain_gt = pairs(2)
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    for _ in range(200):  # first learn both, then unlearn one
        opt.zero_grad()
        (recon(net, forget_lq, forget_gt) + recon(net, retain_lq, retain_gt)).backward()
        opt.step()
    with torch.no_grad():
        f0, r0 = recon(net, forget_lq, forget_gt).item(), recon(net, retain_lq, retain_gt).item()
    ga = GradientAscentLoss(tau=f0 + 0.1)
    for _ in range(100):
        opt.zero_grad()
        (ga(net(forget_lq), forget_gt) + recon(net, retain_lq, retain_gt)).backward()
        opt.step()
    with torch.no_grad():
        f1, r1 = recon(net, forget_lq, forget_gt).item(), recon(net, retain_lq, retain_gt).item()
    assert f1 > f0 + 0.05
    assert f1 <= f0 + 0.1 + 0.02  # stops near the bound
    assert r1 < r0 + 0.02


def test_pgd_increases_loss_within_eps():
    net = tiny_net()
    lq, gt = pairs(3)
    eps = 4 / 255
    attack = AdversarialRetainLoss(eps=eps, steps=5, step_size=eps / 2, rand_init=False)
    x_adv = attack.perturb(net, lq, gt)
    assert (x_adv - lq).abs().max() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        clean = per_sample_loss(net(lq), gt)
        adv = per_sample_loss(net(x_adv), gt)
    assert (adv > clean).all()
    noise = (lq + torch.empty_like(lq).uniform_(-eps, eps)).clamp(0, 1)
    with torch.no_grad():
        assert per_sample_loss(net(x_adv), gt).mean() > per_sample_loss(net(noise), gt).mean()


def test_pgd_leaves_parameter_grads_untouched_and_trains_net():
    net, frozen = tiny_net(0), tiny_net(1)
    lq, gt = pairs(4)
    loss = AdversarialRetainLoss(loss_weight=0.5, eps=2 / 255, steps=2)
    loss.perturb(net, lq, gt)
    assert all(p.grad is None for p in net.parameters())
    value = loss(net, lq, gt, attack_net=frozen)
    value.backward()
    assert value.item() > 0 and net[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in frozen.parameters())


def test_parameter_distance_and_repulsion_forms():
    a, b = [torch.ones(2, 2), torch.zeros(3)], [torch.zeros(2, 2), torch.full((3,), 2.0)]
    assert parameter_distance(a, b).item() == pytest.approx((1 + 4) / 2)
    assert parameter_distance(a, b, [torch.full((2, 2), 2.0), torch.zeros(3)]).item() == pytest.approx(1.0)
    assert ParameterRepulsionLoss(form='il2')(a, b, norm=2.5).item() == pytest.approx(1.0)
    assert ParameterRepulsionLoss(form='nl2', max_distance=0.5)(a, b, norm=2.5).item() == pytest.approx(-0.5)
    el2 = ParameterRepulsionLoss(form='el2', alpha=2.0, scale=10.0)(a, b, norm=2.5)
    assert el2.item() == pytest.approx(10 * torch.exp(torch.tensor(-2.0)).item())
    with pytest.raises(ValueError, match="form: unknown 'l3'"):
        ParameterRepulsionLoss(form='l3')
    with pytest.raises(ValueError, match='tensor 0 has shape'):
        parameter_distance([torch.ones(2)], [torch.ones(3)])


@pytest.mark.parametrize('form', ['il2', 'nl2', 'el2'])
def test_repulsion_gradient_moves_away_from_adapted(form):
    theta = [torch.zeros(5, requires_grad=True)]
    adapted = [torch.full((5,), 0.1)]
    loss = ParameterRepulsionLoss(form=form)
    opt = torch.optim.SGD(theta, lr=1e-3)
    d0 = parameter_distance(theta, adapted).item()
    for _ in range(5):
        opt.zero_grad()
        loss(theta, adapted, norm=d0).backward()
        opt.step()
    assert parameter_distance(theta, adapted).item() > d0


def test_anchor_pulls_back_and_bad_options_fail():
    theta = [torch.ones(4, requires_grad=True)]
    ParameterAnchorLoss(loss_weight=1.0)(theta, [torch.zeros(4)]).backward()
    assert (theta[0].grad > 0).all()
    with pytest.raises(ValueError, match="importance: unknown 'diag'"):
        ParameterAnchorLoss(importance='diag')
    with pytest.raises(ValueError, match="criterion: unknown criterion 'l3'"):
        GradientAscentLoss(criterion='l3')
    with pytest.raises(ValueError, match='tau: expected a positive bound or'):
        GradientAscentLoss(tau=0)
    with pytest.raises(ValueError, match='eps: expected a positive radius'):
        AdversarialRetainLoss(eps=0)
