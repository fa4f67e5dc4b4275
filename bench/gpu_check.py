"""GPU readiness checks behind ``bench/gpu_check.sh``; prints one table (and ``--json`` writes the numbers).

    python bench/gpu_check.py [--dry] [--json out.json]

1. Published-size PromptIR training step (AllInOneModel, the 3-task recipe's AdamW + L1, batch 8 of 128 px): it/s
   and peak CUDA memory in fp32, and with the recipe's option ``train.amp: {dtype: bf16}`` (autocast of the forward
   pass and loss; skipped where the GPU has no bf16; a CPU model ignores the option, so the dry run times fp32).
2. One unlearning step (UnlearnModel, GaAdv of ``options/unlearn/unlearn_promptir-official_3task_ga-adv_2kit.yml``,
   4 forget + 4 retain samples) against that training step.
3. A 1-GPU ``torchrun`` training run (tiny PromptIR on the tiny demo set, NCCL on GPU) SIGKILLed after its first
   checkpoint, then rerun with ``--auto_resume``: it must resume from a saved iteration and finish.

``--dry`` runs everything on the CPU with the tiny PromptIR, 32-px patches and a few steps (what the tests run).
"""
import argparse
import gc
import json
import os
import signal
import statistics
import subprocess
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
from basicsr_unlearn.data.demo_data import build_demo
from basicsr_unlearn.evaluation.report import markdown_table
from basicsr_unlearn.models.all_in_one_model import AllInOneModel
from basicsr_unlearn.models.unlearn_model import UnlearnModel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tests'))
from helpers import descendants, free_port  # noqa: E402  (the tests' process helpers)

TRAIN_RECIPE = ROOT / 'options' / 'train' / 'train_promptir_3task_l1_120ep.yml'
UNLEARN_RECIPE = ROOT / 'options' / 'unlearn' / 'unlearn_promptir-official_3task_ga-adv_2kit.yml'
TINY_ARCH = ROOT / 'options' / '_base_' / 'archs' / 'promptir-tiny.yml'
DEMO_TRAIN = ROOT / 'options' / 'train' / 'train_promptir-tiny_demo3_l1_2kit.yml'
TORCHRUN = str(Path(sys.executable).with_name('torchrun'))


def arch_overrides(dry: bool) -> dict:
    """``--cfg-options``-style overrides giving the tiny PromptIR in dry mode, none at published size."""
    if not dry:
        return {}
    return {f'network_g.{k}': v for k, v in load_options(str(TINY_ARCH))['network_g'].items()}


def sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_steps(model, batch: dict, steps: int, device: torch.device) -> tuple[float, float | None]:
    """(median seconds per ``feed_data`` + ``optimize_parameters``, peak GiB or None on CPU) after 2 warm-ups."""
    if device.type == 'cuda':
        gc.collect()  # the previously timed model's tensors must not count in this peak
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for it in range(steps + 2):
        sync(device)
        start = time.perf_counter()
        model.feed_data(batch)
        model.optimize_parameters(it + 1)
        sync(device)
        if it >= 2:
            times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == 'cuda' else None
    return statistics.median(times), peak


def step_costs(dry: bool, device: torch.device, tmp: Path) -> dict:
    """Training it/s and peak memory (fp32, bf16 autocast) and the unlearning/training step ratio."""
    size, steps = (32, 2) if dry else (128, 10)
    torch.manual_seed(0)
    gt = torch.rand(1, 8, 3, size, size)  # one group of 4 forget + 4 retain = the recipes' 8 samples per GPU
    lq = (gt + 0.1 * torch.randn_like(gt)).clamp(0, 1)
    is_forget = torch.tensor([[True] * 4 + [False] * 4])
    grouped = {'lq': lq, 'gt': gt, 'is_forget': is_forget, 'de_type': torch.where(is_forget, 4, 1)}
    plain = {'lq': lq.flatten(0, 1), 'gt': gt.flatten(0, 1)}
    num_gpu = 1 if device.type == 'cuda' else 0

    def train_model(name: str, **overrides) -> AllInOneModel:
        train = inprocess_options(load_options(str(TRAIN_RECIPE), {**arch_overrides(dry), **overrides}),
                                  str(tmp / name))
        train['num_gpu'] = num_gpu
        torch.manual_seed(0)
        return AllInOneModel(train)

    results = {'batch': f'{plain["lq"].shape[0]} x {size} px', 'arch': 'tiny PromptIR' if dry else 'PromptIR 35.4M'}
    fp32, results['peak_gib_fp32'] = time_steps(train_model('train'), plain, steps, device)
    results['it_s_fp32'] = 1 / fp32
    if device.type == 'cpu' or torch.cuda.is_bf16_supported():
        bf16, results['peak_gib_bf16'] = time_steps(train_model('train_bf16', **{'train.amp.dtype': 'bf16'}), plain,
                                                    steps, device)
        results['it_s_bf16'] = 1 / bf16
    opt = load_options(str(TRAIN_RECIPE), arch_overrides(dry))

    original = tmp / 'original.pth'
    torch.save({'params': build_network(dict(opt['network_g'])).state_dict()}, original)
    opt = load_options(str(UNLEARN_RECIPE), arch_overrides(dry))
    opt['train'] = {k: v for k, v in opt['train'].items() if k != 'stop'}  # the stop rule acts at validation only
    unlearn = inprocess_options(opt, str(tmp / 'unlearn'), pretrain_network_g=str(original))
    unlearn['num_gpu'] = num_gpu
    model = UnlearnModel(unlearn)
    seconds, _ = time_steps(model, grouped, steps, device)
    results['unlearn_step_ratio'] = seconds / fp32
    results['unlearn_method'] = opt['train']['method']['type']
    return results


def kill_then_resume(dry: bool, tmp: Path) -> dict:
    """1-process torchrun run, SIGKILLed after its first checkpoint, then ``--auto_resume`` to the end."""
    build_demo(tmp / 'datasets' / 'demo', size='tiny')
    total, every = (30, 10) if dry else (300, 50)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='') if dry else None  # dry: CPU (gloo) even on a GPU machine
    cmd = [TORCHRUN, '--nproc_per_node=1', f'--master_port={free_port()}', str(ROOT / 'tools' / 'train.py'),
           '-opt', str(DEMO_TRAIN), '--launcher', 'pytorch', '--cfg-options', 'name=gpu_check_resume',
           f'train.total_iter={total}', f'logger.save_checkpoint_freq={every}', 'val.val_freq=100000',
           'datasets.train.num_worker_per_gpu=0', 'datasets.train.persistent_workers=False',
           'logger.use_tb_logger=False']
    states = tmp / 'experiments' / 'gpu_check_resume' / 'training_states'
    proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not list(states.glob('*.state')) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    for pid in [proc.pid, *descendants(proc.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    killed_at = max((int(p.stem) for p in states.glob('*.state')), default=0)
    resumed = subprocess.run([*cmd, '--auto_resume'], cwd=tmp, env=env, capture_output=True, text=True, timeout=240)
    log = resumed.stdout + resumed.stderr
    marker = 'Resuming training from epoch: '
    resumed_from = int(log.split(marker)[1].split('iter: ')[1].split('.')[0]) if marker in log else None
    finished = (states / f'{total}.state').is_file()
    ok = resumed.returncode == 0 and 0 < killed_at < total and resumed_from == killed_at and finished
    return {'resume_ok': ok, 'killed_at': killed_at, 'resumed_from': resumed_from, 'total_iter': total,
            'resume_error': None if ok else log[-1500:]}


def table(results: dict) -> str:
    """The one table of the check (markdown)."""
    def gib(value: float | None) -> str:
        return 'n/a (CPU)' if value is None else f'{value:.1f} GiB'

    rows = [['device', results['device']],
            [f"train step fp32 ({results['arch']}, {results['batch']})",
             f"{results['it_s_fp32']:.2f} it/s, peak {gib(results['peak_gib_fp32'])}"]]
    if 'it_s_bf16' in results:
        ignored = ' (train.amp ignored on the CPU)' if results['peak_gib_bf16'] is None else ''
        rows.append(['train step bf16 autocast (same batch)', f"{results['it_s_bf16']:.2f} it/s, peak "
                     f"{gib(results['peak_gib_bf16'])}, x{results['it_s_bf16'] / results['it_s_fp32']:.2f} fp32 "
                     f'speed{ignored}'])
    else:
        rows.append(['train step bf16 autocast', 'skipped: no bf16 on this device'])
    rows.append([f"unlearning step ({results['unlearn_method']}, 4 forget + 4 retain) / train step",
                 f"x{results['unlearn_step_ratio']:.2f}"])
    resume = (f"OK: killed after iter {results['killed_at']}, resumed from {results['resumed_from']}, finished "
              f"{results['total_iter']}" if results['resume_ok'] else
              f"FAILED (killed at {results['killed_at']}, resumed from {results['resumed_from']})")
    rows.append(['torchrun 1 process: SIGKILL then --auto_resume', resume])
    return markdown_table(['check', 'result'], rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--dry', action='store_true', help='CPU only, tiny arch, a few steps (the tests run this)')
    parser.add_argument('--json', type=Path, help='also write the numbers here')
    args = parser.parse_args()
    device = torch.device('cuda' if torch.cuda.is_available() and not args.dry else 'cpu')
    if not args.dry and device.type != 'cuda':
        print('error: no CUDA device; run with --dry for the CPU-only check', file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        results = {'device': torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu (dry run)'}
        results.update(step_costs(args.dry, device, tmp))
        results.update(kill_then_resume(args.dry, tmp))
    print(table(results))
    if results['resume_error']:
        print(results['resume_error'], file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + '\n')
    return 0 if results['resume_ok'] else 1


if __name__ == '__main__':
    sys.exit(main())
