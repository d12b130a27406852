"""The fused CuPy sweep kernel agrees with the fused numba kernel (needs a GPU)."""

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


def test_cuda_source_compiles_with_nvcc(tmp_path):
    """Without a GPU, at least the kernel source must compile (nvcc, device code only)."""
    import shutil
    import subprocess

    from qilin.backtest import sweep_kernels_gpu as kg

    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not installed")
    src = tmp_path / "sweep.cu"
    src.write_text(kg._SOURCE)
    out = subprocess.run([nvcc, "-arch=sm_80", "--fmad=false", "-c", str(src), "-o",
                          str(tmp_path / "sweep.o")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "warning" not in out.stderr.lower(), out.stderr


HOST_SHIM = r"""
#include <math.h>
#define WARP_SUM(x)
#define LANE_ZERO 1
#define __global__
#define __restrict__ __restrict
struct qilin_dim3 { unsigned x, y, z; };
static qilin_dim3 blockIdx, threadIdx, blockDim;
static double atomicAdd(double* a, double v) { double o = *a; *a += v; return o; }
extern "C" void qilin_set_ids(unsigned bx, unsigned by, unsigned tx, unsigned bdx) {
    blockIdx.x = bx; blockIdx.y = by; threadIdx.x = tx; blockDim.x = bdx;
}
"""


def test_cuda_kernel_logic_on_host_equals_cpu_kernel(tmp_path):
    """The CUDA source compiled for the host (warp sums shimmed away, each thread adds its
    own column) and run thread by thread over the grid equals the numba kernel."""
    import ctypes
    import shutil
    import subprocess

    import numpy as np

    from qilin.backtest import sweep_kernels_cpu as kc
    from qilin.backtest import sweep_kernels_gpu as kg
    from qilin.backtest.strategies import compute_series, get_strategy
    from qilin.backtest.sweeps import ParameterGrid, _rule_arrays, prepare_market

    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    src = tmp_path / "host.cpp"
    src.write_text(HOST_SHIM + kg._SOURCE.replace("nan(\"\")", "NAN"))
    lib_path = tmp_path / "host.so"
    out = subprocess.run([cxx, "-O1", "-ffp-contract=off", "-shared", "-fPIC", str(src), "-o",
                          str(lib_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lib = ctypes.CDLL(str(lib_path))

    import pandas as pd

    from qilin.data.panel import Panel

    synthetic = synthetic_market(37, 150, seed=12)
    # extremes: prices 1e-10 and 1e12 (beyond float precision / unaffordable), zero volume
    t = np.arange(150)[:, None]
    close = np.array([1e-10, 1e12, 10.0, 25.0]) * (1.0 + 0.05 * np.sin(t / 3.0 + np.arange(4)))
    volume = np.full(close.shape, 1e4)
    volume[20:60, 2:] = 0.0
    extreme = Panel.from_arrays({"close": close, "volume": volume},
                                pd.bdate_range("2021-01-04", periods=150),
                                ["600000.SH", "000001.SZ", "600519.SH", "300750.SZ"])
    for panel, strategy, grid, market, lag, cash in (
            (synthetic, "ma_cross", "fast=2,4 slow=8,20 ma=sma,ema", "cn", 0, 1e6),
            (synthetic, "bollinger", "window=5,12 k=1.0,2.0 mode=reversion,breakout", "us", 1, 1e6),
            (extreme, "ma_cross", "fast=2,3 slow=5,9", "cn", 0, 1e6),
            (extreme, "ma_cross", "fast=2,3 slow=5,9", "us", 1, 1e18)):
        m = prepare_market(panel, market)
        tpl = get_strategy(strategy)
        combos = ParameterGrid(grid).combinations(tpl)
        keys, idx, coef = _rule_arrays(tpl, combos)
        N, T = m.shape
        S = np.stack([compute_series(k, m.signal_px) for k in keys] + [np.zeros((N, T))])
        mc = m.market
        args = (lag, cash, float(mc.lot_size), mc.commission_rate, mc.min_commission,
                mc.slippage_bps / 1e4, mc.stamp_duty_rate, mc.t_plus_one)
        port = np.zeros((len(combos), T))
        cnt = np.zeros((len(combos), 5))
        kc.simulate_signals_nb(S, idx, coef, m.close, m.can_buy, m.can_sell, m.adj_ratio,
                               *args, port, cnt, kc.combo_group(len(combos)))

        # device layout: (K, dates, symbols) and (dates, symbols)
        dS = np.ascontiguousarray(S[:-1].transpose(0, 2, 1)) if keys else np.zeros((1, T, N))
        dev = [np.ascontiguousarray(a.T) for a in (m.close, m.adj_ratio)]
        dbuy = np.ascontiguousarray(m.can_buy.T).astype(np.uint8)
        dsell = np.ascontiguousarray(m.can_sell.T).astype(np.uint8)
        gport = np.zeros_like(port)
        gcnt = np.zeros_like(cnt)
        didx = np.ascontiguousarray(idx, dtype=np.int64)
        dcoef = np.ascontiguousarray(coef)

        def ptr(a):
            return a.ctypes.data_as(ctypes.c_void_p)

        d = ctypes.c_double
        kernel = lib.simulate_signals
        blocks = (N + kg.THREADS_PER_BLOCK - 1) // kg.THREADS_PER_BLOCK
        for c in range(len(combos)):
            for bx in range(blocks):
                for tx in range(kg.THREADS_PER_BLOCK):
                    lib.qilin_set_ids(bx, c, tx, kg.THREADS_PER_BLOCK)
                    kernel(ptr(dS), ptr(didx), ptr(dcoef), ptr(dev[0]), ptr(dbuy),
                           ptr(dsell), ptr(dev[1]), ctypes.c_int(T), ctypes.c_int(N),
                           ctypes.c_int(lag), d(cash), d(mc.lot_size), d(mc.commission_rate),
                           d(mc.min_commission), d(mc.slippage_bps / 1e4),
                           d(mc.stamp_duty_rate), ctypes.c_int(int(mc.t_plus_one)),
                           ptr(gport), ptr(gcnt))
        np.testing.assert_allclose(gport, port, rtol=1e-12, atol=1e-12 * cash)  # money
        np.testing.assert_allclose(gcnt, cnt, rtol=1e-12)
        assert cnt[:, 0].sum() > 0
