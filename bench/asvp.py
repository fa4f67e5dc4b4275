"""ASVP cost, measured side by side: Gram + eigh vs ``torch.linalg.svd`` for the same top-k map, and the hook
overhead on the published-size PromptIR (dim 48, 35.4M parameters) protected at ``decoder_level1`` (96 channels at
full resolution), one CPU thread.

Usage: ``python bench/asvp.py [--quick] [--size 256] [--rounds 1]`` (quick: 128 px). Prints per-image times and
ratios to the unprotected forward (no timed asserts). Every round runs each configuration once, interleaved, so load
from other processes hits all alike; the best round counts. Two readings per configuration: the whole forward
(noisy at a few %, as a forward takes seconds) and ``1 + hook work / plain forward``, the hook work timed directly on
the same tap (precise). ``exposed`` is what the protected model costs when nothing reads the tap (the hooks keep a
reference only); ``exposed+read`` also reads the perturbed tap once, what a feature API pays per query.
"""
import argparse
import time
from pathlib import Path

# isort: off
import basicsr_unlearn  # noqa: F401  (plugin first)
# isort: on
import torch

from basicsr_unlearn.archs.promptir_arch import PromptIR
from basicsr_unlearn.config import load_options
from basicsr_unlearn.defenses.asvp import ASVP, scale_top_singular
from basicsr_unlearn.evaluation.report import markdown_table

SHIPPED_YML = Path(__file__).resolve().parents[1] / 'options/_base_/asvp/asvp_promptir-tiny_exposed.yml'
SHIPPED = load_options(str(SHIPPED_YML))['asvp']  # the block measured: the shipped default
TARGET = SHIPPED['targets'][0]
CONFIGS = [(layout, mode) for layout in ('channel_space', 'channel_map') for mode in ('exposed', 'exposed+read',
                                                                                         'inline')]


def best_time(fn, repeats: int) -> float:
    fn()
    best = float('inf')
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def svd_top_k(m: torch.Tensor, k: int, h: float) -> torch.Tensor:
    """The plain alternative: full SVD in float64, scale the top-k singular values, rebuild."""
    u, s, vh = torch.linalg.svd(m.double(), full_matrices=False)
    s = s.clone()
    s[..., :k] *= h
    return ((u * s[..., None, :]) @ vh).to(m.dtype)


def gram_vs_svd(quick: bool) -> dict[str, float]:
    """Time the Gram + eigh map against the SVD map on typical feature shapes."""
    repeats = 3 if quick else 10
    ratios = {}
    shapes = [(4, 48, 64 * 64), (8 * 48, 64, 64)] if quick else [(4, 48, 128 * 128), (8 * 48, 128, 128),
                                                                 (4, 180, 64 * 64)]
    for shape in shapes:
        m = torch.randn(*shape)
        t_gram = best_time(lambda m=m: scale_top_singular(m, 4, 4.0), repeats)
        t_svd = best_time(lambda m=m: svd_top_k(m, 4, 4.0), repeats)
        err = (scale_top_singular(m, 4, 4.0) - svd_top_k(m, 4, 4.0)).abs().max().item()
        print(f'{str(shape):>20}: gram+eigh {t_gram * 1e3:8.1f} ms, svd {t_svd * 1e3:8.1f} ms, '
              f'svd/gram ratio {t_svd / t_gram:6.2f}, max abs diff {err:.1e}')
        ratios[f'ASVP top-k: svd time / gram+eigh time, {shape}'] = t_svd / t_gram
    return ratios


def protected_forward(net: torch.nn.Module, x: torch.Tensor, layout: str, mode: str) -> tuple[float, float]:
    """Seconds of one forward of ``net`` under ASVP (``layout``, ``mode``), and of the hook work alone."""
    defense = ASVP([TARGET], k=SHIPPED['k'], h=SHIPPED['h'], layout=layout,
                   mode=mode.removesuffix('+read')).attach(net)
    tap = {}
    handle = getattr(net, TARGET).register_forward_hook(lambda m, a, o: tap.update(o=o))
    start = time.perf_counter()
    net(x)
    if mode == 'exposed+read':
        defense.exposed_features[TARGET]
    total = time.perf_counter() - start
    handle.remove()
    defense.remove()
    start = time.perf_counter()
    if mode != 'exposed':
        defense.perturb(tap['o'], TARGET)
    return total, time.perf_counter() - start


def main() -> dict[str, float]:
    """Print the timings and the overhead table; return the headline ratios (bench/run_all.py collects them)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='fewer repeats, 128-px input')
    parser.add_argument('--size', type=int, help='input size in px (default 256, quick 128)')
    parser.add_argument('--rounds', type=int, default=1, help='interleaved rounds (best counts)')
    args = parser.parse_args()
    torch.set_num_threads(1)
    ratios = gram_vs_svd(args.quick)
    size = args.size or (128 if args.quick else 256)
    torch.manual_seed(0)
    net = PromptIR().eval()
    x = torch.rand(1, 3, size, size)
    plain, whole, hook = float('inf'), dict.fromkeys(CONFIGS, float('inf')), dict.fromkeys(CONFIGS, float('inf'))
    with torch.no_grad():
        net(x)  # warm-up
        for _ in range(args.rounds):
            start = time.perf_counter()
            net(x)
            plain = min(plain, time.perf_counter() - start)
            for config in CONFIGS:
                total, work = protected_forward(net, x, *config)
                whole[config], hook[config] = min(whole[config], total), min(hook[config], work)
    rows = []
    for (layout, mode) in CONFIGS:
        rows.append([layout, mode, f'{whole[layout, mode]:.2f}', f'{whole[layout, mode] / plain:.3f}',
                     f'{hook[layout, mode] * 1e3:.0f}', f'{1 + hook[layout, mode] / plain:.3f}'])
        ratios[f'ASVP {layout} {mode} / plain forward (PromptIR {size}px)'] = 1 + hook[layout, mode] / plain
    print(f'\nPromptIR (published size, {sum(p.numel() for p in net.parameters()) / 1e6:.1f}M params), {size}x{size}, '
          f"one thread, ASVP k{SHIPPED['k']} h{SHIPPED['h']:g} at {TARGET};"
          f' unprotected forward {plain:.2f} s/image, best of {args.rounds} '
          'interleaved round(s)\n')
    print(markdown_table(['layout', 'mode', 'forward s/img', 'x plain (whole)', 'hook ms/img',
                          'x plain (1 + hook/plain)'], rows))
    return ratios


if __name__ == '__main__':
    main()
