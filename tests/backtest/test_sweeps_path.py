"""Sweeps and backtests over a Parquet path: every task reads its own symbol block.

Compared with the Panel loaded from the same file, in-process and on a real 2-process
LocalCluster. On the cluster the client process cannot read bars (``ParquetSource.dataset``
raises there; the workers are separate processes with the real one), which shows that only
task descriptions and results pass through the client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest
from distributed import Client, LocalCluster

from qilin.analysis import DistributedStockAnalyzer
from qilin.backtest.market_blocks import (
    read_trading_block,
    sweep_block_symbols,
)
from qilin.backtest.strategies import CLOSE, StrategyTemplate
from qilin.backtest.sweeps import ParameterGrid, prepare_market, run_sweep, run_tile
from qilin.data.blocks import ParquetSource, scan_axes
from qilin.data.loader import load_panel, save_bars
from qilin.data.synthetic import synthetic_bars
from qilin.errors import DataError

SIGNAL_CASES = [
    ("ma_cross", "fast=2:10:2 slow=12:30:6 ma=sma,ema", 0),
    ("rsi", "window=3,6 lower=20,30 upper=70", 1),
    ("bollinger", "window=5,10 k=1,2 mode=reversion,breakout", 0),
]


@pytest.fixture(scope="module")
def market(tmp_path_factory) -> tuple[Any, Any]:
    path = save_bars(synthetic_bars(n_symbols=26, n_days=260, seed=8),
                     tmp_path_factory.mktemp("path-sweeps") / "bars.parquet")
    return path, load_panel(path, backend="cpu", validate=None)


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0", memory_limit="2GiB") as cluster, \
            Client(cluster) as c:
        yield c


@dataclass(frozen=True)
class BuyFirstBar(StrategyTemplate):
    """Long whenever the close is above ``level``: buys on the market's first bar."""

    name: ClassVar[str] = "buy_first_bar"
    param_names: ClassVar[tuple[str, ...]] = ("level",)

    def check(self, params: Any) -> dict[str, Any]:
        return {"level": float(params["level"])}

    def sides(self, params: Any) -> tuple:
        return ((CLOSE, None, 0.0, 0.0), (None, None, 0.0, params["level"]),
                (None, None, 0.0, -1.0), (CLOSE, None, 0.0, 0.0))


def test_a_trading_block_equals_the_panel_columns(market):
    path, panel = market
    src = ParquetSource.open(path)
    dates, symbols = scan_axes(src)
    block = read_trading_block(src, symbols[6], symbols[17], dates)
    want = panel.select(symbols=list(symbols[6:18]))
    assert sorted(block.fields) == ["adj_factor", "close", "preclose", "volume"]
    for name in block.fields:
        np.testing.assert_array_equal(block[name], want[name])
    for mask in ("valid", "suspended", "st"):
        np.testing.assert_array_equal(getattr(block, mask), getattr(want, mask))
    assert np.asarray(panel.st).any()  # the ST flags (from the name column) are exercised


@pytest.mark.parametrize("strategy, grid, lag", SIGNAL_CASES)
def test_signal_sweeps_over_a_path_equal_the_panel(market, strategy, grid, lag):
    path, panel = market
    want = run_sweep(panel, strategy, grid, market="cn", backend="cpu", lag=lag)
    got = run_sweep(path, strategy, grid, market="cn", backend="cpu", lag=lag,
                    block_symbols=7)
    assert got.shape == want.shape == panel.shape and got.backend == "cpu"
    pd.testing.assert_frame_equal(got.table, want.table, rtol=1e-12)
    assert (got.table["n_trades"] == want.table["n_trades"]).all()
    assert want.table["n_trades"].sum() > 0


@pytest.mark.parametrize("lag", [0, 1])
def test_trades_on_the_first_bar_count_in_every_block(market, lag):
    """The kernel's returns start at 0; the padded leading bar keeps day-one costs."""
    path, panel = market
    tpl = BuyFirstBar()
    combos = ParameterGrid({"level": [0.0, 30.0]}).combinations(tpl)
    want = run_tile(prepare_market(panel, "cn"), tpl, combos, "cpu", None, lag, 1e6)
    got = run_sweep(path, tpl, {"level": [0.0, 30.0]}, market="cn", backend="cpu", lag=lag,
                    block_symbols=5)
    pd.testing.assert_frame_equal(got.table, want.drop(columns="backend"), rtol=1e-12)
    first = np.asarray(panel.valid)[0]
    assert want["n_trades"].iloc[0] >= first.sum() > 0


def test_topk_over_a_path_is_the_panel_sweep_bit_for_bit(market):
    path, panel = market
    grid = "lookback=5,10 k=3,5 rebalance=5"
    want = run_sweep(panel, "momentum_topk", grid, market="cn", backend="cpu")
    got = run_sweep(path, "momentum_topk", grid, market="cn", backend="cpu", block_symbols=4)
    pd.testing.assert_frame_equal(got.table, want.table, check_exact=True)


def test_block_size_and_bad_inputs():
    assert sweep_block_symbols(7500, 256 * 2**20) == 127
    assert sweep_block_symbols(10, 1) == 1
    with pytest.raises(DataError, match="a Parquet path"):
        run_sweep(pd.DataFrame({"close": [1.0]}), "ma_cross", "fast=2 slow=5")
    with pytest.raises(DataError, match="not found"):
        run_sweep("/nonexistent/bars.parquet", "ma_cross", "fast=2 slow=5")


def test_on_a_cluster_tasks_read_their_blocks_and_match(market, client, monkeypatch):
    path, panel = market
    grid = "fast=2:10:2 slow=12:30:6 ma=sma,ema"
    local = run_sweep(path, "ma_cross", grid, market="cn", backend="cpu", block_symbols=7)
    an_panel = DistributedStockAnalyzer(client, panel, block_size=7)
    strategies = [("ma_cross", {"fast": 3, "slow": 12}),
                  ("rsi", {"window": 6, "lower": 30, "upper": 65}),
                  ("momentum_topk", {"lookback": 10, "k": 4, "rebalance": 5})]
    from_panel = an_panel.backtest_parallel(strategies, market="cn")
    topk_panel = run_sweep(panel, "momentum_topk", "lookback=5,10 k=3 rebalance=5",
                           backend="cpu")

    def no_reading(self: ParquetSource) -> None:
        raise AssertionError("the client process read bars")

    monkeypatch.setattr(ParquetSource, "dataset", no_reading)
    with pytest.raises(AssertionError, match="client process read"):
        scan_axes(ParquetSource.open(path))  # the bar is in place here ...
    # ... but not on the workers: they scan, read their blocks and add them up
    remote = run_sweep(path, "ma_cross", grid, market="cn", backend="cpu", client=client,
                       block_symbols=7, tile_size=5)
    pd.testing.assert_frame_equal(remote.table, local.table, check_exact=True)
    topk = run_sweep(path, "momentum_topk", "lookback=5,10 k=3 rebalance=5", backend="cpu",
                     client=client)
    pd.testing.assert_frame_equal(topk.table, topk_panel.table, check_exact=True)
    an = DistributedStockAnalyzer(client, path, block_size=7)
    assert an.symbols == list(map(str, panel.symbols)) and an.dates.equals(panel.dates)
    pd.testing.assert_frame_equal(an.backtest_parallel(strategies, market="cn"), from_panel,
                                  check_exact=True)
    opt = an.optimize_parameters_parallel(grid, market="cn", backend="cpu")
    pd.testing.assert_frame_equal(opt.table, local.table, check_exact=True)
    out = an.analyze_stocks_parallel(lambda b: b["close"].iloc[-1], columns=["close"])
    last = panel.to_long(["close"]).groupby("symbol")["close"].last()
    np.testing.assert_array_equal(out["value"].to_numpy(), last.loc[out.index].to_numpy())
