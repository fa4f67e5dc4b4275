"""Unlearning report: numbers from known per-degradation scores, seeds and noise floor, files written, clear errors."""
import json

import numpy as np
import pytest
import torch
import yaml
from basicsr.archs import build_network
from basicsr.data import build_dataloader, build_dataset
from basicsr.utils import tensor2img
from helpers import load_tool, run_tool, write_noisy_pairs, write_yaml
from PIL import Image
from scipy.stats import ks_2samp

from basicsr_unlearn.checkpoint import load_checkpoint
from basicsr_unlearn.evaluation.membership_inference import membership_auc
from basicsr_unlearn.evaluation.metrics import evaluate
from basicsr_unlearn.evaluation.model_specs import (
    ModelSpec,
    plateau_gain,
    resolve_model,
    resolve_runs,
    training_curves,
    used_oracle_stop,
    wall_time,
)
from basicsr_unlearn.evaluation.relearning_attack import RelearnOptions, relearn_curve
from basicsr_unlearn.evaluation.unlearning_markdown import main_table, write_report
from basicsr_unlearn.evaluation.unlearning_report import (
    ModelScores,
    attack_verdicts,
    build_report,
    evaluate_models,
    split_test_sets,
)
from basicsr_unlearn.inference import pad_to_multiple


def _scores(name, role, psnr, wall, members=(0.01, 0.02), nonmembers=(0.03, 0.04), seed=0, ssim=None,
            oracle=False):
    per_de = {d: {'psnr': v, 'ssim': (ssim or {}).get(d, v / 40), 'count': 2} for d, v in psnr.items()}
    return ModelScores(name, role, f'{name}{seed}.pth', per_de, list(members), list(nonmembers), wall,
                       forget_psnrs=[psnr['haze'] - 0.5, psnr['haze'] + 0.5], seed=seed, oracle_stop=oracle)


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
    assert report['retained'] == ['noise25', 'rain'] and report['noise_floor'] is None
    m = {e['name']: e for e in report['models']}
    assert m['original']['forget_gap_db'] == pytest.approx(7.0)
    assert m['reference']['forget_gap_db'] == 0.0
    assert m['reference']['retain_change_db'] == pytest.approx({'noise25': 0.2, 'rain': 0.1})
    assert m['good']['forget_gap_db'] == pytest.approx(0.3)
    assert m['good']['forget_gap_ssim'] == pytest.approx(0.3 / 40)
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
    # calibrated by the reference: members 0, 0; non-members .03-.015, .04-.005 -> every member scores lower
    assert m['good']['mia_calibrated']['auc'] == 1.0
    assert m['good']['mia_calibrated']['tpr_at_fpr'] == {'1%': 1.0, '10%': 1.0}
    assert m['reference']['mia_calibrated'] is None  # a single reference cannot calibrate itself
    assert m['reference']['forget_quality'] is None and m['good']['distance'] is None
    assert m['good']['forget_quality']['ks_statistic'] == pytest.approx(0.5)  # [17.8, 18.8] vs [17.5, 18.5]
    assert m['good']['n_seeds'] == 1 and m['good']['std']['forget_gap_db'] is None
    assert 'meets' not in m['original']
    table = main_table(report)
    assert '| good | 29.95 | 28.05 | 18.30 | 0.30 | 0.0075 | -0.05 | 0.20 | 1.000 | 1.00 |' in table
    # no relearning run: steps '–', relearning verdict '?'; with 2 + 2 images the MIA null band is wide (±0.645)
    assert '| – | MIA ✓, KS ✓, relearn ? | 30 | 3.8% | goal |' in table
    assert report['mia_null_band'] == pytest.approx(2 * (5 / 48) ** 0.5)
    assert 'PSNR in dB on RGB' in table and 'no second reference' in table


def test_attack_verdicts():
    row = {'mia_calibrated': {'auc': 0.3}, 'forget_quality': {'p_value': 0.04}, 'relearn': {'lead_db': 0.3}}
    assert attack_verdicts(row, {'relearn_curve_gap_db': 0.4}, 0.25) == {
        'calibrated_mia': True, 'forget_quality': False, 'relearning': True}  # |0.3-0.5| <= .25; .04 < .05; .3 <= .4
    row = {'mia_calibrated': {'auc': 0.8}, 'forget_quality': {'p_value': 0.5}, 'relearn': {'lead_db': 0.6}}
    assert attack_verdicts(row, None, 0.25) == {  # without a floor the relearning tolerance is the 0.5 dB goal
        'calibrated_mia': False, 'forget_quality': True, 'relearning': False}
    assert attack_verdicts({'mia_calibrated': None, 'forget_quality': None, 'relearn': None}, None, 0.2) == {
        'calibrated_mia': None, 'forget_quality': None, 'relearning': None}


SMALL_JSON = """{
  "original":  {"noise15": [31.2, 0.91], "rain": [27.5, 0.86], "haze": [22.0, 0.82]},
  "reference": {"noise15": [31.0, 0.90], "rain": [27.0, 0.85], "haze": [16.0, 0.70]},
  "m":         {"noise15": [30.5, 0.88], "rain": [27.4, 0.86], "haze": [17.0, 0.74]}
}"""


def test_avg_gap_and_ssim_gaps_match_hand_computation():
    table = json.loads(SMALL_JSON)
    roles = {'original': 'original', 'reference': 'reference', 'm': 'method'}
    scores = [_scores(name, roles[name], {d: v[0] for d, v in per.items()}, 1.0,
                      ssim={d: v[1] for d, v in per.items()}) for name, per in table.items()]
    m = build_report(scores, 'haze', 'RGB')['models'][2]
    # |30.5-31.0| = 0.5, |27.4-27.0| = 0.4, |17.0-16.0| = 1.0 -> 1.9 / 3; SSIM .02, .01, .04 -> .07 / 3
    assert m['gap_db'] == pytest.approx({'noise15': 0.5, 'rain': 0.4, 'haze': 1.0})
    assert m['avg_gap_db'] == pytest.approx(1.9 / 3)
    assert m['gap_ssim'] == pytest.approx({'noise15': 0.02, 'rain': 0.01, 'haze': 0.04})
    assert m['avg_gap_ssim'] == pytest.approx(0.07 / 3)
    assert m['retain_change_ssim'] == pytest.approx({'noise15': -0.03, 'rain': 0.0})


def test_seeds_mean_std_and_noise_floor_from_two_references():
    base = {'noise25': 30.0, 'rain': 28.0}
    scores = [_scores('original', 'original', {**base, 'haze': 25.0}, 1000.0),
              _scores('reference', 'reference', {**base, 'haze': 18.0}, 800.0, members=(0.25, 0.5),
                      nonmembers=(0.5, 0.75)),
              _scores('reference_2', 'reference', {**base, 'haze': 18.25}, 800.0, members=(0.375, 0.625),
                      nonmembers=(0.625, 0.875))]
    scores += [_scores('ga', 'method', {**base, 'haze': h}, 20.0, seed=i, oracle=i == 1)
               for i, h in enumerate([18.0, 18.4, 18.8])]
    report = build_report(scores, 'haze', 'RGB')
    m = {e['name']: e for e in report['models']}
    assert [e['name'] for e in report['models']] == ['original', 'reference', 'reference_2', 'ga']
    ga = m['ga']
    assert ga['n_seeds'] == 3 and len(ga['seeds']) == 3 and ga['oracle_stop'] is True
    assert ga['psnr']['haze'] == pytest.approx(18.4) and ga['std']['psnr']['haze'] == pytest.approx(0.4)
    assert ga['forget_gap_db'] == pytest.approx(0.4) and ga['std']['forget_gap_db'] == pytest.approx(0.4)
    assert [s['forget_gap_db'] for s in ga['seeds']] == pytest.approx([0.0, 0.4, 0.8])
    assert report['noise_floor']['forget_gap_db'] == pytest.approx(0.25)  # |18.25 - 18.0|
    assert ga['within_noise_floor'] is False
    # reference_2 calibrated by reference: every image +0.125 (exact in binary) -> constant scores -> no signal
    assert m['reference_2']['mia_calibrated']['auc'] == pytest.approx(0.5)
    assert m['reference']['mia_calibrated']['auc'] == pytest.approx(0.5)  # and the other way round
    table = main_table(report)
    assert '| ga [3 seeds] (oracle stop) | 30.00 ± 0.00 | 28.00 ± 0.00 | 18.40 ± 0.40 | 0.40 ± 0.40 (floor 0.25) |' \
        in table
    assert table.rstrip().endswith('goal (oracle stop) |')


def _experiment(root, name, wall, val_psnr=None, stop=None):
    folder = root / name
    (folder / 'models').mkdir(parents=True)
    torch.save({'params': {'w': torch.full((2,), wall)}}, folder / 'models' / 'net_g_latest.pth')
    val = [[it, {'haze': {'psnr': p, 'ssim': 0.5}, 'rain': {'psnr': p + 1, 'ssim': 0.6}}]
           for it, p in enumerate(val_psnr or [], start=1)]
    log = {'wall_time_s': wall, 'iter': len(val), 'loss': [[i, 1.0 / i] for i in range(1, 5)], 'val': val}
    (folder / 'train_log.json').write_text(json.dumps(log))
    if stop is not None:  # what BasicSR's copy_opt_file leaves in the experiment folder
        (folder / f'{name}.yml').write_text('# GENERATE TIME: now\n# CMD: x\n'
                                            + yaml.safe_dump({'name': name, 'train': stop}))
    return folder


def test_resolve_model_folders_files_stages_and_seeds(tmp_path):
    orig = _experiment(tmp_path, 'orig', 100.0, [20.0, 22.0, 23.0, 23.1])
    stage1 = _experiment(tmp_path, 'adapt', 4.0)
    stage2 = _experiment(tmp_path, 'repulse', 6.0)
    spec = resolve_model('original', 'original', str(orig), '--original')
    assert spec.checkpoint == orig / 'models' / 'net_g_latest.pth' and wall_time(spec) == 100.0
    spec = resolve_model('atu', 'method', f'{stage1}+{stage2 / "models" / "net_g_latest.pth"}', '--method atu')
    assert spec.checkpoint == stage2 / 'models' / 'net_g_latest.pth' and wall_time(spec) == 10.0
    runs = resolve_runs('atu', 'method', f'{stage1}+{stage2},{orig}', '--method atu')
    assert [(r.seed, r.stages, r.checkpoint.parent.parent.name) for r in runs] == [(0, 2, 'repulse'), (1, 1, 'orig')]
    (stage1 / 'train_log.json').unlink()
    assert wall_time(resolve_model('atu', 'method', f'{stage1}+{stage2}', '--method atu')) is None
    with pytest.raises(FileNotFoundError, match=r'--method ga ga: checkpoint .*missing.pth does not exist'):
        resolve_model('ga', 'method', str(tmp_path / 'missing.pth'), '--method ga')
    with pytest.raises(ValueError, match='--method ga: no run given'):
        resolve_runs('ga', 'method', ',', '--method ga')
    curves = training_curves([resolve_model('original', 'original', str(orig), '--original')])
    assert plateau_gain(curves['original']) == pytest.approx(0.1)  # val PSNR 23.0 -> 23.1 over the last quarter


def test_oracle_stop_label_from_saved_options_and_train_log(tmp_path):
    oracle = _experiment(tmp_path, 'ga_oracle', 5.0, stop={'stop': {'type': 'OracleStop', 'forget_psnr': 16.0}})
    legacy = _experiment(tmp_path, 'ga_legacy', 5.0, stop={'stop_rule': {'reference': 'experiments/ref/net.pth'}})
    free = _experiment(tmp_path, 'ga_free', 5.0, stop={'stop': {'type': 'InputLevelStop', 'margin': 0.0}})
    assert used_oracle_stop(oracle) and used_oracle_stop(legacy) and not used_oracle_stop(free)
    assert resolve_model('ga', 'method', f'{free}+{oracle}', '--method ga').oracle_stop  # any stage counts
    for folder, label in ((oracle, False), (free, True)):  # the run's own record (stop criterion) wins
        log = json.loads((folder / 'train_log.json').read_text())
        stop = {'type': 'X', 'oracle': label, 'label': 'oracle stop' if label else 'oracle-free stop'}
        (folder / 'train_log.json').write_text(json.dumps({**log, 'stop': stop}))
        assert used_oracle_stop(folder) is label


@pytest.mark.parametrize('param_key', ['default', 'params', None])
def test_scored_weights_follow_path_param_key_g(tmp_path, param_key):
    """Default: a file's params_ema, else its params; ``path.param_key_g: params`` the raw weights; ``~`` a bare state
    dict. Nets A and B (other seeds) score 1.5 dB apart on haze, so which was loaded shows in the PSNR."""
    _, opt = _tool_workspace(tmp_path)
    nets = []
    for seed in (10, 11):
        torch.manual_seed(seed)
        nets.append(build_network(dict(opt['network_g'])).state_dict())
    a, b = nets
    wrapped = {'ref': {'params': a, 'params_ema': b}, 'a': {'params': a}, 'b': {'params': b}}
    files = {'ref': b, 'a': a, 'b': b} if param_key is None else wrapped
    specs = []
    for name, content in files.items():
        torch.save(content, tmp_path / f'{name}.pth')
        specs.append(ModelSpec(name, 'reference' if name == 'ref' else 'method', tmp_path / f'{name}.pth'))
    if param_key != 'default':
        opt['path'] = {'param_key_g': param_key}
    scores = {s.name: s.per_degradation['haze']['psnr'] for s in evaluate_models(opt, specs, 'haze')}
    assert abs(scores['a'] - scores['b']) > 0.5, scores  # 1.5 dB here
    loaded = 'a' if param_key == 'params' else 'b'
    assert scores['ref'] == pytest.approx(scores[loaded], abs=1e-6)


def test_report_rows_of_oracle_stopped_runs_are_labelled(tmp_path):
    """Through resolve_runs, the scores and the report table: the run's train_log record, a train.stop of type
    OracleStop (by a number, no reference), the legacy stop_rule (options or train_log); an oracle-free stop is not."""
    runs = {
        'by_log': (None, {'stop': {'type': 'OracleStop', 'oracle': True, 'label': 'oracle stop'}}),
        'by_options': ({'stop': {'type': 'OracleStop', 'forget_psnr': 16.0, 'margin': 0.3}}, {}),
        'legacy_options': ({'stop_rule': {'forget_psnr': 16.0, 'de_name': 'haze'}}, {}),
        'legacy_log': (None, {'stop_rule': {'target_psnr': 16.3, 'de_names': ['haze']}}),
        'free': ({'stop': {'type': 'InputLevelStop', 'retain_delta': 0.3}},
                 {'stop': {'type': 'InputLevelStop', 'oracle': False, 'label': 'oracle-free stop'}}),
    }
    scores = _fake_scores()[:2]
    for name, (train, record) in runs.items():
        folder = _experiment(tmp_path, name, 5.0, stop=train)
        log = json.loads((folder / 'train_log.json').read_text())
        (folder / 'train_log.json').write_text(json.dumps({**log, **record}))
        spec, = resolve_runs(name, 'method', str(folder), f'--method {name}')
        scores.append(_scores(name, 'method', {'noise25': 30.0, 'rain': 28.0, 'haze': 18.5}, 5.0,
                              oracle=spec.oracle_stop))
    rows = {line.split(' |')[0].removeprefix('| '): line for line in main_table(build_report(scores, 'haze', 'RGB'))
            .splitlines() if line.startswith('| ') and any(line.startswith(f'| {name}') for name in runs)}
    assert set(rows) == {f'{name} (oracle stop)' for name in runs if name != 'free'} | {'free'}


def test_split_test_sets():
    datasets = {'test_1': {'name': 'noise25'}, 'test_2': {'name': 'haze'}, 'test_3': {'name': 'haze_members'}}
    assert split_test_sets(datasets, 'haze', 'x.yml') == (['test_1', 'test_2'], 'test_3')
    with pytest.raises(ValueError, match="x.yml: datasets needs exactly one set named 'rain_members'"):
        split_test_sets(datasets, 'rain', 'x.yml')
    with pytest.raises(ValueError, match='one or more references of distinct names'):
        build_report(_fake_scores()[:1] + _fake_scores()[2:], 'haze', 'RGB')


def test_write_report_files(tmp_path):
    orig = _experiment(tmp_path, 'orig', 1000.0, [20.0, 22.0, 23.0, 23.1])
    ref = _experiment(tmp_path, 'ref', 800.0, [19.0, 21.0, 22.5, 22.5])
    specs = [resolve_model('original', 'original', str(orig), '--original'),
             resolve_model('reference', 'reference', str(ref), '--reference')]
    report = build_report(_fake_scores(), 'haze', 'RGB')
    md_path = write_report(report, tmp_path / 'out', training_curves(specs))
    out = tmp_path / 'out'
    for png in ('psnr_per_degradation.png', 'forget_gap_vs_retain_change.png', 'training_curves.png', 'mia_roc.png'):
        assert (out / png).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert not (out / 'relearning_curves.png').exists()  # no relearning attack was run
    saved = json.loads((out / 'report.json').read_text())
    assert saved['models'][2]['forget_gap_db'] == pytest.approx(0.3)
    assert saved['plateau_gain_db'] == {'original': pytest.approx(0.1), 'reference': pytest.approx(0.0)}
    assert saved['headline_md'] == main_table(report)
    text = md_path.read_text()
    assert text.rstrip().endswith('(forget_gap_vs_retain_change.png)')
    assert saved['headline_md'] in text and 'original +0.10 dB' in text
    assert '## Relearning attack' not in text and 'pass a second `--reference`' in text


def _tool_workspace(tmp_path):
    """Noise/haze-like test sets of real photo crops, a tiny EDSR, random checkpoints with train logs."""
    data = tmp_path / 'data'
    sets = {'noise25': write_noisy_pairs(data / 'noise25', count=3, size=28, sigma=25, seed=1),
            'haze': write_noisy_pairs(data / 'haze', count=4, size=28, sigma=50, seed=2),
            'haze_members': write_noisy_pairs(data / 'members', count=4, size=28, sigma=50, seed=3)}
    datasets = {f'test_{i}': {'name': name, 'type': 'PairedImageDataset', 'io_backend': {'type': 'disk'},
                              'dataroot_gt': gt, 'dataroot_lq': lq} for i, (name, (gt, lq)) in enumerate(sets.items())}
    opt = {'name': 'report_test', 'scale': 1, 'num_gpu': 'auto', 'datasets': datasets,
           'relearn': {'pairs': 2, 'steps': [2, 4], 'lr': '1e-3', 'patch': 16},
           'network_g': {'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1,
                         'upscale': 1, 'img_range': 1.0, 'rgb_mean': [0.5, 0.5, 0.5]}}
    runs = [('orig', 1000.0, None), ('ref', 800.0, None), ('ref_s1', 810.0, None), ('ga', 40.0, None),
            ('ga_s1', 44.0, {'stop': {'type': 'OracleStop', 'reference': 'experiments/ref/models/net_g_latest.pth'}})]
    for seed, (name, wall, stop) in enumerate(runs):
        torch.manual_seed(seed)
        net = build_network(dict(opt['network_g']))
        folder = _experiment(tmp_path / 'experiments', name, wall, [20.0, 21.0, 21.5, 21.6], stop)
        torch.save({'params': net.state_dict()}, folder / 'models' / 'net_g_latest.pth')
    step = tmp_path / 'experiments' / 'step'  # a short run of the reference's YAML beside the methods: 50 s/iter
    step.mkdir()
    (step / 'train_log.json').write_text(json.dumps({'wall_time_s': 600.0, 'iter': 10, 'step_time_s': 50.0}))
    return write_yaml(tmp_path / 'test.yml', opt), opt


def _restore_all(opt, checkpoint):
    """Independent re-evaluation: per set, the metrics and the 8-bit outputs of one checkpoint."""
    net = build_network(dict(opt['network_g'])).eval()
    load_checkpoint(net, checkpoint)
    outputs, results = {}, {}
    for dataset_opt in opt['datasets'].values():
        dataset_opt = {**dataset_opt, 'phase': 'test', 'scale': 1}
        loader = build_dataloader(build_dataset(dataset_opt), dataset_opt, num_gpu=0, dist=False)
        name = dataset_opt['name']
        outputs[name] = []

        def restore(lq, name=name):
            out = net(pad_to_multiple(lq, 8)[0])[..., :28, :28]
            outputs[name] += [tensor2img(o.clamp(0, 1)) for o in out]
            return out

        results[name] = evaluate(restore, loader)
    return net, results, outputs


def read_uint8(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert('RGB'), dtype=np.float64)


def test_tool_writes_matching_report(tmp_path):
    opt_path, opt = _tool_workspace(tmp_path)
    exp = tmp_path / 'experiments'
    result = run_tool('unlearn_report.py', ['--opt', opt_path, '--original', str(exp / 'orig'), '--reference',
                                            str(exp / 'ref'), '--reference', str(exp / 'ref_s1'), '--method',
                                            f'ga={exp / "ga"}', '--method', f'ga={exp / "ga_s1"}', '--relearn-seed',
                                            '3', '--retrain-step-time', str(exp / 'step'), '--forget', 'haze',
                                            '--out', 'results/unlearn'], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / 'results' / 'unlearn'
    report = json.loads((out / 'report.json').read_text())
    assert report['metric_space'] == 'RGB' and report['degradations'] == ['noise25', 'haze']
    assert report['relearn'] == {'pairs': 2, 'steps': [2, 4], 'lr': 1e-3, 'seed': 3, 'patch': 16,
                                 'curve_steps': [0, 2, 4], 'target_db': pytest.approx(report['models'][0]['psnr'][
                                     'haze'])}
    for png in ('psnr_per_degradation.png', 'forget_gap_vs_retain_change.png', 'training_curves.png', 'mia_roc.png',
                'relearning_curves.png'):
        assert (out / png).stat().st_size > 1000
    for de_name in ('noise25', 'haze'):  # the degraded input's own PSNR, recomputed from the files
        gts = sorted((tmp_path / 'data' / de_name / 'gt').iterdir())
        psnrs = [10 * np.log10(255 ** 2 / np.mean((read_uint8(gt) - read_uint8(gt.parent.parent / 'lq' / gt.name))
                                                  ** 2)) for gt in gts]
        assert report['input_psnr'][de_name] == pytest.approx(np.mean(psnrs), abs=1e-6)
    assert report['input_psnr']['noise25'] > report['input_psnr']['haze'] + 4  # sigma 25 vs 50
    md = (out / 'report.md').read_text()
    inputs = report['input_psnr']
    assert f'| degraded input (no model) | {inputs["noise25"]:.2f} | {inputs["haze"]:.2f} |' in md
    orig, ref, ref2, ga = report['models']
    assert [m['name'] for m in report['models']] == ['original', 'reference', 'reference_2', 'ga']
    assert ga['n_seeds'] == 2 and ga['oracle_stop'] is True and not ref['oracle_stop']
    # recompute every figure of ga's seeds in-process, independently of the tool's glue
    _, ref_res, ref_out = _restore_all(opt, exp / 'ref' / 'models' / 'net_g_latest.pth')
    ref_members = [r['l1'] for r in ref_res['haze_members']['per_image']]
    ref_nonmembers = [r['l1'] for r in ref_res['haze']['per_image']]
    ref_psnrs = [r['psnr'] for r in ref_res['haze']['per_image']]
    gaps, aucs = [], []
    for seed, run in zip(ga['seeds'], ('ga', 'ga_s1')):
        _, res, outs = _restore_all(opt, exp / run / 'models' / 'net_g_latest.pth')
        for de_name in ('noise25', 'haze'):
            assert seed['psnr'][de_name] == pytest.approx(res[de_name]['per_degradation'][de_name]['psnr'])
        members = [r['l1'] for r in res['haze_members']['per_image']]
        nonmembers = [r['l1'] for r in res['haze']['per_image']]
        assert seed['mia']['auc'] == pytest.approx(membership_auc(members, nonmembers))
        calibrated = membership_auc(np.subtract(members, ref_members), np.subtract(nonmembers, ref_nonmembers))
        assert seed['mia_calibrated']['auc'] == pytest.approx(calibrated)
        l1 = np.mean([np.abs(a.astype(float) - b.astype(float)).mean() / 255 for a, b in zip(outs['haze'],
                                                                                              ref_out['haze'])])
        assert seed['distance']['l1'] == pytest.approx(l1)
        psnrs = [r['psnr'] for r in res['haze']['per_image']]
        assert seed['forget_quality']['p_value'] == pytest.approx(ks_2samp(psnrs, ref_psnrs).pvalue)
        assert seed['relearn']['psnr'][0] == pytest.approx(seed['psnr']['haze']) and len(seed['relearn']['psnr']) == 3
        gaps.append(abs(seed['psnr']['haze'] - ref['psnr']['haze']))
        aucs.append(seed['mia_calibrated']['auc'])
    assert ga['forget_gap_db'] == pytest.approx(np.mean(gaps))
    assert ga['std']['forget_gap_db'] == pytest.approx(np.std(gaps, ddof=1))
    assert ga['mia_calibrated']['auc'] == pytest.approx(np.mean(aucs))
    assert report['noise_floor']['forget_gap_db'] == pytest.approx(abs(ref2['psnr']['haze'] - ref['psnr']['haze']))
    # cost: the methods' wall time over the reference's 4 iterations x the 50 s step time of the step-time run
    assert ref['wall_time_s'] == pytest.approx(200.0) and ref2['wall_time_s'] == pytest.approx(200.0)
    assert ga['cost_ratio'] == pytest.approx(42 / 200) and ga['wall_time_s'] == pytest.approx(42.0)
    assert f"reference's iterations x 50.000 s, the median step time of {exp / 'step'}" in report['cost_basis']
    # the relearning attack on the reference, re-run here: first 2 member pairs, the report's settings
    net, _, _ = _restore_all(opt, exp / 'ref' / 'models' / 'net_g_latest.pth')
    members_opt = {**opt['datasets']['test_2'], 'phase': 'test', 'scale': 1}
    dataset = build_dataset(members_opt)
    pairs = [(dataset[i]['lq'], dataset[i]['gt']) for i in range(2)]
    haze_opt = {**opt['datasets']['test_1'], 'phase': 'test', 'scale': 1}
    haze = build_dataloader(build_dataset(haze_opt), haze_opt, num_gpu=0, dist=False)
    def haze_psnr(model):
        return evaluate(lambda lq: model(pad_to_multiple(lq, 8)[0])[..., :28, :28], haze)['per_image']

    curve = relearn_curve(net, pairs, lambda n: np.mean([r['psnr'] for r in haze_psnr(n)]),
                          RelearnOptions(pairs=2, steps=(2, 4), lr=1e-3, seed=3, patch=16))
    assert ref['relearn']['psnr'][1:] == pytest.approx(curve, abs=1e-4)
    ref_curve = np.array(ref['relearn']['psnr'][1:])
    assert ref2['relearn']['curve_gap_db'] == pytest.approx(np.mean(np.abs(np.array(ref2['relearn']['psnr'][1:])
                                                                             - ref_curve)))
    assert report['noise_floor']['relearn_curve_gap_db'] == pytest.approx(ref2['relearn']['curve_gap_db'])
    for seed in ga['seeds']:
        assert seed['relearn']['lead_db'] == pytest.approx(np.mean(np.array(seed['relearn']['psnr'][1:]) - ref_curve))
    text = (out / 'report.md').read_text()
    for section in ('## Gaps to the retrained reference', '## Membership inference on haze',
                    '## Distance to retraining on held-out haze', '## Relearning attack', 'No-membership level',
                    '(mia_roc.png)', '(relearning_curves.png)', '| ga [2 seeds] (oracle stop) |',
                    "Cost: training wall time of each method over the first reference's iterations x 50.000 s"):
        assert section in text
    assert text.rstrip().endswith('(forget_gap_vs_retain_change.png)')
    assert 'Report:' in result.stdout


def test_tool_errors(tmp_path):
    opt_path, opt = _tool_workspace(tmp_path)
    exp = tmp_path / 'experiments'
    base = ['--opt', opt_path, '--original', str(exp / 'orig'), '--reference', str(exp / 'ref'), '--out',
            str(tmp_path / 'out')]
    tool = load_tool('unlearn_report', 'unlearn_report_tool')
    with pytest.raises(SystemExit, match=r'--method ga ga: checkpoint .*nowhere.pth does not exist'):
        tool.main([*base, '--forget', 'haze', '--method', f'ga={exp / "ga"},{tmp_path / "nowhere.pth"}'])
    with pytest.raises(SystemExit, match="--forget: unknown 'hazy'; expected one of noise15"):
        tool.main([*base, '--forget', 'hazy'])
    with pytest.raises(SystemExit, match="datasets needs exactly one set named 'rain_members'"):
        tool.main([*base, '--forget', 'rain'])
    with pytest.raises(SystemExit, match='members set holds 4; lower relearn.pairs'):
        tool.main([*base, '--forget', 'haze', '--relearn-pairs', '9'])
    with pytest.raises(SystemExit, match=r'relearn.steps: expected increasing step budgets'):
        tool.main([*base, '--forget', 'haze', '--relearn-steps', '5,2'])
    with pytest.raises(SystemExit, match=r'--retrain-step-time: .*orig2.train_log.json does not exist; expected the '
                                         r'experiment folder of a short training run'):
        tool.main([*base, '--forget', 'haze', '--retrain-step-time', str(exp / 'orig2')])
    with pytest.raises(SystemExit, match=r'--retrain-step-time: .*orig.train_log.json: expected a positive '
                                         r'"step_time_s" .*got None'):
        tool.main([*base, '--forget', 'haze', '--retrain-step-time', str(exp / 'orig')])
    bad = write_yaml(tmp_path / 'bad.yml', {**opt, 'relearn': {'stepz': [1]}})
    with pytest.raises(SystemExit, match=r"bad.yml: relearn: unknown key 'stepz'.*did you mean 'steps'"):
        tool.main([*base[:0], '--opt', bad, *base[2:], '--forget', 'haze'])
    assert not (tmp_path / 'out').exists()

