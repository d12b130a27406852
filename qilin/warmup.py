"""Compile qilin's numba kernels once, and tell whether they still need compiling.

qilin's hot loops are numba kernels compiled on first use and cached next to their source
(``__pycache__/*.nbi``/``*.nbc``). On a fresh checkout the first run spends about a minute
compiling; :func:`warm_up` does it up front (``qilin warmup``, run by ``make run`` and
``make test`` after installing) and :func:`kernels_cached` lets a command announce it.

Examples
--------
>>> isinstance(kernels_cached(), bool)
True
>>> missing_kernel_caches()[:0]
[]
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path

#: Modules with ``cache=True`` numba kernels, relative to the package folder.
KERNEL_MODULES = (
    "factors/kernels_cpu.py",
    "backtest/rules.py",
    "backtest/signal.py",
    "backtest/portfolio.py",
    "backtest/result.py",
    "backtest/sweep_kernels_cpu.py",
    "monitoring/price_monitor.py",
    "monitoring/anomaly.py",
)

#: Every module whose functions numba compiles for the CPU. A kernel inlines the cores of
#: other modules (the top-k sweep runs the portfolio engine's bar, which fills through
#: :mod:`qilin.kernels.orders`), but numba checks a cached kernel only against its own file:
#: :func:`drop_stale_kernel_caches` covers the rest.
KERNEL_SOURCES = (*KERNEL_MODULES, "factors/qlib_window.py", "kernels/orders.py",
                  "kernels/targets.py")

#: File in each cache folder naming the kernel sources its caches were compiled from.
SOURCES_STAMP = "qilin-kernel-sources.sha1"

#: What a first compilation costs on a 2-core machine (`qilin warmup` on a fresh clone: 48 s).
FIRST_COMPILE_NOTE = "about a minute on 2 cores, once; cached afterwards"


def missing_kernel_caches() -> list[str]:
    """Kernel modules with no numba cache index newer than their source."""
    root = Path(__file__).resolve().parent
    missing = []
    for rel in KERNEL_MODULES:
        src = root / rel
        if not src.exists():
            continue
        indexes = list(_cache_folder(src).glob(f"{src.stem}.*.nbi"))
        if not indexes or max(p.stat().st_mtime for p in indexes) < src.stat().st_mtime:
            missing.append(rel)
    return missing


def _cache_folder(src: Path) -> Path:
    """Where numba caches the kernels of ``src``: ``__pycache__`` beside it, or, under
    ``NUMBA_CACHE_DIR``, numba's ``<folder name>_<sha1 of the folder path>`` below it."""
    custom = os.environ.get("NUMBA_CACHE_DIR")
    if custom:
        folder = os.path.dirname(os.path.abspath(src))
        digest = hashlib.sha1(folder.encode()).hexdigest()
        return Path(os.path.abspath(custom)) / f"{os.path.basename(folder)}_{digest}"
    return src.parent / "__pycache__"


def kernel_sources_fingerprint(root: Path | None = None) -> str:
    """SHA-1 of the path, modification time and size of every :data:`KERNEL_SOURCES` file."""
    root = Path(__file__).resolve().parent if root is None else root
    digest = hashlib.sha1()
    for rel in sorted(KERNEL_SOURCES):
        try:
            st = (root / rel).stat()
        except OSError:
            continue
        digest.update(f"{rel} {st.st_mtime_ns} {st.st_size}\n".encode())
    return digest.hexdigest()


def drop_stale_kernel_caches(root: Path | None = None) -> list[Path]:
    """Remove qilin's numba caches when any kernel source changed since they were written.

    numba keys a cached kernel on its own file's time stamp only, so after an edit or a
    ``git pull`` that touches ``portfolio.py`` alone, the cached top-k sweep (in
    ``sweep_kernels_cpu.py``) would still run the old portfolio bar. Each cache folder keeps
    the :func:`kernel_sources_fingerprint` its caches came from (:data:`SOURCES_STAMP`);
    where it differs, the folder's caches of kernel modules are deleted and compile again on
    first use. Called on ``import qilin`` (a few file stats). Returns the files removed.

    Examples
    --------
    >>> drop_stale_kernel_caches() == []  # the stamps are current after the import
    True
    """
    root = Path(__file__).resolve().parent if root is None else root
    fingerprint = kernel_sources_fingerprint(root)
    folders: dict[Path, set[str]] = {}
    for rel in KERNEL_SOURCES:
        folders.setdefault(_cache_folder(root / rel), set()).add(Path(rel).stem)
    removed = []
    for folder, stems in folders.items():
        stamp = folder / SOURCES_STAMP
        try:
            if stamp.read_text().strip() == fingerprint:
                continue
        except OSError:
            pass
        for path in folder.iterdir() if folder.is_dir() else ():
            if path.suffix in (".nbi", ".nbc") and path.name.split(".")[0] in stems:
                try:
                    path.unlink()
                    removed.append(path)
                except OSError:
                    pass  # another process removed it first
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".{SOURCES_STAMP}.{os.getpid()}.tmp"
            tmp.write_text(fingerprint + "\n")
            os.replace(tmp, stamp)
        except OSError:
            pass  # a read-only install: numba caches elsewhere and installs stamp every file
    return removed


def kernels_cached() -> bool:
    """True when every kernel module has a numba cache at least as new as its source."""
    return not missing_kernel_caches()


def warm_up(say: Callable[[str], None] = print) -> float:
    """Compile every kernel on a tiny synthetic market; returns the seconds it took.

    Runs Alpha158, a Rank IC, the signal and portfolio engines, a sweep of each strategy and
    the monitors, so that later runs load compiled code from numba's cache.
    """
    import numpy as np

    from qilin.backtest.engine import run_portfolio, run_signals
    from qilin.backtest.strategies import get_strategy
    from qilin.backtest.sweeps import run_sweep
    from qilin.data.synthetic import synthetic_market
    from qilin.factors.alpha158 import alpha158_features
    from qilin.factors.calculator import FactorCalculator
    from qilin.factors.evaluation import information_coefficient
    from qilin.monitoring.anomaly import AnomalyDetector
    from qilin.monitoring.price_monitor import PriceMonitor

    start = time.perf_counter()
    panel = synthetic_market(12, 90, seed=3)
    say(f"qilin: compiling numba kernels ({FIRST_COMPILE_NOTE})")
    steps: list[tuple[str, Callable[[], object]]] = [
        ("factors (Alpha158)",
         lambda: FactorCalculator(alpha158_features(), progress=False).compute(panel)),
        ("factor evaluation (Rank IC)", lambda: information_coefficient(
            panel["close"], panel["volume"], "spearman")),
        ("signal engine", lambda: run_signals(
            panel, *get_strategy("ma_cross").signals(panel, fast=3, slow=8), market="cn")),
        ("portfolio engine", lambda: run_portfolio(
            panel, scores=np.nan_to_num(panel["close"]), top_k=3, market="cn")),
        ("sweeps", lambda: [run_sweep(panel, name, grid, market="cn", backend="cpu")
                            for name, grid in _SWEEP_GRIDS]),
        ("monitors", lambda: (
            PriceMonitor(panel.symbols, default_move_pct=5.0).detect(panel),
            PriceMonitor(panel.symbols, default_move_pct=5.0).update(panel["close"][-1],
                                                                     date=panel.dates[-1]),
            AnomalyDetector().detect(panel["close"], panel["volume"]),
            AnomalyDetector(n_symbols=len(panel.symbols)).update(panel["close"][-1],
                                                                 panel["volume"][-1]))),
    ]
    for name, step in steps:
        t0 = time.perf_counter()
        step()
        say(f"qilin:   {name}: {time.perf_counter() - t0:.1f} s")
    return time.perf_counter() - start


_SWEEP_GRIDS = (
    ("ma_cross", "fast=3:5:2 slow=8:10:2"),
    ("rsi", "window=5:7:2 lower=30 upper=70"),
    ("bollinger", "window=5:7:2 k=2"),
    ("momentum_topk", "lookback=5:10:5 k=3 rebalance=5"),
)
