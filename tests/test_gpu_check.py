"""bench/gpu_check.sh --dry (CPU only, tiny PromptIR): the one table and its numbers, including a real torchrun run
SIGKILLed after its first checkpoint and resumed with --auto_resume."""
import json
import math
import subprocess
from pathlib import Path

import pytest
from helpers import ROOT, tool_env


@pytest.mark.slow
def test_gpu_check_dry_mode_prints_the_table(tmp_path: Path) -> None:
    out = tmp_path / 'gpu_check.json'
    done = subprocess.run(['bash', str(ROOT / 'bench' / 'gpu_check.sh'), '--dry', '--json', str(out)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=400, env=tool_env())
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results['device'] == 'cpu (dry run)' and results['arch'] == 'tiny PromptIR'
    assert results['batch'] == '8 x 32 px'
    for key in ('it_s_fp32', 'it_s_bf16', 'unlearn_step_ratio'):
        assert math.isfinite(results[key]) and results[key] > 0, key
    assert results['peak_gib_fp32'] is None  # no CUDA memory on the CPU
    assert results['unlearn_method'] == 'GaAdv'
    assert results['resume_ok'] and results['killed_at'] == results['resumed_from'] == 10
    assert results['total_iter'] == 30
    lines = done.stdout.splitlines()
    start = lines.index('| check | result |')
    table = [line for line in lines[start + 2:] if line.startswith('| ')]
    assert len(table) == 5 and lines[start + 2:start + 7] == table, done.stdout  # one contiguous table
    rows = {line[2:-2].split(' | ')[0]: line[2:-2].split(' | ')[1] for line in table}
    assert rows['device'] == 'cpu (dry run)'
    assert rows['train step fp32 (tiny PromptIR, 8 x 32 px)'] == f"{results['it_s_fp32']:.2f} it/s, peak n/a (CPU)"
    assert rows['unlearning step (GaAdv, 4 forget + 4 retain) / train step'] == \
        f"x{results['unlearn_step_ratio']:.2f}"
    assert rows['torchrun 1 process: SIGKILL then --auto_resume'] == \
        'OK: killed after iter 10, resumed from 10, finished 30'
    assert rows['train step bf16 autocast (same batch)'].startswith(f"{results['it_s_bf16']:.2f} it/s")
