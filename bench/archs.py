"""Forward+backward time and training activation memory of PromptIR and AdaIR relative to Restormer, same size.

Usage:
    python bench/archs.py            # published sizes, batch 1 at 128 px (about 10 min on a loaded 2-core machine)
    python bench/archs.py --quick    # tiny configs of options/_base_/archs, batch 8 at 64 px (about 20-30 s)

Time: median wall time of ``--iters`` forward+backward passes (L1 loss) after one warm-up, one CPU thread
(``torch.set_num_threads(1)``); the passes of the three archs are interleaved so that load from other processes
on a shared machine shifts all three alike and the ratios stay meaningful.
Memory: bytes of the activations autograd saves for backward, counted with ``torch.autograd.graph.saved_tensors_hooks``
during one forward pass (each storage counted once), plus parameter and gradient bytes. This is the part of peak
training memory that depends on the architecture; allocator slack and optimizer state are not included
(``tracemalloc`` does not see torch's allocations, so it cannot be used). Ratios are taken against Restormer
measured in the same run. Writes the table to stdout and, with ``--json``, the numbers to a file.
"""
import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import yaml

# isort: off
import basicsr_unlearn  # noqa: F401  (torchvision alias + arch registration; must precede basicsr)
# isort: on
from basicsr.archs import build_network

from basicsr_unlearn.evaluation.report import markdown_table

ROOT = Path(__file__).resolve().parents[1]

NAMES = ('Restormer', 'PromptIR', 'AdaIR')


def network_opt(name: str, quick: bool) -> dict:
    """Tiny ``network_g`` from ``options/_base_/archs`` if ``quick``, else the published defaults."""
    if not quick:
        return {'type': name}
    with open(ROOT / 'options' / '_base_' / 'archs' / f'{name.lower()}-tiny.yml') as f:
        return yaml.safe_load(f)['network_g']


def saved_activation_bytes(net: torch.nn.Module, x: torch.Tensor) -> int:
    """Bytes of distinct storages autograd saves for backward during one forward pass of ``net`` on ``x``."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        net(x)
    return sum(storages.values())


def fwd_bwd_pass_ms(net: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> float:
    """Milliseconds of one forward + L1 backward pass."""
    net.zero_grad(set_to_none=True)
    start = time.perf_counter()
    torch.nn.functional.l1_loss(net(x), target).backward()
    return (time.perf_counter() - start) * 1000


def measure(quick: bool, batch: int, size: int, iters: int) -> list[dict]:
    """Params, median fwd+bwd ms and memory of each arch; timed passes are interleaved across the archs, so load
    from other processes drifting during the run affects all of them alike."""
    x = torch.rand(batch, 3, size, size)
    target = torch.rand_like(x)
    nets = {}
    for name in NAMES:
        torch.manual_seed(0)
        nets[name] = build_network(network_opt(name, quick)).train()
    times: dict[str, list[float]] = {name: [] for name in NAMES}
    for i in range(iters + 1):  # pass 0 is the warm-up
        for name, net in nets.items():
            ms = fwd_bwd_pass_ms(net, x, target)
            if i:
                times[name].append(ms)
    results = []
    for name, net in nets.items():
        net.zero_grad(set_to_none=True)
        param_bytes = sum(p.numel() * p.element_size() for p in net.parameters())
        act = saved_activation_bytes(net, x)
        results.append({'arch': name, 'params': sum(p.numel() for p in net.parameters()),
                        'ms': statistics.median(times[name]), 'activation_mb': act / 2**20,
                        'train_mb': (act + 2 * param_bytes) / 2**20})
    return results


def main() -> dict[str, float]:
    """Print the table; return the ratios to Restormer (bench/run_all.py collects them)."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true', help='tiny configs, batch 8 at 64 px')
    parser.add_argument('--batch', type=int, help='batch size (default 8 quick, 1 full)')
    parser.add_argument('--size', type=int, help='square patch size (default 64 quick, 128 full)')
    parser.add_argument('--iters', type=int, default=3, help='timed iterations per arch')
    parser.add_argument('--json', type=Path, help='also write the numbers here')
    args = parser.parse_args()
    batch = args.batch or (8 if args.quick else 1)
    size = args.size or (64 if args.quick else 128)
    torch.set_num_threads(1)

    results = measure(args.quick, batch, size, args.iters)
    base = results[0]
    rows = [[r['arch'], f"{r['params']:,}", r['ms'], r['ms'] / base['ms'], r['activation_mb'], r['train_mb'],
             r['train_mb'] / base['train_mb']] for r in results]
    print(f"{'tiny' if args.quick else 'published'} size, batch {batch} x 3 x {size} x {size}, 1 thread, "
          f'median of {args.iters} forward+backward passes')
    print(markdown_table(['arch', 'params', 'fwd+bwd ms', 'time vs Restormer', 'saved activations MB',
                          'activations+params+grads MB', 'memory vs Restormer'], rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({'batch': batch, 'size': size, 'quick': args.quick, 'results': results},
                                        indent=2))
    ratios = {}
    for r in results[1:]:
        ratios[f"archs: {r['arch']} / Restormer fwd+bwd time"] = r['ms'] / base['ms']
        ratios[f"archs: {r['arch']} / Restormer training memory"] = r['train_mb'] / base['train_mb']
    return ratios


if __name__ == '__main__':
    main()
