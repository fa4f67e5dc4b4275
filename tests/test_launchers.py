"""The launchers end to end on one process (tools/*.py and the console scripts): options, logs, checkpoints, metrics."""
import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml
from basicsr.archs.edsr_arch import EDSR
from basicsr.metrics import calculate_psnr
from helpers import PYTHON, run_tool, tiny_workspace, tool_env, write_yaml
from packaging.specifiers import SpecifierSet

import basicsr_unlearn


def test_train_saves_merged_options_checkpoints_and_curves(tmp_path: Path) -> None:
    tiny_workspace(tmp_path, total_iter=4)
    (tmp_path / 'child.yml').write_text('_base_: [tiny.yml]\nname: child\nnetwork_g:\n  num_feat: 4\n')
    proc = run_tool('train.py', ['-opt', 'child.yml', '--cfg-options', 'train.total_iter=6',
                                    'train.scheduler.periods=[6]', '--force_yml', 'logger:print_freq=2'],
                    tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    exp = tmp_path / 'experiments' / 'child'
    saved_text = (exp / 'child.yml').read_text()
    assert saved_text.startswith('# GENERATE TIME') and '--cfg-options train.total_iter=6' in saved_text
    saved = yaml.safe_load(saved_text)
    assert '_base_' not in saved and saved['model_type'] == 'AllInOneModel'  # inherited from tiny.yml
    assert saved['network_g']['num_feat'] == 4 and saved['network_g']['num_block'] == 1  # _base_ merge
    assert saved['train']['total_iter'] == 6 and saved['logger']['print_freq'] == 2  # --cfg-options, --force_yml
    params = torch.load(exp / 'models' / 'net_g_latest.pth', weights_only=True)['params']
    assert params['conv_first.weight'].shape == (4, 3, 3, 3)
    assert sorted(p.name for p in (exp / 'training_states').iterdir()) == ['2.state', '4.state', '6.state']
    log = json.loads((exp / 'train_log.json').read_text())
    assert log['iter'] == 6 and [it for it, _ in log['loss']] == [2, 4, 6] and log['wall_time_s'] > 0
    assert 0 < log['step_time_s'] <= log['wall_time_s'] / 2  # median of 5 iterations, 4 of them without validation
    assert [it for it, _ in log['val']] == [3, 6] and set(log['val'][0][1]['noise25']) == {'psnr', 'ssim'}
    assert list((tmp_path / 'tb_logger' / 'child').glob('events.out.tfevents.*'))


def test_console_script_with_debug_flag_prefixes_name_and_disables_tensorboard(tmp_path: Path) -> None:
    option_file = tiny_workspace(tmp_path, total_iter=2)
    command = [str(Path(PYTHON).with_name('basicsr-unlearn-train')), '-opt', option_file, '--debug']
    proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=tool_env())
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / 'experiments' / 'debug_tiny' / 'models' / 'net_g_latest.pth').is_file()
    assert not (tmp_path / 'tb_logger').exists()


def test_test_tool_writes_per_degradation_metrics(tmp_path: Path) -> None:
    option_file = tiny_workspace(tmp_path, total_iter=2)
    assert run_tool('train.py', ['-opt', option_file], tmp_path).returncode == 0
    opt = yaml.safe_load(Path(option_file).read_text())
    val = opt['datasets']['val']
    opt.update(name='tiny_test', datasets={'test_a': dict(val, name='noise25'), 'test_b': dict(val, name='rain')})
    opt['path']['pretrain_network_g'] = 'experiments/tiny/models/net_g_latest.pth'
    opt['val'] = {'save_img': True, 'suffix': None, 'pad_multiple': 4,  # 28 px: no padding, exact comparison
                  'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False},
                              'psnr_y': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': True}}}
    del opt['train']
    write_yaml(tmp_path / 'test.yml', opt)
    proc = run_tool('test.py', ['-opt', 'test.yml'], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = tmp_path / 'results' / 'tiny_test'
    metrics = json.loads((results / 'metrics.json').read_text())
    assert metrics['metric_space'] == 'mixed' and metrics['checkpoint'].endswith('net_g_latest.pth')
    assert set(metrics['per_degradation']['rain']) == {'psnr', 'psnr_y', 'l1', 'count'}
    assert set(metrics['datasets']) == {'noise25', 'rain'} and set(metrics['per_degradation']) == {'noise25', 'rain'}
    assert metrics['per_degradation']['rain']['count'] == 3 and len(metrics['per_image']) == 6
    table = (results / 'metrics.md').read_text()
    assert '| dataset | degradation | psnr (RGB) | psnr_y (Y) | images |' in table and '| noise25 | noise25 |' in table
    assert len(list((results / 'visualization' / 'rain').glob('*.png'))) == 3

    # independent recomputation of one PSNR: the same weights, image read by OpenCV, BasicSR's PSNR on uint8
    net = EDSR(3, 3, num_feat=8, num_block=1, upscale=1, img_range=1.0, rgb_mean=[0.5, 0.5, 0.5]).eval()
    net.load_state_dict(torch.load(tmp_path / 'experiments/tiny/models/net_g_latest.pth', weights_only=True)['params'])
    lq = cv2.imread(str(tmp_path / 'data/val/lq/001.png'))[..., ::-1].astype(np.float32) / 255
    gt = cv2.imread(str(tmp_path / 'data/val/gt/001.png'))
    with torch.no_grad():
        out = net(torch.from_numpy(lq.copy()).permute(2, 0, 1)[None]).clamp(0, 1)[0].permute(1, 2, 0).numpy()
    out = (out[..., ::-1] * 255).round().astype(np.uint8)
    record = next(r for r in metrics['datasets']['rain']['per_image'] if r['name'] == '001')
    assert abs(record['psnr'] - calculate_psnr(out, gt, 0)) < 1e-6
    assert abs(record['psnr_y'] - calculate_psnr(out, gt, 0, test_y_channel=True)) < 1e-6
    assert abs(record['psnr_y'] - record['psnr']) > 0.01  # the block's test_y_channel is used


def test_installed_metadata_has_one_version_and_the_console_scripts() -> None:
    meta = importlib.metadata.metadata('basicsr-unlearn')
    assert meta['Version'] == basicsr_unlearn.__version__
    assert SpecifierSet(meta['Requires-Python']) == SpecifierSet('>=3.10,<3.13') and sys.version_info[:2] >= (3, 10)
    scripts = {e.name: e.value for e in importlib.metadata.entry_points(group='console_scripts')
               if e.value.startswith('basicsr_unlearn.')}
    assert scripts == {'basicsr-unlearn-train': 'basicsr_unlearn.launchers.train:main',
                       'basicsr-unlearn-test': 'basicsr_unlearn.launchers.test:main'}
    assert all(Path(PYTHON).with_name(name).is_file() for name in scripts)
    requires = importlib.metadata.requires('basicsr-unlearn')
    assert 'basicsr==1.4.2' in requires and 'scipy' in requires  # scipy: membership inference's rankdata
