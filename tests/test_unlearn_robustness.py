"""UnlearnModel on awkward batches and set-ups: batches missing a role (in one process and across 2 DDP ranks: no
deadlock, ranks stay identical), EMA weights restored by the guard and the rewind, a stopped run resumed stays
stopped, a resumed run keeps the original network, the method's state, the stop records and a round validated
after its checkpoint, ``train.amp`` ignored on the CPU."""
import json
import subprocess
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from basicsr.archs import build_network
from helpers import (
    CONSTANT_SCHEDULE,
    LAUNCHER_LOADER,
    PYTHON,
    ROOT,
    TINY_EDSR,
    TORCHRUN,
    free_port,
    run_tool,
    tiny_workspace,
    tool_env,
    write_yaml,
)
from test_unlearn_model import (  # noqa: F401  (the module fixture)
    GA_ADV,
    grouped_batch,
    nan_batch,
    options,
    pretrained,
    run,
    same,
    validate,
    weights,
)

from basicsr_unlearn.models.unlearn_model import UnlearnModel


def ema(model: UnlearnModel) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.net_g_ema.state_dict().items()}


def test_guard_forget_only_first_batch_sets_no_retain_reference(tmp_path: Path, pretrained: str) -> None:  # noqa: F811
    model = UnlearnModel(options(tmp_path, {**GA_ADV, 'guard': {'explode_ratio': 3.0}}, pretrained))
    model.feed_data(grouped_batch(1, n_forget=3, n_retain=0))
    model.optimize_parameters(1)
    assert model.hooks[0].first_retain is None
    run(model, 3, first=2)
    assert not model.stopped, model.stop_reason
    assert model.hooks[0].first_retain > 0
    batch = grouped_batch(3)
    batch['gt'][:, 1:] = 1 - batch['gt'][:, 1:]  # a real explosion is still caught
    model.feed_data(batch)
    model.optimize_parameters(5)
    assert model.stopped and 'retain-side loss' in model.stop_reason


def test_guard_restores_the_ema_weights_too(tmp_path: Path, pretrained: str) -> None:  # noqa: F811
    model = UnlearnModel(options(tmp_path, {**GA_ADV, 'ema_decay': 0.5}, pretrained))
    run(model, 2)
    model.save(0, 2)
    good, good_ema = weights(model), ema(model)
    run(model, 2, seed0=1, first=3)  # the first of these steps confirms the saved weights
    assert not same(ema(model), good_ema)
    model.feed_data(nan_batch())
    model.optimize_parameters(5)
    assert model.stopped and 'non-finite loss' in model.stop_reason
    assert same(weights(model), good) and same(ema(model), good_ema)


def test_input_level_rewind_restores_the_ema_weights_too(tmp_path: Path, pretrained: str) -> None:  # noqa: F811
    stop = {'type': 'InputLevelStop', 'de_name': 'haze', 'margin': -60.0, 'retain_delta': 0.0}
    model = UnlearnModel(options(tmp_path, {'method': {'type': 'GradientAscent', 'tau': 1.0}, 'ema_decay': 0.5,
                                            'optim_g': {'type': 'Adam', 'lr': 1e-2}, 'stop': stop}, pretrained))
    validate(model, 1)
    at_round, at_round_ema = weights(model), ema(model)
    run(model, 10, first=2)
    validate(model, 11)
    run(model, 1, first=12)
    assert model.stopped and 'rewound to iter 1' in model.stop_reason
    assert same(weights(model), at_round) and same(ema(model), at_round_ema)


DDP_WORKER = textwrap.dedent("""
    import datetime, json, sys
    from pathlib import Path
    import basicsr_unlearn  # noqa: F401  (before anything of basicsr)
    import torch
    import torch.distributed as dist
    from test_unlearn_model import grouped_batch, options
    from basicsr_unlearn import compat
    from basicsr_unlearn.models.unlearn_model import UnlearnModel

    dist.init_process_group('gloo', timeout=datetime.timedelta(seconds=30))  # a collective mismatch fails, not hangs
    rank, out, pretrained = dist.get_rank(), Path(sys.argv[1]), sys.argv[2]
    roles = [(0, 3), (3, 0), (1, 2)] if rank == 0 else [(1, 2), (0, 3), (3, 0)]  # (forget, retain) per step
    results = {}
    for name in ('SalUn', 'AdaptStage1', 'GradientAscent', 'GaAdv', 'Scrub', 'NegGradPlus'):
        train = {'method': {'type': name}, 'optim_g': {'type': 'Adam', 'lr': 1e-3}, 'guard': {'explode_ratio': 100.0}}
        opt = options(out / name, train, pretrained)
        opt.update(dist=True, rank=rank, world_size=2)
        model = UnlearnModel(opt)
        start = [p.detach().clone() for p in model.get_bare_model(model.net_g).parameters()]
        for it, (f, r) in enumerate(roles, start=1):
            torch.manual_seed(it)
            model.feed_data(grouped_batch(10 * it + rank, n_forget=f, n_retain=r))
            model.optimize_parameters(it)
        params = list(model.get_bare_model(model.net_g).parameters())
        state = getattr(model.method, 'masks', None) or getattr(model.method, 'fisher', None) or []
        flat = torch.cat([t.detach().flatten() for t in [*params, *state]])
        both = [torch.zeros_like(flat) for _ in range(2)]
        dist.all_gather(both, flat)
        results[name] = {'same_on_ranks': torch.equal(*both), 'has_state': bool(state),
                         'moved': any(not torch.equal(p, p0) for p, p0 in zip(params, start)),
                         'stopped': model.stop_reason, 'log': model.log_dict}
    if rank == 0:
        (out / 'results.json').write_text(json.dumps(results))
    del model  # no DDP module may outlive the group (compat.destroy_process_group)
    compat.destroy_process_group()
""")


def test_ddp_ranks_with_different_roles_stay_in_step(tmp_path: Path) -> None:
    """2 gloo ranks whose batches miss different roles at each step (the first batch of rank 0 is retain-only):
    every step completes on both (no collective only some ranks reach), weights, SalUn masks and the Fisher are
    identical on both, nothing is judged an explosion, and the logged terms are the union over ranks."""
    torch.manual_seed(0)
    original = tmp_path / 'original.pth'
    torch.save({'params': build_network(dict(TINY_EDSR)).state_dict()}, original)
    (tmp_path / 'worker.py').write_text(DDP_WORKER)
    env = tool_env(PYTHONPATH=f'{ROOT}:{ROOT / "tests"}')
    cmd = [TORCHRUN, '--nproc_per_node=2', f'--master_port={free_port()}', str(tmp_path / 'worker.py'),
           str(tmp_path), str(original)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / 'results.json').read_text())
    for name, r in results.items():
        assert r['same_on_ranks'] and r['moved'] and not r['stopped'], (name, r)
        assert r['has_state'] == (name in ('SalUn', 'AdaptStage1')), (name, r)
    assert set(results['GaAdv']['log']) == {'l_forget', 'l_retain', 'l_adv', 'l_total'}
    for r in results.values():  # l_total: the sum of the logged averages, not a mean over zero-loss ranks
        log = r['log']
        assert log['l_total'] == pytest.approx(sum(v for k, v in log.items() if k != 'l_total')), log
    assert set(results['GradientAscent']['log']) == {'l_forget', 'l_total'}


def test_a_stopped_run_resumed_stays_stopped(tmp_path: Path) -> None:
    """tools/train.py: an oracle stop at the first validation (iter 3 of 9), then ``--auto_resume`` from
    ``3.state``: the resumed run knows it stopped (log, train_log), trains nothing and keeps the weights at the stop
    (EMA included)."""
    option_file = Path(tiny_workspace(tmp_path, total_iter=9))
    opt = yaml.safe_load(option_file.read_text())
    original = tmp_path / 'original.pth'
    torch.manual_seed(0)
    net = build_network(dict(TINY_EDSR)).state_dict()
    torch.save({'params': net, 'params_ema': net}, original)
    opt['model_type'] = 'UnlearnModel'
    opt['path']['pretrain_network_g'] = str(original)
    opt['train'].update(method={'type': 'Finetune'}, ema_decay=0.5,
                        stop={'type': 'OracleStop', 'de_name': 'noise25', 'forget_psnr': 99.0})
    opt['logger']['save_checkpoint_freq'] = 3
    write_yaml(option_file, opt)
    first = run_tool('train.py', ['-opt', str(option_file)], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    exp = tmp_path / 'experiments' / 'tiny'
    assert sorted(p.name for p in (exp / 'training_states').glob('*.state')) == ['3.state']
    at_stop = torch.load(exp / 'models' / 'net_g_latest.pth', weights_only=True)

    resumed = run_tool('train.py', ['-opt', str(option_file), '--auto_resume'], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    text = resumed.stdout + resumed.stderr
    assert 'iter: 3.' in text and 'Resumed a run that had stopped at iter 3: oracle stop: forget PSNR' in text
    assert sorted(p.name for p in (exp / 'training_states').glob('*.state')) == ['3.state']
    assert not (exp / 'models' / 'net_g_6.pth').exists()
    latest = torch.load(exp / 'models' / 'net_g_latest.pth', weights_only=True)
    for key in ('params', 'params_ema'):
        assert all(torch.equal(latest[key][k], v) for k, v in at_stop[key].items()), key
    log = json.loads((exp / 'train_log.json').read_text())
    assert log['stopped']['iter'] == 3 and log['stopped']['reason'].startswith('oracle stop: forget PSNR')
    assert log['stop']['label'] == 'oracle stop' and log['stop']['target_psnr'] == 99.0


def test_resumed_run_keeps_the_guard_and_rewind_state(tmp_path: Path, pretrained: str) -> None:  # noqa: F811
    """Resumed from ``3.state`` (as the launcher resumes: the original kept in ``path.original_pretrain_network_g``),
    the run still rewinds to the best round of before the resume (iter 1), not to the weights it resumed with, the
    stop's original baseline is the original's, and the guard keeps its good weights and first retain-side value."""
    stop = {'type': 'InputLevelStop', 'de_name': 'haze', 'margin': -60.0, 'retain_delta': 0.0}
    train = {'method': {'type': 'GradientAscent', 'tau': 1.0}, 'optim_g': {'type': 'Adam', 'lr': 1e-2},
             'stop': stop, 'guard': {'explode_ratio': 1e6}}
    model = UnlearnModel(options(tmp_path, train, pretrained))
    validate(model, 1)
    at_round = weights(model)
    run(model, 2, first=2)
    model.save(0, 3)
    good = model.hooks[0].good
    assert good is not None

    state = tmp_path / 'states' / '3.state'
    resumed = UnlearnModel(options(tmp_path, train, str(tmp_path / 'models' / 'net_g_3.pth'), resume_state=str(state),
                                   original_pretrain_network_g=pretrained, original_param_key_g='params'))
    resumed.resume_training(torch.load(state, weights_only=True))
    assert resumed.hooks[0].good is not None and same(resumed.hooks[0].good['net_g'], good['net_g'])
    run(resumed, 8, first=4)
    validate(resumed, 11)
    run(resumed, 1, first=12)
    assert resumed.stopped and 'rewound to iter 1' in resumed.stop_reason, resumed.stop_reason
    assert same(weights(resumed), at_round)
    assert model.hooks[1].original and resumed.hooks[1].original == model.hooks[1].original


def saved_then_validated_then_resumed(tmp_path: Path, train: dict, pretrained: str,  # noqa: F811
                                      rounds: tuple[int, ...]) -> tuple[UnlearnModel, UnlearnModel]:
    """A run validated at ``rounds`` (the last one 3) whose iteration 3 is saved before its validation (BasicSR's
    order), and the same run resumed from ``3.state``."""
    model = UnlearnModel(options(tmp_path, train, pretrained))
    for it in range(1, 4):
        if it > 1:
            run(model, 1, first=it)
        if it == 3:
            model.save(0, 3)
        if it in rounds:
            validate(model, it)
    state = tmp_path / 'states' / '3.state'
    resumed = UnlearnModel(options(tmp_path, train, str(tmp_path / 'models' / 'net_g_3.pth'), resume_state=str(state),
                                   original_pretrain_network_g=pretrained, original_param_key_g='params'))
    resumed.resume_training(torch.load(state, weights_only=True))
    return model, resumed


def test_a_round_validated_at_a_saved_iteration_is_judged_by_the_resumed_run(tmp_path: Path,
                                                                              pretrained: str) -> None:  # noqa: F811
    """Round 3, validated after ``3.hooks`` was written, is in the resumed run's stop state: the resumed run takes
    the best round 3 as the run that went on; the stop records of round 1 (``train_log['stop']``) survive the
    resume."""
    stop = {'type': 'InputLevelStop', 'de_name': 'haze', 'margin': -60.0, 'retain_delta': 100.0}
    train = {'method': {'type': 'GradientAscent', 'tau': 1.0}, 'optim_g': {'type': 'Adam', 'lr': 1e-2}, 'stop': stop}
    model, resumed = saved_then_validated_then_resumed(tmp_path, train, pretrained, (1, 3))
    assert 'input_level_psnr' in model.train_log['stop'] and resumed.train_log['stop'] == model.train_log['stop']
    assert resumed.hooks[1].table == model.hooks[1].table and not resumed.hooks[1].judged
    at_round = weights(model)
    for m in (model, resumed):
        run(m, 1, first=4)
    best, again = model.hooks[1].best, resumed.hooks[1].best
    assert best[1] == 3 and again[:2] == best[:2] and same(again[2]['net_g'], at_round)
    assert not resumed.stopped


def test_a_stop_at_a_saved_iteration_is_taken_by_the_resumed_run(tmp_path: Path, pretrained: str) -> None:  # noqa: F811
    """An oracle stop on round 3 (validated after ``3.hooks`` was written) stops the resumed run at iter 3 too."""
    train = {'method': {'type': 'GradientAscent', 'tau': 1.0}, 'optim_g': {'type': 'Adam', 'lr': 1e-2},
             'stop': {'type': 'OracleStop', 'de_name': 'haze', 'forget_psnr': 99.0}}
    model, resumed = saved_then_validated_then_resumed(tmp_path, train, pretrained, (3,))
    for m in (model, resumed):
        run(m, 1, first=4)
    assert resumed.stopped and resumed.stop_reason == model.stop_reason and 'at iter 3' in resumed.stop_reason
    assert resumed.train_log['stopped'] == model.train_log['stopped'] and resumed.train_log['stopped']['iter'] == 3


RESUME_SPY = textwrap.dedent("""
    import sys
    import basicsr_unlearn  # noqa: F401  (before anything of basicsr)
    import torch
    from basicsr_unlearn.launchers.train import main
    from basicsr_unlearn.models.unlearn_model import UnlearnModel

    resume_training, out = UnlearnModel.resume_training, sys.argv.pop(1)

    def spy(self, resume_state):
        resume_training(self, resume_state)
        original = self.nets.original
        torch.save({'original': None if original is None else original.state_dict(),
                    'method': self.method.state_dict()}, out)

    UnlearnModel.resume_training = spy
    main()
""")


def unlearn_yaml(cwd: Path, name: str, checkpoint: Path, total_iter: int, **train) -> str:
    """Tiny EDSR unlearning haze from the demo set (``cwd`` = ``demo_root.parents[1]``), starting from
    ``checkpoint``'s ``params_ema``; a checkpoint every 3 iterations."""
    base = ROOT / 'options' / '_base_'
    opt = {'_base_': [str(base / 'runtime.yml'), str(base / 'unlearn' / 'demo3_forget-haze.yml')],
           'name': name, 'model_type': 'UnlearnModel', 'network_g': TINY_EDSR,
           'path': {'pretrain_network_g': str(checkpoint), 'param_key_g': 'params_ema'},
           'datasets': {'train': {**LAUNCHER_LOADER, 'batch_size_per_gpu': 1}},
           'train': {**CONSTANT_SCHEDULE, 'total_iter': total_iter, **train},
           'val': {'val_freq': 1000}, 'logger': {'print_freq': 1, 'save_checkpoint_freq': 3}}
    return write_yaml(cwd / f'{name}.yml', opt)


def two_nets(path: Path) -> dict[str, torch.Tensor]:
    """Save a checkpoint whose ``params`` and ``params_ema`` differ; returns its ``params_ema``."""
    torch.manual_seed(0)
    params, ema_params = (build_network(dict(TINY_EDSR)).state_dict() for _ in range(2))
    torch.save({'params': params, 'params_ema': ema_params}, path)
    return ema_params


@pytest.mark.parametrize('method', [{'type': 'Scrub'}, {'type': 'SalUn', 'sparsity': 0.3}])
def test_a_resumed_run_keeps_the_original_and_the_method_state(tmp_path: Path, demo_root: Path, method: dict) -> None:
    """tools/train.py: 3 iterations (a checkpoint at 3), then ``--auto_resume`` to 6. The resumed run's frozen
    original is bit-identical to the pretrained checkpoint's ``params_ema`` (BasicSR points ``pretrain_network_g`` at
    ``net_g_3.pth`` and ``param_key_g`` at ``params``), and SalUn's masks are those of the first start."""
    cwd = demo_root.parents[1]
    name = f"resume_{method['type']}"
    original = two_nets(tmp_path / 'original.pth')
    option_file = unlearn_yaml(cwd, name, tmp_path / 'original.pth', 3, method=method)
    first = run_tool('train.py', ['-opt', option_file], cwd)
    assert first.returncode == 0, first.stderr[-3000:]
    states = cwd / 'experiments' / name / 'training_states'
    resumed_with = torch.load(cwd / 'experiments' / name / 'models' / 'net_g_3.pth', weights_only=True)['params']
    assert any(not torch.equal(resumed_with[k], v) for k, v in original.items())

    (tmp_path / 'spy.py').write_text(RESUME_SPY)
    spy = tmp_path / 'spy.pth'
    args = [str(spy), '-opt', option_file, '--auto_resume', '--cfg-options', 'train.total_iter=6']
    resumed = subprocess.run([PYTHON, str(tmp_path / 'spy.py'), *args], cwd=cwd, capture_output=True, text=True,
                             timeout=300, env=tool_env(PYTHONPATH=str(ROOT)))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert 'iter: 3.' in resumed.stdout + resumed.stderr and (states / '6.state').is_file()
    seen = torch.load(spy, weights_only=True)
    saved = [torch.load(states / f'{it}.hooks', weights_only=True)['method'] for it in (3, 6)]
    if method['type'] == 'Scrub':
        assert seen['original'].keys() == original.keys()
        assert all(torch.equal(seen['original'][k], v) for k, v in original.items())
        assert seen['method'] == saved[0] == saved[1] == {}
    else:
        masks = saved[0]['masks']
        assert seen['original'] is None and masks is not None
        for other in (seen['method']['masks'], saved[1]['masks']):
            assert len(other) == len(masks) and all(torch.equal(a, b) for a, b in zip(other, masks, strict=True))


def test_the_original_path_is_the_plugin_s(tmp_path: Path, demo_root: Path) -> None:
    """``path.original_pretrain_network_g`` in a YAML is refused before any folder is created (the launcher sets
    it)."""
    cwd = demo_root.parents[1]
    two_nets(tmp_path / 'original.pth')
    option_file = unlearn_yaml(cwd, 'own_original', tmp_path / 'original.pth', 3, method={'type': 'Scrub'})
    args = ['--cfg-options', f'path.original_pretrain_network_g={tmp_path / "original.pth"}']
    proc = run_tool('train.py', ['-opt', option_file, *args], cwd)
    assert proc.returncode != 0 and "unknown key 'original_pretrain_network_g'" in proc.stderr, proc.stderr[-2000:]
    assert not (cwd / 'experiments' / 'own_original').exists()


def test_amp_is_ignored_on_the_cpu_with_the_same_weights(tmp_path: Path, demo_root: Path) -> None:
    """tools/train.py on the CPU: GaAdv with ``train.amp: {dtype: fp16}`` and ``channels_last`` logs that they are
    ignored and ends with the weights of the same run without them."""
    cwd = demo_root.parents[1]
    two_nets(tmp_path / 'original.pth')
    latest = {}
    for name, extra in (('fp32', {}), ('amp', {'amp': {'dtype': 'fp16'}, 'channels_last': True})):
        option_file = unlearn_yaml(cwd, f'unlearn_{name}', tmp_path / 'original.pth', 3,
                                   method={'type': 'GaAdv', 'eps': 0.008}, **extra)
        proc = run_tool('train.py', ['-opt', option_file], cwd)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert ('train.amp / train.channels_last: ignored on the cpu' in proc.stderr) == bool(extra)
        path = cwd / 'experiments' / f'unlearn_{name}' / 'models' / 'net_g_latest.pth'
        latest[name] = torch.load(path, weights_only=True)['params']
    assert all(torch.equal(v, latest['fp32'][k]) for k, v in latest['amp'].items())
