"""The CUDA signal kernel's source, compiled as C++ on the CPU, must equal the numba kernel.

CI machines have no GPU, so ``test_gpu_matches_cpu`` skips there; this test keeps the CUDA
source honest anyway by compiling it with ``g++`` (CUDA built-ins stubbed, FMA contraction
off as with ``--fmad=false``), running one "thread" per column, and comparing every output
array with :func:`qilin.backtest.signal.simulate_signals_nb` bit for bit.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from qilin.backtest import signal as S
from qilin.backtest.rules import LIMIT_TOL, MarketRules
from qilin.data.panel import Panel

OUTPUTS = ("equity", "qty", "value", "cost", "traded", "rec_side", "rec_status", "rec_qty",
           "rec_price", "rec_cost")
HARNESS = """
#include <math.h>
#include <string.h>
struct d3 { int x; };
static d3 blockDim, blockIdx, threadIdx;
static double __longlong_as_double(unsigned long long v) { double d; memcpy(&d, &v, 8); return d; }
%s
extern "C" void run_all(const double* a, const double* b, const double* c, const double* d,
    const double* e, const double* f, int T, int N, double p0, double p1, double p2, double p3,
    double p4, double p5, double p6, double p7, double p8, double p9, double* o0, double* o1,
    double* o2, double* o3, double* o4, signed char* o5, signed char* o6, double* o7, double* o8,
    double* o9) {
  blockDim.x = 1; blockIdx.x = 0;
  for (int j = 0; j < N; ++j) {
    threadIdx.x = j;
    simulate_signals_cuda(a, b, c, d, e, f, T, N, p0, p1, p2, p3, p4, p5, p6, p7, p8, p9,
                          o0, o1, o2, o3, o4, o5, o6, o7, o8, o9);
  }
}
"""


@pytest.fixture(scope="module")
def cuda_as_cpp(tmp_path_factory):
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ is not installed: cannot compile the CUDA source for the CPU")
    folder = tmp_path_factory.mktemp("cuda")
    src = folder / "kernel.cpp"
    body = S._CUDA_SOURCE.replace('extern "C" __global__', "static")
    src.write_text(HARNESS % body)
    lib = folder / "kernel.so"
    subprocess.run([gxx, "-O2", "-ffp-contract=off", "-shared", "-fPIC", "-o", str(lib),
                    str(src)], check=True, capture_output=True, timeout=120)
    return ctypes.CDLL(str(lib))


def _run_cpp(lib, inputs, params):
    T, N = inputs["target"].shape
    arrs = {k: np.ascontiguousarray(v, dtype=np.float64) for k, v in inputs.items()}
    out = {n: np.zeros((T, N), np.int8 if n in ("rec_side", "rec_status") else np.float64)
           for n in OUTPUTS}

    def ptr(a):
        return a.ctypes.data_as(ctypes.c_void_p)

    D = ctypes.c_double
    lib.run_all(*[ptr(arrs[k]) for k in ("target", "exec_price", "close", "adj_ratio", "up",
                                         "down")],
                ctypes.c_int(T), ctypes.c_int(N), *[D(p) for p in params], D(LIMIT_TOL),
                D(S.QTY_EPS), D(S.NO_VOLUME_PRICE), *[ptr(out[n]) for n in OUTPUTS])
    return out


def _inputs(panel, desired, market, lag, price):
    rules = MarketRules.from_market(market)
    inputs = S.execution_inputs(panel, rules, price)
    inputs["target"] = S.shift_rows(desired, S.execution_shift(lag, price))
    return inputs


@pytest.mark.parametrize("market,lag,price,threshold", [
    ("cn", 0, "close", 0.0), ("cn", 1, "open", 0.0), ("us", 0, "close", 0.05)])
def test_cuda_source_equals_numba(cuda_as_cpp, ashare_path, market, lag, price, threshold):
    symbols = ["000001.SZ", "600519.SH", "300014.SZ", "688005.SH", "600289.SH", "002540.SZ"]
    df = pd.read_parquet(ashare_path, filters=[("symbol", "in", symbols)])
    panel = Panel.from_long(df[df["date"] >= "2019-01-01"])
    adj = pd.DataFrame(np.asarray(panel.adjusted()["close"]))
    f, s = adj.rolling(5).mean().to_numpy(), adj.rolling(20).mean().to_numpy()
    with np.errstate(invalid="ignore"):
        desired = np.where(f > s, 0.8, np.where(f < s, 0.1, np.nan))
    inputs = _inputs(panel, desired, market, lag, price)
    cm, _ = S.resolve_market(market, None, None)[1:]
    params = (1e6, cm.commission_rate, cm.min_commission, cm.slippage, cm.stamp_duty_rate,
              float(MarketRules.from_market(market).lot_size), threshold)
    cpu = S._simulate_cpu(inputs, params)
    cpp = _run_cpp(cuda_as_cpp, inputs, params)
    assert (cpu["rec_status"] == 1).sum() > 50
    for name in OUTPUTS:
        np.testing.assert_array_equal(cpp[name], cpu[name], err_msg=name)


@pytest.mark.parametrize("market,init_cash", [("us", 1e6), ("cn", 1e6), ("us", 1e18),
                                              ("cn", 1e18)])
def test_cuda_source_equals_numba_on_extreme_inputs(cuda_as_cpp, market, init_cash):
    """Closed-form sizing, beyond-precision and no-volume rejections: same in both sources."""
    T = 80
    t = np.arange(T)[:, None]
    levels = np.array([1e-10, 1e12, 10.0, 3e5])
    close = levels * (1.0 + 0.05 * np.sin(t / 3.0 + np.arange(4)))
    volume = np.full(close.shape, 1e4)
    volume[10:30, 2:] = 0.0
    panel = Panel.from_arrays({"close": close, "open": close, "volume": volume},
                              pd.bdate_range("2021-01-04", periods=T),
                              ["600000.SH", "000001.SZ", "600519.SH", "300750.SZ"])
    desired = np.where(np.sin(t / 7.0 + np.arange(4)) > 0, 0.9, 0.0)
    inputs = _inputs(panel, desired, market, 0, "close")
    cm, _ = S.resolve_market(market, None, None)[1:]
    params = (init_cash, cm.commission_rate, cm.min_commission, cm.slippage,
              cm.stamp_duty_rate, float(MarketRules.from_market(market).lot_size), 0.0)
    cpu = S._simulate_cpu(inputs, params)
    cpp = _run_cpp(cuda_as_cpp, inputs, params)
    statuses = set(np.unique(cpu["rec_status"]).tolist())
    assert {1, 7} <= statuses  # fills and no-volume rejections
    assert (5 in statuses) or (8 in statuses)  # unaffordable or beyond precision
    for name in OUTPUTS:
        np.testing.assert_array_equal(cpp[name], cpu[name], err_msg=name)
