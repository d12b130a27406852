"""``qilin run PIPELINE``: execute a notebook pipeline (see :mod:`qilin.pipelines`).

``qilin run pipelines/research.yaml [-p key=value ...] [--cluster MODE|ADDRESS]
[--resume RUN_ID] [--force] [--runs-dir runs] [--metrics-textfile F] [--pushgateway URL]``

Exit status: 0 when every step finished (or was reused), 1 when a step failed (one line
names it), 2 for bad parameters (nothing ran), 130 on Ctrl-C (manifest says interrupted).

Examples
--------
>>> import argparse
>>> parser = argparse.ArgumentParser()
>>> register(parser.add_subparsers(dest="command"))
>>> a = parser.parse_args(["run", "p.yaml", "-p", "top_k=5", "-p", "backtest.band=2"])
>>> parse_overrides(a.param)
{'top_k': '5', 'backtest.band': '2'}
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from qilin.errors import ParameterError


def parse_overrides(items: list[str] | None) -> dict[str, str]:
    """``["a=1", "step.b=x"]`` -> ``{"a": "1", "step.b": "x"}`` (values stay text)."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ParameterError(f"-p {item!r} must be written key=value")
        out[key.strip()] = value
    return out


def _run(args: argparse.Namespace) -> int:
    from qilin.pipelines import PipelineRun, load_pipeline
    from qilin.pipelines.metrics import export_run_metrics

    pipeline = load_pipeline(args.pipeline)
    run = PipelineRun(pipeline, parse_overrides(args.param), runs_dir=args.runs_dir,
                      run_id=args.run_id, resume=args.resume, force=args.force,
                      cluster=args.cluster, max_parallel=args.max_parallel,
                      n_workers=args.n_workers)
    print(f"qilin run {pipeline.name}: run {run.run_id} -> {run.path}", flush=True)
    try:
        result = run.execute()
    finally:
        if args.metrics_textfile or args.pushgateway:
            export_run_metrics(run.manifest, args.metrics_textfile, args.pushgateway)
    m = result.manifest
    for name, entry in m["steps"].items():
        print(f"  {name:<18} {entry['status']:<8} {entry.get('duration_s') or 0:7.1f}s")
    print(f"run {m['run_id']}: {m['status']} in {m['duration_s']:.1f}s; "
          f"report: {result.report}")
    if result.failure:
        print(f"qilin run: {result.failure}", file=sys.stderr)
    return result.exit_code


def register(subparsers: Any) -> None:
    """Add ``qilin run`` to the CLI."""
    p = subparsers.add_parser("run", help="run a notebook pipeline (pipelines/*.yaml)",
                              description="Run a notebook pipeline with papermill into "
                              "runs/<run_id>/ (manifest.json, executed notebooks, report).")
    p.add_argument("pipeline", help="pipeline YAML file, e.g. pipelines/research.yaml")
    p.add_argument("-p", "--param", action="append", metavar="KEY=VALUE",
                   help="parameter for every step declaring KEY, or STEP.KEY for one step")
    p.add_argument("--cluster", default=None,
                   help="local, threads, cuda, none, or a tcp:// scheduler address "
                   "(default: the pipeline's)")
    p.add_argument("--n-workers", type=int, default=None, help="workers of a started cluster")
    p.add_argument("--resume", default=None, metavar="RUN_ID",
                   help="rerun the failed and stale steps of runs/RUN_ID")
    p.add_argument("--force", action="store_true", help="rerun every step (no reuse)")
    p.add_argument("--runs-dir", default="runs", help="parent folder of run folders")
    p.add_argument("--run-id", default=None, help="run folder name (default: name-time-hash)")
    p.add_argument("--max-parallel", type=int, default=2,
                   help="independent steps run at once (default 2)")
    p.add_argument("--metrics-textfile", default=None,
                   help="write run metrics for node-exporter's textfile collector")
    p.add_argument("--pushgateway", default=None, help="push run metrics to this Pushgateway")
    p.set_defaults(func=_run)
