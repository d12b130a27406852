"""Factor tear sheet: IC table, per-factor figures and a correlation matrix, as HTML + PNG.

For each factor drawn (the best few by |Rank IC t|, or every factor when asked): the Rank IC
histogram, a monthly mean Rank IC heat map, the cumulative return of every quantile, the
top/bottom quantile turnover and the factor rank autocorrelation. Across all factors: the
IC / Rank IC summary and the mean cross-sectional rank correlation, with pairs above
``duplicate_threshold`` in absolute value flagged as near-duplicates (Alpha158's SUMP, SUMN
and SUMD are one signal up to sign). Numbers come from :mod:`qilin.factors.evaluation`.

Examples
--------
>>> rng = np.random.default_rng(0)
>>> a = rng.normal(size=(30, 50))
>>> corr = factor_correlation({"a": a, "neg_a": -2 * a, "b": rng.normal(size=(30, 50))})
>>> near_duplicates(corr, 0.95)[["a", "b", "corr"]].values.tolist()
[['a', 'neg_a', -1.0]]
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qilin.reports.html import Page, fmt_bps, fmt_ic, fmt_pct, fmt_ratio, new_figure, save_figure

MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "factor"


def factor_correlation(values: Mapping[str, Any], max_dates: int = 40) -> pd.DataFrame:
    """Mean cross-sectional rank (Spearman) correlation between factors.

    Ranks are taken per date over the symbols, on up to ``max_dates`` evenly spaced dates,
    and correlated over all (date, symbol) cells where both factors have a value.
    """
    names = list(values)
    if not names:
        return pd.DataFrame()
    n_dates = np.asarray(values[names[0]]).shape[0]
    rows = np.unique(np.linspace(0, n_dates - 1, min(max_dates, n_dates)).astype(int))
    cols = {}
    for name in names:
        block = pd.DataFrame(np.asarray(values[name], dtype=float)[rows])
        cols[name] = block.rank(axis=1, pct=True).to_numpy().reshape(-1)
    return pd.DataFrame(cols).corr(min_periods=10)


def near_duplicates(corr: pd.DataFrame, threshold: float = 0.95) -> pd.DataFrame:
    """Factor pairs whose |correlation| is at least ``threshold`` (``a, b, corr``)."""
    pairs = []
    names = list(corr.columns)
    m = corr.to_numpy()
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            if np.isfinite(m[i, j]) and abs(m[i, j]) >= threshold:
                pairs.append({"a": names[i], "b": names[j], "corr": round(float(m[i, j]), 4),
                              "note": "same signal" if m[i, j] > 0
                              else "same signal, opposite sign"})
    return pd.DataFrame(pairs, columns=["a", "b", "corr", "note"])


def _daily_rate(r: pd.DataFrame, h: int) -> pd.DataFrame:
    return r if h == 1 else (1 + r).pow(1.0 / h) - 1


def plot_factor(ev: Any, out: Path, horizon: int | None = None) -> list[tuple[str, str]]:
    """The five figures of one factor; returns ``(caption, file name)`` pairs."""
    h = horizon if horizon in ev.horizons else ev.horizons[0]
    stem = _slug(ev.name)
    figs: list[tuple[str, str]] = []
    ric = ev.rank_ic[h].dropna()

    fig, ax = new_figure(1, 2, figsize=(11, 3.2))
    ax[0, 0].hist(ric.to_numpy(), bins=min(40, max(5, len(ric) // 5)), color="tab:blue",
                  alpha=0.7)
    ax[0, 0].axvline(ric.mean() if len(ric) else 0.0, color="tab:red")
    ax[0, 0].set_title(f"{ev.name}: {h}-day Rank IC, mean {ric.mean():.4f}, "
                       f"std {ric.std():.4f}", fontsize=9)
    monthly = ric.groupby([ric.index.year, ric.index.month]).mean().unstack() \
        .reindex(columns=range(1, 13)) if len(ric) else pd.DataFrame(columns=range(1, 13))
    data = monthly.to_numpy(dtype=float)
    lim = float(np.nanmax(np.abs(data))) if np.isfinite(data).any() else 0.1
    ax[0, 1].imshow(data if data.size else np.zeros((1, 12)), cmap="RdYlGn", vmin=-lim,
                    vmax=lim, aspect="auto")
    ax[0, 1].set_xticks(range(12), [m[0] for m in MONTHS])
    ax[0, 1].set_yticks(range(len(monthly)), [str(y) for y in monthly.index])
    for (i, j), v in np.ndenumerate(data):
        if np.isfinite(v):
            ax[0, 1].text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6)
    ax[0, 1].set_title("monthly mean Rank IC", fontsize=9)
    figs.append((f"{ev.name}: Rank IC distribution and monthly heat map",
                 save_figure(fig, out / f"{stem}_ic_hist_monthly.png").name))

    hq = 1 if 1 in ev.quantile_daily_returns else min(ev.quantile_daily_returns)
    qret = _daily_rate(ev.quantile_daily_returns[hq].fillna(0.0), hq)
    fig, ax = new_figure(figsize=(10, 3.5))
    cmap = _cmap(len(qret.columns))
    for i, q in enumerate(qret.columns):
        ax[0, 0].plot(qret.index, (1 + qret[q]).cumprod() - 1, color=cmap(i), label=f"Q{q}")
    ax[0, 0].set_title(f"{ev.name}: cumulative return per quantile (equal weight, "
                       f"{hq}-day forward returns as daily rates)", fontsize=9)
    ax[0, 0].legend(fontsize=7, ncol=len(qret.columns))
    figs.append((f"{ev.name}: cumulative return per quantile",
                 save_figure(fig, out / f"{stem}_quantile_cumulative.png").name))

    fig, ax = new_figure(1, 2, figsize=(11, 3))
    for q, color in ((ev.quantiles, "tab:green"), (1, "tab:red")):
        col = (h, q)
        if col in ev.turnover.columns:
            ax[0, 0].plot(ev.turnover.index, ev.turnover[col].rolling(21, min_periods=1).mean(),
                          color=color, label=f"Q{q}")
    ax[0, 0].set_title(f"quantile turnover ({h}-day look-back, 21-day mean)", fontsize=9)
    ax[0, 0].legend(fontsize=7)
    ac = ev.rank_autocorrelation[h]
    ax[0, 1].plot(ac.index, ac.to_numpy(), color="tab:purple")
    ax[0, 1].set_title(f"factor rank autocorrelation ({h}-day), mean {ac.mean():.3f}",
                       fontsize=9)
    figs.append((f"{ev.name}: turnover and rank autocorrelation",
                 save_figure(fig, out / f"{stem}_turnover_autocorr.png").name))
    return figs


def _cmap(n: int) -> Callable[[int], Any]:
    from matplotlib import colormaps

    cm = colormaps["viridis"]
    return lambda i: cm(i / max(1, n - 1))


def _plot_correlation(corr: pd.DataFrame, path: Path) -> Path:
    n = len(corr)
    size = min(14.0, 3 + 0.12 * n)
    fig, ax = new_figure(figsize=(size, size))
    im = ax[0, 0].imshow(corr.to_numpy(dtype=float), cmap="coolwarm", vmin=-1, vmax=1)
    if n <= 40:
        ax[0, 0].set_xticks(range(n), corr.columns, rotation=90, fontsize=7)
        ax[0, 0].set_yticks(range(n), corr.columns, fontsize=7)
    fig.colorbar(im, ax=ax[0, 0], shrink=0.7)
    ax[0, 0].set_title("mean cross-sectional rank correlation", fontsize=10)
    return save_figure(fig, path)


SUMMARY_FORMATS = {"ic_mean": fmt_ic, "ic_ir": fmt_ratio, "rank_ic_mean": fmt_ic,
                   "rank_ic_ir": fmt_ratio, "rank_ic_t": fmt_ratio, "rank_ic_p": fmt_ic,
                   "long_short_mean": fmt_bps, "top_turnover": fmt_pct,
                   "rank_autocorr": fmt_ratio}


def factor_tear_sheet(evaluations: Mapping[str, Any], out_dir: str | Path,
                      values: Mapping[str, Any] | None = None,
                      plot_factors: Sequence[str] | int = 3, horizon: int | None = None,
                      duplicate_threshold: float = 0.95,
                      title: str = "Factor tear sheet") -> Path:
    """Write ``factor_tear_sheet.html``, its PNGs and ``factor_summary.csv`` into ``out_dir``.

    Parameters
    ----------
    evaluations : mapping name -> FactorEvaluation
    values : mapping name -> (dates x symbols) array, optional
        The factor values, for the correlation matrix (left out when not given).
    plot_factors : list of names or int
        Factors drawn in detail; an int draws that many of the best by |Rank IC t| at
        ``horizon`` (default: the shortest evaluated horizon).
    duplicate_threshold : float
        |correlation| from which a pair is flagged as a near-duplicate.

    Returns
    -------
    Path of the HTML page.
    """
    from qilin.factors.evaluation import summary_table

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = summary_table(evaluations)
    first = next(iter(evaluations.values()))
    h = horizon if horizon in first.horizons else first.horizons[0]
    at_h = table.xs(h, level="horizon").copy()
    at_h = at_h.reindex(at_h["rank_ic_t"].abs().sort_values(ascending=False).index)
    table.to_csv(out / "factor_summary.csv")
    if isinstance(plot_factors, int):
        chosen = [str(n) for n in at_h.index[:plot_factors]]
    else:
        unknown = sorted(set(plot_factors) - set(evaluations))
        if unknown:
            from qilin.errors import ParameterError

            raise ParameterError(f"plot_factors: {unknown} were not evaluated")
        chosen = list(plot_factors)

    page = Page(title)
    page.paragraph(f"{len(evaluations)} factors; horizons {list(first.horizons)} days; "
                   f"{first.quantiles} quantiles; ranked by |Rank IC t-stat| at {h} days. "
                   "Long-short is the mean top-minus-bottom quantile forward return.", "note")
    page.heading(f"IC summary at {h} days")
    page.table(at_h, formats=SUMMARY_FORMATS)
    if len(first.horizons) > 1:
        page.heading("IC decay (mean Rank IC by horizon)")
        decay = table["rank_ic_mean"].unstack("horizon").reindex(at_h.index[:15])
        page.table(decay, default=fmt_ic)
    if values:
        corr = factor_correlation({n: values[n] for n in evaluations if n in values})
        dups = near_duplicates(corr, duplicate_threshold)
        corr.to_csv(out / "factor_correlation.csv")
        page.heading("Factor correlation")
        page.image(_plot_correlation(corr, out / "factor_correlation.png").name,
                   "factor correlation matrix")
        page.heading(f"Near-duplicates (|rank correlation| ≥ {duplicate_threshold})")
        if len(dups):
            page.table(dups, index=False, formats={"corr": fmt_ratio},
                       flag=pd.Series([True] * len(dups)))
        else:
            page.paragraph("none")
    for name in chosen:
        page.heading(f"Factor {name}")
        for caption, file in plot_factor(evaluations[name], out, h):
            page.image(file, caption)
    return page.write(out / "factor_tear_sheet.html")


def factor_values(factors: pd.DataFrame, panel: Any) -> dict[str, Any]:
    """Each factor column of a long ``date, symbol, ...`` frame on ``panel``'s grid (CPU)."""
    from qilin.backend import to_host
    from qilin.factors.evaluation import factor_matrix

    return {name: np.asarray(to_host(factor_matrix(factors[["date", "symbol", name]], panel,
                                                   name=name)))
            for name in factors.columns if name not in ("date", "symbol")}
