"""Strategy templates: signals against TA-Lib, parameter checks, momentum top-k."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from qilin.backtest.strategies import MomentumTopK, get_strategy, signal_close
from qilin.backtest.sweeps import combination_returns, run_sweep
from qilin.config import load_market
from qilin.data.panel import Panel
from qilin.data.synthetic import synthetic_market
from qilin.errors import BacktestError


@pytest.fixture(scope="module")
def one_symbol() -> Panel:
    rng = np.random.default_rng(4)
    close = 20 * np.exp(np.cumsum(rng.normal(0, 0.02, 260)))
    return Panel.from_arrays({"close": close[:, None]}, pd.bdate_range("2020-01-01",
                                                                       periods=260), ["X"])


def test_ma_cross_signals_match_talib(one_symbol):
    import talib

    x = one_symbol["close"][:, 0]
    for ma, fn in (("sma", talib.SMA), ("ema", talib.EMA)):
        entries, exits = get_strategy("ma_cross").signals(one_symbol, fast=5, slow=21, ma=ma)
        f, s = fn(x, 5), fn(x, 21)
        with np.errstate(invalid="ignore"):
            np.testing.assert_array_equal(entries[:, 0], f > s)
            np.testing.assert_array_equal(exits[:, 0], f < s)
        assert entries[:20].sum() == 0 and entries.any() and exits.any()


def test_rsi_and_bollinger_signals_match_talib(one_symbol):
    import talib

    x = one_symbol["close"][:, 0]
    e, xt = get_strategy("rsi").signals(one_symbol, window=10, lower=35, upper=60)
    rsi = talib.RSI(x, 10)
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(e[:, 0], rsi < 35)
        np.testing.assert_array_equal(xt[:, 0], rsi > 60)
    up, mid, lo = talib.BBANDS(x, 15, 1.5, 1.5)
    e, xt = get_strategy("bollinger").signals(one_symbol, window=15, k=1.5, mode="reversion")
    # a cell this close to the band could flip on rounding between the two implementations
    near = np.abs(x - lo) < 1e-9 * x
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(e[~near, 0], (x < lo)[~near])
        np.testing.assert_array_equal(xt[:, 0], x > mid)
    e, xt = get_strategy("bollinger").signals(one_symbol, window=15, k=1.5, mode="breakout")
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(e[:, 0], x > up)
        np.testing.assert_array_equal(xt[:, 0], x < mid)


def test_signals_use_back_adjusted_close():
    panel = synthetic_market(8, 200, seed=3)
    af = np.asarray(panel["adj_factor"])
    assert (np.nanmax(af, axis=0) > np.nanmin(af, axis=0)).any()
    adjusted = panel.with_fields(close=signal_close(panel), adj_factor=np.where(
        np.asarray(panel.valid), 1.0, np.nan))
    s = get_strategy("ma_cross")
    a = s.signals(panel, fast=3, slow=12)
    b = s.signals(adjusted, fast=3, slow=12)
    np.testing.assert_array_equal(a[0], b[0])
    raw = panel.with_fields(adj_factor=np.ones_like(af))
    assert not np.array_equal(s.signals(raw, fast=3, slow=12)[0], a[0])


def test_parameter_checks():
    s = get_strategy("ma_cross")
    with pytest.raises(BacktestError, match="fast=20 must be below slow=10"):
        s.check({"fast": 20, "slow": 10})
    with pytest.raises(BacktestError, match="missing parameter"):
        s.check({"fast": 2})
    with pytest.raises(BacktestError, match="unknown parameter"):
        s.check({"fast": 2, "slow": 5, "window": 3})
    with pytest.raises(BacktestError, match="positive integer"):
        s.check({"fast": 2.5, "slow": 5})
    with pytest.raises(BacktestError, match="lower < upper"):
        get_strategy("rsi").check({"window": 14, "lower": 70, "upper": 30})
    with pytest.raises(BacktestError, match="mode"):
        get_strategy("bollinger").check({"mode": "sideways"})
    assert get_strategy("rsi").series_keys({"window": 9}) == [("rsi", 9)]
    assert get_strategy("bollinger").series_keys({}) == [("sma", 20), ("std", 20),
                                                         ("close", 0)]


def test_momentum_targets_pick_top_k():
    panel = synthetic_market(10, 90, seed=6)
    m = MomentumTopK()
    sc = m.scores(panel, 10)
    px = signal_close(panel)
    np.testing.assert_allclose(sc[40], px[40] / px[30] - 1, equal_nan=True)  # no gaps there
    w = m.targets(panel, lookback=10, k=3, rebalance=15)
    for t in range(90):
        if t % 15 or not np.isfinite(sc[t]).any():
            assert np.isnan(w[t]).all()
            continue
        ok = np.asarray(panel.valid)[t] & np.isfinite(sc[t])
        top = set(np.argsort(-np.where(ok, sc[t], -np.inf))[:3])
        assert set(np.flatnonzero(w[t] > 0)) == top
        assert w[t].sum() == pytest.approx(1.0)


def test_topk_sweep_matches_the_portfolio_engine():
    """Each row is run_portfolio on the template's targets (synthetic A-shares: lots, min
    commission, limits, suspensions, corporate actions). This replaced a test of the old
    weight-drift kernel, whose results disagreed with the engine (issue 10)."""
    from qilin.backtest.portfolio import run_portfolio

    panel = synthetic_market(15, 160, seed=8)
    cn = load_market("cn")
    res = run_sweep(panel, "momentum_topk", "lookback=5,20 k=2,5 rebalance=1,10",
                    market=cn, backend="cpu")
    assert len(res.table) == 8
    for params in ({"lookback": 5, "k": 2, "rebalance": 1},
                   {"lookback": 20, "k": 5, "rebalance": 10}):
        got = combination_returns(panel, "momentum_topk", params, market=cn).to_numpy()
        ref = run_portfolio(panel, weights=MomentumTopK().targets(panel, **params),
                            rebalance=1, market=cn)
        np.testing.assert_allclose(got, ref.returns[:, 0], rtol=1e-12, atol=1e-15)
        assert (ref.trades["status"] == "filled").sum() > 0
    daily = res.table.set_index(["lookback", "k", "rebalance"])["turnover"]
    assert daily.loc[(5, 2, 1)] > daily.loc[(5, 2, 10)] > 0
