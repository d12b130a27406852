"""W2: parameter sweeps in cell-steps per second (dates x symbols x combinations / s).

One command, all figures measured in this run:

1. Dual moving-average crossover over a 500 x 2,520 synthetic A-share panel with 1,000
   (fast, slow) pairs: the fused CPU kernel (``run_sweep(backend="cpu")``, CN rules and
   costs, lots, limits) against the plain NumPy-vectorised loop a user would write (per pair:
   the two MAs by cumulative sums, ``position = fast > slow`` shifted one day, returns times
   position minus costs on position changes, equal-weight portfolio, Sharpe and drawdown),
   timed on a subset of pairs and reported per pair.
2. On a GPU: the fused CuPy kernel against the same vectorised loop written with CuPy
   (skipped without a GPU, saying so).
3. A momentum top-k portfolio sweep (lookback x k x rebalance) through the top-k sweep
   kernel (rankings shared across combinations, the portfolio engine's own state machine per
   combination, so each row equals ``run_portfolio``), against the portfolio engine one
   combination at a time.

Usage::

    .venv/bin/python benchmarks/bench_w2_sweeps.py            # full size
    .venv/bin/python benchmarks/bench_w2_sweeps.py --quick    # small, for a smoke run
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qilin.backend import gpu_available, gpu_names
from qilin.backtest.strategies import MomentumTopK, signal_close
from qilin.backtest.sweeps import ParameterGrid, run_sweep
from qilin.config import load_market
from qilin.data.synthetic import synthetic_market


def vectorised_pair(xp: Any, px: Any, rets: Any, fast: int, slow: int, cost: float,
                    ppy: int) -> tuple[float, float]:
    """The straightforward array way for one (fast, slow) pair; returns (sharpe, max dd)."""
    cs = xp.cumsum(px, axis=0)

    def sma(w: int) -> Any:
        out = xp.full_like(px, xp.nan)
        out[w - 1] = cs[w - 1] / w
        out[w:] = (cs[w:] - cs[:-w]) / w
        return out

    pos = (sma(fast) > sma(slow)).astype(xp.float64)
    held = xp.zeros_like(pos)
    held[1:] = pos[:-1]
    trades = xp.abs(xp.diff(pos, axis=0, prepend=xp.zeros((1, px.shape[1]))))
    strat = held * rets - trades * cost
    port = strat.mean(axis=1)
    sharpe = port.mean() / port.std(ddof=1) * np.sqrt(ppy)
    wealth = np.cumprod(1 + (port.get() if xp is not np else port))  # T values: on the host
    dd = (wealth / np.maximum.accumulate(wealth) - 1).min()
    return float(sharpe), float(dd)


def time_vectorised(xp: Any, px_host: np.ndarray, pairs: list[tuple[int, int]], cost: float,
                    ppy: int) -> tuple[float, float]:
    """Wall and CPU seconds per pair of the vectorised way (arrays already on the device)."""
    px = xp.asarray(np.nan_to_num(px_host, nan=0.0))
    filled = np.where(np.isfinite(px_host), px_host, np.nan)
    r = np.zeros_like(filled)
    with np.errstate(invalid="ignore", divide="ignore"):
        r[1:] = filled[1:] / filled[:-1] - 1
    rets = xp.asarray(np.nan_to_num(r))
    vectorised_pair(xp, px, rets, *pairs[0], cost, ppy)  # warm-up
    _sync(xp)
    t0, c0 = time.perf_counter(), time.process_time()
    for fast, slow in pairs:
        vectorised_pair(xp, px, rets, fast, slow, cost, ppy)
    _sync(xp)
    return ((time.perf_counter() - t0) / len(pairs), (time.process_time() - c0) / len(pairs))


def _sync(xp: Any) -> None:
    if xp is not np:
        xp.cuda.Stream.null.synchronize()


def ffill(a: np.ndarray) -> np.ndarray:
    import pandas as pd

    return pd.DataFrame(a).ffill().bfill().to_numpy()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    ap.add_argument("--symbols", type=int, default=None)
    ap.add_argument("--days", type=int, default=None)
    ap.add_argument("--numpy-pairs", type=int, default=None,
                    help="pairs timed for the NumPy way (per-pair rate)")
    ap.add_argument("--repeats", type=int, default=None,
                    help="alternating runs of each way (median reported; default 3, quick 1)")
    args = ap.parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick else 3)
    n_sym = args.symbols or (100 if args.quick else 500)
    n_days = args.days or (500 if args.quick else 2520)
    grid = ("fast=2:11:1 slow=20:110:10" if args.quick else "fast=2:41:1 slow=50:290:10")
    n_np = args.numpy_pairs or (5 if args.quick else 20)
    print(f"W2 sweeps | {platform.node()} | {os.cpu_count()} CPUs | load average "
          f"{os.getloadavg()[0]:.1f} | python {platform.python_version()}")
    t0 = time.perf_counter()
    panel = synthetic_market(n_sym, n_days, seed=42)
    print(f"panel: synthetic_market({n_sym}, {n_days}) in {time.perf_counter() - t0:.1f}s")
    cn = load_market("cn")

    # warm-up outside the timings, as the NumPy way gets one full-size pair: JIT compile
    # (cached on disk after the first run) and a first full-size sweep (first-touch memory)
    run_sweep(panel.select(symbols=panel.symbols[:3]), "ma_cross", "fast=2 slow=5",
              backend="cpu")
    combos = ParameterGrid(grid)
    run_sweep(panel, "ma_cross", combos, market=cn, backend="cpu")
    px = ffill(signal_close(panel))
    cost = cn.commission_rate + cn.slippage_bps / 1e4 + cn.stamp_duty_rate / 2
    listed = combos.combinations()
    pairs = [(int(listed[i]["fast"]), int(listed[i]["slow"]))
             for i in np.linspace(0, len(listed) - 1, n_np).astype(int)]
    # alternate the two ways so that both see the same machine load; report medians
    walls, cpus, np_walls, np_cpus = [], [], [], []
    for _ in range(args.repeats):
        c0 = time.process_time()
        res = run_sweep(panel, "ma_cross", combos, market=cn, backend="cpu")
        cpus.append(time.process_time() - c0)
        walls.append(res.elapsed_s)
        per_pair, per_pair_cpu = time_vectorised(np, px, pairs, cost, cn.periods_per_year)
        np_walls.append(per_pair)
        np_cpus.append(per_pair_cpu)
    fused_s, fused_cpu_s = statistics.median(walls), statistics.median(cpus)
    per_pair, per_pair_cpu = statistics.median(np_walls), statistics.median(np_cpus)
    fused = res.cell_steps / fused_s
    print(f"[ma_cross] grid {grid!r}: {len(res.table)} pairs x {n_sym} symbols x {n_days} dates"
          f" = {res.cell_steps:.3g} cell-steps; medians of {args.repeats} alternating runs")
    print(f"  fused CPU kernel (numba, CN rules+costs): {fused_s:.2f}s wall -> "
          f"{fused:.3g} cell-steps/s; {fused_cpu_s:.2f} CPU-s (all threads) -> "
          f"{res.cell_steps / fused_cpu_s:.3g} cell-steps per CPU-second "
          f"(runs {', '.join(f'{w:.2f}' for w in walls)} s)")
    numpy_rate = n_sym * n_days / per_pair
    numpy_cpu_rate = n_sym * n_days / per_pair_cpu
    print(f"  NumPy vectorised per pair ({n_np} pairs timed): {per_pair * 1e3:.1f} ms/pair wall "
          f"-> {numpy_rate:.3g} cell-steps/s; {per_pair_cpu * 1e3:.1f} CPU-ms/pair -> "
          f"{numpy_cpu_rate:.3g} cell-steps per CPU-second "
          f"(runs {', '.join(f'{w * 1e3:.1f}' for w in np_walls)} ms/pair)")
    print(f"  speed-up fused CPU / NumPy: {fused / numpy_rate:.1f}x wall-clock, "
          f"{res.cell_steps / fused_cpu_s / numpy_cpu_rate:.1f}x per CPU-second "
          f"(target >= 20x wall-clock)")
    print(f"  best: {res.summary()}")

    if gpu_available():
        import cupy as cp

        run_sweep(panel.select(symbols=panel.symbols[:3]), "ma_cross", "fast=2 slow=5",
                  backend="gpu")
        gres = run_sweep(panel, "ma_cross", combos, market=cn, backend="gpu")
        grate = gres.cell_steps / gres.elapsed_s
        per_pair_gpu, _ = time_vectorised(cp, px, pairs, cost, cn.periods_per_year)
        cupy_rate = n_sym * n_days / per_pair_gpu
        print(f"  GPU {', '.join(gpu_names())}: fused CuPy kernel {gres.elapsed_s:.2f}s -> "
              f"{grate:.3g} cell-steps/s (end to end, indicators on host)")
        print(f"  CuPy vectorised per pair: {per_pair_gpu * 1e3:.2f} ms/pair -> "
              f"{cupy_rate:.3g} cell-steps/s; speed-up fused GPU / CuPy: "
              f"{grate / cupy_rate:.1f}x")
        same = np.allclose(gres.table["sharpe_ratio"], res.table["sharpe_ratio"], rtol=1e-9,
                           equal_nan=True)
        print(f"  GPU table equals CPU table (rtol 1e-9): {same}")
    else:
        print("  GPU: skipped (no usable GPU: CuPy or a CUDA device is missing)")

    topk_grid = ("lookback=5:20:5 k=5,10 rebalance=1,5" if args.quick
                 else "lookback=5:60:5 k=5,10,20,50 rebalance=1,5,10,20")
    from qilin.backtest.engine import run_portfolio

    tpl = MomentumTopK()
    # warm-up on a slice: kernel compilation (a cold numba cache) stays out of the timings
    warm = panel.select(end=panel.dates[min(len(panel.dates) - 1, 120)])
    run_sweep(warm, "momentum_topk", "lookback=5 k=5 rebalance=1,5", market=cn, backend="cpu")
    run_portfolio(warm, scores=tpl.scores(warm, 5), top_k=5, rebalance=5, market=cn)
    tres = run_sweep(panel, "momentum_topk", topk_grid, market=cn, backend="cpu")
    trate = tres.cell_steps / tres.elapsed_s
    print(f"[momentum_topk] grid {topk_grid!r}: {len(tres.table)} combinations -> "
          f"{tres.elapsed_s:.2f}s, {trate:.3g} cell-steps/s (top-k sweep kernel)")
    sample = tres.table.iloc[[0, len(tres.table) // 2, len(tres.table) - 1]]
    t0 = time.perf_counter()
    for row in sample.itertuples():
        run_portfolio(panel, scores=tpl.scores(panel, int(row.lookback)), top_k=int(row.k),
                      rebalance=int(row.rebalance), market=cn)
    per_combo = (time.perf_counter() - t0) / len(sample)
    erate = n_sym * n_days / per_combo
    print(f"  portfolio engine, one combination at a time ({len(sample)} timed): "
          f"{per_combo:.2f}s/combination -> {erate:.3g} cell-steps/s; sweep / engine: "
          f"{trate / erate:.1f}x")
    print(f"  best: {tres.summary()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
