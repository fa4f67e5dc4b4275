"""tools/asvp_study.py: centre-crop evaluation, best-point selection, and one end-to-end quick run."""
import importlib.util
import json
import sys

import pytest
import torch

from tests.helpers import ROOT, run_tool


def load_study():
    spec = importlib.util.spec_from_file_location('asvp_study', ROOT / 'tools' / 'asvp_study.py')
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault('asvp_study', module)
    spec.loader.exec_module(module)
    return module


def row(defence: str, attack: str, drop: float, teacher: float = 0.0, student: str = 'restormer-tiny') -> dict:
    return {'defence': defence, 'student': student, 'attack': attack,
            'teacher_delta_psnr': {'rain': teacher, 'haze': 0.0}, 'student_drop_psnr': {'rain': drop, 'haze': drop}}


def test_center_crop_cuts_lq_and_gt_alike_and_keeps_small_images():
    study = load_study()
    image = torch.arange(3 * 10 * 12, dtype=torch.float32).reshape(3, 10, 12)
    items = [{'lq': image, 'gt': image + 1, 'de_name': 'rain'}]
    cropped = study.CenterCrop(items, 4)[0]
    assert cropped['lq'].shape == (3, 4, 4)
    assert torch.equal(cropped['lq'], image[:, 3:7, 4:8])
    assert torch.equal(cropped['gt'], image[:, 3:7, 4:8] + 1)
    assert cropped['de_name'] == 'rain'
    assert study.CenterCrop(items, 16)[0]['lq'].shape == (3, 10, 12)
    assert study.CenterCrop(items, 0)[0]['lq'].shape == (3, 10, 12)


def test_best_points_respect_the_teacher_budget_and_average_over_attacks():
    study = load_study()
    results = {'defences': {d: {'block': {'k': k}} for k, d in enumerate('abcd')},
               'students': [
                   row('clean', 'feat', 0.0),
                   row('a', 'feat', 3.0), row('a', 'feat+out', -0.5),   # mean 1.25
                   row('b', 'feat', 1.0), row('b', 'feat+out', 0.4),    # mean 0.7, but a better worst case
                   row('d', 'feat', 4.0),                               # fewer attacks run: not comparable
                   row('c', 'feat', 9.0, teacher=-0.2), row('c', 'feat+out', 9.0, teacher=-0.2),  # breaks teacher
                   row('b', 'feat', 5.0, student='edsr-cnn')]}          # other student arch: ignored
    best = study.best_points(results, 'restormer-tiny')
    assert best['per_attack']['feat']['defence'] == 'd'
    assert best['per_attack']['feat+out']['defence'] == 'b'
    assert best['best']['defence'] == 'a'
    assert best['best']['mean_drop'] == pytest.approx(1.25)
    assert best['best']['min_mean_drop'] == pytest.approx(-0.5)
    assert best['best']['block'] == {'k': 0}
    assert study.best_points(results, 'restormer-tiny', max_teacher_change=-1)['best'] is None


@pytest.mark.slow
def test_quick_study_writes_report(demo_root, tmp_path):
    cwd = demo_root.parents[1]
    out = tmp_path / 'asvp'
    proc = run_tool('asvp_study.py', ['--opt', str(ROOT / 'options/distill/asvp-study_promptir-tiny_demo3.yml'),
                                      '--quick', '--teacher-iters', '2', '--iters', '1', '--batch', '2',
                                      '--patch', '32', '--out', str(out)], cwd=cwd, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / 'report.json').read_text())
    md = (out / 'report.md').read_text()
    assert md.rstrip().endswith('![frontier](frontier.png)')
    assert (out / 'frontier.png').stat().st_size > 0
    tasks = set(report['teacher_clean'])
    assert tasks == {'noise15', 'noise25', 'noise50', 'rain', 'haze'}
    assert {r['student'] for r in report['students']} == {'restormer-tiny', 'edsr-cnn'}
    assert {r['attack'] for r in report['students']} == {'out', 'feat', 'feat+out', 'inverse+feat+out'}
    for label, d in report['defences'].items():
        assert d['ms_per_image'] > 0 and d['overhead_ratio'] > 0
        assert d['output_bit_identical'] == (d['block']['mode'] == 'exposed'), label
    for r in report['students']:
        assert set(r['student_drop_psnr']) == tasks
        if r['derived_from_clean']:
            assert all(v == 0 for v in r['student_drop_psnr'].values())
    assert report['best']['best']['defence'] in report['defences']
