"""UnlearnModel in-process: forgetting with retained quality, stop rule, divergence guard, option errors, baselines."""
import copy
import functools
from pathlib import Path

import pytest
import torch
from helpers import tiny_train_options
from skimage import data as skdata
from torch.utils.data import DataLoader, Dataset

from basicsr_unlearn.losses.criteria import per_sample_loss
from basicsr_unlearn.models.unlearn_model import UnlearnModel

SIZE = 16


@functools.cache
def photos() -> list[torch.Tensor]:
    """Three scikit-image photos downscaled 4x, ``(3, h, w)`` in [0, 1]."""
    return [torch.nn.functional.avg_pool2d(torch.from_numpy(p.copy()).permute(2, 0, 1)[None].float().div(255), 4)[0]
            for p in (skdata.astronaut(), skdata.chelsea(), skdata.coffee())]


def photo_crops(n: int, seed: int) -> torch.Tensor:
    """``n`` real-image crops ``(n, 3, SIZE, SIZE)`` in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    crops = []
    for i in range(n):
        img = photos()[i % 3]
        top = int(torch.randint(0, img.shape[1] - SIZE, (1,), generator=g))
        left = int(torch.randint(0, img.shape[2] - SIZE, (1,), generator=g))
        crops.append(img[:, top:top + SIZE, left:left + SIZE])
    return torch.stack(crops)


def degrade(gt: torch.Tensor, name: str, seed: int) -> torch.Tensor:
    if name == 'haze':
        return 0.6 * gt + 0.35
    g = torch.Generator().manual_seed(seed)
    return (gt + 25 / 255 * torch.randn(gt.shape, generator=g)).clamp(0, 1)


def grouped_batch(seed: int, b: int = 2, n_forget: int = 1, n_retain: int = 2) -> dict:
    """A MixedDegradationDataset-style batch: ``lq``/``gt`` (B, n, 3, h, w), ``is_forget``/``de_type`` (B, n)."""
    n = n_forget + n_retain
    gt = photo_crops(b * n, seed).view(b, n, 3, SIZE, SIZE)
    is_forget = torch.tensor([[True] * n_forget + [False] * n_retain] * b)
    lq = torch.stack([torch.stack([degrade(gt[i, j], 'haze' if is_forget[i, j] else 'noise25', seed * 100 + i * n + j)
                                   for j in range(n)]) for i in range(b)])
    return {'lq': lq, 'gt': gt, 'is_forget': is_forget, 'de_type': torch.where(is_forget, 4, 1)}


class ValSet(Dataset):
    """Held-out hazy and noisy crops labelled with ``de_name``."""

    def __init__(self, name: str = 'val_mixed') -> None:
        self.opt = {'name': name}
        self.gt = photo_crops(6, 99)
        self.names = ['haze', 'noise25'] * 3
        self.lq = torch.stack([degrade(g, n, 1000 + i) for i, (g, n) in enumerate(zip(self.gt, self.names))])

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> dict:
        return {'lq': self.lq[i], 'gt': self.gt[i], 'lq_path': f'v/{i}.png', 'de_name': self.names[i]}


def options(tmp_path: Path, train: dict, pretrained: str | None = None, **path) -> dict:
    opt = tiny_train_options(tmp_path, name='unlearn')
    opt.update(model_type='UnlearnModel', num_gpu=0, dist=False, rank=0, world_size=1, is_train=True)
    opt['train'].update(copy.deepcopy(train))
    opt['train']['scheduler']['periods'] = [10000]
    opt['path'].update(pretrain_network_g=pretrained, experiments_root=str(tmp_path), models=str(tmp_path / 'models'),
                       log=str(tmp_path), training_states=str(tmp_path / 'states'),
                       visualization=str(tmp_path / 'vis'), **path)
    return opt


@pytest.fixture(scope='module')
def pretrained(tmp_path_factory) -> str:
    """A tiny EDSR trained on haze + noise (the 'original' model); returns its checkpoint."""
    tmp = tmp_path_factory.mktemp('orig')
    model = UnlearnModel(options(tmp, {'retain_opt': {'type': 'L1Loss'}, 'total_iter': 200,
                                       'optim_g': {'type': 'Adam', 'lr': 3e-3}}))
    torch.manual_seed(0)
    for it in range(1, 201):
        batch = grouped_batch(it % 8, n_forget=0, n_retain=3)
        batch['is_forget'] = torch.zeros_like(batch['is_forget'])
        batch['lq'][:, 0] = torch.stack([degrade(g, 'haze', 0) for g in batch['gt'][:, 0]])
        batch['de_type'][:, 0] = 4
        model.feed_data(batch)
        model.optimize_parameters(it)
    model.save(0, 1)
    return str(tmp / 'models' / 'net_g_1.pth')


def losses_on(model: UnlearnModel, batch: dict) -> tuple[float, float]:
    """Mean L1 of the model on the forget and on the retain samples of ``batch``."""
    model.feed_data(batch)
    out = model.restore(model.lq)
    f = model.forget_mask
    return per_sample_loss(out[f], model.gt[f]).mean().item(), per_sample_loss(out[~f], model.gt[~f]).mean().item()


def run(model: UnlearnModel, iters: int, seed0: int = 0) -> None:
    for it in range(1, iters + 1):
        model.update_learning_rate(it)
        model.feed_data(grouped_batch(seed0 + it % 4))
        model.optimize_parameters(it)


GA_ADV = {'forget_opt': {'type': 'GradientAscentLoss', 'tau': 0.25},
          'retain_opt': {'type': 'L1Loss'},
          'adv_opt': {'type': 'AdversarialRetainLoss', 'eps': 2 / 255, 'steps': 1, 'attack': 'original'},
          'optim_g': {'type': 'Adam', 'lr': 1e-3}}


def test_ga_adv_forgets_haze_and_keeps_noise(tmp_path: Path, pretrained: str) -> None:
    model = UnlearnModel(options(tmp_path, GA_ADV, pretrained))
    held_out = grouped_batch(50)
    f0, r0 = losses_on(model, held_out)
    run(model, 40)
    f1, r1 = losses_on(model, held_out)
    assert f1 > f0 + 0.05, (f0, f1)
    assert r1 < r0 + 0.01, (r0, r1)
    assert set(model.log_dict) == {'l_forget', 'l_retain', 'l_adv', 'l_total'}
    assert model.forget_names == {'haze'}


@pytest.mark.parametrize('train', [
    {'forget_opt': {'type': 'L1Loss', 'target': 'lq'}, 'retain_opt': {'type': 'L1Loss'}},  # identity target
    {'forget_opt': {'type': 'GradientAscentLoss', 'tau': 0.2, 'target': 'original'},  # SCRUB
     'distill_opt': {'type': 'L1Loss'}, 'retain_opt': {'type': 'L1Loss'}},
    {'forget_opt': {'type': 'GradientAscentLoss', 'tau': 0.25}, 'retain_opt': {'type': 'L1Loss', 'loss_weight': 0.5}},
])
def test_baselines_forget(tmp_path: Path, pretrained: str, train: dict) -> None:
    model = UnlearnModel(options(tmp_path, {**train, 'optim_g': {'type': 'Adam', 'lr': 1e-3}}, pretrained))
    held_out = grouped_batch(50)
    f0, _ = losses_on(model, held_out)
    run(model, 30)
    f1, _ = losses_on(model, held_out)
    assert f1 > f0 + 0.03, (f0, f1)


def test_adapt_then_unlearn_and_task_vector(tmp_path: Path, pretrained: str) -> None:
    adapt = UnlearnModel(options(tmp_path / 'a', {'forget_opt': {'type': 'L1Loss'},
                                                  'anchor_opt': {'type': 'ParameterAnchorLoss', 'loss_weight': 1.0,
                                                                 'importance': 'fisher'},
                                                  'optim_g': {'type': 'Adam', 'lr': 1e-3}}, pretrained))
    run(adapt, 10)
    assert {'l_forget', 'l_anchor'} <= set(adapt.log_dict)
    adapt.save(0, -1)
    adapted = str(tmp_path / 'a' / 'models' / 'net_g_latest.pth')
    theta0 = torch.load(pretrained, weights_only=True)['params']
    theta_n = torch.load(adapted, weights_only=True)['params']

    repel = UnlearnModel(options(tmp_path / 'r', {'retain_opt': {'type': 'L1Loss'},
                                                  'repulsion_opt': {'type': 'ParameterRepulsionLoss', 'form': 'el2',
                                                                    'alpha': 1.0, 'loss_weight': 0.01},
                                                  'optim_g': {'type': 'Adam', 'lr': 1e-3}},
                                 pretrained, pretrain_network_adapted=adapted))
    run(repel, 5)
    assert repel.log_dict['l_repulsion'] < 0.01 * 100 * torch.exp(torch.tensor(-1.0)).item()  # moved away

    tv = UnlearnModel(options(tmp_path / 't', {'task_vector': {'scale': 0.5}}, pretrained,
                              pretrain_network_adapted=adapted))
    state = tv.get_bare_model(tv.net_g).state_dict()
    for key, value in theta0.items():
        torch.testing.assert_close(state[key], value - 0.5 * (theta_n[key] - value))


def test_stop_rule_number_makes_remaining_iterations_no_ops(tmp_path: Path, pretrained: str) -> None:
    model = UnlearnModel(options(tmp_path, {**GA_ADV, 'stop_rule': {'forget_psnr': 60.0}}, pretrained))
    run(model, 2)
    loader = DataLoader(ValSet(), batch_size=1)
    model.validation(loader, 2)
    assert model.stopped and 'stop rule' in model.stop_reason
    weights = {k: v.clone() for k, v in model.net_g.state_dict().items()}
    run(model, 3)
    for k, v in model.net_g.state_dict().items():
        assert torch.equal(v, weights[k])
    model.save(0, 4)
    assert not (tmp_path / 'models' / 'net_g_4.pth').exists()
    model.save(-1, -1)
    saved = torch.load(tmp_path / 'models' / 'net_g_latest.pth', weights_only=True)['params']
    assert all(torch.equal(saved[k], weights[k]) for k in saved)
    log = (tmp_path / 'train_log.json').read_text()
    assert '"stopped"' in log and 'stop rule' in log


def test_stop_rule_reference_checkpoint(tmp_path: Path, pretrained: str) -> None:
    # the reference is the original itself: forget PSNR is already at its level -> stop at the first validation
    model = UnlearnModel(options(tmp_path, {**GA_ADV, 'stop_rule': {'reference': pretrained, 'margin': 0.01}},
                                 pretrained))
    model.feed_data(grouped_batch(0))
    model.validation(DataLoader(ValSet(), batch_size=1), 0)
    assert model.stopped
    # a far-away target (margin -50 dB) does not stop
    other = UnlearnModel(options(tmp_path / 'b', {**GA_ADV, 'stop_rule': {'reference': pretrained, 'margin': -50}},
                                 pretrained))
    run(other, 1)
    other.validation(DataLoader(ValSet(), batch_size=1), 1)
    assert not other.stopped and other.stop_target == pytest.approx(model.stop_target)


def test_divergence_guard_nan_restores_last_good_weights(tmp_path: Path, pretrained: str) -> None:
    model = UnlearnModel(options(tmp_path, GA_ADV, pretrained))
    run(model, 2)
    model.save(0, 2)
    good = {k: v.clone() for k, v in model.net_g.state_dict().items()}
    run(model, 2, seed0=1)
    batch = grouped_batch(3)
    batch['gt'][0, 1] = float('nan')
    model.feed_data(batch)
    model.optimize_parameters(5)
    assert model.stopped and 'non-finite loss' in model.stop_reason
    for k, v in model.net_g.state_dict().items():
        assert torch.equal(v, good[k])


def test_divergence_guard_explosion(tmp_path: Path, pretrained: str) -> None:
    model = UnlearnModel(options(tmp_path, {**GA_ADV, 'guard': {'explode_ratio': 3.0}}, pretrained))
    run(model, 2)
    assert not model.stopped
    batch = grouped_batch(3)
    batch['gt'][:, 1:] = 1 - batch['gt'][:, 1:]  # retain targets suddenly far off
    model.feed_data(batch)
    model.optimize_parameters(3)
    assert model.stopped and 'retain-side loss' in model.stop_reason


@pytest.mark.parametrize('train, match', [
    ({'forget_optt': {'type': 'L1Loss'}}, "train: unknown key 'forget_optt'.*did you mean 'forget_opt'"),
    ({'forget_opt': {'type': 'L1Loss', 'target': 'noise'}}, "train.forget_opt.target: unknown 'noise'"),
    ({'forget_opt': {'type': 'GradientAscentLoss', 'tua': 0.1}}, 'train.forget_opt: .*tua'),
    ({'retain_opt': {'type': 'L1Loss'}, 'stop_rule': {'forget_psnr': 20, 'reference': 'x.pth'}},
     'train.stop_rule: expected exactly one'),
    ({'retain_opt': {'type': 'L1Loss'}, 'stop_rule': {'forget_psnr': 20, 'de_name': 'hazy'}},
     "train.stop_rule.de_name: unknown 'hazy'"),
    ({'retain_opt': {'type': 'L1Loss'}, 'guard': {'explode': 3}}, "train.guard: unknown key 'explode'"),
    ({'repulsion_opt': {'type': 'ParameterRepulsionLoss'}, 'retain_opt': {'type': 'L1Loss'}},
     'path.pretrain_network_adapted: required'),
])
def test_option_errors_name_the_key(tmp_path: Path, train: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        UnlearnModel(options(tmp_path, train))
