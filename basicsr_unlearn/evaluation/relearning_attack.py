"""Relearning attack: how fast does a model regain the forgotten skill when fine-tuned on a few forgotten pairs?

A model that only *hides* a skill (its outputs on the forgotten type are bad, but the weights still hold it) regains
it after a handful of steps; a model that never had it (the retrained reference) needs many more. The attack
fine-tunes a copy of the model with plain Adam + L1 on ``k`` pairs of the forgotten type (random crops from a fixed
seed, so every model sees the same crops in the same order) and records the forgotten type's held-out PSNR after
each step budget.

Example:
    >>> net = torch.nn.Conv2d(3, 3, 3, padding=1)
    >>> pairs = [(torch.rand(3, 16, 16), torch.rand(3, 16, 16))]
    >>> curve = relearn_curve(net, pairs, lambda n: 20.0, RelearnOptions(steps=(2, 4), patch=8))
    >>> curve, steps_to_reach([2, 4], [19.0, 21.0], target=20.5)
    ([20.0, 20.0], 4)
"""
import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class RelearnOptions:
    """The attack's settings: ``pairs`` (k), cumulative ``steps`` budgets, Adam ``lr``, crop ``seed`` and ``patch``."""

    pairs: int = 4
    steps: tuple[int, ...] = (10, 25, 50)
    lr: float = 2e-4
    seed: int = 0
    patch: int = 48

    def __post_init__(self) -> None:
        if self.pairs < 1:
            raise ValueError(f'relearn.pairs: expected an integer >= 1; got {self.pairs!r}')
        if not self.steps or any(b < 1 for b in self.steps) or list(self.steps) != sorted(set(self.steps)):
            raise ValueError(f'relearn.steps: expected increasing step budgets >= 1, e.g. [10, 25, 50]; got '
                             f'{list(self.steps)}')
        if not self.lr > 0:
            raise ValueError(f'relearn.lr: expected a positive learning rate; got {self.lr!r}')
        if self.patch < 8:
            raise ValueError(f'relearn.patch: expected a crop size >= 8 px; got {self.patch!r}')


def _crop_batch(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]], size: int,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One random ``size`` crop per pair, the same window in LQ and GT: ``(lq, gt)`` of shape (k, 3, size, size)."""
    lqs, gts = [], []
    for lq, gt in pairs:
        top = int(torch.randint(0, lq.shape[-2] - size + 1, (1,), generator=generator))
        left = int(torch.randint(0, lq.shape[-1] - size + 1, (1,), generator=generator))
        lqs.append(lq[:, top:top + size, left:left + size])
        gts.append(gt[:, top:top + size, left:left + size])
    return torch.stack(lqs), torch.stack(gts)


def relearn_curve(net: nn.Module, pairs: Sequence[tuple[torch.Tensor, torch.Tensor]],
                  evaluate_psnr: Callable[[nn.Module], float], options: RelearnOptions,
                  multiple: int = 8) -> list[float]:
    """Fine-tune a copy of ``net`` on ``pairs`` and measure it after each budget of ``options.steps``.

    Args:
        net: the model under attack; left unchanged (a deep copy is trained).
        pairs: ``(lq, gt)`` tensors of shape (3, H, W) in [0, 1], the attacker's pairs of the forgotten type.
        evaluate_psnr: the forgotten type's held-out PSNR of a net (called in eval mode, under ``no_grad``).
        options: the attack's settings; the crop is ``options.patch`` rounded down to ``multiple`` and to the
            smallest image side.
        multiple: the arch's padding multiple (crops are a multiple of it, so no padding is needed in training).

    Returns:
        The held-out PSNR after each budget of ``options.steps`` (cumulative: 10, then 15 more to 25, ...).
    """
    smallest = min(min(lq.shape[-2:]) for lq, _ in pairs)
    size = min(options.patch, smallest) // multiple * multiple
    if size < multiple:
        raise ValueError(f'relearn: the smallest pair is {smallest} px, below the arch multiple {multiple}')
    model = copy.deepcopy(net)
    optimizer = torch.optim.Adam(model.parameters(), lr=options.lr)
    generator = torch.Generator().manual_seed(options.seed)
    curve, done = [], 0
    for budget in options.steps:
        model.train()
        for _ in range(budget - done):
            lq, gt = _crop_batch(pairs, size, generator)
            loss = (model(lq) - gt).abs().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        done = budget
        model.eval()
        with torch.no_grad():
            curve.append(float(evaluate_psnr(model)))
    return curve


def steps_to_reach(budgets: Sequence[int], psnrs: Sequence[float], target: float) -> int | None:
    """The first budget whose PSNR reaches ``target`` (e.g. the original's forgotten-type PSNR), else ``None``."""
    return next((int(b) for b, p in zip(budgets, psnrs) if p >= target), None)
