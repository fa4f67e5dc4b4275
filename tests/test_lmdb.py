"""LMDB tooling: BasicSR-format round trip and interop, atomic writes, bad input, forked and spawned workers."""
import os
import pickle
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from basicsr.data import build_dataset
from helpers import PYTHON, ROOT, load_tool, tool_env
from torch.utils.data import ConcatDataset, DataLoader

from basicsr_unlearn.data import lmdb_backend
from basicsr_unlearn.data.image_io import list_images, read_image
from basicsr_unlearn.data.lmdb_backend import LmdbReader, check_lmdb, read_labels, write_lmdbs

create_lmdb = load_tool('create_lmdb', 'create_lmdb')


def pairs_with_dotted_name(src: Path, dst: Path) -> Path:
    """Copy the lq/gt pair folders ``src`` to ``dst`` and add a RESIDE-style dotted file name."""
    for role in ('gt', 'lq'):
        (dst / role).mkdir(parents=True)
        for path in list_images(src / role, role):
            (dst / role / path.name).write_bytes(path.read_bytes())
        (dst / role / '0025_0.8_0.04.png').write_bytes(next((src / role).iterdir()).read_bytes())
    return dst


def test_round_trip_is_bit_exact_with_sanitised_keys_and_labels(demo_root, tmp_path, capsys):
    pairs = pairs_with_dotted_name(demo_root / 'test/rain', tmp_path / 'rain')
    out_gt, out_lq = tmp_path / 'rain_gt.lmdb', tmp_path / 'rain_lq.lmdb'
    create_lmdb.main(['--gt', str(pairs / 'gt'), '--lq', str(pairs / 'lq'), '--degradation', 'rain',
                      '--out-gt', str(out_gt), '--out-lq', str(out_lq), '--verify'])
    assert '5 keys verified' in capsys.readouterr().out
    lines = (out_gt / 'meta_info.txt').read_text().splitlines()
    assert lines[0] == '0025_0_8_0_04.png (32,32,3) 0'  # PNG level 0, the default
    assert read_labels(out_lq) == {line.split('.png')[0]: 'rain' for line in lines}
    reader = LmdbReader(out_lq)
    for path in list_images(pairs / 'lq', 'lq'):
        stored = cv2.imdecode(np.frombuffer(reader.get(path.stem.replace('.', '_')), np.uint8), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(stored, cv2.imread(str(path), cv2.IMREAD_UNCHANGED))
    with pytest.raises(KeyError, match=r"rain_lq\.lmdb: key 'nope' not found in LMDB"):
        reader.get('nope')
    with pytest.raises(FileExistsError, match=r'rain_gt\.lmdb: already exists; pass --overwrite'):
        create_lmdb.main(['--gt', str(pairs / 'gt'), '--out-gt', str(out_gt)])
    create_lmdb.main(['--gt', str(pairs / 'gt'), '--out-gt', str(out_gt), '--overwrite'])
    assert len((out_gt / 'meta_info.txt').read_text().splitlines()) == 5
    assert not list(tmp_path.glob('.*tmp*'))


def test_basicsr_paired_image_dataset_reads_it(demo_root, tmp_path):
    pairs = pairs_with_dotted_name(demo_root / 'test/haze', tmp_path / 'haze')
    out_gt, out_lq = tmp_path / 'haze_gt.lmdb', tmp_path / 'haze_lq.lmdb'
    create_lmdb.main(['--gt', str(pairs / 'gt'), '--lq', str(pairs / 'lq'), '--out-gt', str(out_gt),
                      '--out-lq', str(out_lq)])
    ds = build_dataset({'name': 'haze', 'type': 'PairedImageDataset', 'phase': 'val', 'scale': 1,
                        'dataroot_gt': str(out_gt), 'dataroot_lq': str(out_lq), 'io_backend': {'type': 'lmdb'}})
    assert len(ds) == 5
    by_key = {ds[i]['lq_path']: ds[i] for i in range(len(ds))}
    assert '0025_0_8_0_04' in by_key  # BasicSR splits names at the first dot: keys must not hold one
    for path in list_images(pairs / 'lq', 'lq'):
        item = by_key[path.stem.replace('.', '_')]
        assert torch.equal(item['lq'], torch.from_numpy(read_image(path)).permute(2, 0, 1))
        assert torch.equal(item['gt'], torch.from_numpy(read_image(pairs / 'gt' / path.name)).permute(2, 0, 1))


def test_lmdb_sources_check_keys_and_labels(demo_root, tmp_path):
    lmdb = demo_root / 'lmdb'
    src = {'degradation': 'rain', 'type': 'lmdb', 'dataroot_gt': str(lmdb / 'train_rain_gt.lmdb'),
           'dataroot_lq': str(lmdb / 'train_rain_lq.lmdb')}
    opt = {'name': 'rain', 'type': 'MixedDegradationDataset', 'phase': 'val', 'sources': [src]}
    ds = build_dataset(opt)
    item = ds[0]
    key = Path(item['lq_path']).name
    expected = read_image(demo_root / f'train/rain/lq/{key}.png')
    assert torch.equal(item['lq'], torch.from_numpy(expected).permute(2, 0, 1))
    with pytest.raises(ValueError, match=r"train_rain_gt\.lmdb/meta_labels\.txt labels '.*' as 'rain', but the "
                                         r"source is 'haze'"):
        build_dataset({**opt, 'sources': [{**src, 'degradation': 'haze'}]})
    few = tmp_path / 'few'
    (few / 'lq').mkdir(parents=True)
    for path in sorted((demo_root / 'train/rain/lq').iterdir())[:3]:
        (few / 'lq' / path.name).write_bytes(path.read_bytes())
    create_lmdb.main(['--gt', str(few / 'lq'), '--out-gt', str(tmp_path / 'few_lq.lmdb')])
    with pytest.raises(ValueError, match=r"key '.*' of .*train_rain_gt\.lmdb is missing from .*few_lq\.lmdb"):
        build_dataset({**opt, 'sources': [{**src, 'dataroot_lq': str(tmp_path / 'few_lq.lmdb')}]})
    with pytest.raises(FileNotFoundError, match=r'sources\[0\]\.dataroot_lq: .*nowhere\.lmdb: not an LMDB folder '
                                                r'\(no data\.mdb\)'):
        build_dataset({**opt, 'sources': [{**src, 'dataroot_lq': str(tmp_path / 'nowhere.lmdb')}]})


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGKILL])
def test_interrupted_creation_leaves_nothing_at_the_target(tmp_path, sig):
    """The writer pauses on an explicit "about to write" marker (every image written, nothing renamed) and is
    signalled there; the next run to the same targets removes a killed writer's temporaries and succeeds."""
    clean = tmp_path / 'clean'
    clean.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        cv2.imwrite(str(clean / f'{i:04d}.png'), rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    out = tmp_path / 'noisy.lmdb'
    args = [PYTHON, str(ROOT / 'tools/create_lmdb.py'), '--gt', str(clean), '--synth', 'haze',
            '--out-gt', str(tmp_path / 'clean.lmdb'), '--out-lq', str(out)]
    marker = tmp_path / 'about_to_write'
    env = tool_env(BASICSR_UNLEARN_HOLD_BEFORE_WRITE='.noisy.lmdb.tmp*/meta_info.txt',
                   BASICSR_UNLEARN_HOLD_MARKER=str(marker))
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, 'create_lmdb never reached the marker'
        time.sleep(0.02)
    temporaries = sorted(p.name for p in tmp_path.glob('.*.lmdb.tmp*'))
    assert temporaries == [f'.clean.lmdb.tmp{proc.pid}', f'.noisy.lmdb.tmp{proc.pid}']
    proc.send_signal(sig)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert not out.exists() and not (tmp_path / 'clean.lmdb').exists()
    left = sorted(p.name for p in tmp_path.glob('.*.lmdb.tmp*'))
    assert left == ([] if sig == signal.SIGTERM else temporaries)  # SIGTERM unwinds; SIGKILL cannot
    again = subprocess.run(args, env=tool_env(), capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-2000:]
    assert not list(tmp_path.glob('.*.lmdb.tmp*'))  # the dead writer's temporaries are gone
    assert LmdbReader(out).keys() == [f'{i:04d}' for i in range(8)]


def test_truncated_lmdb_is_an_error_naming_the_file_not_a_sigbus(demo_root, tmp_path):
    lmdb = tmp_path / 'rain_lq.lmdb'
    shutil.copytree(demo_root / 'lmdb' / 'train_rain_lq.lmdb', lmdb)
    size = (lmdb / 'data.mdb').stat().st_size
    os.truncate(lmdb / 'data.mdb', size // 2)
    reader = LmdbReader(lmdb)
    with pytest.raises(ValueError, match=rf'{lmdb}/data\.mdb: truncated LMDB: {size // 2} bytes, but its meta page '
                                         rf'uses \d+ pages of 4096 bytes \({size}\); re-create it'):
        reader.get(reader.keys()[0])
    src = {'degradation': 'rain', 'type': 'lmdb', 'dataroot_gt': str(demo_root / 'lmdb' / 'train_rain_gt.lmdb'),
           'dataroot_lq': str(lmdb)}
    with pytest.raises(ValueError, match=r'datasets\.val\.sources\[0\]\.dataroot_lq: .*data\.mdb: truncated LMDB'):
        build_dataset({'name': 'rain', 'type': 'MixedDegradationDataset', 'phase': 'val', 'sources': [src]})
    os.truncate(lmdb / 'data.mdb', 100)
    with pytest.raises(ValueError, match=r'data\.mdb: not an LMDB data file \(100 bytes, no valid meta page\)'):
        check_lmdb(lmdb)


@pytest.mark.parametrize('context', ['fork', 'spawn'])
def test_workers_share_one_lmdb_between_two_datasets(demo_root, context):
    """py-lmdb >= 2 refuses a second open per process: two datasets on one LMDB, env opened in the parent first."""
    clean = str(demo_root / 'lmdb' / 'train_clean.lmdb')
    datasets = [build_dataset({'name': name, 'type': 'MixedDegradationDataset', 'phase': 'val',
                               'sources': [{'degradation': name, 'type': 'synth', 'dataroot_gt': clean}]})
                for name in ('noise25', 'noise50')]
    expected = [ds[i]['lq'] for ds in datasets for i in range(len(ds))]  # opens the env in the parent
    both = ConcatDataset(datasets)
    loader = DataLoader(both, batch_size=1, num_workers=2, multiprocessing_context=context)
    got = [batch['lq'][0] for batch in loader]
    assert len(got) == len(expected) == 20
    assert all(torch.equal(a, b) for a, b in zip(got, expected))
    if context == 'fork':  # two loaders in turn, as train + val loaders on one LMDB
        for ds in datasets:
            assert len(list(DataLoader(ds, batch_size=1, num_workers=2, multiprocessing_context='fork'))) == 10


def test_map_grows_beyond_the_initial_size(tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(20)]  # ~250 KB of PNG
    write_lmdbs({'gt': tmp_path / 'x.lmdb'}, ((f'{i}.png', {'gt': img}) for i, img in enumerate(images)),
                map_size=1 << 14, batch=4)
    reader = LmdbReader(tmp_path / 'x.lmdb')
    assert reader.keys() == [str(i) for i in range(20)]
    for i, img in enumerate(images):
        stored = cv2.imdecode(np.frombuffer(reader.get(str(i)), np.uint8), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(stored[..., ::-1], img)


def test_meta_pairs_of_different_names_keyed_by_lq(demo_root, tmp_path):
    """SOTS style: several hazy inputs ``<id>_<A>_<beta>`` per clean ``<id>``."""
    src = sorted((demo_root / 'test/haze/gt').iterdir())[0]
    (tmp_path / 'target').mkdir()
    (tmp_path / 'input').mkdir()
    (tmp_path / 'target' / '0001.png').write_bytes(src.read_bytes())
    for name in ('0001_0.8_0.2.png', '0001_1_0.1.png'):
        (tmp_path / 'input' / name).write_bytes((demo_root / 'test/haze/lq' / src.name).read_bytes())
    (tmp_path / 'pairs.txt').write_text('0001.png 0001_0.8_0.2.png\n0001.png 0001_1_0.1.png\n')
    create_lmdb.main(['--gt', str(tmp_path / 'target'), '--lq', str(tmp_path / 'input'), '--meta',
                      str(tmp_path / 'pairs.txt'), '--degradation', 'haze', '--out-gt', str(tmp_path / 'gt.lmdb'),
                      '--out-lq', str(tmp_path / 'lq.lmdb')])
    assert LmdbReader(tmp_path / 'gt.lmdb').keys() == ['0001_0_8_0_2', '0001_1_0_1']
    ds = build_dataset({'name': 'sots', 'type': 'MixedDegradationDataset', 'phase': 'test', 'sources': [
        {'degradation': 'haze', 'type': 'lmdb', 'dataroot_gt': str(tmp_path / 'gt.lmdb'),
         'dataroot_lq': str(tmp_path / 'lq.lmdb')}]})
    assert len(ds) == 2 and torch.equal(ds[0]['gt'], ds[1]['gt'])
    assert torch.equal(ds[0]['gt'], torch.from_numpy(read_image(src)[:32, :32]).permute(2, 0, 1))


def test_reads_keep_one_transaction_per_thread_and_process(tmp_path):
    """The read path begins one transaction per LMDB, thread and process (not one per image)."""
    images = {str(i): np.full((4, 4, 3), i, np.uint8) for i in range(3)}
    path = write_lmdbs({'gt': tmp_path / 'x.lmdb'}, ((k, {'gt': img}) for k, img in images.items()))['gt']
    reader = LmdbReader(path)
    expected = {key: reader.get(key) for key in images}
    assert lmdb_backend.read_txn(str(path)) is lmdb_backend.read_txn(str(path))
    other: dict = {}
    thread = threading.Thread(target=lambda: other.update(txn=lmdb_backend.read_txn(str(path)),
                                                          values={k: reader.get(k) for k in images}))
    thread.start()
    thread.join()
    assert other['txn'] is not lmdb_backend.read_txn(str(path)) and other['values'] == expected
    assert pickle.loads(pickle.dumps(reader)).get('2') == expected['2']
    pid = os.fork()
    if pid == 0:  # child: no transaction inherited from the parent, reads begin a fresh one
        fresh = not lmdb_backend._TXNS.txns and {k: reader.get(k) for k in images} == expected
        os._exit(0 if fresh else 1)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
