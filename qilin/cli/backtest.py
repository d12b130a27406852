"""``qilin backtest``: run one backtest (``run``) or a parameter sweep (``sweep``).

``qilin backtest run --data BARS (--signals FILE | --weights FILE | --strategy NAME
[--params k=v,...]) --out DIR`` writes ``returns.parquet`` (date, account, return, equity,
turnover, cost, exposure), ``positions.parquet`` (date, symbol, quantity, value),
``trades.parquet`` (order records) and ``metrics.json`` into ``DIR``, atomically (a temporary
folder next to ``DIR`` is renamed into place).

- ``--signals FILE``: long Parquet/CSV with ``date, symbol`` and either ``target`` or
  ``entry``/``exit`` columns (signal mode, one account per symbol).
- ``--weights FILE``: long file with ``date, symbol`` and ``weight`` (target weights) or
  ``score`` (top-k selection) — portfolio mode (``--top-k --n-drop --band --rebalance
  --weighting --max-weight``).
- ``--strategy NAME --params``: a template of :mod:`qilin.backtest.strategies`; templates with
  ``signals`` run in signal mode, those with ``targets`` (or ``scores``) in portfolio mode.

``qilin backtest sweep --data BARS --strategy NAME --grid "fast=5:50:5 slow=60:250:10"
--out SWEEP.parquet [--cluster MODE|ADDRESS] [--backend cpu|gpu|auto]`` runs
:func:`qilin.backtest.sweeps.run_sweep`; the grid and the parameter names are checked
before the data is loaded.

``qilin backtest strategies [--json]`` lists the templates with their parameters and
defaults (:func:`qilin.backtest.strategies.list_strategies`).

Examples
--------
>>> import argparse
>>> parser = argparse.ArgumentParser()
>>> register(parser.add_subparsers(dest="command"))
>>> a = parser.parse_args(["backtest", "run", "--data", "b.parquet", "--strategy", "ma_cross",
...                        "--params", "fast=5,slow=20", "--out", "res"])
>>> a.backtest_command, a.market, a.price, parse_params(a.params)
('run', 'cn', 'close', {'fast': 5, 'slow': 20})
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qilin.cli.common import (
    add_data_arguments,
    cluster_client,
    load_data,
    read_long_table,
    validation_counts,
)
from qilin.errors import BacktestError, DataError


def parse_params(text: str | None) -> dict[str, Any]:
    """``"fast=5,slow=20,ma=ema"`` → ``{"fast": 5, "slow": 20, "ma": "ema"}``.

    Raises
    ------
    BacktestError
        For an item without ``name=value``.
    """
    out: dict[str, Any] = {}
    syntax = 'write --params name=value,name=value (e.g. "fast=5,slow=20,ma=ema")'
    for item in filter(None, (p.strip() for p in (text or "").split(","))):
        name, sep, raw = item.partition("=")
        name, raw = name.strip(), raw.strip()
        if not sep or not name or not raw:
            raise BacktestError(f"--params item {item!r} is not name=value; {syntax}")
        if "=" in raw or " " in raw:
            raise BacktestError(f"--params item {item!r}: separate items with commas; {syntax}")
        if name in out:
            raise BacktestError(f"--params gives {name!r} twice; {syntax}")
        out[name] = _number(raw)
    return out


def _number(raw: str) -> Any:
    for conv in (int, float):
        try:
            return conv(raw)
        except ValueError:
            pass
    return raw




def to_matrix(df: pd.DataFrame, column: str, panel: Any, fill: Any, option: str) -> np.ndarray:
    """Pivot one column of a long frame onto the panel's (dates x symbols) grid."""
    unknown = sorted(set(df["symbol"]) - set(panel.symbols))
    if unknown:
        raise DataError(f"{option}: symbols not in the data: {unknown[:10]}")
    wide = df.pivot(index="date", columns="symbol", values=column)
    wide = wide.reindex(index=panel.dates, columns=panel.symbols)
    return wide.to_numpy(dtype=float if fill is np.nan else object)


def _signals_mode(args: argparse.Namespace, panel: Any, common: dict[str, Any]) -> Any:
    from qilin.backtest.signal import run_signals

    df = read_long_table(args.signals, "--signals")
    if "target" in df.columns:
        target = to_matrix(df, "target", panel, np.nan, "--signals")
        return run_signals(panel, target=target, rebalance_threshold=args.rebalance_threshold,
                           **common)
    if {"entry", "exit"} <= set(df.columns):
        flags = {}
        for col in ("entry", "exit"):
            m = to_matrix(df.assign(**{col: df[col].astype(float)}), col, panel, np.nan,
                          "--signals")
            flags[col] = np.nan_to_num(m, nan=0.0) > 0
        return run_signals(panel, entries=flags["entry"], exits=flags["exit"], **common)
    raise DataError(f"--signals file {args.signals} needs a 'target' column or 'entry' and "
                    f"'exit' columns; columns: {list(df.columns)}")


def _portfolio_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"top_k": args.top_k, "n_drop": args.n_drop, "band": args.band,
            "rebalance": args.rebalance, "weighting": args.weighting,
            "max_weight": args.max_weight, "short_k": args.short_k}


def _weights_mode(args: argparse.Namespace, panel: Any, common: dict[str, Any]) -> Any:
    from qilin.backtest.portfolio import run_portfolio

    df = read_long_table(args.weights, "--weights")
    for col, key in (("weight", "weights"), ("score", "scores")):
        if col in df.columns:
            m = to_matrix(df, col, panel, np.nan, "--weights")
            return run_portfolio(panel, **{key: m}, **_portfolio_kwargs(args), **common)
    raise DataError(f"--weights file {args.weights} needs a 'weight' or 'score' column; "
                    f"columns: {list(df.columns)}")


def _strategy_mode(args: argparse.Namespace, panel: Any, common: dict[str, Any]
                   ) -> tuple[str, Any]:
    from qilin.backtest.portfolio import run_portfolio
    from qilin.backtest.signal import run_signals
    from qilin.backtest.strategies import get_strategy

    template = get_strategy(args.strategy)
    params = parse_params(args.params)
    if hasattr(template, "signals"):
        entries, exits = template.signals(panel, **params)
        return "signals", run_signals(panel, entries=entries, exits=exits, **common)
    kw = _portfolio_kwargs(args)
    if hasattr(template, "targets"):
        kw.pop("weighting")
        kw["rebalance"] = 1  # the template's targets already carry its rebalance dates
        return "portfolio", run_portfolio(panel, weights=template.targets(panel, **params),
                                          **kw, **common)
    if hasattr(template, "scores"):
        return "portfolio", run_portfolio(panel, scores=template.scores(panel, **params),
                                          **kw, **common)
    raise BacktestError(f"strategy {args.strategy!r} has neither signals, targets nor scores")


def write_outputs(result: Any, out: str | Path, meta: dict[str, Any],
                  benchmark: Any = None) -> Path:
    """Write returns/positions/trades Parquet files and metrics.json into ``out`` atomically."""
    from qilin.atomic import atomic_directory, json_safe
    from qilin.backtest import metrics as M

    per_account = result.metrics(benchmark=benchmark)
    agg_table = M.summary(result.combined_returns, result.periods_per_year, benchmark=benchmark)
    doc = {
        **meta,
        "periods_per_year": result.periods_per_year,
        "start": result.dates[0] if len(result.dates) else None,
        "end": result.dates[-1] if len(result.dates) else None,
        "trade_count": int((result.trades["status"] == "filled").sum()),
        "rejected_count": int((result.trades["status"] == "rejected").sum()),
        "costs_paid": float(result.costs.sum()),
        "aggregate": agg_table.iloc[0].to_dict(),
        "accounts": {str(a): row.to_dict() for a, row in per_account.iterrows()},
    }
    with atomic_directory(out, overwrite=True) as tmp:
        result.returns_long().to_parquet(tmp / "returns.parquet", index=False)
        result.positions_long().to_parquet(tmp / "positions.parquet", index=False)
        trades = result.trades.copy()
        trades["symbol"] = trades["symbol"].astype(str)
        trades.to_parquet(tmp / "trades.parquet", index=False)
        (tmp / "metrics.json").write_text(
            json.dumps(json_safe(doc), indent=2, allow_nan=False) + "\n")
    return Path(out)


def _benchmark(path: str | None, dates: pd.DatetimeIndex) -> np.ndarray | None:
    if not path:
        return None
    df = read_long_table(path, "--benchmark")
    if df["symbol"].nunique() != 1 or "close" not in df.columns:
        raise DataError(f"--benchmark file {path} must hold one symbol with a 'close' column")
    close = df.set_index("date")["close"].sort_index()
    ret = close.pct_change().reindex(dates)
    return ret.to_numpy(dtype=float)


def _run(args: argparse.Namespace) -> int:
    chosen = [x for x in (args.signals, args.weights, args.strategy) if x]
    if len(chosen) != 1:
        raise BacktestError("give exactly one of --signals, --weights or --strategy")
    if args.strategy:  # bad names and values fail before the data is loaded
        from qilin.backtest.strategies import get_strategy

        get_strategy(args.strategy).check(parse_params(args.params))
    t0 = time.perf_counter()
    panel, report = load_data(args.data, args.validate, args.date_format, market=args.market,
                              return_report=True)
    common = {"market": args.market, "lag": args.lag, "price": args.price,
              "init_cash": args.init_cash, "backend": args.backend}
    if args.signals:
        mode, result = "signals", _signals_mode(args, panel, common)
    elif args.weights:
        mode, result = "portfolio", _weights_mode(args, panel, common)
    else:
        mode, result = _strategy_mode(args, panel, common)
    meta = {"mode": mode, "market": args.market, "lag": args.lag, "price": args.price,
            "init_cash": args.init_cash, "data": str(args.data),
            "source": args.signals or args.weights or args.strategy,
            "params": parse_params(args.params) if args.strategy else None,
            "backend": result.backend, "validation": validation_counts(report)}
    write_outputs(result, args.out, meta, _benchmark(args.benchmark, result.dates))
    if args.tear_sheet:
        from qilin.reports import benchmark_returns, strategy_tear_sheet

        strategy_tear_sheet(result, args.tear_sheet, settings=meta,
                            benchmark=benchmark_returns(args.benchmark, panel))
    agg_ret = result.equity.sum(axis=1)
    print(f"backtest {mode}: {panel.shape[0]} dates x {panel.shape[1]} symbols, "
          f"{meta['source']}, total return {agg_ret[-1] / agg_ret[0] - 1:+.2%}, "
          f"{int((result.trades['status'] == 'filled').sum())} fills, "
          f"{time.perf_counter() - t0:.1f}s -> {args.out}")
    return 0




def _sweep(args: argparse.Namespace) -> int:
    from qilin.backtest.strategies import get_strategy
    from qilin.backtest.sweeps import ParameterGrid, parse_grid, run_sweep

    grid = parse_grid(args.grid)
    template = get_strategy(args.strategy)
    if not ParameterGrid(grid).combinations(template):  # bad names/values raise here
        raise BacktestError(f"--grid {args.grid!r} has no valid combination for strategy "
                            f"{template.name!r} (e.g. every fast >= slow)")
    panel = load_data(args.data, args.validate, args.date_format, market=args.market)
    with cluster_client(args.cluster) as client:
        res = run_sweep(panel, args.strategy, grid, market=args.market, backend=args.backend,
                        client=client, lag=args.lag, init_cash=args.init_cash,
                        tile_size=args.tile_size)
    res.to_parquet(args.out)
    print(res.summary())
    print(f"-> {args.out}")
    return 0


def _strategies(args: argparse.Namespace) -> int:
    from qilin.backtest.strategies import list_strategies

    table = list_strategies()
    if args.json:
        print(json.dumps(table.to_dict(orient="records"), indent=2))
        return 0
    for row in table.itertuples():
        defaults = ", ".join(f"{k}={v}" for k, v in row.defaults.items()) or "none"
        print(f"{row.name} ({row.mode}): {row.description}")
        print(f"    parameters: {row.parameters}   defaults: {defaults}")
    print("(* = required; --params for run, --grid for sweep)")
    return 0


def register(subparsers: Any) -> None:
    """Add ``qilin backtest run``, ``qilin backtest sweep`` and ``qilin backtest
    strategies``."""
    bt = subparsers.add_parser("backtest", help="backtests (signal or portfolio) and sweeps")
    sub = bt.add_subparsers(dest="backtest_command", required=True, metavar="ACTION")

    def common(p: argparse.ArgumentParser) -> None:
        add_data_arguments(p)
        p.add_argument("--market", default="cn", help="market profile: cn or us (default cn)")
        p.add_argument("--lag", type=int, default=0, help="execution lag in bars (default 0)")
        p.add_argument("--init-cash", type=float, default=1_000_000.0,
                       help="starting cash per account (default 1,000,000)")
        p.add_argument("--backend", default="cpu", choices=["cpu", "gpu", "auto"],
                       help="array backend of the kernels (default cpu)")

    run = sub.add_parser("run", help="one backtest; writes returns/positions/trades/metrics")
    common(run)
    src = run.add_mutually_exclusive_group(required=True)
    src.add_argument("--signals", help="long file: date, symbol, target | entry, exit")
    src.add_argument("--weights", help="long file: date, symbol, weight | score (portfolio)")
    src.add_argument("--strategy", help="strategy template name (qilin.backtest.strategies)")
    run.add_argument("--params", default="", help="template parameters: k=v,k=v")
    run.add_argument("--price", default="close", choices=["close", "open"],
                     help="execute at the close of t+lag or the open of t+1+lag")
    run.add_argument("--rebalance-threshold", type=float, default=0.0,
                     help="signal mode: re-trade when exposure drifts more than this")
    run.add_argument("--top-k", type=int, default=10, help="portfolio: names to hold")
    run.add_argument("--n-drop", type=int, default=None,
                     help="portfolio: replace at most this many names per rebalance")
    run.add_argument("--band", type=int, default=0,
                     help="portfolio: keep names while rank < top-k + band")
    run.add_argument("--rebalance", type=int, default=1, help="portfolio: every N bars")
    run.add_argument("--weighting", default="equal", choices=["equal", "score"],
                     help="portfolio: equal weights or weights proportional to the score")
    run.add_argument("--max-weight", type=float, default=1.0,
                     help="portfolio: cap on any single weight's size (default 1)")
    run.add_argument("--short-k", type=int, default=0,
                     help="portfolio with --weights scores: also short the N worst names, "
                          "dollar-neutral (markets with allow_short, e.g. us; default 0)")
    run.add_argument("--tear-sheet", default=None,
                     help="folder for the strategy tear sheet (HTML + PNG) against the "
                     "--benchmark or the equal-weight market")
    run.add_argument("--benchmark", default=None,
                     help="long file of one benchmark symbol's close (adds alpha, beta...)")
    run.add_argument("--out", required=True, help="output folder")
    run.set_defaults(func=_run)

    sw = sub.add_parser("sweep", help="parameter sweep of a strategy template")
    common(sw)
    sw.add_argument("--strategy", required=True, help="strategy template name")
    sw.add_argument("--grid", required=True,
                    help='name=start:stop:step or name=v1,v2 separated by spaces, e.g. '
                         '"fast=5:50:5 slow=60:250:10 ma=sma,ema"')
    sw.add_argument("--cluster", default=None,
                    help="cluster mode (local, threads, cuda, auto) or tcp:// address")
    sw.add_argument("--tile-size", type=int, default=None, help="combinations per task")
    sw.add_argument("--out", required=True, help="output Parquet file")
    sw.set_defaults(func=_sweep)

    st = sub.add_parser("strategies",
                        help="list the strategy templates with their parameters and defaults")
    st.add_argument("--json", action="store_true", help="print JSON records (default: text)")
    st.set_defaults(func=_strategies)
