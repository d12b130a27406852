"""The opt-in Qlib window policy (issue 10): calendar windows with gaps, ``min_periods=1``.

A suspended stock is the case where the two policies differ. The reference implements Qlib's
semantics independently with pandas, per symbol on its calendar series from its first bar
(suspended days are NaN rows): ``rolling(d, min_periods=1)`` for Mean/Std/Sum/Max/Min/
Quantile/Corr, ``rolling.apply(raw=True)`` for Rank/IdxMax/IdxMin/Slope/Rsquare/Resi,
``shift(d)`` for Ref, numpy comparisons (NaN compares False), and Qlib's near-zero-std guard
for Rsquare and Corr.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import percentileofscore

from qilin.cli import main
from qilin.data.panel import Panel
from qilin.errors import ParameterError
from qilin.factors.alpha158 import alpha158_features
from qilin.factors.calculator import FactorCalculator
from qilin.factors.expr import evaluate

FAMILIES = ("ROC", "MA", "STD", "BETA", "RSQR", "RESI", "MAX", "MIN", "QTLU", "QTLD", "RANK",
            "RSV", "IMAX", "IMIN", "IMXD", "CORR", "CORD", "CNTP", "CNTN", "CNTD", "SUMP",
            "SUMN", "SUMD", "VMA", "VSTD", "WVMA", "VSUMP", "VSUMN", "VSUMD")
WINDOWS = (5, 10)


# ------------------------------------------------------------------ a hand-computed case
def _one_stock(close: list[float]) -> Panel:
    c = np.array(close, dtype=float).reshape(-1, 1)
    return Panel.from_arrays({"close": c}, pd.date_range("2024-01-01", periods=len(c)), ["A"])


def test_hand_computed_suspended_stock():
    # traded 10, 11, 12; suspended two days; traded 13, 14
    panel = _one_stock([10, 11, 12, np.nan, np.nan, 13, 14])
    qlib = FactorCalculator({"ma3": "ts_mean(close, 3)", "ref1": "ts_delay(close, 1)",
                             "up3": "ts_mean(close > ts_delay(close, 1), 3)",
                             "max3": "ts_max(close, 3)", "std3": "ts_std(close, 3)"},
                            backend="cpu", progress=False, window_policy="qlib").compute(panel)
    nan = np.nan
    # Qlib: the last 3 calendar days, whatever traded in them, from the first bar on
    np.testing.assert_allclose(qlib["ma3"].ravel(), [10, 10.5, 11, 11.5, 12, 13, 13.5])
    np.testing.assert_allclose(qlib["max3"].ravel(), [10, 11, 12, 12, 12, 13, 14])
    np.testing.assert_allclose(qlib["std3"].ravel(),
                               [nan, np.std([10, 11], ddof=1), 1, np.std([11, 12], ddof=1),
                                nan, nan, np.std([13, 14], ddof=1)])
    # Ref is a calendar shift: the day after the suspension has no previous close
    np.testing.assert_allclose(qlib["ref1"].ravel(), [nan, 10, 11, 12, nan, nan, 13])
    # a NaN comparison is False and counts as a non-up day
    np.testing.assert_allclose(qlib["up3"].ravel(), [0, 0.5, 2 / 3, 2 / 3, 1 / 3, 0, 1 / 3])

    ours = FactorCalculator({"ma3": "ts_mean(close, 3)", "ref1": "ts_delay(close, 1)"},
                            backend="cpu", progress=False).compute(panel)
    # ours: the last 3 traded days, NaN until full and on the suspended days
    np.testing.assert_allclose(ours["ma3"].ravel(), [nan, nan, 11, nan, nan, 12, 13])
    np.testing.assert_allclose(ours["ref1"].ravel(), [nan, 10, 11, nan, nan, 12, 13])


def test_unknown_policy_is_a_parameter_error():
    with pytest.raises(ParameterError, match="window_policy must be one of ours, qlib"):
        FactorCalculator({"a": "close"}, window_policy="pandas")


# --------------------------------------------------------------- the pandas reference
def _panel() -> Panel:
    rng = np.random.default_rng(12)
    T, N = 90, 6
    close = 20 * np.exp(np.cumsum(rng.normal(0, 0.02, size=(T, N)), axis=0))
    close[30:34, 2] = close[29, 2]  # a flat stretch (the std guards)
    spread = np.abs(rng.normal(0, 0.01, size=(T, N))) * close
    fields = {"close": close, "open": close * (1 + rng.normal(0, 0.005, size=(T, N))),
              "high": close + spread, "low": close - spread,
              "volume": rng.integers(1_000, 50_000, size=(T, N)).astype(float)}
    gaps = np.zeros((T, N), dtype=bool)
    gaps[20:25, 0] = True        # a week-long suspension
    gaps[[41, 43, 47], 0] = True  # scattered suspended days
    gaps[:15, 1] = True          # listed on day 15
    gaps[70:, 3] = True          # delisted after day 69
    gaps[55:70, 4] = True        # suspended longer than the largest window
    for f in fields.values():
        f[gaps] = np.nan
    return Panel.from_arrays(fields, pd.date_range("2023-01-02", periods=T, freq="B"),
                             [f"S{i}" for i in range(N)])


class QlibPandas:
    """Qlib's operators on one symbol's calendar series (pandas, min_periods=1)."""

    def __init__(self, d: int) -> None:
        self.d = d

    def roll(self, s: pd.Series) -> pd.core.window.Rolling:
        return s.rolling(self.d, min_periods=1)

    def mean(self, s):
        return self.roll(s).mean()

    def std(self, s):
        return self.roll(s).std()

    def sum(self, s):
        return self.roll(s).sum()

    def max(self, s):
        return self.roll(s).max()

    def min(self, s):
        return self.roll(s).min()

    def quantile(self, s, q):
        return self.roll(s).quantile(q)

    def apply(self, s, fn):
        return self.roll(s).apply(fn, raw=True)

    @staticmethod
    def _fit(x):
        m = ~np.isnan(x)
        if m.sum() < 2:
            return None
        pos = np.arange(len(x), dtype=float)[m]
        slope, intercept = np.polyfit(pos, x[m], 1)
        return slope, intercept, pos, x[m]

    def slope(self, s):
        return self.apply(s, lambda x: np.nan if (f := self._fit(x)) is None else f[0])

    def rsquare(self, s):
        def r2(x):
            f = self._fit(x)
            if f is None:
                return np.nan
            return np.corrcoef(f[2], f[3])[0, 1] ** 2
        out = self.apply(s, r2)
        return out.mask(np.isclose(self.std(s), 0, atol=2e-5))

    def resi(self, s):
        def resi(x):
            f = self._fit(x)
            if f is None or np.isnan(x[-1]):
                return np.nan
            return x[-1] - (f[0] * (len(x) - 1) + f[1])
        return self.apply(s, resi)

    def rank(self, s):
        def rank(x):
            if np.isnan(x[-1]):
                return np.nan
            x1 = x[~np.isnan(x)]
            return percentileofscore(x1, x1[-1]) / 100
        return self.apply(s, rank)

    def idxmax(self, s):
        return self.apply(s, lambda x: x.argmax() + 1)

    def idxmin(self, s):
        return self.apply(s, lambda x: x.argmin() + 1)

    def corr(self, a, b):
        out = self.roll(a).corr(b)
        guard = np.isclose(self.std(a), 0, atol=2e-5) | np.isclose(self.std(b), 0, atol=2e-5)
        return out.mask(guard)


def _gt(a, b):
    return pd.Series(np.greater(a, b).astype(float), index=a.index)


def _features(df: pd.DataFrame, d: int) -> dict[str, pd.Series]:
    """Alpha158's rolling families for one symbol, written with Qlib's operator semantics."""
    q = QlibPandas(d)
    c, h, lo, v = df["close"], df["high"], df["low"], df["volume"]
    ref = c.shift(1)
    vref = v.shift(1)
    delta, vdelta = c - ref, v - vref
    wv = (c / ref - 1).abs() * v
    out = {
        "ROC": c.shift(d) / c, "MA": q.mean(c) / c, "STD": q.std(c) / c,
        "BETA": q.slope(c) / c, "RSQR": q.rsquare(c), "RESI": q.resi(c) / c,
        "MAX": q.max(h) / c, "MIN": q.min(lo) / c,
        "QTLU": q.quantile(c, 0.8) / c, "QTLD": q.quantile(c, 0.2) / c, "RANK": q.rank(c),
        "RSV": (c - q.min(lo)) / (q.max(h) - q.min(lo) + 1e-12),
        "IMAX": q.idxmax(h) / d, "IMIN": q.idxmin(lo) / d,
        "IMXD": (q.idxmax(h) - q.idxmin(lo)) / d,
        "CORR": q.corr(c, np.log(v + 1)),
        "CORD": q.corr(c / ref, np.log(v / vref + 1)),
        "CNTP": q.mean(_gt(c, ref)), "CNTN": q.mean(_gt(ref, c)),
        "CNTD": q.mean(_gt(c, ref)) - q.mean(_gt(ref, c)),
        "SUMP": q.sum(np.maximum(delta, 0)) / (q.sum(delta.abs()) + 1e-12),
        "SUMN": q.sum(np.maximum(-delta, 0)) / (q.sum(delta.abs()) + 1e-12),
        "SUMD": (q.sum(np.maximum(delta, 0)) - q.sum(np.maximum(-delta, 0)))
        / (q.sum(delta.abs()) + 1e-12),
        "VMA": q.mean(v) / (v + 1e-12), "VSTD": q.std(v) / (v + 1e-12),
        "WVMA": q.std(wv) / (q.mean(wv) + 1e-12),
        "VSUMP": q.sum(np.maximum(vdelta, 0)) / (q.sum(vdelta.abs()) + 1e-12),
        "VSUMN": q.sum(np.maximum(-vdelta, 0)) / (q.sum(vdelta.abs()) + 1e-12),
        "VSUMD": (q.sum(np.maximum(vdelta, 0)) - q.sum(np.maximum(-vdelta, 0)))
        / (q.sum(vdelta.abs()) + 1e-12),
    }
    return {f"{k}{d}": val for k, val in out.items()}


@pytest.fixture(scope="module")
def panel() -> Panel:
    return _panel()


@pytest.fixture(scope="module")
def qlib_result(panel):
    factors = alpha158_features(windows=WINDOWS, include=FAMILIES, kbar=False, price=False)
    return FactorCalculator(factors, backend="cpu", progress=False,
                            window_policy="qlib").compute(panel)


def test_alpha158_reproduces_qlib_semantics_on_suspended_stocks(panel, qlib_result):
    checked = 0
    for j, sym in enumerate(panel.symbols):
        rows = np.flatnonzero(np.isfinite(panel["close"][:, j]))
        first, last = rows[0], rows[-1]
        # the symbol's calendar series, from its first to its last bar, NaN when suspended
        df = pd.DataFrame({f: panel[f][first:last + 1, j]
                           for f in ("close", "high", "low", "volume")})
        for d in WINDOWS:
            for name, want in _features(df, d).items():
                got = qlib_result[name][first:last + 1, j]
                # atol: pandas' online rolling std drifts to ~1e-9 on a flat window where
                # the two-pass std is exactly 0
                np.testing.assert_allclose(got, want.to_numpy(), rtol=1e-7, atol=1e-8,
                                           equal_nan=True, err_msg=f"{name} {sym}")
                checked += 1
        assert np.isnan(qlib_result["MA5"][:first, j]).all()
    assert checked == len(panel.symbols) * len(WINDOWS) * len(FAMILIES)


def test_policies_differ_only_where_a_window_meets_a_gap_or_the_warm_up(panel, qlib_result):
    ours = FactorCalculator(alpha158_features(windows=(5,), include=["MA", "MAX", "ROC"],
                                              kbar=False, price=False),
                            backend="cpu", progress=False).compute(panel)
    # symbol S5 never suspends: after the warm-up both policies agree exactly
    for name in ("MA5", "MAX5", "ROC5"):
        np.testing.assert_allclose(ours[name][5:, 5], qlib_result[name][5:, 5], rtol=1e-12)
    # during the warm-up qlib has partial windows, ours NaN (Ref is NaN in both)
    for name in ("MA5", "MAX5"):
        assert np.isnan(ours[name][:4, 5]).all() and np.isfinite(qlib_result[name][:4, 5]).all()
    # S0 after its week-long suspension: qlib's window holds fewer days, ours reaches back
    assert np.isfinite(ours["MA5"][25, 0]) and np.isfinite(qlib_result["MA5"][25, 0])
    assert ours["MA5"][25, 0] != qlib_result["MA5"][25, 0]


def test_evaluate_and_cache_keep_the_policies_apart(panel, tmp_path):
    factors = {"ma": "ts_mean(close, 5) / close"}
    runs = [FactorCalculator(factors, backend="cpu", progress=False, cache_dir=tmp_path,
                             window_policy=p).compute(panel) for p in ("ours", "qlib", "qlib")]
    assert [r.computed for r in runs] == [1, 1, 0]
    assert not np.array_equal(runs[0]["ma"], runs[1]["ma"], equal_nan=True)
    np.testing.assert_array_equal(runs[1]["ma"], runs[2]["ma"])
    from qilin.factors.qlib_window import qlib_registry
    np.testing.assert_array_equal(evaluate("ts_mean(close, 5) / close", panel, qlib_registry()),
                                  runs[1]["ma"])


def test_cli_window_policy(panel, tmp_path, capsys):
    bars = tmp_path / "bars.parquet"
    panel.to_long(["open", "high", "low", "close", "volume"]).to_parquet(bars)
    out = tmp_path / "f.parquet"
    code = main(["factors", "compute", "--data", str(bars), "--factors",
                 "ma = ts_mean(close, 5) / close", "--out", str(out), "--backend", "cpu", "-q",
                 "--validate", "none", "--window-policy", "qlib"])
    assert code == 0
    assert "qlib windows" in capsys.readouterr().out
    got = pd.read_parquet(out).pivot(index="date", columns="symbol", values="ma")
    want = FactorCalculator({"ma": "ts_mean(close, 5) / close"}, backend="cpu", progress=False,
                            window_policy="qlib").compute(panel)["ma"]
    np.testing.assert_allclose(got.to_numpy(), want, rtol=1e-12, equal_nan=True)


def test_qlib_policy_on_a_process_cluster_equals_in_process(panel, qlib_result):
    from distributed import Client, LocalCluster

    factors = alpha158_features(windows=(5,), include=["MA", "QTLU", "IMAX", "CORD", "CNTP"],
                                kbar=False, price=False)
    cluster = LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                           dashboard_address=None, host="127.0.0.1")
    with cluster, Client(cluster) as client:
        got = FactorCalculator([*factors, ("rk", "cs_rank(ts_mean(close, 5))")], client=client,
                               backend="cpu", progress=False, window_policy="qlib",
                               block_symbols=2).compute(panel)
    for name, _ in factors:
        np.testing.assert_array_equal(got[name], qlib_result[name], err_msg=name)
    assert np.isfinite(got["rk"]).any()


def test_real_suspended_a_shares_match_the_reference(ashare_path):
    """Real A-share suspensions (days without a row): back-adjusted, 400 dates, 6 stocks."""
    from qilin.cli.common import load_data

    full = load_data(str(ashare_path), "none")
    panel = full.select(start=full.dates[600], end=full.dates[999])
    close = panel["close"]
    life = np.isfinite(close)
    first = life.argmax(axis=0)
    last = len(close) - 1 - life[::-1].argmax(axis=0)
    gaps = np.array([(~life[f:lst + 1, j]).sum() if life[:, j].any() else 0
                     for j, (f, lst) in enumerate(zip(first, last, strict=True))])
    picks = np.argsort(-gaps, kind="stable")[:6]
    assert gaps[picks].min() > 0  # really suspended stocks
    panel = panel.select(symbols=panel.symbols[np.sort(picks)]).adjusted()
    families = ("MA", "STD", "BETA", "RESI", "QTLU", "RANK", "IMAX", "CORD", "CNTP", "SUMP")
    got = FactorCalculator(alpha158_features(windows=(5, 20), include=families, kbar=False,
                                             price=False),
                           backend="cpu", progress=False, window_policy="qlib").compute(panel)
    for j, sym in enumerate(panel.symbols):
        rows = np.flatnonzero(np.isfinite(panel["close"][:, j]))
        lo, hi = rows[0], rows[-1] + 1
        df = pd.DataFrame({f: panel[f][lo:hi, j] for f in ("close", "high", "low", "volume")})
        for d in (5, 20):
            want = _features(df, d)
            for fam in families:
                np.testing.assert_allclose(got[f"{fam}{d}"][lo:hi, j], want[f"{fam}{d}"],
                                           rtol=1e-7, atol=1e-8, equal_nan=True,
                                           err_msg=f"{fam}{d} {sym}")
