"""The ``gpu`` extra resolves from the package index alone, to one RAPIDS line, and the
versions it shares with the CPU stack are the ones ``make test-gpu-line`` tests under.

Resolution is a real ``pip install --dry-run --report`` against the index (no download of
the large wheels, no install), so a stub package or a version conflict fails here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RAPIDS = ("cudf-cu12", "dask-cudf-cu12", "cuml-cu12", "dask-cuda")


def _constraints() -> dict[str, str]:
    text = (REPO / "ci" / "gpu-line-constraints.txt").read_text()
    pins = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", text, flags=re.M)
    return {name.lower(): version for name, version in pins}


def _gpu_extra() -> list[str]:
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    return meta["project"]["optional-dependencies"]["gpu"]


def test_the_extra_pins_one_rapids_line() -> None:
    extra = _gpu_extra()
    lines = {re.search(r"==(\d+\.\d+)\.\*", r).group(1) for r in extra
             if r.split("=")[0] in RAPIDS}
    assert len(lines) == 1, extra
    assert {r.split("=")[0] for r in extra} >= set(RAPIDS)


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    report = tmp_path_factory.mktemp("gpu") / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
           "--quiet", "--report", str(report), *_gpu_extra(), "xgboost"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if res.returncode != 0:
        offline = re.search(r"(Network is unreachable|Temporary failure in name resolution|"
                            r"No matching distribution found for (?!cu))", res.stderr)
        if offline and not os.environ.get("CI"):
            pytest.skip("the package index is not reachable from here")
        pytest.fail(f"the gpu extra does not resolve:\n{res.stderr[-3000:]}")
    installs = json.loads(report.read_text())["install"]
    return {i["metadata"]["name"].lower(): i for i in installs}


def test_the_extra_resolves_from_the_index_to_real_wheels(resolved: dict[str, dict]) -> None:
    for name in (*RAPIDS, "cupy-cuda12x", "numba-cuda", "nvidia-ml-py"):
        assert name in resolved, f"{name} not resolved"
    line = next(r for r in _gpu_extra() if r.startswith("cudf-cu12")).split("==")[1][:-2]
    for name in RAPIDS:
        item = resolved[name]
        assert item["metadata"]["version"].startswith(line + "."), item["metadata"]["version"]
        url = item["download_info"]["url"]
        assert url.endswith(".whl"), f"{name} resolves to a source package (a stub?): {url}"


def test_shared_versions_match_the_gpu_line_constraints(resolved: dict[str, dict]) -> None:
    for name, version in _constraints().items():
        assert resolved[name]["metadata"]["version"] == version, (
            f"the gpu extra now resolves {name} {resolved[name]['metadata']['version']}; "
            f"ci/gpu-line-constraints.txt says {version}")
