"""The published-recipe option files run end to end (tools/train.py, tools/test.py, the converter) on a tiny fake
data tree with the papers' folder layout and file names, with tiny archs set through --cfg-options."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from basicsr.archs import build_network
from helpers import ROOT, run_tool

from basicsr_unlearn.checkpoint_conversion import convert_loaded, read_official
from basicsr_unlearn.config import load_options

FIXTURES = Path(__file__).resolve().parent / 'fixtures' / 'official'
# relative paths of the fake tree: (GT, LQ or None) pairs with the real datasets' names
TREE = {
    'Train/Denoise': ['00001.bmp', '5096.jpg', 'a247012.jpg'],
    'Train/Derain': [('gt/norain-1.png', 'rainy/rain-1.png'), ('gt/norain-2.png', 'rainy/rain-2.png')],
    'Train/Dehaze': [('original/0025.png', 'synthetic/part1/0025_0.8_0.04.jpg'),
                     ('original/0025.png', 'synthetic/part1/0025_0.8_0.06.jpg'),
                     ('original/3068.png', 'synthetic/part2/3068_0.8_0.1.jpg')],
    'Train/Deblur': [('sharp/GOPR0372_07_00_000047.png', 'blur/GOPR0372_07_00_000047.png')],
    'Train/Enhance': [('gt/2.png', 'low/2.png'), ('gt/5.png', 'low/5.png')],
    'test/denoise/bsd68': ['3096.jpg', '12084.jpg'],
    'test/denoise/kodak24': ['kodim01.png'],
    'test/derain/Rain100L': [('target/1.png', 'input/1.png'), ('target/2.png', 'input/2.png')],
    'test/dehaze': [('target/0001.png', 'input/0001_0.8_0.2.jpg'), ('target/0002.png', 'input/0002_0.8_0.08.jpg')],
    'test/deblur/gopro': [('target/GOPR0384_11_00_000001.png', 'input/GOPR0384_11_00_000001.png')],
    'test/enhance/lol': [('target/1.png', 'input/1.png'), ('target/22.png', 'input/22.png')],
    'val/derain': [('target/1.png', 'input/1.png')],
    'val/dehaze': [('target/0003.png', 'input/0003.png')],
}
TINY = {
    'PromptIR': {'dim': 8, 'num_blocks': [1, 1, 1, 1], 'num_refinement_blocks': 1, 'heads': [1, 1, 2, 2],
                 'prompt_dims': [8, 16, 32], 'prompt_sizes': [8, 4, 2]},
    'AdaIR': {'dim': 8, 'num_blocks': [1, 1, 1, 1], 'num_refinement_blocks': 1, 'heads': [1, 1, 2, 2]},
}
FEW_ITERS = ['train.total_iter=2', 'train.warmup_iter=1', 'datasets.train.gt_size=16',
             'datasets.train.num_worker_per_gpu=0', 'datasets.train.persistent_workers=False', 'val.val_freq=2',
             'logger.print_freq=1', 'logger.save_checkpoint_freq=2']
TASKS3 = {'bsd68_noise15': 'noise15', 'bsd68_noise25': 'noise25', 'bsd68_noise50': 'noise50', 'rain100l': 'rain',
          'sots_outdoor': 'haze'}
TASKS5 = {**TASKS3, 'gopro': 'blur', 'lol': 'lowlight'}


def cfg(prefix: str, values: dict) -> list[str]:
    """``--cfg-options`` items ``prefix.key=value`` (lists without spaces, as DictAction reads them)."""
    return [f'{prefix}.{k}={json.dumps(v).replace(" ", "")}' for k, v in values.items()]


def convert_fixture(arch: str, option_file: str, dst: Path) -> list[str]:
    """Convert the official-layout fixture of ``arch`` into ``dst`` for the option file's network_g with the
    fixture's tiny widths (as tools/convert_checkpoint.py, tested in test_convert_checkpoint.py, does); returns
    those widths as ``--cfg-options`` items for the run."""
    network = torch.load(FIXTURES / f'{arch}_tiny_io.pt', weights_only=True)['network_g']
    widths = {k: v for k, v in network.items() if k != 'type'}
    net_opt = load_options(option_file, {f'network_g.{k}': v for k, v in widths.items()})['network_g']
    path = FIXTURES / f'{arch}_tiny.ckpt'
    params, _ = convert_loaded(read_official(path), build_network(net_opt), path)
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save({'params': params}, dst)
    return cfg('network_g', widths)


def write_tree(root: Path, size: tuple[int, int] = (28, 36)) -> None:
    """Smooth random colour images at every path of :data:`TREE` (LQ = GT darkened and noised)."""
    rng = np.random.default_rng(0)
    for folder, entries in TREE.items():
        for entry in entries:
            gt_name, lq_name = (entry, None) if isinstance(entry, str) else entry
            small = rng.integers(0, 256, (4, 5, 3)).astype(np.float32)
            gt = cv2.resize(small, size[::-1], interpolation=cv2.INTER_CUBIC).clip(0, 255)
            for name, img in ((gt_name, gt), (lq_name, 0.6 * gt + rng.normal(0, 10, gt.shape))):
                if name is not None:
                    path = root / folder / name
                    path.parent.mkdir(parents=True, exist_ok=True)
                    cv2.imwrite(str(path), img.clip(0, 255).astype(np.uint8))


@pytest.fixture(scope='module')
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working directory holding the fake ``data/`` tree and its pair files (made by tools/make_pair_lists.py)."""
    root = tmp_path_factory.mktemp('recipes')
    write_tree(root / 'data')
    made = run_tool('make_pair_lists.py', ['--root', 'data'], root)
    assert made.returncode == 0, made.stderr[-2000:]
    assert 'data/Train/Dehaze/pairs.txt: 3 pairs' in made.stdout
    assert (root / 'data/Train/Derain/pairs.txt').read_text().splitlines() == ['norain-1.png rain-1.png',
                                                                             'norain-2.png rain-2.png']
    assert (root / 'data/test/dehaze/pairs.txt').read_text().splitlines()[1] == '0002.png 0002_0.8_0.08.jpg'
    return root


@pytest.mark.parametrize(('recipe', 'arch', 'val_names'), [
    ('train_promptir_3task_l1_120ep.yml', 'PromptIR', {'noise25', 'rain', 'haze'}),
    ('train_adair_5task_l1_150ep.yml', 'AdaIR', {'noise25', 'rain', 'haze', 'blur', 'lowlight'}),
])
def test_training_recipe_runs_on_the_published_layout(workspace: Path, recipe: str, arch: str,
                                                      val_names: set[str]) -> None:
    name = Path(recipe).stem
    done = run_tool('train.py', ['-opt', str(ROOT / 'options' / 'train' / recipe), '--cfg-options',
                                 *cfg('network_g', TINY[arch]), *FEW_ITERS, 'train.scheduler.periods=[1,1]'],
                    workspace)
    assert done.returncode == 0, done.stderr[-3000:]
    experiment = workspace / 'experiments' / name
    params = torch.load(experiment / 'models' / 'net_g_2.pth', weights_only=True)['params']
    assert params['patch_embed.proj.weight'].shape == (8, 3, 3, 3)
    log = json.loads((experiment / 'train_log.json').read_text())
    assert log['iter'] == 2 and set(log['val'][-1][1]) == val_names
    merged = next(experiment.glob('*.yml')).read_text()
    assert 'type: AdamW' in merged and 'periods:' in merged and 'data/Train/Dehaze/pairs.txt' in merged


@pytest.mark.parametrize(('recipe', 'arch', 'fixture', 'tasks'), [
    ('test_promptir-official_3task.yml', 'promptir', 'promptir_official.pth', TASKS3),
    ('test_adair-official_5task.yml', 'adair', 'adair5d_official.pth', TASKS5),
])
def test_converted_official_checkpoint_through_the_test_recipe(workspace: Path, recipe: str, arch: str,
                                                                fixture: str, tasks: dict[str, str]) -> None:
    """What a user with an official .ckpt does: convert it to the recipe's path, then run tools/test.py."""
    option_file = str(ROOT / 'options' / 'test' / recipe)
    arch_options = convert_fixture(arch, option_file, workspace / 'experiments' / 'pretrained_models' / fixture)
    done = run_tool('test.py', ['-opt', option_file, '--cfg-options', *arch_options], workspace)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((workspace / 'results' / Path(recipe).stem / 'metrics.json').read_text())
    assert metrics['checkpoint'] == f'experiments/pretrained_models/{fixture}'
    assert {name: list(block['per_degradation']) for name, block in metrics['datasets'].items()} == \
        {name: [de] for name, de in tasks.items()}
    assert metrics['datasets']['bsd68_noise25']['per_degradation']['noise25']['count'] == 2
    assert all(np.isfinite(r['psnr']) for r in metrics['per_image'])


def test_unlearning_starts_from_the_converted_official_promptir(workspace: Path) -> None:
    option_file = str(ROOT / 'options' / 'unlearn' / 'unlearn_promptir-official_3task_ga-adv_2kit.yml')
    start = 'experiments/pretrained_models/promptir_official.pth'
    arch_options = convert_fixture('promptir', option_file, workspace / start)
    done = run_tool('train.py', ['-opt', option_file, '--cfg-options', *arch_options, *FEW_ITERS,
                                 'val.val_freq=1', 'train.scheduler.milestones=[2]',
                                 'datasets.train.role_group.forget=2', 'datasets.train.role_group.retain=2'], workspace)
    assert done.returncode == 0, done.stderr[-3000:]
    models = workspace / 'experiments' / 'unlearn_promptir-official_3task_ga-adv_2kit' / 'models'
    before = torch.load(workspace / start, weights_only=True)['params']
    after = torch.load(models / 'net_g_latest.pth', weights_only=True)['params']
    assert set(after) == set(before)
    assert any(not torch.equal(after[k], before[k]) for k in before)


def test_pair_lists_name_the_lq_image_without_gt(tmp_path: Path) -> None:
    rainy = tmp_path / 'data' / 'Train' / 'Derain' / 'rainy'
    (tmp_path / 'data' / 'Train' / 'Derain' / 'gt').mkdir(parents=True)
    rainy.mkdir(parents=True)
    cv2.imwrite(str(rainy / 'rain-7.png'), np.zeros((8, 8, 3), np.uint8))
    done = run_tool('make_pair_lists.py', ['--root', 'data'], tmp_path)
    assert done.returncode == 1
    assert 'data/Train/Derain/rainy/rain-7.png: no GT image named norain-7.* in data/Train/Derain/gt' in done.stderr
    assert not (tmp_path / 'data' / 'Train' / 'Derain' / 'pairs.txt').exists()
