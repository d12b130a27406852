"""On a GPU, sweeps through the numba-cuda kernel agree with the CPU (needs CuPy and a GPU).

Without a GPU, ``test_gpu_kernels.py`` runs the same GPU kernel in numba-cuda's simulator.
"""

from __future__ import annotations

import pandas as pd
import pytest

from qilin.backtest.sweeps import combination_returns, run_sweep
from qilin.data.synthetic import synthetic_market


@pytest.mark.parametrize("strategy, grid", [
    ("ma_cross", "fast=2:10:4 slow=12:40:14 ma=sma,ema"),
    ("rsi", "window=3,14 lower=25,40 upper=60,75"),
    ("bollinger", "window=5,20 k=1.0,2.0 mode=reversion,breakout"),
])
def test_gpu_sweep_equals_cpu_sweep(gpu, strategy, grid):
    panel = synthetic_market(70, 260, seed=4)  # 70 symbols: a partial warp and block
    cpu = run_sweep(panel, strategy, grid, market="cn", backend="cpu")
    dev = run_sweep(panel, strategy, grid, market="cn", backend="gpu", memory_budget=2_000_000)
    assert dev.backend == "gpu" and cpu.backend == "cpu"
    pd.testing.assert_frame_equal(cpu.table, dev.table, rtol=1e-9, atol=1e-12)


def test_gpu_lag_and_us_market(gpu):
    panel = synthetic_market(33, 200, seed=9)
    params = {"fast": 3, "slow": 15, "ma": "ema"}
    a = combination_returns(panel, "ma_cross", params, market="us", lag=2, backend="cpu")
    b = combination_returns(panel, "ma_cross", params, market="us", lag=2, backend="gpu")
    pd.testing.assert_series_equal(a, b, rtol=1e-10, atol=1e-13)
