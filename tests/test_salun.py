"""SalUn: the saliency mask keeps the requested share of the most salient weights, and only those move."""
from pathlib import Path

import pytest
import torch
from test_methods import build, checkpoints  # noqa: F401  (the module fixture)
from test_unlearn_model import grouped_batch

from basicsr_unlearn.losses.criteria import per_sample_loss
from basicsr_unlearn.unlearning.methods.salun import saliency_masks


@pytest.mark.parametrize('sparsity', [0.1, 0.5])
def test_salun_moves_only_the_most_salient_weights(sparsity: float, tmp_path: Path,
                                                   checkpoints: tuple[str, str]) -> None:  # noqa: F811
    model = build('SalUn', tmp_path, checkpoints, sparsity=sparsity)
    start = [p.detach().clone() for p in model.get_bare_model(model.net_g).parameters()]
    batch = grouped_batch(5)
    for it in (1, 2):
        model.feed_data(batch)
        model.optimize_parameters(it)
    masks = model.method.masks
    share = sum(float(m.sum()) for m in masks) / sum(m.numel() for m in masks)
    assert sparsity <= share < sparsity + 0.02
    moved = [(p.detach() != p0) for p, p0 in zip(model.get_bare_model(model.net_g).parameters(), start)]
    assert all(not (d & (m == 0)).any() for d, m in zip(moved, masks))  # nothing outside the mask moved
    assert sum(int((d & (m == 1)).sum()) for d, m in zip(moved, masks)) > 0.5 * share * sum(m.numel() for m in masks)


def test_saliency_masks_pick_the_largest_gradients() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.GELU(), torch.nn.Conv2d(8, 3, 1))
    lq, gt = torch.rand(3, 3, 8, 8), torch.rand(3, 3, 8, 8)
    masks = saliency_masks(net, lq, gt, 0.3)
    grads = torch.autograd.grad(per_sample_loss(net(lq), gt).mean(), list(net.parameters()))
    kept = torch.cat([g.abs().flatten()[m.flatten() == 1] for g, m in zip(grads, masks)])
    dropped = torch.cat([g.abs().flatten()[m.flatten() == 0] for g, m in zip(grads, masks)])
    assert kept.min() >= dropped.max()
    assert all(p.grad is None for p in net.parameters())
