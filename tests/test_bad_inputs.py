"""Fault catalogue (issue 13): every bad input fails with an error naming the option or file, before any folder exists.

Cheap cases run in-process (checkpoint loading, ``validate_options`` on a tiny workspace); cases about a launcher
run it in a real subprocess and also check the exit code and that no ``experiments/`` or ``results/`` folder was
created or archived.
"""
import copy
import os
import re
import socket
import subprocess
from pathlib import Path

import pytest
import torch
from basicsr.archs.edsr_arch import EDSR
from helpers import PYTHON, ROOT, run_tool, tiny_train_options, tool_env, write_noisy_pairs, write_yaml

from basicsr_unlearn import experiment_lock
from basicsr_unlearn.checkpoint import load_checkpoint
from basicsr_unlearn.config import validate_options
from basicsr_unlearn.data.image_io import list_images, read_image
from basicsr_unlearn.data.lmdb_backend import write_lmdbs

TINY_EDSR = tiny_train_options('.')['network_g']


def _edsr(**change: int) -> torch.nn.Module:
    return EDSR(**{**{k: v for k, v in TINY_EDSR.items() if k != 'type'}, **change})


def _truncated(path: Path) -> None:
    torch.save({'params': _edsr().state_dict()}, path)
    path.write_bytes(path.read_bytes()[:2000])


CHECKPOINTS = {
    'wrong size': (lambda p: torch.save({'params': _edsr(num_feat=16).state_dict()}, p),
                   r'does not fit EDSR: 9 of 10 shared tensors differ in shape \(conv_first\.weight: file '
                   r'\(16, 3, 3, 3\), net \(8, 3, 3, 3\).*check network_g'),
    'wrong arch': (lambda p: torch.save({'params': torch.nn.Conv2d(3, 3, 3).state_dict()}, p),
                   r'does not fit EDSR: 10 net keys missing from the file \(body\.0\.conv1\.bias, .*\), '
                   r'2 file keys unknown to the net \(bias, weight\)'),
    'more blocks': (lambda p: torch.save({'params': _edsr(num_block=2).state_dict()}, p),
                    r'4 file keys unknown to the net \(body\.1\.conv1\.bias'),
    'state_dict key': (lambda p: torch.save({'state_dict': _edsr().state_dict(), 'epoch': 3}, p),
                       r"has no 'params' entry \(path\.param_key_g: params\); its top-level keys are state_dict, "
                       r'epoch; set path\.param_key_g: state_dict'),
    'bare dict': (lambda p: torch.save(_edsr().state_dict(), p),
                  r"has no 'params' entry .*it is a bare state dict \(10 tensors, e\.g\. conv_first\.weight.*\): "
                  r'set path\.param_key_g: ~'),
    'nan weights': (lambda p: torch.save({'params': {k: v * float('nan') for k, v in _edsr().state_dict().items()}},
                                         p),
                    r'non-finite weights \(NaN/Inf\) in 10 of 10 tensors'),
    'truncated': (_truncated, r'cannot read the checkpoint \(2000 bytes; truncated or not a torch file'),
    'empty': (lambda p: p.write_bytes(b''), r'cannot read the checkpoint \(0 bytes'),
    'text file': (lambda p: p.write_text('not a checkpoint'), r'cannot read the checkpoint'),
    'numpy scalar': (lambda p: torch.save({'params': _edsr().state_dict(), 'psnr': __import__('numpy').float64(1)}, p),
                     r'holds an object that torch\.load\(weights_only=True\) refuses \(numpy'),
}


@pytest.mark.parametrize('case', list(CHECKPOINTS))
def test_bad_checkpoint_names_option_and_file(tmp_path: Path, case: str) -> None:
    write, message = CHECKPOINTS[case]
    path = tmp_path / 'net_g.pth'
    write(path)
    with pytest.raises(ValueError, match=rf'^path\.pretrain_network_g: {path}.*{message}'):
        load_checkpoint(_edsr(), path)


def test_checkpoint_loads_and_basicsr_load_network_goes_through_it(tmp_path: Path) -> None:
    from basicsr.models.base_model import BaseModel

    from basicsr_unlearn import compat

    compat.apply()
    good = _edsr()
    torch.save({'params': good.state_dict()}, tmp_path / 'ok.pth')
    net = _edsr()
    load_checkpoint(net, tmp_path / 'ok.pth')
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), good.state_dict().values()))
    net = _edsr()
    torch.save(good.state_dict(), tmp_path / 'bare.pth')
    paths = {'pretrain_network_teacher': str(tmp_path / 'bare.pth')}
    model = BaseModel({'num_gpu': 0, 'is_train': False, 'path': paths})
    with pytest.raises(ValueError, match=r"^path\.pretrain_network_teacher: .*bare\.pth has no 'params' entry "
                                         r'\(path\.param_key_teacher: params\)'):
        model.load_network(_edsr(), str(tmp_path / 'bare.pth'))
    model.load_network(net, str(tmp_path / 'bare.pth'), param_key=None)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), good.state_dict().values()))


# ---------------------------------------------------------------- validate_options, in-process
@pytest.fixture(scope='module')
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny pairs (``data/train``, ``data/val``), a good, a truncated and a NaN EDSR checkpoint, a good and a
    truncated LMDB pair of the train images."""
    root = tmp_path_factory.mktemp('bad_inputs')
    write_noisy_pairs(root / 'data' / 'train', count=4, size=32, seed=1)
    write_noisy_pairs(root / 'data' / 'val', count=3, size=32, seed=2)
    state = _edsr().state_dict()
    torch.save({'params': state}, root / 'good.pth')
    _truncated(root / 'truncated.pth')
    torch.save({'params': {k: v * float('nan') for k, v in state.items()}}, root / 'nan.pth')
    train = root / 'data' / 'train'
    for name in ('good', 'truncated'):
        items = ((p.name, {'gt': read_image(p), 'lq': read_image(train / 'lq' / p.name)})
                 for p in list_images(train / 'gt', 'gt'))
        write_lmdbs({'gt': root / f'{name}_gt.lmdb', 'lq': root / f'{name}_lq.lmdb'}, items)
    data = root / 'truncated_lq.lmdb' / 'data.mdb'
    os.truncate(data, data.stat().st_size // 2)
    return root


def _mixed(root: Path, **change: object) -> dict:
    """A MixedDegradationDataset train block: noise25 synthesised from the train GT, 'rain' and 'haze' folders."""
    train = root / 'data' / 'train'
    folder = {'type': 'folder', 'dataroot_gt': str(train / 'gt'), 'dataroot_lq': str(train / 'lq')}
    block = {'name': 'mix', 'type': 'MixedDegradationDataset', 'gt_size': 16, 'num_worker_per_gpu': 0,
             'batch_size_per_gpu': 1, 'forget': ['haze'], 'role_group': {'forget': 2, 'retain': 2},
             'sources': [{'degradation': 'noise25', 'type': 'synth', 'dataroot_gt': str(train / 'gt')},
                         {'degradation': 'rain', **folder}, {'degradation': 'haze', **folder}]}
    block.update(change)
    return block


DELETE = object()
# case -> ({dotted option: value}, regex of the error); '{ws}' is the workspace folder
OPTION_CASES = {
    'amp dtype fp32': ({'train.amp': {'dtype': 'fp32'}},
                       r"^train\.amp\.dtype: unknown 'fp32'; expected one of bf16, fp16"),
    'original path set by hand': ({'path.original_pretrain_network_g': 'x.pth'},
                                  r"path: unknown key 'original_pretrain_network_g'"),
    'lr abc': ({'train.optim_g.lr': 'abc'}, r"^train\.optim_g\.lr: expected a number > 0, got 'abc'$"),
    'lr string 2e-4': ({'train.optim_g.lr': '2e-4'}, r"lr: expected a number > 0, got '2e-4' \(a string: write "
                                                     r'!!float 2e-4\)'),
    'lr negative': ({'train.optim_g.lr': -1e-3}, r'^train\.optim_g\.lr: expected a number > 0, got -0\.001'),
    'optimizer type': ({'train.optim_g.type': 'Adamm'}, r"^train\.optim_g\.type: unknown 'Adamm'; expected one of "
                                                        r'Adam, AdamW'),
    'optimizer betas': ({'train.optim_g.betas': [0.9, 2.0]}, r'^train\.optim_g: Invalid beta parameter at index 1'),
    'optimizer kwarg': ({'train.optim_g.momentun': 0.9}, r"^train\.optim_g: .*unexpected keyword argument "
                                                         r"'momentun'"),
    'no optimizer': ({'train.optim_g': DELETE}, r'^train\.optim_g: required'),
    'scheduler type': ({'train.scheduler.type': 'Cosine'},
                       r"^train\.scheduler\.type: unknown 'Cosine'; expected one of MultiStepLR, MultiStepRestartLR, "
                       r'CosineAnnealingRestartLR'),
    'no scheduler': ({'train.scheduler': DELETE}, r'^train\.scheduler: required'),
    'cosine too short': ({'train.total_iter': 1000}, r'^train\.scheduler\.periods: \[6\] ends at iteration 6, before '
                                                     r'train\.total_iter 1000'),
    'cosine weights': ({'train.scheduler.restart_weights': [1, 0.5]}, r'restart_weights: 2 weights for 1 periods'),
    'cosine key typo': ({'train.scheduler.eta_mni': 0}, r"^train\.scheduler: unknown key 'eta_mni'.*did you mean "
                                                        r"'eta_min'"),
    'milestones not ints': ({'train.scheduler': {'type': 'MultiStepRestartLR', 'milestones': ['x'], 'gamma': 0.5}},
                            r"^train\.scheduler\.milestones\[0\]: expected an integer >= 0, got 'x'"),
    'total_iter abc': ({'train.total_iter': 'abc'}, r"^train\.total_iter: expected an integer >= 0, got 'abc'"),
    'warmup_iter float': ({'train.warmup_iter': 0.5}, r'^train\.warmup_iter: expected an integer >= -1, got 0\.5'),
    'ema_decay 1': ({'train.ema_decay': 1.0}, r'^train\.ema_decay: expected a number >= 0 < 1, got 1\.0'),
    'no train block': ({'train': DELETE}, r'^train: required for training'),
    'val_freq 0': ({'val.val_freq': 0}, r'^val\.val_freq: expected a number > 0, got 0'),
    'no val block': ({'val': DELETE}, r'^val: required with val datasets'),
    'save_img yes': ({'val.save_img': 'yes'}, r"^val\.save_img: unknown 'yes'; expected one of true, false"),
    'metric type': ({'val.metrics': {'psnr': {'type': 'calc_psnr'}}}, r"^val\.metrics\.psnr\.type: unknown "
                                                                      r"'calc_psnr'; expected one of calculate_niqe"),
    'no use_tb_logger': ({'logger.use_tb_logger': DELETE}, r'^logger\.use_tb_logger: unknown None; expected one of '
                                                           r'true, false'),
    'print_freq abc': ({'logger.print_freq': 'abc'}, r"^logger\.print_freq: expected a number > 0, got 'abc'"),
    'wandb without tb': ({'logger.use_tb_logger': False, 'logger.wandb': {'project': 'x'}},
                         r'^logger\.wandb\.project: needs logger\.use_tb_logger: true'),
    'logger key typo': ({'logger.print_frq': 1}, r"^logger: unknown key 'print_frq'.*did you mean 'print_freq'"),
    'top-level typo': ({'manual_sed': 1}, r"^options: unknown key 'manual_sed'.*did you mean 'manual_seed'"),
    'name with slash': ({'name': 'a/b'}, r"^name: expected a non-empty folder name without '/', got 'a/b'"),
    'num_gpu -1': ({'num_gpu': -1}, r"^num_gpu: expected an integer >= 0 or 'auto', got -1"),
    'scale 0': ({'scale': 0}, r'^scale: expected an integer >= 1, got 0'),
    'arch kwarg typo': ({'network_g.num_feats': 8}, r"^network_g: unknown key 'num_feats'.*did you mean 'num_feat'"),
    'path key typo': ({'path.pretrain_netwrok_g': '{ws}/good.pth'}, r"^path: unknown key 'pretrain_netwrok_g'.*did "
                                                                   r"you mean 'pretrain_network_g'"),
    'strict_load yes': ({'path.strict_load_g': 'yes'}, r"^path\.strict_load_g: unknown 'yes'; expected one of true"),
    'pretrain missing': ({'path.pretrain_network_g': '{ws}/nowhere.pth'}, r'^path\.pretrain_network_g: file not '
                                                                          r'found: .*nowhere\.pth'),
    'pretrain truncated': ({'path.pretrain_network_g': '{ws}/truncated.pth'},
                           r'^path\.pretrain_network_g: .*truncated\.pth: cannot read the checkpoint \(2000 bytes'),
    'pretrain nan': ({'path.pretrain_network_g': '{ws}/nan.pth'}, r'^path\.pretrain_network_g: .*nan\.pth: '
                                                                  r'non-finite weights'),
    'pretrain wrong size': ({'path.pretrain_network_g': '{ws}/good.pth', 'network_g.num_feat': 16},
                            r'^path\.pretrain_network_g: .*good\.pth does not fit EDSR: 9 of 10 shared tensors '
                            r'differ in shape'),
    'pretrain param_key': ({'path.pretrain_network_g': '{ws}/good.pth', 'path.param_key_g': 'state_dict'},
                           r"^path\.pretrain_network_g: .*good\.pth has no 'state_dict' entry \(path\.param_key_g: "
                           r'state_dict\); its top-level keys are params; set path\.param_key_g: params'),
    'resume_state missing': ({'path.resume_state': '{ws}/9.state'}, r'^path\.resume_state: file not found'),
    'phase typo': ({'datasets.vall': {'name': 'v', 'type': 'PairedImageDataset'}},
                   r"^datasets\.vall: unknown phase 'vall' for training; expected train, val"),
    'no train set': ({'datasets.train': DELETE}, r'^datasets\.train: required for training'),
    'batch size 0': ({'datasets.train.batch_size_per_gpu': 0}, r'^datasets\.train\.batch_size_per_gpu: expected an '
                                                               r'integer >= 1, got 0'),
    'no num_worker': ({'datasets.train.num_worker_per_gpu': DELETE}, r'^datasets\.train\.num_worker_per_gpu: '
                                                                    r'expected an integer >= 0, got None'),
    'dataroot missing': ({'datasets.val.dataroot_lq': '{ws}/nowhere'}, r'^datasets\.val\.dataroot_lq: not found: '
                                                                       r'.*nowhere'),
    'io_backend type': ({'datasets.train.io_backend.type': 'zip'}, r"^datasets\.train\.io_backend\.type: unknown "
                                                                   r"'zip'; expected one of disk, lmdb, memcached"),
    'lmdb truncated': ({'datasets.train.io_backend.type': 'lmdb', 'datasets.train.dataroot_gt': '{ws}/good_gt.lmdb',
                        'datasets.train.dataroot_lq': '{ws}/truncated_lq.lmdb'},
                       r'^datasets\.train\.dataroot_lq: .*truncated_lq\.lmdb/data\.mdb: truncated LMDB'),
    'lmdb not .lmdb': ({'datasets.train.io_backend.type': 'lmdb'}, r"^datasets\.train\.dataroot_gt: io_backend lmdb "
                                                                   r"needs an '\.lmdb' folder"),
    'persistent workers 0': ({'datasets.train.persistent_workers': True}, r'persistent_workers: true needs '
                                                                          r'num_worker_per_gpu >= 1'),
    'mixed: forget 0': ({'datasets.train': 'MIXED', 'datasets.train.role_group': {'forget': 0, 'retain': 2}},
                        r"^datasets\.train\.role_group: forget: 0 with datasets\.train\.forget \['haze'\]: no forget "
                        r'sample ever reaches the model.*or retain_only: true'),
    'mixed: retain_only with forget': ({'datasets.train': 'MIXED', 'datasets.train.role_group.retain_only': True},
                                       r'^datasets\.train\.role_group\.retain_only: true means no forget samples'),
    'mixed: group > forget pool': ({'datasets.train': 'MIXED', 'datasets.train.role_group.forget': 5},
                                   r'^datasets\.train\.role_group\.forget: 5 per group, but the forget pool holds 4 '
                                   r'distinct samples'),
    'mixed: group > retain pool': ({'datasets.train': 'MIXED', 'datasets.train.role_group.retain': 9},
                                   r'^datasets\.train\.role_group\.retain: 9 per group, but the retain pool holds 8 '
                                   r'distinct samples'),
    'mixed: forget every type': ({'datasets.train': 'MIXED', 'datasets.train.forget': ['noise25', 'rain', 'haze']},
                                 r"^datasets\.train\.forget: \['haze', 'noise25', 'rain'\] covers every source's "
                                 r'degradation; nothing would be retained'),
    'mixed: source folder missing': ({'datasets.train': 'MIXED', 'datasets.train.sources.1.dataroot_lq': '{ws}/no'},
                                     r'^datasets\.train\.sources\[1\]\.dataroot_lq: folder not found: .*no'),
    'mixed: no gt_size': ({'datasets.train': 'MIXED', 'datasets.train.gt_size': DELETE},
                          r'^datasets\.train\.gt_size: expected the train patch size \(int\), got None'),
    'asvp h 1 (no-op)': ({'asvp': {'targets': ['body.0'], 'h': 1}}, r'^asvp\.h: .*h = 1 is the identity'),
    'asvp key typo': ({'asvp': {'targets': ['body.0'], 'kk': 2}}, r"^asvp: unknown key 'kk'.*did you mean 'k'"),
    'asvp type': ({'asvp': {'type': 'ASVPP', 'targets': ['body.0']}}, r"^asvp\.type: unknown 'ASVPP'; expected one of"),
}


def _apply(opt: dict, changes: dict, root: Path) -> dict:
    """Set (or, with ``DELETE``, remove) dotted keys of ``opt``; ``'MIXED'`` puts :func:`_mixed` there."""
    opt = copy.deepcopy(opt)
    for dotted, value in changes.items():
        *parents, last = dotted.split('.')
        block = opt
        for key in parents:
            block = block[int(key)] if isinstance(block, list) else block[key]
        if value is DELETE:
            del block[last]
        else:
            value = _mixed(root) if value == 'MIXED' else value
            block[int(last) if isinstance(block, list) else last] = (value.format(ws=root) if isinstance(value, str)
                                                                      else value)
    return opt


def test_the_tiny_options_are_valid(workspace: Path) -> None:
    validate_options(tiny_train_options(workspace / 'data'))
    validate_options(_apply(tiny_train_options(workspace / 'data'), {'datasets.train': 'MIXED'}, workspace))
    ok = {'datasets.train': 'MIXED', 'datasets.train.role_group': {'forget': 0, 'retain': 2, 'retain_only': True}}
    validate_options(_apply(tiny_train_options(workspace / 'data'), ok, workspace))  # deliberate fine-tuning


def test_testing_needs_a_checkpoint(workspace: Path) -> None:
    opt = tiny_train_options(workspace / 'data')
    opt['datasets'] = {'test_1': opt['datasets']['val']}
    with pytest.raises(ValueError, match=r'^path\.pretrain_network_g: required for testing \(without it the test '
                                         r'scores a randomly initialised network\)'):
        validate_options(opt, is_train=False)
    opt['path']['pretrain_network_g'] = str(workspace / 'good.pth')
    validate_options(opt, is_train=False)


@pytest.mark.parametrize('case', list(OPTION_CASES))
def test_bad_option_fails_validation_naming_it(workspace: Path, case: str, monkeypatch) -> None:
    changes, message = OPTION_CASES[case]
    opt = _apply(tiny_train_options(workspace / 'data'), changes, workspace)
    monkeypatch.chdir(workspace)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        validate_options(opt)
    assert not (workspace / 'experiments').exists() and not (workspace / 'results').exists()


# ---------------------------------------------------------------- the launchers, in real subprocesses
def _folders(cwd: Path) -> list[str]:
    return sorted(str(p.relative_to(cwd)) for top in ('experiments', 'results', 'tb_logger') for p in
                  (cwd / top).glob('*') if (cwd / top).is_dir())


LAUNCHER_CASES = {
    'yaml syntax error': ('train.py', lambda ws, cwd: _broken_yaml(cwd), [],
                          r"bad\.yml:4:14: YAML syntax error: expected ',' or '\]', but got ':' \(while parsing a "
                          r'flow sequence from line 3\)'),
    'lr abc (cfg-options)': ('train.py', None, ['--cfg-options', 'train.optim_g.lr=abc'],
                             r"train\.optim_g\.lr: expected a number > 0, got 'abc'"),
    'pretrain of another size': ('train.py', None, ['--cfg-options', 'path.pretrain_network_g={ws}/good.pth',
                                                    'network_g.num_feat=4'],
                                 r'path\.pretrain_network_g: .*good\.pth does not fit EDSR: 9 of 10 shared tensors'),
    'test: truncated checkpoint': ('test.py', None, ['--cfg-options', 'path.pretrain_network_g={ws}/truncated.pth'],
                                   r'path\.pretrain_network_g: .*truncated\.pth: cannot read the checkpoint'),
    'lr abc (force_yml)': ('train.py', None, ['--force_yml', 'train:optim_g:lr=abc'],
                           r"train\.optim_g\.lr: expected a number > 0, got 'abc'"),
    'force_yml block typo': ('train.py', None, ['--force_yml', 'trian:ema_decay=0.999'],
                             r"--force_yml trian:ema_decay=0\.999: no option block 'trian'; expected one of datasets, "
                             r'network_g, path, train, val, logger, dist_params'),
    'force_yml without =': ('train.py', None, ['--force_yml', 'train:ema_decay'],
                            r"--force_yml: expected key:subkey=value \(e\.g\. train:ema_decay=0\.999\), got "
                            r"'train:ema_decay'"),
    'test: truncated checkpoint (force_yml)': ('test.py', None,
                                               ['--force_yml', 'path:pretrain_network_g={ws}/truncated.pth'],
                                               r'path\.pretrain_network_g: .*truncated\.pth: cannot read the '
                                               r'checkpoint'),
}


def _broken_yaml(cwd: Path) -> str:
    (cwd / 'bad.yml').write_text('name: bad\ntrain:\n  total_iter: [1, 2\n  warmup_iter: -1\n')
    return str(cwd / 'bad.yml')


def _launcher_options(ws: Path, cwd: Path, tool: str) -> str:
    opt = tiny_train_options(ws / 'data')
    if tool == 'test.py':
        opt['datasets'] = {'test_1': opt['datasets']['val']}
        opt['path']['pretrain_network_g'] = str(ws / 'good.pth')
    return write_yaml(cwd / 'tiny.yml', opt)


@pytest.mark.parametrize('case', list(LAUNCHER_CASES))
def test_launcher_fails_before_creating_folders(workspace: Path, tmp_path: Path, case: str) -> None:
    tool, option_file, args, message = LAUNCHER_CASES[case]
    option_file = option_file(workspace, tmp_path) if option_file else _launcher_options(workspace, tmp_path, tool)
    proc = run_tool(tool, ['-opt', option_file, *(a.format(ws=workspace) for a in args)], tmp_path)
    assert proc.returncode != 0
    assert re.search(message, proc.stderr), proc.stderr[-2000:]
    assert _folders(tmp_path) == [] and not (tmp_path / 'experiments').exists() and not (tmp_path / 'results').exists()


@pytest.mark.parametrize('tool', ['train.py', 'test.py'])
def test_second_run_on_a_live_name_is_refused_and_archives_nothing(workspace: Path, tmp_path: Path,
                                                                   tool: str) -> None:
    """This test process holds the folder's lock (as a live first run would); the launcher must refuse, naming it,
    and leave the first run's folder where it is (BasicSR would have renamed it ``*_archived_*``)."""
    option_file = _launcher_options(workspace, tmp_path, tool)
    folder = tmp_path / ('experiments' if tool == 'train.py' else 'results') / 'tiny'
    (folder / 'models').mkdir(parents=True)
    (folder / 'models' / 'net_g_2.pth').write_bytes(b'first run')
    experiment_lock.acquire(folder)
    try:
        proc = run_tool(tool, ['-opt', option_file], tmp_path)
    finally:
        experiment_lock.release(folder)
    assert proc.returncode != 0
    assert re.search(rf'{folder}: in use by another run \(pid {os.getpid()} on {re.escape(socket.gethostname())}, '
                     r'started \d{4}-\d\d-\d\d \d\d:\d\d:\d\d', proc.stderr), proc.stderr[-2000:]
    assert (folder / 'models' / 'net_g_2.pth').read_bytes() == b'first run'
    assert [p.name for p in folder.parent.iterdir() if not p.name.startswith('.')] == ['tiny']  # nothing archived


STUDY_CASES = {  # script, its arguments ({tmp}: the test folder), expected stderr; nothing under {tmp}/out appears
    'asvp_study: unknown attack': (
        'tools/asvp_study.py', ['--opt', str(ROOT / 'options/distill/asvp-study_promptir-tiny_demo3.yml'),
                                '--attacks', 'feat,fgsm', '--out', '{tmp}/out'],
        '--attacks: unknown fgsm; expected a comma-separated subset of out, feat,'),
    'asvp_study: too few validations for the convergence check': (
        'tools/asvp_study.py', ['--opt', str(ROOT / 'options/distill/asvp-study_promptir-tiny_demo3.yml'),
                                '--iters', '4', '--out', '{tmp}/out'],
        '--iters 4 / --val-every 1: expected --iters >= 5 (the convergence check needs two validations'),
    'base_diagnosis: a loss it does not train': (
        'bench/base_diagnosis.py', ['-opt', '{tmp}/mse.yml', '--log', '{tmp}/out'],
        "train.pixel_opt.type: this diagnosis trains with L1 only, got 'MSELoss'"),
}


@pytest.mark.parametrize('case', list(STUDY_CASES))
def test_study_tool_refuses_bad_input_before_writing(tmp_path: Path, case: str) -> None:
    script, args, message = STUDY_CASES[case]
    (tmp_path / 'mse.yml').write_text(f"_base_: [{ROOT / 'options/train/train_promptir-tiny_demo3_l1_2kit.yml'}]\n"
                                      "train:\n  pixel_opt: {type: MSELoss, loss_weight: 1.0}\n")
    proc = subprocess.run([PYTHON, str(ROOT / script), *(a.format(tmp=tmp_path) for a in args)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env=tool_env())
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / 'out').exists()
