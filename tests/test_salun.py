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
    total = sum(m.numel() for m in masks)
    share = sum(float(m.sum()) for m in masks) / total
    assert abs(share * total - sparsity * total) <= 1  # exactly the requested share, to one weight
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


class Unused(torch.nn.Module):
    """Holds a module's parameters without using them in forward (their gradients are all 0)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@pytest.mark.parametrize('sparsity', [0.5, 0.9])
def test_saliency_masks_keep_the_requested_share_despite_tied_zero_gradients(sparsity: float) -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.ReLU(), torch.nn.Conv2d(4, 3, 1),
                              Unused(torch.nn.Linear(50, 50)))
    with torch.no_grad():
        net[0].bias[:2] = -100.0  # two dead channels: more zero gradients
    lq, gt = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4)
    params = list(net.parameters())
    grads = torch.autograd.grad(per_sample_loss(net(lq), gt).mean(), params, allow_unused=True)
    zeros = sum(p.numel() if g is None else int((g == 0).sum()) for p, g in zip(params, grads))
    total = sum(p.numel() for p in params)
    assert zeros > (1 - sparsity) * total + 10  # a threshold at the tied value 0 would keep far more
    masks = saliency_masks(net, lq, gt, sparsity)
    assert abs(sum(float(m.sum()) for m in masks) - sparsity * total) <= 1
    assert all(m.dtype == torch.bool for m in masks)


class ZeroGradient(Unused):
    """Its parameters enter the output with weight 0 (their gradients are all 0)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0 * sum(p.sum() for p in self.parameters())


def test_saliency_masks_cut_ties_by_index() -> None:
    """All gradients 0: the kept weights are the first ones in parameter order."""
    net = ZeroGradient(torch.nn.Linear(4, 5))
    masks = saliency_masks(net, torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4), 0.3)
    flat = torch.cat([m.flatten() for m in masks])
    assert torch.equal(flat, torch.arange(25) < round(0.3 * 25))


def test_salun_retain_only_first_batch_leaves_weights_until_the_mask_exists(
        tmp_path: Path, checkpoints: tuple[str, str]) -> None:  # noqa: F811
    model = build('SalUn', tmp_path, checkpoints, sparsity=0.2)
    net = model.get_bare_model(model.net_g)
    start = [p.detach().clone() for p in net.parameters()]
    model.feed_data(grouped_batch(5, n_forget=0, n_retain=3))
    model.optimize_parameters(1)
    assert model.method.masks is None
    assert all(torch.equal(p, p0) for p, p0 in zip(net.parameters(), start))  # no update without a mask
    model.feed_data(grouped_batch(6))
    model.optimize_parameters(2)
    masks = model.method.masks
    assert masks is not None and all(m.dtype == torch.bool for m in model.method.state_dict()['masks'])
    moved = [(p.detach() != p0) for p, p0 in zip(net.parameters(), start)]
    assert all(not (d & (m == 0)).any() for d, m in zip(moved, masks))
    assert any(d.any() for d in moved)
