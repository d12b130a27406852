"""Extreme but valid inputs end in bounded time, with finite results or typed errors.

Prices from 1e-10 to 1e12, cash up to 1e18, an all-NaN symbol, zero-volume stretches, a
single bar and zero rows, through both engines (``run_signals``, ``run_portfolio``) and
every sweep strategy. Before the closed-form buy sizing, 1e18 of cash or a 1e-10 price
made ``affordable_buy_nb`` loop forever (removing a lot from more than 2**53 shares changes
nothing), so every scenario runs in a child process with a hard timeout: a hang fails the
test instead of stalling the suite (a numba loop cannot be interrupted from Python).

Run as a script, this file executes the scenarios and prints one JSON line per scenario.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

TIMEOUT_S = 300
SYMBOLS = ["600000.SH", "000001.SZ", "600519.SH"]  # the last one is all NaN


def _panel(level: float, T: int = 60, zero_volume: tuple[int, int] | None = None) -> object:
    import numpy as np
    import pandas as pd

    from qilin.data.panel import Panel

    t = np.arange(T)[:, None]
    close = level * (1.0 + 0.03 * np.sin(t / 4.0 + np.arange(3)[None, :]))
    close[:, 2] = np.nan
    volume = np.full_like(close, 1000.0)
    volume[:, 2] = np.nan
    if zero_volume is not None:
        volume[zero_volume[0]:zero_volume[1], :2] = 0.0
    return Panel.from_arrays({"close": close, "open": close * 1.001, "volume": volume},
                             pd.bdate_range("2021-01-04", periods=T), SYMBOLS)


def _summary(kind: str, fn) -> dict:
    import numpy as np

    from qilin.errors import QilinError

    try:
        out = fn()
    except QilinError as exc:
        return {"outcome": "error", "type": type(exc).__name__, "message": str(exc)}
    if kind == "sweep":
        table = out.table
        cols = ["total_return", "max_drawdown"]  # a volatility needs two bars
        return {"outcome": "ok", "rows": len(table),
                "finite": bool(np.isfinite(table[cols].to_numpy(dtype=float)).all()),
                "n_trades": int(table["n_trades"].sum()) if "n_trades" in table else None}
    met = out.metrics()
    filled = out.trades[out.trades["status"] == "filled"]
    return {"outcome": "ok",
            "finite": bool(np.isfinite(out.equity).all()
                           and np.isfinite(met["total_return"].to_numpy()).all()),
            "fills": len(filled),
            "first_fill": str(filled["date"].min().date()) if len(filled) else None,
            "reasons": sorted(set(out.trades["reason"]) - {""})}


def _scenarios() -> dict[str, object]:
    import numpy as np

    from qilin.backtest.portfolio import run_portfolio
    from qilin.backtest.signal import run_signals
    from qilin.backtest.sweeps import run_sweep

    def signals(level: float, cash: float, market: str, **kw):
        p = _panel(level, **kw)
        return lambda: run_signals(p, target=np.ones(p.shape), market=market, init_cash=cash)

    def portfolio(level: float, cash: float, market: str, **kw):
        p = _panel(level, **kw)
        scores = np.tile(np.array([2.0, 1.0, 0.5]), (p.shape[0], 1))
        return lambda: run_portfolio(p, scores=scores, top_k=2, market=market, init_cash=cash)

    def sweep(strategy: str, grid: str, level: float, cash: float, **kw):
        p = _panel(level, **kw)
        return lambda: run_sweep(p, strategy, grid, market="cn", backend="cpu",
                                 init_cash=cash)

    out: dict[str, object] = {}
    for market in ("us", "cn"):
        for name, level, cash in (("tiny_price", 1e-10, 1e6), ("huge_price", 1e12, 1e6),
                                  ("huge_cash", 10.0, 1e18), ("huge_both", 1e12, 1e18)):
            out[f"signals_{market}_{name}"] = ("engine", signals(level, cash, market))
            out[f"portfolio_{market}_{name}"] = ("engine", portfolio(level, cash, market))
        out[f"signals_{market}_zero_volume"] = (
            "engine", signals(10.0, 1e6, market, zero_volume=(0, 20)))
        out[f"portfolio_{market}_zero_volume"] = (
            "engine", portfolio(10.0, 1e6, market, zero_volume=(0, 20)))
        out[f"signals_{market}_single_bar"] = ("engine", signals(10.0, 1e6, market, T=1))
        out[f"signals_{market}_zero_rows"] = ("engine", signals(10.0, 1e6, market, T=0))
        out[f"portfolio_{market}_zero_rows"] = ("engine", portfolio(10.0, 1e6, market, T=0))
        out[f"portfolio_{market}_single_bar"] = ("engine", portfolio(10.0, 1e6, market, T=1))
    grids = {"ma_cross": "fast=2,3 slow=5,8", "rsi": "window=3 lower=40 upper=60",
             "bollinger": "window=5 k=0.5", "momentum_topk": "lookback=2 k=1 rebalance=1,3"}
    for strategy, grid in grids.items():
        for name, level, cash in (("tiny_price", 1e-10, 1e6), ("huge_price", 1e12, 1e6),
                                  ("huge_cash", 10.0, 1e18)):
            out[f"sweep_{strategy}_{name}"] = ("sweep", sweep(strategy, grid, level, cash))
        out[f"sweep_{strategy}_zero_volume"] = (
            "sweep", sweep(strategy, grid, 10.0, 1e6, zero_volume=(10, 40)))
        out[f"sweep_{strategy}_single_bar"] = ("sweep", sweep(strategy, grid, 10.0, 1e6, T=1))
        out[f"sweep_{strategy}_zero_rows"] = ("sweep", sweep(strategy, grid, 10.0, 1e6, T=0))
    return out


def main() -> None:
    for name, (kind, fn) in _scenarios().items():
        print(json.dumps({"scenario": name, **_summary(kind, fn)}), flush=True)


@pytest.fixture(scope="module")
def outcomes() -> dict[str, dict]:
    try:
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve())],
                              capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        done = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else exc.stdout
        last = (done or "").strip().splitlines()[-1:] or ["none"]
        pytest.fail(f"extreme-input backtests did not finish within {TIMEOUT_S}s "
                    f"(last finished scenario: {last[0]})")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return {r["scenario"]: r for r in rows}


def test_every_scenario_ends_with_a_result_or_a_typed_error(outcomes):
    assert len(outcomes) == 52
    for name, r in outcomes.items():
        assert r["outcome"] in ("ok", "error"), name
        if r["outcome"] == "ok":
            assert r["finite"], name


@pytest.mark.parametrize("engine", ["signals", "portfolio"])
@pytest.mark.parametrize("market", ["us", "cn"])
def test_orders_beyond_float_precision_are_rejected_with_their_reason(outcomes, engine, market):
    # 1e18 / 10 = 1e17 shares and (one account per symbol) 1e6 / 1e-10 = 1e16 shares: more
    # than 2**53; the portfolio's half of 1e6 at 1e-10 (5e15 shares) is still exact
    names = ("tiny_price", "huge_cash") if engine == "signals" else ("huge_cash",)
    for name in names:
        r = outcomes[f"{engine}_{market}_{name}"]
        assert r["outcome"] == "ok", r
        assert r["fills"] == 0, (name, r)
        assert set(r["reasons"]) - {"suspended"} == {"beyond_precision"}, (name, r)
    tiny = outcomes[f"{engine}_{market}_tiny_price"]  # never mistaken for a price-limit hit
    assert tiny["finite"] and not {"limit_up", "limit_down"} & set(tiny["reasons"]), tiny


@pytest.mark.parametrize("engine", ["signals", "portfolio"])
@pytest.mark.parametrize("market", ["us", "cn"])
def test_unaffordable_lot_at_huge_price_is_recorded(outcomes, engine, market):
    r = outcomes[f"{engine}_{market}_huge_price"]
    assert r["fills"] == 0 and set(r["reasons"]) - {"suspended"} == {"insufficient_cash"}, r
    both = outcomes[f"{engine}_{market}_huge_both"]  # 1e18 of cash buys 1e12 shares exactly
    assert both["fills"] > 0 and both["finite"], both


@pytest.mark.parametrize("engine", ["signals", "portfolio"])
@pytest.mark.parametrize("market", ["us", "cn"])
def test_zero_volume_bars_do_not_fill(outcomes, engine, market):
    r = outcomes[f"{engine}_{market}_zero_volume"]
    assert "no_volume" in r["reasons"], r
    assert r["fills"] > 0 and r["first_fill"] == "2021-02-01", r  # bar 20, the first traded


def test_single_bar_and_zero_rows(outcomes):
    for market in ("us", "cn"):
        for engine in ("signals", "portfolio"):
            one = outcomes[f"{engine}_{market}_single_bar"]
            assert one["outcome"] == "ok" and one["finite"], one
            zero = outcomes[f"{engine}_{market}_zero_rows"]
            assert zero["outcome"] == "error" and zero["type"] == "BacktestError", zero
            assert "0 dates" in zero["message"]
    for strategy in ("ma_cross", "rsi", "bollinger", "momentum_topk"):
        assert outcomes[f"sweep_{strategy}_zero_rows"]["type"] == "BacktestError"


@pytest.mark.parametrize("strategy", ["ma_cross", "rsi", "bollinger", "momentum_topk"])
def test_sweeps_end_with_finite_metrics(outcomes, strategy):
    for name in ("tiny_price", "huge_price", "huge_cash", "zero_volume", "single_bar"):
        r = outcomes[f"sweep_{strategy}_{name}"]
        assert r["outcome"] == "ok" and r["finite"], (name, r)
    if strategy != "momentum_topk":
        for name in ("tiny_price", "huge_price", "huge_cash"):
            assert outcomes[f"sweep_{strategy}_{name}"]["n_trades"] == 0, name


def test_a_tiny_cn_price_is_not_a_limit_hit():
    import numpy as np

    from qilin.backtest.rules import MarketRules, limit_arrays

    p = _panel(1e-10)
    up, down = limit_arrays(p, MarketRules.from_market("cn"))
    assert np.isinf(up).all() and np.isinf(down).all()
    up, _ = limit_arrays(_panel(10.0), MarketRules.from_market("cn"))
    assert np.isfinite(up[1:, :2]).all()


if __name__ == "__main__":
    main()
