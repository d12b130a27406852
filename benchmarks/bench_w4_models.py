"""W4: XGBoost on Alpha158 features of the A-share 500 set — single process vs xgboost.dask,
walk-forward 1 vs 2 workers, and prediction throughput vs the plain xgboost sklearn way.

One command::

    .venv/bin/python benchmarks/bench_w4_models.py [--symbols N] [--quick]

Data: the A-share 500 set (back-adjusted) when ``../shared/data/cn_ashare_500_2016_2021.parquet``
exists, else the synthetic market (said in the output). Features: the full Alpha158 set
(158 expressions) through ``FactorCalculator`` (float32), label the next-day return
z-scored per date, processors = drop constant / robust z-score / fill NaN.

1. **Training**: the same ``XGBoostModel`` (hist, fixed rounds, no early stopping) trained in
   one process with all cores vs on a 2-worker x 1-thread ``LocalCluster`` through
   ``xgboost.dask`` (``DaskQuantileDMatrix`` over date-block partitions scattered to the
   workers). The ratio is single / dask time.
2. **Walk-forward** (>= 8 windows, one task per window, each model single-threaded) on a
   1-worker vs a 2-worker cluster (1 thread each). Ratio: 1-worker / 2-worker time.
3. **Prediction**: rows/s of ``XGBoostModel.predict`` on a float32 SegmentData vs the plain
   sklearn way (``xgboost.XGBRegressor`` trained with the same parameters, ``predict`` on a
   pandas DataFrame of the same rows). Best of 5 for each.
4. **GPU** (only with a usable GPU): the same training and prediction with
   ``XGBoostModel(backend="gpu")`` (xgboost ``device="cuda"``), against step 1 and 3 on the
   CPU, and the test Rank IC of both.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from qilin.backend import gpu_available, gpu_names  # noqa: E402
from qilin.data.panel import Panel  # noqa: E402
from qilin.data.synthetic import synthetic_market  # noqa: E402
from qilin.factors.calculator import FactorCalculator  # noqa: E402
from qilin.ml import Dataset, XGBoostModel, walk_forward, walk_forward_windows  # noqa: E402

ASHARE = REPO.parent / "shared" / "data" / "cn_ashare_500_2016_2021.parquet"


def load_panel(n_symbols: int | None) -> tuple[Panel, str]:
    if ASHARE.exists():
        df = pd.read_parquet(ASHARE)
        if n_symbols:
            keep = sorted(df["symbol"].unique())[:n_symbols]
            df = df[df["symbol"].isin(keep)]
        return Panel.from_long(df), f"A-share 500 set ({ASHARE.name})"
    return synthetic_market(n_symbols or 500, 1450, seed=42, alpha=0.03), "synthetic market"


def timed(fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def cpu_timed(fn: Any) -> tuple[float, float]:
    """(wall, CPU seconds of this process) of one call."""
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def cluster(n_workers: int) -> Any:
    from distributed import Client, LocalCluster

    lc = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                      dashboard_address=":0", env={"OMP_NUM_THREADS": "1",
                                                   "NUMBA_NUM_THREADS": "1"})
    return lc, Client(lc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, default=None, help="first N symbols only")
    ap.add_argument("--rounds", type=int, default=100, help="boosting rounds for training")
    ap.add_argument("--wf-rounds", type=int, default=40, help="rounds per walk-forward window")
    ap.add_argument("--quick", action="store_true", help="150 symbols, fewer rounds")
    args = ap.parse_args()
    if args.quick:
        args.symbols, args.rounds, args.wf_rounds = args.symbols or 150, 40, 20
    cores = os.cpu_count() or 1

    t_load, (panel, source) = timed(lambda: load_panel(args.symbols))
    print(f"data: {source}: {panel.shape[0]} dates x {panel.shape[1]} symbols "
          f"({t_load:.1f}s), {cores} cores")
    t_f, fres = timed(lambda: FactorCalculator("alpha158", backend="cpu", dtype="float32",
                                               progress=False).compute(panel.adjusted()))
    print(f"Alpha158: {len(fres.names)} features in {t_f:.1f}s")
    ds = Dataset(fres, panel, horizon=1, label_norm="zscore", leak_threshold=None)
    n = len(ds.dates)
    a, b = int(n * 0.7), int(n * 0.85)
    sp = ds.split(train=(0, a - 1), valid=(a + 1, b - 1), test=(b + 1, n - 1))
    print(f"rows: train {len(sp.train):,}, valid {len(sp.valid):,}, test {len(sp.test):,} "
          f"x {len(sp.features)} features")

    params = dict(n_estimators=args.rounds, max_depth=6, learning_rate=0.05,
                  early_stopping_rounds=None, seed=0)
    # 1. training: one process (all cores) vs xgboost.dask on 2 workers x 1 thread
    t_single, m_single = timed(lambda: XGBoostModel(**params, n_jobs=cores).fit(sp.train))
    lc, client = cluster(2)
    try:
        client.wait_for_workers(2, timeout=120)
        t_dask, m_dask = timed(lambda: XGBoostModel(**params, n_jobs=1).fit(
            sp.train, client=client, block_dates=60))
        _, met_s = ds.evaluate(sp.test, m_single.predict(sp.test))
        _, met_d = ds.evaluate(sp.test, m_dask.predict(sp.test, client=client))
    finally:
        client.close()
        lc.close()
    print(f"\n1. training {args.rounds} rounds on {len(sp.train):,} rows")
    print(f"   single process ({cores} threads): {t_single:7.2f} s  "
          f"(test Rank IC {met_s['rank_ic']:.4f})")
    print(f"   xgboost.dask, 2 workers x 1:   {t_dask:7.2f} s  "
          f"(test Rank IC {met_d['rank_ic']:.4f})")
    print(f"   ratio single/dask: {t_single / t_dask:.2f}x")

    # 2. walk-forward: >= 8 windows, 1 vs 2 workers
    test_len = max(20, (n - 300) // 9)
    wins = walk_forward_windows(n, train=250, valid=0, test=test_len, purge=ds.shift)[:10]
    wf_model = XGBoostModel(n_estimators=args.wf_rounds, max_depth=6, learning_rate=0.1,
                            early_stopping_rounds=None, n_jobs=1, seed=0)
    times = {}
    results = {}
    for workers in (1, 2):
        lc, client = cluster(workers)
        try:
            client.wait_for_workers(workers, timeout=120)
            times[workers], results[workers] = timed(
                lambda c=client: walk_forward(wf_model, ds, wins, client=c, seed=0))
        finally:
            client.close()
            lc.close()
    same = np.array_equal(results[1].scores["score"], results[2].scores["score"],
                          equal_nan=True)
    print(f"\n2. walk-forward: {len(wins)} windows (train 250, test {test_len} dates, "
          f"{args.wf_rounds} rounds each)")
    print(f"   1 worker:  {times[1]:7.2f} s")
    print(f"   2 workers: {times[2]:7.2f} s   ratio {times[1] / times[2]:.2f}x  "
          f"(identical scores: {same}; OOS Rank IC {results[2].metrics['rank_ic']:.4f}, "
          f"t {results[2].metrics['rank_ic_t']:.2f})")
    for w in (1, 2):
        busy = results[w].windows["seconds"].sum()
        print(f"   {w} worker(s): window tasks ran {busy:.1f} s in total over {times[w]:.1f} s "
              f"wall (concurrency {busy / times[w]:.2f}); workers used: "
              f"{results[w].windows['worker'].nunique()}")

    # 3. prediction throughput
    import xgboost as xgb

    rows = len(sp.test)
    reps = max(1, 1_000_000 // max(rows, 1))
    big = sp.test
    if reps > 1:  # predict on at least ~1M rows so the timing is not all overhead
        big = type(sp.test)(sp.test.name, np.tile(sp.test.X, (reps, 1)),
                            np.tile(sp.test.y, reps), np.tile(sp.test.date_idx, reps),
                            np.tile(sp.test.sym_idx, reps), sp.test.dates, sp.test.symbols,
                            sp.test.features, sp.test.rows)
    skl = xgb.XGBRegressor(n_estimators=args.rounds, max_depth=6, learning_rate=0.05,
                           tree_method="hist", random_state=0, n_jobs=cores)
    skl.fit(pd.DataFrame(sp.train.X, columns=sp.features), sp.train.y)
    frame = pd.DataFrame(big.X, columns=sp.features)
    q = min((cpu_timed(lambda: m_single.predict(big)) for _ in range(5)), key=lambda x: x[0])
    s_ = min((cpu_timed(lambda: skl.predict(frame)) for _ in range(5)), key=lambda x: x[0])
    print(f"\n3. prediction on {len(big):,} rows x {len(sp.features)} features "
          f"({args.rounds} trees, depth 6), best of 5 (wall; per CPU-second in brackets)")
    print(f"   qilin XGBoostModel.predict: {len(big) / q[0]:13,.0f} rows/s "
          f"({len(big) / q[1]:,.0f} rows per CPU-s)")
    print(f"   XGBRegressor.predict(df):   {len(big) / s_[0]:13,.0f} rows/s "
          f"({len(big) / s_[1]:,.0f} rows per CPU-s)")
    print(f"   ratio: {s_[0] / q[0]:.2f}x")

    # 4. the same on the GPU
    if not gpu_available():
        print("\n4. GPU: skipped (no usable GPU: CuPy or a CUDA device is missing)")
        return
    XGBoostModel(**{**params, "n_estimators": 2}, backend="gpu").fit(sp.train)  # warm-up
    t_gpu, m_gpu = timed(lambda: XGBoostModel(**params, backend="gpu").fit(sp.train))
    _, met_g = ds.evaluate(sp.test, m_gpu.predict(sp.test))
    g = min((cpu_timed(lambda: m_gpu.predict(big)) for _ in range(5)), key=lambda x: x[0])
    print(f"\n4. GPU ({', '.join(gpu_names())}), xgboost device='cuda'")
    print(f"   training {args.rounds} rounds: {t_gpu:7.2f} s  (test Rank IC "
          f"{met_g['rank_ic']:.4f}); single-process CPU / GPU: {t_single / t_gpu:.1f}x")
    print(f"   prediction: {len(big) / g[0]:13,.0f} rows/s; GPU / CPU: {q[0] / g[0]:.1f}x")


if __name__ == "__main__":
    main()
