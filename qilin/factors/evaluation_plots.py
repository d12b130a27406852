"""PNG plots of a :class:`~qilin.factors.evaluation.FactorEvaluation` (matplotlib, Agg).

Three figures per factor: the daily IC and Rank IC with a 21-date rolling mean per horizon,
the mean (demeaned) forward return by quantile per horizon, and the cumulative daily
long-short curve. Files are written atomically.

Examples
--------
>>> import tempfile
>>> from qilin.factors.evaluation import _tiny_evaluation
>>> with tempfile.TemporaryDirectory() as d:
...     [p.name for p in plot_evaluation(_tiny_evaluation(), d)]
['factor_ic.png', 'factor_quantile_returns.png', 'factor_cumulative_long_short.png']
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qilin.atomic import atomic_path

if TYPE_CHECKING:
    from qilin.factors.evaluation import FactorEvaluation

ROLLING_WINDOW = 21


def _figure(nrows: int = 1, ncols: int = 1, **kw: Any) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(**kw)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _save(fig: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    return path


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "factor"


def plot_ic(ev: FactorEvaluation, path: Path) -> Path:
    """Daily IC (bars) and Rank IC rolling mean (line), one panel per horizon."""
    n = len(ev.horizons)
    fig, axes = _figure(n, 1, figsize=(10, 2.6 * n))
    for ax, h in zip(axes[:, 0], ev.horizons, strict=True):
        ic = ev.ic[h].dropna()
        ax.bar(ic.index, ic.to_numpy(), width=1.0, color="tab:blue", alpha=0.5, label="IC")
        ric = ev.rank_ic[h]
        ax.plot(ric.index, ric.rolling(ROLLING_WINDOW, min_periods=1).mean().to_numpy(),
                color="tab:red", label=f"Rank IC {ROLLING_WINDOW}d mean")
        ax.axhline(0.0, color="black", linewidth=0.6)
        s = ev.summary.loc[h]
        ax.set_title(f"{ev.name} {h}-day: IC mean {s['ic_mean']:.4f} (IR {s['ic_ir']:.2f}), "
                     f"Rank IC mean {s['rank_ic_mean']:.4f} (IR {s['rank_ic_ir']:.2f})",
                     fontsize=9)
        ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def plot_quantile_returns(ev: FactorEvaluation, path: Path) -> Path:
    """Mean demeaned forward return per quantile, grouped bars per horizon (in bps)."""
    fig, axes = _figure(figsize=(8, 4))
    ax = axes[0, 0]
    table = ev.quantile_returns_demeaned * 1e4
    width = 0.8 / max(1, len(table.columns))
    for i, h in enumerate(table.columns):
        ax.bar(table.index.to_numpy() + (i - (len(table.columns) - 1) / 2) * width,
               table[h].fillna(0.0).to_numpy(), width=width, label=f"{h}D")
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set_xticks(table.index.to_numpy())
    ax.set_xlabel("quantile")
    ax.set_ylabel("mean demeaned forward return (bps)")
    ax.set_title(f"{ev.name}: mean return by quantile", fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_cumulative_long_short(ev: FactorEvaluation, path: Path) -> Path:
    """Compounded daily top-minus-bottom quantile return."""
    fig, axes = _figure(figsize=(10, 4))
    ax = axes[0, 0]
    curve = ev.cumulative_long_short
    ax.plot(curve.index, curve.to_numpy(), color="tab:green")
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set_ylabel("cumulative return")
    ax.set_title(f"{ev.name}: cumulative long-short (Q{ev.quantiles} - Q1, daily)", fontsize=10)
    return _save(fig, path)


def plot_evaluation(ev: FactorEvaluation, out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write the three PNGs for ``ev`` into ``out_dir`` (created); return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = _slug(ev.name)
    return [
        plot_ic(ev, out / f"{stem}_ic.png"),
        plot_quantile_returns(ev, out / f"{stem}_quantile_returns.png"),
        plot_cumulative_long_short(ev, out / f"{stem}_cumulative_long_short.png"),
    ]
