"""Metrics against empyrical on real return series, hand-computed cases and NaN handling."""

from __future__ import annotations

import empyrical as ep
import numpy as np
import pandas as pd
import pytest

from qilin.backtest import metrics as M
from qilin.errors import BacktestError


@pytest.fixture(scope="module")
def sp_returns(sp500_path) -> pd.DataFrame:
    symbols = ["AAPL", "XOM", "GE", "LNT", "DISCA", "O", "BHF"]  # O has gaps, BHF lists late
    df = pd.read_parquet(sp500_path, columns=["date", "symbol", "close"],
                         filters=[("symbol", "in", symbols)])
    close = df.pivot(index="date", columns="symbol", values="close")
    return close.pct_change(fill_method=None).iloc[1:]  # NaN where a bar is missing


@pytest.fixture(scope="module")
def cn_pair(ashare_path, sse_index_path) -> tuple[pd.DataFrame, pd.Series]:
    stocks = pd.read_parquet(ashare_path, columns=["date", "symbol", "close"],
                             filters=[("symbol", "in", ["600519.SH", "000001.SZ", "300014.SZ"])])
    r = stocks.pivot(index="date", columns="symbol", values="close").pct_change(
        fill_method=None)
    idx = pd.read_parquet(sse_index_path).set_index("date")["close"].pct_change()
    common = r.index.intersection(idx.index)[1:]
    return r.loc[common], idx.loc[common]


UNARY = [
    ("total_return", lambda r, P: ep.cum_returns_final(r), lambda r, P: M.total_return(r)),
    ("annual_return", lambda r, P: ep.annual_return(r, annualization=P),
     lambda r, P: M.annual_return(r, P)),
    ("annual_volatility", lambda r, P: ep.annual_volatility(r, annualization=P),
     lambda r, P: M.annual_volatility(r, P)),
    ("sharpe_ratio", lambda r, P: ep.sharpe_ratio(r, annualization=P),
     lambda r, P: M.sharpe_ratio(r, P)),
    ("sortino_ratio", lambda r, P: ep.sortino_ratio(r, annualization=P),
     lambda r, P: M.sortino_ratio(r, P)),
    ("max_drawdown", lambda r, P: ep.max_drawdown(r), lambda r, P: M.max_drawdown(r)),
    ("calmar_ratio", lambda r, P: ep.calmar_ratio(r, annualization=P),
     lambda r, P: M.calmar_ratio(r, P)),
    ("downside_risk", lambda r, P: ep.downside_risk(r, annualization=P),
     lambda r, P: M.downside_risk(r, P)),
]


@pytest.mark.parametrize("name,ref,ours", UNARY, ids=[u[0] for u in UNARY])
def test_unary_metrics_match_empyrical_on_sp500(sp_returns, name, ref, ours):
    assert sp_returns.isna().any().any()  # the real series has gaps: NaN handling matters
    for col in sp_returns.columns:
        r = sp_returns[col].to_numpy()
        assert ours(r, 252) == pytest.approx(float(ref(r, 252)), rel=1e-10, abs=1e-14), col
    # 2-D input gives one value per column, equal to the 1-D results
    arr = sp_returns.to_numpy()
    per_col = np.asarray(ours(arr, 252))
    expect = [ours(arr[:, k], 252) for k in range(arr.shape[1])]
    np.testing.assert_allclose(per_col, expect, rtol=1e-12)


def test_benchmark_metrics_match_empyrical_on_cn_pair(cn_pair):
    r, b = cn_pair
    P = 242
    for col in r.columns:
        x = r[col].to_numpy()
        bb = b.to_numpy()
        assert M.beta(x, bb) == pytest.approx(ep.beta(x, bb), rel=1e-10)
        assert M.alpha(x, bb, P) == pytest.approx(ep.alpha(x, bb, annualization=P), rel=1e-10)
        ir = ep.excess_sharpe(x, bb) * np.sqrt(P)
        assert M.information_ratio(x, bb, P) == pytest.approx(ir, rel=1e-10)
        te = np.nanstd(x - bb, ddof=1) * np.sqrt(P)
        assert M.tracking_error(x, bb, P) == pytest.approx(te, rel=1e-12)
    # per-column on 2-D with a 1-D benchmark
    betas = M.beta(r.to_numpy(), b.to_numpy())
    np.testing.assert_allclose(betas, [ep.beta(r[c].to_numpy(), b.to_numpy())
                                       for c in r.columns], rtol=1e-10)
    with pytest.raises(BacktestError, match="benchmark has"):
        M.alpha(r.to_numpy()[:-1], b.to_numpy())


def test_hand_computed_case():
    r = np.array([0.10, -0.20, 0.05, 0.0, 0.10])
    wealth = np.cumprod(1 + r)  # 1.1, 0.88, 0.924, 0.924, 1.0164
    assert M.total_return(r) == pytest.approx(0.0164)
    assert M.annual_return(r, 5) == pytest.approx(0.0164)  # 5 periods = 1 year
    assert M.annual_return(r, 10) == pytest.approx(1.0164 ** 2 - 1)
    assert M.max_drawdown(r) == pytest.approx(0.88 / 1.1 - 1)  # -0.2
    assert M.max_drawdown_duration(r) == 4  # under water from period 2 to 5
    m, sd = r.mean(), r.std(ddof=1)
    assert M.sharpe_ratio(r, 252) == pytest.approx(m / sd * np.sqrt(252))
    dr = np.sqrt(np.mean(np.minimum(r, 0) ** 2)) * np.sqrt(252)
    assert M.sortino_ratio(r, 252) == pytest.approx(m * 252 / dr)
    assert M.calmar_ratio(r, 5) == pytest.approx(0.0164 / 0.2)
    assert M.win_rate(r) == pytest.approx(3 / 5)
    assert M.profit_factor(r) == pytest.approx(0.25 / 0.20)
    assert M.average_trade(r) == pytest.approx(m)
    assert wealth[-1] == pytest.approx(1.0164)


def test_edge_cases_and_nan():
    up = np.array([0.01, 0.02, 0.01])
    assert M.max_drawdown(up) == 0.0
    assert np.isnan(M.calmar_ratio(up))  # no drawdown
    assert M.sortino_ratio(up) == np.inf
    assert M.max_drawdown_duration(up) == 0
    flat = np.zeros(4)
    assert np.isnan(M.sharpe_ratio(flat))
    assert np.isnan(M.sharpe_ratio(np.array([0.01])))  # fewer than 2 periods
    assert np.isnan(M.annual_return(np.array([])))
    assert np.isnan(M.profit_factor(np.array([np.nan, 0.0])))
    assert M.profit_factor(np.array([0.1, np.nan])) == np.inf
    assert np.isnan(M.win_rate(np.array([np.nan])))
    with_nan = np.array([0.01, np.nan, -0.02, 0.03])
    assert M.total_return(with_nan) == pytest.approx(1.01 * 0.98 * 1.03 - 1)
    assert M.sharpe_ratio(with_nan) == pytest.approx(ep.sharpe_ratio(with_nan))
    assert M.win_rate(with_nan) == pytest.approx(2 / 3)
    two = np.column_stack([with_nan, [*up.tolist(), 0.0]])
    assert M.max_drawdown_duration(two).tolist() == [1, 0]


def test_summary_table(sp_returns, cn_pair):
    s = M.summary(sp_returns.to_numpy(), periods_per_year=252,
                  turnover=np.full(sp_returns.shape, 0.1))
    assert list(s.columns[:10]) == list(M.METRIC_NAMES)
    assert s["turnover"].tolist() == pytest.approx([0.1] * sp_returns.shape[1])
    assert s["sharpe_ratio"].to_numpy() == pytest.approx(
        np.asarray(M.sharpe_ratio(sp_returns.to_numpy(), 252)))
    r, b = cn_pair
    sb = M.summary(r.to_numpy(), 242, benchmark=b.to_numpy())
    assert set(M.BENCHMARK_METRICS) <= set(sb.columns)
    assert sb["alpha"].iloc[0] == pytest.approx(
        ep.alpha(r.iloc[:, 0].to_numpy(), b.to_numpy(), annualization=242))


def test_cupy_arrays(gpu, sp_returns):
    import cupy as cp

    arr = sp_returns.to_numpy()
    for fn in (M.total_return, M.max_drawdown, M.sharpe_ratio, M.sortino_ratio,
               M.annual_return, M.calmar_ratio):
        np.testing.assert_allclose(cp.asnumpy(fn(cp.asarray(arr))), fn(arr), rtol=1e-10)
    assert M.sharpe_ratio(cp.asarray(arr[:, 0])) == pytest.approx(M.sharpe_ratio(arr[:, 0]))
