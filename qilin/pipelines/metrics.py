"""Prometheus metrics of a pipeline run, for scheduled runs (cron, Airflow, Prefect).

Written to a node-exporter textfile (atomically) and/or pushed to a Pushgateway; the alert
rules ``QilinPipelineRunFailed`` and ``QilinPipelineRunStale`` in
``configs/prometheus/alerts.yml`` watch them.

Examples
--------
>>> m = {"pipeline": {"name": "research"}, "status": "ok", "duration_s": 12.5,
...      "finished": "2026-01-02T03:04:05+00:00", "results": {"backtest": {"sharpe_ratio": 1.2}},
...      "steps": {"backtest": {"status": "ok", "duration_s": 3.0}}}
>>> text = run_metrics(m)[1]
>>> 'qilin_pipeline_run_success{pipeline="research"} 1.0' in text
True
>>> 'qilin_pipeline_result{metric="sharpe_ratio",pipeline="research",step="backtest"} 1.2' in text
True
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest, push_to_gateway

from qilin.atomic import atomic_path
from qilin.errors import MonitoringError

#: Headline results exported as ``qilin_pipeline_result`` (others stay in the manifest).
HEADLINE = ("sharpe_ratio", "max_drawdown", "annual_return", "rank_ic", "rank_ic_ir",
            "best_sharpe", "alerts", "prediction_ic")


def run_metrics(manifest: dict[str, Any]) -> tuple[CollectorRegistry, str]:
    """A registry holding the run's metrics, and its exposition text."""
    reg = CollectorRegistry()
    name = manifest["pipeline"]["name"]
    Gauge("qilin_pipeline_run_success", "1 when the last run finished ok, else 0",
          ["pipeline"], registry=reg).labels(name).set(float(manifest["status"] == "ok"))
    finished = dt.datetime.fromisoformat(manifest["finished"]).timestamp() \
        if manifest.get("finished") else 0.0
    Gauge("qilin_pipeline_last_run_timestamp_seconds", "When the last run finished (Unix)",
          ["pipeline"], registry=reg).labels(name).set(finished)
    Gauge("qilin_pipeline_run_duration_seconds", "Wall time of the last run",
          ["pipeline"], registry=reg).labels(name).set(float(manifest.get("duration_s") or 0))
    step_ok = Gauge("qilin_pipeline_step_success", "1 when the step finished or was reused",
                    ["pipeline", "step"], registry=reg)
    step_t = Gauge("qilin_pipeline_step_duration_seconds", "Wall time of the step",
                   ["pipeline", "step"], registry=reg)
    for step, entry in manifest["steps"].items():
        step_ok.labels(name, step).set(float(entry["status"] in ("ok", "cached")))
        step_t.labels(name, step).set(float(entry.get("duration_s") or 0))
    result = Gauge("qilin_pipeline_result", "Headline results of the last run",
                   ["pipeline", "step", "metric"], registry=reg)
    for step, values in manifest.get("results", {}).items():
        for key in HEADLINE:
            v = values.get(key)
            if isinstance(v, int | float) and not isinstance(v, bool):
                result.labels(name, step, key).set(float(v))
    return reg, generate_latest(reg).decode()


def export_run_metrics(manifest: dict[str, Any], textfile: str | Path | None = None,
                       pushgateway: str | None = None, timeout_s: float = 10.0) -> None:
    """Write the textfile (atomically) and/or push to ``pushgateway`` (job ``qilin_pipeline``)."""
    reg, text = run_metrics(manifest)
    if textfile:
        with atomic_path(textfile) as tmp:
            Path(tmp).write_text(text)
    if pushgateway:
        try:
            push_to_gateway(pushgateway, job="qilin_pipeline", registry=reg,
                            grouping_key={"pipeline": manifest["pipeline"]["name"]},
                            timeout=timeout_s)
        except OSError as exc:
            raise MonitoringError(f"push to Pushgateway {pushgateway} failed: {exc}") from exc


def metric_names() -> set[str]:
    """Every sample name a run exports (for checks of alert rules and dashboards).

    Examples
    --------
    >>> "qilin_pipeline_run_success" in metric_names()
    True
    """
    from qilin.monitoring.prometheus import exported_metric_names

    manifest = {"pipeline": {"name": "p"}, "status": "ok", "steps": {}, "results": {}}
    return exported_metric_names(run_metrics(manifest)[0])
