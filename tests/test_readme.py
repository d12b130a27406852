"""The README's quickstart and command lines work exactly as written."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    """Contents of the fenced code blocks whose info string is ``lang``."""
    blocks, current, info = [], None, ""
    for line in README.splitlines():
        if line.startswith("```"):
            if current is None:
                current, info = [], line[3:].strip()
            else:
                if info == lang:
                    blocks.append("\n".join(current) + "\n")
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def test_readme_opens_with_the_two_commands() -> None:
    first_block = README.split("```")[1]
    lines = [ln.split("#")[0].strip() for ln in first_block.strip().splitlines()]
    assert lines == ["make run", "make test"]


def test_quickstart_runs_as_a_script_exactly_as_written(tmp_path: Path) -> None:
    (code,) = _blocks("python")
    assert 'if __name__ == "__main__":' in code
    script = tmp_path / "quickstart.py"
    script.write_text(code)
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=400, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "rank_ic_mean" in res.stdout


def test_quickstart_runs_in_a_notebook(tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    papermill = pytest.importorskip("papermill")
    (code,) = _blocks("python")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(code)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    src, out = tmp_path / "quickstart.ipynb", tmp_path / "quickstart.out.ipynb"
    nbformat.write(nb, src)
    papermill.execute_notebook(str(src), str(out), kernel_name="python3", cwd=str(tmp_path),
                               progress_bar=False, execution_timeout=400)
    done = nbformat.read(out, as_version=4)
    text = "".join(o.get("text", "") for o in done.cells[0].outputs)
    assert "rank_ic_mean" in text


def test_command_lines_run_as_written(tmp_path: Path) -> None:
    block = next(b for b in _blocks("") if b.lstrip().startswith("qilin info"))
    bindir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}
    for line in block.strip().splitlines():
        command = line.split("#")[0].strip()
        argv = shlex.split(command)
        if argv[:2] == ["qilin", "run"]:  # the main job at a test's size, from the checkout
            argv[2] = str(REPO / argv[2])
            argv += ["-p", "n_symbols=30", "-p", "n_days=260", "-p", "factors=research",
                     "-p", "horizons=[1, 5]", "-p", "train=120", "-p", "valid=20",
                     "-p", "test=40", "-p", "n_estimators=30",
                     "-p", "grid=fast=5,10 slow=20,40", "--runs-dir", str(tmp_path / "runs")]
        res = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                             env=env)
        assert res.returncode == 0, f"{command}\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    for produced in ("bars.parquet", "factors.parquet", "report.json", "bt/metrics.json",
                     "scores.parquet", "models/a158_xgb",
                     "sweep.parquet", "alerts.jsonl"):
        assert (tmp_path / produced).exists(), produced


@pytest.mark.parametrize("doc", sorted(p.name for p in (REPO / "docs").glob("*.md")))
def test_docs_links_resolve(doc: str) -> None:
    text = (REPO / "docs" / doc).read_text()
    for target in re.findall(r"\]\(([^)#:]+\.md)\)", text):
        assert (REPO / "docs" / target).exists(), f"{doc} links to missing {target}"
