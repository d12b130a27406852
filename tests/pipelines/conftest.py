"""Helpers for the pipeline tests: tiny notebooks and pipeline files written per test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
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


def qilin_run(*args: str, timeout: float = 300, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """``qilin run ...`` in a real subprocess (the tree under test first on the path)."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "qilin.cli", "run", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd, env=env)


def manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


@pytest.fixture(autouse=True)
def _tree_on_kernel_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kernels started by the runner import qilin from this tree."""
    monkeypatch.setenv("PYTHONPATH", str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
