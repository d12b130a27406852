"""`qilin info` through qilin.info, qilin.cli.main and a real `qilin` subprocess."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import dask
import distributed
import numpy as np
import pandas as pd
import pytest

import qilin
from qilin.cli import COMMAND_MODULES, _info, main
from qilin.info import NOT_INSTALLED, PACKAGES, collect_info, package_version

REPO = Path(__file__).resolve().parents[2]
QILIN = Path(sys.executable).with_name("qilin")


def _missing_command_modules() -> list[str]:
    return [m for m in COMMAND_MODULES if importlib.util.find_spec(m) is None]


needs_all_commands = pytest.mark.skipif(
    bool(_missing_command_modules()),
    reason=f"command modules not written yet: {_missing_command_modules()}",
)


def test_collect_info_reports_versions_backend_and_profiles(monkeypatch):
    monkeypatch.delenv("QILIN_CLUSTER__MODE", raising=False)
    monkeypatch.setenv("QILIN_MARKET__NAME", "us")
    info = collect_info(cluster="threads")
    assert info["qilin"] == qilin.__version__
    assert info["python"] == platform.python_version()
    assert set(info["packages"]) == set(PACKAGES)
    assert info["packages"]["numpy"] == np.__version__
    assert info["packages"]["pandas"] == pd.__version__
    assert info["packages"]["dask"] == dask.__version__
    assert info["packages"]["distributed"] == distributed.__version__
    for name in ("cupy", "dask_cuda", "cudf", "cuml"):
        if importlib.util.find_spec(name) is None:
            assert info["packages"][name] == NOT_INSTALLED
    assert info["cluster"]["mode"] == "threads" and info["cluster"]["n_workers"] == 1
    assert info["cluster"]["tls"] == "disabled"
    assert info["market"] == "us"
    assert info["config_dir"] == str(REPO / "configs")
    from qilin.backend import get_backend, gpu_count

    assert info["backend"] == get_backend("auto").describe()
    assert info["gpus"]["count"] == gpu_count() == len(info["gpus"]["names"])
    json.dumps(info)  # serialisable as is


def test_package_version_reads_metadata_without_importing():
    assert package_version("pyarrow") == __import__("pyarrow").__version__
    assert package_version("no-such-dist-qilin") == NOT_INSTALLED


def test_info_handler_prints_json(capsys):
    assert _info(argparse.Namespace(cluster="remote", json=True)) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["cluster"]["mode"] == "remote" and out["cluster"]["timeout_s"] == 10.0


def test_info_handler_prints_indented_text(capsys):
    assert _info(argparse.Namespace(cluster="local", json=False)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"qilin: {qilin.__version__}" in lines
    assert "cluster:" in lines and "  mode: local" in lines and "  threads_per_worker: 1" in lines
    assert f"  numpy: {np.__version__}" in lines


@needs_all_commands
def test_main_info_json(capsys):
    assert main(["info", "--json", "--cluster", "threads"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["cluster"]["mode"] == "threads" and out["qilin"] == qilin.__version__


@needs_all_commands
def test_main_unknown_profile_is_one_line_and_exit_2(capsys):
    assert main(["info", "--cluster", "mars"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("qilin: error: unknown cluster profile 'mars'")


@needs_all_commands
def test_qilin_info_subprocess_json():
    env = {k: v for k, v in os.environ.items() if not k.startswith("QILIN_")}
    env["QILIN_CLUSTER__N_WORKERS"] = "3"
    proc = subprocess.run([str(QILIN), "info", "--json", "--cluster", "local"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["cluster"]["mode"] == "local" and out["cluster"]["n_workers"] == 3
    assert out["packages"]["numpy"] == np.__version__
    assert out["python"] == platform.python_version()



@needs_all_commands
def test_main_bad_env_value_is_one_line_naming_the_variable(capsys, monkeypatch):
    monkeypatch.setenv("QILIN_CLUSTER__N_WORKERS", "many")
    assert main(["info"]) == 2
    assert capsys.readouterr().err.strip() == (
        "qilin: error: environment variable QILIN_CLUSTER__N_WORKERS='many': config key "
        "'cluster.n_workers' expects int | None")
