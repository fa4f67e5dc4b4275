"""evaluate(): default PSNR/SSIM, BasicSR's val.metrics blocks through METRIC_REGISTRY, their checks, NaN refusal."""
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from basicsr.metrics import calculate_niqe, calculate_psnr, calculate_ssim
from helpers import tiny_workspace
from skimage import data as skdata
from test_all_in_one_model import make_model
from torch.utils.data import DataLoader, Dataset

from basicsr_unlearn.config import validate_options
from basicsr_unlearn.evaluation.metrics import evaluate
from basicsr_unlearn.models.all_in_one_model import AllInOneModel

BASICSR_BLOCK = {'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False},
                 'ssim_y': {'type': 'calculate_ssim', 'crop_border': 2, 'test_y_channel': True, 'better': 'higher'}}


class Labelled(Dataset):
    """Five noisy 24-px pairs of three degradations (``opt['name']`` as a BasicSR dataset has)."""

    opt = {'name': 'val'}

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.gt = torch.rand(5, 3, 24, 24, generator=g)
        self.lq = (self.gt + 0.1 * torch.randn(5, 3, 24, 24, generator=g)).clamp(0, 1)
        self.names = ['rain', 'haze', 'rain', 'noise25', 'rain']

    def __len__(self) -> int:
        return 5

    def __getitem__(self, i: int) -> dict:
        return {'lq': self.lq[i], 'gt': self.gt[i], 'lq_path': f'x/{i}.png', 'de_name': self.names[i]}


def bgr_uint8(image: torch.Tensor) -> np.ndarray:
    """``(3, H, W)`` RGB in [0, 1] -> ``(H, W, 3)`` BGR uint8, as BasicSR's metrics receive it."""
    return (image.permute(1, 2, 0).numpy()[..., ::-1] * 255).round().astype(np.uint8)


def test_default_psnr_ssim_grouped_per_degradation_match_manual_psnr() -> None:
    dataset = Labelled()
    result = evaluate(lambda x: x, DataLoader(dataset, batch_size=2))
    assert [r['name'] for r in result['per_image']] == ['0', '1', '2', '3', '4']
    per = result['per_degradation']
    assert {k: v['count'] for k, v in per.items()} == {'rain': 3, 'haze': 1, 'noise25': 1}
    assert set(per['rain']) == {'psnr', 'ssim', 'l1', 'count'}
    for i, record in enumerate(result['per_image']):
        lq = (dataset.lq[i] * 255).round()
        gt = (dataset.gt[i] * 255).round()
        psnr = 10 * torch.log10(255.0 ** 2 / ((lq - gt) ** 2).mean())
        assert record['psnr'] == pytest.approx(psnr.item(), abs=1e-4)
        assert record['l1'] == pytest.approx((dataset.lq[i] - dataset.gt[i]).abs().mean().item(), abs=1e-6)
        assert 0 < record['ssim'] < 1
    rain = [r['psnr'] for r in result['per_image'] if r['de_name'] == 'rain']
    assert per['rain']['psnr'] == pytest.approx(sum(rain) / 3)


def test_basicsr_metric_blocks_are_computed_by_their_registered_functions() -> None:
    dataset = Labelled()
    result = evaluate(lambda x: x, DataLoader(dataset, batch_size=2), metrics=BASICSR_BLOCK)
    for i, record in enumerate(result['per_image']):
        out, gt = bgr_uint8(dataset.lq[i]), bgr_uint8(dataset.gt[i])
        assert set(record) == {'name', 'de_name', 'psnr', 'ssim_y', 'l1'}
        assert record['psnr'] == pytest.approx(calculate_psnr(out, gt, 0), abs=1e-9)
        assert record['ssim_y'] == pytest.approx(calculate_ssim(out, gt, 2, test_y_channel=True), abs=1e-9)
    assert record['ssim_y'] != pytest.approx(calculate_ssim(out, gt, 0), abs=1e-6)  # the block's options are used


class Photos(Dataset):
    """Two 192-px natural photos (NIQE needs blocks of natural content, at least 96 px)."""

    opt = {'name': 'photos'}

    def __init__(self) -> None:
        photos = [skdata.astronaut(), skdata.chelsea()]
        self.gt = [torch.from_numpy(cv2.resize(p, (192, 192), interpolation=cv2.INTER_AREA)).permute(2, 0, 1) / 255
                   for p in photos]

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> dict:
        return {'lq': self.gt[i], 'gt': self.gt[i], 'lq_path': f'photo{i}.png'}


def test_any_registered_metric_can_be_named_niqe() -> None:
    dataset = Photos()
    niqe = {'niqe': {'type': 'calculate_niqe', 'crop_border': 0, 'better': 'lower'}}
    result = evaluate(lambda x: x, DataLoader(dataset, batch_size=1), metrics=niqe)
    for i, record in enumerate(result['per_image']):
        assert record['niqe'] == pytest.approx(float(calculate_niqe(bgr_uint8(dataset.gt[i]), 0)), abs=1e-9)
        assert 0 < record['niqe'] < 30
    assert set(result['per_degradation']) == {'photos'}  # no de_name: the dataset's name is the group


def test_validation_logs_and_records_every_metric_of_the_block(tmp_path: Path) -> None:
    model = make_model(tmp_path, metrics=BASICSR_BLOCK)
    result = model.validation(DataLoader(Labelled(), batch_size=2), current_iter=3)
    assert set(result['per_degradation']['haze']) == {'psnr', 'ssim_y', 'l1', 'count'}
    iteration, entry = model.train_log['val'][-1]
    assert iteration == model.current_iter and set(entry) == {'rain', 'haze', 'noise25'}
    assert entry['rain'] == {k: result['per_degradation']['rain'][k] for k in ('psnr', 'ssim_y')}


@pytest.mark.parametrize(('val', 'message'), [
    ({'metrics': {'psnr': {'type': 'calculate_psnrr', 'crop_border': 0}}},
     r"val.metrics.psnr.type: unknown 'calculate_psnrr'; expected one of calculate_niqe, calculate_psnr, "),
    ({'metrics': {'psnr': {'type': 'calculate_psnr'}}}, r'val.metrics.psnr: calculate_psnr needs crop_border'),
    ({'metrics': {'psnr': {'crop_border': 0}}}, r'val.metrics.psnr: expected a mapping with a type'),
    ({'metrics': {'l1': {'type': 'calculate_psnr', 'crop_border': 0}}}, r"val.metrics.l1: 'l1' is reserved"),
    ({'metrics': {'psnr': {**BASICSR_BLOCK['psnr'], 'better': 'up'}}},
     r"val.metrics.psnr.better: expected 'higher' or 'lower'"),
    ({'metrics': BASICSR_BLOCK, 'test_y_channel': True}, r'val.test_y_channel: applies to the default PSNR/SSIM'),
    ({'metrics': []}, r'val.metrics: expected a mapping'),
])
def test_bad_metric_blocks_are_rejected_by_check_options(val: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AllInOneModel.check_options({'val': val})


def test_metric_blocks_are_checked_in_the_validation_pass(tmp_path: Path) -> None:
    opt = yaml.safe_load(Path(tiny_workspace(tmp_path)).read_text())
    opt['val']['metrics'] = BASICSR_BLOCK
    validate_options(opt, where='tiny.yml')
    opt['val']['metrics'] = {'niqe': {'type': 'calculate_niq', 'crop_border': 0}}
    with pytest.raises(ValueError, match=r"val.metrics.niqe.type: unknown 'calculate_niq'; expected one of "
                                         r'calculate_niqe, calculate_psnr, calculate_psnr_pt, calculate_ssim'):
        validate_options(opt, where='tiny.yml')


def test_a_nan_output_is_refused_naming_the_source_and_image() -> None:
    def half_nan(lq: torch.Tensor) -> torch.Tensor:
        out = lq.clone()
        out[-1, 0, :2, :3] = float('nan')  # the second image of each batch
        return out

    with pytest.raises(ValueError, match=r'^net42: non-finite output for x/1.png \(6 of 1728 values'):
        evaluate(half_nan, DataLoader(Labelled(), batch_size=2), source='net42')


def test_a_nan_metric_is_refused_naming_the_metric_and_image() -> None:
    tiny = [{'lq': torch.rand(3, 8, 8), 'gt': torch.rand(3, 8, 8), 'lq_path': 'small.png'}]
    with pytest.raises(ValueError, match=r"^identity: metric ssim \(calculate_ssim\) gave nan for small.png"):
        evaluate(lambda x: x, DataLoader(tiny), source='identity')  # SSIM's 11-px window does not fit 8 px


def test_nan_weights_are_refused_naming_the_model(tmp_path: Path) -> None:
    model = make_model(tmp_path)
    with torch.no_grad():
        model.net_g.conv_last.bias.fill_(float('inf'))
    with pytest.raises(ValueError, match=r'^model tiny: non-finite output for x/0.png \(1728 of 1728 values'):
        model.validation(DataLoader(Labelled(), batch_size=2), current_iter=1)
