"""Notebook pipelines: YAML steps run with papermill by ``qilin run`` (see docs/pipelines.md).

- :mod:`qilin.pipelines.spec` — the pipeline file (steps, inputs, parameters).
- :mod:`qilin.pipelines.params` — a notebook's parameters cell and value checks.
- :mod:`qilin.pipelines.runner` — execution, caching, resume, manifest.
- :mod:`qilin.pipelines.execute` — one step in its own process and kernel.
- :mod:`qilin.pipelines.report` — nbconvert pages and the run's index page.
- :mod:`qilin.pipelines.metrics` — Prometheus metrics of scheduled runs.
"""

from qilin.pipelines.runner import PipelineError, PipelineRun, RunResult, plan
from qilin.pipelines.spec import Pipeline, Step, load_pipeline

__all__ = ["Pipeline", "PipelineError", "PipelineRun", "RunResult", "Step", "load_pipeline",
           "plan"]
