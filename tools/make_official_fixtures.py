"""Generate ``tests/fixtures/official/``: tiny reference PromptIR / AdaIR / Restormer models, their random weights in
the official file layouts, inputs and the reference code's outputs. The reference code is never committed.

The fixtures let ``tests/test_convert_checkpoint.py`` prove that ``tools/convert_checkpoint.py`` plus our archs
reproduce the official implementations, without shipping anyone's code. Reference commits used for the committed
fixtures (``net/model.py`` / ``basicsr/models/archs/restormer_arch.py``; their SHA-256 is stored in each fixture):

- PromptIR: https://github.com/va1shn9v/PromptIR @ 106159ab809101f2e25b6714195cd6fa9a938d36
- AdaIR: https://github.com/c-yn/AdaIR @ ccb8b98e49614e07badd0641e5163fa7635c2f02
- Restormer: https://github.com/swz30/Restormer @ df766d5521afd21cce56e24159f300b30ebf3fb0

Usage (the reference code needs ``einops``; use a throwaway environment, not the project's)::

    git clone https://github.com/va1shn9v/PromptIR /tmp/ref/promptir   # likewise c-yn/AdaIR, swz30/Restormer
    python tools/make_official_fixtures.py --promptir /tmp/ref/promptir --adair /tmp/ref/adair \
        --restormer /tmp/ref/restormer --out tests/fixtures/official

Tiny configs: AdaIR and Restormer take their widths as arguments (AdaIR dim 8, Restormer dim 4, one block per
level). The reference PromptIR hard-codes its prompt and interaction widths for dim 48, so its class body is loaded
with every integer literal >= 16 divided by 8 (64 -> 8, 320 -> 40, 512 -> 64, prompt sizes 64/32/16 -> 8/4/2, ...)
and built with dim 6: the published model at 1/8 width, with the reference's forward untouched.

Weights: the reference's own initialisation with seed 0, then every tensor perturbed (identity-initialised ones such
as LayerNorm weights, attention temperatures and AdaIR's ``para1 = 0`` included, so a swapped or skipped key changes
the output) and rounded to float16, the dtype they are stored in (halves the size; the converter casts to the arch's
float32, which is exact). Outputs are computed and stored in float64, so the comparison measures the implementations,
not one CPU's float32 rounding (a 512-px float32 forward differs by ~1e-5 from its float64 value). AdaIR's
``fre3.rate_conv`` is sign-adjusted so that on the 512-px case the official integer-cast mask is non-empty
(``int((256 // 128) * r) = 1`` needs ``r >= 0.5``); on the small case it is empty.

Files (each well under 1 MB): ``<arch>_tiny.ckpt`` (Lightning layout: ``{'state_dict': {'net.<key>': ...}, 'epoch',
'global_step', 'loops', 'callbacks', 'optimizer_states', 'lr_schedulers', ...}`` as the official PromptIR/AdaIR
releases; Restormer: ``<arch>_tiny.pth`` holding ``{'params': ...}``) and ``<arch>_tiny_io.pt``: ``{'network_g':
our arch options, 'reference': {'file', 'sha256'}, 'cases': [{'name', 'lq' (B, 3, h, w) uint8, 'upscale' (the
input is ``lq / 255`` repeated ``upscale`` times along H and W), 'pool', 'out_pool' (the output average-pooled by
``pool``), 'window' (top, left, height, width), 'out_window' (that window of the output)}]}``; AdaIR's also holds
``'fre3_case'``: the same views of ``fre3(image, feat)`` alone in float64 at 256 px, ``feat`` (1, 16, 32, 32)
repeated ``feat_upscale`` times (the non-empty official mask, exactly).
"""
import argparse
import hashlib
import importlib.util
import re
import types
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

SEED = 0
PROMPTIR_SCALE = 8  # the tiny reference PromptIR is the published one at 1/8 width


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_module(path: Path, name: str, source: str | None = None) -> types.ModuleType:
    """Import ``path`` as module ``name`` (from ``source`` instead of the file's text when given)."""
    if source is None:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    module = types.ModuleType(name)
    exec(compile(source, str(path), 'exec'), module.__dict__)  # noqa: S102  (the user's own copy of the reference)
    return module


def scaled_promptir_source(path: Path) -> str:
    """The reference model file with every integer literal >= 16 in ``PromptIR.__init__`` divided by 8."""
    src = path.read_text()
    start = src.index('class PromptIR(nn.Module)')
    end = src.index('def forward', start)

    def scale(match: re.Match) -> str:
        value = int(match.group(1))
        if value < 16:
            return match.group(1)
        if value % PROMPTIR_SCALE:
            raise ValueError(f'{path}: literal {value} in PromptIR.__init__ is not divisible by {PROMPTIR_SCALE}')
        return str(value // PROMPTIR_SCALE)

    body = re.sub(r'(?<![\w.])(\d+)(?![\w.])', scale, src[start:end])
    return src[:start] + body + src[end:]


def perturb_and_round(net: nn.Module, seed: int) -> None:
    """Move every parameter off its initialisation (constants included), then round it to float16 precision."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith('para1'):  # AdaIR's block gate, 0 at init: make the frequency blocks count fully
                p.copy_(1 + 0.1 * noise)
            elif p.numel() > 1 and float(p.std()) > 0:
                p.add_(0.5 * float(p.std()) * noise)
            else:
                p.add_(0.1 * noise)
            p.copy_(p.half().float())


def lightning_checkpoint(net: nn.Module) -> dict:
    """The official layout: the arch under ``net.`` in ``state_dict``, plus Lightning's bookkeeping (placeholders)."""
    return {
        'epoch': 0, 'global_step': 0, 'pytorch-lightning_version': 'fixture',
        'state_dict': OrderedDict((f'net.{k}', v.half()) for k, v in net.state_dict().items()),
        'loops': {'fit_loop': {'state_dict': {}, 'epoch_progress': {'total': {'ready': 0, 'completed': 0}}}},
        'callbacks': {"ModelCheckpoint{'monitor': None, 'mode': 'min', 'every_n_train_steps': 0, 'every_n_epochs': 1}":
                      {'monitor': None, 'best_model_score': None, 'dirpath': 'train_ckpt', 'best_k_models': {},
                       'kth_value': torch.tensor(float('inf'))}},
        'optimizer_states': [],
        'lr_schedulers': [{'warmup_epochs': 15, 'max_epochs': 150, 'warmup_start_lr': 0.0, 'eta_min': 0.0,
                           'base_lrs': [2e-4], 'last_epoch': 0, '_last_lr': [0.0]}],
    }


def make_case(net: nn.Module, name: str, lq: torch.Tensor, upscale: int, pool: int,
              window: tuple[int, int, int, int]) -> dict:
    """Run the reference in float64 on ``lq / 255`` (repeated ``upscale`` times along H and W); keep two views."""
    net = net.double()
    x = (lq.double() / 255).repeat_interleave(upscale, -2).repeat_interleave(upscale, -1)
    with torch.no_grad():
        out = net(x)
    top, left, h, w = window
    return {'name': name, 'lq': lq, 'upscale': upscale, 'pool': pool,
            'out_pool': F.avg_pool2d(out, pool) if pool > 1 else out.clone(),
            'window': window, 'out_window': out[..., top:top + h, left:left + w].clone()}


def small_input(seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (2, 3, 48, 40), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def make_promptir(root: Path) -> tuple[nn.Module, dict, dict]:
    path = root / 'net' / 'model.py'
    ref = load_module(path, 'reference_promptir', scaled_promptir_source(path))
    torch.manual_seed(SEED)
    net = ref.PromptIR(dim=6, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 2, 4, 8],
                       decoder=True).eval()
    perturb_and_round(net, SEED)
    ours = {'type': 'PromptIR', 'dim': 6, 'num_blocks': [1, 1, 1, 1], 'num_refinement_blocks': 1,
            'heads': [1, 2, 4, 8], 'decoder': True, 'prompt_dims': [8, 16, 40], 'prompt_sizes': [8, 4, 2],
            'prompt_len': 5}
    cases = [make_case(net, 'small', small_input(1), 1, 1, (8, 8, 16, 16))]
    return net, ours, {'file': 'net/model.py', 'sha256': sha256(path), 'cases': cases}


def make_adair(root: Path) -> tuple[nn.Module, dict, dict]:
    path = root / 'net' / 'model.py'
    ref = load_module(path, 'reference_adair')
    torch.manual_seed(SEED)
    net = ref.AdaIR(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 2, 4, 8],
                    decoder=True).eval()
    perturb_and_round(net, SEED)
    big = torch.randint(0, 256, (1, 3, 64, 64), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    x = (big.float() / 255).repeat_interleave(8, -2).repeat_interleave(8, -1)
    with torch.no_grad():  # fre3 runs at 256 px on this input: make both of its ratios >= 0.5
        guide = net.fre3.conv1(F.interpolate(x, (256, 256), mode='bilinear'))
        logits = net.fre3.rate_conv(F.adaptive_avg_pool2d(guide, 1)).flatten()
        last = net.fre3.rate_conv[2].weight
        last.mul_(torch.where(logits < 0, -1.0, 1.0)[:, None, None, None])
    ours = {'type': 'AdaIR', 'dim': 8, 'num_blocks': [1, 1, 1, 1], 'num_refinement_blocks': 1,
            'heads': [1, 2, 4, 8], 'decoder': True, 'fre_mask': 'reference'}
    cases = [make_case(net, 'small', small_input(1), 1, 1, (8, 8, 16, 16)),
             make_case(net, 'big_nonempty_mask', big, 8, 8, (232, 232, 48, 48))]
    feat = torch.randn(1, 16, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():  # fre3 alone at 256 px (float64 is too slow for the whole net at 512 px)
        out = net.fre3(x.double(), feat.double().repeat_interleave(8, -2).repeat_interleave(8, -1))
    fre3 = {'name': 'fre3_nonempty_mask', 'lq': big, 'upscale': 8, 'feat': feat, 'feat_upscale': 8, 'pool': 16,
            'out_pool': F.avg_pool2d(out, 16), 'window': (120, 120, 16, 16),
            'out_window': out[..., 120:136, 120:136].clone()}
    return net, ours, {'file': 'net/model.py', 'sha256': sha256(path), 'cases': cases, 'fre3_case': fre3}


def make_restormer(root: Path) -> tuple[nn.Module, dict, dict]:
    rel = 'basicsr/models/archs/restormer_arch.py'
    ref = load_module(root / rel, 'reference_restormer')
    torch.manual_seed(SEED)
    net = ref.Restormer(dim=4, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 2, 4, 4]).eval()
    perturb_and_round(net, SEED)
    ours = {'type': 'Restormer', 'dim': 4, 'num_blocks': [1, 1, 1, 1], 'num_refinement_blocks': 1,
            'heads': [1, 2, 4, 4]}
    cases = [make_case(net, 'small', small_input(1), 1, 1, (8, 8, 16, 16))]
    return net, ours, {'file': rel, 'sha256': sha256(root / rel), 'cases': cases}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--promptir', type=Path, help='checkout of github.com/va1shn9v/PromptIR')
    parser.add_argument('--adair', type=Path, help='checkout of github.com/c-yn/AdaIR')
    parser.add_argument('--restormer', type=Path, help='checkout of github.com/swz30/Restormer')
    parser.add_argument('--out', type=Path, default=Path('tests/fixtures/official'))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    for arch, root, make in (('promptir', args.promptir, make_promptir), ('adair', args.adair, make_adair),
                             ('restormer', args.restormer, make_restormer)):
        if root is None:
            continue
        net, ours, info = make(root)
        if arch == 'restormer':
            weights, weights_path = {'params': {k: v.half() for k, v in net.state_dict().items()}}, 'restormer_tiny.pth'
        else:
            weights, weights_path = lightning_checkpoint(net), f'{arch}_tiny.ckpt'
        torch.save(weights, args.out / weights_path)
        extra = {key: info.pop(key) for key in ('cases', 'fre3_case') if key in info}
        torch.save({'network_g': ours, 'reference': info, **extra}, args.out / f'{arch}_tiny_io.pt')
        sizes = ', '.join(f'{p.name} {p.stat().st_size / 1e3:.0f} kB' for p in
                          (args.out / weights_path, args.out / f'{arch}_tiny_io.pt'))
        print(f'{arch}: {sum(p.numel() for p in net.parameters()):,} reference parameters; {sizes}')


if __name__ == '__main__':
    main()
