"""AllInOneModel in-process: padding/crop-back, tiling, optimizers, de_name handling, checkpoints."""
from pathlib import Path

import pytest
import torch
from helpers import tiny_train_options
from torch import nn

from basicsr_unlearn.models.all_in_one_model import AllInOneModel


class Needs16(nn.Module):
    """A per-pixel net that only accepts multiples of 16 (like an arch with 4 downsamplings)."""

    pad_multiple = 16

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.seen: list[tuple[int, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[-2] % 16 == 0 and x.shape[-1] % 16 == 0, x.shape
        self.seen.append(tuple(x.shape[-2:]))
        return self.conv(x)


def make_model(tmp_path: Path, is_train: bool = True, **val) -> AllInOneModel:
    opt = tiny_train_options(tmp_path)
    opt.update(num_gpu=0, dist=False, rank=0, world_size=1, is_train=is_train)
    opt['val'].update(val)
    opt['path'].update(experiments_root=str(tmp_path), models=str(tmp_path / 'models'), log=str(tmp_path),
                       training_states=str(tmp_path / 'states'), visualization=str(tmp_path / 'vis'))
    return AllInOneModel(opt)


def test_restore_pads_to_arch_multiple_and_crops_back(tmp_path: Path) -> None:
    model = make_model(tmp_path)
    model.net_g = Needs16()
    lq = torch.rand(2, 3, 37, 50)
    out = model.restore(lq)
    assert out.shape == lq.shape and model.net_g.seen == [(48, 64)]
    torch.testing.assert_close(out, model.net_g.conv(lq).detach())
    assert model.net_g.training  # restored to train mode afterwards


def test_tiling_matches_whole_image_for_a_per_pixel_net(tmp_path: Path) -> None:
    model = make_model(tmp_path, tile={'size': 32, 'overlap': 8})
    model.net_g = Needs16()
    lq = torch.rand(1, 3, 70, 45)
    out = model.restore(lq)
    assert out.shape == lq.shape and len(model.net_g.seen) == 6  # 3 rows x 2 columns of tiles
    torch.testing.assert_close(out, model.net_g.conv(lq).detach())


@pytest.mark.parametrize('optim', ['Adam', 'AdamW', 'SGD'])
def test_optimizers(tmp_path: Path, optim: str) -> None:
    model = make_model(tmp_path)
    assert type(model.get_optimizer(optim, model.net_g.parameters(), 1e-3)).__name__ == optim
    with pytest.raises(ValueError, match="train.optim_g.type: unknown 'Adamw'; expected one of Adam, AdamW, SGD"):
        model.get_optimizer('Adamw', model.net_g.parameters(), 1e-3)


def test_default_l1_loss_step_and_plain_checkpoints(tmp_path: Path) -> None:
    model = make_model(tmp_path)
    assert type(model.cri_pix).__name__ == 'L1Loss'
    model.feed_data({'lq': torch.rand(2, 3, 16, 16), 'gt': torch.rand(2, 3, 16, 16), 'de_name': ['rain', 'haze']})
    assert model.de_names == ['rain', 'haze'] and model.roles == ['retain', 'retain']
    before = model.net_g.conv_first.weight.detach().clone()
    model.update_learning_rate(1)
    model.optimize_parameters(1)
    assert not torch.equal(before, model.net_g.conv_first.weight)
    model.save(0, 1)
    params = torch.load(tmp_path / 'models' / 'net_g_1.pth', weights_only=True)['params']
    torch.testing.assert_close(params['conv_first.weight'], model.net_g.conv_first.weight.detach())
    state = torch.load(tmp_path / 'states' / '1.state', weights_only=True)
    assert state['iter'] == 1 and len(state['optimizers']) == 1
    assert not list(tmp_path.rglob('.*.tmp*'))  # atomic writes leave no temporaries


def test_unknown_val_key_fails_at_construction(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="val: unknown key 'pad_multiplee'.*did you mean 'pad_multiple'"):
        make_model(tmp_path, pad_multiplee=8)
