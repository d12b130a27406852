"""W6: Alpha158 over a whole market, end to end (read, adjust, compute, write), streamed.

One command::

    .venv/bin/python benchmarks/bench_w6_whole_market.py [--symbols N --days T] [--ci]
        [--memory-limit 8GiB] [--workers W] [--workdir DIR] [--partition-by block|year|both]

A synthetic market (default 5,000 symbols x 7,500 days, about 30 years; ``--ci``: 200 x 500)
is first written to Parquet (sorted by symbol, row groups of 64 symbols, generated 500
symbols at a time so the generator stays small; each chunk's codes get a two-digit prefix so
they are unique), then the whole-market job runs end to end with
:func:`qilin.factors.streaming.stream_factors`: Alpha158, back-adjusted, float32, lz4
(``--codec``), to a partitioned dataset within ``--memory-limit`` (``--partition-by``: one
file per symbol block, the default, or per block and year; ``both`` runs the year layout too
and checks it holds the same rows; ``--ci`` runs both). Reported: wall time,
feature-cells/s (dates x symbols x 158 / wall), peak RSS of the process tree (psutil,
sampled every 20 ms), CPU utilisation (user + system time of the process, its finished
children and its live descendants / wall; 200 % is two busy cores), and where the time went
(read / compute / write per block, summed over workers; per-task overhead).
``--cluster N`` repeats the job on a real ``dask scheduler`` + N ``dask worker`` processes on
127.0.0.1 and checks it wrote the same rows and values; ``--buffered-too`` repeats it
through the page cache; ``--scaling`` with 1 and N local worker processes.

Compared in the same run, both on a subset of symbols and scaled linearly per symbol (the
output says so):

* the same job in memory, as ``qilin factors compute --out`` does it: ``load_panel`` (no
  validation), ``adjusted()``, ``FactorCalculator.compute``, one long Parquet file (the whole
  market does not fit in memory at full size, hence the subset);
* the pandas way of W1 (``groupby(symbol).rolling``), reading and writing Parquet too.

The shared A-share file (``../shared/data/cn_ashare_500_2016_2021.parquet``) runs the same
way when present.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_w1_factors import pandas_alpha158  # noqa: E402

from qilin.data.loader import load_panel  # noqa: E402
from qilin.data.synthetic import synthetic_bars  # noqa: E402
from qilin.factors.calculator import FactorCalculator  # noqa: E402
from qilin.factors.streaming import dataset_files, stream_factors  # noqa: E402

ASHARE = REPO.parent / "shared" / "data" / "cn_ashare_500_2016_2021.parquet"
N_FACTORS = 158
CHUNK = 500


class TreeMonitor:
    """Peak RSS of this process and its descendants; CPU time of the tree (this process, its
    finished children, and the live descendants' time since the start)."""

    def __init__(self, interval: float = 0.02) -> None:
        self.proc = psutil.Process()
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        total = 0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _cpu(self) -> float:
        t = self.proc.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        for p in self.proc.children(recursive=True):
            try:
                c = p.cpu_times()
            except psutil.Error:
                continue
            total += c.user + c.system
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeMonitor:
        self.cpu0, self.t0 = self._cpu(), time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.wall = time.perf_counter() - self.t0
        self.cpu = self._cpu() - self.cpu0

    @property
    def cpu_pct(self) -> float:
        return 100.0 * self.cpu / self.wall


def write_market(path: Path, n_symbols: int, n_days: int) -> Path:
    """The synthetic market as one Parquet file, sorted by symbol, 500 symbols at a time."""
    writer = None
    try:
        for k, start in enumerate(range(0, n_symbols, CHUNK)):
            n = min(CHUNK, n_symbols - start)
            df = synthetic_bars(n_symbols=n, n_days=n_days, seed=1000 + k)
            df["symbol"] = f"{k:02d}" + df["symbol"].astype(str)
            table = pa.Table.from_pandas(df, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema, compression="zstd")
            writer.write_table(table, row_group_size=64 * n_days)
            del df, table
    finally:
        if writer is not None:
            writer.close()
    return path


def run_streamed(src: Path, out: Path, memory_limit: str, workers: int | None,
                 codec: str, partition_by: str = "block",
                 direct_io: bool = True) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    with TreeMonitor() as mon:
        res = stream_factors(src, out, "alpha158", dtype="float32", adjust=True,
                             memory_limit=memory_limit, workers=workers, codec=codec,
                             progress=sys.stderr.isatty(), partition_by=partition_by,
                             direct_io=direct_io)
    phases = {k: sum(s.get(k, 0.0) for s in res.summaries) for k in ("read", "compute", "write")}
    done = [s for s in res.summaries if not s.get("skipped")]
    busy = sum(s["finished"] - s["started"] for s in done)
    files = dataset_files(out)
    return {"wall": mon.wall, "cells": res.cells, "peak": mon.peak, "cpu_pct": mon.cpu_pct,
            "blocks": res.blocks, "block_symbols": res.block_symbols, "workers": res.workers,
            "rows": res.rows, "phases": phases, "files": len(files),
            "bytes": sum(p.stat().st_size for p in files), "partition_by": partition_by,
            "codec": codec, "direct_io": direct_io, "busy": busy, "tasks": len(done),
            "outside_phases": busy - sum(phases.values())}


def dataset_digest(out: Path) -> dict[str, str]:
    """A digest per column of a streamed dataset's rows in file order (a few MB at a time).

    Each column is hashed as one stream of values, so two datasets with the same rows in
    the same order have the same digests whatever their block and row-group boundaries.
    """
    digests: dict[str, Any] = {}
    for path in dataset_files(out):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1 << 18):
            for name, col in zip(batch.schema.names, batch.columns, strict=True):
                h = digests.setdefault(name, hashlib.blake2b(digest_size=16))
                if pa.types.is_string(col.type):  # lengths and characters: two streams
                    offsets = np.frombuffer(col.buffers()[1], dtype=np.int32,
                                            count=len(col) + 1, offset=4 * col.offset)
                    lengths = digests.setdefault(f"{name} lengths",
                                                 hashlib.blake2b(digest_size=16))
                    lengths.update(np.diff(offsets).tobytes())
                    h.update(col.buffers()[2].to_pybytes()[offsets[0]:offsets[-1]])
                else:
                    h.update(col.to_numpy(zero_copy_only=False).tobytes())
    return {name: h.hexdigest() for name, h in digests.items()}


def run_on_cluster(src: Path, out: Path, work: Path, memory_limit: str, n_workers: int,
                   codec: str) -> dict[str, Any]:
    """The same job on a real ``dask scheduler`` and ``n_workers`` ``dask worker`` processes
    on 127.0.0.1 (one thread each, no nanny), the whole tree within ``memory_limit``: each
    worker gets an equal share of it after 1 GiB for the scheduler and this process."""
    from distributed import Client

    from qilin.factors.streaming import parse_memory

    dask_cli = Path(sys.executable).with_name("dask")
    per_worker = (parse_memory(memory_limit) - 2**30) // n_workers
    folder = work / "cluster"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    sched_file = folder / "scheduler.json"
    procs: list[subprocess.Popen] = []
    logs = []
    try:
        def start(args: list[str], name: str) -> None:
            log = open(folder / f"{name}.log", "wb")
            logs.append(log)
            procs.append(subprocess.Popen([str(dask_cli), *args], stdout=log,
                                          stderr=subprocess.STDOUT, cwd=folder))

        start(["scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address",
               "127.0.0.1:0", "--scheduler-file", str(sched_file)], "scheduler")
        for i in range(n_workers):
            start(["worker", "--scheduler-file", str(sched_file), "--nthreads", "1",
                   "--no-nanny", "--host", "127.0.0.1", "--dashboard-address", "127.0.0.1:0",
                   "--memory-limit", str(per_worker), "--local-directory",
                   str(folder / f"w{i}")], f"worker-{i}")
        deadline = time.monotonic() + 120
        while not sched_file.exists():
            if time.monotonic() > deadline:
                raise RuntimeError("dask scheduler did not start")
            time.sleep(0.05)
        shutil.rmtree(out, ignore_errors=True)
        with Client(scheduler_file=str(sched_file), timeout="60s") as client:
            client.wait_for_workers(n_workers, timeout=120)
            with TreeMonitor() as mon:
                res = stream_factors(src, out, "alpha158", dtype="float32", adjust=True,
                                     memory_limit=per_worker, client=client, codec=codec,
                                     progress=False)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        for log in logs:
            log.close()
    return {"wall": mon.wall, "peak": mon.peak, "cpu_pct": mon.cpu_pct, "blocks": res.blocks,
            "block_symbols": res.block_symbols, "workers": n_workers, "rows": res.rows,
            "per_worker": per_worker}


def same_rows(block_out: Path, year_out: Path) -> bool:
    """Both layouts hold the same (symbol, date) rows with the same values (one factor)."""
    cols = ["date", "symbol", "KMID"]
    a = pd.read_parquet(block_out, columns=cols).sort_values(["symbol", "date"])
    b = pd.read_parquet(year_out, columns=cols).sort_values(["symbol", "date"])
    return len(a) == len(b) and all(
        np.array_equal(a[c].to_numpy(), b[c].to_numpy(), equal_nan=c == "KMID") for c in cols)


def run_in_memory(src: Path, symbols: list[str], out: Path) -> dict[str, Any]:
    """``qilin factors compute --out`` on a subset of symbols (load, adjust, compute, write)."""
    with TreeMonitor() as mon:
        panel = load_panel(src, backend="cpu", validate=None, symbols=symbols).adjusted()
        t0 = time.perf_counter()
        res = FactorCalculator("alpha158", backend="cpu", dtype="float32",
                               progress=False).compute(panel)
        compute = time.perf_counter() - t0
        res.to_parquet(out)
    T, N = panel.shape
    return {"wall": mon.wall, "compute": compute, "cells": T * N * N_FACTORS, "symbols": N,
            "peak": mon.peak, "cpu_pct": mon.cpu_pct}


def run_pandas(src: Path, symbols: list[str], out: Path) -> dict[str, Any]:
    """The W1 pandas way on a subset, reading and writing Parquet as well."""
    with TreeMonitor() as mon:
        df = pd.read_parquet(src, filters=[("symbol", "in", symbols)])
        f = df["adj_factor"]
        for c in ("open", "high", "low", "close"):
            df[c] = df[c] * f
        df["vwap"] = np.where(df["volume"] > 0, df["amount"] / df["volume"], np.nan) * f
        df["volume"] = df["volume"] / f
        result = pandas_alpha158(df[["date", "symbol", "open", "high", "low", "close",
                                     "volume", "vwap"]])
        result.to_parquet(out, index=False)
    return {"wall": mon.wall, "symbols": len(symbols)}


def bench(name: str, src: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    all_symbols = sorted(pd.read_parquet(src, columns=["symbol"])["symbol"].astype(str)
                         .unique())
    n_dates = pd.read_parquet(src, columns=["date"])["date"].nunique()
    print(f"{name}: {n_dates} dates x {len(all_symbols)} symbols "
          f"({src.stat().st_size / 2**20:.0f} MiB Parquet)", flush=True)
    # warm the kernels (numba cache) outside the timings
    warm_sub = all_symbols[:3]
    run_in_memory(src, warm_sub, work / "warm.parquet")
    layouts = ["block", "year"] if args.partition_by == "both" else [args.partition_by]
    streamed = run_streamed(src, work / f"{name}-out", args.memory_limit, args.workers,
                            args.codec, layouts[0])
    by_year = None
    if len(layouts) == 2:
        by_year = run_streamed(src, work / f"{name}-years", args.memory_limit, args.workers,
                               args.codec, "year")
        by_year["same_rows"] = same_rows(work / f"{name}-out", work / f"{name}-years")
    cluster = None
    if args.cluster:
        cluster = run_on_cluster(src, work / f"{name}-cluster", work, args.memory_limit,
                                 args.cluster, args.codec)
        t0 = time.perf_counter()
        cluster["identical"] = dataset_digest(work / f"{name}-cluster") == \
            dataset_digest(work / f"{name}-out")
        cluster["compare_s"] = time.perf_counter() - t0
        if cluster["identical"]:
            shutil.rmtree(work / f"{name}-cluster", ignore_errors=True)
    buffered = None
    if args.buffered_too:  # the same job writing through the page cache
        buffered = run_streamed(src, work / f"{name}-buffered", args.memory_limit,
                                args.workers, args.codec, layouts[0], direct_io=False)
        shutil.rmtree(work / f"{name}-buffered", ignore_errors=True)
    scaling = {}
    if args.scaling:  # 1 vs N local worker processes, same budget
        for w in sorted({1, args.workers or psutil.cpu_count() or 1}):
            scaling[w] = run_streamed(src, work / f"{name}-w{w}", args.memory_limit, w,
                                      args.codec)
            shutil.rmtree(work / f"{name}-w{w}", ignore_errors=True)
    mem_syms = all_symbols[:min(args.inmem_symbols, len(all_symbols))]
    inmem = run_in_memory(src, mem_syms, work / "inmem.parquet")
    pd_syms = all_symbols[:min(args.pandas_symbols, len(all_symbols))]
    pandas = run_pandas(src, pd_syms, work / "pandas.parquet")
    scale_mem = len(all_symbols) / len(mem_syms)
    scale_pd = len(all_symbols) / len(pd_syms)
    return {"name": name, "dates": n_dates, "symbols": len(all_symbols), "streamed": streamed,
            "by_year": by_year, "buffered": buffered, "cluster": cluster, "inmem": inmem,
            "scaling": scaling,
            "inmem_scaled": inmem["wall"] * scale_mem,
            "inmem_compute_scaled": inmem["compute"] * scale_mem,
            "pandas": pandas, "pandas_scaled": pandas["wall"] * scale_pd}


def report(r: dict[str, Any]) -> None:
    s = r["streamed"]
    cells = r["dates"] * r["symbols"] * N_FACTORS
    print(f"\nW6 {r['name']}: {r['dates']} dates x {r['symbols']} symbols x 158 = "
          f"{cells / 1e9:.2f} G feature-cells (Alpha158, adjusted, float32, {s['codec']})")
    print(f"  streamed end to end: {s['wall']:.1f} s, {cells / s['wall'] / 1e6:.1f} M "
          f"feature-cells/s, peak RSS {s['peak'] / 2**30:.2f} GiB, CPU {s['cpu_pct']:.0f} %, "
          f"{s['blocks']} blocks of {s['block_symbols']} symbols on {s['workers']} worker(s), "
          f"{s['rows']} rows, {s['files']} files ({s['partition_by']} layout), "
          f"{s['bytes'] / 2**20:.0f} MiB written "
          f"({'O_DIRECT where allowed' if s['direct_io'] else 'through the page cache'})")
    ph = s["phases"]
    print(f"  time in blocks (summed over workers): read {ph['read']:.1f} s, compute "
          f"{ph['compute']:.1f} s, write {ph['write']:.1f} s")
    if s["workers"] > 1:  # in-process, the phases of consecutive blocks overlap
        idle = s["workers"] * s["wall"] - s["busy"]
        print(f"  per-task overhead (task time outside read/compute/write): "
              f"{1e3 * s['outside_phases'] / max(1, s['tasks']):.0f} ms over {s['tasks']} "
              f"tasks; worker time outside tasks (start-up, planning, the last blocks): "
              f"{idle:.1f} s of {s['workers']} x {s['wall']:.1f} s")
    c = r["cluster"]
    if c is not None:
        print(f"  on a local process cluster (dask scheduler + {c['workers']} dask worker "
              f"processes on 127.0.0.1, 1 thread and {c['per_worker'] / 2**30:.2f} GiB each): "
              f"{c['wall']:.1f} s ({cells / c['wall'] / 1e6:.1f} M feature-cells/s, CPU "
              f"{c['cpu_pct']:.0f} %, peak RSS of the whole tree {c['peak'] / 2**30:.2f} GiB), "
              f"{c['blocks']} blocks of {c['block_symbols']} symbols; same rows and values as "
              f"the one-machine run: {'yes' if c['identical'] else 'NO'} (digests of every "
              f"column, {c['compare_s']:.0f} s)")
    b = r["buffered"]
    if b is not None:
        ph = b["phases"]
        print(f"  the same writing through the page cache: {b['wall']:.1f} s "
              f"({cells / b['wall'] / 1e6:.1f} M feature-cells/s, CPU {b['cpu_pct']:.0f} %, "
              f"peak RSS {b['peak'] / 2**30:.2f} GiB); read {ph['read']:.1f} s, compute "
              f"{ph['compute']:.1f} s, write {ph['write']:.1f} s")
    y = r["by_year"]
    if y is not None:
        print(f"  partitioned by year as well: {y['wall']:.1f} s ({cells / y['wall'] / 1e6:.1f} M "
              f"feature-cells/s, peak RSS {y['peak'] / 2**30:.2f} GiB), {y['files']} files, "
              f"{y['bytes'] / 2**20:.0f} MiB; same rows as the block layout: "
              f"{'yes' if y['same_rows'] else 'NO'}")
    for w, sc in r["scaling"].items():
        per_block = sc["wall"] / sc["blocks"]
        print(f"  scaling: {w} worker(s): {sc['wall']:.1f} s ({cells / sc['wall'] / 1e6:.1f} M "
              f"cells/s, CPU {sc['cpu_pct']:.0f} %, {sc['blocks']} blocks, "
              f"{per_block:.2f} s wall per block)")
    m = r["inmem"]
    print(f"  in memory (load_panel + adjust + compute + one Parquet file) on {m['symbols']} "
          f"symbols: {m['wall']:.2f} s (compute {m['compute']:.2f} s, CPU {m['cpu_pct']:.0f} %,"
          f" peak {m['peak'] / 2**30:.2f} GiB); scaled x{r['symbols'] / m['symbols']:.1f} "
          f"per symbol: {r['inmem_scaled']:.1f} s -> streamed/in-memory wall ratio "
          f"{s['wall'] / r['inmem_scaled']:.2f}; kernels alone would take "
          f"{r['inmem_compute_scaled']:.1f} s ({cells / r['inmem_compute_scaled'] / 1e6:.1f} M "
          f"cells/s)")
    p = r["pandas"]
    print(f"  pandas way (read, adjust, groupby-rolling, write) on {p['symbols']} symbols: "
          f"{p['wall']:.2f} s, scaled x{r['symbols'] / p['symbols']:.1f}: "
          f"{r['pandas_scaled']:.0f} s -> streamed is {r['pandas_scaled'] / s['wall']:.1f}x "
          "faster")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--symbols", type=int, default=5000)
    parser.add_argument("--days", type=int, default=7500)
    parser.add_argument("--ci", action="store_true", help="200 x 500, for CI")
    parser.add_argument("--memory-limit", default="8GiB")
    parser.add_argument("--workers", type=int, default=None,
                        help="local worker processes (default: CPU count)")
    parser.add_argument("--codec", default="lz4", help="Parquet codec of the outputs "
                        "(default lz4, as stream_factors)")
    parser.add_argument("--inmem-symbols", type=int, default=300)
    parser.add_argument("--pandas-symbols", type=int, default=20)
    parser.add_argument("--workdir", default=None, help="folder for the market and outputs")
    parser.add_argument("--no-ashare", action="store_true")
    parser.add_argument("--partition-by", default=None, choices=["block", "year", "both"],
                        help="output layout of the streamed job (default block; --ci: both)")
    parser.add_argument("--cluster", type=int, default=0, metavar="N",
                        help="also run on a real dask scheduler + N dask worker processes "
                             "on 127.0.0.1 within --memory-limit, and check its output "
                             "equals the one-machine run")
    parser.add_argument("--buffered-too", action="store_true",
                        help="also run the streamed job writing through the page cache "
                             "(direct_io=False), to compare")
    parser.add_argument("--scaling", action="store_true",
                        help="also run with 1 and with --workers local worker processes")
    args = parser.parse_args(argv)
    if args.ci:
        args.symbols, args.days = min(args.symbols, 200), min(args.days, 500)
        args.inmem_symbols, args.pandas_symbols = min(args.inmem_symbols, 100), 10
    if args.partition_by is None:
        args.partition_by = "both" if args.ci else "block"
    print(f"machine: {psutil.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} "
          f"GiB; load average {', '.join(f'{x:.1f}' for x in psutil.getloadavg())}")
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="qilin-w6-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        src = work / f"market_{args.symbols}x{args.days}.parquet"
        if not src.exists():
            t0 = time.perf_counter()
            write_market(src, args.symbols, args.days)
            print(f"wrote the synthetic market to {src} in {time.perf_counter() - t0:.0f} s")
        results = [bench("synthetic", src, work, args)]
        if ASHARE.exists() and not args.no_ashare:
            results.append(bench("A-share 500", ASHARE, work, args))
        elif not args.no_ashare:
            print(f"skipping the A-share set: {ASHARE} is absent")
        for r in results:
            report(r)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
