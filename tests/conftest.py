"""Shared fixtures: the real data in ../shared/data (skipped when absent) and small panels."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


def _real_gpu() -> bool:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        return subprocess.run([smi, "-L"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


# Without a GPU the numba-cuda kernels execute in numba-cuda's CPU simulator, so every GPU
# kernel runs in CI (tests/kernels, tests/*/test_*_gpu_kernels.py); set before numba loads.
if not _real_gpu():
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("QILIN_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_file(name: str) -> Path:
    """Path of a real data file, skipping the test with a reason when it is absent."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"real data file {path} is absent (the project never copies it in)")
    return path


@pytest.fixture(scope="session")
def sp500_path() -> Path:
    return shared_file("us_sp500_2013_2018.parquet")


@pytest.fixture(scope="session")
def sp500_dirty_path() -> Path:
    return shared_file("us_sp500_dirty_2012_2017.parquet")


@pytest.fixture(scope="session")
def ashare_path() -> Path:
    return shared_file("cn_ashare_500_2016_2021.parquet")


@pytest.fixture(scope="session")
def sse_index_path() -> Path:
    return shared_file("cn_index_sse_2006_2020.parquet")


def gpu_or_skip() -> None:
    """Skip unless CuPy and a CUDA device are usable."""
    from qilin.backend import gpu_available

    if not gpu_available():
        pytest.skip("no usable GPU (CuPy + CUDA device); GPU paths run on a GPU machine")


@pytest.fixture
def gpu() -> None:
    gpu_or_skip()
