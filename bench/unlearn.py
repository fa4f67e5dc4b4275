"""Cost of one unlearning iteration of each method relative to one plain training iteration (same arch, same batch).

    python bench/unlearn.py --quick      # tiny PromptIR, 32-px patches, few repeats

Each demo method's ``train`` block (``train.method``) and batch layout come from its YAML in ``options/unlearn/``; the
stop criterion is left out (it runs only at validation) and the "original" is a random network saved as a
checkpoint (cost does not depend on the weights). Ratios are measured side by side in this run.
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

# isort: off
import basicsr_unlearn  # noqa: F401  (torchvision alias + registration, before basicsr)
# isort: on
import torch
from basicsr.archs import build_network

from basicsr_unlearn.config import inprocess_options, load_options
from basicsr_unlearn.models.all_in_one_model import AllInOneModel
from basicsr_unlearn.models.unlearn_model import UnlearnModel

ROOT = Path(__file__).resolve().parents[1]


def grouped(groups: int, n_f: int, n_r: int, size: int) -> dict:
    n = n_f + n_r
    gt = torch.rand(groups, n, 3, size, size)
    is_forget = torch.tensor([[True] * n_f + [False] * n_r] * groups)
    return {'lq': (gt + 0.1 * torch.randn_like(gt)).clamp(0, 1), 'gt': gt, 'is_forget': is_forget,
            'de_type': torch.where(is_forget, 4, 3)}


def time_steps(model, batch: dict, repeats: int) -> float:
    """Median seconds of ``feed_data`` + ``optimize_parameters``, after one warm-up step."""
    times = []
    for it in range(repeats + 1):
        start = time.perf_counter()
        model.feed_data(batch)
        model.optimize_parameters(it + 1)
        if it:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> dict[str, float]:
    """Print the step times; return the ratios (bench/run_all.py collects them)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--quick', action='store_true', help='32-px patches, 3 repeats')
    args = parser.parse_args()
    size, repeats = (32, 3) if args.quick else (64, 10)
    torch.manual_seed(0)
    files = sorted((ROOT / 'options' / 'unlearn').glob('unlearn_promptir-tiny_demo3_*.yml'))  # one arch, one data
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        base = load_options(str(files[0]))
        net = build_network(dict(base['network_g']))
        original, adapted = tmp / 'original.pth', tmp / 'adapted.pth'
        torch.save({'params': net.state_dict()}, original)
        torch.save({'params': {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v
                               for k, v in net.state_dict().items()}}, adapted)
        paths = {'pretrain_network_g': str(original), 'pretrain_network_adapted': str(adapted)}
        rows = []
        plain_cache: dict[int, float] = {}
        for file in files:
            opt = load_options(str(file))
            if opt['train'].get('total_iter', 1) == 0 or 'oracle' in file.stem:  # no steps / same steps as another
                continue
            group = opt['datasets']['train']['role_group']
            groups = opt['datasets']['train']['batch_size_per_gpu']
            batch = grouped(groups, group.get('forget', 0), group.get('retain', 0), size)
            n = batch['lq'].shape[0] * batch['lq'].shape[1]
            if n not in plain_cache:
                plain_train = {'optim_g': {'type': 'Adam', 'lr': 1e-4},
                               'scheduler': {'type': 'MultiStepRestartLR', 'milestones': [10 ** 6]}}
                plain = AllInOneModel(inprocess_options({**opt, 'train': plain_train}, str(tmp / f'plain{n}'), **paths))
                plain_batch = {'lq': batch['lq'].flatten(0, 1), 'gt': batch['gt'].flatten(0, 1)}
                plain_cache[n] = time_steps(plain, plain_batch, repeats)
            train = {k: v for k, v in opt['train'].items() if k != 'stop'}
            model = UnlearnModel(inprocess_options({**opt, 'train': train}, str(tmp / file.stem), **paths))
            seconds = time_steps(model, batch, repeats)
            rows.append((file.stem.split('_')[3], n, seconds, seconds / plain_cache[n]))
    print(f'patch {size} px, median of {repeats} steps; ratio = unlearning step / plain L1 step on the same samples')
    print(f"{'method':<22}{'samples':>8}{'step s':>10}{'ratio':>8}")
    for method, n, seconds, ratio in rows:
        print(f'{method:<22}{n:>8}{seconds:>10.4f}{ratio:>8.2f}')
    sys.stdout.flush()
    return {f'unlearn: {method} step / plain L1 step': ratio for method, _, _, ratio in rows}


if __name__ == '__main__':
    main()
