"""Diagnose the demo's base models: per-type loss curves, val/test PSNR curves, output bias, prompt routing, gradients.

Trains the network of a training YAML exactly as ``AllInOneModel`` (BasicSR's ``SRModel``) does: the YAML's seed,
arch, train data, optimizer, warm-up, scheduler and L1 loss, batches drawn by a shuffled pass over the dataset
(``dataset_enlarge_ratio`` passes per epoch) and loaded in the main process. Every ``--every`` iterations it appends
one JSON line to ``--log``:

- ``loss``: the mean per-sample L1 of each degradation type over the window, and ``count`` (samples seen per type);
- ``val`` / ``test``: RGB PSNR (8-bit outputs, no border crop, as ``evaluate``) per type of the YAML's ``val_*``
  sets and of ``--test`` (``options/_base_/datasets/demo3_test.yml`` blocks), plus ``bias``: mean(output - gt) on
  the test set (a model that dehazes non-hazy inputs darkens them);
- ``prompt``: per type and prompt stage, the mean softmax weights over the prompt components on the test inputs;
- ``grad``: on one fixed train batch per type, the gradient norm of that type's L1 and the cosine between types.

Usage (paths of the YAML relative to the working directory, e.g. a folder holding ``datasets/demo``)::

    python bench/base_diagnosis.py -opt options/train/train_promptir-tiny_demo3_l1_2kit.yml --iters 800 \
        --every 100 --log orig.jsonl [--cfg-options train.optim_g.lr=5e-4 network_g.dim=16] [--save net.pth]
"""
import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

import basicsr_unlearn  # noqa: F401  (plugin first: torchvision alias, registration)
from basicsr_unlearn.archs.promptir_arch import PromptGenBlock
from basicsr_unlearn.config import load_options
from basicsr_unlearn.data.mixed_degradation_dataset import MixedDegradationDataset
from basicsr_unlearn.inference import restore_image

ROOT = Path(__file__).resolve().parents[1]


def eval_sets(blocks: dict, prefix: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{de_name: (lq, gt)}`` stacked ``(N, 3, H, W)`` from the dataset blocks whose key starts with ``prefix``."""
    out = {}
    for key, block in blocks.items():
        if key.startswith(prefix) and not key.endswith('_members'):
            ds = MixedDegradationDataset({**block, 'phase': 'val'})
            items = [ds[i] for i in range(len(ds))]
            out[items[0]['de_name']] = (torch.stack([s['lq'] for s in items]), torch.stack([s['gt'] for s in items]))
    return out


def psnr_8bit(out: torch.Tensor, gt: torch.Tensor) -> float:
    """Mean per-image RGB PSNR of 8-bit-rounded ``out`` against ``gt`` (both ``(N, 3, H, W)`` in [0, 1])."""
    out8, gt8 = (out.clamp(0, 1) * 255).round(), (gt * 255).round()
    mse = ((out8 - gt8) ** 2).mean(dim=(1, 2, 3)).clamp_min(1e-10)
    return float((10 * torch.log10(255.0 ** 2 / mse)).mean())


class PromptTap:
    """Records the softmax weights of every ``PromptGenBlock`` of ``net`` during a forward pass."""

    def __init__(self, net: nn.Module) -> None:
        self.weights: dict[str, torch.Tensor] = {}
        blocks = [(name, m) for name, m in net.named_modules() if isinstance(m, PromptGenBlock)]
        for name, block in blocks:
            block.linear_layer.register_forward_hook(self._hook(name))

    def _hook(self, name: str):
        def hook(_module, _inputs, output):
            self.weights[name] = output.detach().softmax(dim=1).mean(dim=0)
        return hook


@torch.no_grad()
def evaluate_sets(net: nn.Module, sets: dict, tap: PromptTap | None) -> dict:
    """PSNR and output bias per type; prompt weights per type when ``tap`` is given."""
    psnr, bias, prompt = {}, {}, {}
    for name, (lq, gt) in sets.items():
        out = restore_image(net, lq, 8)
        psnr[name] = round(psnr_8bit(out, gt), 3)
        bias[name] = round(float((out.clamp(0, 1) - gt).mean()), 4)
        if tap is not None:
            prompt[name] = {k: [round(float(v), 3) for v in w] for k, w in tap.weights.items()}
    return {'psnr': psnr, 'bias': bias, 'prompt': prompt}


def type_gradients(net: nn.Module, batches: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict:
    """Gradient norm of each type's L1 on its fixed batch, and the pairwise cosines (``a|b``)."""
    params = [p for p in net.parameters() if p.requires_grad]
    grads = {}
    for name, (lq, gt) in batches.items():
        net.zero_grad(set_to_none=True)
        nn.functional.l1_loss(net(lq), gt).backward()
        grads[name] = torch.cat([p.grad.flatten() for p in params])
    net.zero_grad(set_to_none=True)
    names = sorted(grads)
    cos = {f'{a}|{b}': round(float(nn.functional.cosine_similarity(grads[a], grads[b], dim=0)), 3)
           for i, a in enumerate(names) for b in names[i + 1:]}
    return {'norm': {n: round(float(grads[n].norm()), 5) for n in names}, 'cos': cos}


def fixed_batches(ds: MixedDegradationDataset, per_type: int, seed: int) -> dict:
    """``per_type`` train samples of each type (the first records of each source, one seeded crop each)."""
    torch.manual_seed(seed)
    picked = defaultdict(list)
    for index in range(len(ds.records)):
        name = ds.sources[ds.records[index].source]['degradation']
        if len(picked[name]) < per_type:
            picked[name].append(ds[index])
    return {n: (torch.stack([s['lq'] for s in v]), torch.stack([s['gt'] for s in v])) for n, v in picked.items()}


def parse_value(text: str) -> object:
    """A ``--cfg-options`` value: YAML, with ``3e-4`` read as a float (YAML 1.1 reads it as a string).

    Example:
        >>> parse_value('3e-4'), parse_value('[1, 2]'), parse_value('adam')
        (0.0003, [1, 2], 'adam')
    """
    value = yaml.safe_load(text)
    try:
        return float(value) if isinstance(value, str) else value
    except ValueError:
        return value


def update_learning_rate(it: int, optimizer: torch.optim.Optimizer, scheduler, base: float, warmup: int) -> None:
    """BasicSR's ``update_learning_rate`` at iteration ``it`` (1-based): scheduler step, then linear warm-up."""
    if it > 1:
        scheduler.step()
    if it < warmup:
        for group in optimizer.param_groups:
            group['lr'] = base * it / warmup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('-opt', required=True, help='training option YAML')
    parser.add_argument('--test', default=str(ROOT / 'options/_base_/datasets/demo3_test.yml'))
    parser.add_argument('--iters', type=int, default=None, help='default: train.total_iter')
    parser.add_argument('--every', type=int, default=100)
    parser.add_argument('--log', required=True)
    parser.add_argument('--save', default=None, help='write {"params": state_dict} here at the end')
    parser.add_argument('--cfg-options', nargs='*', default=[], help='dotted overrides a.b=v (YAML values)')
    args = parser.parse_args()
    from basicsr.archs import build_network  # after the plugin import (torchvision alias)
    from basicsr.models import lr_scheduler
    overrides = {k: parse_value(v) for k, v in (item.split('=', 1) for item in args.cfg_options)}
    opt = load_options(args.opt, overrides)
    train_opt, data_opt = opt['train'], opt['datasets']['train']
    pixel = train_opt.get('pixel_opt', {}).get('type', 'L1Loss')
    if pixel != 'L1Loss':
        raise ValueError(f"{args.opt}: train.pixel_opt.type: this diagnosis trains with L1 only, got {pixel!r}")
    iters = args.iters or train_opt['total_iter']
    torch.manual_seed(opt.get('manual_seed', 0))
    net = build_network(dict(opt['network_g']))
    ds = MixedDegradationDataset({**data_opt, 'phase': 'train'})
    val = eval_sets(opt['datasets'], 'val')
    test = eval_sets(load_options(args.test)['datasets'], 'test')
    grad_batches = fixed_batches(ds, 8, 1234)
    torch.manual_seed(opt.get('manual_seed', 0))
    optim_opt = dict(train_opt['optim_g'])
    optimizer = getattr(torch.optim, optim_opt.pop('type'))(net.parameters(), **optim_opt)
    sched_opt = dict(train_opt['scheduler'])
    scheduler = getattr(lr_scheduler, sched_opt.pop('type'))(optimizer, **sched_opt)
    base_lr, warmup = optim_opt['lr'], train_opt.get('warmup_iter', -1)
    tap = PromptTap(net)
    batch = data_opt['batch_size_per_gpu']
    order = torch.randperm(len(ds) * data_opt.get('dataset_enlarge_ratio', 1)) % len(ds)
    pos, window, counts = 0, defaultdict(list), defaultdict(int)
    log = open(args.log, 'w')
    start = time.time()
    for it in range(1, iters + 1):
        update_learning_rate(it, optimizer, scheduler, base_lr, warmup)
        if pos + batch > len(order):
            order, pos = torch.randperm(len(order)) % len(ds), 0
        samples = [ds[int(i)] for i in order[pos:pos + batch]]
        pos += batch
        lq, gt = torch.stack([s['lq'] for s in samples]), torch.stack([s['gt'] for s in samples])
        net.train()
        per_sample = (net(lq) - gt).abs().mean(dim=(1, 2, 3))
        optimizer.zero_grad(set_to_none=True)
        per_sample.mean().backward()
        optimizer.step()
        for s, value in zip(samples, per_sample.detach()):
            window[s['de_name']].append(float(value))
            counts[s['de_name']] += 1
        if it % args.every == 0 or it == iters:
            record = {'iter': it, 'lr': optimizer.param_groups[0]['lr'], 'seconds': round(time.time() - start, 1),
                      'loss': {n: round(float(np.mean(v)), 5) for n, v in sorted(window.items())},
                      'count': dict(sorted(counts.items())),
                      'val': evaluate_sets(net, val, None)['psnr'], 'test': evaluate_sets(net, test, tap)}
            if it % (args.every * 4) == 0 or it == iters:
                record['grad'] = type_gradients(net, grad_batches)
            log.write(json.dumps(record) + '\n')
            log.flush()
            window.clear()
    log.close()
    if args.save:
        torch.save({'params': net.state_dict()}, args.save)
    seconds = time.time() - start
    print(f'{iters} iterations in {seconds:.0f} s ({seconds / iters:.3f} s per iteration, evaluations included)')


if __name__ == '__main__':
    main()
