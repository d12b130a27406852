"""GPU kernels against the numba CPU kernels.

Two layers:

* with a CUDA GPU (``gpu`` fixture): every operator and indicator on CuPy input equals the
  NumPy result, on random data with NaN gaps;
* everywhere a C++ compiler exists: the CUDA source itself is compiled for the host (CUDA
  qualifiers and thread indices shimmed) and launched through the real wrappers of
  ``kernels_gpu`` (``ts1_gpu`` ...) with a stand-in ``cupy`` made of NumPy plus that host
  ``RawModule``; every (block, thread) of the grid runs in turn. This checks the kernel
  logic, the compress / scatter steps and the kernel arguments even without a GPU.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from qilin.factors import indicators as ind
from qilin.factors import kernels_cpu as kc
from qilin.factors import kernels_gpu as kg
from qilin.factors import ops

RNG = np.random.default_rng(11)
T, N = 300, 7


def _data() -> dict[str, np.ndarray]:
    close = 20.0 + RNG.normal(size=(T, N)).cumsum(axis=0) * 0.3
    close[:, 0] += 5e3
    close[:, 1] = np.round(close[:, 1], 0)  # ties and flat stretches
    spread = np.abs(RNG.normal(size=(T, N))) * 0.4
    high, low = close + spread, close - spread * 0.8
    volume = RNG.integers(1, 10_000, size=(T, N)).astype(float)
    gaps = RNG.random((T, N)) < 0.1
    gaps[100:130, 3] = True
    for a in (close, high, low):
        a[gaps] = np.nan
    high[7, 2] = np.nan  # a gap in one input only
    other = close * 0.5 + RNG.normal(size=(T, N))
    cond = (RNG.random((T, N)) < 0.5).astype(float)
    cond[gaps] = np.nan
    return {"close": close, "high": high, "low": low, "volume": volume, "other": other,
            "cond": cond}


D = _data()
TS_OPS = {
    "ts_sum": lambda x: ops.ts_sum(x, 7),
    "ts_mean": lambda x: ops.ts_mean(x, 7),
    "ts_var": lambda x: ops.ts_var(x, 7),
    "ts_std": lambda x: ops.ts_std(x, 7, ddof=0),
    "ts_skew": lambda x: ops.ts_skew(x, 9),
    "ts_kurt": lambda x: ops.ts_kurt(x, 9),
    "ts_mad": lambda x: ops.ts_mad(x, 6),
    "ts_max": lambda x: ops.ts_max(x, 5),
    "ts_min": lambda x: ops.ts_min(x, 5),
    "ts_argmax": lambda x: ops.ts_argmax(x, 5),
    "ts_argmin": lambda x: ops.ts_argmin(x, 5),
    "ts_rank": lambda x: ops.ts_rank(x, 6),
    "ts_quantile": lambda x: ops.ts_quantile(x, 6, 0.3),
    "ts_median": lambda x: ops.ts_median(x, 6),
    "ts_slope": lambda x: ops.ts_slope(x, 8),
    "ts_rsquare": lambda x: ops.ts_rsquare(x, 8),
    "ts_resi": lambda x: ops.ts_resi(x, 8),
    "ts_wma": lambda x: ops.ts_wma(x, 8),
    "ts_decay_linear": lambda x: ops.ts_decay_linear(x, 4),
    "ts_ema": lambda x: ops.ts_ema(x, 6),
    "ts_delay": lambda x: ops.ts_delay(x, 2),
    "ts_delta": lambda x: ops.ts_delta(x, 2),
    "ts_pct_change": lambda x: ops.ts_pct_change(x, 2),
}
TWO_INPUT = {
    "ts_corr": lambda x, y: ops.ts_corr(x, y, 9),
    "ts_cov": lambda x, y: ops.ts_cov(x, y, 9),
}
CS_OPS = {
    "cs_rank": ops.cs_rank,
    "cs_zscore": ops.cs_zscore,
    "cs_demean": ops.cs_demean,
    "cs_scale": ops.cs_scale,
    "cs_winsorize_mad": lambda x: ops.cs_winsorize(x, "mad", k=1.5),
    "cs_winsorize_q": lambda x: ops.cs_winsorize(x, "quantile", limits=(0.1, 0.9)),
}
INDICATORS = {
    "sma": lambda d: ind.sma(d["close"], 10),
    "ema": lambda d: ind.ema(d["close"], 10),
    "wma": lambda d: ind.wma(d["close"], 10),
    "dema": lambda d: ind.dema(d["close"], 10),
    "tema": lambda d: ind.tema(d["close"], 10),
    "macd": lambda d: ind.macd(d["close"]),
    "macd_signal": lambda d: ind.macd_signal(d["close"]),
    "macd_hist": lambda d: ind.macd_hist(d["close"]),
    "rsi": lambda d: ind.rsi(d["close"]),
    "bbands_upper": lambda d: ind.bbands_upper(d["close"]),
    "bbands_middle": lambda d: ind.bbands_middle(d["close"]),
    "bbands_lower": lambda d: ind.bbands_lower(d["close"]),
    "atr": lambda d: ind.atr(d["high"], d["low"], d["close"]),
    "natr": lambda d: ind.natr(d["high"], d["low"], d["close"]),
    "cci": lambda d: ind.cci(d["high"], d["low"], d["close"]),
    "willr": lambda d: ind.willr(d["high"], d["low"], d["close"]),
    "mfi": lambda d: ind.mfi(d["high"], d["low"], d["close"], d["volume"]),
    "obv": lambda d: ind.obv(d["close"], d["volume"]),
    "roc": lambda d: ind.roc(d["close"]),
    "stoch_k": lambda d: ind.stoch_k(d["high"], d["low"], d["close"]),
    "stoch_d": lambda d: ind.stoch_d(d["high"], d["low"], d["close"]),
    "adx": lambda d: ind.adx(d["high"], d["low"], d["close"]),
    "vwap": lambda d: ind.vwap(d["high"], d["low"], d["close"], d["volume"]),
}


def _close(a: np.ndarray, b: np.ndarray, rtol: float = 1e-9) -> None:
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-9, equal_nan=True)


# ------------------------------------------------------------------------------------------
# real GPU
# ------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(TS_OPS))
def test_gpu_time_series_ops_equal_cpu(gpu, name: str) -> None:
    import cupy as cp

    fn = TS_OPS[name]
    got = fn(cp.asarray(D["close"]))
    assert isinstance(got, cp.ndarray) and got.dtype == cp.float64
    _close(cp.asnumpy(got), fn(D["close"]))
    _close(cp.asnumpy(ops.ts_count(cp.asarray(D["cond"]), 5)), ops.ts_count(D["cond"], 5))


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(TWO_INPUT))
def test_gpu_two_input_ops_equal_cpu(gpu, name: str) -> None:
    import cupy as cp

    fn = TWO_INPUT[name]
    got = fn(cp.asarray(D["close"]), cp.asarray(D["other"]))
    _close(cp.asnumpy(got), fn(D["close"], D["other"]))


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(CS_OPS))
def test_gpu_cross_section_ops_equal_cpu(gpu, name: str) -> None:
    import cupy as cp

    fn = CS_OPS[name]
    _close(cp.asnumpy(fn(cp.asarray(D["close"]))), fn(D["close"]))


@pytest.mark.gpu
def test_gpu_neutralize_and_elementwise_equal_cpu(gpu) -> None:
    import cupy as cp

    x, mcap = D["close"], D["volume"]
    groups = np.arange(N) % 3
    want = ops.cs_neutralize(x, groups=groups, mcap=mcap)
    got = ops.cs_neutralize(cp.asarray(x), groups=cp.asarray(groups), mcap=cp.asarray(mcap))
    _close(cp.asnumpy(got), want)
    gx, gy = cp.asarray(x - 20.0), cp.asarray(D["other"])
    for fn in (ops.log, ops.abs, ops.sign):
        _close(cp.asnumpy(fn(gx)), fn(x - 20.0))
    for fn in (ops.add, ops.sub, ops.mul, ops.div, ops.power, ops.max, ops.min, ops.gt,
               ops.ge, ops.lt, ops.le, ops.eq, ops.ne):
        _close(cp.asnumpy(fn(gx, gy)), fn(x - 20.0, D["other"]))
    _close(cp.asnumpy(ops.where(cp.asarray(D["cond"]), gx, gy)),
           ops.where(D["cond"], x - 20.0, D["other"]))


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(INDICATORS))
def test_gpu_indicators_equal_cpu(gpu, name: str) -> None:
    import cupy as cp

    fn = INDICATORS[name]
    got = fn({k: cp.asarray(v) for k, v in D.items()})
    _close(cp.asnumpy(got), fn(D), rtol=1e-8)


# ------------------------------------------------------------------------------------------
# the CUDA source, compiled for the host, launched through the real GPU wrappers
# ------------------------------------------------------------------------------------------
_SHIM = r"""
#include <cmath>
#include <cstring>
using std::isfinite;
using std::fabs;
using std::sqrt;
using std::fmin;
using std::fmax;
#define __device__ static inline
#define __global__
struct EmuDim { unsigned x; };
static EmuDim blockIdx, blockDim, threadIdx;
static inline double __longlong_as_double(unsigned long long v) {
    double d; std::memcpy(&d, &v, 8); return d;
}
extern "C" void emu_set_thread(unsigned block, unsigned thread, unsigned dim) {
    blockIdx.x = block; threadIdx.x = thread; blockDim.x = dim;
}
"""


def _ctype(arg):
    if isinstance(arg, np.ndarray):
        assert arg.flags.c_contiguous, "kernels index arrays as C-ordered"
        return ctypes.c_void_p(arg.ctypes.data)
    return {np.int64: ctypes.c_longlong, np.int32: ctypes.c_int,
            np.float64: ctypes.c_double}[type(arg)](arg)


class _HostFunction:
    """A kernel of the host build, launched like ``RawKernel(grid, block, args)``: every
    (block, thread) of the grid runs in turn."""

    def __init__(self, lib: ctypes.CDLL, name: str):
        self.lib, self.fn = lib, getattr(lib, name)

    def __call__(self, grid, block, args) -> None:
        cargs = [_ctype(a) for a in args]
        for b in range(grid[0]):
            for t in range(block[0]):
                self.lib.emu_set_thread(b, t, block[0])
                self.fn(*cargs)


@pytest.fixture(scope="module")
def host_build(tmp_path_factory):
    """Compile ``CUDA_SOURCE`` for the host once per module; returns a loader by source."""
    cxx = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler to build the CUDA source for the host")
    folder: Path = tmp_path_factory.mktemp("host_cuda")
    built: dict[str, ctypes.CDLL] = {}

    def load(code: str) -> ctypes.CDLL:
        if code not in built:
            src = folder / f"kernels{len(built)}.cpp"
            src.write_text(_SHIM + code)
            lib = src.with_suffix(".so")
            subprocess.run([cxx, "-O1", "-shared", "-fPIC", "-x", "c++", str(src), "-o",
                            str(lib)], check=True, capture_output=True, timeout=120)
            built[code] = ctypes.CDLL(str(lib))
        return built[code]

    return load


@pytest.fixture
def host_cuda(host_build, monkeypatch):
    """``qilin.factors.kernels_gpu`` with a stand-in ``cupy`` (NumPy for the array calls and
    a ``RawModule`` built for the host), removed again after the test."""
    import sys
    import types

    class RawModule:
        def __init__(self, code: str, options=()):
            self.lib = host_build(code)

        def get_function(self, name: str) -> _HostFunction:
            return _HostFunction(self.lib, name)

    fake = types.ModuleType("cupy")
    fake.__dict__.update({k: v for k, v in vars(np).items() if not k.startswith("__")})
    fake.RawModule = RawModule
    monkeypatch.setitem(sys.modules, "cupy", fake)
    kg._module.cache_clear()
    yield kg
    kg._module.cache_clear()


TS1_CASES = [
    (kc.TS_SUM, 7, 0.0), (kc.TS_MEAN, 7, 0.0), (kc.TS_VAR, 7, 1.0), (kc.TS_STD, 7, 0.0),
    (kc.TS_SKEW, 9, 0.0), (kc.TS_KURT, 9, 0.0), (kc.TS_MAX, 5, 0.0), (kc.TS_MIN, 5, 0.0),
    (kc.TS_ARGMAX, 5, 0.0), (kc.TS_ARGMIN, 5, 0.0), (kc.TS_RANK, 6, 0.0),
    (kc.TS_QUANTILE, 6, 0.3), (kc.TS_QUANTILE, 6, 1.0), (kc.TS_SLOPE, 8, 0.0),
    (kc.TS_RSQUARE, 8, 0.0), (kc.TS_RESI, 8, 0.0), (kc.TS_WMA, 8, 0.0), (kc.TS_EMA, 6, 0.0),
    (kc.TS_DELAY, 2, 0.0), (kc.TS_DELTA, 2, 0.0), (kc.TS_PCT_CHANGE, 2, 0.0),
    (kc.TS_COUNT, 5, 0.0), (kc.TS_MAD, 6, 0.0),
    # window sizes at the edges of the min/max blocks and of the sorted window
    (kc.TS_MAX, 1, 0.0), (kc.TS_ARGMIN, 2, 0.0), (kc.TS_ARGMAX, 13, 0.0),
    (kc.TS_RANK, 1, 0.0), (kc.TS_QUANTILE, 1, 0.5), (kc.TS_QUANTILE, 11, 0.8),
    (kc.TS_STD, 1, 0.0), (kc.TS_VAR, 13, 1.0),
]


@pytest.mark.parametrize(("op", "w", "p"), TS1_CASES)
def test_host_compiled_cuda_ts1_equals_numba(host_cuda, op: int, w: int, p: float) -> None:
    x = D["cond"] if op == kc.TS_COUNT else D["close"]
    _close(host_cuda.ts1_gpu(x, op, w, p), kc.ts1_nb(x, op, w, p), rtol=1e-12)


@pytest.mark.parametrize("op", [kc.TS_CORR, kc.TS_COV])
def test_host_compiled_cuda_ts2_equals_numba(host_cuda, op: int) -> None:
    x, y = D["close"], D["other"]
    _close(host_cuda.ts2_gpu(x, y, op, 9), kc.ts2_nb(x, y, op, 9), rtol=1e-12)


def test_host_compiled_cuda_windows_longer_than_history(host_cuda) -> None:
    x = D["close"][:30]
    for op in (kc.TS_RANK, kc.TS_MEAN, kc.TS_MAX, kc.TS_EMA):
        assert np.isnan(host_cuda.ts1_gpu(x, op, 2**40, 0.0)).all()
    assert np.isnan(host_cuda.ts2_gpu(x, x, kc.TS_CORR, 2**40)).all()
    h, l, v = D["high"][:30], D["low"][:30], D["volume"][:30]
    assert np.isnan(host_cuda.ind_gpu(h, l, x, v, kc.IND_MACD, 3, 2**40, 2, 0.0)).all()


def test_host_compiled_cuda_cs_rank_equals_numba(host_cuda) -> None:
    x = np.round(D["close"], 0)
    x[5, 1:] = np.nan
    _close(host_cuda.cs_rank_gpu(x), kc.cs_rank_nb(x), rtol=1e-15)


IND_CASES = [
    (kc.IND_SMA, 10, 1, 1, 0.0), (kc.IND_EMA, 10, 1, 1, 0.0), (kc.IND_WMA, 10, 1, 1, 0.0),
    (kc.IND_DEMA, 10, 1, 1, 0.0), (kc.IND_TEMA, 10, 1, 1, 0.0),
    (kc.IND_MACD, 12, 26, 9, 0.0), (kc.IND_MACD_SIGNAL, 12, 26, 9, 0.0),
    (kc.IND_MACD_HIST, 26, 12, 9, 0.0), (kc.IND_RSI, 14, 1, 1, 0.0),
    (kc.IND_BBANDS_UPPER, 20, 1, 1, 2.0), (kc.IND_BBANDS_MIDDLE, 20, 1, 1, 2.0),
    (kc.IND_BBANDS_LOWER, 20, 1, 1, 1.5), (kc.IND_ATR, 14, 1, 1, 0.0),
    (kc.IND_NATR, 14, 1, 1, 0.0), (kc.IND_CCI, 14, 1, 1, 0.0), (kc.IND_WILLR, 14, 1, 1, 0.0),
    (kc.IND_MFI, 14, 1, 1, 0.0), (kc.IND_OBV, 1, 1, 1, 0.0), (kc.IND_ROC, 10, 1, 1, 0.0),
    (kc.IND_STOCH_K, 5, 3, 3, 0.0), (kc.IND_STOCH_D, 5, 3, 3, 0.0),
    (kc.IND_ADX, 14, 1, 1, 0.0), (kc.IND_VWAP, 20, 1, 1, 0.0),
]


@pytest.mark.parametrize(("op", "p1", "p2", "p3", "f"), IND_CASES)
def test_host_compiled_cuda_indicators_equal_numba(host_cuda, op, p1, p2, p3, f) -> None:
    h, l, c, v = D["high"], D["low"], D["close"], D["volume"]
    _close(host_cuda.ind_gpu(h, l, c, v, op, p1, p2, p3, f),
           kc.ind_nb(h, l, c, v, op, p1, p2, p3, f), rtol=1e-12)


def test_cuda_source_compiles_with_nvcc(tmp_path) -> None:
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not installed")
    src = tmp_path / "kernels.cu"
    src.write_text(kg.CUDA_SOURCE)
    out = subprocess.run([nvcc, "-ptx", "-std=c++14", str(src), "-o", str(tmp_path / "k.ptx")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    ptx = (tmp_path / "k.ptx").read_text()
    for kernel in ("ts1_kernel", "ts2_kernel", "cs_rank_kernel", "ind_kernel"):
        assert f".entry {kernel}" in ptx
