#!/bin/sh
# On a machine with an NVIDIA GPU (make gpu-check): install the `gpu` extra into the project
# venv, run every GPU test on the real device (CuPy paths and the numba-cuda kernels against
# the CPU) and the W1/W2/W4 benchmarks, whose GPU columns run only where a GPU is usable.
# Output goes to the terminal and to gpu-check-<date>.log for benchmarks/RESULTS.md.
set -eu
cd "$(dirname "$0")/.."
BIN=.venv/bin
LOG="gpu-check-$(date +%Y%m%d-%H%M%S).log"
{
  nvidia-smi -L
  $BIN/python -m pip install --quiet -e '.[gpu,dev]'
  $BIN/python -c "from qilin.backend import gpu_available as g, gpu_names as n; import sys; \
print('GPU:', n()) if g() else sys.exit('gpu-check: CuPy cannot use a CUDA device here')"
  $BIN/python -m pytest -q -p no:cacheprovider -rs -k "gpu or kernel" tests
  $BIN/python benchmarks/bench_w1_factors.py
  $BIN/python benchmarks/bench_w2_sweeps.py
  $BIN/python benchmarks/bench_w4_models.py
} 2>&1 | tee "$LOG"
