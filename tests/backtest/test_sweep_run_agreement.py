"""A sweep row and a single engine run with the same strategy, parameters, market and data
report the same metrics, on the real S&P 500 file, for every sweep strategy.

Issue 10: the sweep used to report the equal-weight daily-rebalanced mean of the per-symbol
accounts (MA 50/140 on AAPL, MSFT, XOM: total return 0.585) while ``qilin backtest run``
reported their summed equity (0.677). Both now report the combined account.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from qilin.backtest import metrics as M
from qilin.backtest import sweep_kernels_cpu as kcpu
from qilin.backtest.portfolio import run_portfolio
from qilin.backtest.signal import run_signals
from qilin.backtest.strategies import MomentumTopK, get_strategy
from qilin.backtest.sweeps import ParameterGrid, run_sweep
from qilin.data.panel import Panel

SIGNAL_CASES = [
    ("ma_cross", {"fast": 50, "slow": 140, "ma": "sma"}, "us", 0),
    ("ma_cross", {"fast": 10, "slow": 30, "ma": "ema"}, "cn", 1),
    ("rsi", {"window": 14, "lower": 30.0, "upper": 70.0}, "us", 0),
    ("bollinger", {"window": 20, "k": 2.0, "mode": "reversion"}, "us", 1),
    ("bollinger", {"window": 10, "k": 1.0, "mode": "breakout"}, "cn", 0),
]


@pytest.fixture(scope="module")
def three(sp500_path) -> Panel:
    df = pd.read_parquet(sp500_path, filters=[("symbol", "in", ["AAPL", "MSFT", "XOM"])])
    return Panel.from_long(df)


@pytest.fixture(scope="module")
def twelve(sp500_path) -> Panel:
    syms = ["AAPL", "MSFT", "XOM", "GE", "JPM", "NFLX", "LNT", "DISCA", "AMZN", "KO", "PFE",
            "WMT"]
    df = pd.read_parquet(sp500_path, filters=[("symbol", "in", syms)])
    return Panel.from_long(df[df["date"] >= "2014-01-01"])


def _row(panel, strategy, params, market, lag):
    grid = ParameterGrid({k: [v] for k, v in params.items()})
    return run_sweep(panel, strategy, grid, market=market, backend="cpu", lag=lag).table.iloc[0]


def _combined_returns(result) -> np.ndarray:
    total = result.equity.sum(axis=1)
    return np.r_[0.0, total[1:] / total[:-1] - 1.0]


def _assert_same(row, returns, periods_per_year, fills):
    expected = M.summary(returns, periods_per_year=periods_per_year)
    for name in kcpu.METRIC_NAMES:
        assert row[name] == pytest.approx(expected.loc[0, name], rel=1e-9, abs=1e-12,
                                          nan_ok=True), name
    assert row["n_trades"] == fills


@pytest.mark.parametrize("strategy, params, market, lag", SIGNAL_CASES)
def test_signal_sweep_row_equals_run_signals(three, strategy, params, market, lag):
    entries, exits = get_strategy(strategy).signals(three, **params)
    res = run_signals(three, entries=entries, exits=exits, market=market, lag=lag)
    fills = int((res.trades["status"] == "filled").sum())
    assert fills > 0
    _assert_same(_row(three, strategy, params, market, lag), _combined_returns(res),
                 res.periods_per_year, fills)


def test_issue_figure_ma_50_140(three):
    """The issue's case: both report the combined account's total return (0.677)."""
    row = _row(three, "ma_cross", {"fast": 50, "slow": 140}, "us", 0)
    entries, exits = get_strategy("ma_cross").signals(three, fast=50, slow=140)
    res = run_signals(three, entries=entries, exits=exits, market="us")
    total = res.equity.sum(axis=1)
    assert row["total_return"] == pytest.approx(total[-1] / total[0] - 1.0, rel=1e-9)
    assert row["total_return"] == pytest.approx(0.677, abs=0.0015)


@pytest.mark.parametrize("params, market, lag", [
    ({"lookback": 20, "k": 3, "rebalance": 5}, "us", 0),
    ({"lookback": 60, "k": 4, "rebalance": 20}, "us", 1),
    ({"lookback": 5, "k": 2, "rebalance": 1}, "cn", 0),
])
def test_momentum_sweep_row_equals_run_portfolio(twelve, params, market, lag):
    res = run_portfolio(twelve, weights=MomentumTopK().targets(twelve, **params), rebalance=1,
                        market=market, lag=lag)
    fills = int((res.trades["status"] == "filled").sum())
    assert fills > 0
    row = _row(twelve, "momentum_topk", params, market, lag)
    _assert_same(row, res.returns[:, 0], res.periods_per_year, fills)
    assert row["turnover"] == pytest.approx(res.turnover.mean(), rel=1e-9)
    assert row["exposure"] == pytest.approx(res.exposure.mean(), rel=1e-9)


@pytest.mark.parametrize("strategy, params, grid", [
    ("ma_cross", "fast=50,slow=140", "fast=50 slow=140"),
    ("momentum_topk", "lookback=20,k=3,rebalance=5", "lookback=20 k=3 rebalance=5"),
])
def test_cli_sweep_row_equals_cli_run(sp500_path, tmp_path, capsys, strategy, params, grid):
    from qilin.cli import main

    data = tmp_path / "bars.parquet"
    df = pd.read_parquet(sp500_path, filters=[("symbol", "in", ["AAPL", "MSFT", "XOM", "GE"])])
    df.to_parquet(data, index=False)
    common = ["--data", str(data), "--market", "us", "--validate", "none"]
    assert main(["backtest", "run", *common, "--strategy", strategy, "--params", params,
                 "--out", str(tmp_path / "run")]) == 0
    assert main(["backtest", "sweep", *common, "--strategy", strategy, "--grid", grid,
                 "--out", str(tmp_path / "sweep.parquet")]) == 0
    capsys.readouterr()
    agg = json.loads((tmp_path / "run" / "metrics.json").read_text())["aggregate"]
    row = pd.read_parquet(tmp_path / "sweep.parquet").iloc[0]
    for name in kcpu.METRIC_NAMES:
        assert row[name] == pytest.approx(agg[name], rel=1e-9, abs=1e-12, nan_ok=True), name
