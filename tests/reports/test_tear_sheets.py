"""Strategy and factor tear sheets on a small synthetic market, from Python and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qilin.backtest import metrics as M
from qilin.backtest.portfolio import run_portfolio
from qilin.data.synthetic import synthetic_market
from qilin.errors import DataError
from qilin.factors.evaluation import evaluate_factors
from qilin.reports import (
    drawdown_table,
    equal_weight_returns,
    factor_tear_sheet,
    load_benchmark,
    monthly_returns,
    strategy_tear_sheet,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def market():
    return synthetic_market(40, 300, seed=3)


def _momentum(panel) -> np.ndarray:
    close = pd.DataFrame(np.asarray(panel["close"]))
    return (close / close.shift(20) - 1).to_numpy()


def test_strategy_tear_sheet_numbers_match_metrics(market, tmp_path: Path) -> None:
    bt = run_portfolio(market, scores=_momentum(market), top_k=8, rebalance=5, market="cn")
    bench = equal_weight_returns(market)
    page = strategy_tear_sheet(bt, tmp_path, benchmark=bench, settings={"top_k": 8})
    html = page.read_text()
    for section in ("Cumulative return", "Underwater", "Top 5 drawdowns", "Monthly returns",
                    "Annual returns", "Rolling Sharpe and beta", "Turnover, exposure",
                    "Costs and settings"):
        assert section in html, section
    for png in ("cumulative", "underwater", "monthly_returns", "annual_returns", "rolling",
                "turnover_exposure_costs"):
        assert (tmp_path / f"{png}.png").stat().st_size > 5000, png
        assert f"src='{png}.png'" in html
    saved = json.loads((tmp_path / "tear_sheet_metrics.json").read_text())
    ret = bt.returns[:, 0]
    assert saved["sharpe_ratio"] == pytest.approx(float(M.sharpe_ratio(ret, 242)))
    assert saved["max_drawdown"] == pytest.approx(float(M.max_drawdown(ret)))
    assert saved["costs_paid"] == pytest.approx(float(bt.costs.sum())) and saved["costs_paid"] > 0
    assert f"{saved['total_return'] * 100:.2f}%" in html
    assert 1 <= len(saved["drawdowns"]) <= 5
    assert saved["drawdowns"][0]["depth"] == pytest.approx(saved["max_drawdown"])


def test_drawdowns_and_monthly_returns_are_exact() -> None:
    idx = pd.bdate_range("2024-01-01", periods=6)
    r = pd.Series([0.0, 0.1, -0.5, 1.0, 0.0, -0.1], index=idx)
    t = drawdown_table(r)
    assert t["depth"].round(6).tolist() == [-0.5, -0.1]
    assert str(t.loc[1, "peak"]) == str(idx[1].date()) and str(t.loc[1, "recovery"]) == \
        str(idx[3].date())
    assert t.loc[2, "recovery"] is None
    m = monthly_returns(r)
    assert m.loc[2024, 1] == pytest.approx(1.1 * 0.5 * 2.0 * 0.9 - 1)


def test_sse_benchmark_is_read_and_aligned(tmp_path: Path) -> None:
    path = Path("/work/shared/data/cn_index_sse_2006_2020.parquet")
    if not path.exists():
        frame = pd.DataFrame({"date": pd.bdate_range("2016-01-01", periods=30),
                              "symbol": "IDX", "close": np.linspace(100, 130, 30)})
        path = tmp_path / "idx.parquet"
        frame.to_parquet(path)
    dates = pd.bdate_range("2016-01-04", periods=20)
    b = load_benchmark(path, dates)
    assert len(b) == 20 and b.index.equals(dates) and b.abs().max() < 0.2
    with pytest.raises(DataError, match="does not exist"):
        load_benchmark(tmp_path / "nope.parquet")


def test_factor_tear_sheet_flags_duplicates(market, tmp_path: Path) -> None:
    mom = _momentum(market)
    values = {"mom": mom, "neg_mom": -mom,
              "noise": np.random.default_rng(0).normal(size=mom.shape)}
    evs = evaluate_factors(values, market, horizons=(1, 5), quantiles=5)
    page = factor_tear_sheet(evs, tmp_path, values=values, plot_factors=["mom"])
    html = page.read_text()
    assert "Near-duplicates" in html and "<tr class='flag'>" in html
    assert "opposite sign" in html
    assert (tmp_path / "mom_ic_hist_monthly.png").exists()
    assert not (tmp_path / "noise_ic_hist_monthly.png").exists()
    corr = pd.read_csv(tmp_path / "factor_correlation.csv", index_col=0)
    assert corr.loc["mom", "neg_mom"] == pytest.approx(-1.0, abs=1e-4)
    assert abs(corr.loc["mom", "noise"]) < 0.2


def test_cli_commands_write_tear_sheets(market, tmp_path: Path) -> None:
    bars = tmp_path / "bars.parquet"
    market.to_long().to_parquet(bars)
    res = subprocess.run([sys.executable, "-m", "qilin.cli", "backtest", "run", "--data",
                          str(bars), "--strategy", "ma_cross", "--params", "fast=5,slow=20",
                          "--out", str(tmp_path / "bt"), "--tear-sheet", str(tmp_path / "bts")],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / "bts" / "tear_sheet.html").stat().st_size > 1000
    mom = pd.DataFrame(_momentum(market), index=market.dates, columns=market.symbols)
    long = mom.stack().rename("mom").reset_index()
    long.columns = ["date", "symbol", "mom"]
    long["rev"] = -long["mom"]
    long.to_parquet(tmp_path / "f.parquet")
    res = subprocess.run([sys.executable, "-m", "qilin.cli", "factors", "evaluate", "--factors",
                          str(tmp_path / "f.parquet"), "--data", str(bars), "--out",
                          str(tmp_path / "ev.json"), "--horizons", "1,5", "--tear-sheet",
                          str(tmp_path / "fts")], capture_output=True, text=True, timeout=300,
                         cwd=REPO)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "opposite sign" in (tmp_path / "fts" / "factor_tear_sheet.html").read_text()
