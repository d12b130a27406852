"""W1: Alpha158 with qilin's FactorCalculator vs the straightforward pandas way.

One command::

    .venv/bin/python benchmarks/bench_w1_factors.py [--symbols N --days T] [--quick]

Datasets: the A-share 500 set (back-adjusted; skipped with a message when
``../shared/data/cn_ashare_500_2016_2021.parquet`` is absent) and a synthetic panel
(default 5,000 symbols x 2,520 days; ``--quick``: 300 x 504).

qilin runs ``FactorCalculator("alpha158", dtype="float32")`` in-process on CPU; the big
synthetic panel is computed in memory-bounded mode (``iter_blocks``: symbol blocks, each
block's results dropped after use, as ``to_parquet`` streams them). The pandas way is what a
user would otherwise write for the same 158 features: long data, ``groupby(symbol)`` with
``shift`` / ``rolling(d).mean|std|sum|max|min|quantile|rank|cov|corr`` and
``rolling(d).apply(np.argmax)`` for IdxMax/IdxMin (as Qlib itself does). pandas is timed on
a subset of symbols (``--pandas-symbols``) and scaled linearly per symbol to the full panel;
the output says so. Both sides are checked to agree on the subset before timing counts.

With a usable GPU (CuPy and a CUDA device) each dataset also runs whole on the GPU
(``Panel.to("gpu")``, ``backend="gpu"``, the numba-cuda kernels), reported against the pandas
way, against qilin on the CPU and as the largest difference from the CPU result.

Repeats alternate qilin and pandas so both see the same load. Peak memory is the process
RSS sampled every 20 ms (psutil), minus the RSS before the run (memory the process already
holds from an earlier step is reused and not counted again).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from qilin.backend import gpu_available, gpu_names, to_host  # noqa: E402
from qilin.data.panel import Panel  # noqa: E402
from qilin.data.synthetic import synthetic_market  # noqa: E402
from qilin.factors.alpha158 import alpha158_features  # noqa: E402
from qilin.factors.calculator import FactorCalculator  # noqa: E402

ASHARE = REPO.parent / "shared" / "data" / "cn_ashare_500_2016_2021.parquet"
WINDOWS = (5, 10, 20, 30, 60)


# ------------------------------------------------------------------------ the pandas way
def pandas_alpha158(df: pd.DataFrame) -> pd.DataFrame:
    """Alpha158 the way a pandas user writes it: groupby(symbol) + rolling, on long data."""
    df = df.sort_values(["symbol", "date"]).reset_index(drop=True)
    g = df.groupby("symbol", sort=True)
    c, o, h, lo, v, vw = (df[k] for k in ("close", "open", "high", "low", "volume", "vwap"))
    t = g.cumcount().astype(float)
    sym = df["symbol"]

    def by(s: pd.Series):
        return s.groupby(sym, sort=True)

    def roll(s: pd.Series, d: int):
        return by(s).rolling(d, min_periods=d)

    def flat(r: pd.Series) -> pd.Series:
        return r.droplevel(0)

    def pair(a: pd.Series, b: pd.Series, d: int, how: str) -> pd.Series:
        frame = pd.DataFrame({"a": a, "b": b})
        return frame.groupby(sym, sort=True, group_keys=False)[["a", "b"]].apply(
            lambda f: getattr(f["a"].rolling(d, min_periods=d), how)(f["b"]))

    out: dict[str, pd.Series] = {}
    out["KMID"] = (c - o) / o
    out["KLEN"] = (h - lo) / o
    out["KMID2"] = (c - o) / (h - lo + 1e-12)
    out["KUP"] = (h - np.maximum(o, c)) / o
    out["KUP2"] = (h - np.maximum(o, c)) / (h - lo + 1e-12)
    out["KLOW"] = (np.minimum(o, c) - lo) / o
    out["KLOW2"] = (np.minimum(o, c) - lo) / (h - lo + 1e-12)
    out["KSFT"] = (2 * c - h - lo) / o
    out["KSFT2"] = (2 * c - h - lo) / (h - lo + 1e-12)
    out["OPEN0"], out["HIGH0"], out["LOW0"], out["VWAP0"] = o / c, h / c, lo / c, vw / c
    c1 = g["close"].shift(1)
    v1 = g["volume"].shift(1)
    up, down = (c > c1).astype(float), (c < c1).astype(float)
    gain, loss, move = np.maximum(c - c1, 0), np.maximum(c1 - c, 0), (c - c1).abs()
    vgain, vloss, vmove = np.maximum(v - v1, 0), np.maximum(v1 - v, 0), (v - v1).abs()
    wv = (c / c1 - 1).abs() * v
    logv = np.log(v + 1)
    cret, vret = c / c1, np.log(v / v1 + 1)
    fams: dict[str, dict[int, pd.Series]] = {}
    for d in WINDOWS:
        mean_c = flat(roll(c, d).mean())
        std_c = flat(roll(c, d).std())
        cov_ct = pair(c, t, d, "cov")
        var_t = flat(roll(t, d).var())
        slope = cov_ct / var_t
        corr_ct = pair(c, t, d, "corr")
        resi = c - (mean_c + slope * (t - flat(roll(t, d).mean())))
        hmax, lmin = flat(roll(h, d).max()), flat(roll(lo, d).min())
        imax = flat(roll(h, d).apply(np.argmax, raw=True)) + 1
        imin = flat(roll(lo, d).apply(np.argmin, raw=True)) + 1
        cntp, cntn = flat(roll(up, d).mean()), flat(roll(down, d).mean())
        sgain, sloss, smove = (flat(roll(x, d).sum()) for x in (gain, loss, move))
        vsg, vsl, vsm = (flat(roll(x, d).sum()) for x in (vgain, vloss, vmove))
        values = {
            "ROC": g["close"].shift(d) / c, "MA": mean_c / c, "STD": std_c / c,
            "BETA": slope / c, "RSQR": corr_ct ** 2, "RESI": resi / c,
            "MAX": hmax / c, "MIN": lmin / c,
            "QTLU": flat(roll(c, d).quantile(0.8)) / c,
            "QTLD": flat(roll(c, d).quantile(0.2)) / c,
            "RANK": flat(roll(c, d).rank(pct=True)),
            "RSV": (c - lmin) / (hmax - lmin + 1e-12),
            "IMAX": imax / d, "IMIN": imin / d, "IMXD": (imax - imin) / d,
            "CORR": pair(c, logv, d, "corr"),
            "CORD": pair(cret, vret, d, "corr"),
            "CNTP": cntp, "CNTN": cntn, "CNTD": cntp - cntn,
            "SUMP": sgain / (smove + 1e-12), "SUMN": sloss / (smove + 1e-12),
            "SUMD": (sgain - sloss) / (smove + 1e-12),
            "VMA": flat(roll(v, d).mean()) / (v + 1e-12),
            "VSTD": flat(roll(v, d).std()) / (v + 1e-12),
            "WVMA": flat(roll(wv, d).std()) / (flat(roll(wv, d).mean()) + 1e-12),
            "VSUMP": vsg / (vsm + 1e-12), "VSUMN": vsl / (vsm + 1e-12),
            "VSUMD": (vsg - vsl) / (vsm + 1e-12),
        }
        for fam, s in values.items():
            fams.setdefault(fam, {})[d] = s
    for fam, per_window in fams.items():
        for d in WINDOWS:
            out[f"{fam}{d}"] = per_window[d]
    result = pd.DataFrame(out)
    result.insert(0, "symbol", sym)
    result.insert(0, "date", df["date"])
    return result


# ------------------------------------------------------------------------------ helpers
class PeakRSS:
    """Peak resident memory of this process above its level at start (sampled)."""

    def __init__(self, interval: float = 0.02) -> None:
        self.proc = psutil.Process()
        self.interval = interval
        self.base = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def above_base_gib(self) -> float:
        return (self.peak - self.base) / 2**30


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float], float, Any]:
    """Median seconds, all timings, peak RSS above start (GiB) and the last result."""
    times, peak, result = [], 0.0, None
    for _ in range(repeats):
        result = None
        with PeakRSS() as mem:
            start = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - start)
        peak = max(peak, mem.above_base_gib)
    return statistics.median(times), times, peak, result


def long_of(panel: Panel) -> pd.DataFrame:
    return panel.to_long(["open", "high", "low", "close", "volume", "vwap"])


def check_agreement(panel: Panel, pandas_result: pd.DataFrame) -> float:
    """Largest relative difference between qilin and pandas over comparable values.

    Compared where both are finite, after each symbol's first 61 bars (warm-up differs for
    comparisons with a missing previous bar), leaving out windows where qilin's rolling std
    is exactly 0: pandas' online rolling variance leaves ~1e-6 noise on constant windows
    (STD/VSTD of a price locked at its limit, WVMA when nothing moves), which is not a
    difference in the formula.
    """
    ours = FactorCalculator("alpha158", backend="cpu", progress=False).compute(panel)
    ours_long = ours.to_long().set_index(["symbol", "date"])
    ref = pandas_result.set_index(["symbol", "date"]).reindex(ours_long.index)
    warm = ref.groupby(level=0).cumcount().to_numpy() >= 61
    worst = 0.0
    for name, _ in alpha158_features():
        a, b = ours_long[name].to_numpy(), ref[name].to_numpy()
        ok = warm & np.isfinite(a) & np.isfinite(b) & (np.abs(b) > 1e-6)
        if name.startswith(("CORR", "CORD", "RSQR")):
            ok &= np.abs(b) > 1e-3  # near-flat windows: both are noise-dominated
        if name.startswith(("STD", "VSTD", "WVMA")):
            ok &= a != 0
        if ok.any():
            worst = max(worst, float(np.max(np.abs(a[ok] - b[ok]) / np.abs(b[ok]))))
    return worst


def bench_dataset(name: str, panel: Panel, repeats: int, pandas_symbols: int,
                  bounded: bool, block_symbols: int) -> dict[str, Any]:
    T, N = panel.shape
    calc = FactorCalculator("alpha158", backend="cpu", dtype="float32", progress=False,
                            block_symbols=block_symbols if bounded else None)
    # warm the compiled kernels once (numba loads/compiles on first call)
    FactorCalculator("alpha158", backend="cpu", progress=False).compute(
        panel.select(symbols=panel.symbols[:5]))

    def run_qilin() -> Any:
        if bounded:
            n = 0
            for block in calc.iter_blocks(panel):
                n += sum(int(np.isfinite(block[f]).sum()) for f in block.names[:1])
            return n
        return calc.compute(panel)

    sub = panel.select(symbols=panel.symbols[:min(pandas_symbols, N)])
    sub_long = long_of(sub)
    # alternate the two so that both see the same machine load (a shared box varies a lot)
    q_all, p_all, q_mem, p_mem, p_res = [], [], 0.0, 0.0, None
    for _ in range(repeats):
        _, q_t, q_m, _ = timed(run_qilin, 1)
        _, p_t, p_m, p_res = timed(lambda: pandas_alpha158(sub_long), 1)
        q_all += q_t
        p_all += p_t
        q_mem, p_mem = max(q_mem, q_m), max(p_mem, p_m)
    q_med, p_med = statistics.median(q_all), statistics.median(p_all)
    worst = check_agreement(sub, p_res)
    scale = N / sub.shape[1]
    return {
        "dataset": name, "dates": T, "symbols": N, "qilin_s": q_med, "qilin_all": q_all,
        "qilin_peak_gib": q_mem, "pandas_symbols": sub.shape[1], "pandas_s": p_med,
        "pandas_all": p_all, "pandas_peak_gib": p_mem, "pandas_scaled_s": p_med * scale,
        "ratio": p_med * scale / q_med, "max_rel_diff": worst, "bounded": bounded,
    }


def max_rel_diff(a: Any, b: Any) -> float:
    """Largest relative difference of two factor results where both are finite."""
    worst = 0.0
    for name in a.names:
        x = np.asarray(to_host(a.values[name]), dtype=np.float64)
        y = np.asarray(to_host(b.values[name]), dtype=np.float64)
        ok = np.isfinite(x) & np.isfinite(y) & (np.abs(y) > 1e-6)
        if ok.any():
            worst = max(worst, float(np.max(np.abs(x[ok] - y[ok]) / np.abs(y[ok]))))
    return worst


def bench_gpu(row: dict[str, Any], panel: Panel, repeats: int) -> str:
    """Alpha158 on the GPU (whole panel on the device), against the CPU row of the same set."""
    import cupy as cp

    gpanel = panel.to("gpu")
    calc = FactorCalculator("alpha158", backend="gpu", dtype="float32", progress=False)
    calc.compute(gpanel.select(symbols=gpanel.symbols[:5]))  # compile the kernels once

    def run() -> Any:
        res = calc.compute(gpanel)
        cp.cuda.Device().synchronize()
        return res

    g_med, g_all, _, _ = timed(run, repeats)
    sub = panel.select(symbols=panel.symbols[:200])
    cpu = FactorCalculator("alpha158", backend="cpu", dtype="float32", progress=False)
    worst = max_rel_diff(calc.compute(sub.to("gpu")), cpu.compute(sub))
    cells = row["dates"] * row["symbols"] * 158
    return (f"{row['dataset']}: GPU {g_med:.3f} s ({cells / g_med / 1e6:.0f} M feature-cells/s; "
            f"runs {', '.join(f'{t:.3f}' for t in g_all)}), {row['pandas_scaled_s'] / g_med:.1f}x "
            f"the pandas way, {row['qilin_s'] / g_med:.1f}x qilin CPU; max rel diff vs CPU "
            f"(200 symbols) {worst:.1e}")


def print_table(rows: list[dict[str, Any]], repeats: int) -> None:
    print()
    print(f"W1 Alpha158 (158 features, CPU, float32 output), median of {repeats} run(s)")
    header = (f"{'dataset':<22}{'dates x symbols':>17}{'qilin s':>10}{'qilin GiB':>11}"
              f"{'pandas s (symbols)':>22}{'pandas scaled s':>17}{'ratio':>9}"
              f"{'max rel diff':>14}")
    print(header)
    print("-" * len(header))
    for r in rows:
        shape = f"{r['dates']} x {r['symbols']}"
        pandas = f"{r['pandas_s']:.2f} ({r['pandas_symbols']})"
        print(f"{r['dataset']:<22}{shape:>17}{r['qilin_s']:>10.2f}{r['qilin_peak_gib']:>11.2f}"
              f"{pandas:>22}{r['pandas_scaled_s']:>17.1f}{r['ratio']:>8.1f}x"
              f"{r['max_rel_diff']:>14.1e}")
    print()
    for r in rows:
        cells = r["dates"] * r["symbols"] * 158
        mode = ("memory-bounded symbol blocks (iter_blocks)" if r["bounded"]
                else "whole panel in memory (compute)")
        print(f"{r['dataset']}: qilin {cells / r['qilin_s'] / 1e6:.1f} M feature-cells/s, "
              f"{mode}; runs {', '.join(f'{t:.2f}' for t in r['qilin_all'])} s. pandas timed on "
              f"{r['pandas_symbols']} of {r['symbols']} symbols (runs "
              f"{', '.join(f'{t:.2f}' for t in r['pandas_all'])} s, peak "
              f"{r['pandas_peak_gib']:.2f} GiB) and scaled "
              f"x{r['symbols'] / r['pandas_symbols']:.1f} linearly per symbol.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--symbols", type=int, default=5000)
    parser.add_argument("--days", type=int, default=2520)
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--pandas-symbols", type=int, default=None,
                        help="symbols the pandas way is timed on (then scaled)")
    parser.add_argument("--block-symbols", type=int, default=500)
    args = parser.parse_args(argv)
    if args.quick:
        args.symbols, args.days = min(args.symbols, 300), min(args.days, 504)
    repeats = args.repeats or (1 if args.quick else 3)
    pandas_symbols = args.pandas_symbols or (30 if args.quick else 100)
    print(f"machine: {psutil.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB;"
          f" load average {', '.join(f'{x:.1f}' for x in psutil.getloadavg())}")
    rows, panels = [], []
    if ASHARE.exists():
        df = pd.read_parquet(ASHARE)
        panel = Panel.from_long(df).adjusted()
        if args.quick:
            panel = panel.select(symbols=panel.symbols[:200])
        del df
        rows.append(bench_dataset("A-share 500 (adj.)", panel, repeats, pandas_symbols,
                                  False, args.block_symbols))
        panels.append(panel)
    else:
        print(f"skipping the A-share set: {ASHARE} is absent")
    panel = synthetic_market(n_symbols=args.symbols, n_days=args.days, seed=42)
    rows.append(bench_dataset("synthetic", panel, repeats, pandas_symbols,
                              args.symbols > args.block_symbols, args.block_symbols))
    panels.append(panel)
    print_table(rows, repeats)
    print()
    if not gpu_available():
        print("GPU: skipped (no usable GPU: CuPy or a CUDA device is missing)")
        return 0
    print(f"GPU: {', '.join(gpu_names())}")
    for row, p in zip(rows, panels, strict=True):
        print(bench_gpu(row, p, repeats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
