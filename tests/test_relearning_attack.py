"""Relearning attack: a real fine-tuning run on a tiny model regains PSNR on the pairs it is fine-tuned on."""
import numpy as np
import pytest
import torch
from basicsr.archs import build_network
from basicsr.metrics import calculate_psnr
from basicsr.utils import img2tensor, tensor2img
from helpers import TINY_EDSR, write_noisy_pairs
from skimage import io

from basicsr_unlearn.evaluation.relearning_attack import RelearnOptions, relearn_curve, steps_to_reach


@pytest.fixture(scope='module')
def pairs(tmp_path_factory):
    gt_dir, lq_dir = write_noisy_pairs(tmp_path_factory.mktemp('relearn'), count=3, size=32, sigma=15, seed=5)
    names = ['000.png', '001.png', '002.png']
    return [tuple(img2tensor(io.imread(f'{d}/{n}').astype(np.float32) / 255.0, bgr2rgb=False) for d in (lq_dir, gt_dir))
            for n in names]


def _psnr_on(pairs):
    def psnr(net: torch.nn.Module) -> float:
        out = net(torch.stack([lq for lq, _ in pairs])).clamp(0, 1)
        return float(np.mean([calculate_psnr(tensor2img(o), tensor2img(gt), 0) for o, (_, gt) in zip(out, pairs)]))
    return psnr


def test_relearning_recovers_psnr_on_the_finetuned_pairs(pairs):
    torch.manual_seed(0)
    net = build_network(dict(TINY_EDSR)).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    psnr = _psnr_on(pairs)
    with torch.no_grad():
        start = psnr(net)
    curve = relearn_curve(net, pairs, psnr, RelearnOptions(pairs=3, steps=(10, 40, 120), lr=3e-3, patch=32))
    assert curve[-1] > start + 10.0, (start, curve)  # a random net (~11 dB) learns to restore its pairs (~27 dB)
    assert start < curve[0] < curve[1] < curve[2]
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # the attack trains a copy
    assert steps_to_reach([0, 10, 40, 120], [start, *curve], target=(curve[0] + curve[1]) / 2) == 40
    assert steps_to_reach([0, 10, 40, 120], [start, *curve], target=curve[-1] + 1.0) is None


# Equal runs differ only by float rounding, which moves these PSNRs by ~1e-5 dB (as a 1e-6 relative change of every
# weight does); 3 more steps move them by ~1.6 dB and another crop seed by ~0.02 dB, so 1e-3 dB tells them apart.
SAME_RUN_DB = 1e-3


def test_budgets_are_cumulative_and_seeded(pairs):
    torch.manual_seed(1)
    net = build_network(dict(TINY_EDSR)).eval()
    psnr = _psnr_on(pairs)
    options = RelearnOptions(pairs=3, steps=(3, 6), lr=1e-3, seed=7, patch=16)
    split = relearn_curve(net, pairs, psnr, options)
    whole = relearn_curve(net, pairs, psnr, RelearnOptions(pairs=3, steps=(6,), lr=1e-3, seed=7, patch=16))
    other_seed = relearn_curve(net, pairs, psnr, RelearnOptions(pairs=3, steps=(3, 6), lr=1e-3, seed=8, patch=16))
    assert split[1] - split[0] > 100 * SAME_RUN_DB  # the budgets matter
    assert abs(other_seed[1] - split[1]) > 5 * SAME_RUN_DB  # and so do the crops
    assert split[1] == pytest.approx(whole[0], abs=SAME_RUN_DB)  # 3 then 3 more steps = 6 steps from the start
    assert relearn_curve(net, pairs, psnr, options) == pytest.approx(split, abs=SAME_RUN_DB)


@pytest.mark.parametrize('kwargs, message', [
    ({'pairs': 0}, 'relearn.pairs: expected an integer >= 1'),
    ({'steps': (10, 5)}, r'relearn.steps: expected increasing step budgets >= 1, e.g. \[10, 25, 50\]; got \[10, 5\]'),
    ({'steps': ()}, 'relearn.steps: expected increasing step budgets'),
    ({'lr': 0.0}, 'relearn.lr: expected a positive learning rate'),
    ({'patch': 4}, 'relearn.patch: expected a crop size >= 8 px'),
])
def test_bad_options_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RelearnOptions(**kwargs)
