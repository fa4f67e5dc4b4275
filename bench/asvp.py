"""ASVP cost, measured side by side: Gram + eigh vs ``torch.linalg.svd`` for the same top-k map, and hook overhead.

Usage: ``python bench/asvp.py [--quick]``. Prints ratios (no timed asserts).
"""
import argparse
import time

# isort: off
import basicsr_unlearn  # noqa: F401  (plugin first)
# isort: on
import torch
from basicsr.archs.edsr_arch import EDSR

from basicsr_unlearn.defenses.asvp import ASVP, scale_top_singular


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


def main() -> dict[str, float]:
    """Print the timings; return the headline ratios (bench/run_all.py collects them)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true')
    args = parser.parse_args()
    repeats = 3 if args.quick else 10
    ratios = {}
    shapes = [(4, 48, 64 * 64), (8 * 48, 64, 64)] if args.quick else [(4, 48, 128 * 128), (8 * 48, 128, 128),
                                                                       (4, 180, 64 * 64)]
    for shape in shapes:
        m = torch.randn(*shape)
        t_gram = best_time(lambda m=m: scale_top_singular(m, 4, 4.0), repeats)
        t_svd = best_time(lambda m=m: svd_top_k(m, 4, 4.0), repeats)
        err = (scale_top_singular(m, 4, 4.0) - svd_top_k(m, 4, 4.0)).abs().max().item()
        print(f'{str(shape):>20}: gram+eigh {t_gram * 1e3:8.1f} ms, svd {t_svd * 1e3:8.1f} ms, '
              f'svd/gram ratio {t_svd / t_gram:6.2f}, max abs diff {err:.1e}')
        ratios[f'ASVP top-k: svd time / gram+eigh time, {shape}'] = t_svd / t_gram
    torch.manual_seed(0)
    net = EDSR(3, 3, num_feat=48, num_block=4, upscale=1, img_range=1.0, rgb_mean=[0.5] * 3).eval()
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        plain = best_time(lambda: net(x), repeats)
        for layout in ('channel_space', 'channel_map'):
            defense = ASVP(['body.1', 'body.3'], k=4, h=4.0, layout=layout).attach(net)
            hooked = best_time(lambda: net(x), repeats)
            defense.remove()
            print(f'hook overhead ({layout}, 2 layers, EDSR 48ch, 2x128px): {hooked / plain:.2f}x the unprotected '
                  f'forward ({plain * 1e3 / 2:.1f} -> {hooked * 1e3 / 2:.1f} ms/image)')
            ratios[f'ASVP hooked / plain forward ({layout})'] = hooked / plain
    return ratios


if __name__ == '__main__':
    main()
