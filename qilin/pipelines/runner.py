"""``qilin run``: execute a pipeline's notebooks with papermill into ``runs/<run_id>/``.

- Parameters are checked against every notebook's parameters cell before anything runs.
- One Dask cluster serves the whole run; its address is passed to every notebook that
  declares a ``cluster`` parameter (notebooks connect, they do not start their own).
- Steps run in dependency order; independent steps run at the same time, each in its own
  process, kernel and working folder (``runs/<run_id>/.<step>.<random>.tmp``, renamed to
  ``runs/<run_id>/<step>/`` when the step ends).
- A step whose notebook source, parameters and input artifacts hash the same as a finished
  step (of this run or an earlier one in ``runs/``) is reused, not rerun (``force`` reruns).
- A failing cell, a dead kernel or a timeout fails the step: its executed notebook is kept,
  dependent steps are skipped, the run is marked failed in ``manifest.json`` and one line
  names the step, notebook and cell. ``resume`` reruns only failed and stale steps.
- Ctrl-C stops the running steps and leaves a consistent manifest (status ``interrupted``).

Examples
--------
>>> step_id_hash({"a": 1}, {"x": "ab"}, "src", "qilin") == step_id_hash({"a": 1}, {"x": "ab"},
...                                                                     "src", "qilin")
True
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qilin.atomic import json_safe, write_json_atomic
from qilin.errors import ParameterError, QilinError
from qilin.pipelines.params import coerce, notebook_parameters
from qilin.pipelines.spec import Pipeline, Step

#: Parameters ``qilin run`` sets itself.
RESERVED = ("out_dir", "cluster")
FINISHED = ("ok", "cached")
POLL_S = 0.2
KILL_GRACE_S = 10.0


class PipelineError(QilinError):
    """A pipeline run failed (one line naming the step, notebook and cell)."""


def step_id_hash(params: Mapping[str, Any], inputs: Mapping[str, str], source: str,
                 kernel: str) -> str:
    """The cache key of a step: notebook source, parameters, input digests and kernel."""
    doc = json.dumps({"params": json_safe(dict(params)), "inputs": dict(inputs),
                      "source": source, "kernel": kernel}, sort_keys=True)
    return hashlib.blake2b(doc.encode(), digest_size=16).hexdigest()


def file_digest(path: Path) -> str:
    """blake2b of a file's bytes."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def notebook_source(path: Path) -> str:
    """The code and markdown of a notebook without outputs or metadata (what the hash sees)."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    return json.dumps([["".join(c["source"]) if isinstance(c["source"], list) else c["source"],
                        c.get("cell_type")] for c in nb.get("cells", [])])


def _check_kernel(name: str) -> None:
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(name)
    except NoSuchKernel:
        raise ParameterError(f"Jupyter kernel {name!r} is not installed; run `python -m "
                             f"ipykernel install --sys-prefix --name {name}` (make venv does "
                             "it)") from None


def plan(pipeline: Pipeline, overrides: Mapping[str, Any] | None = None
         ) -> dict[str, dict[str, Any]]:
    """Every step's parameter values, checked against its notebook before anything runs.

    Run-wide values (the pipeline's ``params`` and ``overrides``) go to every step whose
    notebook declares them; ``step.name=value`` targets one step. Values a notebook leaves
    at ``None`` for a configured key take the configuration's value.

    Raises
    ------
    ParameterError
        Unknown, reserved, missing or mistyped parameter (one line naming it and where).
    """
    from qilin.research import CONFIG_KEYS, from_config

    overrides = dict(overrides or {})
    decls = {name: notebook_parameters(step.notebook) for name, step in pipeline.steps.items()}
    run_wide = {**pipeline.params, **{k: v for k, v in overrides.items() if "." not in k}}
    targeted: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        if "." in key:
            step, _, param = key.partition(".")
            if step not in pipeline.steps:
                raise ParameterError(f"parameter {key}: no step {step!r} in {pipeline.path.name} "
                                     f"(steps: {', '.join(pipeline.steps)})")
            targeted.setdefault(step, {})[param] = value
    declared = {p for d in decls.values() for p in d}
    for key in list(run_wide) + [p for t in targeted.values() for p in t]:
        if key in RESERVED:
            raise ParameterError(f"parameter {key} is set by qilin run (use --cluster / "
                                 "--runs-dir)")
    for key in run_wide:
        if key not in declared:
            raise ParameterError(f"unknown parameter {key!r}: no notebook of "
                                 f"{pipeline.path.name} declares it (known: "
                                 f"{', '.join(sorted(declared - set(RESERVED)))})")
    out: dict[str, dict[str, Any]] = {}
    for name, step in pipeline.steps.items():
        decl = decls[name]
        where = f"step {name} ({step.notebook.name})"
        given = {k: v for k, v in run_wide.items() if k in decl}
        for source in (step.params, targeted.get(name, {})):
            for key, value in source.items():
                if key not in decl:
                    raise ParameterError(f"{where}: unknown parameter {key!r} (declared: "
                                         f"{', '.join(sorted(decl))})")
                given[key] = value
        for param in step.inputs:
            if param not in decl:
                raise ParameterError(f"{where}: input {param!r} is not a parameter of the "
                                     "notebook")
        values: dict[str, Any] = {}
        for key, param in decl.items():
            if key in RESERVED or key in step.inputs:
                continue
            value = coerce(param, given[key], where) if key in given else param.default
            if value is None and "None" not in param.types:
                raise ParameterError(f"{where}: missing parameter {key} ({param.help})")
            values[key] = value
        config_backed = {k: v for k, v in values.items() if k in CONFIG_KEYS and v is None}
        values.update(from_config(**config_backed))
        out[name] = values
    return out


def _say_default(msg: str) -> None:
    print(msg, flush=True)


@dataclass
class _Running:
    step: Step
    proc: subprocess.Popen[bytes]
    folder: Path
    started: float
    timed_out: bool = False
    killed_at: float | None = None


@dataclass
class RunResult:
    """A finished (or failed) run: its folder, manifest, exit code and report page."""

    path: Path
    manifest: dict[str, Any]
    report: Path | None
    exit_code: int
    failure: str | None = None
    skipped: list[str] = field(default_factory=list)


def _numba_cache_present() -> bool:
    import qilin

    root = Path(os.environ.get("NUMBA_CACHE_DIR") or Path(qilin.__file__).parent)
    return any(root.rglob("*.nbi"))


def default_run_id(pipeline: Pipeline, values: Mapping[str, Any]) -> str:
    """``<pipeline>-YYYYmmdd-HHMMSS-<short hash of the parameters>``."""
    digest = hashlib.blake2b(json.dumps(json_safe(dict(values)), sort_keys=True).encode(),
                             digest_size=3).hexdigest()
    return f"{pipeline.name}-{time.strftime('%Y%m%d-%H%M%S')}-{digest}"


class PipelineRun:
    """One execution of a pipeline (see the module docs); call :meth:`execute`."""

    def __init__(self, pipeline: Pipeline, overrides: Mapping[str, Any] | None = None,
                 runs_dir: str | Path = "runs", run_id: str | None = None,
                 resume: str | None = None, force: bool = False, cluster: str | None = None,
                 max_parallel: int = 2, n_workers: int | None = None,
                 say: Callable[[str], None] = _say_default) -> None:
        self.pipeline = pipeline
        self.runs_dir = Path(runs_dir)
        self.say = say
        self.force = force
        self.max_parallel = max(1, int(max_parallel))
        self.n_workers = n_workers
        self.cluster_target = cluster or pipeline.cluster
        previous: dict[str, Any] | None = None
        if resume:
            mpath = self.runs_dir / resume / "manifest.json"
            if not mpath.is_file():
                raise ParameterError(f"--resume {resume}: no {mpath}")
            previous = json.loads(mpath.read_text())
            overrides = {**previous.get("overrides", {}), **dict(overrides or {})}
        self.overrides = dict(overrides or {})
        _check_kernel(pipeline.kernel)
        self.values = plan(pipeline, self.overrides)  # every check before anything runs
        self.run_id = resume or run_id or default_run_id(pipeline, self.values)
        self.path = self.runs_dir / self.run_id
        self.previous = previous
        self.sources = {n: notebook_source(s.notebook) for n, s in pipeline.steps.items()}

    # ---------------------------------------------------------------- manifest
    def _new_manifest(self) -> dict[str, Any]:
        from qilin.info import package_version

        versions = {name: package_version(name) for name in
                    ("qilin", "numpy", "pandas", "dask", "distributed", "numba", "pyarrow",
                     "papermill", "xgboost")}
        return {
            "run_id": self.run_id, "status": "running",
            "pipeline": {"name": self.pipeline.name, "path": str(self.pipeline.path),
                         "sha": file_digest(self.pipeline.path)},
            "overrides": self.overrides, "parameters": self.values,
            "started": _now(), "finished": None, "duration_s": None,
            "versions": {"python": sys.version.split()[0], **versions},
            "git_commit": _git_commit(self.pipeline.path.parent), "cluster": {},
            "data": {}, "results": {},
            "steps": {name: {"notebook": str(step.notebook), "status": "pending",
                             "depends": list(step.depends), "hash": None,
                             "params": self.values[name], "inputs": {}}
                      for name, step in self.pipeline.steps.items()},
        }

    def _save(self) -> None:
        write_json_atomic(self.path / "manifest.json", self.manifest)

    # ---------------------------------------------------------------- caching
    def _inputs(self, step: Step) -> dict[str, tuple[Path, str]]:
        out = {}
        for param, (producer, artifact) in step.inputs.items():
            path = (self.path / producer / artifact).resolve()
            if not path.is_file():
                raise PipelineError(f"step {step.name}: input {param} = {producer}/{artifact} "
                                    f"was not written by step {producer}")
            out[param] = (path, file_digest(path))
        return out

    def _find_cached(self, name: str, digest: str) -> tuple[Path, str] | None:
        here = self.path / name
        if self.previous is not None:
            old = self.previous["steps"].get(name, {})
            if old.get("status") in FINISHED and old.get("hash") == digest and here.is_dir():
                return here, self.run_id
        if not self.runs_dir.is_dir():
            return None
        for mpath in sorted(self.runs_dir.glob("*/manifest.json"), reverse=True):
            if mpath.parent == self.path:
                continue
            try:
                old = json.loads(mpath.read_text())["steps"].get(name, {})
            except (ValueError, KeyError, OSError):
                continue
            folder = mpath.parent / name
            if old.get("status") in FINISHED and old.get("hash") == digest and folder.is_dir():
                return folder, mpath.parent.name
        return None

    # ---------------------------------------------------------------- steps
    def _start(self, step: Step, address: str | None) -> _Running | None:
        entry = self.manifest["steps"][step.name]
        inputs = self._inputs(step)
        digest = step_id_hash(self.values[step.name], {k: v[1] for k, v in inputs.items()},
                              self.sources[step.name], self.pipeline.kernel)
        entry.update(hash=digest, inputs={k: {"path": str(p), "digest": d}
                                          for k, (p, d) in inputs.items()})
        cached = None if self.force else self._find_cached(step.name, digest)
        if cached is not None:
            folder, origin = cached
            if folder != self.path / step.name:
                _copy_step(folder, self.path / step.name)
            entry.update(status="cached", reused_from=origin, duration_s=0.0,
                         started=_now(), finished=_now(), error=None)
            self._collect_results(step.name)
            self.say(f"[{step.name}] unchanged: reused from run {origin}")
            return None
        tmp = self.path / f".{step.name}.{uuid.uuid4().hex[:8]}.tmp"
        tmp.mkdir(parents=True)
        params = {**self.values[step.name], **{k: str(p) for k, (p, _) in inputs.items()}}
        declared = notebook_parameters(step.notebook)
        params["out_dir"] = "."
        if "cluster" in declared:
            params["cluster"] = address or "none"
        write_json_atomic(tmp / "parameters.json", params)
        log = open(tmp / "step.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "qilin.pipelines.execute", str(step.notebook),
             step.notebook.name, "parameters.json", self.pipeline.kernel],
            cwd=tmp, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "QILIN_PROGRESS": "0"})
        log.close()
        entry.update(status="running", started=_now(), reused_from=None, error=None)
        self._save()
        self.say(f"[{step.name}] running {step.notebook.name}")
        return _Running(step, proc, tmp, time.monotonic())

    def _finish(self, run: _Running, status: str, reason: dict[str, Any] | None) -> None:
        name = run.step.name
        target = self.path / name
        if target.exists():
            shutil.rmtree(target)
        os.replace(run.folder, target)
        entry = self.manifest["steps"][name]
        entry.update(status=status, finished=_now(),
                     duration_s=round(time.monotonic() - run.started, 3), error=reason)
        if status == "ok":
            self._collect_results(name)
            self.say(f"[{name}] ok in {entry['duration_s']:.1f}s")
        self._save()

    def _collect_results(self, name: str) -> None:
        path = self.path / name / "results.json"
        if not path.is_file():
            return
        results = json.loads(path.read_text())
        self.manifest["steps"][name]["results"] = results
        self.manifest["results"][name] = results
        if "data_fingerprint" in results:
            self.manifest["data"] = {k: results.get(k) for k in
                                     ("data_fingerprint", "source", "n_symbols", "n_dates",
                                      "first_date", "last_date")}

    def _failure_line(self, name: str) -> str:
        entry = self.manifest["steps"][name]
        err = entry.get("error") or {}
        nb_out = self.path / name / Path(entry["notebook"]).name
        cell = f" cell {err['cell']}" if err.get("cell") is not None else ""
        source = f" ({err['source'][:60]})" if err.get("source") else ""
        evalue = (err.get("evalue") or "").splitlines()
        return (f"step {name} failed in {Path(entry['notebook']).name}{cell}{source}: "
                f"{err.get('ename', 'error')}: {evalue[-1] if evalue else ''} "
                f"(executed notebook: {nb_out})")

    # ---------------------------------------------------------------- main loop
    def execute(self) -> RunResult:
        """Run the pipeline; returns a :class:`RunResult` (exit code 0 ok, 1 failed)."""
        from qilin.pipelines.report import write_report

        self.path.mkdir(parents=True, exist_ok=True)
        self.manifest = self._new_manifest()
        if self.previous is not None:
            self.manifest["started_first"] = self.previous.get("started")
        self._save()
        if not _numba_cache_present():
            self.say("first run here: compiling qilin's numba kernels (cached afterwards, so "
                     "later runs are faster)")
        t0 = time.monotonic()
        running: dict[str, _Running] = {}
        try:
            with self._cluster() as address:
                self._loop(running, address)
        except KeyboardInterrupt:
            self._interrupt(running)
            self.manifest["status"] = "interrupted"
            self._close(t0)
            raise
        statuses = {e["status"] for e in self.manifest["steps"].values()}
        self.manifest["status"] = "ok" if statuses <= set(FINISHED) else "failed"
        self._close(t0)
        report = write_report(self.path, self.manifest)
        failed = [n for n, e in self.manifest["steps"].items() if e["status"] == "failed"]
        failure = "; ".join(self._failure_line(n) for n in failed) or None
        skipped = [n for n, e in self.manifest["steps"].items() if e["status"] == "skipped"]
        return RunResult(self.path, self.manifest, report, 0 if not failed else 1, failure,
                         skipped)

    def _close(self, t0: float) -> None:
        self.manifest["finished"] = _now()
        self.manifest["duration_s"] = round(time.monotonic() - t0, 3)
        self._save()

    def _cluster(self) -> Any:
        needs = any("cluster" in notebook_parameters(s.notebook)
                    for s in self.pipeline.steps.values())
        target = self.cluster_target

        @contextlib.contextmanager
        def manage() -> Any:
            if not needs or target == "none":
                self.manifest["cluster"] = {"mode": "none"}
                yield None
                return
            if "://" in target:
                self.manifest["cluster"] = {"mode": "remote", "address": target}
                yield target
                return
            from qilin.cluster import ClusterManager

            manager = ClusterManager(target, n_workers=self.n_workers,  # type: ignore[arg-type]
                                     verbose=False)
            with _quiet_dask(), manager as client:
                address = client.scheduler.address
                self.manifest["cluster"] = {
                    "mode": manager.resolved_mode, "address": address,
                    "workers": len(client.scheduler_info().get("workers", {})),
                    "dashboard": manager.dashboard_link}
                self.say(f"Dask cluster: {manager.resolved_mode}, "
                         f"{self.manifest['cluster']['workers']} workers at {address}; "
                         f"dashboard {manager.dashboard_link}")
                self._save()
                yield address

        return manage()

    def _loop(self, running: dict[str, _Running], address: str | None) -> None:
        steps = self.manifest["steps"]
        order = self.pipeline.order()
        while True:
            for name in order:
                entry = steps[name]
                if entry["status"] != "pending":
                    continue
                deps = [steps[d]["status"] for d in self.pipeline.steps[name].depends]
                if any(s in ("failed", "skipped", "interrupted") for s in deps):
                    entry.update(status="skipped", error={"ename": "Skipped", "evalue":
                                 "an upstream step did not finish"})
                    self._save()
                    continue
                if all(s in FINISHED for s in deps) and len(running) < self.max_parallel:
                    started = self._start(self.pipeline.steps[name], address)
                    if started is not None:
                        running[name] = started
            self._save()
            if not running:
                if all(e["status"] != "pending" for e in steps.values()):
                    return
                continue
            time.sleep(POLL_S)
            for name, run in list(running.items()):
                rc = run.proc.poll()
                elapsed = time.monotonic() - run.started
                if rc is None:
                    if elapsed > run.step.timeout_s and not run.timed_out:
                        run.timed_out = True
                        run.killed_at = time.monotonic()
                        _signal_group(run.proc, signal.SIGTERM)
                    elif run.killed_at and time.monotonic() - run.killed_at > KILL_GRACE_S:
                        _signal_group(run.proc, signal.SIGKILL)
                    continue
                del running[name]
                reason = None
                if run.timed_out:
                    reason = {"ename": "StepTimeout",
                              "evalue": f"step ran longer than {run.step.timeout_s:g}s"}
                elif rc != 0:
                    err = run.folder / "step_error.json"
                    reason = json.loads(err.read_text()) if err.is_file() else {
                        "ename": "ProcessDied", "evalue": f"papermill exited with status {rc}"}
                self._finish(run, "ok" if reason is None else "failed", reason)
                if reason is not None:
                    self.say(f"[{name}] failed: {self._failure_line(name)}")

    def _interrupt(self, running: dict[str, _Running]) -> None:
        for run in running.values():
            _signal_group(run.proc, signal.SIGTERM)
        deadline = time.monotonic() + KILL_GRACE_S
        for run in running.values():
            try:
                run.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(run.proc, signal.SIGKILL)
                run.proc.wait(5)
            self._finish(run, "interrupted", {"ename": "KeyboardInterrupt",
                                              "evalue": "interrupted by the user"})
        for entry in self.manifest["steps"].values():
            if entry["status"] == "pending":
                entry["status"] = "skipped"
        self._save()


@contextlib.contextmanager
def _quiet_dask() -> Iterator[None]:
    """Keep dask's per-worker INFO lines and shutdown warnings out of the run's log (the
    scheduler lives in this process); ``qilin -v run`` shows them."""
    if logging.getLogger().isEnabledFor(logging.INFO):
        yield
        return
    import distributed  # configures its loggers on first import

    names = ["distributed", "distributed.http.proxy"] + [
        n for n in logging.root.manager.loggerDict if n.startswith("distributed.")]
    saved = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    import distributed.http.proxy  # noqa: F401 - logs at import, now quieted
    try:
        yield
    finally:
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _copy_step(src: Path, dst: Path) -> None:
    """Copy a finished step folder (hard links where possible) into place atomically."""
    from qilin.atomic import atomic_directory

    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    with atomic_directory(dst, overwrite=True) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True, copy_function=link)


def _now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def _git_commit(cwd: Path) -> str | None:
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=cwd, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (res.stdout.strip() or None) if res.returncode == 0 else None
