#!/usr/bin/env bash
# GPU readiness check, at most 5 minutes on a machine with one GPU; prints one table:
#   published-size PromptIR training it/s and peak memory (fp32, bf16 autocast), one unlearning step's cost against
#   a training step, and a 1-GPU torchrun run SIGKILLed after its first checkpoint then resumed with --auto_resume.
# Usage: bench/gpu_check.sh [--dry] [--json FILE]
#   --dry   CPU only (CUDA hidden), tiny PromptIR, a few steps: what tests/test_gpu_check.py runs anywhere.
# Details: bench/gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python
for arg in "$@"; do
  if [ "$arg" = --dry ]; then
    export CUDA_VISIBLE_DEVICES=
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  fi
done
exec timeout 300 "$PYTHON" bench/gpu_check.py "$@"
