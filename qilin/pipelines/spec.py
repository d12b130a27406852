"""Pipeline files: steps (notebook, parameters, inputs from earlier steps) read from YAML.

::

    name: research
    kernel: qilin                 # Jupyter kernel every step runs on
    cluster: local                # default cluster for the run (--cluster overrides)
    step_timeout_s: 900           # per step (a step may set its own timeout_s)
    params: {n_symbols: 300}      # run-wide: given to every step whose notebook declares them
    steps:
      data_quality:
        notebook: ../notebooks/01_data_quality.ipynb    # relative to this file
      factor_research:
        notebook: ../notebooks/02_factor_research.ipynb
        inputs: {bars: data_quality/bars.parquet}       # parameter: step/artifact
        params: {select_horizon: 5}

A step runs after every step it reads an input from (and those listed in ``after``).

Examples
--------
>>> import tempfile, pathlib
>>> with tempfile.TemporaryDirectory() as d:
...     p = pathlib.Path(d) / "p.yaml"
...     for nb in ("a.ipynb", "b.ipynb"):
...         _ = (pathlib.Path(d) / nb).write_text("{}")
...     _ = p.write_text("steps:\\n  a: {notebook: a.ipynb}\\n"
...                      "  b: {notebook: b.ipynb, inputs: {x: a/out.parquet}}\\n")
...     pipe = load_pipeline(p)
>>> pipe.order(), pipe.steps["b"].depends
(['a', 'b'], ('a',))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from qilin.errors import ParameterError

_TOP_KEYS = {"name", "description", "kernel", "cluster", "step_timeout_s", "params", "steps"}
_STEP_KEYS = {"notebook", "params", "inputs", "after", "timeout_s", "description"}


@dataclass(frozen=True)
class Step:
    """One notebook run of a pipeline."""

    name: str
    notebook: Path
    params: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, tuple[str, str]] = field(default_factory=dict)
    after: tuple[str, ...] = ()
    timeout_s: float = 900.0

    @property
    def depends(self) -> tuple[str, ...]:
        """Steps that must finish first (input producers and ``after``), in file order."""
        seen = dict.fromkeys([s for s, _ in self.inputs.values()] + list(self.after))
        return tuple(seen)


@dataclass(frozen=True)
class Pipeline:
    """A parsed pipeline file."""

    name: str
    path: Path
    steps: dict[str, Step]
    params: dict[str, Any]
    kernel: str = "qilin"
    cluster: str = "local"
    description: str = ""

    def order(self) -> list[str]:
        """Steps in a dependency order (file order among independent steps)."""
        done: list[str] = []
        pending = list(self.steps)
        while pending:
            ready = [s for s in pending if all(d in done for d in self.steps[s].depends)]
            if not ready:
                raise ParameterError(f"{self.path}: steps {pending} depend on each other in "
                                     "a cycle")
            done.append(ready[0])
            pending.remove(ready[0])
        return done


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ParameterError(f"{where} must be a mapping, got {value!r}")
    return value


def load_pipeline(path: str | Path) -> Pipeline:
    """Read and check a pipeline file (keys, step references, cycles, notebook files)."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ParameterError(f"pipeline file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ParameterError(f"pipeline file {path}: invalid YAML: "
                             f"{str(exc).splitlines()[0]}") from None
    doc = _mapping(doc, f"{path}")
    unknown = sorted(set(doc) - _TOP_KEYS)
    if unknown:
        raise ParameterError(f"{path}: unknown keys {unknown}; known: {sorted(_TOP_KEYS)}")
    raw_steps = _mapping(doc.get("steps"), f"{path}: steps")
    if not raw_steps:
        raise ParameterError(f"{path}: no steps")
    default_timeout = float(doc.get("step_timeout_s", 900))
    steps: dict[str, Step] = {}
    for name, raw in raw_steps.items():
        where = f"{path}: step {name}"
        raw = _mapping(raw, where)
        unknown = sorted(set(raw) - _STEP_KEYS)
        if unknown:
            raise ParameterError(f"{where}: unknown keys {unknown}; known: {sorted(_STEP_KEYS)}")
        if "notebook" not in raw:
            raise ParameterError(f"{where}: no notebook")
        notebook = (path.parent / str(raw["notebook"])).resolve()
        if not notebook.is_file():
            raise ParameterError(f"{where}: notebook {notebook} does not exist")
        inputs: dict[str, tuple[str, str]] = {}
        for param, ref in _mapping(raw.get("inputs"), f"{where}: inputs").items():
            producer, sep, artifact = str(ref).partition("/")
            if not sep or not artifact:
                raise ParameterError(f"{where}: input {param}={ref!r} must be written "
                                     "step/artifact")
            if producer not in raw_steps or producer == name:
                raise ParameterError(f"{where}: input {param} reads from unknown step "
                                     f"{producer!r}")
            inputs[str(param)] = (producer, artifact)
        after = tuple(str(a) for a in raw.get("after") or ())
        for a in after:
            if a not in raw_steps or a == name:
                raise ParameterError(f"{where}: after names unknown step {a!r}")
        steps[str(name)] = Step(str(name), notebook, dict(_mapping(raw.get("params"),
                                f"{where}: params")), inputs, after,
                                float(raw.get("timeout_s", default_timeout)))
    pipe = Pipeline(str(doc.get("name") or path.stem), path.resolve(), steps,
                    dict(_mapping(doc.get("params"), f"{path}: params")),
                    str(doc.get("kernel", "qilin")), str(doc.get("cluster", "local")),
                    str(doc.get("description", "")))
    pipe.order()
    return pipe
