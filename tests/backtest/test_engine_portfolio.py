"""Portfolio mode against hand cases and a plain per-bar Python reference on real data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from realdata import load_subset

from qilin.backtest.engine import run_portfolio, select_top_k
from qilin.config import load_market
from qilin.data.boards import limit_pct_matrix
from qilin.data.panel import Panel
from qilin.errors import BacktestError

ASHARE_SYMBOLS = ["000001.SZ", "600519.SH", "300014.SZ", "688005.SH", "600289.SH",
                  "000410.SZ", "002540.SZ", "603988.SH", "000607.SZ", "600000.SH",
                  "000002.SZ", "600036.SH"]
SP_SYMBOLS = ["AAPL", "MSFT", "XOM", "GE", "LNT", "DISCA", "AMZN", "JPM", "KO", "PFE"]


@pytest.fixture(scope="module")
def ashare(ashare_path) -> Panel:
    return load_subset(ashare_path, ASHARE_SYMBOLS, "2019-01-01", "2021-12-31")


@pytest.fixture(scope="module")
def sp500(sp500_path) -> Panel:
    return load_subset(sp500_path, SP_SYMBOLS)


# ------------------------------------------------------------------ the reference
def ref_select(score, eligible, prev, k, n_drop, band):
    ranked = sorted((j for j in range(len(score)) if eligible[j]), key=lambda j: (-score[j], j))
    rank = {j: r for r, j in enumerate(ranked)}
    keep = [j for j in sorted(prev) if j in rank]
    if n_drop is None:
        keep = [j for j in keep if rank[j] < k + band]
    else:
        out = sorted((j for j in keep if rank[j] >= k), key=lambda j: -rank[j])[:n_drop]
        keep = [j for j in keep if j not in out]
    keep = sorted(keep, key=rank.get)[:k]
    for j in ranked:
        if len(keep) >= k:
            break
        if j not in keep:
            keep.append(j)
    return set(keep)


def reference_portfolio(panel, scores, market, top_k, n_drop=None, band=0, rebalance=1,
                        lag=0, price="close", init_cash=1e6, max_weight=1.0):
    m = load_market(market)
    s = m.slippage_bps / 1e4
    lot = m.lot_size
    close = np.asarray(panel["close"], dtype=float)
    px_all = np.asarray(panel[price], dtype=float)
    valid = np.asarray(panel.valid)
    T, N = close.shape
    adj = np.asarray(panel["adj_factor"]) if "adj_factor" in panel else np.ones((T, N))
    if m.price_limits:
        pre = np.asarray(panel["preclose"], dtype=float) if "preclose" in panel else \
            pd.DataFrame(close).ffill().shift(1).to_numpy()
        pct = limit_pct_matrix(panel.symbols, panel.dates, is_st=np.asarray(panel.st))
        up = np.floor(pre * (1 + pct) * 100 + 0.5 + 1e-9) / 100
        down = np.floor(pre * (1 - pct) * 100 + 0.5 + 1e-9) / 100
    # targets on signal dates
    first = next(t for t in range(T) if np.isfinite(scores[t]).any())
    plans = {}
    prev: set[int] = set()
    for t in range(first, T, rebalance):
        if not np.isfinite(scores[t]).any():
            continue
        elig = [bool(np.isfinite(scores[t, j]) and valid[t, j]) for j in range(N)]
        sel = ref_select(scores[t], elig, prev, top_k, n_drop, band)
        prev = sel
        plans[t + lag + (1 if price == "open" else 0)] = {
            j: min(1.0 / len(sel), max_weight) for j in sel}
    cash = init_cash
    qty = [0.0] * N
    last = [math.nan] * N
    prev_adj = [math.nan] * N
    goal = [0.0] * N
    todo = [False] * N
    equity = np.zeros(T)
    for i in range(T):
        for j in range(N):
            if valid[i, j] and math.isfinite(adj[i, j]):
                if qty[j] and math.isfinite(prev_adj[j]):
                    qty[j] *= adj[i, j] / prev_adj[j]
                prev_adj[j] = adj[i, j]
        if i in plans:
            for j in range(N):
                goal[j] = plans[i].get(j, 0.0)
                todo[j] = goal[j] > 0 or qty[j] != 0
        px = [px_all[i, j] if valid[i, j] else math.nan for j in range(N)]
        ok = [math.isfinite(p) and p > 0 for p in px]
        if any(todo):
            eq = cash + sum(qty[j] * (px[j] if ok[j] else last[j]) for j in range(N) if qty[j])
            want = [math.floor(goal[j] * eq / (px[j] * (1 + s) * (1 + m.commission_rate)) / lot)
                    * lot if ok[j] and goal[j] > 0 else 0.0 for j in range(N)]
            for j in range(N):  # sells
                if todo[j] and ok[j] and want[j] < qty[j] - 1e-9:
                    if m.price_limits and px[j] <= down[i, j] + 1e-9:
                        continue
                    n = qty[j] if want[j] == 0 else math.floor(
                        (qty[j] - want[j]) / lot + 1e-9) * lot
                    if n > 0:
                        fill = px[j] * (1 - s)
                        cash += n * fill - max(m.commission_rate * n * fill, m.min_commission) \
                            - m.stamp_duty_rate * n * fill
                        qty[j] = qty[j] - n if qty[j] - n > 1e-9 else 0.0
                    todo[j] = False
                elif todo[j] and ok[j] and want[j] <= qty[j] + 1e-9:
                    todo[j] = False
            buys = {}
            for j in range(N):
                if todo[j] and ok[j] and want[j] > qty[j] + 1e-9 and not (
                        m.price_limits and px[j] >= up[i, j] - 1e-9):
                    n = math.floor((want[j] - qty[j]) / lot + 1e-9) * lot
                    if n <= 0:
                        todo[j] = False
                    else:
                        buys[j] = n
            need = sum(n * px[j] * (1 + s) + max(m.commission_rate * n * px[j] * (1 + s),
                                                 m.min_commission) for j, n in buys.items())
            if need > cash:
                buys = {j: math.floor(n * max(cash, 0.0) / need / lot) * lot
                        for j, n in buys.items()}
            for j, n in buys.items():
                fill = px[j] * (1 + s)
                while n > 0 and cash - n * fill - max(m.commission_rate * n * fill,
                                                      m.min_commission) < 0:
                    n -= lot
                if n > 0:
                    cash -= n * fill + max(m.commission_rate * n * fill, m.min_commission)
                    qty[j] += n
                    todo[j] = False
        for j in range(N):
            if valid[i, j]:
                last[j] = close[i, j]
        equity[i] = cash + sum(qty[j] * last[j] for j in range(N) if qty[j])
    return equity


def momentum_scores(panel, lookback=20):
    adj = pd.DataFrame(np.asarray(panel.adjusted()["close"])).ffill()
    sc = adj.pct_change(lookback, fill_method=None).to_numpy().copy()
    sc[~np.asarray(panel.valid)] = np.nan
    return sc


# ------------------------------------------------------------------ tests
@pytest.mark.parametrize("kw", [
    dict(top_k=4, rebalance=5),
    dict(top_k=4, rebalance=5, band=2, price="open"),
    dict(top_k=5, rebalance=3, n_drop=1, lag=1),
    dict(top_k=3, rebalance=10, max_weight=0.25),
])
def test_ashare_matches_reference(ashare, kw):
    sc = momentum_scores(ashare)
    res = run_portfolio(ashare, scores=sc, market="cn", **kw)
    ref = reference_portfolio(ashare, sc, "cn", **kw)
    np.testing.assert_allclose(res.equity[:, 0], ref, rtol=1e-10)
    filled = res.trades[res.trades["status"] == "filled"]
    assert len(filled) > 50
    assert (filled[filled["side"] == "buy"]["quantity"] % 100 == 0).all()
    assert not filled.duplicated(["date", "symbol"]).any()  # T+1 by construction


def test_sp500_matches_reference(sp500):
    sc = momentum_scores(sp500, 60)
    res = run_portfolio(sp500, scores=sc, market="us", top_k=3, rebalance=21)
    ref = reference_portfolio(sp500, sc, "us", top_k=3, rebalance=21)
    np.testing.assert_allclose(res.equity[:, 0], ref, rtol=1e-10)
    assert res.metrics()["trade_count"].iloc[0] == (res.trades["status"] == "filled").sum()


def test_selection_band_and_dropout_by_hand():
    s = np.array([9.0, 8.0, 7.0, 6.0, 5.0, 4.0])
    ok = np.ones(6, bool)
    prev = np.array([0, 0, 0, 1, 1, 1], bool)  # held: ranks 3, 4, 5
    assert select_top_k(s, ok, prev, 3).tolist() == [1, 1, 1, 0, 0, 0]
    assert select_top_k(s, ok, prev, 3, band=2).tolist() == [1, 0, 0, 1, 1, 0]
    assert select_top_k(s, ok, prev, 3, n_drop=1).tolist() == [1, 0, 0, 1, 1, 0]
    assert select_top_k(s, ok, prev, 3, n_drop=2).tolist() == [1, 1, 0, 1, 0, 0]
    ok[3] = False  # an untradable held name is always replaced
    assert select_top_k(s, ok, prev, 3, n_drop=0).tolist() == [1, 0, 0, 0, 1, 1]


def test_weights_mode_max_weight_and_cash_remainder():
    close = np.array([[10.0, 20.0, 50.0], [10.0, 20.0, 50.0], [11.0, 20.0, 50.0]])
    p = Panel.from_arrays({"close": close}, pd.date_range("2024-01-01", periods=3),
                          ["A", "B", "C"])
    w = np.array([[0.6, 0.3, 0.0], [np.nan] * 3, [np.nan] * 3])
    res = run_portfolio(p, weights=w, market="us", max_weight=0.5, init_cash=1000.0,
                        costs={"slippage_bps": 0.0})
    assert res.positions[0].tolist() == [50, 15, 0]   # 0.5 (capped) and 0.3 of 1000
    assert res.equity[:, 0].tolist() == [1000.0, 1000.0, 1050.0]
    assert res.exposure[0, 0] == pytest.approx(0.8)
    sc = np.array([[3.0, 1.0, np.nan], [np.nan] * 3, [np.nan] * 3])
    by_score = run_portfolio(p, scores=sc, top_k=2, weighting="score", market="us",
                             init_cash=1000.0, costs={"slippage_bps": 0.0})
    assert by_score.positions[0].tolist() == [75, 12, 0]   # 0.75 and 0.25


def test_limit_up_buy_rejected_then_retried():
    # 600000.SH closes at its +10% limit on day 1: the buy is rejected and filled on day 2
    close = np.array([[10.0], [11.0], [11.5]])
    p = Panel.from_arrays({"close": close}, pd.date_range("2021-01-04", periods=3),
                          ["600000.SH"])
    sc = np.array([[np.nan], [1.0], [np.nan]])
    res = run_portfolio(p, scores=sc, top_k=1, market="cn", init_cash=100_000.0)
    t = res.trades
    assert t["status"].tolist() == ["rejected", "filled"]
    assert t["reason"].tolist() == ["limit_up", ""]
    assert t["date"].tolist() == [p.dates[1], p.dates[2]]


def test_limit_down_sell_retried_until_it_fills():
    # bought on day 0; the rebalance on day 1 sells everything, but 600000.SH closes at its
    # -10% limit on days 1 and 2: the sell stays pending (no new rebalance) and fills on day 3
    close = np.array([[10.0], [9.0], [8.1], [8.0], [8.2]])
    p = Panel.from_arrays({"close": close}, pd.date_range("2021-01-04", periods=5),
                          ["600000.SH"])
    w = np.array([[1.0], [0.0], [np.nan], [np.nan], [np.nan]])
    res = run_portfolio(p, weights=w, market="cn", init_cash=100_000.0)
    t = res.trades
    assert t["side"].tolist() == ["buy", "sell", "sell"]
    assert t["status"].tolist() == ["filled", "rejected", "filled"]
    assert t["reason"].tolist() == ["", "limit_down", ""]
    assert t["date"].tolist() == [p.dates[0], p.dates[1], p.dates[3]]
    assert res.positions[:, 0].tolist()[-2:] == [0.0, 0.0]


def test_bad_inputs():
    p = Panel.from_arrays({"close": np.ones((2, 2))}, pd.date_range("2024-01-01", periods=2),
                          ["A", "B"])
    with pytest.raises(BacktestError, match="exactly one"):
        run_portfolio(p)
    with pytest.raises(BacktestError, match=r"negative weight.*'B'"):
        run_portfolio(p, weights=np.array([[0.5, -0.1], [0.5, 0.5]]))
    with pytest.raises(BacktestError, match="sum to"):
        run_portfolio(p, weights=np.array([[0.8, 0.8], [0.5, 0.5]]))
    with pytest.raises(BacktestError, match="top_k"):
        run_portfolio(p, scores=np.ones((2, 2)), top_k=0)
    with pytest.raises(BacktestError, match="weighting"):
        run_portfolio(p, scores=np.ones((2, 2)), weighting="cap")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_synthetic_market_random_scores_match_reference(seed):
    from qilin.data.synthetic import synthetic_market

    panel = synthetic_market(15, 250, seed=seed)
    rng = np.random.default_rng(seed)
    sc = rng.normal(size=panel.shape)
    sc[rng.random(panel.shape) < 0.1] = np.nan
    kw = dict(top_k=4, rebalance=1 + seed * 2, band=seed, lag=seed % 2,
              price="open" if seed == 1 else "close", init_cash=300_000.0)
    res = run_portfolio(panel, scores=sc, market="cn", **kw)
    ref = reference_portfolio(panel, sc, "cn", **kw)
    np.testing.assert_allclose(res.equity[:, 0], ref, rtol=1e-10)
    assert (res.trades["status"] == "rejected").any()
