"""tools/asvp_study.py: centre-crop evaluation, best-point selection, and one end-to-end quick run."""
import json

import pytest
import torch

from basicsr_unlearn.config import load_options
from basicsr_unlearn.data.demo_data import SPLITS
from tests.helpers import ROOT, load_tool, run_tool


def load_study():
    return load_tool('asvp_study', 'asvp_study')


def cell(defence: str, attack: str, drop: float, teacher: float = 0.0, student: str = 'restormer-tiny') -> dict:
    return {'defence': defence, 'student': student, 'attack': attack, 'teacher_delta_psnr': {'rain': teacher,
                                                                                           'haze': 0.0},
            'drop_mean': drop, 'drop_std': 0.1}


def test_plateau_accepts_a_flat_tail_and_rejects_a_student_still_improving():
    study = load_study()
    rising = [(it, 20 + 3 * (1 - 0.995 ** it)) for it in range(20, 401, 20)]  # still gains ~0.2 dB in its tail
    converged, spread = study.plateau(rising)
    assert not converged and spread == pytest.approx(3 * (0.995 ** 320 - 0.995 ** 400), abs=1e-6)
    flat = [(it, 25 + (0.04 if it % 40 else 0.0)) for it in range(20, 401, 20)]
    assert study.plateau(flat) == (True, pytest.approx(0.04))
    assert not study.plateau([*flat[:-1], (400, 25.2)])[0]  # a late jump is not flat either
    with pytest.raises(ValueError, match='plateau: need at least two validations in the last 20% of 100'):
        study.plateau([(50, 20.0), (100, 21.0)])


def test_query_photos_are_disjoint_from_the_teacher_photos(tmp_path):
    study = load_study()
    for name in ('clock_0', 'clock_1', 'gravel_2'):
        (tmp_path / 'q').mkdir(exist_ok=True)
        (tmp_path / 'q' / f'{name}.png').write_bytes(b'')
    (tmp_path / 't').mkdir()
    (tmp_path / 't' / 'astronaut.png').write_bytes(b'')
    (tmp_path / 't' / 'hubble_deep_field_2.png').write_bytes(b'')
    query = {'sources': [{'dataroot_lq': str(tmp_path / 'q')}]}
    train = {'sources': [{'dataroot_gt': str(tmp_path / 't')}]}
    assert study.photo_names(query) == {'clock', 'gravel'}
    assert study.photo_names(train) == {'astronaut', 'hubble_deep_field'}
    opt = load_options(ROOT / 'options/distill/asvp-study_promptir-tiny_demo3.yml')
    query_roots = [s['dataroot_lq'] for s in opt['datasets']['query']['sources']]
    assert all('/test/' in r and 'members' not in r for r in query_roots)  # held-out photos, never training pairs


def test_verdict_needs_a_drop_above_noise():
    study = load_study()
    assert study.verdict({'defence': 'd', 'drop_mean': 3.0, 'drop_std': 0.5}) == 'stops'
    assert study.verdict({'defence': 'd', 'drop_mean': 3.0, 'drop_std': 2.0}) == 'does not stop'
    assert study.verdict({'defence': 'd', 'drop_mean': 0.5, 'drop_std': 0.0}) == 'does not stop'


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


def test_stored_answers_crop_the_image_and_its_taps_alike_and_repeat_per_seed():
    study = load_study()
    lqs = [torch.rand(3, 24, 32, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    pool = lambda x, s: torch.nn.functional.avg_pool2d(x, s)  # noqa: E731  (a tap of stride s)
    answers = [(2 * lq, [pool(lq, 2), pool(lq, 4)]) for lq in lqs]
    data = study.StoredAnswers(lqs, answers, patch=8, seed=3)
    items = [data[i % 3] for i in range(60)]
    for item in items:  # whatever the crop and flips, each stored target is the crop's own
        lq, answer = item['lq'], item['answers']
        assert lq.shape == (3, 8, 8) and torch.equal(answer['output'], 2 * lq)
        assert torch.allclose(answer['taps'][0], pool(lq, 2)) and torch.allclose(answer['taps'][1], pool(lq, 4))
    assert len({tuple(item['lq'].flatten()[:4].tolist()) for item in items}) > 30  # crops and flips vary
    again = study.StoredAnswers(lqs, answers, patch=8, seed=3)
    assert all(torch.equal(item['lq'], again[i % 3]['lq']) for i, item in enumerate(items))
    other = study.StoredAnswers(lqs, answers, patch=8, seed=4)
    assert not all(torch.equal(item['lq'], other[i % 3]['lq']) for i, item in enumerate(items))
    with pytest.raises(ValueError, match=r'--patch: 6 px must fit the 24x32 query image 0 and be a multiple of '
                                         r'every tap stride \(lcm 4\)'):
        study.StoredAnswers(lqs, answers, patch=6, seed=0)[0]
    odd = torch.rand(3, 33, 32)  # padded to 40 by the teacher: a 10-row tap is not stride 3
    with pytest.raises(ValueError, match='query image 0: its size 33x32 must be a multiple of every tap stride'):
        study.StoredAnswers([odd], [(odd, [torch.zeros(4, 10, 8)])], patch=8, seed=0)[0]


@pytest.mark.parametrize('iters, every, expected', [
    (5, 1, [1, 2, 3, 4, 5]),
    (60, 10, [10, 20, 30, 40, 48, 50, 60]),
    (100, 5, [10, 20, 30, 40, 50, 60, 70, 80, 85, 90, 95, 100]),
    (1000, 30, [100, 200, 300, 400, 500, 600, 700, 800, 810, 840, 870, 900, 930, 960, 990, 1000]),
])
def test_validation_points_are_dense_in_the_tail_and_hit_50_and_80_percent(iters, every, expected):
    points = load_study().validation_points(iters, every)
    assert points == expected
    assert {round(0.5 * iters), round(0.8 * iters), iters} <= set(points)
    assert sum(it >= 0.8 * iters for it in points) >= 2


def test_standard_grid_pits_the_shipped_block_against_a_challenger_in_exposed_mode():
    study = load_study()
    shipped = load_options(str(ROOT / 'options/_base_/asvp/asvp_promptir-tiny_exposed.yml'))['asvp']
    assert {key: shipped[key] for key in study.SHIPPED} == study.SHIPPED  # the study measures what ships
    grid = study.defence_grid('standard')
    assert grid[0] == study.SHIPPED and len(grid) >= 2 and len({study.defence_label(b) for b in grid}) == len(grid)
    assert all(b['mode'] == 'exposed' for b in grid)  # teacher bit-identical: every block is within 0.1 dB
    assert study.defence_grid('quick') == [study.SHIPPED]


def test_best_points_respect_the_teacher_budget_and_average_over_attacks():
    study = load_study()
    cells = [cell('clean', 'feat', 0.0),
             cell('a', 'feat', 3.0), cell('a', 'feat+out', -0.5),   # mean 1.25
             cell('b', 'feat', 1.0), cell('b', 'feat+out', 0.4),    # mean 0.7, but a better worst case
             cell('d', 'feat', 4.0),                                # fewer attacks run: not comparable
             cell('c', 'feat', 9.0, teacher=-0.2), cell('c', 'feat+out', 9.0, teacher=-0.2),  # breaks the teacher
             cell('b', 'feat', 5.0, student='edsr-cnn')]            # other student arch: ignored
    best = study.best_points(cells, 'restormer-tiny')
    assert best['per_attack']['feat']['defence'] == 'd'
    assert best['per_attack']['feat+out']['defence'] == 'b'
    assert best['best']['defence'] == 'a'
    assert best['best']['mean_drop'] == pytest.approx(1.25)
    assert best['best']['min_mean_drop'] == pytest.approx(-0.5)
    assert study.best_points(cells, 'restormer-tiny', max_teacher_change=-1)['best'] is None


@pytest.mark.slow
def test_quick_study_writes_report(demo_root, tmp_path):
    cwd = demo_root.parents[1]
    out = tmp_path / 'asvp'
    proc = run_tool('asvp_study.py', ['--opt', str(ROOT / 'options/distill/asvp-study_promptir-tiny_demo3.yml'),
                                      '--quick', '--teacher-iters', '2', '--iters', '5', '--batch', '2',
                                      '--patch', '32', '--out', str(out)], cwd=cwd, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / 'report.json').read_text())
    md = (out / 'report.md').read_text()
    assert md.rstrip().endswith('![frontier](frontier.png)')
    assert (out / 'frontier.png').stat().st_size > 0
    tasks = set(report['teacher_clean'])
    assert tasks == {'noise15', 'noise25', 'noise50', 'rain', 'haze'}
    assert {c['attack'] for c in report['cells']} == set(load_study().ATTACKS)
    assert {c['defence'] for c in report['cells']} == {'clean', 'exposed/channel_map/decoder_level1/k4h32'}
    assert report['query_photos'] and not set(report['query_photos']) & set(SPLITS['train'])
    for label, d in report['defences'].items():
        assert d['ms_per_image'] > 0 and d['overhead_ratio'] > 0
        assert d['output_bit_identical'] == (d['block']['mode'] == 'exposed'), label
    for r in report['students_runs']:
        assert [it for it, _ in r['curve']] == [1, 2, 3, 4, 5] and isinstance(r['converged'], bool)
    for c in report['cells']:
        assert set(c['drop_per_task']) == tasks
        assert [it for it, _ in c['drop_curve']] == [1, 2, 3, 4, 5]
        if c['derived_from_clean'] or c['defence'] == 'clean':
            assert c['drop_mean'] == 0
    # against the exposed defence, output KD and feature KD on an unhooked layer get the clean teacher's targets
    assert {c['attack'] for c in report['cells'] if c['derived_from_clean']} == {'out', 'unprotected-feat+out'}
    assert report['best']['best']['defence'] in report['defences']
    assert 'Converged students (val PSNR within 0.1 dB over the last 20% of iterations)' in md
