"""The end-to-end research job: data → validation → factors → evaluation → backtest → sweep.

This is what ``make run`` and ``qilin research`` run, and what ``notebooks/research.ipynb``
calls. On the embedded synthetic market (or any bars file) and a Dask cluster it:

1. generates or loads daily bars and validates them (the report is kept);
2. computes Alpha158 plus a few readable research factors on the cluster;
3. evaluates every factor (IC, Rank IC, quantile returns) on the in-sample period only;
4. picks the factor with the best in-sample Rank ICIR at the chosen horizon and backtests a
   top-k portfolio on it over the out-of-sample period, with the market's costs and rules;
5. sweeps a moving-average crossover grid on the cluster;
6. writes ``<out>/<run_id>/`` atomically: ``manifest.json`` (parameters, data fingerprint,
   versions, git commit, timings, status), Parquet/JSON/PNG artifacts and ``report.html``.

Selection on the in-sample period and testing on the later period keeps the reported
backtest honest: nothing after the split date influences which factor is traded.

Examples
--------
>>> params = ResearchParams(n_symbols=30, n_days=260, factors="research", cluster="threads")
>>> [name for name, _ in params.factor_set()][:3]
['rev5', 'mom60', 'lowvol20']

``run_research(params, out_dir="runs")`` then writes ``runs/<run_id>/``; the tests run it on
a process cluster, from the command line and through papermill.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import shutil
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qilin.atomic import atomic_directory, json_safe, write_json_atomic, write_text_atomic
from qilin.data.panel import Panel
from qilin.errors import QilinError
from qilin.info import git_commit  # re-exported: qilin.research.git_commit

#: Short, readable factors evaluated beside Alpha158 (and alone with ``factors="research"``).
RESEARCH_FACTORS: dict[str, str] = {
    "rev5": "-ts_pct_change(close, 5)",
    "mom60": "ts_pct_change(close, 60)",
    "lowvol20": "-ts_std(returns, 20)",
    "rsi14_rank": "cs_rank(rsi(close, 14))",
    "volume_surge": "ts_mean(volume, 5) / ts_mean(volume, 20)",
    "close_to_high20": "close / ts_max(high, 20) - 1",
}

VERSION_PACKAGES = ("qilin", "numpy", "pandas", "dask", "distributed", "numba", "pyarrow",
                    "scipy", "xgboost", "cupy")


@dataclass
class ResearchParams:
    """Parameters of one research run (all JSON-serialisable; kept in the manifest)."""

    data: str = ""
    market: str = "cn"
    n_symbols: int = 500
    n_days: int = 1500
    seed: int = 42
    factors: str = "alpha158+research"
    cluster: str = "local"
    n_workers: int | None = None
    backend: str = "auto"
    horizons: tuple[int, ...] = (1, 5, 10, 20)
    quantiles: int = 5
    select_horizon: int = 5
    split: float = 0.6
    top_k: int = 30
    rebalance: int = 5
    band: int = 10
    sweep_grid: str = "fast=5:30:5 slow=40:120:20"
    progress: bool = True
    extra_factors: dict[str, str] = field(default_factory=dict)
    #: IC of the alpha planted in the embedded synthetic market (0: none; ignored with data).
    planted_ic: float = 0.03

    def factor_set(self) -> list[tuple[str, str]]:
        """The (name, expression) pairs this run computes."""
        parts = {p.strip() for p in self.factors.split("+") if p.strip()}
        unknown = parts - {"alpha158", "research"}
        if unknown:
            raise QilinError(f"factors: unknown set(s) {sorted(unknown)}; use alpha158, "
                             "research or alpha158+research")
        pairs: list[tuple[str, str]] = []
        if "alpha158" in parts:
            from qilin.factors.alpha158 import alpha158_features

            pairs.extend(alpha158_features())
        if "research" in parts:
            pairs.extend(RESEARCH_FACTORS.items())
        if self.planted_ic and not self.data:
            # the planted signal, published at each close, so the run can find it
            pairs.append(("planted_alpha", "alpha"))
        pairs.extend(self.extra_factors.items())
        return pairs


@dataclass
class ResearchRun:
    """A finished run: its folder, manifest and headline tables."""

    path: Path
    manifest: dict[str, Any]
    factor_summary: pd.DataFrame
    backtest_metrics: pd.DataFrame
    sweep_best: pd.DataFrame


class _Timer:
    def __init__(self, say: Callable[[str], None]) -> None:
        self.timings: dict[str, float] = {}
        self.say = say

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.say(f"[{name}] ...")
        t0 = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - t0, 3)
        self.say(f"[{name}] done in {self.timings[name]:.1f}s")


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape results (``not installed`` if absent)."""
    from qilin.info import package_version

    return {"python": platform.python_version(),
            **{name: package_version(name) for name in VERSION_PACKAGES}}


def default_run_id(params: ResearchParams) -> str:
    """``YYYYmmdd-HHMMSS-<hash of the parameters>``."""
    digest = hashlib.blake2b(json.dumps(json_safe(dataclasses.asdict(params)),
                                        sort_keys=True).encode(), digest_size=4).hexdigest()
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{digest}"


def _synthetic_source(params: ResearchParams) -> str:
    planted = f", planted_ic={params.planted_ic}" if params.planted_ic else ""
    return f"synthetic(seed={params.seed}{planted})"


def load_research_data(params: ResearchParams) -> tuple[Panel, Any]:
    """The run's bars as a Panel plus the validation report (synthetic unless ``data``)."""
    from qilin.data.validation import validate_bars

    if params.data:
        from qilin.data.loader import load_panel

        return load_panel(params.data, backend="cpu", validate="drop", market=params.market,
                          return_report=True)
    from qilin.data.synthetic import synthetic_bars

    bars = synthetic_bars(params.n_symbols, params.n_days, seed=params.seed,
                          alpha=params.planted_ic or None)
    clean, report = validate_bars(bars, policy="drop", market=params.market,
                                  source=_synthetic_source(params))
    return Panel.from_long(clean), report


def equal_weight_returns(panel: Panel) -> pd.Series:
    """Daily mean close-to-close return of the names with a return that day (0 when none).

    Examples
    --------
    >>> p = Panel.from_arrays({"close": np.array([[10.0, 20.0], [11.0, 19.0], [11.0, np.nan]])},
    ...                       pd.date_range("2024-01-01", periods=3), ["A", "B"])
    >>> equal_weight_returns(p).round(4).tolist()
    [0.0, 0.025, 0.0]
    """
    r = panel.returns()
    ok = np.isfinite(r)
    n = ok.sum(axis=1)
    total = np.where(ok, r, 0.0).sum(axis=1)
    return pd.Series(np.where(n > 0, total / np.maximum(n, 1), 0.0), index=panel.dates)


def rank_factors(table: pd.DataFrame, horizon: int, min_dates: int) -> pd.DataFrame:
    """Factors at ``horizon`` ordered by |Rank IC t-stat|, keeping those evaluated on at least
    ``min_dates`` dates (a discrete factor that cannot be split into quantiles on most dates
    is evaluated on few dates, and its ICIR then means little).

    Examples
    --------
    >>> t = pd.DataFrame({"factor": ["a", "b", "c"], "horizon": [5, 5, 5],
    ...                   "rank_ic_t": [2.0, -3.0, 9.0], "dates_evaluated": [100, 100, 3]})
    >>> rank_factors(t, 5, min_dates=50)["factor"].tolist()
    ['b', 'a']
    """
    at_h = table[(table["horizon"] == horizon) & (table["dates_evaluated"] >= min_dates)].copy()
    at_h["abs_rank_ic_t"] = at_h["rank_ic_t"].abs()
    return at_h.sort_values("abs_rank_ic_t", ascending=False, na_position="last")


def _evaluate_batch(values: dict[str, np.ndarray], panel: Panel, **kwargs: Any) -> dict[str, Any]:
    from qilin.factors.evaluation import evaluate_factors

    return evaluate_factors(values, panel, **kwargs)


def evaluate_on_cluster(values: dict[str, np.ndarray], panel: Panel, client: Any,
                        batch: int = 8, **kwargs: Any) -> dict[str, Any]:
    """Evaluate many factors, in batches spread over ``client``'s workers when given.

    The panel is scattered once; each task receives only its batch of factor arrays.
    """
    if client is None:
        return _evaluate_batch(values, panel, **kwargs)
    panel_future = client.scatter(panel, broadcast=True)
    names = list(values)
    futures = [client.submit(_evaluate_batch,
                             client.scatter({n: values[n] for n in names[i:i + batch]}),
                             panel_future, pure=False, **kwargs)
               for i in range(0, len(names), batch)]
    out: dict[str, Any] = {}
    for part in client.gather(futures):
        out.update(part)
    return {n: out[n] for n in names}


def _plot_equity(equity: pd.DataFrame, benchmark: pd.Series, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    from qilin.atomic import atomic_path

    fig = Figure(figsize=(9, 4))
    ax = fig.subplots()
    (equity.iloc[:, 0] / equity.iloc[0, 0]).plot(ax=ax, label="top-k portfolio (net of costs)")
    (1 + benchmark.fillna(0)).cumprod().plot(ax=ax, label="equal-weight market")
    ax.set_title("Out-of-sample equity")
    ax.legend()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    return path


def _html_report(manifest: dict[str, Any], tables: dict[str, pd.DataFrame],
                 images: list[str]) -> str:
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>qilin research "
             f"{manifest['run_id']}</title><style>body{{font-family:sans-serif;margin:2em}}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;"
             "text-align:right}</style></head><body>",
             f"<h1>qilin research run {manifest['run_id']}</h1>",
             f"<p>status: <b>{manifest['status']}</b>; data: {manifest['data']['source']}; "
             f"{manifest['data']['n_dates']} dates x {manifest['data']['n_symbols']} symbols; "
             f"backend: {manifest['backend']}; cluster: {manifest['cluster']['mode']}</p>"]
    for title, table in tables.items():
        parts.append(f"<h2>{title}</h2>")
        parts.append(table.to_html(float_format=lambda v: f"{v:.4g}"))
    for img in images:
        parts.append(f"<h2>{img}</h2><img src='{img}' style='max-width:100%'>")
    parts.append("<h2>Timings (s)</h2><pre>" + json.dumps(manifest["timings"], indent=1)
                 + "</pre></body></html>")
    return "\n".join(parts)


def run_research(
    params: ResearchParams | None = None,
    out_dir: str | Path = "runs",
    run_id: str | None = None,
    client: Any = None,
    verbose: bool = True,
) -> ResearchRun:
    """Run the research job and write its run folder atomically.

    Parameters
    ----------
    params : ResearchParams, optional
        Defaults: the embedded 500 x 1,500 synthetic A-share market, Alpha158 + research
        factors, a local process cluster.
    out_dir : path
        Parent folder of run folders.
    run_id : str, optional
        Folder name; default ``YYYYmmdd-HHMMSS-<parameter hash>``. An existing folder is
        replaced only when the new run completes.
    client : distributed.Client, optional
        Use this cluster instead of starting one from ``params.cluster``.
    verbose : bool
        Print progress and the summary.

    Returns
    -------
    ResearchRun

    Raises
    ------
    QilinError
        Bad parameters or data; the run folder then holds ``manifest.json`` with
        ``status: failed`` and the reason, and nothing else.
    """
    from qilin.backend import get_backend

    params = params or ResearchParams()
    say: Callable[[str], None] = print if verbose else (lambda _msg: None)
    run_id = run_id or default_run_id(params)
    target = Path(out_dir) / run_id
    timer = _Timer(say)
    manifest: dict[str, Any] = {
        "run_id": run_id, "status": "running", "parameters": dataclasses.asdict(params),
        "versions": package_versions(), "git_commit": git_commit(),
        "started": pd.Timestamp.now(tz="UTC").isoformat(), "timings": timer.timings,
        "backend": get_backend(params.backend).describe(), "cluster": {"mode": params.cluster},
        "data": {"source": params.data or _synthetic_source(params)},
    }
    t_start = time.perf_counter()
    error: Exception | None = None
    with atomic_directory(target, overwrite=True) as tmp:
        try:
            result = _run_steps(params, tmp, manifest, timer, say, client)
            manifest["status"] = "ok"
        except Exception as exc:
            error = exc
            manifest["status"] = "failed"
            manifest["reason"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
            manifest["traceback"] = traceback.format_exc()
            for child in tmp.iterdir():
                (shutil.rmtree if child.is_dir() else Path.unlink)(child)
        manifest["timings"]["total"] = round(time.perf_counter() - t_start, 3)
        manifest["finished"] = pd.Timestamp.now(tz="UTC").isoformat()
        write_json_atomic(tmp / "manifest.json", manifest)
        if error is None:
            tables = {"Factor evaluation (in-sample, top 15 by |Rank IC t|)": result[0].head(15),
                      "Out-of-sample top-k backtest": result[1].T,
                      "MA-crossover sweep (best 10 by Sharpe)": result[2]}
            images = sorted(p.name for p in tmp.glob("*.png"))
            write_text_atomic(tmp / "report.html", _html_report(manifest, tables, images))
    if error is not None:
        say(f"research run {run_id} failed: {manifest['reason']} (see {target})")
        raise error
    run = ResearchRun(target, manifest, *result)
    if verbose:
        _print_summary(run, say)
    return run


def _run_steps(params: ResearchParams, tmp: Path, manifest: dict[str, Any], timer: _Timer,
               say: Callable[[str], None], client: Any
               ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    from qilin.backtest.engine import run_portfolio
    from qilin.backtest.sweeps import run_sweep
    from qilin.factors.calculator import FactorCalculator
    from qilin.factors.evaluation import summary_table

    if not 0.1 <= params.split <= 0.9:
        raise QilinError(f"split={params.split} must lie in [0.1, 0.9]")
    with timer.step("data"):
        raw, report = load_research_data(params)
        panel = raw.adjusted()
        manifest["data"].update(n_dates=panel.shape[0], n_symbols=panel.shape[1],
                                first_date=str(panel.dates[0].date()),
                                last_date=str(panel.dates[-1].date()),
                                fingerprint=raw.fingerprint())
        if report is not None:
            report.to_json(tmp / "validation.json")
            manifest["data"]["validation"] = {k: int(v) for k, v in report.counts().items()}
    pairs = params.factor_set()
    split_row = int(panel.shape[0] * params.split)
    split_date = panel.dates[split_row]
    manifest["split_date"] = str(split_date.date())

    with _cluster(client, params, say, manifest) as cl:
        with timer.step(f"factors ({len(pairs)})"):
            calc = FactorCalculator(pairs, client=cl, backend=params.backend,
                                    progress=params.progress)
            factors = calc.compute(panel)
            manifest["factors"] = {"n": len(pairs), "backend": factors.backend}
        with timer.step("evaluation"):
            insample = panel.select(end=panel.dates[split_row - 1])
            values = {n: factors[n][:split_row] for n in factors.names}
            evals = evaluate_on_cluster(values, insample, cl, horizons=params.horizons,
                                        quantiles=params.quantiles)
            table = summary_table(evals).reset_index()
            coverage = {n: int(ev.summary.loc[params.select_horizon, "rank_ic_n"])
                        for n, ev in evals.items()}
            table["dates_evaluated"] = table["factor"].map(coverage)
            table.to_parquet(tmp / "factor_summary.parquet", index=False)
            ranked = rank_factors(table, params.select_horizon, min_dates=len(insample.dates) // 2)
            if ranked.empty:
                raise QilinError("no factor was evaluated on at least half of the in-sample "
                                 f"dates at horizon {params.select_horizon}")
            best = ranked.iloc[0]
            best_name, sign = str(best["factor"]), float(np.sign(best["rank_ic_mean"]) or 1.0)
            evals[best_name].plot(tmp)
            manifest["selected_factor"] = {"name": best_name, "direction": sign,
                                           "expression": dict(pairs)[best_name],
                                           "rank_ic_ir": float(best["rank_ic_ir"])}
        with timer.step("backtest"):
            oos = panel.select(start=split_date)
            oos_raw = raw.select(start=split_date)
            scores = sign * factors[best_name][split_row:]
            bt = run_portfolio(oos_raw, scores=scores, top_k=params.top_k, band=params.band,
                               rebalance=params.rebalance, market=params.market)
            market_ret = equal_weight_returns(oos)
            metrics = bt.metrics(benchmark=market_ret.to_numpy())
            bt.returns_long().to_parquet(tmp / "backtest_returns.parquet", index=False)
            bt.trades.to_parquet(tmp / "backtest_trades.parquet", index=False)
            write_json_atomic(tmp / "backtest_metrics.json",
                              metrics.iloc[0].to_dict())
            _plot_equity(bt.equity_frame(), market_ret, tmp / "backtest_equity.png")
        with timer.step("sweep"):
            sweep = run_sweep(raw, "ma_cross", params.sweep_grid, market=params.market,
                              backend=params.backend, client=cl)
            sweep.to_parquet(tmp / "sweep.parquet")
            names = list(sweep.param_names)
            if len(names) >= 2:
                sweep.heatmap(names[0], names[1], "sharpe_ratio", tmp / "sweep_heatmap.png")
            manifest["sweep"] = {"summary": sweep.summary(), "backend": sweep.backend}
    keep = ["factor", "horizon", "ic_mean", "rank_ic_mean", "rank_ic_ir", "rank_ic_t",
            "dates_evaluated", "long_short_mean", "top_turnover"]
    return (ranked[keep].set_index("factor"), metrics,
            sweep.best("sharpe_ratio", 10).reset_index(drop=True))


@contextmanager
def _cluster(client: Any, params: ResearchParams, say: Callable[[str], None],
             manifest: dict[str, Any]) -> Iterator[Any]:
    from qilin.cluster import ClusterManager

    if client is not None:
        manifest["cluster"] = {"mode": "given", "address": client.scheduler.address}
        yield client
        return
    target = params.cluster
    kwargs: dict[str, Any] = {"n_workers": params.n_workers, "verbose": False}
    if "://" in target or target.endswith(".json"):
        key = "address" if "://" in target else "scheduler_file"
        kwargs[key] = target
        target = "remote"
    manager = ClusterManager(target, **kwargs)
    with manager as cl:
        cm_info = {"mode": manager.resolved_mode, "address": cl.scheduler.address,
                   "workers": len(cl.scheduler_info().get("workers", {})),
                   "dashboard": manager.dashboard_link}
        manifest["cluster"] = cm_info
        say(f"Dask cluster: {cm_info['mode']} with {cm_info['workers']} workers; "
            f"dashboard: {cm_info['dashboard']}")
        yield cl


def _print_summary(run: ResearchRun, say: Callable[[str], None]) -> None:
    m = run.manifest
    sel = m["selected_factor"]
    bt = run.backtest_metrics.iloc[0]
    say("")
    say(f"qilin research run {m['run_id']}: {m['status']} in {m['timings']['total']:.1f}s")
    say(f"  data: {m['data']['source']}, {m['data']['n_dates']} dates x "
        f"{m['data']['n_symbols']} symbols, fingerprint {m['data']['fingerprint'][:12]}")
    say(f"  factors: {m['factors']['n']} on {m['factors']['backend']}; in-sample until "
        f"{m['split_date']}")
    say("  top factors by |Rank IC t-stat| at horizon "
        f"{m['parameters']['select_horizon']}:")
    say(run.factor_summary.head(5).to_string(float_format=lambda v: f"{v:.4f}"))
    say(f"  selected: {sel['name']} = {sel['expression']} (direction {sel['direction']:+.0f})")
    say(f"  out-of-sample top-{m['parameters']['top_k']}: annual return "
        f"{bt['annual_return']:.2%}, Sharpe {bt['sharpe_ratio']:.2f}, max drawdown "
        f"{bt['max_drawdown']:.2%}, alpha {bt.get('alpha', float('nan')):.2%}, "
        f"costs {bt['costs_paid']:,.0f}")
    say(f"  sweep: {m['sweep']['summary']}")
    say(f"  run folder: {run.path} (report.html, manifest.json)")
