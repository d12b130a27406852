"""Long-short portfolios: top-k long / bottom-k short, dollar-neutral, where shorts are allowed.

The figures of the small cases are computed by hand in the comments.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from qilin.backtest.portfolio import run_portfolio
from qilin.data.panel import Panel
from qilin.errors import BacktestError

NO_COSTS = {"slippage_bps": 0.0, "commission_rate": 0.0, "min_commission": 0.0,
            "stamp_duty_rate": 0.0}


def _panel() -> Panel:
    close = np.array([[10.0, 20.0], [11.0, 18.0], [11.0, 18.0], [10.0, 20.0]])
    return Panel.from_arrays({"close": close}, pd.bdate_range("2024-01-01", periods=4),
                             ["A", "B"])


def test_hand_computed_long_short_book():
    p = _panel()
    nan = np.nan
    # day 0: A best (long), B worst (short); day 2: reversed; other days no rebalance
    scores = np.array([[2.0, 1.0], [nan, nan], [1.0, 2.0], [nan, nan]])
    res = run_portfolio(p, scores=scores, top_k=1, short_k=1, market="us", init_cash=1000.0,
                        costs=NO_COSTS)
    # day 0: E = 1000, long A floor(500 / 10) = 50, short B floor(500 / 20) = 25
    #        cash = 1000 + 25 * 20 - 50 * 10 = 1000, equity = 1000 + 500 - 500 = 1000
    # day 1: equity = 1000 + 50 * 11 - 25 * 18 = 1100
    # day 2: E = 1100: long B floor(550 / 18) = 30, short A floor(550 / 11) = 50
    #        sell A 50 + 50 = 100 (cash 2100), buy B 25 + 30 = 55 (cash 2100 - 990 = 1110)
    #        equity = 1110 + 30 * 18 - 50 * 11 = 1100
    # day 3: equity = 1110 + 30 * 20 - 50 * 10 = 1210
    np.testing.assert_allclose(res.equity[:, 0], [1000.0, 1100.0, 1100.0, 1210.0])
    np.testing.assert_allclose(res.positions, [[50, -25], [50, -25], [-50, 30], [-50, 30]])
    np.testing.assert_allclose(res.value[3], [-500.0, 600.0])
    trades = res.trades[["symbol", "side", "quantity", "price", "status"]].values.tolist()
    assert trades == [["A", "buy", 50.0, 10.0, "filled"], ["B", "sell", 25.0, 20.0, "filled"],
                      ["A", "sell", 100.0, 11.0, "filled"], ["B", "buy", 55.0, 18.0, "filled"]]
    met = res.metrics().iloc[0]
    assert met["total_return"] == pytest.approx(0.21)
    np.testing.assert_allclose(res.returns[:, 0], [0.0, 0.1, 0.0, 0.1])
    assert met["max_drawdown"] == 0.0
    assert met["trade_count"] == 4
    # net exposure of a dollar-neutral book is about 0 on its rebalance days
    assert abs(res.exposure[0, 0]) < 1e-12


def test_short_round_trip_and_losing_short():
    p = _panel()
    nan = np.nan
    # short A from day 0 (A rises 10 -> 11: a loss), flat on day 2 (weights 0)
    w = np.array([[-0.5, 0.0], [nan, nan], [0.0, 0.0], [nan, nan]])
    res = run_portfolio(p, weights=w, market="us", init_cash=1000.0, costs=NO_COSTS)
    # day 0: short 50 A at 10 (cash 1500), day 1: equity 1500 - 550 = 950
    # day 2: cover 50 at 11 (cash 950), flat
    np.testing.assert_allclose(res.equity[:, 0], [1000.0, 950.0, 950.0, 950.0])
    trips = res.round_trips()
    assert len(trips) == 1 and trips["pnl"].iloc[0] == pytest.approx(-50.0)
    assert trips["return"].iloc[0] == pytest.approx(-0.1)  # over the sale proceeds
    assert res.metrics().iloc[0]["win_rate"] == 0.0


def test_a_share_profile_refuses_shorts():
    p = _panel()
    scores = np.array([[2.0, 1.0]] * 4)
    with pytest.raises(BacktestError, match="does not allow short selling"):
        run_portfolio(p, scores=scores, top_k=1, short_k=1, market="cn")
    with pytest.raises(BacktestError, match="does not allow short selling"):
        run_portfolio(p, weights=np.array([[0.5, -0.5]] * 4), market="cn")
    with pytest.raises(BacktestError, match=r"sum to 1.3 > 1 in absolute value"):
        run_portfolio(p, weights=np.array([[0.8, -0.5]] * 4), market="us")
    with pytest.raises(BacktestError, match="short_k"):
        run_portfolio(p, scores=scores, short_k=-1, market="us")


def test_long_only_unchanged_and_short_leg_avoids_long_names(sp500_path):
    syms = ["AAPL", "MSFT", "XOM", "GE", "JPM", "NFLX", "KO", "PFE"]
    df = pd.read_parquet(sp500_path, filters=[("symbol", "in", syms)])
    panel = Panel.from_long(df[df["date"] >= "2016-01-01"])
    close = pd.DataFrame(np.asarray(panel["close"]))
    scores = (close / close.shift(20) - 1).to_numpy()
    ls = run_portfolio(panel, scores=scores, top_k=2, short_k=2, rebalance=20, market="us")
    pos = ls.positions
    assert (pos > 0).sum(axis=1).max() == 2 and (pos < 0).sum(axis=1).max() == 2
    assert not ((pos > 0) & (pos < 0)).any()
    long_value = np.where(ls.value > 0, ls.value, 0).sum(axis=1)
    short_value = np.where(ls.value < 0, ls.value, 0).sum(axis=1)
    reb = np.flatnonzero(np.abs(ls.traded[:, 0]) > 0)[1:]  # dollar-neutral after trading
    np.testing.assert_allclose(long_value[reb], -short_value[reb], rtol=0.02)
    assert np.isfinite(ls.metrics().to_numpy(dtype=float)[:, :7]).all()
    long_only = run_portfolio(panel, scores=scores, top_k=2, rebalance=20, market="us")
    assert (long_only.positions >= 0).all()
