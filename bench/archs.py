"""Forward+backward time and training activation memory of PromptIR and AdaIR relative to Restormer, same size.

Usage:
    python bench/archs.py            # published sizes, batch 1 at 128 px (about 10 min on a loaded 2-core machine)
    python bench/archs.py --quick    # tiny configs of options/_base_/archs, batch 8 at 64 px (about 20-30 s)
    python bench/archs.py --vs-reference [PATH]   # our PromptIR training step vs the official one (see below)

``--vs-reference``: our published-size PromptIR against the official implementation on the same input and the same
weights (forward + L1 backward, interleaved). PATH (or env ``PROMPTIR_REFERENCE``) is a checkout of
github.com/va1shn9v/PromptIR whose ``net/model.py`` is imported (it needs ``einops``). Without it, or if it cannot
be imported, the comparison is against our net with its LayerNorm and attention replaced by a pure-PyTorch
re-statement of the reference's (explicit mean/variance over ``b (h w) c``, the reference's reshape/normalise/
softmax order); the rest of the network is shared, so that variant measures only those two blocks.

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
import importlib.util
import json
import os
import statistics
import time
from pathlib import Path

import torch
import yaml

# isort: off
import basicsr_unlearn  # noqa: F401  (torchvision alias + arch registration; must precede basicsr)
# isort: on
from basicsr.archs import build_network

from basicsr_unlearn.archs.restormer_blocks import Attention, LayerNorm
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


class ReferenceLayerNorm(torch.nn.Module):
    """The reference's WithBias LayerNorm: to (B, HW, C), explicit mean and variance, back to (B, C, H, W)."""

    def __init__(self, norm: LayerNorm) -> None:
        super().__init__()
        self.weight, self.bias = norm.body.weight, norm.body.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = x.flatten(2).transpose(1, 2)
        mu = y.mean(-1, keepdim=True)
        sigma = y.var(-1, keepdim=True, unbiased=False)
        y = (y - mu) / torch.sqrt(sigma + 1e-5) * self.weight + self.bias
        return y.transpose(1, 2).reshape(b, c, h, w)


class ReferenceAttention(torch.nn.Module):
    """The reference's MDTA forward (same convs and temperature as ``attn``)."""

    def __init__(self, attn: Attention) -> None:
        super().__init__()
        self.attn = attn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.attn
        b, c, h, w = x.shape
        q, k, v = a.qkv_dwconv(a.qkv(x)).chunk(3, dim=1)
        q, k, v = (t.reshape(b, a.num_heads, c // a.num_heads, h * w) for t in (q, k, v))
        q = torch.nn.functional.normalize(q, dim=-1)
        k = torch.nn.functional.normalize(k, dim=-1)
        attn = ((q @ k.transpose(-2, -1)) * a.temperature).softmax(dim=-1)
        return a.project_out((attn @ v).reshape(b, c, h, w))


def restated_reference(net: torch.nn.Module) -> torch.nn.Module:
    """``net`` with every TransformerBlock's LayerNorms and attention replaced by the reference re-statement."""
    for module in list(net.modules()):
        for name in ('norm1', 'norm2'):
            if isinstance(getattr(module, name, None), LayerNorm):
                setattr(module, name, ReferenceLayerNorm(getattr(module, name)))
        if isinstance(getattr(module, 'attn', None), Attention):
            module.attn = ReferenceAttention(module.attn)
    return net


def official_promptir(path: Path, ours: torch.nn.Module) -> torch.nn.Module:
    """The reference ``PromptIR(decoder=True)`` from ``path/net/model.py`` holding ``ours``'s weights."""
    spec = importlib.util.spec_from_file_location('reference_promptir', path / 'net' / 'model.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ref = module.PromptIR(decoder=True)
    missing, unexpected = ref.load_state_dict(ours.state_dict(), strict=False)
    never_used = ('chnl_reduce', 'reduce_noise_channel_')
    if unexpected or any(not k.startswith(never_used) for k in missing):
        raise ValueError(f'{path}: reference keys differ from ours beyond its unused convs: {missing[:3]} '
                         f'{unexpected[:3]}')
    return ref


def versus_reference(path: Path | None, batch: int, size: int, iters: int) -> dict[str, float]:
    """Interleaved forward+backward ms of our published PromptIR and the reference (or its re-statement)."""
    torch.manual_seed(0)
    ours = build_network({'type': 'PromptIR'}).train()
    what = 'restated'
    reference = None
    if path is not None:
        try:
            reference, what = official_promptir(path, ours).train(), f'official ({path}/net/model.py)'
        except ImportError as err:
            print(f'cannot import the reference ({err}); comparing against the pure-PyTorch re-statement')
    if reference is None:
        reference = build_network({'type': 'PromptIR'})
        reference.load_state_dict(ours.state_dict())
        reference = restated_reference(reference).train()  # shares the loaded parameters
        what = 'restated LayerNorm + attention (pure PyTorch), rest shared'
    x = torch.rand(batch, 3, size, size)
    target = torch.rand_like(x)
    with torch.no_grad():
        max_diff = float((ours(x) - reference(x)).abs().max())
    times = {'ours': [], 'reference': []}
    for i in range(iters + 1):  # pass 0 is the warm-up
        for name, net in (('ours', ours), ('reference', reference)):
            ms = fwd_bwd_pass_ms(net, x, target)
            if i:
                times[name].append(ms)
    ours_ms, ref_ms = statistics.median(times['ours']), statistics.median(times['reference'])
    print(f'PromptIR (published size), batch {batch} x 3 x {size} x {size}, 1 thread, median of {iters} '
          f'forward+backward passes; reference = {what}; max |output difference| {max_diff:.2e}')
    print(markdown_table(['implementation', 'fwd+bwd ms', 'time vs reference'],
                         [['ours', ours_ms, ours_ms / ref_ms], ['reference', ref_ms, 1.0]]))
    return {'archs: our PromptIR / reference fwd+bwd time': ours_ms / ref_ms}


def main() -> dict[str, float]:
    """Print the table; return the ratios to Restormer (bench/run_all.py collects them)."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true', help='tiny configs, batch 8 at 64 px')
    parser.add_argument('--batch', type=int, help='batch size (default 8 quick, 1 full)')
    parser.add_argument('--size', type=int, help='square patch size (default 64 quick, 128 full)')
    parser.add_argument('--iters', type=int, default=3, help='timed iterations per arch')
    parser.add_argument('--json', type=Path, help='also write the numbers here')
    parser.add_argument('--vs-reference', nargs='?', const=os.environ.get('PROMPTIR_REFERENCE', ''), default=None,
                        metavar='PATH', help='our PromptIR vs the official one (PATH or env PROMPTIR_REFERENCE; '
                                             'none: vs the re-statement of its LayerNorm/attention)')
    args = parser.parse_args()
    batch = args.batch or (8 if args.quick else 1)
    size = args.size or (64 if args.quick else 128)
    torch.set_num_threads(1)
    if args.vs_reference is not None:
        return versus_reference(Path(args.vs_reference) if args.vs_reference else None, batch, size, args.iters)

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
