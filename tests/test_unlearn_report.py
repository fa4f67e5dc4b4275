"""Unlearning report: numbers from known per-degradation scores, files written, and clear errors."""
import importlib.util
import json

import pytest
import torch
from basicsr.archs import build_network
from basicsr.data import build_dataloader, build_dataset
from helpers import ROOT, run_tool, write_noisy_pairs, write_yaml

from basicsr_unlearn.evaluation.membership_inference import membership_auc
from basicsr_unlearn.evaluation.metrics import evaluate
from basicsr_unlearn.evaluation.unlearning_report import (
    ModelScores,
    build_report,
    load_weights,
    plateau_gain,
    resolve_model,
    split_test_sets,
    training_curves,
    wall_time,
    write_report,
)
from basicsr_unlearn.inference import pad_to_multiple


def _scores(name, role, psnr, wall, members=(0.01, 0.02), nonmembers=(0.03, 0.04)):
    per_de = {d: {'psnr': v, 'ssim': v / 40, 'count': 2} for d, v in psnr.items()}
    return ModelScores(name, role, f'{name}.pth', per_de, list(members), list(nonmembers), wall)


def _fake_scores():
    return [
        _scores('original', 'original', {'noise25': 30.0, 'rain': 28.0, 'haze': 25.0}, 1000.0),
        _scores('reference', 'reference', {'noise25': 30.2, 'rain': 28.1, 'haze': 18.0}, 800.0, nonmembers=(
            0.015, 0.005)),
        _scores('good', 'method', {'noise25': 29.95, 'rain': 28.05, 'haze': 18.3}, 30.0),
        _scores('okay', 'method', {'noise25': 29.8, 'rain': 28.0, 'haze': 18.9}, 60.0),
        _scores('bad', 'method', {'noise25': 29.0, 'rain': 28.0, 'haze': 21.0}, 200.0),
    ]


def test_build_report_numbers_and_verdicts():
    report = build_report(_fake_scores(), 'haze', 'RGB')
    assert report['degradations'] == ['noise25', 'rain', 'haze']  # vocabulary order
    assert report['retained'] == ['noise25', 'rain']
    m = {e['name']: e for e in report['models']}
    assert m['original']['forget_gap_db'] == pytest.approx(7.0)
    assert m['reference']['forget_gap_db'] == 0.0
    assert m['reference']['retain_change_db'] == pytest.approx({'noise25': 0.2, 'rain': 0.1})
    assert m['good']['forget_gap_db'] == pytest.approx(0.3)
    assert m['good']['worst_retain_change_db'] == pytest.approx(-0.05)
    assert m['good']['avg_gap_db'] == pytest.approx((0.25 + 0.05 + 0.3) / 3)
    assert m['good']['cost_ratio'] == pytest.approx(30 / 800)
    assert m['good']['meets'] == 'goal' and m['good']['missed_goal'] == []
    assert m['okay']['meets'] == 'target'  # gap 0.9, drop 0.2, cost 7.5%: target yes, goal no
    assert len(m['okay']['missed_goal']) == 3
    assert m['bad']['meets'] == 'no'
    assert m['bad']['missed_target'] == ['forget gap 3.00 > 1.0', 'noise25 -1.00 < -0.3', 'cost 25% > 10%']
    assert m['original']['mia']['auc'] == 1.0
    assert m['reference']['mia']['auc'] == pytest.approx(0.25)  # members (.01,.02) vs non-members (.015,.005)
    assert 'meets' not in m['original']
    assert '| good | 29.95 | 28.05 | 18.30 | 0.30 | -0.05 | 0.20 | 1.000 | 30 | 3.8% | goal |' in report['headline_md']
    assert 'PSNR in dB on RGB' in report['headline_md']


def test_build_report_unknown_cost_and_missing_degradation():
    scores = _fake_scores()
    scores[2].wall_time_s = None
    report = build_report(scores, 'haze', 'Y')
    good = report['models'][2]
    assert good['cost_ratio'] is None and good['meets'] == 'no'
    assert good['missed_target'] == ['cost unknown (no train_log.json)']
    del scores[3].per_degradation['rain']
    with pytest.raises(ValueError, match=r"missing \[\('okay', 'rain'\)\]"):
        build_report(scores, 'haze', 'RGB')
    with pytest.raises(ValueError, match="--forget: unknown 'hazy'; expected one of"):
        build_report(_fake_scores(), 'hazy', 'RGB')
    with pytest.raises(ValueError, match='exactly one original and one reference'):
        build_report(_fake_scores()[1:], 'haze', 'RGB')


def _experiment(root, name, wall, val_psnr=None):
    folder = root / name
    (folder / 'models').mkdir(parents=True)
    torch.save({'params': {'w': torch.full((2,), wall)}}, folder / 'models' / 'net_g_latest.pth')
    val = [[it, {'haze': {'psnr': p, 'ssim': 0.5}, 'rain': {'psnr': p + 1, 'ssim': 0.6}}]
           for it, p in enumerate(val_psnr or [], start=1)]
    log = {'wall_time_s': wall, 'iter': len(val), 'loss': [[i, 1.0 / i] for i in range(1, 5)], 'val': val}
    (folder / 'train_log.json').write_text(json.dumps(log))
    return folder


def test_resolve_model_folders_files_and_stages(tmp_path):
    orig = _experiment(tmp_path, 'orig', 100.0, [20.0, 22.0, 23.0, 23.1])
    stage1 = _experiment(tmp_path, 'adapt', 4.0)
    stage2 = _experiment(tmp_path, 'repulse', 6.0)
    spec = resolve_model('original', 'original', str(orig), '--original')
    assert spec.checkpoint == orig / 'models' / 'net_g_latest.pth' and wall_time(spec) == 100.0
    spec = resolve_model('atu', 'method', f'{stage1}+{stage2 / "models" / "net_g_latest.pth"}', '--method atu')
    assert spec.checkpoint == stage2 / 'models' / 'net_g_latest.pth' and wall_time(spec) == 10.0
    (stage1 / 'train_log.json').unlink()
    assert wall_time(resolve_model('atu', 'method', f'{stage1}+{stage2}', '--method atu')) is None
    with pytest.raises(FileNotFoundError, match=r'--method ga ga: checkpoint .*missing.pth does not exist'):
        resolve_model('ga', 'method', str(tmp_path / 'missing.pth'), '--method ga')
    curves = training_curves([resolve_model('original', 'original', str(orig), '--original')])
    assert plateau_gain(curves['original']) == pytest.approx(0.1)  # val PSNR 23.0 -> 23.1 over the last quarter


def test_load_weights_checks_param_key(tmp_path):
    net = torch.nn.Linear(2, 1)
    torch.save({'params': net.state_dict()}, tmp_path / 'a.pth')
    load_weights(net, tmp_path / 'a.pth')
    ema = {k: torch.zeros_like(v) for k, v in net.state_dict().items()}
    torch.save({'params': net.state_dict(), 'params_ema': ema}, tmp_path / 'b.pth')
    load_weights(net, tmp_path / 'b.pth')  # the EMA weights, as AllInOneModel.restore would use
    assert float(net.weight.abs().sum()) == 0.0
    with pytest.raises(KeyError, match="no 'params_ema' entry"):
        load_weights(net, tmp_path / 'a.pth', 'params_ema')


def test_split_test_sets():
    datasets = {'test_1': {'name': 'noise25'}, 'test_2': {'name': 'haze'}, 'test_3': {'name': 'haze_members'}}
    assert split_test_sets(datasets, 'haze', 'x.yml') == (['test_1', 'test_2'], 'test_3')
    with pytest.raises(ValueError, match="x.yml: datasets needs exactly one set named 'rain_members'"):
        split_test_sets(datasets, 'rain', 'x.yml')


def test_write_report_files(tmp_path):
    orig = _experiment(tmp_path, 'orig', 1000.0, [20.0, 22.0, 23.0, 23.1])
    ref = _experiment(tmp_path, 'ref', 800.0, [19.0, 21.0, 22.5, 22.5])
    specs = [resolve_model('original', 'original', str(orig), '--original'),
             resolve_model('reference', 'reference', str(ref), '--reference')]
    report = build_report(_fake_scores(), 'haze', 'RGB')
    md_path = write_report(report, tmp_path / 'out', training_curves(specs))
    out = tmp_path / 'out'
    for png in ('psnr_per_degradation.png', 'forget_gap_vs_retain_change.png', 'training_curves.png'):
        assert (out / png).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    saved = json.loads((out / 'report.json').read_text())
    assert saved['models'][2]['forget_gap_db'] == pytest.approx(0.3)
    assert saved['plateau_gain_db'] == {'original': pytest.approx(0.1), 'reference': pytest.approx(0.0)}
    text = md_path.read_text()
    assert text.rstrip().endswith('(forget_gap_vs_retain_change.png)')
    assert report['headline_md'] in text and 'original +0.10 dB' in text


def _tool_workspace(tmp_path):
    """Noise/haze-like test sets of real photo crops, a tiny EDSR, three random checkpoints with train logs."""
    data = tmp_path / 'data'
    sets = {'noise25': write_noisy_pairs(data / 'noise25', count=3, size=28, sigma=25, seed=1),
            'haze': write_noisy_pairs(data / 'haze', count=4, size=28, sigma=50, seed=2),
            'haze_members': write_noisy_pairs(data / 'members', count=4, size=28, sigma=50, seed=3)}
    datasets = {f'test_{i}': {'name': name, 'type': 'PairedImageDataset', 'io_backend': {'type': 'disk'},
                              'dataroot_gt': gt, 'dataroot_lq': lq} for i, (name, (gt, lq)) in enumerate(sets.items())}
    opt = {'name': 'report_test', 'scale': 1, 'num_gpu': 'auto', 'datasets': datasets,
           'network_g': {'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1,
                         'upscale': 1, 'img_range': 1.0, 'rgb_mean': [0.5, 0.5, 0.5]}}
    for seed, (name, wall) in enumerate([('orig', 1000.0), ('ref', 800.0), ('ga', 40.0)]):
        torch.manual_seed(seed)
        net = build_network(dict(opt['network_g']))
        folder = _experiment(tmp_path / 'experiments', name, wall, [20.0, 21.0, 21.5, 21.6])
        torch.save({'params': net.state_dict()}, folder / 'models' / 'net_g_latest.pth')
    return write_yaml(tmp_path / 'test.yml', opt), opt


def test_tool_writes_matching_report(tmp_path):
    opt_path, opt = _tool_workspace(tmp_path)
    exp = tmp_path / 'experiments'
    result = run_tool('unlearn_report.py', ['--opt', opt_path, '--original', str(exp / 'orig'), '--reference',
                                            str(exp / 'ref'), '--method', f'ga={exp / "ga"}', '--forget', 'haze',
                                            '--out', 'results/unlearn'], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / 'results' / 'unlearn'
    report = json.loads((out / 'report.json').read_text())
    assert report['metric_space'] == 'RGB' and report['degradations'] == ['noise25', 'haze']
    for png in ('psnr_per_degradation.png', 'forget_gap_vs_retain_change.png', 'training_curves.png'):
        assert (out / png).stat().st_size > 1000
    # recompute the method's numbers in-process, independently of the tool's glue
    net = build_network(dict(opt['network_g'])).eval()
    load_weights(net, exp / 'ga' / 'models' / 'net_g_latest.pth')
    restored = {}
    for dataset_opt in opt['datasets'].values():
        dataset_opt = {**dataset_opt, 'phase': 'test', 'scale': 1}
        loader = build_dataloader(build_dataset(dataset_opt), dataset_opt, num_gpu=0, dist=False)
        restored[dataset_opt['name']] = evaluate(lambda lq: net(pad_to_multiple(lq, 8)[0])[..., :28, :28], loader)
    ga, ref = report['models'][2], report['models'][1]
    assert ga['name'] == 'ga' and ga['wall_time_s'] == 40.0 and ga['cost_ratio'] == pytest.approx(0.05)
    for de_name in ('noise25', 'haze'):
        assert ga['psnr'][de_name] == pytest.approx(restored[de_name]['per_degradation'][de_name]['psnr'])
    assert ga['forget_gap_db'] == pytest.approx(abs(ga['psnr']['haze'] - ref['psnr']['haze']))
    members = [r['l1'] for r in restored['haze_members']['per_image']]
    nonmembers = [r['l1'] for r in restored['haze']['per_image']]
    assert ga['mia']['auc'] == pytest.approx(membership_auc(members, nonmembers))
    assert ga['mia']['n_members'] == 4 and ga['mia']['n_nonmembers'] == 4
    text = (out / 'report.md').read_text()
    assert f'| ga | {ga["psnr"]["noise25"]:.2f} | {ga["psnr"]["haze"]:.2f} |' in text
    assert text.rstrip().endswith('(forget_gap_vs_retain_change.png)')


def test_tool_errors(tmp_path):
    opt_path, _ = _tool_workspace(tmp_path)
    exp = tmp_path / 'experiments'
    base = ['--opt', opt_path, '--original', str(exp / 'orig'), '--reference', str(exp / 'ref'), '--out',
            str(tmp_path / 'out')]
    tool = _load_tool()
    with pytest.raises(SystemExit, match=r'--method ga ga: checkpoint .*nowhere.pth does not exist'):
        tool.main([*base, '--forget', 'haze', '--method', f'ga={tmp_path / "nowhere.pth"}'])
    with pytest.raises(SystemExit, match="--forget: unknown 'hazy'; expected one of noise15"):
        tool.main([*base, '--forget', 'hazy'])
    with pytest.raises(SystemExit, match="datasets needs exactly one set named 'rain_members'"):
        tool.main([*base, '--forget', 'rain'])
    assert not (tmp_path / 'out').exists()


def _load_tool():
    spec = importlib.util.spec_from_file_location('unlearn_report_tool', ROOT / 'tools' / 'unlearn_report.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
