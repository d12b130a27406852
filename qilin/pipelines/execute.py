"""Run one pipeline step's notebook with papermill (``python -m qilin.pipelines.execute``).

``qilin run`` starts this in its own process (and process group) per step, so steps run in
separate kernels and working folders, a step can be stopped on timeout or Ctrl-C without
touching the others, and a dead kernel ends the step instead of the run. On failure it
writes ``step_error.json`` (cell, exception name and message) into the working folder and
exits 1.

Examples
--------
>>> describe_error(ValueError("boom"))["ename"]
'ValueError'
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

ERROR_FILE = "step_error.json"


def describe_error(exc: BaseException) -> dict[str, Any]:
    """``ename``, ``evalue`` and, for a failing cell, its number and first source line."""
    out: dict[str, Any] = {"ename": getattr(exc, "ename", type(exc).__name__),
                           "evalue": str(getattr(exc, "evalue", exc)).strip()}
    if hasattr(exc, "exec_count"):
        out["cell"] = exc.exec_count
        out["cell_index"] = getattr(exc, "cell_index", None)
        source = str(getattr(exc, "source", "") or "")
        out["source"] = next((ln for ln in source.splitlines() if ln.strip()), "")
    return out


def source_cell_number(executed: Path, cell_index: int) -> int:
    """1-based number of the failing cell in the *source* notebook (papermill's injected
    parameters cell does not count)."""
    try:
        cells = json.loads(executed.read_text())["cells"]
    except (OSError, ValueError, KeyError):
        return cell_index + 1
    injected = [i for i, c in enumerate(cells)
                if "injected-parameters" in c.get("metadata", {}).get("tags", [])]
    return cell_index + 1 - sum(1 for i in injected if i < cell_index)


def _stop(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str]) -> int:
    """``execute.py NOTEBOOK OUTPUT PARAMS_JSON KERNEL``; cwd is the step's working folder."""
    import papermill as pm

    notebook, output, params_file, kernel = argv
    signal.signal(signal.SIGTERM, _stop)
    params = json.loads(Path(params_file).read_text())
    try:
        pm.execute_notebook(notebook, output, parameters=params, kernel_name=kernel,
                            cwd=".", progress_bar=False, log_output=False)
    except BaseException as exc:  # the notebook's error, a dead kernel, a timeout signal
        error = describe_error(exc)
        if error.get("cell_index") is not None:
            error["cell"] = source_cell_number(Path(output), error["cell_index"])
        Path(ERROR_FILE).write_text(json.dumps(error))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
