"""UnlearnModel in-process: forgetting with retained quality, stop criteria (oracle and oracle-free), divergence
guard, option errors, baselines."""
import copy
import functools
import json
from pathlib import Path

import pytest
import torch
from helpers import tiny_train_options
from skimage import data as skdata
from torch.utils.data import DataLoader, Dataset

from basicsr_unlearn.evaluation.metrics import evaluate
from basicsr_unlearn.losses.criteria import per_sample_loss
from basicsr_unlearn.models.all_in_one_model import AllInOneModel
from basicsr_unlearn.models.unlearn_model import UnlearnModel
from basicsr_unlearn.unlearning.hooks import HookedTraining
from basicsr_unlearn.unlearning.stops.input_level_stop import InputLevelStop

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


def options(tmp_path: Path, train: dict, pretrained: str | None = None, model_type: str = 'UnlearnModel',
            **path) -> dict:
    opt = tiny_train_options(tmp_path, name='unlearn')
    opt.update(model_type=model_type, num_gpu=0, dist=False, rank=0, world_size=1, is_train=True)
    opt['train'].update(copy.deepcopy(train))
    opt['train']['scheduler']['periods'] = [10000]
    opt['path'].update(pretrain_network_g=pretrained, experiments_root=str(tmp_path), models=str(tmp_path / 'models'),
                       log=str(tmp_path), training_states=str(tmp_path / 'states'),
                       visualization=str(tmp_path / 'vis'), **path)
    return opt


def flat(batch: dict) -> dict:
    """A grouped batch as AllInOneModel takes it: ``(B*n, 3, h, w)``."""
    return {'lq': batch['lq'].flatten(0, 1), 'gt': batch['gt'].flatten(0, 1)}


@pytest.fixture(scope='module')
def pretrained(tmp_path_factory) -> str:
    """A tiny EDSR trained on haze + noise (the 'original' model); returns its checkpoint."""
    tmp = tmp_path_factory.mktemp('orig')
    model = AllInOneModel(options(tmp, {'total_iter': 200, 'optim_g': {'type': 'Adam', 'lr': 3e-3}},
                                  model_type='AllInOneModel'))
    torch.manual_seed(0)
    for it in range(1, 201):
        model.feed_data(flat(grouped_batch(it % 8)))
        model.optimize_parameters(it)
    model.save(0, 1)
    return str(tmp / 'models' / 'net_g_1.pth')


def losses_on(model: UnlearnModel, batch: dict) -> tuple[float, float]:
    """Mean L1 of the model on the forget and on the retain samples of ``batch``."""
    model.feed_data(batch)
    out = model.restore(model.lq)
    f = model.forget_mask
    return per_sample_loss(out[f], model.gt[f]).mean().item(), per_sample_loss(out[~f], model.gt[~f]).mean().item()


def run(model: UnlearnModel, iters: int, seed0: int = 0, first: int = 1) -> None:
    for it in range(first, first + iters):
        model.update_learning_rate(it)
        model.feed_data(grouped_batch(seed0 + it % 4))
        model.optimize_parameters(it)


def weights(model: UnlearnModel) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.net_g.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


ADAM = {'optim_g': {'type': 'Adam', 'lr': 1e-3}}
GA_ADV = {'method': {'type': 'GaAdv', 'tau': 0.25, 'eps': 2 / 255, 'steps': 1, 'attack': 'original'}, **ADAM}


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


@pytest.mark.parametrize('method', [
    {'type': 'IdentityTarget'},
    {'type': 'Scrub', 'tau': 0.2},
    {'type': 'NegGradPlus', 'beta': 0.5, 'tau': 0.25},
    {'type': 'GaAdv', 'tau': 'input'},
])
def test_baselines_forget(tmp_path: Path, pretrained: str, method: dict) -> None:
    model = UnlearnModel(options(tmp_path, {'method': method, **ADAM}, pretrained))
    held_out = grouped_batch(50)
    f0, _ = losses_on(model, held_out)
    run(model, 30)
    f1, _ = losses_on(model, held_out)
    assert f1 > f0 + 0.03, (f0, f1)


def test_adapt_then_unlearn_and_task_vector(tmp_path: Path, pretrained: str) -> None:
    adapt = UnlearnModel(options(tmp_path / 'a', {'method': {'type': 'AdaptStage1', 'importance': 'fisher'}, **ADAM},
                                 pretrained))
    run(adapt, 10)
    assert {'l_forget', 'l_anchor'} <= set(adapt.log_dict)
    adapt.save(0, -1)
    adapted = str(tmp_path / 'a' / 'models' / 'net_g_latest.pth')
    theta0 = torch.load(pretrained, weights_only=True)['params']
    theta_n = torch.load(adapted, weights_only=True)['params']

    repel = UnlearnModel(options(tmp_path / 'r', {'method': {'type': 'AdaptThenUnlearn', 'form': 'el2', 'alpha': 1.0,
                                                             'repulsion_weight': 0.01}, **ADAM},
                                 pretrained, pretrain_network_adapted=adapted))
    run(repel, 5)
    assert repel.log_dict['l_repulsion'] < 0.01 * 100 * torch.exp(torch.tensor(-1.0)).item()  # moved away

    tv = UnlearnModel(options(tmp_path / 't', {'method': {'type': 'TaskVector', 'scale': 0.5}}, pretrained,
                              pretrain_network_adapted=adapted))
    state = tv.get_bare_model(tv.net_g).state_dict()
    for key, value in theta0.items():
        torch.testing.assert_close(state[key], value - 0.5 * (theta_n[key] - value))


# ---------------------------------------------------------------- stop criteria
def validate(model: UnlearnModel, it: int) -> None:
    """One validation round at iteration ``it`` (two loaders, as BasicSR validates one loader at a time)."""
    model.current_iter = it
    model.validation(DataLoader(ValSet('val_a'), batch_size=2), it)
    model.validation(DataLoader(ValSet('val_b'), batch_size=3), it)


def test_oracle_stop_is_labelled_and_makes_remaining_iterations_no_ops(tmp_path: Path, pretrained: str) -> None:
    model = UnlearnModel(options(tmp_path, {**GA_ADV, 'stop': {'type': 'OracleStop', 'forget_psnr': 60.0,
                                                               'de_name': 'haze'}}, pretrained))
    run(model, 2)
    validate(model, 2)
    assert not model.stopped  # decided at the next iteration, once the whole round is in
    at_stop = weights(model)
    run(model, 3, first=3)
    assert model.stopped and model.stop_reason.startswith('oracle stop: forget PSNR')
    assert same(weights(model), at_stop)
    model.save(0, 4)
    assert not (tmp_path / 'models' / 'net_g_4.pth').exists()
    model.save(-1, -1)
    assert same(torch.load(tmp_path / 'models' / 'net_g_latest.pth', weights_only=True)['params'], at_stop)
    log = json.loads((tmp_path / 'train_log.json').read_text())
    assert log['stop']['label'] == 'oracle stop' and log['stop']['oracle'] is True
    assert log['stopped']['iter'] == 2 and log['stopped']['reason'].startswith('oracle stop')


def test_oracle_stop_reference_checkpoint(tmp_path: Path, pretrained: str) -> None:
    # the reference is the original itself: forget PSNR is already at its level -> stop at the first validation
    stop = {'type': 'OracleStop', 'reference': pretrained, 'margin': 0.01, 'de_name': 'haze'}
    model = UnlearnModel(options(tmp_path, {**GA_ADV, 'stop': stop}, pretrained))
    validate(model, 0)
    model.feed_data(grouped_batch(0))
    assert model.stopped
    # a far-away target (margin -50 dB) does not stop
    other = UnlearnModel(options(tmp_path / 'b', {**GA_ADV, 'stop': {**stop, 'margin': -50}}, pretrained))
    run(other, 1)
    validate(other, 1)
    run(other, 1, first=2)
    assert not other.stopped
    assert other.train_log['stop']['target_psnr'] == pytest.approx(model.train_log['stop']['target_psnr'] - 50.01)


def test_input_level_stop_measures_input_level_and_original_and_fires_only_when_both_hold(
        tmp_path: Path, pretrained: str) -> None:
    level = {'type': 'InputLevelStop', 'de_name': 'haze', 'retain_delta': 0.3}
    fires = UnlearnModel(options(tmp_path / 'a', {**GA_ADV, 'stop': {**level, 'margin': 60.0}}, pretrained))
    validate(fires, 0)
    stop = fires.hooks[-1]
    inputs = evaluate(lambda lq: lq, DataLoader(ValSet(), batch_size=2))['per_degradation']
    assert stop.input_level['haze'] == pytest.approx(inputs['haze']['psnr'])
    assert stop.original['noise25'] == pytest.approx(fires.last_metrics['per_degradation']['noise25']['psnr'])
    assert 'haze' not in stop.original
    fires.feed_data(grouped_batch(0))
    assert fires.stopped and fires.stop_reason.startswith('oracle-free stop: held-out forget PSNR')
    assert fires.train_log['stop']['label'] == 'oracle-free stop' and fires.train_log['stop']['oracle'] is False
    # the same weights with a level 60 dB lower: not forgotten -> carries on
    carries_on = UnlearnModel(options(tmp_path / 'b', {**GA_ADV, 'stop': {**level, 'margin': -60.0}}, pretrained))
    validate(carries_on, 0)
    run(carries_on, 1)
    assert not carries_on.stopped


def test_input_level_stop_judges_forget_level_and_retained_drop() -> None:
    stop = InputLevelStop(de_name='haze', margin=0.5, retain_delta=0.3)
    stop.input_level, stop.original, stop.table_iter = {'haze': 15.0}, {'rain': 25.0, 'noise25': 28.0}, 10
    model = type('M', (), {'train_log': {'stop': {}}, 'opt': {'train': {'total_iter': 100}}})()
    stop.best = (float('inf'), 0, {})
    assert stop.judge(model, {'haze': 15.4, 'rain': 24.8, 'noise25': 28.1}).startswith('held-out forget PSNR 15.400')
    assert stop.judge(model, {'haze': 15.6, 'rain': 24.8, 'noise25': 28.1}) is None  # not yet forgotten
    stop.rewind = False
    reason = stop.judge(model, {'haze': 14.0, 'rain': 24.6, 'noise25': 28.1})  # forgotten, but rain fell 0.4 dB
    assert reason.startswith('rain fell 0.400 dB below the original (> retain_delta 0.3)')


def test_input_level_stop_tolerates_patience_dips_in_a_row_and_judges_the_budget_end() -> None:
    stop = InputLevelStop(de_name='haze', retain_delta=0.3, rewind=False, patience=1)
    stop.input_level, stop.original, stop.best = {'haze': 15.0}, {'rain': 25.0}, (float('inf'), 0, {})
    model = type('M', (), {'train_log': {'stop': {}}, 'opt': {'train': {'total_iter': 60}}})()
    dip, kept = {'haze': 17.0, 'rain': 24.0}, {'haze': 16.0, 'rain': 24.9}
    verdicts = []
    for it, table in zip((10, 20, 30, 40, 50), (dip, kept, dip, dip, kept)):
        stop.table_iter = it
        verdicts.append(stop.judge(model, table))
    assert verdicts[:3] == [None, None, None]  # a dip, recovered; then a first dip again
    assert verdicts[3].startswith('rain fell 1.000 dB below the original') and '2 rounds in a row' in verdicts[3]
    stop.dips, stop.table_iter = 0, 60  # the last round: a first dip ends the run, so does a feasible round
    assert stop.judge(model, dip).startswith('rain fell 1.000 dB')
    assert stop.judge(model, kept).startswith('budget spent: held-out forget PSNR 16.000 dB > input level 15.000')
    with pytest.raises(ValueError, match='patience: expected an integer >= 0'):
        InputLevelStop(patience=-1)


def test_input_level_stop_with_patience_rewinds_at_the_budget_end(tmp_path: Path, pretrained: str) -> None:
    stop = {'type': 'InputLevelStop', 'de_name': 'haze', 'margin': -60.0, 'retain_delta': 0.0, 'patience': 5}
    model = UnlearnModel(options(tmp_path, {'method': {'type': 'GradientAscent', 'tau': 1.0}, 'total_iter': 20,
                                            'optim_g': {'type': 'Adam', 'lr': 1e-2}, 'stop': stop}, pretrained))
    validate(model, 1)  # the original: the best feasible round
    at_round = weights(model)
    run(model, 10, first=2)  # plain ascent drags noise down with haze
    validate(model, 11)
    run(model, 1, first=12)
    assert not model.stopped  # a dip within patience: training goes on
    run(model, 8, first=13)
    validate(model, 20)  # the budget's last round, still a dip
    model.save(-1, -1)
    assert model.stopped and 'noise25 fell' in model.stop_reason and 'rewound to iter 1' in model.stop_reason
    assert same(weights(model), at_round)


def test_input_level_stop_rewinds_to_the_best_round_that_kept_retained_types(tmp_path: Path, pretrained: str) -> None:
    stop = {'type': 'InputLevelStop', 'de_name': 'haze', 'margin': -60.0, 'retain_delta': 0.0}
    model = UnlearnModel(options(tmp_path, {'method': {'type': 'GradientAscent', 'tau': 1.0},
                                            'optim_g': {'type': 'Adam', 'lr': 1e-2}, 'stop': stop}, pretrained))
    validate(model, 1)  # the original itself: retained types unchanged -> the best feasible round
    at_round = weights(model)
    run(model, 10, first=2)  # plain ascent drags noise down with haze
    validate(model, 11)
    assert not same(weights(model), at_round)
    run(model, 1, first=12)
    assert model.stopped and 'noise25 fell' in model.stop_reason and 'rewound to iter 1' in model.stop_reason
    assert same(weights(model), at_round)
    assert model.train_log['stop']['rewound_to_iter'] == 1


def test_stop_hooks_work_in_any_all_in_one_model(tmp_path: Path, pretrained: str) -> None:
    class HookedAllInOne(HookedTraining, AllInOneModel):  # plain training (SRModel's step) with a stop criterion
        def init_training_settings(self) -> None:
            self.hooks = [InputLevelStop(de_name='haze', margin=60.0)]
            super().init_training_settings()

    model = HookedAllInOne(options(tmp_path, ADAM, pretrained, model_type='AllInOneModel'))
    validate(model, 3)
    model.update_learning_rate(4)
    assert model.stopped and model.train_log['stopped']['iter'] == 3
    assert model.stop_reason.startswith('oracle-free stop: held-out forget PSNR')
    model.save(0, 4)
    assert not (tmp_path / 'models' / 'net_g_4.pth').exists()


# ---------------------------------------------------------------- divergence guard
def nan_batch() -> dict:
    batch = grouped_batch(3)
    batch['gt'][0, 1] = float('nan')
    return batch


def test_divergence_guard_nan_restores_last_good_weights(tmp_path: Path, pretrained: str) -> None:
    model = UnlearnModel(options(tmp_path, GA_ADV, pretrained))
    run(model, 2)
    model.save(0, 2)
    good = weights(model)
    run(model, 2, seed0=1, first=3)  # the first of these steps confirms the saved weights
    model.feed_data(nan_batch())
    model.optimize_parameters(5)
    assert model.stopped and 'non-finite loss' in model.stop_reason
    assert same(weights(model), good)


def test_divergence_guard_never_restores_diverged_or_non_finite_weights(tmp_path: Path, pretrained: str) -> None:
    model = UnlearnModel(options(tmp_path, GA_ADV, pretrained))
    run(model, 2)
    model.save(0, 2)
    run(model, 1, first=3)  # confirms the iter-2 checkpoint
    good = {k: v.clone() for k, v in model.hooks[0].good['net_g'].items()}
    with torch.no_grad():  # the weights blow up (finite) and are saved before the next step notices
        for p in model.get_bare_model(model.net_g).parameters():
            p.mul_(1e30)
    model.save(0, 4)
    model.feed_data(grouped_batch(0))
    model.optimize_parameters(5)
    assert model.stopped and 'non-finite loss' in model.stop_reason
    assert same({k: v.cpu() for k, v in weights(model).items()}, good)  # not the checkpoint of iter 4

    nan_saved = UnlearnModel(options(tmp_path / 'n', GA_ADV, pretrained))
    run(nan_saved, 1)
    with torch.no_grad():
        next(nan_saved.get_bare_model(nan_saved.net_g).parameters()).fill_(float('nan'))
    nan_saved.save(0, 1)  # a NaN candidate is dropped
    assert nan_saved.hooks[0].candidate is None
    nan_saved.feed_data(grouped_batch(0))
    nan_saved.optimize_parameters(2)
    assert nan_saved.stopped
    assert all(torch.isfinite(v).all() for v in weights(nan_saved).values() if v.is_floating_point())


def test_divergence_guard_explosion(tmp_path: Path, pretrained: str) -> None:
    model = UnlearnModel(options(tmp_path, {**GA_ADV, 'guard': {'explode_ratio': 3.0}}, pretrained))
    run(model, 2)
    assert not model.stopped
    batch = grouped_batch(3)
    batch['gt'][:, 1:] = 1 - batch['gt'][:, 1:]  # retain targets suddenly far off
    model.feed_data(batch)
    model.optimize_parameters(3)
    assert model.stopped and 'retain-side loss' in model.stop_reason


def test_nan_pretrained_weights_are_refused(tmp_path: Path, pretrained: str) -> None:
    state = torch.load(pretrained, weights_only=True)
    next(iter(state['params'].values())).fill_(float('nan'))
    torch.save(state, tmp_path / 'nan.pth')
    with pytest.raises(ValueError, match='path.pretrain_network_g: .*non-finite'):
        UnlearnModel(options(tmp_path, GA_ADV, str(tmp_path / 'nan.pth')))


# ---------------------------------------------------------------- option errors
MIXED = {'type': 'MixedDegradationDataset', 'forget': ['haze'], 'role_group': {'forget': 2, 'retain': 2},
         'sources': [{'degradation': 'haze', 'type': 'folder', 'dataroot_gt': 'x', 'dataroot_lq': 'y'}]}


@pytest.mark.parametrize('train, data, match', [
    ({'methodd': {'type': 'GaAdv'}}, None, "train: unknown key 'methodd'.*did you mean 'method'"),
    ({}, None, 'train.method: expected a mapping with a "type" key'),
    ({'method': {'type': 'GaAdvv'}}, None, "train.method.type: unknown 'GaAdvv'; expected one of .*GaAdv"),
    ({'method': {'type': 'GaAdv', 'tua': 0.1}}, None, "train.method: unknown key 'tua'.*did you mean 'tau'"),
    ({'method': {'type': 'GaAdv', 'tau': 'abc'}}, None, "train.method.tau: expected a number or 'input'; got 'abc'"),
    ({'method': {'type': 'GaAdv', 'attack': 'both'}}, None, "train.method.attack: expected 'original' or 'current'"),
    ({'method': {'type': 'NegGradPlus', 'beta': 2}}, None, r'train.method.beta: expected a value in \[0, 1\]'),
    ({'method': {'type': 'Finetune'}, 'stop': {'type': 'OracleStop', 'forget_psnr': 20, 'reference': 'x.pth'}},
     None, 'train.stop.reference: expected exactly one'),
    ({'method': {'type': 'Finetune'}, 'stop': {'type': 'InputLevelStop', 'margin': 'abc'}}, None,
     "train.stop.margin: expected a number; got 'abc'"),
    ({'method': {'type': 'Finetune'}, 'stop': {'type': 'InputLevelStop', 'de_name': 'hazy'}}, None,
     "train.stop.de_name: unknown 'hazy'"),
    ({'method': {'type': 'Finetune'}, 'guard': {'explode': 3}}, None, "train.guard: unknown key 'explode'"),
    ({'method': {'type': 'Finetune'}, 'guard': {'explode_ratio': 'x'}}, None,
     "train.guard.explode_ratio: expected a number or null"),
    ({'method': {'type': 'AdaptThenUnlearn'}}, None, 'path.pretrain_network_adapted: required by train.method'),
    ({'method': {'type': 'GradientAscent'}}, {**MIXED, 'role_group': {'forget': 0, 'retain': 4}},
     r'datasets.train.role_group.forget: 0, but train.method GradientAscent needs forget samples'),
    ({'method': {'type': 'GaAdv'}}, {**MIXED, 'forget': []}, 'datasets.train.forget: train.method GaAdv needs forget'),
])
def test_option_errors_name_the_key(tmp_path: Path, pretrained: str, train: dict, data: dict | None,
                                    match: str) -> None:
    opt = options(tmp_path, train, pretrained)
    if data:
        opt['datasets']['train'] = data
    with pytest.raises(ValueError, match=match):
        UnlearnModel.check_options(opt)
    assert not (tmp_path / 'models').exists()


def test_unlearning_needs_a_pretrained_network(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match='path.pretrain_network_g: required'):
        UnlearnModel.check_options(options(tmp_path, GA_ADV))
