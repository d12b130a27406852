"""DistributedStockAnalyzer on a real 2-worker process LocalCluster: equals in-process runs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from distributed import Client, LocalCluster

from qilin.analysis import DistributedStockAnalyzer
from qilin.backtest import metrics as M
from qilin.backtest.engine import run_portfolio, run_signals
from qilin.backtest.strategies import MomentumTopK, get_strategy
from qilin.backtest.sweeps import run_sweep
from qilin.data.synthetic import synthetic_bars, synthetic_market
from qilin.errors import BacktestError, DataError


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0", memory_limit="2GiB") as cluster, \
            Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def panel():
    return synthetic_market(24, 180, seed=21)


def summarize(bars: pd.DataFrame) -> dict:
    if int(bars["symbol"].iloc[0][:6]) % 2:
        raise ValueError(f"odd code {bars['symbol'].iloc[0]}")
    r = bars["close"].pct_change()
    return {"n_bars": len(bars), "mean_ret": r.mean(), "last": bars["close"].iloc[-1]}


def test_analyze_equals_in_process_and_reports_errors(client, panel):
    an = DistributedStockAnalyzer(client, panel, block_size=5)
    out = an.analyze_stocks_parallel(summarize, progress=False)
    long = panel.to_long()
    expected, failed = {}, []
    for sym, bars in long.groupby("symbol"):
        try:
            expected[sym] = summarize(bars.sort_values("date").reset_index(drop=True))
        except ValueError:
            failed.append(sym)
    exp = pd.DataFrame.from_dict(expected, orient="index")
    assert 0 < len(failed) < len(panel.symbols)
    pd.testing.assert_frame_equal(out.sort_index(), exp.sort_index(), check_names=False)
    assert sorted(out.errors["symbol"]) == sorted(failed)
    assert (out.errors["error"] == "ValueError").all()
    assert out.errors["traceback"].str.contains("in summarize").all()


def test_analyze_from_parquet_path_reads_blocks_on_workers(client, tmp_path):
    bars = synthetic_bars(n_symbols=9, n_days=40, seed=2)
    path = tmp_path / "bars.parquet"
    bars.to_parquet(path)
    an = DistributedStockAnalyzer(client, path, block_size=4)
    syms = an.symbols[2:7]
    out = an.analyze_stocks_parallel(syms, lambda b: b["volume"].sum(), columns=["volume"])
    exp = bars[bars.symbol.isin(syms)].groupby("symbol")["volume"].sum()
    np.testing.assert_allclose(out.loc[syms, "value"].to_numpy(), exp.loc[syms].to_numpy())
    assert list(out.index) == syms
    with pytest.raises(DataError, match="symbols not in the data"):
        an.analyze_stocks_parallel(["NOPE"], len)
    with pytest.raises(DataError, match="per-symbol function"):
        an.analyze_stocks_parallel(syms)
    with pytest.raises(DataError, match="not found"):
        DistributedStockAnalyzer(client, tmp_path / "missing.parquet")


def test_backtest_parallel_equals_engine_on_whole_panel(client, panel):
    an = DistributedStockAnalyzer(client, panel, block_size=7)
    strategies = [("ma_cross", {"fast": 3, "slow": 12}),
                  ("rsi", {"window": 6, "lower": 30, "upper": 65}),
                  ("momentum_topk", {"lookback": 10, "k": 4, "rebalance": 5})]
    table = an.backtest_parallel(strategies, market="cn")
    assert list(table["strategy"]) == ["ma_cross", "rsi", "momentum_topk"]
    for i, (name, params) in enumerate(strategies[:2]):
        e, x = get_strategy(name).signals(panel, **params)
        res = run_signals(panel, entries=e, exits=x, market="cn")
        exp = M.summary(res.combined_returns, periods_per_year=242).iloc[0]
        assert table.loc[i, "sharpe_ratio"] == pytest.approx(exp["sharpe_ratio"], rel=1e-9)
        assert table.loc[i, "max_drawdown"] == pytest.approx(exp["max_drawdown"], rel=1e-9)
        assert table.loc[i, "n_trades"] == (res.trades["status"] == "filled").sum()
    res = run_portfolio(panel, scores=MomentumTopK().scores(panel, 10), top_k=4, rebalance=5,
                        market="cn")
    exp = M.summary(res.returns[:, 0], periods_per_year=242).iloc[0]
    assert table.loc[2, "total_return"] == pytest.approx(exp["total_return"], rel=1e-9)


def test_optimize_equals_local_sweep(client, panel):
    an = DistributedStockAnalyzer(client, panel)
    grid = "fast=2:10:2 slow=12:30:6 ma=sma,ema"
    opt = an.optimize_parameters_parallel(grid, strategy="ma_cross", objective="sharpe_ratio",
                                          market="cn", tile_size=7, backend="cpu")
    local = run_sweep(panel, "ma_cross", grid, market="cn", backend="cpu")
    pd.testing.assert_frame_equal(opt.table, local.table, rtol=1e-12)
    assert opt.best_params == local.best_params("sharpe_ratio")
    assert opt.best["sharpe_ratio"] == local.table["sharpe_ratio"].max()
    with pytest.raises(BacktestError, match="objective"):
        an.optimize_parameters_parallel("fast=2 slow=5", objective="alpha", backend="cpu")
