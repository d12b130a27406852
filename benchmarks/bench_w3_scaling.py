"""W3: analyze / backtest / optimize in parallel, 1 vs N workers, and per-task overhead.

One command, all figures measured in this run on real process LocalClusters (loopback,
one thread per worker, numba pinned to one thread per worker so workers do not share
cores behind Dask's back):

- ``analyze``: :meth:`DistributedStockAnalyzer.analyze_stocks_parallel` with a per-symbol
  function (rolling volatility, drawdown, autocorrelation of returns), against the plain
  in-process pandas loop over symbols;
- ``backtest``: :meth:`~DistributedStockAnalyzer.backtest_parallel` of a list of strategies
  through the engine, tiled by symbol blocks;
- ``optimize``: :meth:`~DistributedStockAnalyzer.optimize_parameters_parallel` (fused sweep
  kernel, parameter tiles);
- scaling efficiency ``t1 / (N * tN)``;
- task overhead: many tiny tasks (``client.map`` of a no-op, gathered), time per task.

Usage::

    .venv/bin/python benchmarks/bench_w3_scaling.py [--quick] [--workers 2]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from distributed import Client, LocalCluster

from qilin.analysis import DistributedStockAnalyzer
from qilin.data.synthetic import synthetic_market


def symbol_stats(bars: pd.DataFrame) -> dict:
    """A typical per-symbol research function."""
    close = bars["close"].to_numpy()
    r = np.diff(np.log(close))
    vol = pd.Series(r).rolling(20).std().mean() * np.sqrt(242)
    wealth = close / close[0]
    dd = (wealth / np.maximum.accumulate(wealth) - 1).min()
    ac = pd.Series(r).autocorr(1) if len(r) > 2 else np.nan
    hurst_lags = [2, 4, 8, 16, 32]
    tau = [np.std(close[lag:] - close[:-lag]) for lag in hurst_lags if lag < len(close)]
    hurst = np.polyfit(np.log(hurst_lags[:len(tau)]), np.log(tau), 1)[0] if len(tau) > 1 \
        else np.nan
    return {"vol": vol, "max_dd": dd, "autocorr": ac, "hurst": hurst, "n": len(bars)}


def noop(x: int) -> int:
    return x


def run_workload(n_workers: int, panel, grid: str, strategies, reps: int) -> dict:
    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                      host="127.0.0.1", dashboard_address="127.0.0.1:0",
                      silence_logs=logging.CRITICAL,  # shutdown heartbeat noise
                      env={"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}) as cluster, \
            Client(cluster) as client:
        an = DistributedStockAnalyzer(client, panel, block_size=max(
            1, panel.shape[1] // (4 * n_workers)))
        # warm-up: imports and JIT compilation on every worker, outside the timings
        an.optimize_parameters_parallel("fast=2 slow=5", tile_size=1, backend="cpu")
        an.backtest_parallel([strategies[0]])
        an.analyze_stocks_parallel(an.symbols[:n_workers * 2], symbol_stats, block_size=1)
        out: dict = {}
        t0 = time.perf_counter()
        res = an.analyze_stocks_parallel(symbol_stats)
        out["analyze"] = time.perf_counter() - t0
        assert len(res.errors) == 0, res.errors
        t0 = time.perf_counter()
        an.backtest_parallel(strategies)
        out["backtest"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        opt = an.optimize_parameters_parallel(grid, backend="cpu")  # cluster_tile_size
        out["optimize"] = time.perf_counter() - t0
        out["n_combos"] = len(opt.table)
        client.gather(client.map(noop, range(50), pure=False))
        t0 = time.perf_counter()
        client.gather(client.map(noop, range(reps), pure=False))
        out["task_overhead"] = (time.perf_counter() - t0) / reps
        out["stats"] = res
        return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--workers", type=int, default=2, help="N of the 1-vs-N comparison")
    args = ap.parse_args(argv)
    n_sym, n_days = (60, 500) if args.quick else (500, 2520)
    grid = "fast=2:9:1 slow=20:60:10" if args.quick else "fast=2:21:1 slow=50:290:20"
    strategies = [("ma_cross", {"fast": f, "slow": s}) for f, s in ((5, 20), (10, 60))] + \
        [("rsi", {"window": 14, "lower": 30, "upper": 70}),
         ("bollinger", {"window": 20, "k": 2.0, "mode": "reversion"})]
    reps = 500 if args.quick else 2000
    print(f"W3 scaling | {platform.node()} | {os.cpu_count()} CPUs | load average "
          f"{os.getloadavg()[0]:.1f} | python {platform.python_version()}")
    panel = synthetic_market(n_sym, n_days, seed=7)
    print(f"panel: {n_sym} symbols x {n_days} dates; grid {grid!r}; "
          f"{len(strategies)} strategies")

    t0 = time.perf_counter()
    local = {s: symbol_stats(g.sort_values("date").reset_index(drop=True))
             for s, g in panel.to_long().groupby("symbol")}
    t_local = time.perf_counter() - t0
    t0 = time.perf_counter()
    [noop(i) for i in range(reps)]
    t_call = (time.perf_counter() - t0) / reps

    results = {n: run_workload(n, panel, grid, strategies, reps) for n in (1, args.workers)}
    same = pd.DataFrame.from_dict(local, orient="index").sort_index()
    dist = results[args.workers]["stats"].sort_index()
    equal = np.allclose(same.to_numpy(float), dist[same.columns].to_numpy(float),
                        equal_nan=True)
    print(f"analyze results equal the in-process loop: {equal}")
    N = args.workers
    print(f"{'workload':<10} {'1 worker':>10} {f'{N} workers':>10} {'speed-up':>9} "
          f"{'efficiency':>10}")
    for op in ("analyze", "backtest", "optimize"):
        t1, tn = results[1][op], results[N][op]
        print(f"{op:<10} {t1:>9.2f}s {tn:>9.2f}s {t1 / tn:>8.2f}x {t1 / (N * tn):>10.2f}")
    print(f"in-process pandas loop for analyze: {t_local:.2f}s "
          f"({n_sym} symbols, {t_local / n_sym * 1e3:.1f} ms/symbol)")
    print(f"optimize: {results[N]['n_combos']} combinations x {n_sym} x {n_days} = "
          f"{results[N]['n_combos'] * n_sym * n_days / results[N]['optimize']:.3g} "
          f"cell-steps/s on {N} workers")
    for n in (1, N):
        print(f"task overhead, {n} worker(s): {results[n]['task_overhead'] * 1e3:.2f} ms/task "
              f"({reps} no-op tasks) vs {t_call * 1e9:.0f} ns for a local call")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
