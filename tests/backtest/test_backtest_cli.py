"""``qilin backtest run`` / ``sweep`` end to end on small real-data files."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
import pytest

from qilin.backtest.engine import run_portfolio, run_signals
from qilin.cli.backtest import parse_params, register
from qilin.data.panel import Panel
from qilin.errors import BacktestError, DataError, QilinError

SP = ["AAPL", "MSFT", "XOM", "JPM", "KO"]
CN = ["000001.SZ", "600519.SH", "300014.SZ", "601865.SH", "600036.SH"]


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="qilin")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


@pytest.fixture(scope="module")
def sp_file(sp500_path, tmp_path_factory):
    df = pd.read_parquet(sp500_path, filters=[("symbol", "in", SP)])
    df = df[df["date"] < "2015-01-01"]
    path = tmp_path_factory.mktemp("data") / "sp.parquet"
    df.to_parquet(path, index=False)
    return path, Panel.from_long(df)


@pytest.fixture(scope="module")
def cn_file(ashare_path, tmp_path_factory):
    df = pd.read_parquet(ashare_path, filters=[("symbol", "in", CN)])
    df = df[(df["date"] >= "2019-01-01") & (df["date"] < "2020-07-01")]
    path = tmp_path_factory.mktemp("data") / "cn.parquet"
    df.to_parquet(path, index=False)
    return path, Panel.from_long(df)


def _momentum(panel: Panel) -> np.ndarray:
    close = pd.DataFrame(np.asarray(panel.adjusted()["close"]))
    return close.pct_change(20, fill_method=None).to_numpy()


def _long(panel: Panel, **cols: np.ndarray) -> pd.DataFrame:
    T, N = panel.shape
    out = pd.DataFrame({"date": np.repeat(panel.dates.values, N),
                        "symbol": np.tile(np.asarray(panel.symbols, dtype=object), T),
                        **{k: v.reshape(-1) for k, v in cols.items()}})
    return out


def test_run_signals_target_csv_matches_engine(sp_file, tmp_path):
    path, panel = sp_file
    mom = _momentum(panel)
    target = np.where(mom > 0, 1.0, 0.0)
    target[np.isnan(mom)] = np.nan
    sig = tmp_path / "sig.csv"
    _long(panel, target=target).dropna().to_csv(sig, index=False)
    out = tmp_path / "res"
    assert cli("backtest", "run", "--data", str(path), "--signals", str(sig), "--market", "us",
               "--out", str(out)) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "metrics.json", "positions.parquet", "returns.parquet", "trades.parquet"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".res")]  # no temp left
    ref = run_signals(panel, target=target, market="us")
    rets = pd.read_parquet(out / "returns.parquet")
    eq = rets.pivot(index="date", columns="account", values="equity")
    np.testing.assert_allclose(eq[list(panel.symbols)].to_numpy(), ref.equity, rtol=1e-12)
    trades = pd.read_parquet(out / "trades.parquet")
    assert len(trades) == len(ref.trades)
    assert list(trades.columns) == list(ref.trades.columns)
    m = json.loads((out / "metrics.json").read_text())
    assert m["mode"] == "signals" and m["periods_per_year"] == 252
    assert m["accounts"]["AAPL"]["sharpe_ratio"] == pytest.approx(
        ref.metrics().loc["AAPL", "sharpe_ratio"])
    assert m["trade_count"] == int((ref.trades["status"] == "filled").sum())
    pos = pd.read_parquet(out / "positions.parquet")
    assert set(pos.columns) == {"date", "symbol", "quantity", "value"}
    # running again replaces the folder atomically
    assert cli("backtest", "run", "--data", str(path), "--signals", str(sig), "--market", "us",
               "--lag", "1", "--out", str(out)) == 0
    assert json.loads((out / "metrics.json").read_text())["lag"] == 1


def test_run_entries_exits_open_execution_cn(cn_file, tmp_path):
    path, panel = cn_file
    mom = _momentum(panel)
    with np.errstate(invalid="ignore"):
        entry, exit_ = mom > 0.05, mom < -0.05
    sig = tmp_path / "sig.parquet"
    _long(panel, entry=entry, exit=exit_).to_parquet(sig, index=False)
    out = tmp_path / "res"
    assert cli("backtest", "run", "--data", str(path), "--signals", str(sig), "--price", "open",
               "--lag", "1", "--out", str(out)) == 0
    ref = run_signals(panel, entries=entry, exits=exit_, market="cn", price="open", lag=1)
    rets = pd.read_parquet(out / "returns.parquet")
    eq = rets.pivot(index="date", columns="account", values="equity")[list(panel.symbols)]
    np.testing.assert_allclose(eq.to_numpy(), ref.equity, rtol=1e-12)
    trades = pd.read_parquet(out / "trades.parquet")
    assert (trades[(trades["status"] == "filled") & (trades["side"] == "buy")]["quantity"]
            % 100 == 0).all()


def test_run_portfolio_scores_and_benchmark(cn_file, sse_index_path, tmp_path):
    path, panel = cn_file
    sc = _momentum(panel)
    f = tmp_path / "scores.parquet"
    _long(panel, score=sc).dropna().to_parquet(f, index=False)
    bench = tmp_path / "sse.parquet"
    pd.read_parquet(sse_index_path).to_parquet(bench, index=False)
    out = tmp_path / "res"
    assert cli("backtest", "run", "--data", str(path), "--weights", str(f), "--top-k", "2",
               "--rebalance", "5", "--band", "1", "--benchmark", str(bench),
               "--out", str(out)) == 0
    ref = run_portfolio(panel, scores=sc, top_k=2, rebalance=5, band=1, market="cn")
    rets = pd.read_parquet(out / "returns.parquet")
    assert set(rets["account"]) == {"portfolio"}
    np.testing.assert_allclose(rets["equity"].to_numpy(), ref.equity[:, 0], rtol=1e-12)
    m = json.loads((out / "metrics.json").read_text())
    assert m["mode"] == "portfolio"
    assert {"alpha", "beta", "information_ratio", "tracking_error"} <= set(m["aggregate"])
    assert m["aggregate"]["total_return"] == pytest.approx(
        ref.equity[-1, 0] / ref.equity[0, 0] - 1)


def test_run_strategy_templates(sp_file, tmp_path):
    path, _ = sp_file
    out = tmp_path / "ma"
    assert cli("backtest", "run", "--data", str(path), "--strategy", "ma_cross", "--params",
               "fast=5,slow=20", "--market", "us", "--out", str(out)) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["mode"] == "signals" and m["params"] == {"fast": 5, "slow": 20}
    assert m["trade_count"] > 10
    out2 = tmp_path / "mom"
    assert cli("backtest", "run", "--data", str(path), "--strategy", "momentum_topk",
               "--params", "lookback=20,k=2,rebalance=10", "--market", "us",
               "--out", str(out2)) == 0
    m2 = json.loads((out2 / "metrics.json").read_text())
    assert m2["mode"] == "portfolio" and m2["trade_count"] > 10


def test_sweep_command(sp_file, tmp_path):
    path, _ = sp_file
    out = tmp_path / "sweep.parquet"
    assert cli("backtest", "sweep", "--data", str(path), "--strategy", "ma_cross", "--grid",
               "fast=5,10 slow=20,40", "--market", "us", "--out", str(out)) == 0
    table = pd.read_parquet(out)
    assert len(table) == 4 and {"fast", "slow", "sharpe_ratio"} <= set(table.columns)


def test_errors_are_typed(sp_file, tmp_path):
    path, _ = sp_file
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"date": ["2014-01-02"], "symbol": ["AAPL"], "foo": [1]}).to_csv(bad)
    with pytest.raises(DataError, match="'target' column or 'entry'"):
        cli("backtest", "run", "--data", str(path), "--signals", str(bad), "--out",
            str(tmp_path / "x"))
    unknown = tmp_path / "unknown.csv"
    pd.DataFrame({"date": ["2014-01-02"], "symbol": ["ZZZZ"], "target": [1.0]}).to_csv(unknown)
    with pytest.raises(DataError, match="ZZZZ"):
        cli("backtest", "run", "--data", str(path), "--signals", str(unknown), "--out",
            str(tmp_path / "x"))
    with pytest.raises(DataError, match="does not exist"):
        cli("backtest", "run", "--data", str(path), "--weights", str(tmp_path / "nope.csv"),
            "--out", str(tmp_path / "x"))
    with pytest.raises(QilinError, match="unknown strategy"):
        cli("backtest", "run", "--data", str(path), "--strategy", "nope", "--out",
            str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()
    with pytest.raises(BacktestError, match="name=value"):
        parse_params("fast=5,slow")
    assert parse_params("a=1,b=0.5,c=ema") == {"a": 1, "b": 0.5, "c": "ema"}


def test_through_qilin_main(sp_file, tmp_path, capsys):
    try:
        from qilin.cli import build_parser, main

        build_parser()
    except ModuleNotFoundError as exc:  # another area's commands module is not there yet
        pytest.skip(f"qilin CLI cannot assemble all areas yet: {exc}")
    path, _ = sp_file
    rc = main(["backtest", "run", "--data", str(path), "--strategy", "nope", "--out",
               str(tmp_path / "o")])
    assert rc == 2 and "unknown strategy" in capsys.readouterr().err
    assert main(["backtest", "run", "--data", str(path), "--strategy", "rsi", "--params",
                 "window=14,lower=30,upper=70", "--market", "us", "--out",
                 str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "metrics.json").exists()
