"""The end-to-end research job: from Python on a process cluster, from the command line, and
as a papermill-executed notebook on a real Jupyter kernel."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from qilin.errors import QilinError
from qilin.research import ResearchParams, run_research

REPO = Path(__file__).resolve().parent.parent
SMALL = dict(n_symbols=40, n_days=300, factors="research", top_k=8, rebalance=5,
             sweep_grid="fast=5,10 slow=20,40", progress=False)


def test_research_run_on_process_cluster_writes_complete_folder(tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None, host="127.0.0.1") as cluster, Client(cluster) as cl:
        run = run_research(ResearchParams(**SMALL), out_dir=tmp_path, run_id="r1", client=cl,
                           verbose=False)
    folder = tmp_path / "r1"
    assert run.path == folder
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "ok"
    assert manifest["data"]["n_symbols"] == 40 and manifest["data"]["n_dates"] == 300
    assert len(manifest["data"]["fingerprint"]) == 32
    assert set(manifest["timings"]) >= {"data", "evaluation", "backtest", "sweep", "total"}
    assert manifest["versions"]["qilin"]
    for name in ("factor_summary.parquet", "backtest_returns.parquet", "backtest_trades.parquet",
                 "backtest_metrics.json", "sweep.parquet", "report.html", "validation.json",
                 "backtest_equity.png", "sweep_heatmap.png"):
        assert (folder / name).stat().st_size > 0, name
    # no temporary folders are left behind next to the run
    assert [p.name for p in tmp_path.iterdir()] == ["r1"]
    # the traded factor was chosen on the in-sample period only, the backtest starts after it
    summary = pd.read_parquet(folder / "factor_summary.parquet")
    assert set(summary["factor"]) == {n for n, _ in ResearchParams(**SMALL).factor_set()}
    returns = pd.read_parquet(folder / "backtest_returns.parquet")
    assert returns["date"].min() >= pd.Timestamp(manifest["split_date"])
    assert manifest["selected_factor"]["name"] in set(summary["factor"])
    metrics = json.loads((folder / "backtest_metrics.json").read_text())
    assert {"sharpe_ratio", "max_drawdown", "alpha", "beta", "costs_paid"} <= set(metrics)
    sweep = pd.read_parquet(folder / "sweep.parquet")
    assert len(sweep) == 4 and {"fast", "slow", "sharpe_ratio"} <= set(sweep.columns)


def test_failed_run_keeps_only_a_failed_manifest(tmp_path: Path) -> None:
    params = ResearchParams(**{**SMALL, "data": str(tmp_path / "missing.parquet")})
    with pytest.raises(QilinError):
        run_research(params, out_dir=tmp_path / "runs", run_id="bad", verbose=False)
    folder = tmp_path / "runs" / "bad"
    assert [p.name for p in folder.iterdir()] == ["manifest.json"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "missing.parquet" in manifest["reason"]


def test_qilin_research_command_on_local_cluster(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "qilin.cli", "research", "--symbols", "30", "--days", "260",
           "--factors", "research", "--cluster", "local", "--n-workers", "2", "--top-k", "5",
           "--sweep-grid", "fast=5,10 slow=20", "--out", str(tmp_path), "--run-id", "cli",
           "--quiet"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "dashboard: http://127.0.0.1:" in res.stdout
    assert "qilin research run cli: ok" in res.stdout
    assert json.loads((tmp_path / "cli" / "manifest.json").read_text())["status"] == "ok"


def test_research_notebook_through_papermill(tmp_path: Path) -> None:
    papermill = pytest.importorskip("papermill")
    out_nb = tmp_path / "executed.ipynb"
    papermill.execute_notebook(
        str(REPO / "notebooks" / "research.ipynb"), str(out_nb), kernel_name="python3",
        cwd=str(REPO / "notebooks"), progress_bar=False,
        parameters=dict(n_symbols=30, n_days=260, factors="research", cluster="threads",
                        n_workers=1, top_k=5, sweep_grid="fast=5 slow=20,40",
                        out_dir=str(tmp_path / "runs"), run_id="nb"),
    )
    manifest = json.loads((tmp_path / "runs" / "nb" / "manifest.json").read_text())
    assert manifest["status"] == "ok"
    executed = json.loads(out_nb.read_text())
    injected = [c for c in executed["cells"]
                if "injected-parameters" in c["metadata"].get("tags", [])]
    assert injected and "n_symbols = 30" in "".join(injected[0]["source"])
    outputs = [o for c in executed["cells"] for o in c.get("outputs", [])]
    assert not any(o.get("output_type") == "error" for o in outputs)
    assert any("image/png" in o.get("data", {}) for o in outputs)
