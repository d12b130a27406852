"""W5 monitoring: symbol-ticks per second through PriceMonitor + AnomalyDetector (streaming).

Every tick is a batch of ``--symbols`` prices and volumes (500 by default: one vectorised
update over all symbols). Three ways, same synthetic ticks, same rules, same run:

* qilin: ``PriceMonitor.update`` + ``AnomalyDetector.update`` (O(1) state per symbol,
  ring buffers + running sums advanced by one compiled kernel call per tick);
* NumPy per tick: keep the last ``max window + 1`` rows in a deque and recompute every
  window's mean/std with NumPy over all symbols at each tick;
* pandas per tick: keep a DataFrame of the recent rows and use ``pct_change``/``rolling``.

The baselines are checked to give the same fired cells as qilin on the ticks they run. Then
a soak pushes ``--soak`` symbol-ticks (10 million by default; ``--quick``: 1 million)
through qilin with alerts dispatched through an AlertManager, and reports the process RSS
at the start, middle and end (it must stay flat: the state is allocated once).

Run: ``.venv/bin/python benchmarks/bench_w5_monitoring.py [--quick]``
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections import deque

import numpy as np
import pandas as pd
import psutil

from qilin.monitoring.alerts import AlertManager, CallbackHandler
from qilin.monitoring.anomaly import AnomalyConfig, AnomalyDetector, warm_up
from qilin.monitoring.price_monitor import PriceMonitor, PriceRule

CFG = AnomalyConfig()          # return 20, price 20, vol 5/60, volume 20


def make_ticks(n_ticks: int, n_symbols: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ret = 0.002 * rng.standard_t(4, (n_ticks, n_symbols))
    price = 50.0 * np.exp(np.cumsum(ret, axis=0))
    volume = rng.lognormal(8, 0.6, (n_ticks, n_symbols))
    return price, volume


def symbols(n: int) -> list[str]:
    return [f"{600000 + i:06d}.SH" if i % 2 else f"{300000 + i:06d}.SZ" for i in range(n)]


def make_qilin(syms: list[str]) -> tuple[PriceMonitor, AnomalyDetector]:
    rules = [PriceRule(s, above=80.0, below=20.0) for s in syms[::5]]
    return (PriceMonitor(syms, rules, default_move_pct=0.05),
            AnomalyDetector(CFG, n_symbols=len(syms)))


Timing = tuple[float, float]   # (wall seconds, CPU seconds of this process)


def run_qilin(price: np.ndarray, volume: np.ndarray, syms: list[str], date: pd.Timestamp
              ) -> tuple[Timing, np.ndarray]:
    mon, det = make_qilin(syms)
    fired = np.zeros(9, dtype=np.int64)
    t0, c0 = time.perf_counter(), time.process_time()
    for t in range(price.shape[0]):
        a = mon.update(price[t], date=date)
        b = det.update(price[t], volume[t])
        fired += [int(np.count_nonzero(m)) for m in (*a.fired.values(), *b.fired.values())]
    return (time.perf_counter() - t0, time.process_time() - c0), fired


def _limit_prices(prev: np.ndarray, pct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    up = np.floor(prev * (1 + pct) * 100 + 0.5 + 1e-9) / 100
    down = np.floor(prev * (1 - pct) * 100 + 0.5 + 1e-9) / 100
    return up, down


def run_numpy(price: np.ndarray, volume: np.ndarray, syms: list[str]
              ) -> tuple[Timing, np.ndarray]:
    """What a user writes with NumPy: a window of recent rows, stats recomputed per tick."""
    n = len(syms)
    above = np.full(n, np.nan)
    below = np.full(n, np.nan)
    above[::5], below[::5] = 80.0, 20.0
    pct = np.array([0.2 if s.startswith("300") else 0.1 for s in syms])
    c = CFG
    keep = max(c.return_window + 2, c.price_window + 1, c.vol_long + 1, c.volume_window + 1)
    hp: deque[np.ndarray] = deque(maxlen=keep)
    hv: deque[np.ndarray] = deque(maxlen=keep)
    fired = np.zeros(9, dtype=np.int64)

    def z(x: np.ndarray, win: np.ndarray) -> np.ndarray:
        s = win.std(axis=0, ddof=1)
        m = win.mean(axis=0)
        ok = s * s > 1e-12 * (win * win).mean(axis=0)
        return np.where(ok, (x - m) / np.where(ok, s, 1.0), np.nan)

    t0, c0 = time.perf_counter(), time.process_time()
    with np.errstate(invalid="ignore", divide="ignore"):
        for t in range(price.shape[0]):
            p, v = price[t], volume[t]
            hp.append(p)
            hv.append(v)
            P, V = np.array(hp), np.array(hv)
            k = len(P)
            prev = P[-2] if k > 1 else np.full(n, np.nan)
            move = p / prev - 1
            up, down = _limit_prices(prev, pct)
            R = P[1:] / P[:-1] - 1
            nan = np.full(n, np.nan)
            zr = z(R[-1], R[-1 - c.return_window:-1]) if len(R) > c.return_window else nan
            zp = z(p, P[-1 - c.price_window:-1]) if k > c.price_window else nan
            if len(R) >= c.vol_long:
                sl = R[-c.vol_long:].std(axis=0, ddof=1)
                ok = sl * sl > 1e-12 * (R[-c.vol_long:] ** 2).mean(axis=0)
                vr = np.where(ok, R[-c.vol_short:].std(axis=0, ddof=1) / sl, np.nan)
            else:
                vr = nan
            vm = V[-1 - c.volume_window:-1].mean(axis=0) if k > c.volume_window else nan
            vs = np.where(vm > 0, v / vm, np.nan)
            fired += [int(np.count_nonzero(m)) for m in (
                p > above, p < below, np.abs(move) > 0.05, p >= up - 1e-6, p <= down + 1e-6,
                np.abs(zr) > c.return_z, np.abs(zp) > c.price_z, vr > c.vol_ratio,
                vs > c.volume_ratio)]
    return (time.perf_counter() - t0, time.process_time() - c0), fired


def run_pandas(price: np.ndarray, volume: np.ndarray, syms: list[str]
               ) -> tuple[Timing, np.ndarray]:
    """What a user writes with pandas: append the tick, roll over the recent frame."""
    c = CFG
    above = pd.Series(np.nan, index=syms)
    below = pd.Series(np.nan, index=syms)
    above.iloc[::5], below.iloc[::5] = 80.0, 20.0
    pct = pd.Series([0.2 if s.startswith("300") else 0.1 for s in syms], index=syms)
    keep = max(c.return_window + 2, c.price_window + 1, c.vol_long + 1, c.volume_window + 1)
    hp = pd.DataFrame(columns=syms, dtype=float)
    hv = pd.DataFrame(columns=syms, dtype=float)
    fired = np.zeros(9, dtype=np.int64)
    t0, c0 = time.perf_counter(), time.process_time()
    for t in range(price.shape[0]):
        hp = pd.concat([hp, pd.DataFrame([price[t]], columns=syms)]).iloc[-keep:]
        hv = pd.concat([hv, pd.DataFrame([volume[t]], columns=syms)]).iloc[-keep:]
        hp.index = hv.index = range(len(hp))
        p, prev = hp.iloc[-1], hp.shift(1).iloc[-1]
        ret = hp / hp.shift(1) - 1
        zr = (ret - ret.rolling(c.return_window).mean().shift(1)) \
            / ret.rolling(c.return_window).std().shift(1)
        zp = (hp - hp.rolling(c.price_window).mean().shift(1)) \
            / hp.rolling(c.price_window).std().shift(1)
        vr = ret.rolling(c.vol_short).std() / ret.rolling(c.vol_long).std()
        vs = hv / hv.rolling(c.volume_window).mean().shift(1)
        up = np.floor(prev * (1 + pct) * 100 + 0.5 + 1e-9) / 100
        down = np.floor(prev * (1 - pct) * 100 + 0.5 + 1e-9) / 100
        fired += [int(m.sum()) for m in (
            p > above, p < below, (p / prev - 1).abs() > 0.05, p >= up - 1e-6,
            p <= down + 1e-6, zr.iloc[-1].abs() > c.return_z, zp.iloc[-1].abs() > c.price_z,
            vr.iloc[-1] > c.vol_ratio, vs.iloc[-1] > c.volume_ratio)]
    return (time.perf_counter() - t0, time.process_time() - c0), fired


class TickSource:
    """Endless random-walk ticks generated chunk by chunk into buffers allocated once, so
    the generator itself adds nothing to the RSS measured during the soak."""

    def __init__(self, n_symbols: int, chunk: int, seed: int = 11) -> None:
        self.rng = np.random.default_rng(seed)
        self.price = np.empty((chunk, n_symbols))
        self.volume = np.empty((chunk, n_symbols))
        self.last = np.full(n_symbols, np.log(50.0))

    def next_chunk(self) -> tuple[np.ndarray, np.ndarray]:
        p, v = self.price, self.volume
        self.rng.standard_normal(out=p)
        p *= 0.002
        p[0] += self.last
        np.cumsum(p, axis=0, out=p)
        self.last[:] = p[-1]
        np.exp(p, out=p)
        self.rng.standard_normal(out=v)
        v *= 0.6
        v += 8.0
        np.exp(v, out=v)
        return p, v


def soak(total_symbol_ticks: int, n_symbols: int, date: pd.Timestamp) -> list[str]:
    syms = symbols(n_symbols)
    mon, det = make_qilin(syms)
    n_alerts = [0]
    manager = AlertManager([CallbackHandler(lambda a: n_alerts.__setitem__(0, n_alerts[0] + 1))],
                           cooldown_s=3600)
    proc = psutil.Process()
    n_ticks = total_symbol_ticks // n_symbols
    chunk = 2000
    rss = []
    marks = {0, n_ticks // 100, n_ticks // 2, n_ticks - 1}
    t0, c0 = time.perf_counter(), time.process_time()
    clock = pd.Timestamp("2024-01-02 09:30")
    dispatched = 0
    source = TickSource(n_symbols, chunk)
    for start in range(0, n_ticks, chunk):
        price, volume = source.next_chunk()
        for i in range(min(chunk, n_ticks - start)):
            t = start + i
            if t in marks:
                rss.append((t, proc.memory_info().rss))
            a = mon.update(price[i], date=date)
            b = det.update(price[i], volume[i])
            sig = a.merge(b)
            if sig.n_fired():
                dispatched += manager.fire_many(
                    sig.alerts(syms, clock + pd.Timedelta(seconds=t)))
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    manager.close()
    lines = [f"soak: {n_ticks:,} ticks x {n_symbols} symbols = {n_ticks * n_symbols:,} "
             f"symbol-ticks in {elapsed:.1f}s ({n_ticks * n_symbols / elapsed:,.0f} "
             f"symbol-ticks/s wall, {n_ticks * n_symbols / cpu:,.0f} per CPU-second, incl. "
             f"tick generation and alert dispatch), {dispatched:,} alerts dispatched, "
             f"{manager.stats['suppressed_cooldown']:,} suppressed by cooldown"]
    for (t, r), label in zip(rss, ("start", "1%", "middle", "end"), strict=False):
        lines.append(f"  RSS at {label:6s} (tick {t:>9,}): {r / 2**20:8.1f} MiB")
    lines.append(f"  RSS growth start->end: {(rss[-1][1] - rss[0][1]) / 2**20:+.1f} MiB; "
                 f"1%->end: {(rss[-1][1] - rss[1][1]) / 2**20:+.1f} MiB; "
                 f"middle->end: {(rss[-1][1] - rss[2][1]) / 2**20:+.1f} MiB; "
                 f"detector state: {det.state_nbytes() / 2**20:.2f} MiB")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter runs and soak")
    ap.add_argument("--symbols", type=int, default=500)
    ap.add_argument("--ticks", type=int, default=None, help="ticks for the throughput runs")
    ap.add_argument("--soak", type=int, default=None, help="symbol-ticks in the soak")
    ap.add_argument("--pandas-ticks", type=int, default=30,
                    help="ticks for the (slow) pandas baseline")
    args = ap.parse_args()
    n_ticks = args.ticks or (1000 if args.quick else 4000)
    soak_n = args.soak or (1_000_000 if args.quick else 10_000_000)
    n = args.symbols
    syms = symbols(n)
    date = pd.Timestamp("2024-01-02")
    print(f"W5 monitoring benchmark: {n} symbols per tick, {n_ticks} ticks; "
          f"{platform.processor() or platform.machine()}, {psutil.cpu_count()} CPUs, "
          f"NumPy {np.__version__}, pandas {pd.__version__}")
    print(f"load average before the run: {', '.join(f'{x:.1f}' for x in os.getloadavg())} "
          "(the machine is shared; 'CPU' rates divide by this process's CPU time)")
    warm_up()
    price, volume = make_ticks(n_ticks, n, seed=1)
    tq, fq = run_qilin(price, volume, syms, date)
    tn, fn = run_numpy(price, volume, syms)
    n_pd = min(n_ticks, args.pandas_ticks)
    tp, fp = run_pandas(price[:n_pd], volume[:n_pd], syms)
    _, fq_pd = run_qilin(price[:n_pd], volume[:n_pd], syms, date)
    assert (fq == fn).all(), f"NumPy baseline disagrees: {fq} vs {fn}"
    assert (fq_pd == fp).all(), f"pandas baseline disagrees: {fq_pd} vs {fp}"
    print(f"fired cells per rule (identical in all three): {fq.tolist()}")
    rows = [("qilin streaming", tq, n_ticks), ("NumPy per-tick window", tn, n_ticks),
            ("pandas per-tick", tp, n_pd)]
    q_wall, q_cpu = n_ticks * n / tq[0], n_ticks * n / tq[1]
    for name, (wall, cpu), k in rows:
        r_wall, r_cpu = k * n / wall, k * n / cpu
        ratio = "" if name.startswith("qilin") else \
            f"  -> qilin x{q_wall / r_wall:.1f} (wall), x{q_cpu / r_cpu:.1f} (CPU)"
        print(f"{name:22s}: {r_wall:12,.0f} symbol-ticks/s wall, {r_cpu:12,.0f} per CPU-second "
              f"({wall / k * 1e6:9.1f} us/tick wall, {k} ticks){ratio}")
    print(f"target >= 1,000,000 symbol-ticks/s on CPU: wall {'met' if q_wall >= 1e6 else 'NOT met'}"
          f", per CPU-second {'met' if q_cpu >= 1e6 else 'NOT met'}")
    for line in soak(soak_n, n, date):
        print(line)


if __name__ == "__main__":
    main()
