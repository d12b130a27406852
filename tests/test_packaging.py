"""The wheel carries every package and the configs, and an installed qilin finds them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _declared() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_declared_packages_are_the_packages_in_the_tree():
    in_tree = {".".join(p.parent.relative_to(REPO).parts)
               for p in (REPO / "qilin").rglob("__init__.py")}
    declared = set(_declared()["packages"])
    configs = {"qilin.configs"} | {f"qilin.configs.{p.name}"
                                   for p in (REPO / "configs").iterdir() if p.is_dir()}
    assert declared - configs == in_tree
    assert configs <= declared
    assert _declared()["package-dir"] == {"qilin.configs": "configs"}


def test_wheel_ships_configs_and_installed_code_reads_them(tmp_path):
    # build from a copy of the sources, so that no build/ folder is left in the checkout
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "runs", "__pycache__", ".*cache*",
        ".hypothesis"))
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(tmp_path / "dist"), str(src)],
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    [wheel] = (tmp_path / "dist").glob("qilin-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        zf.extractall(tmp_path / "site")
    shipped = {str(p.relative_to(REPO / "configs")) for p in (REPO / "configs").rglob("*")
               if p.is_file()}
    assert {f"qilin/configs/{n}" for n in shipped} <= names
    assert any(n.endswith("LICENSE") for n in names)
    # the unpacked wheel, run from elsewhere, loads its own configs (no source checkout)
    env = {k: v for k, v in os.environ.items() if k != "QILIN_CONFIG_DIR"}
    env["PYTHONPATH"] = str(tmp_path / "site")
    code = ("from qilin.config import config_dir, load_config, load_market; "
            "print(config_dir()); print(load_config().cluster.mode); "
            "print(load_market('cn').lot_size)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, env=env, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    where, mode, lot = run.stdout.split()
    assert Path(where) == tmp_path / "site" / "qilin" / "configs"
    assert mode and float(lot) == 100
