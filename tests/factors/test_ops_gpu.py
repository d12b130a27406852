"""GPU factor kernels (numba-cuda, compiled from the CPU's Python cores) against the CPU.

Two layers:

* everywhere: the wrappers of :mod:`qilin.factors.kernels_gpu` (``ts1_gpu`` ...) are called
  with NumPy arrays. Without a GPU they run in numba-cuda's simulator (tests/conftest.py sets
  ``NUMBA_ENABLE_CUDASIM=1``); every ts1 op, both ts2 ops, ``cs_rank`` and every indicator
  is compared with :mod:`qilin.factors.kernels_cpu` on random panels with NaN gaps (flat
  runs, a 5e3 price offset, an empty column, a one-value column, late listing, early
  delisting, a gap in one input only), on a panel wider than one 128-thread block (grid of
  several blocks, bounds check of the last one) and on real slices (12 symbols x 150 dates)
  of the A-share and S&P 500 files;
* with a CUDA GPU and CuPy (``gpu`` fixture): the same comparisons with CuPy arrays, and the
  :mod:`qilin.factors.ops` / :mod:`qilin.factors.indicators` functions dispatching CuPy input.

Exactness. The simulator executes the cores' Python in float64 with the operations in the
order numba's CPU code performs them, so every result is bit-identical. On a real GPU NVVM
contracts ``a * b + c`` into fused multiply-adds (numba-cuda compiles with fma on), which
moves the last bits of results whose cores multiply and then add: var/std/skew/kurt,
slope/rsquare/resi/wma, ema, quantile interpolation, corr/cov and the indicators built on
such steps; those are compared to 1e-12 relative to the largest magnitude of the result.
Cores that only add, compare, count or divide stay bit-identical on the GPU too (``EXACT``:
sum, mean, max, min, argmax, argmin, rank, mad, delay, delta, pct_change, count, cs_rank,
SMA, OBV, ROC, WILLR).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest

from qilin.factors import indicators as ind
from qilin.factors import kernels_cpu as kc
from qilin.factors import kernels_gpu as kg
from qilin.factors import ops
from qilin.kernels.targets import kernels_runnable, simulated

kernels_run = pytest.mark.skipif(
    not kernels_runnable(), reason="GPU kernels need numba-cuda's simulator or a CUDA GPU")

RNG = np.random.default_rng(11)
T, N = 90, 9


def _bars(t: int, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    close = 20.0 + rng.normal(size=(t, n)).cumsum(axis=0) * 0.3
    close[:, 0] += 5e3  # large offset, small moves
    close[:, 1] = np.round(close[:, 1], 0)  # ties and flat stretches
    spread = np.abs(rng.normal(size=(t, n))) * 0.4
    high, low = close + spread, close - spread * 0.8
    volume = rng.integers(1, 10_000, size=(t, n)).astype(float)
    gaps = rng.random((t, n)) < 0.1
    gaps[:, 2] = False  # dense: the core runs on the column itself
    if n > 8:
        gaps[30:45, 3] = True
        gaps[:, 4] = True  # empty column
        gaps[:, 5] = True
        gaps[t // 2, 5] = False  # one finite value
        gaps[:, 6] = np.arange(t) < t // 3  # listed late: one unbroken run
        gaps[:, 7] = np.arange(t) >= t - 10  # delisted early
    for a in (close, high, low):
        a[gaps] = np.nan
    high[7, 2] = np.nan  # a gap in one input only
    other = close * 0.5 + rng.normal(size=(t, n))
    cond = (rng.random((t, n)) < 0.5).astype(float)
    cond[gaps] = np.nan
    return {"close": close, "high": high, "low": low, "volume": volume, "other": other,
            "cond": cond}


D = _bars(T, N, RNG)
WIDE = _bars(16, 140, np.random.default_rng(12))  # 140 threads: two blocks of 128

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
EXACT_TS1 = {kc.TS_SUM, kc.TS_MEAN, kc.TS_MAX, kc.TS_MIN, kc.TS_ARGMAX, kc.TS_ARGMIN,
             kc.TS_RANK, kc.TS_MAD, kc.TS_DELAY, kc.TS_DELTA, kc.TS_PCT_CHANGE, kc.TS_COUNT}
EXACT_IND = {kc.IND_SMA, kc.IND_OBV, kc.IND_ROC, kc.IND_WILLR}


def _name(prefix: str, op: int) -> str:
    return next(k for k, v in vars(kc).items() if k.startswith(prefix) and v == op)


def _ids(cases: list[tuple[Any, ...]], prefix: str) -> list[str]:
    return [f"{_name(prefix, c[0])}-{'-'.join(map(str, c[1:]))}" for c in cases]


def _host(a: Any) -> np.ndarray:
    return a.get() if hasattr(a, "get") else np.asarray(a)


def assert_same(got: Any, want: np.ndarray, exact: bool) -> None:
    """Bit-identical (NaNs in the same places) when ``exact`` or under the simulator; else
    1e-12 relative to the largest magnitude of ``want`` (FMA contraction on a real GPU)."""
    got = _host(got)
    assert got.shape == want.shape and got.dtype == np.float64
    if exact or simulated():
        np.testing.assert_array_equal(got, want)
        return
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    scale = max(1.0, float(np.nanmax(np.abs(want), initial=0.0)))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * scale)


def _ts1_input(data: dict[str, np.ndarray], op: int) -> np.ndarray:
    return data["cond"] if op == kc.TS_COUNT else data["close"]


def _bars_of(data: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    return data["high"], data["low"], data["close"], data["volume"]


def _ranked(x: np.ndarray) -> np.ndarray:
    """Rounded (ties), one row with a single finite value, one all-NaN row."""
    r = np.round(x, 0)
    r[5, 1:] = np.nan
    r[6, :] = np.nan
    return r


def check_ts1(data: dict[str, np.ndarray], op: int, w: int, p: float,
              to_device: Callable[[np.ndarray], Any] = np.asarray) -> None:
    x = _ts1_input(data, op)
    assert_same(kg.ts1_gpu(to_device(x), op, w, p), kc.ts1_nb(x, op, w, p), op in EXACT_TS1)


def check_ts2(data: dict[str, np.ndarray], op: int, w: int,
              to_device: Callable[[np.ndarray], Any] = np.asarray) -> None:
    x, y = data["close"], data["other"]
    assert_same(kg.ts2_gpu(to_device(x), to_device(y), op, w), kc.ts2_nb(x, y, op, w), False)


def check_cs_rank(x: np.ndarray, to_device: Callable[[np.ndarray], Any] = np.asarray) -> None:
    assert_same(kg.cs_rank_gpu(to_device(x)), kc.cs_rank_nb(x), True)


def check_ind(data: dict[str, np.ndarray], op: int, p1: int, p2: int, p3: int, f: float,
              to_device: Callable[[np.ndarray], Any] = np.asarray) -> None:
    bars = _bars_of(data)
    got = kg.ind_gpu(*(to_device(a) for a in bars), op, p1, p2, p3, f)
    assert_same(got, kc.ind_nb(*bars, op, p1, p2, p3, f), op in EXACT_IND)


# ------------------------------------------------------------------------------------------
# the GPU kernels through their wrappers, NumPy in (the simulator without a GPU)
# ------------------------------------------------------------------------------------------
@kernels_run
@pytest.mark.parametrize(("op", "w", "p"), TS1_CASES, ids=_ids(TS1_CASES, "TS_"))
def test_ts1_kernel_equals_cpu(op: int, w: int, p: float) -> None:
    check_ts1(D, op, w, p)


@kernels_run
@pytest.mark.parametrize("op", [kc.TS_CORR, kc.TS_COV])
@pytest.mark.parametrize("w", [1, 2, 9])
def test_ts2_kernel_equals_cpu(op: int, w: int) -> None:
    check_ts2(D, op, w)


@kernels_run
def test_cs_rank_kernel_equals_cpu_with_ties_and_sparse_rows() -> None:
    x = _ranked(D["close"])
    check_cs_rank(x)
    got = kg.cs_rank_gpu(x)
    assert np.isnan(got[5]).all() and np.isnan(got[6]).all()  # < 2 finite: NaN row
    finite = np.isfinite(x[0])
    assert (np.unique(x[0][finite], return_counts=True)[1] > 1).any()  # the row has ties
    assert ((got[0][finite] * 2 * finite.sum()) % 1 == 0).all()  # ranks are k/2 over m


@kernels_run
def test_rank_rows_kernel_equals_cpu_with_ties_and_sparse_rows() -> None:
    x = _ranked(D["close"])
    got = kg.rank_rows_gpu(x, False)
    want = kc.rank_rows_nb(np.ascontiguousarray(x), False)
    np.testing.assert_array_equal(np.asarray(got), want)
    assert np.nansum(want[5]) == 1.0 and np.isfinite(want[5]).sum() == 1  # one name: rank 1


@kernels_run
def test_pearson_rows_kernel_equals_cpu() -> None:
    x, y = D["close"], D["other"]
    mask = np.isfinite(x) & np.isfinite(y)
    mask[3] = False  # no names: NaN
    mask[4, 1:] = False  # one name: NaN
    want = kc.pearson_rows_nb(np.ascontiguousarray(x), np.ascontiguousarray(y), mask)
    got = kg.pearson_rows_gpu(x, y, mask)
    np.testing.assert_array_equal(np.asarray(got), want)
    assert np.isnan(want[[3, 4]]).all() and np.isfinite(want[5:]).all()


@kernels_run
@pytest.mark.parametrize(("op", "p1", "p2", "p3", "f"), IND_CASES, ids=_ids(IND_CASES, "IND_"))
def test_indicator_kernel_equals_cpu(op: int, p1: int, p2: int, p3: int, f: float) -> None:
    check_ind(D, op, p1, p2, p3, f)


@kernels_run
def test_kernels_span_several_blocks() -> None:
    # 140 columns (or rows for cs_rank): a second, partial block of threads
    for op, w, p in [(kc.TS_MEAN, 3, 0.0), (kc.TS_ARGMAX, 4, 0.0), (kc.TS_QUANTILE, 4, 0.5)]:
        check_ts1(WIDE, op, w, p)
    check_ts2(WIDE, kc.TS_CORR, 4)
    check_ind(WIDE, kc.IND_STOCH_D, 3, 2, 2, 0.0)
    check_cs_rank(_ranked(WIDE["close"].T.copy()))


@kernels_run
def test_windows_longer_than_history() -> None:
    x = D["close"][:30]
    for op in (kc.TS_RANK, kc.TS_MEAN, kc.TS_MAX, kc.TS_EMA, kc.TS_QUANTILE):
        got = kg.ts1_gpu(x, op, 2**40, 0.5)
        assert np.isnan(got).all()
        assert_same(got, kc.ts1_nb(x, op, 2**40, 0.5), True)
    assert np.isnan(kg.ts2_gpu(x, x, kc.TS_CORR, 2**40)).all()
    h, lo, v = D["high"][:30], D["low"][:30], D["volume"][:30]
    assert np.isnan(kg.ind_gpu(h, lo, x, v, kc.IND_MACD, 3, 2**40, 2, 0.0)).all()


@kernels_run
def test_wrappers_take_any_layout_and_empty_panels() -> None:
    x = np.asfortranarray(D["close"])
    assert_same(kg.ts1_gpu(x, kc.TS_STD, 5, 1.0), kc.ts1_nb(x, kc.TS_STD, 5, 1.0), False)
    assert kg.ts1_gpu(np.empty((0, 3)), kc.TS_MEAN, 2, 0.0).shape == (0, 3)
    assert kg.cs_rank_gpu(np.empty((4, 0))).shape == (4, 0)


def test_heap_argsort_sorts_like_numpy() -> None:
    # the GPU's sorting primitive, run here as numba CPU code
    rng = np.random.default_rng(4)
    for m in [0, 1, 2, 3, 7, 64, 257]:
        values = np.round(rng.normal(size=m + 5) * 3)  # ties; 5 trailing entries ignored
        order = np.full(m + 5, -1, np.int64)
        kc.heap_argsort_nb(values, m, order)
        assert sorted(order[:m].tolist()) == list(range(m))
        np.testing.assert_array_equal(values[order[:m]], np.sort(values[:m]))
        assert (order[m:] == -1).all()


# ------------------------------------------------------------------------------------------
# real data: small slices, the gaps real panels have
# ------------------------------------------------------------------------------------------
ASHARE_SYMBOLS = ["600519.SH", "000001.SZ", "000002.SZ", "002246.SZ", "300388.SZ",
                  "000429.SZ", "601166.SH", "002443.SZ", "300123.SZ", "002341.SZ",
                  "000889.SZ", "002540.SZ"]  # suspensions, one suspended most of the slice
SP500_SYMBOLS = ["AAPL", "DHR", "ES", "GE", "KHC", "MSFT", "O", "PYPL", "REGN", "VRTX", "WRK",
                 "XOM"]  # null OHLC values, listings in the window (KHC, PYPL)


def _real_slice(path: Any, symbols: list[str], start: str, days: int = 150) -> dict:
    df = pd.read_parquet(path, columns=["date", "symbol", "open", "high", "low", "close",
                                        "volume"], filters=[("symbol", "in", symbols)])
    df = df[df["date"] >= pd.Timestamp(start)]
    dates = np.sort(df["date"].unique())[:days]
    df = df[df["date"].isin(dates)]
    wide = {f: df.pivot(index="date", columns="symbol", values=f)
            .reindex(index=dates, columns=symbols).to_numpy(dtype=np.float64)
            for f in ("open", "high", "low", "close", "volume")}
    assert wide["close"].shape == (days, len(symbols))
    assert np.isnan(wide["close"]).any() or np.isnan(wide["high"]).any()
    wide["other"] = wide["open"]
    wide["cond"] = np.where(np.isnan(wide["close"]), np.nan,
                            (np.diff(wide["close"], axis=0, prepend=np.nan) > 0).astype(float))
    return wide


@pytest.fixture(scope="module")
def ashare(ashare_path) -> dict[str, np.ndarray]:
    return _real_slice(ashare_path, ASHARE_SYMBOLS, "2016-01-01")


@pytest.fixture(scope="module")
def sp500(sp500_path) -> dict[str, np.ndarray]:
    return _real_slice(sp500_path, SP500_SYMBOLS, "2015-05-01")


def _check_everything(data: dict[str, np.ndarray],
                      to_device: Callable[[np.ndarray], Any] = np.asarray) -> None:
    for op, w, p in TS1_CASES:
        check_ts1(data, op, w, p, to_device)
    for op in (kc.TS_CORR, kc.TS_COV):
        check_ts2(data, op, 9, to_device)
    check_cs_rank(data["close"], to_device)
    for case in IND_CASES:
        check_ind(data, *case, to_device=to_device)


@kernels_run
def test_real_ashare_slice_equals_cpu(ashare) -> None:
    _check_everything(ashare)


@kernels_run
def test_real_sp500_slice_equals_cpu(sp500) -> None:
    _check_everything(sp500)


# ------------------------------------------------------------------------------------------
# real GPU: CuPy arrays in and out
# ------------------------------------------------------------------------------------------
def _cupy(a: np.ndarray) -> Any:
    import cupy as cp

    return cp.asarray(a)


@pytest.mark.gpu
def test_gpu_kernels_on_cupy_arrays_equal_cpu(gpu) -> None:
    import cupy as cp

    got = kg.ts1_gpu(cp.asarray(D["close"]), kc.TS_MEAN, 5, 0.0)
    assert isinstance(got, cp.ndarray) and got.flags.c_contiguous
    for data in (D, WIDE):
        _check_everything(data, _cupy)
    check_cs_rank(_ranked(D["close"]), _cupy)


@pytest.mark.gpu
def test_gpu_kernels_on_real_cupy_slices_equal_cpu(gpu, ashare, sp500) -> None:
    for data in (ashare, sp500):
        _check_everything(data, _cupy)


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
