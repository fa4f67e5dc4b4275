"""tools/demo.py without running its stages: the stage graph (both forgotten types, reference and method seeds, `data`
first also with shipped base models), the shipped base checkpoints (install, sha256 and options checks) and the
Runner on small fake stages (reruns, killing running stages on an error)."""
import json
import os
import shutil
import signal

import pytest

from basicsr_unlearn.config import apply_force_yml, load_options
from tests.helpers import ROOT, load_tool, run_tool


@pytest.fixture(scope='module')
def demo():
    return load_tool('demo', 'demo_tool')


@pytest.fixture(scope='module')
def stages(demo):
    return demo.build_stages()


def force_yml(stage) -> list[str]:
    return stage.cmd[stage.cmd.index('--force_yml') + 1:] if '--force_yml' in stage.cmd else []


def test_stage_graph_has_both_types_two_reference_seeds_and_three_seeds_per_method(demo, stages):
    by_name = {s.name: s for s in stages}
    assert len(by_name) == len(stages)
    seen = set()
    for stage in stages:  # start order respects the dependencies
        assert set(stage.needs) <= seen, stage.name
        seen.add(stage.name)
    assert {'original', 'retrain_wo_haze', 'retrain_wo_haze_seed1', 'retrain_wo_rain', 'retrain_wo_rain_seed1'} <= seen
    names = [s.name for s in stages]  # the two long reports start last, side by side
    assert names[-2:] == ['unlearn_report_haze', 'unlearn_report_rain']
    for forget in ('haze', 'rain'):
        for stems in demo.UNLEARN_METHODS.values():
            for stem in stems:
                runs = {by_name[f'unlearn_{forget}_{stem}_s{seed}'].run_dir for seed in (0, 1, 2)}
                assert len(runs) == 3, (forget, stem)
                for seed in (0, 1, 2):
                    stage = by_name[f'unlearn_{forget}_{stem}_s{seed}']
                    opt = apply_force_yml(demo.merged_options(stage.options[0]), force_yml(stage))
                    assert opt['datasets']['train']['forget'] == [forget]
                    assert opt['manual_seed'] == opt['datasets']['train']['seed'] == seed
                    assert opt['name'] == stage.run_dir.name
                    adapted = opt['path'].get('pretrain_network_adapted')
                    if adapted:  # the later stage reads stage 1 of its own seed
                        assert adapted == str(by_name[f'unlearn_{forget}_adapt-stage1_s{seed}'].outputs[0])
        oracle = by_name[f'unlearn_{forget}_ga-adv-oracle_s0']
        assert f'retrain_wo_{forget}' in oracle.needs
        report = by_name[f'unlearn_report_{forget}']
        cmd = report.cmd
        assert cmd[cmd.index('--forget') + 1] == forget
        references = [cmd[i + 1] for i, a in enumerate(cmd) if a == '--reference']
        assert references == [str(by_name[f'retrain_wo_{forget}{s}'].run_dir) for s in ('', '_seed1')]
        methods = dict(cmd[i + 1].split('=', 1) for i, a in enumerate(cmd) if a == '--method')
        assert set(methods) == set(demo.UNLEARN_METHODS)
        assert all(len(set(runs.split(','))) == 3 for runs in methods.values())
        assert methods['task_vector'].split(',')[2] == '+'.join(
            str(by_name[f'unlearn_{forget}_{stem}_s2'].run_dir) for stem in ('adapt-stage1', 'task-vector'))
        assert set(report.needs) >= {f'unlearn_{forget}_{stem}_s2' for stem in ('ga-adv', 'salun')}
        step = by_name[f'step_time_wo_{forget}']  # times a retraining step beside the methods, for the cost
        assert step.needs == ['data'] and step.name in report.needs
        assert cmd[cmd.index('--retrain-step-time') + 1] == str(step.run_dir)
        opt = apply_force_yml(demo.merged_options(step.options[0]), force_yml(step))
        assert step.options == by_name[f'retrain_wo_{forget}'].options and opt['name'] == step.run_dir.name
        assert opt['train']['total_iter'] == 50 < opt['val']['val_freq']


def test_reference_seed_trains_another_run(stages):
    stage = {s.name: s for s in stages}['retrain_wo_rain_seed1']
    opt = apply_force_yml(load_options(str(stage.options[0])), force_yml(stage))
    assert opt['name'] == 'train_promptir-tiny_demo3-wo-rain_l1_1143it_seed1' == stage.run_dir.name
    assert opt['manual_seed'] == 1 and [s['degradation'] for s in opt['datasets']['train']['sources']] == [
        'noise15', 'noise25', 'noise50', 'haze']


def test_each_reference_trains_as_many_epochs_as_the_original(demo):
    from basicsr_unlearn.data.demo_data import SIZES, SPLITS

    photos, variants = len(SPLITS['train']), SIZES['demo'].variants  # a synth source draws from the clean photos

    def passes(option_file):  # iterations x batch / samples per pass
        opt = demo.merged_options(option_file)
        train = opt['datasets']['train']
        per_pass = sum(photos * (1 if s['type'] == 'synth' else variants) * s.get('repeat', 1)
                       for s in train['sources'])
        return opt['train']['total_iter'] * train['batch_size_per_gpu'] / per_pass

    original = passes(demo.find_option('train', 'train_promptir-tiny_demo3_l1'))
    for forget in demo.FORGET_TYPES:
        assert passes(demo.reference_option(forget)) == pytest.approx(original, rel=1e-3), forget


def test_plateau_check_continues_the_original_and_each_first_reference_from_its_checkpoint(demo, stages):
    by_name = {s.name: s for s in stages}
    checks = demo.plateau_stages()
    assert [c.name for c in checks] == ['original_continued', 'retrain_wo_haze_continued', 'retrain_wo_rain_continued']
    for check in checks:
        base = by_name[check.name.removesuffix('_continued')]
        assert check.needs == [base.name] and check.options == base.options
        opt = apply_force_yml(demo.merged_options(check.options[0]), force_yml(check))
        assert opt['name'] == check.run_dir.name == f'{base.run_dir.name}_continued'
        assert opt['path']['pretrain_network_g'] == str(base.outputs[0])
        assert opt['train'] == demo.merged_options(base.options[0])['train']  # the same schedule once more


@pytest.mark.parametrize('moved, plateau', [(0.15, True), (-0.2, True), (0.25, False), (-0.3, False)])
def test_plateau_table_flags_a_model_whose_val_psnr_moves_more_than_0_2_db(demo, tmp_path, monkeypatch, moved,
                                                                          plateau):
    monkeypatch.chdir(tmp_path)
    check = demo.plateau_stages()[0]
    for run_dir, it, rain in ((check.run_dir.parent / check.run_dir.name.removesuffix('_continued'), 2000, 20.0),
                              (check.run_dir, 2000, 20.0 + moved)):
        run_dir.mkdir(parents=True)
        val = {'rain': {'psnr': rain, 'ssim': 0.5}, 'haze': {'psnr': 18.0, 'ssim': 0.8}}
        (run_dir / 'train_log.json').write_text(json.dumps({'val': [[it - 250, {}], [it, val]]}))
    (entry,) = demo.plateau_table([check]).values()
    assert entry['iters'] == 2000 and entry['continued_iters'] == 4000
    assert entry['move_db'] == {'rain': pytest.approx(moved), 'haze': 0.0}
    assert entry['plateau'] is plateau


def ship_base(demo, tmp_path, monkeypatch, count=1):
    """The first `count` base models, faked as trained under ``tmp_path/experiments``, shipped to ``tmp_path/ship``;
    returns the manifest."""
    monkeypatch.chdir(tmp_path)
    models = {}
    for _, option_file, seed in demo.base_runs()[:count]:
        run_dir = tmp_path / 'experiments' / demo.seeded(load_options(str(option_file))['name'], seed)[0]
        (run_dir / 'models').mkdir(parents=True)
        (run_dir / 'models' / 'net_g_latest.pth').write_bytes(b'weights')
        (run_dir / 'train_log.json').write_text(json.dumps({'wall_time_s': 3.0}))
        (run_dir / f'train_{run_dir.name}_20260101_000000.log').write_text('log')
        models[run_dir.name] = demo.ship(tmp_path / 'ship', run_dir, option_file, seed)
    return models


def test_shipped_checkpoint_is_installed_after_its_checks(demo, tmp_path, monkeypatch):
    assert demo.read_manifest(tmp_path) == {}
    models = ship_base(demo, tmp_path, monkeypatch)
    (entry,) = models.values()
    assert entry['option'] == 'options/train/train_promptir-tiny_demo3_l1_2kit.yml' and len(entry['sha256']) == 64
    stages = {s.name: s for s in demo.base_stages(models, tmp_path / 'ship')}
    original = stages['original']
    assert original.action is not None and original.stamp == entry['sha256'] and original.cmd == []
    assert stages['retrain_wo_haze'].action is None  # not shipped: trained
    run_dir = original.run_dir
    shutil.rmtree(tmp_path / run_dir)
    original.action()
    assert (tmp_path / original.outputs[0]).read_bytes() == b'weights'
    assert json.loads((tmp_path / run_dir / 'train_log.json').read_text()) == {'wall_time_s': 3.0}


def test_a_shipped_checkpoint_that_does_not_match_is_an_error(demo, tmp_path, monkeypatch):
    models = ship_base(demo, tmp_path, monkeypatch)
    (entry,) = models.values()
    (tmp_path / 'ship' / entry['file']).write_bytes(b'other weights')
    with pytest.raises(SystemExit, match=r'\.pth: sha256 [0-9a-f]{64} does not match .*manifest\.json.*--build-base'):
        demo.base_stages(models, tmp_path / 'ship')
    (tmp_path / 'ship' / entry['file']).write_bytes(b'weights')
    entry['options_sha1'] = '0' * 40
    with pytest.raises(SystemExit, match=r'trained from other options than options/train/train_promptir-tiny_demo3_l1'):
        demo.base_stages(models, tmp_path / 'ship')
    (tmp_path / 'ship' / entry['file']).unlink()
    with pytest.raises(SystemExit, match=r'\.pth: listed in .*manifest\.json.* but missing'):
        demo.base_stages(models, tmp_path / 'ship')


def test_help_lists_the_base_model_options():
    proc = run_tool('demo.py', ['--help'], cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '--fresh-base' in proc.stdout and '--build-base' in proc.stdout


def test_with_shipped_base_models_every_stage_waits_for_the_data(demo, tmp_path, monkeypatch):
    models = ship_base(demo, tmp_path, monkeypatch, count=len(demo.base_runs()))
    stages = demo.build_stages(models, tmp_path / 'ship')
    by_name = {s.name: s for s in stages}
    installs = [s.name for s in stages if s.action is not None]
    assert installs == [name for name, _, _ in demo.base_runs()]

    def upstream(name):
        needs = set(by_name[name].needs)
        return needs.union(*(upstream(n) for n in needs))

    readers = [s.name for s in stages if s.cmd and s.name != 'data']  # every command reads datasets/demo
    assert {'asvp_study', 'unlearn_haze_ga_s0', 'unlearn_report_rain'} <= set(readers)
    for name in readers + installs:
        assert 'data' in upstream(name), name
    assert demo.Runner(stages, 2).ready(list(by_name)) == ['data']  # what the runner may start first


def test_a_rerun_stage_reruns_the_stages_after_it(demo, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    stages = [demo.Stage(name, ['touch', str(tmp_path / name)], outputs=[tmp_path / name], needs=needs)
              for name, needs in (('base', []), ('after', ['base']), ('other', []))]
    assert demo.Runner(stages, 2).run().keys() == {'base', 'after', 'other'}
    runner = demo.Runner(stages, 2)
    runner.run()
    assert runner.ran == set()  # all stamps match: reused
    runner = demo.Runner(stages, 2, rerun=['base'])
    runner.run()
    assert runner.ran == {'base', 'after'}


def test_an_install_that_raises_kills_the_running_stages(demo, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def broken_install():
        raise OSError('disk full')

    stages = [demo.Stage('slow', ['sleep', '60']), demo.Stage('install', [], action=broken_install)]
    runner = demo.Runner(stages, 2)
    with pytest.raises(OSError, match='disk full'):
        runner.run()
    ((proc, _),) = runner.running.values()
    assert proc.args == ['sleep', '60'] and proc.returncode == -signal.SIGKILL  # killed and reaped
    with pytest.raises(ProcessLookupError):
        os.kill(proc.pid, 0)
