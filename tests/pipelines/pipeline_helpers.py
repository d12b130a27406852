"""Helpers for the pipeline tests: tiny notebooks and pipeline files written per test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

REPO = Path(__file__).resolve().parents[2]
KERNELSPEC = {"kernelspec": {"display_name": "Python (qilin)", "language": "python",
                             "name": "qilin"}}


def write_notebook(path: Path, params: str, *cells: str) -> Path:
    """A notebook with a ``parameters`` cell and code cells."""
    nb = new_notebook(metadata=KERNELSPEC)
    p = new_code_cell(params)
    p.metadata["tags"] = ["parameters"]
    nb.cells = [p, *[new_code_cell(c) for c in cells]]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


def tree_env() -> dict[str, str]:
    """The environment with the tree under test first on the path (kernels import it too)."""
    return {**os.environ,
            "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def qilin_run(*args: str, timeout: float = 300, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """``qilin run ...`` in a real subprocess (the tree under test first on the path)."""
    return subprocess.run([sys.executable, "-m", "qilin.cli", "run", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd, env=tree_env())


def manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())
