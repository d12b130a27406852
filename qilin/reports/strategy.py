"""Strategy tear sheet: a backtest against a benchmark, as HTML + PNG.

Sections: headline figures, cumulative return against the benchmark, underwater drawdown
plot and the five worst drawdowns, monthly returns heat map, annual returns, rolling Sharpe
and beta, turnover, exposure and number of holdings, costs paid, and the settings the
backtest ran with. Every metric comes from :mod:`qilin.backtest.metrics`.

Examples
--------
>>> r = pd.Series([0.0, 0.1, -0.2, 0.05, 0.2, -0.1],
...               index=pd.date_range("2024-01-31", periods=6, freq="ME"))
>>> t = drawdown_table(r, top=2)
>>> t["depth"].round(3).tolist(), t["peak"].astype(str).tolist()
([-0.2, -0.1], ['2024-02-29', '2024-05-31'])
>>> monthly_returns(r).loc[2024].round(3).tolist()[:3]
[0.0, 0.1, -0.2]
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qilin.backtest import metrics as M
from qilin.reports.html import (
    Page,
    fmt_bps,
    fmt_num,
    fmt_pct,
    fmt_ratio,
    new_figure,
    save_figure,
)

ROLLING_DAYS = 63
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def drawdown_table(returns: pd.Series, top: int = 5) -> pd.DataFrame:
    """The ``top`` deepest drawdowns: ``depth peak trough recovery days`` (recovery NaT when
    still under water; ``days`` from peak to recovery or to the last date)."""
    r = returns.fillna(0.0)
    dd = pd.Series(np.asarray(M.drawdown_series(r.to_numpy())), index=r.index)
    rows = []
    under = dd < 0
    start = None
    for i, flag in enumerate(under.to_numpy()):
        if flag and start is None:
            start = i
        if start is not None and (not flag or i == len(dd) - 1):
            end = i if flag else i - 1
            seg = dd.iloc[start:end + 1]
            peak = dd.index[start - 1] if start > 0 else dd.index[start]
            recovery = dd.index[i] if not flag else pd.NaT
            last = recovery if not flag else dd.index[-1]
            rows.append({"depth": float(seg.min()), "peak": peak.date(),
                         "trough": seg.idxmin().date(),
                         "recovery": recovery.date() if not pd.isna(recovery) else None,
                         "days": int((last - peak).days)})  # calendar days
            start = None
    table = pd.DataFrame(rows, columns=["depth", "peak", "trough", "recovery", "days"])
    table = table.sort_values("depth", kind="stable").head(top).reset_index(drop=True)
    table.index = table.index + 1
    return table


def monthly_returns(returns: pd.Series) -> pd.DataFrame:
    """Compounded returns per calendar month: years (rows) x months 1..12 (columns)."""
    r = returns.fillna(0.0)
    monthly = (1 + r).groupby([r.index.year, r.index.month]).prod() - 1
    return monthly.unstack().reindex(columns=range(1, 13))


def annual_returns(returns: pd.Series) -> pd.Series:
    """Compounded return per calendar year."""
    r = returns.fillna(0.0)
    return (1 + r).groupby(r.index.year).prod() - 1


def rolling_sharpe(returns: pd.Series, window: int, periods_per_year: int) -> pd.Series:
    """Annualised Sharpe ratio over a trailing window (NaN until the window is full)."""
    mean = returns.rolling(window).mean()
    std = returns.rolling(window).std()
    return (mean / std.where(std > 0) * np.sqrt(periods_per_year)).rename("rolling Sharpe")


def rolling_beta(returns: pd.Series, benchmark: pd.Series, window: int) -> pd.Series:
    """Trailing-window beta ``cov(r, b) / var(b)``."""
    cov = returns.rolling(window).cov(benchmark)
    var = benchmark.rolling(window).var()
    return (cov / var.where(var > 0)).rename("rolling beta")


def _aggregate(result: Any) -> tuple[pd.Series, pd.Series, pd.Series, pd.Series, pd.Series]:
    """Account-summed returns, turnover, exposure, holdings count and costs per date."""
    equity = result.equity.sum(axis=1)
    ret = np.zeros_like(equity)
    with np.errstate(divide="ignore", invalid="ignore"):
        ret[1:] = np.where(equity[:-1] > 0, equity[1:] / equity[:-1] - 1.0, 0.0)
    prev = np.concatenate([[result.init_cash * result.equity.shape[1]], equity[:-1]])
    with np.errstate(divide="ignore", invalid="ignore"):
        turnover = np.where(prev > 0, result.traded.sum(axis=1) / prev, 0.0)
        exposure = np.where(equity > 0, result.value.sum(axis=1) / equity, 0.0)
    idx = result.dates
    return (pd.Series(ret, idx, name="strategy"), pd.Series(turnover, idx),
            pd.Series(exposure, idx), pd.Series((result.positions != 0).sum(axis=1), idx),
            pd.Series(result.costs.sum(axis=1), idx))


def _plots(out: Path, ret: pd.Series, bench: pd.Series | None, turnover: pd.Series,
           exposure: pd.Series, holdings: pd.Series, costs: pd.Series, ppy: int
           ) -> list[tuple[str, str]]:
    figs: list[tuple[str, str]] = []
    window = min(ROLLING_DAYS, max(5, len(ret) // 4))

    fig, ax = new_figure(figsize=(10, 4))
    ax = ax[0, 0]
    ax.plot(ret.index, (1 + ret).cumprod() - 1, label="strategy (net of costs)", color="tab:blue")
    if bench is not None:
        ax.plot(bench.index, (1 + bench).cumprod() - 1, label=str(bench.name),
                color="tab:gray")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.yaxis.set_major_formatter(_pct_formatter())
    ax.set_title("Cumulative return")
    ax.legend(loc="upper left", fontsize=8)
    figs.append(("Cumulative return against the benchmark",
                 save_figure(fig, out / "cumulative.png").name))

    fig, ax = new_figure(figsize=(10, 2.8))
    dd = pd.Series(np.asarray(M.drawdown_series(ret.to_numpy())), ret.index)
    ax[0, 0].fill_between(dd.index, dd.to_numpy(), 0, color="tab:red", alpha=0.4)
    ax[0, 0].yaxis.set_major_formatter(_pct_formatter())
    ax[0, 0].set_title("Underwater (drawdown from the running peak)")
    figs.append(("Underwater plot", save_figure(fig, out / "underwater.png").name))

    table = monthly_returns(ret)
    fig, ax = new_figure(figsize=(10, 0.5 * len(table) + 1.2))
    ax = ax[0, 0]
    data = table.to_numpy(dtype=float) * 100
    lim = max(1e-9, float(np.nanmax(np.abs(data)))) if np.isfinite(data).any() else 1.0
    ax.imshow(data, cmap="RdYlGn", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(12), MONTHS)
    ax.set_yticks(range(len(table)), [str(y) for y in table.index])
    for (i, j), v in np.ndenumerate(data):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=7)
    ax.set_title("Monthly returns (%)")
    figs.append(("Monthly returns", save_figure(fig, out / "monthly_returns.png").name))

    years = annual_returns(ret)
    fig, ax = new_figure(figsize=(10, 3))
    ax = ax[0, 0]
    ax.bar([str(y) for y in years.index], years.to_numpy() * 100,
           color=["tab:green" if v >= 0 else "tab:red" for v in years.to_numpy()])
    if bench is not None:
        by = annual_returns(bench)
        ax.plot([str(y) for y in by.index], by.to_numpy() * 100, "o", color="black",
                label=str(bench.name))
        ax.legend(fontsize=8)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylabel("%")
    ax.set_title("Annual returns")
    figs.append(("Annual returns", save_figure(fig, out / "annual_returns.png").name))

    fig, ax = new_figure(2 if bench is not None else 1, 1,
                         figsize=(10, 5 if bench is not None else 2.8), sharex=True)
    ax[0, 0].plot(ret.index, rolling_sharpe(ret, window, ppy), color="tab:blue")
    ax[0, 0].axhline(0, color="black", linewidth=0.6)
    ax[0, 0].set_title(f"Rolling Sharpe ({window} days)")
    if bench is not None:
        ax[1, 0].plot(ret.index, rolling_beta(ret, bench, window), color="tab:purple")
        ax[1, 0].axhline(1, color="gray", linewidth=0.6, linestyle="--")
        ax[1, 0].set_title(f"Rolling beta to {bench.name} ({window} days)")
    figs.append(("Rolling Sharpe and beta", save_figure(fig, out / "rolling.png").name))

    fig, ax = new_figure(3, 1, figsize=(10, 7), sharex=True)
    ax[0, 0].plot(turnover.index, turnover.rolling(21, min_periods=1).mean() * 100,
                  color="tab:orange")
    ax[0, 0].set_title("Turnover (% of equity traded per day, 21-day mean)")
    ax[1, 0].plot(exposure.index, exposure * 100, color="tab:blue", label="exposure %")
    ax2 = ax[1, 0].twinx()
    ax2.plot(holdings.index, holdings, color="tab:gray", linewidth=0.8, label="holdings")
    ax[1, 0].set_title("Gross exposure (% of equity, left) and number of holdings (right)")
    ax[2, 0].plot(costs.index, costs.cumsum(), color="tab:red")
    ax[2, 0].set_title("Cumulative costs paid (commission, duty, slippage)")
    figs.append(("Turnover, exposure, holdings and costs",
                 save_figure(fig, out / "turnover_exposure_costs.png").name))
    return figs


def _pct_formatter() -> Any:
    from matplotlib.ticker import PercentFormatter

    return PercentFormatter(1.0, decimals=0)


METRIC_FORMATS = {
    "total_return": fmt_pct, "annual_return": fmt_pct, "annual_volatility": fmt_pct,
    "sharpe_ratio": fmt_ratio, "sortino_ratio": fmt_ratio, "max_drawdown": fmt_pct,
    "calmar_ratio": fmt_ratio, "max_drawdown_duration": lambda v: f"{fmt_num(v, 0)} bars",
    "win_rate": fmt_pct, "profit_factor": fmt_ratio, "turnover": fmt_pct, "exposure": fmt_pct,
    "alpha": fmt_pct, "beta": fmt_ratio, "information_ratio": fmt_ratio,
    "tracking_error": fmt_pct,
}


def strategy_tear_sheet(result: Any, out_dir: str | Path, benchmark: pd.Series | None = None,
                        settings: Mapping[str, Any] | None = None,
                        title: str = "Strategy tear sheet") -> Path:
    """Write ``tear_sheet.html``, its PNGs and ``tear_sheet_metrics.json`` into ``out_dir``.

    Parameters
    ----------
    result : BacktestResult
        Signal-mode accounts are summed into one portfolio.
    benchmark : Series of daily returns, optional
        Aligned to ``result.dates`` (see :func:`qilin.reports.load_benchmark` and
        :func:`qilin.reports.equal_weight_returns`); adds alpha, beta, rolling beta.
    settings : mapping, optional
        Backtest settings and costs, shown verbatim on the page.

    Returns
    -------
    Path of the HTML page.
    """
    from qilin.atomic import write_json_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ret, turnover, exposure, holdings, costs = _aggregate(result)
    bench = None
    if benchmark is not None:
        bench = pd.Series(np.asarray(benchmark, dtype=float), index=ret.index,
                          name=getattr(benchmark, "name", None) or "benchmark").fillna(0.0)
    ppy = int(result.periods_per_year)
    table = M.summary(ret.to_numpy(), ppy, benchmark=None if bench is None else bench.to_numpy(),
                      turnover=turnover.to_numpy(), exposure=exposure.to_numpy())
    metrics = table.iloc[0].to_dict()
    metrics["costs_paid"] = float(costs.sum())
    metrics["trade_count"] = int((result.trades["status"] == "filled").sum()) \
        if len(result.trades) else 0
    metrics["mean_holdings"] = float(holdings.mean())
    if bench is not None:
        metrics["benchmark_total_return"] = float((1 + bench).prod() - 1)
    figs = _plots(out, ret, bench, turnover, exposure, holdings, costs, ppy)
    drawdowns = drawdown_table(ret)

    page = Page(title)
    page.paragraph(f"{ret.index[0].date()} to {ret.index[-1].date()}, {len(ret)} trading days; "
                   f"{len(result.symbols)} symbols; annualised with {ppy} periods per year; "
                   "returns are net of costs.", "note")
    page.kpis({"Total return": fmt_pct(metrics["total_return"]),
               "Annual return": fmt_pct(metrics["annual_return"]),
               "Sharpe": fmt_ratio(metrics["sharpe_ratio"]),
               "Max drawdown": fmt_pct(metrics["max_drawdown"]),
               "Benchmark": fmt_pct(metrics.get("benchmark_total_return")),
               "Costs paid": fmt_num(metrics["costs_paid"], 0)})
    page.heading("Performance")
    shown = {k: v for k, v in metrics.items() if k in METRIC_FORMATS}
    page.table(pd.DataFrame({"value": [METRIC_FORMATS[k](v) for k, v in shown.items()]},
                            index=pd.Index(list(shown), name="metric")))
    for caption, name in figs[:2]:
        page.heading(caption)
        page.image(name, caption)
    page.heading("Top 5 drawdowns")
    page.table(drawdowns, formats={"depth": fmt_pct}, default=lambda v: "–" if v is None
               or (isinstance(v, float) and not np.isfinite(v)) else str(v))
    for caption, name in figs[2:]:
        page.heading(caption)
        page.image(name, caption)
    page.heading("Costs and settings")
    page.paragraph(f"Costs paid: {fmt_num(metrics['costs_paid'])} over "
                   f"{metrics['trade_count']:,} filled orders; mean daily turnover "
                   f"{fmt_pct(metrics.get('turnover'))} ({fmt_bps(metrics.get('turnover'))}); "
                   f"mean holdings {metrics['mean_holdings']:.1f}.")
    if settings:
        page.table(pd.DataFrame({"value": [str(v) for v in settings.values()]},
                                index=pd.Index([str(k) for k in settings], name="setting")))
    write_json_atomic(out / "tear_sheet_metrics.json",
                      {**metrics, "drawdowns": drawdowns.to_dict("records")})
    return page.write(out / "tear_sheet.html")
