"""The shipped pipelines on the real notebooks (small parameters): every notebook runs
through papermill on the `qilin` kernel and a real LocalCluster, its artifacts hold sane
values, and the report pages render in headless Chromium without console errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from chromium_cdp import Browser, file_url
from pipeline_helpers import manifest, qilin_run

SMALL = ["-p", "n_symbols=30", "-p", "n_days=260", "-p", "factors=research",
         "-p", "horizons=[1, 5]", "-p", "top_k=6", "-p", "grid=fast=5,10 slow=20,40",
         "-p", "train=120", "-p", "valid=20", "-p", "test=40", "-p", "n_estimators=30"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs = tmp_path_factory.mktemp("pipelines") / "runs"
    res = qilin_run("pipelines/research.yaml", *SMALL, "--cluster", "local", "--n-workers", "1",
                    "--runs-dir", str(runs), "--run-id", "research", timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert f"report: {runs / 'research' / 'index.html'}" in res.stdout
    assert "INFO" not in res.stdout + res.stderr  # no dask log flood in the job's log
    res = qilin_run("pipelines/daily_monitoring.yaml", "-p", "n_symbols=30", "-p", "n_days=260",
                    "--runs-dir", str(runs), "--run-id", "monitoring", timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return runs


def _executed_ok(path: Path, images: bool = True) -> None:
    nb = json.loads(path.read_text())
    outputs = [o for c in nb["cells"] for o in c.get("outputs", [])]
    assert not any(o.get("output_type") == "error" for o in outputs), path
    assert nb["metadata"]["kernelspec"]["name"] == "qilin"
    if images:
        assert any("image/png" in o.get("data", {}) for o in outputs), path


def test_research_pipeline_artifacts_are_sane(runs: Path) -> None:
    run = runs / "research"
    m = manifest(run)
    assert m["status"] == "ok" and m["git_commit"] and m["versions"]["papermill"]
    assert m["cluster"]["mode"] == "local" and m["cluster"]["address"].startswith("tcp://")
    assert m["data"]["n_symbols"] == 30 and m["data"]["n_dates"] == 260
    assert len(m["data"]["data_fingerprint"]) == 32
    for name, entry in m["steps"].items():
        assert entry["status"] == "ok" and len(entry["hash"]) == 32, name
        assert entry["duration_s"] > 0
        _executed_ok(run / name / Path(entry["notebook"]).name)
        assert (run / "report" / f"{name}.html").stat().st_size > 10_000
    # every notebook got the run's cluster address, not a cluster of its own
    for step in ("factor_research", "model", "sweep"):
        params = json.loads((run / step / "parameters.json").read_text())
        assert params["cluster"] == m["cluster"]["address"]
    fr = m["results"]["factor_research"]
    assert fr["n_factors"] == 7 and abs(fr["rank_ic"]) < 0.5  # research set + planted alpha
    scores = pd.read_parquet(run / "factor_research" / "scores.parquet")
    assert scores["date"].min() >= pd.Timestamp(fr["split_date"])
    assert (run / "factor_research" / "factor_tear_sheet.html").is_file()
    model = m["results"]["model"]
    assert model["windows"] == 2 and model["version"] == 1
    assert abs(model["prediction_rank_ic"]) < 0.5 and abs(model["prediction_ic"]) < 0.5
    registry = run / "model" / model["registry"]  # relative to the step folder
    assert (registry / "research_xgb" / "v000001" / "meta.json").is_file()
    bt = m["results"]["backtest"]
    assert math.isfinite(bt["sharpe_ratio"]) and -1 < bt["max_drawdown"] <= 0
    assert bt["costs_paid"] > 0 and 0 < bt["beta"] < 3
    # the backtest trades the model's out-of-sample scores only
    returns = pd.read_parquet(run / "backtest" / "returns.parquet")
    assert returns["date"].min() == pd.Timestamp(model["first_score_date"])
    sweep = m["results"]["sweep"]
    assert sweep["combinations"] == 4 and set(sweep["best_params"]) >= {"fast", "slow"}
    assert (run / "sweep" / "sweep_heatmap.png").stat().st_size > 5000


def test_monitoring_pipeline_reuses_data_step(runs: Path) -> None:
    m = manifest(runs / "monitoring")
    assert m["status"] == "ok"
    assert m["steps"]["data_quality"]["status"] == "cached"
    assert m["steps"]["data_quality"]["reused_from"] == "research"
    _executed_ok(runs / "monitoring" / "monitoring" / "06_monitoring.ipynb", images=False)
    alerts = pd.read_parquet(runs / "monitoring" / "monitoring" / "alerts.parquet")
    assert m["results"]["monitoring"]["alerts"] == len(alerts)
    assert len(alerts) > 0 and set(alerts["severity"]) <= {"info", "warning", "critical"}
    bars = pd.read_parquet(runs / "research" / "data_quality" / "bars.parquet")
    assert set(alerts["subject"]) <= set(bars["symbol"].astype(str))
    moves = alerts[alerts["rule"] == "pct_move"]
    assert len(moves) and (moves["value"].abs() >= moves["threshold"].abs() - 1e-12).all()
    system = pd.read_parquet(runs / "monitoring" / "monitoring" / "system.parquet")
    assert len(system) >= 1 and system["cpu_usage"].between(0, 1).all()
    assert (system["memory_used_bytes"] > 0).all()


def test_report_pages_render_without_console_errors(runs: Path, tmp_path: Path) -> None:
    browser = Browser()
    try:
        # the detector sees errors: a page that logs one must be caught
        bad = tmp_path / "bad.html"
        bad.write_text("<html><body><script>console.error('planted')</script></body></html>")
        loaded, errors = browser.console_errors(file_url(bad))
        assert loaded and any("planted" in e for e in errors)
        run = runs / "research"
        pages = [run / "index.html", *sorted((run / "report").glob("*.html")),
                 run / "backtest" / "tear_sheet.html",
                 run / "factor_research" / "factor_tear_sheet.html",
                 run / "sweep" / "tear_sheet.html"]
        for page in pages:
            loaded, errors = browser.console_errors(file_url(page))
            assert loaded and errors == [], (page, errors)
    finally:
        browser.close()
