"""Every registered unlearning method (timm-style: parametrised over ``METHOD_REGISTRY``, so a new method file is
tested automatically) runs 2 steps on a tiny EDSR: what it declares it needs is built and nothing else, it reads
no sample role it did not declare, its steps lower its own objective and move the weights."""
import copy
from pathlib import Path

import pytest
import torch
from test_unlearn_model import flat, grouped_batch, options

from basicsr_unlearn.models.all_in_one_model import AllInOneModel
from basicsr_unlearn.models.unlearn_model import UnlearnModel
from basicsr_unlearn.precision import Precision
from basicsr_unlearn.unlearning.method import METHOD_REGISTRY, Step

NAMES = sorted(METHOD_REGISTRY.keys())


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory) -> tuple[str, str]:
    """A tiny EDSR trained 100 steps on haze + noise (the original) and a perturbed copy (an 'adapted' network)."""
    tmp = tmp_path_factory.mktemp('methods')
    model = AllInOneModel(options(tmp, {'optim_g': {'type': 'Adam', 'lr': 3e-3}}, model_type='AllInOneModel'))
    torch.manual_seed(0)
    for it in range(1, 101):
        model.feed_data(flat(grouped_batch(it % 8)))
        model.optimize_parameters(it)
    model.save(0, 1)
    original = tmp / 'models' / 'net_g_1.pth'
    state = torch.load(original, weights_only=True)
    torch.manual_seed(1)
    state['params'] = {k: v + 0.05 * torch.randn_like(v) for k, v in state['params'].items()}
    torch.save(state, tmp / 'adapted.pth')
    return str(original), str(tmp / 'adapted.pth')


def build(name: str, tmp: Path, checkpoints: tuple[str, str], **params) -> UnlearnModel:
    """An UnlearnModel of method ``name`` (default parameters unless ``params``) from the fixture's original."""
    original, adapted = checkpoints
    train = {'method': {'type': name, **params}, 'optim_g': {'type': 'Adam', 'lr': 1e-4}}
    return UnlearnModel(options(tmp, train, original, pretrain_network_adapted=adapted))


def objective(model: UnlearnModel, batch: dict) -> dict[str, float]:
    """The method's terms on ``batch`` at the current weights, as the model's step computes them (PGD seeded)."""
    model.feed_data(copy.deepcopy(batch))
    torch.manual_seed(7)
    extra = model.method.extra_inputs(model.lq, model.gt, model.forget_mask, model.nets)
    with torch.no_grad():
        out = model.net_g(model.lq if extra is None else torch.cat([model.lq, extra]))
        n = model.lq.shape[0]
        terms = model.method.losses(Step(model.lq, model.gt, model.forget_mask, out[:n], model.nets,
                                         None if extra is None else out[n:]))
    return {k: float(v) for k, v in terms.items()}


def changed(batch: dict, role: bool) -> dict:
    """``batch`` with the content of the samples whose ``is_forget == role`` replaced."""
    other = copy.deepcopy(batch)
    mask = other['is_forget'] == role
    other['lq'][mask] = 1 - other['lq'][mask]
    other['gt'][mask] = other['gt'][mask].flip(-1)
    return other


@pytest.mark.parametrize('name', NAMES)
def test_method_builds_what_it_needs_and_two_steps_lower_its_objective(name: str, tmp_path: Path,
                                                                        checkpoints: tuple[str, str]) -> None:
    model = build(name, tmp_path, checkpoints)
    needs = model.method.needs
    assert (model.nets.original is not None) == needs.original
    assert (model.nets.adapted is not None) == needs.adapted
    batch = grouped_batch(5)
    before = objective(model, batch)
    for role, needed in ((True, needs.forget), (False, needs.retain)):
        if not needed:  # a role the method did not declare does not change its terms
            assert objective(model, changed(batch, role)) == pytest.approx(before, rel=1e-6, abs=1e-7)
    start = {k: v.clone() for k, v in model.net_g.state_dict().items()}
    for it in (1, 2):
        torch.manual_seed(7)
        model.feed_data(copy.deepcopy(batch))
        model.optimize_parameters(it)
    moved = any(not torch.equal(v, start[k]) for k, v in model.net_g.state_dict().items())
    if not before:  # no loss terms (TaskVector: its change is made once, at setup)
        assert not moved and model.log_dict == {}
        return
    assert set(model.log_dict) == {*before, 'l_total'}
    assert moved
    after = objective(model, batch)
    assert sum(after.values()) < sum(before.values()), (before, after)


@pytest.mark.parametrize('name', NAMES)
def test_method_needs_reach_the_option_checks(name: str, tmp_path: Path, checkpoints: tuple[str, str]) -> None:
    """A batch design without a role the method needs is refused before the model is built, naming the option."""
    original, adapted = checkpoints
    needs = METHOD_REGISTRY.get(name)().needs
    for role, needed in (('forget', needs.forget), ('retain', needs.retain)):
        opt = options(tmp_path, {'method': {'type': name}}, original, pretrain_network_adapted=adapted)
        opt['datasets']['train'] = {'type': 'MixedDegradationDataset', 'forget': ['haze'],
                                    'role_group': {'forget': 2, 'retain': 2, role: 0}}
        if needed:
            with pytest.raises(ValueError, match=rf'datasets.train.role_group.{role}: 0, but train.method {name}'):
                UnlearnModel.check_options(opt)
        else:
            UnlearnModel.check_options(opt)


@pytest.mark.parametrize('name', NAMES)
def test_method_steps_on_batches_missing_a_role(name: str, tmp_path: Path, checkpoints: tuple[str, str]) -> None:
    """A retain-only FIRST batch, then a forget-only one, then a mixed one: every step runs, nothing diverges."""
    model = build(name, tmp_path, checkpoints)
    for it, batch in enumerate((grouped_batch(5, n_forget=0, n_retain=3), grouped_batch(6, n_forget=3, n_retain=0),
                                grouped_batch(7)), start=1):
        torch.manual_seed(7)
        model.feed_data(batch)
        model.optimize_parameters(it)
        assert not model.stopped, model.stop_reason
        assert all(torch.isfinite(torch.tensor(v)) for v in model.log_dict.values()), model.log_dict
    assert all(torch.isfinite(v).all() for v in model.net_g.state_dict().values())


@pytest.mark.parametrize('name', NAMES)
def test_method_resumed_steps_as_the_run_it_resumes(name: str, tmp_path: Path, checkpoints: tuple[str, str]) -> None:
    """Saved after 2 steps and resumed as the launcher resumes (``net_g`` from ``net_g_2.pth``, the original kept in
    ``path.original_pretrain_network_g``), the next step gives the same weights and method state as the run that
    went on: same original, what the method computed once restored (not recomputed, ``setup`` not run again)."""
    original, adapted = checkpoints
    model = build(name, tmp_path, checkpoints)
    for it in (1, 2):
        torch.manual_seed(it)
        model.feed_data(grouped_batch(it))
        model.optimize_parameters(it)
    model.save(0, 2)
    train = {'method': {'type': name}, 'optim_g': {'type': 'Adam', 'lr': 1e-4}}
    opt = options(tmp_path, train, str(tmp_path / 'models' / 'net_g_2.pth'), pretrain_network_adapted=adapted,
                  resume_state=str(tmp_path / 'states' / '2.state'), original_pretrain_network_g=original,
                  original_param_key_g='params')
    resumed = UnlearnModel(opt)
    resumed.resume_training(torch.load(tmp_path / 'states' / '2.state', weights_only=True))
    for m in (model, resumed):
        torch.manual_seed(3)
        m.feed_data(grouped_batch(3))
        m.optimize_parameters(3)
    assert all(torch.equal(v, resumed.net_g.state_dict()[k]) for k, v in model.net_g.state_dict().items())
    state, again = model.method.state_dict(), resumed.method.state_dict()
    assert state.keys() == again.keys()
    for key, value in state.items():
        assert (torch.equal(torch.cat([t.flatten() for t in value]), torch.cat([t.flatten() for t in again[key]]))
                if isinstance(value, list) else value == again[key]), (name, key)


def test_task_vector_resumed_with_another_scale_is_refused(tmp_path: Path, checkpoints: tuple[str, str]) -> None:
    """The resumed weights hold the vector applied at the first start (``setup`` is not run again); a resume with
    another ``scale`` would silently keep the old one, so it is refused."""
    original, adapted = checkpoints
    build('TaskVector', tmp_path, checkpoints).save(0, 1)
    train = {'method': {'type': 'TaskVector', 'scale': 2.0}, 'optim_g': {'type': 'Adam', 'lr': 1e-4}}
    opt = options(tmp_path, train, str(tmp_path / 'models' / 'net_g_1.pth'), pretrain_network_adapted=adapted,
                  resume_state=str(tmp_path / 'states' / '1.state'), original_pretrain_network_g=original,
                  original_param_key_g='params')
    resumed = UnlearnModel(opt)
    with pytest.raises(ValueError, match='scale: the run applied 1.0 at its first start'):
        resumed.resume_training(torch.load(tmp_path / 'states' / '1.state', weights_only=True))


@pytest.mark.parametrize('dtype', ['bf16', 'fp16'])
@pytest.mark.parametrize('name', NAMES)
def test_method_steps_under_mixed_precision(name: str, dtype: str, tmp_path: Path,
                                            checkpoints: tuple[str, str]) -> None:
    """The model's step under autocast (and fp16's grad scaler), exercised on the CPU by giving the model a CPU
    :class:`Precision` (``train.amp`` itself is ignored there): finite losses and weights, the weights move."""
    model = build(name, tmp_path, checkpoints)
    model.precision = Precision(dtype, channels_last=True, device_type='cpu')
    start = {k: v.clone() for k, v in model.net_g.state_dict().items()}
    for it in (1, 2):
        torch.manual_seed(it)
        model.feed_data(grouped_batch(it))
        model.optimize_parameters(it)
        assert not model.stopped, model.stop_reason
    assert all(torch.isfinite(torch.tensor(v)) for v in model.log_dict.values()), model.log_dict
    after = model.net_g.state_dict()
    assert all(torch.isfinite(v).all() for v in after.values())
    assert (name == 'TaskVector') != any(not torch.equal(v, after[k]) for k, v in start.items())
