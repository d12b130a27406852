"""Operators against pandas / scipy / numpy references, hand cases and the NaN policy."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.stats import kurtosis, percentileofscore, skew

from qilin.errors import DataError, ParameterError
from qilin.factors import ops

RNG = np.random.default_rng(7)
T, N = 260, 6


def _panel(with_ties: bool = False) -> np.ndarray:
    x = RNG.normal(size=(T, N)).cumsum(axis=0) + 50.0
    x[:, 1] += 1e4  # a large offset
    if with_ties:
        x = np.round(x, 0)
    gaps = RNG.random((T, N)) < 0.12
    gaps[40:55, 2] = True  # a long suspension
    x[gaps] = np.nan
    x[3, 4] = np.inf  # non-finite counts as missing
    return x


def compressed_reference(x: np.ndarray, fn, *others: np.ndarray) -> np.ndarray:
    """Per column: keep rows where all inputs are finite, apply ``fn`` to the dense
    pandas Series, scatter back (the documented NaN policy)."""
    out = np.full(x.shape, np.nan)
    for j in range(x.shape[1]):
        ok = np.isfinite(x[:, j])
        for o in others:
            ok &= np.isfinite(o[:, j])
        series = [pd.Series(x[ok, j])] + [pd.Series(o[ok, j]) for o in others]
        out[ok, j] = np.asarray(fn(*series), dtype=float)
    return out


def assert_same(got: np.ndarray, want: np.ndarray, rtol: float = 1e-9, atol: float = 1e-9):
    assert got.shape == want.shape
    assert got.dtype == np.float64
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, equal_nan=True)


def _exact_moment(fn, v: np.ndarray) -> float:
    """Unbiased sample skew/excess kurtosis (pandas' definitions); NaN for a flat window."""
    if np.ptp(v) == 0:
        return np.nan
    return float(fn(v, bias=False))


def _rolling_pair(a: pd.Series, b: pd.Series, kind: str) -> np.ndarray:
    """Rolling sample covariance / Pearson correlation from centred window values."""
    x, y = a.to_numpy(), b.to_numpy()
    out = np.full(len(x), np.nan)
    for t in range(W - 1, len(x)):
        dx = x[t - W + 1:t + 1] - x[t - W + 1:t + 1].mean()
        dy = y[t - W + 1:t + 1] - y[t - W + 1:t + 1].mean()
        cov = (dx * dy).sum()
        if kind == "cov":
            out[t] = cov / (W - 1)
        elif (dx * dx).sum() > 0 and (dy * dy).sum() > 0:
            out[t] = cov / np.sqrt((dx * dx).sum() * (dy * dy).sum())
    return out


def _ols(v: np.ndarray, what: str) -> float:
    t = np.arange(1, len(v) + 1, dtype=float)
    slope, intercept = np.polyfit(t, v, 1)
    if what == "slope":
        return slope
    if what == "resi":
        return v[-1] - (intercept + slope * t[-1])
    ss = ((v - v.mean()) ** 2).sum()
    return np.nan if ss == 0 else 1.0 - ((v - (intercept + slope * t)) ** 2).sum() / ss


W = 10
CASES = {
    "ts_sum": (lambda x: ops.ts_sum(x, W), lambda s: s.rolling(W).sum()),
    "ts_mean": (lambda x: ops.ts_mean(x, W), lambda s: s.rolling(W).mean()),
    "ts_var": (lambda x: ops.ts_var(x, W), lambda s: s.rolling(W).var()),
    "ts_std": (lambda x: ops.ts_std(x, W), lambda s: s.rolling(W).std()),
    "ts_std0": (lambda x: ops.ts_std(x, W, ddof=0), lambda s: s.rolling(W).std(ddof=0)),
    # scipy's centred moments per window: pandas' raw-moment rolling skew/kurt lose up to
    # 1e-7 relative on rounded (tied) data, and by how much depends on the pandas version
    "ts_skew": (lambda x: ops.ts_skew(x, W), lambda s: s.rolling(W).apply(
        lambda v: _exact_moment(skew, v), raw=True)),
    "ts_kurt": (lambda x: ops.ts_kurt(x, W), lambda s: s.rolling(W).apply(
        lambda v: _exact_moment(kurtosis, v), raw=True)),
    "ts_mad": (
        lambda x: ops.ts_mad(x, W),
        lambda s: s.rolling(W).apply(lambda v: np.abs(v - v.mean()).mean(), raw=True),
    ),
    "ts_max": (lambda x: ops.ts_max(x, W), lambda s: s.rolling(W).max()),
    "ts_min": (lambda x: ops.ts_min(x, W), lambda s: s.rolling(W).min()),
    "ts_argmax": (
        lambda x: ops.ts_argmax(x, W),
        lambda s: s.rolling(W).apply(lambda v: np.argmax(v) + 1, raw=True),
    ),
    "ts_argmin": (
        lambda x: ops.ts_argmin(x, W),
        lambda s: s.rolling(W).apply(lambda v: np.argmin(v) + 1, raw=True),
    ),
    "ts_rank": (
        lambda x: ops.ts_rank(x, W),
        lambda s: s.rolling(W).apply(
            lambda v: percentileofscore(v, v[-1], kind="rank") / 100, raw=True
        ),
    ),
    "ts_quantile10": (lambda x: ops.ts_quantile(x, W, 0.1), lambda s: s.rolling(W).quantile(0.1)),
    "ts_quantile75": (lambda x: ops.ts_quantile(x, W, 0.75), lambda s: s.rolling(W).quantile(0.75)),
    "ts_quantile100": (lambda x: ops.ts_quantile(x, W, 1.0), lambda s: s.rolling(W).max()),
    "ts_median": (lambda x: ops.ts_median(x, W), lambda s: s.rolling(W).median()),
    "ts_slope": (
        lambda x: ops.ts_slope(x, W),
        lambda s: s.rolling(W).apply(lambda v: _ols(v, "slope"), raw=True),
    ),
    "ts_rsquare": (
        lambda x: ops.ts_rsquare(x, W),
        lambda s: s.rolling(W).apply(lambda v: _ols(v, "rsquare"), raw=True),
    ),
    "ts_resi": (
        lambda x: ops.ts_resi(x, W),
        lambda s: s.rolling(W).apply(lambda v: _ols(v, "resi"), raw=True),
    ),
    "ts_wma": (
        lambda x: ops.ts_wma(x, W),
        lambda s: s.rolling(W).apply(lambda v: np.dot(v, np.arange(1, W + 1)) / (W * (W + 1) / 2),
                                     raw=True),
    ),
    "ts_decay_linear": (
        lambda x: ops.ts_decay_linear(x, 3),
        lambda s: s.rolling(3).apply(lambda v: (v[0] + 2 * v[1] + 3 * v[2]) / 6, raw=True),
    ),
    "ts_delay": (lambda x: ops.ts_delay(x, 3), lambda s: s.shift(3)),
    "ts_delta": (lambda x: ops.ts_delta(x, 3), lambda s: s - s.shift(3)),
    "ts_pct_change": (lambda x: ops.ts_pct_change(x, 2), lambda s: s / s.shift(2) - 1),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("ties", [False, True])
def test_rolling_matches_pandas_with_nan_gaps(name: str, ties: bool) -> None:
    ours, reference = CASES[name]
    x = _panel(with_ties=ties)
    rtol = 1e-7 if name in ("ts_skew", "ts_kurt", "ts_rsquare", "ts_resi") else 1e-9
    want = compressed_reference(x, reference)
    if name == "ts_kurt" or name == "ts_skew":
        # pandas' raw-moment algorithm loses digits at the 1e4 offset: compare there loosely
        got = ours(x)
        assert_same(np.delete(got, 1, axis=1), np.delete(want, 1, axis=1), rtol=rtol)
        np.testing.assert_allclose(got[:, 1], want[:, 1], rtol=1e-3, atol=1e-3)
        return
    assert_same(ours(x), want, rtol=rtol, atol=1e-8)


@pytest.mark.parametrize("window", [1, 2, 3, 7, 16, 60])
def test_order_statistics_at_every_block_edge(window: int) -> None:
    # van Herk blocks (max/min/argmax/argmin), direct counts (rank) and the sorted window
    # (quantile) at window sizes that do and do not divide the series, on a series of ties
    rng = np.random.default_rng(window)
    x = rng.integers(0, 6, size=(150, 3)).astype(float)
    x[rng.random(x.shape) < 0.1] = np.nan
    x[:, 2] = np.arange(150.0)[::-1]  # strictly falling: the extreme leaves every step

    def per_window(fn):
        return lambda s: s.rolling(window).apply(fn, raw=True)

    cases = {
        ops.ts_max: per_window(np.max), ops.ts_min: per_window(np.min),
        ops.ts_argmax: per_window(lambda v: np.argmax(v) + 1),
        ops.ts_argmin: per_window(lambda v: np.argmin(v) + 1),
        ops.ts_rank: per_window(
            lambda v: ((v < v[-1]).sum() + (v <= v[-1]).sum() + 1) / (2 * len(v))),
        ops.ts_median: per_window(np.median),
    }
    for ours, reference in cases.items():
        assert_same(ours(x, window), compressed_reference(x, reference), rtol=0, atol=0)
    for q in (0.0, 0.2, 0.8, 1.0):
        assert_same(ops.ts_quantile(x, window, q),
                    compressed_reference(x, per_window(lambda v, q=q: np.quantile(v, q))),
                    rtol=1e-15, atol=0)


def test_results_do_not_depend_on_memory_order() -> None:
    x = _panel(with_ties=True)
    f = np.asfortranarray(x)
    for fn in (ops.ts_mean, ops.ts_std, ops.ts_max, ops.ts_argmin, ops.ts_rank,
               ops.ts_slope, ops.ts_delay):
        got_c, got_f = fn(x, 5), fn(f, 5)
        np.testing.assert_array_equal(got_c, got_f)
        assert got_f.flags.f_contiguous  # time-series results keep each symbol contiguous
    np.testing.assert_array_equal(ops.ts_corr(x, f[::-1].copy(), 7),
                                  ops.ts_corr(f, x[::-1].copy(), 7))
    np.testing.assert_array_equal(ops.cs_rank(f), ops.cs_rank(x))


def test_ts_ema_matches_talib_seeded_with_sma() -> None:
    import talib

    x = _panel()
    want = compressed_reference(x, lambda s: talib.EMA(s.to_numpy(), timeperiod=7))
    assert_same(ops.ts_ema(x, 7), want, rtol=1e-12)


def test_ts_corr_cov_match_pandas_on_jointly_finite_rows() -> None:
    x = _panel()
    y = _panel() * 0.5 + RNG.normal(size=(T, N))
    # exact per-window references: pandas' rolling corr/cov lose up to 1e-6 relative at the
    # 1e4 offset of column 1, by an amount that depends on the pandas version
    want_corr = compressed_reference(x, lambda a, b: _rolling_pair(a, b, "corr"), y)
    want_cov = compressed_reference(x, lambda a, b: _rolling_pair(a, b, "cov"), y)
    assert_same(ops.ts_corr(x, y, W), want_corr, rtol=1e-8)
    assert_same(ops.ts_cov(x, y, W), want_cov, rtol=1e-8, atol=1e-7)


def test_ts_count_counts_nonzero_among_last_observations() -> None:
    cond = (RNG.random((T, N)) < 0.4).astype(float)
    cond[RNG.random((T, N)) < 0.1] = np.nan
    want = compressed_reference(cond, lambda s: (s != 0).astype(float).rolling(5).sum())
    assert_same(ops.ts_count(cond, 5), want)
    boolean = np.array([True, False, True, True])
    assert ops.ts_count(boolean, 3).tolist()[2:] == [2.0, 2.0]


def test_nan_policy_hand_case() -> None:
    x = np.array([1.0, 2.0, np.nan, np.nan, 4.0, np.nan, 8.0, 16.0])
    nan = np.nan
    np.testing.assert_allclose(ops.ts_mean(x, 3), [nan, nan, nan, nan, 7 / 3, nan, 14 / 3, 28 / 3],
                               rtol=1e-15)
    assert np.array_equal(ops.ts_delay(x, 2), [nan, nan, nan, nan, 1.0, nan, 2.0, 4.0],
                          equal_nan=True)
    assert np.array_equal(ops.ts_max(x, 2), [nan, 2.0, nan, nan, 4.0, nan, 8.0, 16.0],
                          equal_nan=True)
    # a column that never fills its window stays NaN; an all-NaN column is fine
    assert np.isnan(ops.ts_mean(np.array([[1.0, np.nan], [2.0, np.nan]]), 3)).all()


def test_hand_cases_rank_argmax_quantile() -> None:
    x = np.array([2.0, 1.0, 2.0, 3.0, 3.0])
    # window [2,1,2] newest 2: left=1 right=3 -> (1+3+1)/6
    assert ops.ts_rank(x, 3)[2] == pytest.approx(5 / 6)
    assert ops.ts_argmax(x, 3)[2:].tolist() == [1.0, 3.0, 2.0]  # first occurrence of ties
    assert ops.ts_argmin(x, 3)[2:].tolist() == [2.0, 1.0, 1.0]
    assert ops.ts_quantile(x, 4, 0.5)[3] == pytest.approx(2.0)
    assert ops.ts_rank(np.array([5.0]), 1)[0] == 1.0


def test_large_offset_tiny_variance_long_series_no_drift() -> None:
    n = 50_000
    rng = np.random.default_rng(3)
    x = 1e4 + 1e-3 * rng.normal(size=n) + np.linspace(0, 5e3, n)  # trend + tiny noise
    w = 20
    windows = np.lib.stride_tricks.sliding_window_view(x, w)
    exact_mean = windows.mean(axis=1)
    exact_std = np.sqrt(((windows - exact_mean[:, None]) ** 2).sum(axis=1) / (w - 1))
    np.testing.assert_allclose(ops.ts_mean(x, w)[w - 1:], exact_mean, rtol=1e-14)
    np.testing.assert_allclose(ops.ts_std(x, w)[w - 1:], exact_std, rtol=1e-7)
    slope = ops.ts_slope(x, w)[w - 1:]
    np.testing.assert_allclose(slope[-5:], [_ols(v, "slope") for v in windows[-5:]], rtol=1e-6)


def test_constant_windows() -> None:
    x = np.r_[np.full(12, 1234.5678), np.arange(5.0)]
    assert (ops.ts_std(x, 10)[9:12] == 0.0).all()
    assert (ops.ts_var(x, 10)[9:12] == 0.0).all()
    assert np.isnan(ops.ts_corr(x, np.arange(17.0), 10)[9:12]).all()
    assert np.isnan(ops.ts_rsquare(x, 10)[9:12]).all()
    assert np.isnan(ops.ts_skew(x, 10)[9:12]).all()
    assert (ops.ts_slope(x, 10)[9:12] == 0.0).all()


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "5", None])
def test_window_validation_names_parameter(bad) -> None:
    with pytest.raises(ParameterError, match="window"):
        ops.ts_mean(np.ones((5, 2)), bad)
    with pytest.raises(ValueError, match="window"):
        ops.ts_corr(np.ones((5, 2)), np.ones((5, 2)), bad)


def test_other_parameter_validation() -> None:
    x = np.ones((5, 2))
    with pytest.raises(ParameterError, match="q must"):
        ops.ts_quantile(x, 3, 1.5)
    with pytest.raises(ParameterError, match="span"):
        ops.ts_ema(x, 0)
    with pytest.raises(ParameterError, match="d must"):
        ops.ts_delay(x, 0)
    with pytest.raises(ParameterError, match="ddof"):
        ops.ts_std(x, 3, ddof=-1)
    with pytest.raises(DataError, match=r"same shape.*\(5, 2\) and \(4, 2\)"):
        ops.ts_corr(x, np.ones((4, 2)), 3)
    with pytest.raises(DataError, match="2-D"):
        ops.ts_mean(np.ones((2, 2, 2)), 2)


def test_one_dimensional_input_round_trips() -> None:
    s = np.arange(6.0)
    out = ops.ts_mean(s, 2)
    assert out.shape == (6,)
    assert out.tolist()[1:] == [0.5, 1.5, 2.5, 3.5, 4.5]
    assert ops.ts_mean([1.0, 2.0], 1).tolist() == [1.0, 2.0]


# ------------------------------------------------------------------------------------------
# cross section
# ------------------------------------------------------------------------------------------
def _cs_panel() -> np.ndarray:
    x = np.round(RNG.normal(size=(40, 30)), 1)  # ties
    x[RNG.random(x.shape) < 0.15] = np.nan
    x[5, :] = np.nan
    x[6, 1:] = np.nan  # one finite value
    x[7, :2] = [0.3, -0.2]
    x[7, 2:] = np.nan  # two
    return x


def test_cs_rank_matches_pandas_pct_rank() -> None:
    x = _cs_panel()
    got = ops.cs_rank(x)
    want = pd.DataFrame(x).rank(axis=1, pct=True).to_numpy(copy=True)
    want[np.isfinite(x).sum(axis=1) < 2] = np.nan
    assert_same(got, want, rtol=1e-12)
    assert np.isnan(got[6]).all()  # single finite value -> NaN (documented)
    assert got[7, :2].tolist() == [1.0, 0.5]


def test_cs_zscore_demean_scale() -> None:
    x = _cs_panel()
    df = pd.DataFrame(x)
    few = np.isfinite(x).sum(axis=1) < 2
    z = df.sub(df.mean(axis=1), axis=0).div(df.std(axis=1, ddof=0), axis=0).to_numpy(copy=True)
    z[few] = np.nan
    assert_same(ops.cs_zscore(x), z, rtol=1e-12)
    z1 = df.sub(df.mean(axis=1), axis=0).div(df.std(axis=1, ddof=1), axis=0).to_numpy(copy=True)
    z1[few] = np.nan
    assert_same(ops.cs_zscore(x, ddof=1), z1, rtol=1e-12)
    d = df.sub(df.mean(axis=1), axis=0).to_numpy(copy=True)
    d[few] = np.nan
    assert_same(ops.cs_demean(x), d, rtol=1e-12, atol=1e-15)
    sc = ops.cs_scale(x, a=2.0)
    ok = ~few
    np.testing.assert_allclose(np.nansum(np.abs(sc[ok]), axis=1), 2.0)
    assert np.isnan(ops.cs_zscore(np.array([[1.0, 1.0, 1.0]]))).all()  # zero dispersion


def test_cs_winsorize_quantile_and_mad() -> None:
    x = _cs_panel()
    few = np.isfinite(x).sum(axis=1) < 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo = np.nanquantile(x, 0.05, axis=1, keepdims=True)
        hi = np.nanquantile(x, 0.95, axis=1, keepdims=True)
        med = np.nanmedian(x, axis=1, keepdims=True)
        mad = np.nanmedian(np.abs(x - med), axis=1, keepdims=True)
    want = np.clip(x, lo, hi)
    want[few] = np.nan
    assert_same(ops.cs_winsorize(x, "quantile", limits=(0.05, 0.95)), want, rtol=1e-12)
    half = np.where(mad > 0, 2.0 * 1.4826 * mad, np.inf)
    want = np.clip(x, med - half, med + half)
    want[few] = np.nan
    assert_same(ops.cs_winsorize(x, "mad", k=2.0), want, rtol=1e-12)
    with pytest.raises(ParameterError, match="method"):
        ops.cs_winsorize(x, "sigma")


def test_cs_neutralize_matches_lstsq() -> None:
    n_dates, n_syms = 8, 25
    x = RNG.normal(size=(n_dates, n_syms))
    mcap = np.exp(RNG.normal(10, 1, size=(n_dates, n_syms)))
    groups = RNG.integers(0, 4, size=n_syms)
    x[0, 3] = np.nan
    mcap[1, 4] = -1.0  # invalid market cap -> missing
    gmat = np.broadcast_to(groups, x.shape).copy()
    gmat[2, 5] = -1  # missing industry
    got = ops.cs_neutralize(x, groups=gmat, mcap=mcap)
    got_g = ops.cs_neutralize(x, groups=groups)
    got_m = ops.cs_neutralize(x, mcap=mcap)
    for i in range(n_dates):
        ok = np.isfinite(x[i]) & (mcap[i] > 0) & (gmat[i] >= 0)
        dummies = (gmat[i][ok][:, None] == np.arange(4)).astype(float)
        for design, res in (
            (np.c_[dummies, np.log(mcap[i][ok])], got[i]),
            (np.c_[np.ones(ok.sum()), np.log(mcap[i][ok])], None),
        ):
            beta, *_ = np.linalg.lstsq(design, x[i][ok], rcond=None)
            if res is not None:
                np.testing.assert_allclose(res[ok], x[i][ok] - design @ beta, atol=1e-10)
                assert np.isnan(res[~ok]).all()
        okg = np.isfinite(x[i])
        dg = (groups[okg][:, None] == np.arange(4)).astype(float)
        beta, *_ = np.linalg.lstsq(dg, x[i][okg], rcond=None)
        np.testing.assert_allclose(got_g[i][okg], x[i][okg] - dg @ beta, atol=1e-10)
        okm = np.isfinite(x[i]) & (mcap[i] > 0)
        dm = np.c_[np.ones(okm.sum()), np.log(mcap[i][okm])]
        beta, *_ = np.linalg.lstsq(dm, x[i][okm], rcond=None)
        np.testing.assert_allclose(got_m[i][okm], x[i][okm] - dm @ beta, atol=1e-10)
    with pytest.raises(ParameterError):
        ops.cs_neutralize(x)
    with pytest.raises(DataError, match="groups"):
        ops.cs_neutralize(x, groups=np.full(n_syms, 0.5))


# ------------------------------------------------------------------------------------------
# element-wise
# ------------------------------------------------------------------------------------------
def test_elementwise_nan_safe_without_warnings() -> None:
    a = np.array([[4.0, -1.0, 0.0, np.nan]])
    b = np.array([[2.0, 0.0, 0.0, 1.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.array_equal(ops.log(a), [[np.log(4.0), np.nan, np.nan, np.nan]], equal_nan=True)
        assert np.array_equal(ops.div(a, b), [[2.0, np.nan, np.nan, np.nan]], equal_nan=True)
        assert np.array_equal(ops.power(a, 0.5), [[2.0, np.nan, 0.0, np.nan]], equal_nan=True)
        assert np.array_equal(ops.gt(a, b), [[1.0, 0.0, 0.0, np.nan]], equal_nan=True)
        assert np.array_equal(ops.le(a, b), [[0.0, 1.0, 1.0, np.nan]], equal_nan=True)
        assert np.array_equal(ops.eq(a, b), [[0.0, 0.0, 1.0, np.nan]], equal_nan=True)
        assert np.array_equal(ops.ne(a, b), [[1.0, 1.0, 0.0, np.nan]], equal_nan=True)
        assert np.array_equal(ops.ge(a, 0.0), [[1.0, 0.0, 1.0, np.nan]], equal_nan=True)
        assert np.array_equal(ops.lt(a, 0.0), [[0.0, 1.0, 0.0, np.nan]], equal_nan=True)
        assert np.array_equal(ops.where(ops.gt(a, b), a, b), [[4.0, 0.0, 0.0, np.nan]],
                              equal_nan=True)
        assert np.array_equal(ops.max(a, b), [[4.0, 0.0, 0.0, np.nan]], equal_nan=True)
        assert np.array_equal(ops.min(a, b), [[2.0, -1.0, 0.0, np.nan]], equal_nan=True)
        assert np.array_equal(ops.abs(a), [[4.0, 1.0, 0.0, np.nan]], equal_nan=True)
        assert np.array_equal(ops.sign(a), [[1.0, -1.0, 0.0, np.nan]], equal_nan=True)
        assert np.array_equal(ops.add(a, b), a + b, equal_nan=True)
        assert np.array_equal(ops.sub(a, b), a - b, equal_nan=True)
        assert np.array_equal(ops.mul(a, 2), a * 2, equal_nan=True)
    # the builtins remain usable by callers
    assert abs(-1) == 1 and max(1, 2) == 2


def test_read_only_and_non_contiguous_inputs() -> None:
    x = _panel()
    ro = x.copy()
    ro.setflags(write=False)
    assert_same(ops.ts_mean(ro, 5), ops.ts_mean(x, 5))
    fortran = np.asfortranarray(x)
    assert_same(ops.ts_rank(fortran, 5), ops.ts_rank(x, 5))
    assert_same(ops.ts_mean(x[:, ::2], 5), ops.ts_mean(x, 5)[:, ::2])
    assert_same(ops.ts_mean(x.astype(np.float32), 5),
                ops.ts_mean(x.astype(np.float32).astype(np.float64), 5))


def test_window_longer_than_history_is_all_nan_without_huge_buffers() -> None:
    x = _panel()[:20]
    for fn in (ops.ts_rank, ops.ts_median, ops.ts_max, ops.ts_std, ops.ts_mean):
        assert np.isnan(fn(x, 10**9)).all()
