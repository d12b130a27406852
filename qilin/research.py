"""The research steps the notebooks in ``notebooks/`` run; ``qilin run`` chains them.

Each notebook is thin: a ``parameters`` cell, one call into this module, and cells that show
what it returned. Each step writes its artifacts into ``out`` (the notebook's working
folder under ``runs/<run_id>/<step>/``) and headline numbers into ``results.json``, which
the pipeline copies into the run manifest and exports as Prometheus metrics.

1. :func:`data_quality` — bars (synthetic or a file), validation findings, coverage, return
   distribution; writes ``bars.parquet`` for the later steps.
2. :func:`factor_research` — a factor set on the cluster, in-sample evaluation, factor tear
   sheet; writes ``scores.parquet`` (the selected factor on the out-of-sample dates).
3. :func:`model_step` — XGBoost walk-forward on Alpha158 features, registry save,
   prediction IC; writes ``scores.parquet`` (the model's out-of-sample scores).
4. :func:`backtest_scores` — top-k portfolio on scores, strategy tear sheet.
5. :func:`strategy_sweep` — a grid sweep on the cluster, heat map, best variant re-run.
6. :func:`monitoring_replay` — bars through the price monitor and anomaly detector.

Parameters a notebook leaves at ``None`` take the value of ``configs/default.yaml``
(:func:`from_config`), so each default is declared once.

Examples
--------
>>> [name for name, _ in factor_set("research")][:3]
['rev5', 'mom60', 'lowvol20']
>>> from_config(n_symbols=None, seed=7)["seed"]
7
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qilin.atomic import write_json_atomic
from qilin.data.panel import Panel
from qilin.errors import ParameterError

#: Short, readable factors evaluated beside Alpha158 (and alone with ``factors="research"``).
RESEARCH_FACTORS: dict[str, str] = {
    "rev5": "-ts_pct_change(close, 5)",
    "mom60": "ts_pct_change(close, 60)",
    "lowvol20": "-ts_std(returns, 20)",
    "rsi14_rank": "cs_rank(rsi(close, 14))",
    "volume_surge": "ts_mean(volume, 5) / ts_mean(volume, 20)",
    "close_to_high20": "close / ts_max(high, 20) - 1",
}

#: Notebook parameters whose default (``None``) is read from the configuration.
CONFIG_KEYS: dict[str, str] = {
    "data": "data.path", "market": "market.name", "n_symbols": "data.synthetic.n_symbols",
    "n_days": "data.synthetic.n_days", "seed": "data.synthetic.seed",
    "horizons": "factors.horizons", "quantiles": "factors.quantiles", "backend": "backend",
}


def from_config(**values: Any) -> dict[str, Any]:
    """``values`` with every ``None`` among :data:`CONFIG_KEYS` replaced by the config's value."""
    from qilin.config import load_config

    cfg = load_config().to_dict()
    out = dict(values)
    for name, value in values.items():
        if value is None and name in CONFIG_KEYS:
            node: Any = cfg
            for part in CONFIG_KEYS[name].split("."):
                node = node[part]
            out[name] = node
    return out


def factor_set(factors: str, extra: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """(name, expression) pairs of ``alpha158``, ``research`` or ``alpha158+research``."""
    parts = {p.strip() for p in factors.split("+") if p.strip()}
    unknown = parts - {"alpha158", "research"}
    if unknown or not parts:
        raise ParameterError(f"factors={factors!r}: unknown set(s) {sorted(unknown)}; use "
                             "alpha158, research or alpha158+research")
    pairs: list[tuple[str, str]] = []
    if "alpha158" in parts:
        from qilin.factors.alpha158 import alpha158_features

        pairs.extend(alpha158_features())
    if "research" in parts:
        pairs.extend(RESEARCH_FACTORS.items())
    pairs.extend((extra or {}).items())
    return pairs


def write_results(out: str | Path, **values: Any) -> dict[str, Any]:
    """Write the step's headline numbers to ``out/results.json`` (read by ``qilin run``)."""
    write_json_atomic(Path(out) / "results.json", values)
    return values


@contextlib.contextmanager
def connect(cluster: str | None, n_workers: int | None = None) -> Iterator[Any]:
    """A Dask client: a ``tcp://`` address or scheduler file is joined (``qilin run`` passes
    its cluster's address), a mode (``local``, ``threads``, ``cuda``, ``auto``) starts one
    for this notebook alone, ``""``/``"none"`` gives no cluster (``None``)."""
    if not cluster or cluster == "none":
        yield None
        return
    from qilin.cluster import ClusterManager

    if "://" in cluster:
        manager = ClusterManager("remote", address=cluster)
    elif cluster.endswith(".json"):
        manager = ClusterManager("remote", scheduler_file=cluster)
    else:
        manager = ClusterManager(cluster, n_workers=n_workers, verbose=False)  # type: ignore
    with manager as client:
        yield client


# ------------------------------------------------------------------ 1. data quality
def load_bars(bars: str = "", data: str = "", market: str | None = None,
              n_symbols: int | None = None, n_days: int | None = None,
              seed: int | None = None, planted_ic: float = 0.0) -> tuple[Panel, Any, str]:
    """(raw Panel, validation report or None, source) of a step's bars.

    ``bars``: a clean long Parquet written by :func:`data_quality` (no re-validation);
    else ``data``: a bars file or folder, validated with policy ``drop``; else the
    embedded synthetic market (with an alpha of information coefficient ``planted_ic``
    planted in its returns, see :class:`qilin.data.synthetic.PlantedAlpha`).
    """
    p = from_config(data=data or None, market=market, n_symbols=n_symbols, n_days=n_days,
                    seed=seed)
    if bars:
        path = Path(bars)
        if not path.exists():
            raise ParameterError(f"bars={bars!r}: file not found (the data_quality step "
                                 "writes it)")
        return Panel.from_long(pd.read_parquet(path)), None, str(path)
    from qilin.data.validation import validate_bars

    if p["data"]:
        from qilin.data.loader import load_panel

        panel, report = load_panel(p["data"], backend="cpu", validate="drop",
                                   market=p["market"], return_report=True)
        return panel, report, str(p["data"])
    from qilin.data.synthetic import synthetic_bars

    source = f"synthetic({p['n_symbols']}x{p['n_days']}, seed={p['seed']}" + \
        (f", planted_ic={planted_ic})" if planted_ic else ")")
    raw = synthetic_bars(p["n_symbols"], p["n_days"], seed=p["seed"], alpha=planted_ic or None)
    clean, report = validate_bars(raw, policy="drop", market=p["market"], source=source)
    return Panel.from_long(clean), report, source


@dataclass
class DataQuality:
    """What :func:`data_quality` found."""

    panel: Panel
    source: str
    findings: pd.DataFrame
    coverage: pd.Series
    return_stats: pd.DataFrame
    figures: list[Path]
    results: dict[str, Any]


def data_quality(out: str | Path, data: str = "", market: str | None = None,
                 n_symbols: int | None = None, n_days: int | None = None,
                 seed: int | None = None, planted_ic: float = 0.0) -> DataQuality:
    """Load and validate the bars; write ``bars.parquet``, ``validation.json``, figures."""
    from qilin.reports.html import new_figure, save_figure

    out = Path(out)
    panel, report, source = load_bars(data=data, market=market, n_symbols=n_symbols,
                                      n_days=n_days, seed=seed, planted_ic=planted_ic)
    long = panel.to_long()
    long.to_parquet(out / "bars.parquet", index=False)
    findings = pd.DataFrame()
    if report is not None:
        report.to_json(out / "validation.json")
        findings = report.counts().rename("rows").to_frame()
    close = np.asarray(panel["close"])
    coverage = pd.Series(np.isfinite(close).sum(axis=1), index=panel.dates, name="symbols")
    ret = np.asarray(panel.adjusted().returns())
    flat = ret[np.isfinite(ret)]
    stats = pd.DataFrame({"value": [flat.mean(), flat.std(), pd.Series(flat).skew(),
                                    pd.Series(flat).kurt(), flat.min(), flat.max(),
                                    np.mean(np.abs(flat) > 0.095)]},
                         index=["mean", "std", "skew", "excess kurtosis", "min", "max",
                                "share |r| > 9.5%"])
    fig, ax = new_figure(1, 2, figsize=(11, 3.2))
    ax[0, 0].plot(coverage.index, coverage.to_numpy(), color="tab:blue")
    ax[0, 0].set_title("symbols with a bar per date")
    ax[0, 1].hist(np.clip(flat, -0.2, 0.2), bins=80, color="tab:gray")
    ax[0, 1].set_yscale("log")
    ax[0, 1].set_title("daily return distribution (clipped at ±20%)")
    figures = [save_figure(fig, out / "data_quality.png")]
    results = write_results(out, data_fingerprint=panel.fingerprint(), source=source,
                            n_symbols=int(panel.shape[1]), n_dates=int(panel.shape[0]),
                            first_date=str(panel.dates[0].date()),
                            last_date=str(panel.dates[-1].date()),
                            findings=int(findings["rows"].sum()) if len(findings) else 0,
                            return_std=float(flat.std()))
    return DataQuality(panel, source, findings, coverage, stats, figures, results)


# ------------------------------------------------------------------ 2. factor research
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

    The panel goes to the cluster once and each task receives only its batch of factor
    arrays, both held as task results (:func:`qilin.cluster_tasks.hold`), so a lost worker's
    copies are recomputed; the wait is bounded by ``cluster.task_timeout_s``.
    """
    if client is None:
        return _evaluate_batch(values, panel, **kwargs)
    from qilin.cluster_tasks import gather_within, hold

    panel_future = hold(client, panel)
    names = list(values)
    futures = [client.submit(_evaluate_batch,
                             hold(client, {n: values[n] for n in names[i:i + batch]}),
                             panel_future, pure=False, **kwargs)
               for i in range(0, len(names), batch)]
    out: dict[str, Any] = {}
    for part in gather_within(client, futures, what="factor evaluation"):
        out.update(part)
    return {n: out[n] for n in names}


@dataclass
class FactorResearch:
    """What :func:`factor_research` found."""

    summary: pd.DataFrame
    ic_decay: pd.DataFrame
    selected: dict[str, Any]
    tear_sheet: Path
    results: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)


def factor_research(out: str | Path, panel: Panel, factors: str = "alpha158+research",
                    horizons: list[int] | None = None, quantiles: int | None = None,
                    split: float = 0.6, select_horizon: int = 5, client: Any = None,
                    backend: str | None = None) -> FactorResearch:
    """Compute the factors on the cluster, evaluate them on the in-sample period (before
    ``split`` of the dates), pick the best by |Rank IC t| at ``select_horizon`` and write its
    out-of-sample values (sign-aligned) to ``scores.parquet``; factor tear sheet."""
    from qilin.factors.calculator import FactorCalculator
    from qilin.factors.evaluation import summary_table
    from qilin.reports import factor_tear_sheet

    p = from_config(horizons=horizons, quantiles=quantiles, backend=backend)
    if not 0.1 <= split <= 0.9:
        raise ParameterError(f"split={split} must lie in [0.1, 0.9]")
    if select_horizon not in p["horizons"]:
        raise ParameterError(f"select_horizon={select_horizon} is not among horizons "
                             f"{p['horizons']}")
    out = Path(out)
    timings: dict[str, float] = {}
    adjusted = panel.adjusted()
    pairs = factor_set(factors)
    if "alpha" in adjusted:  # a synthetic market with a planted alpha publishes it
        pairs.append(("planted_alpha", "alpha"))
    t0 = time.perf_counter()
    computed = FactorCalculator(pairs, client=client, backend=p["backend"],
                                progress=False).compute(adjusted)
    timings["factors"] = time.perf_counter() - t0
    split_row = int(adjusted.shape[0] * split)
    insample = adjusted.select(end=adjusted.dates[split_row - 1])
    values = {n: np.asarray(computed[n][:split_row]) for n in computed.names}
    t0 = time.perf_counter()
    evals = evaluate_on_cluster(values, insample, client, horizons=tuple(p["horizons"]),
                                quantiles=p["quantiles"])
    timings["evaluation"] = time.perf_counter() - t0
    table = summary_table(evals).reset_index()
    table["dates_evaluated"] = table["factor"].map(
        {n: int(ev.summary.loc[select_horizon, "rank_ic_n"]) for n, ev in evals.items()})
    table.to_parquet(out / "factor_summary.parquet", index=False)
    ranked = rank_factors(table, select_horizon, min_dates=len(insample.dates) // 2)
    if ranked.empty:
        raise ParameterError(f"no factor was evaluated on at least half of the in-sample "
                             f"dates at horizon {select_horizon}; lengthen n_days or split")
    best = ranked.iloc[0]
    name, sign = str(best["factor"]), float(np.sign(best["rank_ic_mean"]) or 1.0)
    scores = pd.DataFrame(sign * np.asarray(computed[name][split_row:]),
                          index=adjusted.dates[split_row:], columns=adjusted.symbols)
    long = scores.stack().rename("score").reset_index()
    long.columns = ["date", "symbol", "score"]
    long.to_parquet(out / "scores.parquet", index=False)
    selected = {"name": name, "expression": dict(pairs)[name], "direction": sign,
                "rank_ic_mean": float(best["rank_ic_mean"]),
                "rank_ic_ir": float(best["rank_ic_ir"]),
                "split_date": str(adjusted.dates[split_row].date())}
    write_json_atomic(out / "selected.json", selected)
    t0 = time.perf_counter()
    sheet = factor_tear_sheet(evals, out, values=values, plot_factors=[name],
                              horizon=select_horizon,
                              title=f"Factor tear sheet: {len(evals)} factors, in-sample "
                                    f"until {adjusted.dates[split_row - 1].date()}")
    timings["tear_sheet"] = time.perf_counter() - t0
    decay = table.pivot(index="factor", columns="horizon", values="rank_ic_mean") \
        .reindex(ranked["factor"].head(10))
    keep = ["factor", "rank_ic_mean", "rank_ic_ir", "rank_ic_t", "ic_mean", "long_short_mean",
            "top_turnover", "dates_evaluated"]
    results = write_results(out, n_factors=len(pairs), selected_factor=name,
                            rank_ic=selected["rank_ic_mean"], rank_ic_ir=selected["rank_ic_ir"],
                            split_date=selected["split_date"])
    return FactorResearch(ranked[keep].set_index("factor"), decay, selected, sheet, results,
                          timings)


# ------------------------------------------------------------------ 3. model
@dataclass
class ModelStep:
    """A walk-forward XGBoost model, its out-of-sample scores and registry version."""

    windows: pd.DataFrame
    metrics: dict[str, Any]
    importance: pd.Series
    version: int | None
    results: dict[str, Any]


def model_step(out: str | Path, panel: Panel, factors: str = "alpha158", horizon: int = 1,
               train: int = 250, valid: int = 40, test: int = 120, n_estimators: int = 100,
               max_depth: int = 4, registry: str = "", name: str = "research_xgb",
               client: Any = None, backend: str | None = None) -> ModelStep:
    """Features of ``factors`` on the cluster, a leak-free dataset (label: ``horizon``-day
    forward return, z-scored per date), XGBoost retrained walk-forward (windows of ``train``
    / ``valid`` / ``test`` dates, purged), the last window's model saved to the registry
    (``registry``; ``""``: ``<out>/registry``), and the stitched out-of-sample scores written
    to ``scores.parquet`` with their prediction IC."""
    from qilin.factors.calculator import FactorCalculator
    from qilin.ml import Dataset, ModelRegistry, XGBoostModel, walk_forward, walk_forward_windows
    from qilin.reports.html import new_figure, save_figure

    p = from_config(backend=backend)
    out = Path(out)
    adjusted = panel.adjusted()
    features = FactorCalculator(factor_set(factors), client=client, backend=p["backend"],
                                progress=False).compute(adjusted)
    ds = Dataset(features, panel, horizon=horizon, label_norm="zscore")
    windows = walk_forward_windows(len(panel.dates), train=train, valid=valid, test=test,
                                   purge=horizon)
    if not windows:
        raise ParameterError(f"no walk-forward window fits {len(panel.dates)} dates with "
                             f"train={train}, valid={valid}, test={test}; lengthen n_days")
    model = XGBoostModel(n_estimators=n_estimators, max_depth=max_depth,
                         early_stopping_rounds=20 if valid else None,
                         backend="cpu" if p["backend"] == "auto" else p["backend"])
    wf = walk_forward(model, ds, windows, client=client, keep_models=True)
    score = np.asarray(wf.scores["score"])
    wide = pd.DataFrame(score, index=wf.scores.dates, columns=wf.scores.symbols)
    long = wide.stack().rename("score").reset_index()
    long.columns = ["date", "symbol", "score"]
    long.to_parquet(out / "scores.parquet", index=False)
    wf.windows.to_parquet(out / "windows.parquet", index=False)
    last = wf.models[-1]
    importance = pd.Series(last.feature_importance(), name="gain").sort_values(ascending=False)
    root = Path(registry) if registry else out / "registry"
    version = ModelRegistry(root).save(name, last, metrics=dict(wf.metrics),
                                       processors=wf.processors[-1] if wf.processors else None,
                                       data_fingerprint=panel.fingerprint())
    fig, ax = new_figure(1, 2, figsize=(11, 3.2))
    ax[0, 0].bar(range(len(wf.windows)), wf.windows["rank_ic"].to_numpy(), color="tab:blue")
    ax[0, 0].axhline(0, color="black", linewidth=0.6)
    ax[0, 0].set_title("out-of-sample Rank IC per walk-forward window", fontsize=9)
    top = importance.head(15)[::-1]
    ax[0, 1].barh(top.index.astype(str), top.to_numpy(), color="tab:green")
    ax[0, 1].set_title("feature importance (gain), last window", fontsize=9)
    save_figure(fig, out / "model.png")
    metrics = {k: (float(v) if isinstance(v, int | float | np.floating) else v)
               for k, v in wf.metrics.items()}
    results = write_results(out, prediction_ic=metrics.get("ic"),
                            prediction_rank_ic=metrics.get("rank_ic"), windows=len(windows),
                            registry=str(root), model=name, version=version,
                            first_score_date=str(wf.scores.dates[0].date()))
    return ModelStep(wf.windows, metrics, importance, version, results)


# ------------------------------------------------------------------ 4. backtest
@dataclass
class Backtest:
    """A backtest and its tear sheet."""

    result: Any
    metrics: dict[str, Any]
    tear_sheet: Path
    results: dict[str, Any]


def _benchmark(benchmark: str, panel: Panel) -> pd.Series:
    from qilin.reports import equal_weight_returns, load_benchmark

    if benchmark in ("", "equal_weight"):
        return equal_weight_returns(panel.adjusted())
    return load_benchmark(benchmark, panel.dates)


def backtest_scores(out: str | Path, panel: Panel, scores: str | pd.DataFrame,
                    top_k: int = 30, rebalance: int = 5, band: int = 10,
                    market: str | None = None, benchmark: str = "") -> Backtest:
    """Top-k portfolio on ``scores`` (long ``date, symbol, score``; the backtest covers its
    dates) with the market's costs and rules; strategy tear sheet against ``benchmark`` (an
    index bars file, or ``""`` for the equal-weight market)."""
    from qilin.backtest.portfolio import run_portfolio
    from qilin.reports import strategy_tear_sheet

    p = from_config(market=market)
    frame = pd.read_parquet(scores) if isinstance(scores, str | Path) else scores
    frame = frame.assign(date=pd.to_datetime(frame["date"]), symbol=frame["symbol"].astype(str))
    start = frame["date"].min()
    window = panel.select(start=start)
    wide = frame.pivot(index="date", columns="symbol", values="score") \
        .reindex(index=window.dates, columns=window.symbols)
    bt = run_portfolio(window, scores=wide.to_numpy(), top_k=top_k, band=band,
                       rebalance=rebalance, market=p["market"])
    bench = _benchmark(benchmark, window)
    out = Path(out)
    settings = {"portfolio": f"top {top_k} by score, equal weight, drop band {band}",
                "rebalance": f"every {rebalance} bars", "market": p["market"],
                "benchmark": bench.name, "period": f"{window.dates[0].date()} to "
                f"{window.dates[-1].date()}", "initial cash": f"{bt.init_cash:,.0f}"}
    sheet = strategy_tear_sheet(bt, out, benchmark=bench, settings=settings,
                                title=f"Top-{top_k} portfolio tear sheet")
    bt.returns_long().to_parquet(out / "returns.parquet", index=False)
    trades = bt.trades.assign(symbol=bt.trades["symbol"].astype(str))
    trades.to_parquet(out / "trades.parquet", index=False)
    import json

    metrics = json.loads((out / "tear_sheet_metrics.json").read_text())
    results = write_results(out, sharpe_ratio=metrics["sharpe_ratio"],
                            annual_return=metrics["annual_return"],
                            max_drawdown=metrics["max_drawdown"], alpha=metrics.get("alpha"),
                            beta=metrics.get("beta"), costs_paid=metrics["costs_paid"])
    return Backtest(bt, metrics, sheet, results)


# ------------------------------------------------------------------ 5. sweep
@dataclass
class Sweep:
    """A grid sweep, its heat map and the best variant re-run through the engine."""

    table: pd.DataFrame
    best: dict[str, Any]
    heatmap: Path | None
    tear_sheet: Path
    results: dict[str, Any]


def strategy_sweep(out: str | Path, panel: Panel, strategy: str = "ma_cross",
                   grid: str = "fast=5:30:5 slow=40:120:20", metric: str = "sharpe_ratio",
                   market: str | None = None, backend: str | None = None,
                   client: Any = None) -> Sweep:
    """Sweep ``grid`` on the cluster, draw the heat map of ``metric`` over the first two
    parameters, and re-run the best combination through the backtest engine (tear sheet)."""
    from qilin.backtest.portfolio import run_portfolio
    from qilin.backtest.signal import run_signals
    from qilin.backtest.strategies import get_strategy
    from qilin.backtest.sweeps import run_sweep
    from qilin.reports import equal_weight_returns, strategy_tear_sheet

    p = from_config(market=market, backend=backend)
    out = Path(out)
    sweep = run_sweep(panel, strategy, grid, market=p["market"], backend=p["backend"],
                      client=client)
    sweep.to_parquet(out / "sweep.parquet")
    names = list(sweep.param_names)
    heat = sweep.heatmap(names[0], names[1], metric, out / "sweep_heatmap.png") \
        if len(names) >= 2 else None
    best = sweep.best_params(metric)
    template = get_strategy(strategy)
    if hasattr(template, "signals"):
        entries, exits = template.signals(panel, **best)
        bt = run_signals(panel, entries=entries, exits=exits, market=p["market"])
    else:
        bt = run_portfolio(panel, scores=template.scores(panel, **best), market=p["market"])
    sheet = strategy_tear_sheet(bt, out, benchmark=equal_weight_returns(panel.adjusted()),
                                settings={"strategy": strategy, **best,
                                          "chosen by": f"best {metric} of {len(sweep.table)}"},
                                title=f"Best {strategy} variant {best} re-run")
    table = sweep.best(metric, 10).reset_index(drop=True)
    results = write_results(out, combinations=len(sweep.table), best_params=best,
                            best_sharpe=float(sweep.table[metric].max()),
                            backend=sweep.backend)
    return Sweep(table, best, heat, sheet, results)


# ------------------------------------------------------------------ 6. monitoring
@dataclass
class MonitoringReplay:
    """Alerts and system metrics of a bar replay."""

    alerts: pd.DataFrame
    system: pd.DataFrame
    summary: list[str]
    results: dict[str, Any]


def monitoring_replay(out: str | Path, panel: Panel, move_pct: float = 0.07,
                      return_z: float = 4.0, sample_every: int = 50) -> MonitoringReplay:
    """Replay the bars through the price monitor and anomaly detector; ``alerts.parquet``
    (one row per alert) and ``system.parquet`` (CPU/memory sampled during the replay)."""
    from qilin.monitoring.alerts import AlertManager, CallbackHandler
    from qilin.monitoring.replay import MonitorRules, replay_frame
    from qilin.monitoring.system import SystemMonitor

    out = Path(out)
    long = panel.to_long()
    frame = pd.DataFrame({"time": pd.to_datetime(long["date"]),
                          "symbol": long["symbol"].astype(str),
                          "price": long["close"].astype(float)})
    if "volume" in long.columns:
        frame["volume"] = long["volume"].astype(float)
    rules = MonitorRules.from_dict({"default_move_pct": move_pct,
                                    "anomaly": {"return_z": return_z}})
    got: list[Any] = []
    manager = AlertManager([CallbackHandler(got.append)])
    system = SystemMonitor()
    samples: list[dict[str, Any]] = []

    def on_batch(t: int) -> None:
        if t % sample_every == 0:
            samples.append({"batch": t, **system.sample().to_dict()})

    summary = replay_frame(frame, rules, alerts=manager, on_batch=on_batch)
    manager.close()
    alerts = pd.DataFrame([{"time": a.time, "rule": a.rule, "severity": a.severity,
                            "subject": a.subject, "value": a.value,
                            "threshold": a.threshold, "message": a.message} for a in got],
                          columns=["time", "rule", "severity", "subject", "value",
                                   "threshold", "message"])
    alerts.to_parquet(out / "alerts.parquet", index=False)
    sys_frame = pd.DataFrame(samples)
    sys_frame.drop(columns=[c for c in sys_frame.columns
                            if sys_frame[c].map(lambda v: isinstance(v, list | dict)).any()],
                   inplace=True)
    sys_frame.to_parquet(out / "system.parquet", index=False)
    results = write_results(out, alerts=len(alerts),
                            symbol_ticks=int(summary.symbol_ticks),
                            symbol_ticks_per_s=summary.symbol_ticks / max(summary.elapsed_s,
                                                                          1e-9))
    return MonitoringReplay(alerts, sys_frame, summary.lines(), results)


# ------------------------------------------------------------------ notebook helpers
def output_folder(out_dir: str, name: str) -> Path:
    """The step's working folder: ``out_dir`` (``qilin run`` passes ``"."``, the step
    folder), or ``runs/lab/<name>`` at the repository root when empty (interactive use)."""
    if out_dir:
        path = Path(out_dir)
    else:
        root = Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd()
        path = root / "runs" / "lab" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def show(*paths: str | Path) -> None:
    """Display saved PNGs inline in the notebook (each was written to the step folder)."""
    from IPython.display import Image, display

    for path in paths:
        for png in sorted(Path(path).glob("*.png")) if Path(path).is_dir() else [Path(path)]:
            display(Image(filename=str(png)))


def factor_scores(panel: Panel, factor: str, split: float = 0.6) -> pd.DataFrame:
    """Long ``date, symbol, score`` of one named factor (research set or Alpha158) on the
    dates after ``split`` — the backtest input when no model or factor step ran."""
    from qilin.factors.calculator import FactorCalculator

    pairs = dict(factor_set("alpha158+research"))
    if factor not in pairs:
        raise ParameterError(f"factor={factor!r} is not a research or Alpha158 factor "
                             f"(e.g. {', '.join(list(RESEARCH_FACTORS)[:3])})")
    adjusted = panel.adjusted()
    values = FactorCalculator({factor: pairs[factor]}, progress=False).compute(adjusted)
    start = int(adjusted.shape[0] * split)
    wide = pd.DataFrame(np.asarray(values[factor][start:]), index=adjusted.dates[start:],
                        columns=adjusted.symbols)
    long = wide.stack().rename("score").reset_index()
    long.columns = ["date", "symbol", "score"]
    return long
