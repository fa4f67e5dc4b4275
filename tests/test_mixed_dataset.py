"""MixedDegradationDataset on the tiny demo set: contract, determinism, role groups, option and input errors."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from basicsr.data import build_dataset
from torch.utils.data import DataLoader

from basicsr_unlearn.config import load_options
from basicsr_unlearn.data.degradation_names import DEGRADATIONS
from basicsr_unlearn.data.image_io import read_image, write_image

ROOT = Path(__file__).resolve().parents[1]


def demo_opt(demo_root: Path, monkeypatch, file: str = 'demo3.yml', phase: str = 'train') -> dict:
    """A dataset block of ``options/_base_/datasets/<file>`` with the working directory at the demo workspace."""
    monkeypatch.chdir(demo_root.parents[1])
    opt = load_options(str(ROOT / 'options/_base_/datasets' / file))['datasets'][phase]
    opt['phase'] = phase.split('_')[0]
    return opt


def folder_source(root: Path, name: str) -> dict:
    return {'degradation': name, 'type': 'folder', 'dataroot_gt': str(root / 'gt'), 'dataroot_lq': str(root / 'lq')}


def test_demo_layout_matches_the_manifest(demo_root):
    manifest = json.loads((demo_root / 'manifest.json').read_text())
    assert manifest['size'] == 'tiny'
    assert not set(manifest['photos']['train']) & set(manifest['photos']['test'])  # split by photo
    for entry in [*manifest['val'].values(), *manifest['test'].values(), manifest['train']['rain']]:
        assert len(list((demo_root / entry['gt']).iterdir())) == entry['count'] == len(
            list((demo_root / entry['lq']).iterdir()))
    members = sorted(p.name for p in (demo_root / 'test/haze_members/lq').iterdir())
    assert members == sorted(p.name for p in (demo_root / 'train/haze/lq').iterdir())
    same = read_image(demo_root / 'test/haze_members/lq' / members[0])
    assert np.array_equal(same, read_image(demo_root / 'train/haze/lq' / members[0]))


def test_heavy_rain_changes_only_the_rain_pairs_and_adds_streaks(demo_root, tmp_path):
    from basicsr_unlearn.data.demo_data import build_demo

    heavy, light = demo_root, tmp_path / 'light'
    assert build_demo(light, size='tiny', rain='light')['rain'] == 'light'
    assert json.loads((heavy / 'manifest.json').read_text())['rain'] == 'heavy'  # the default
    for folder in ('train/rain/lq', 'val/rain/lq', 'test/rain/lq'):
        names = sorted(p.name for p in (heavy / folder).iterdir())
        streaks = {}  # fraction of pixels the rain brightened by > 10/255, light vs heavy, per image
        for style, root in (('light', light), ('heavy', heavy)):
            gt_folder = root / folder.replace('/lq', '/gt')
            streaks[style] = [float(((read_image(root / folder / n) - read_image(gt_folder / n)).max(-1) > 10 / 255)
                                    .mean()) for n in names]
        assert np.mean(streaks['heavy']) > 2 * np.mean(streaks['light']), (folder, streaks)
    for folder in ('train/haze/lq', 'val/noise25/lq', 'test/haze/lq'):
        for path in (heavy / folder).iterdir():
            assert np.array_equal(read_image(path), read_image(light / folder / path.name))
    with pytest.raises(ValueError, match="rain: unknown 'storm'; expected one of light, heavy"):
        build_demo(tmp_path / 'storm', size='tiny', rain='storm')
    assert not (tmp_path / 'storm').exists()


def test_train_items_follow_the_batch_contract(demo_root, monkeypatch):
    ds = build_dataset(demo_opt(demo_root, monkeypatch))
    assert len(ds) == 210  # repeat 3: 10 photos x 3 x (noise15 + noise25 + noise50) + 30 rain x 3 + 30 haze pairs
    names = {}
    for index in range(len(ds)):
        item = ds[index]
        assert item['lq'].shape == item['gt'].shape == (3, 64, 64) and item['lq'].dtype == torch.float32
        assert 0 <= float(item['lq'].min()) and float(item['lq'].max()) <= 1
        assert item['de_type'] == DEGRADATIONS[item['de_name']] and item['role'] == 'retain'
        assert isinstance(item['lq_path'], str) and isinstance(item['gt_path'], str)
        names[item['de_name']] = names.get(item['de_name'], 0) + 1
    assert names == {'noise15': 30, 'noise25': 30, 'noise50': 30, 'rain': 90, 'haze': 30}  # 3 versions/photo
    noise = ds[30]  # a noise25 sample on a mid-grey photo (little clipping): measured sigma of lq - gt
    assert noise['de_name'] == 'noise25' and noise['gt_path'].endswith('brick.png')
    assert float((noise['lq'] - noise['gt']).std()) * 255 == pytest.approx(25, rel=0.15)


def test_train_sampling_is_reproducible_and_varies_per_draw(demo_root, monkeypatch):
    opt = demo_opt(demo_root, monkeypatch)
    first, second = build_dataset(opt), build_dataset(opt)
    a, b = [first[3]['lq'], first[3]['lq']], [second[3]['lq'], second[3]['lq']]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])  # same seed, same call sequence
    assert not torch.equal(a[0], a[1])  # a new crop / noise draw every epoch


def test_val_items_are_deterministic_and_multiples_of_8(demo_root, monkeypatch, tmp_path):
    write_image(tmp_path / 'clean' / 'odd.png', read_image(demo_root / 'train/clean/motorcycle.png')[:61, :45])
    opt = {'name': 'n50', 'type': 'MixedDegradationDataset', 'phase': 'val',
           'sources': [{'degradation': 'noise50', 'type': 'synth', 'dataroot_gt': str(tmp_path / 'clean')}]}
    first, second = build_dataset(opt)[0], build_dataset(opt)[0]
    assert first['lq'].shape == (3, 56, 40)
    assert torch.equal(first['lq'], second['lq'])
    assert torch.equal(first['gt'], torch.from_numpy(read_image(tmp_path / 'clean/odd.png')[:56, :40]).permute(2, 0, 1))


def test_role_groups_hold_the_exact_ratio_in_every_batch(demo_root, monkeypatch):
    opt = demo_opt(demo_root, monkeypatch)
    opt.update(forget=['haze'], role_group={'forget': 2, 'retain': 3}, gt_size=32)
    ds = build_dataset(opt)
    assert len(ds) == 60  # max(30 haze records / 2, 180 retain records / 3): one pass covers both pools
    loader = DataLoader(ds, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(0))
    seen_forget, seen_retain = set(), set()
    for batch in loader:
        assert batch['lq'].shape[1:] == (5, 3, 32, 32)
        assert batch['is_forget'].tolist() == [[True, True, False, False, False]] * len(batch['lq'])
        assert (batch['de_type'][:, :2] == DEGRADATIONS['haze']).all()
        assert (batch['de_type'][:, 2:] != DEGRADATIONS['haze']).all()
        assert batch['role'][0] == ('forget',) * len(batch['lq']) and batch['role'][4][0] == 'retain'
        seen_forget.update(p for column in batch['gt_path'][:2] for p in column)
        seen_retain.update(p for column in batch['gt_path'][2:] for p in column)
    assert len(seen_forget) == 30  # one pass covers every haze pair
    assert len(seen_retain) == 40  # 30 rain pairs + 10 clean photos (noise)
    again = build_dataset(opt)
    assert again[7]['gt_path'] == ds[7]['gt_path']  # the group is a function of (seed, index)


def test_forget_names_are_checked(demo_root, monkeypatch):
    opt = demo_opt(demo_root, monkeypatch)
    with pytest.raises(ValueError, match=r"datasets\.train\.forget: unknown 'hazy'; expected one of"):
        build_dataset({**opt, 'forget': ['hazy']})
    with pytest.raises(ValueError, match=r"datasets\.train\.forget: 'blur' is not the degradation of any source"):
        build_dataset({**opt, 'forget': ['blur']})
    with pytest.raises(ValueError, match=r'role_group: forget: 2 needs a non-empty datasets\.train\.forget'):
        build_dataset({**opt, 'role_group': {'forget': 2, 'retain': 2}})
    with pytest.raises(ValueError, match=r"role_group: unknown key 'retian'"):
        build_dataset({**opt, 'forget': ['haze'], 'role_group': {'forget': 2, 'retian': 2}})


def test_source_options_are_checked(demo_root, monkeypatch):
    opt = demo_opt(demo_root, monkeypatch)
    sources = opt['sources']
    bad = {**sources[3], 'degradation': 'rainy'}
    with pytest.raises(ValueError, match=r"sources\[0\]\.degradation: unknown 'rainy'; expected one of noise15"):
        build_dataset({**opt, 'sources': [bad]})
    with pytest.raises(ValueError, match=r"sources\[0\]: unknown key 'sigma'"):
        build_dataset({**opt, 'sources': [{**sources[0], 'sigma': 25}]})
    with pytest.raises(ValueError, match=r"sources\[0\]\.type: unknown 'zip'"):
        build_dataset({**opt, 'sources': [{**sources[3], 'type': 'zip'}]})
    with pytest.raises(ValueError, match=r'sources\[0\]: missing dataroot_lq'):
        build_dataset({**opt, 'sources': [{**sources[3], 'dataroot_lq': None}]})
    with pytest.raises(ValueError, match=r"datasets\.train: unknown key 'gt_szie'"):
        build_dataset({**opt, 'gt_szie': 64})


def test_bad_inputs_name_the_file_or_folder(demo_root, tmp_path):
    pair = tmp_path / 'pair'
    shutil.copytree(demo_root / 'val/rain', pair)
    opt = {'name': 'rain', 'type': 'MixedDegradationDataset', 'phase': 'val', 'sources': [folder_source(pair, 'rain')]}
    with pytest.raises(FileNotFoundError, match=r'dataroot_lq: folder not found: .*missing'):
        build_dataset({**opt, 'sources': [{**folder_source(pair, 'rain'), 'dataroot_lq': str(tmp_path / 'missing')}]})
    extra = pair / 'gt' / 'zz_extra.png'
    shutil.copy(next((pair / 'gt').iterdir()), extra)
    with pytest.raises(ValueError, match=r'unequal pair counts: 3 GT images in .*pair/gt, 2 LQ images'):
        build_dataset(opt)
    (pair / 'lq' / 'other.png').write_bytes(extra.read_bytes())
    with pytest.raises(ValueError, match=r'GT image .*zz_extra\.png has no LQ image of the same name'):
        build_dataset(opt)
    extra.unlink()
    (pair / 'lq' / 'other.png').unlink()
    name = sorted(p.name for p in (pair / 'lq').iterdir())[0]
    (pair / 'lq' / name).write_bytes(b'not a png at all')
    with pytest.raises(ValueError, match=rf'{name}: unreadable or corrupt image'):
        build_dataset(opt)[0]
    write_image(pair / 'lq' / name, np.zeros((16, 24, 3), np.float32))
    with pytest.raises(ValueError, match=rf'lq/gt size mismatch: .*{name} is \(16, 24\)'):
        build_dataset(opt)[0]


def test_lmdb_variant_yields_the_same_samples_as_the_folders(demo_root, monkeypatch):
    folders = build_dataset(demo_opt(demo_root, monkeypatch))
    lmdbs = build_dataset(demo_opt(demo_root, monkeypatch, 'demo3_lmdb.yml'))
    assert len(lmdbs) == len(folders) == 210
    for index in (0, 95, 185):  # noise15 from the clean LMDB, rain and haze pairs
        a, b = folders[index], lmdbs[index]
        assert torch.equal(a['lq'], b['lq']) and torch.equal(a['gt'], b['gt'])
        assert a['de_name'] == b['de_name'] and Path(a['gt_path']).stem == Path(b['gt_path']).name


def test_meta_source_reads_the_listed_pairs(demo_root, tmp_path):
    pair = demo_root / 'test/haze'
    names = sorted(p.name for p in (pair / 'gt').iterdir())
    meta = tmp_path / 'pairs.txt'
    meta.write_text('# gt lq\n' + ''.join(f'{name} {name}\n' for name in names[1:3]))
    src = {**folder_source(pair, 'haze'), 'type': 'meta', 'meta_info_file': str(meta)}
    opt = {'name': 'haze', 'type': 'MixedDegradationDataset', 'phase': 'test', 'sources': [src]}
    ds, folder = build_dataset(opt), build_dataset({**opt, 'sources': [folder_source(pair, 'haze')]})
    assert len(ds) == 2 and ds[0]['gt_path'] == folder[1]['gt_path']
    assert torch.equal(ds[1]['lq'], folder[2]['lq'])
    meta.write_text(f'{names[0]}\nmissing.png\n')
    with pytest.raises(FileNotFoundError, match=r'pairs\.txt:2: image file not found: .*missing\.png'):
        build_dataset(opt)


def test_role_groups_keep_the_ratio_on_every_ddp_shard(demo_root, monkeypatch):
    from basicsr.data import build_dataloader
    from basicsr.data.data_sampler import EnlargedSampler

    opt = demo_opt(demo_root, monkeypatch)
    opt.update(forget=['haze'], role_group={'forget': 1, 'retain': 2}, gt_size=32, batch_size_per_gpu=3,
               num_worker_per_gpu=0, persistent_workers=False, dataset_enlarge_ratio=2)
    ds = build_dataset(opt)
    shards = []
    for rank in range(2):  # what BasicSR builds on each of 2 ranks
        sampler = EnlargedSampler(ds, num_replicas=2, rank=rank, ratio=2)
        loader = build_dataloader(ds, {**opt, 'phase': 'train'}, num_gpu=0, dist=True, sampler=sampler, seed=0)
        shards.append([batch for batch in loader])
    for batches in shards:
        assert len(batches) == len(ds) * 2 // 2 // 3
        for batch in batches:
            assert batch['is_forget'].sum(dim=1).tolist() == [1] * 3
            assert (batch['de_type'][:, 0] == DEGRADATIONS['haze']).all()


def test_retain_only_groups_keep_the_forget_type_out(demo_root, monkeypatch):
    """``forget: 0`` beside ``forget: [haze]`` is accepted only as declared retain-only training; no haze sample then
    reaches a batch."""
    opt = demo_opt(demo_root, monkeypatch)
    opt.update(forget=['haze'], role_group={'forget': 0, 'retain': 3}, gt_size=32)
    with pytest.raises(ValueError, match=r'role_group: forget: 0 with datasets\.train\.forget \[\'haze\'\]: no forget '
                                         r'sample ever reaches the model'):
        build_dataset(opt)
    opt['role_group']['retain_only'] = True
    ds = build_dataset(opt)
    assert len(ds) == 60  # 180 retain records / 3
    names = {name for i in range(len(ds)) for name in ds[i]['de_name']}
    assert names == {'noise15', 'noise25', 'noise50', 'rain'}
    assert not any(ds[i]['is_forget'].any() for i in range(len(ds)))
