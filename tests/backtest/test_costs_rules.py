"""Costs and A-share market rules: hand cases and real limit-up days of the A-share file."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from qilin.backtest.costs import CostModel
from qilin.backtest.engine import run_signals
from qilin.backtest.rules import MarketRules, limit_arrays, limit_hits, previous_close
from qilin.data.panel import Panel
from qilin.errors import BacktestError


def test_cost_model_from_profiles_and_overrides():
    cn = CostModel.from_market("cn")
    assert (cn.commission_rate, cn.min_commission, cn.slippage_bps, cn.stamp_duty_rate) == \
        (0.0003, 5.0, 5.0, 0.0005)
    us = CostModel.from_market("us", slippage_bps=0.0)
    assert (us.commission_rate, us.min_commission, us.slippage, us.stamp_duty_rate) == \
        (0.0, 0.0, 0.0, 0.0)
    assert cn.fill_price(20.0, buy=True) == pytest.approx(20.01)
    assert cn.fill_price(20.0, buy=False) == pytest.approx(19.99)
    assert cn.commission(10_000.0) == 5.0          # 3.0 < minimum
    assert cn.commission(100_000.0) == pytest.approx(30.0)
    assert cn.commission(0.0) == 0.0               # no order, no minimum
    assert cn.buy_cost(100_000.0) == pytest.approx(30.0)
    assert cn.sell_cost(100_000.0) == pytest.approx(80.0)
    with pytest.raises(BacktestError, match="commission_rate"):
        CostModel(commission_rate=-0.1)
    with pytest.raises(BacktestError, match="slippage_bps"):
        CostModel(slippage_bps=1e4)


def test_market_rules_from_profiles():
    assert MarketRules.from_market("cn") == MarketRules(100, True, True)
    assert MarketRules.from_market("us") == MarketRules(1, False, False, allow_short=True)
    assert MarketRules.from_market("cn").block_zero_volume
    assert not MarketRules.from_market("cn").allow_short
    assert MarketRules.from_market("cn", lot_size=200).lot_size == 200
    with pytest.raises(BacktestError, match="lot_size"):
        MarketRules(lot_size=0)


def _panel(close, symbols, st=None, **fields):
    dates = pd.date_range("2020-08-20", periods=len(close), freq="B")
    arrays = {"close": np.asarray(close, float), **{k: np.asarray(v, float)
                                                    for k, v in fields.items()}}
    return Panel.from_arrays(arrays, dates, symbols, st=st)


def test_limit_prices_by_board_st_and_reform():
    # main, ChiNext (10% before 2020-08-24, 20% after), STAR 20%, Beijing 30%, ST 5%
    close = np.full((4, 5), 10.0)
    st = np.zeros((4, 5), bool)
    st[:, 4] = True
    p = _panel(close, ["600000.SH", "300750.SZ", "688981.SH", "830799.BJ", "600001.SH"], st)
    up, down = limit_arrays(p, MarketRules(price_limits=True))
    assert np.isinf(up[0]).all() and np.isinf(down[0]).all()  # no previous close yet
    # 2020-08-21 (Fri) is before the ChiNext reform, 2020-08-24 (Mon) after
    assert up[1].tolist() == [11.0, 11.0, 12.0, 13.0, 10.5]
    assert up[2].tolist() == [11.0, 12.0, 12.0, 13.0, 10.5]
    assert down[2].tolist() == [9.0, 8.0, 8.0, 7.0, 9.5]
    off_up, off_down = limit_arrays(p, MarketRules(price_limits=False))
    assert np.isposinf(off_up).all() and np.isneginf(off_down).all()


def test_previous_close_prefers_preclose_and_skips_gaps():
    close = np.array([[10.0], [np.nan], [12.0], [12.5]])
    pre = np.array([[np.nan], [np.nan], [10.0], [12.4]])  # an ex-dividend preclose on day 3
    p = _panel(close, ["600000.SH"], preclose=pre)
    assert previous_close(p)[:, 0].tolist()[1:] == [10.0, 10.0, 12.4]
    q = _panel(close, ["600000.SH"])
    assert previous_close(q)[:, 0].tolist()[1:] == [10.0, 10.0, 12.0]


def _real_limit_up_case(path):
    df = pd.read_parquet(path, columns=["date", "symbol", "close", "preclose", "name"])
    from qilin.data.boards import is_st_name, limit_pct_matrix, limit_prices

    symbols = ["000001.SZ", "600519.SH", "601865.SH", "002239.SZ", "600121.SH", "600371.SH"]
    df = df[df["symbol"].isin(symbols) & (df["date"] >= "2019-01-01")]
    pct = np.array([limit_pct_matrix([s], pd.DatetimeIndex([d]), np.array([[is_st_name(n)]]))
                    [0, 0] for s, d, n in zip(df["symbol"], df["date"], df["name"], strict=True)])
    up, _ = limit_prices(df["preclose"].to_numpy(), pct)
    df = df.assign(limit_up=df["close"].to_numpy() >= up - 1e-9)
    return df


def test_real_limit_up_days_block_buys(ashare_path):
    df = _real_limit_up_case(ashare_path)
    hits = df[df["limit_up"]]
    assert len(hits) >= 50  # real limit-up closes exist in this subset
    panel = Panel.from_long(df.drop(columns=["limit_up"]))
    up_hit, _ = limit_hits(panel, MarketRules.from_market("cn"))
    r = panel.dates.get_indexer(hits["date"])
    c = panel.symbols.get_indexer(hits["symbol"])
    assert up_hit[r, c].all()
    assert up_hit.sum() == len(hits)
    # an entry on each limit-up day and an exit on every other day: each entry is rejected
    # on its limit-up day (recorded unless the previous day was a rejected entry as well)
    entries = np.zeros(panel.shape, bool)
    entries[r, c] = True
    res = run_signals(panel, entries=entries, exits=~entries, market="cn")
    t = res.trades.set_index(["date", "symbol"])
    checked = 0
    for i, j in zip(r, c, strict=True):
        if i > 0 and not entries[i - 1, j] and res.positions[i - 1, j] == 0:
            rec = t.loc[(panel.dates[i], panel.symbols[j])]
            assert rec["status"] == "rejected" and rec["reason"] == "limit_up"
            checked += 1
    assert checked >= 30
    filled = res.trades[res.trades["status"] == "filled"]
    fr = panel.dates.get_indexer(filled["date"])
    fc = panel.symbols.get_indexer(filled["symbol"])
    assert not up_hit[fr, fc].any()  # no buy ever filled at the up limit
    assert (filled["quantity"] % 100 == 0).all()
    # the same entries under the US profile (no limits) fill on the limit-up days
    us = run_signals(panel, entries=entries, exits=~entries, market="us")
    assert (us.trades["status"] == "filled").sum() > 0
    assert "limit_up" not in set(us.trades["reason"])


def test_limit_down_blocks_sells_and_suspension_blocks_all():
    close = np.array([[10.0], [10.0], [9.0], [np.nan], [9.5]])
    p = _panel(close, ["600000.SH"])
    target = np.array([[1.0], [0.0], [np.nan], [np.nan], [np.nan]])
    res = run_signals(p, target=target, market="cn", init_cash=100_000.0, lag=1)
    # bought at close 1; the exit executes on day 2 at the down limit (9.00): rejected,
    # day 3 is suspended: rejected, day 4 fills
    t = res.trades
    assert t["reason"].tolist() == ["", "limit_down", "suspended", ""]
    assert t["side"].tolist() == ["buy", "sell", "sell", "sell"]
    assert res.positions[:, 0].tolist()[-1] == 0


def test_lots_and_whole_shares():
    close = np.array([[33.33, 7.77], [34.0, 7.9]])
    p = Panel.from_arrays({"close": close}, pd.date_range("2021-01-04", periods=2),
                          ["600000.SH", "000001.SZ"])
    tgt = np.array([[0.77, 0.5], [np.nan, np.nan]])
    cn = run_signals(p, target=tgt, market="cn", init_cash=123_456.0)
    assert (cn.positions % 100 == 0).all() and (cn.positions > 0).all()
    us = run_signals(p, target=tgt, market="us", init_cash=12_345.0)
    assert (us.positions % 1 == 0).all()
    assert us.positions[0, 0] == np.floor(0.77 * 12_345.0 / (33.33 * 1.0002))
