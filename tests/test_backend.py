"""Array backend selection, CPU fallback, device dispatch and host transfers."""

from __future__ import annotations

import logging
import os
import types

import numpy as np
import pytest

from qilin import backend as be
from qilin.backend import (
    CPU,
    Backend,
    DeviceKernel,
    array_module,
    backend_of,
    get_backend,
    gpu_available,
    gpu_count,
    gpu_names,
    is_gpu_array,
    to_host,
)
from qilin.errors import BackendError

FALLBACK_MESSAGE = "qilin backend 'auto': no usable GPU (CuPy/CUDA), running on CPU"


class FakeCupyArray:
    """Looks like a CuPy array to the type check (its class lives in a ``cupy`` module)."""

    __module__ = "cupy._core.core"

    def __init__(self, data):
        self.data = np.asarray(data)
        self.shape = self.data.shape

    def get(self):
        return self.data


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(be, "_cupy", lambda: None)
    monkeypatch.setattr(be, "_fallback_reported", False)


@pytest.fixture
def fake_gpu(monkeypatch):
    """A stand-in CuPy module so that the GPU dispatch paths run on a CPU machine."""
    fake = types.ModuleType("cupy")
    fake.asarray = lambda x, dtype=None: FakeCupyArray(np.asarray(x, dtype=dtype))
    monkeypatch.setattr(be, "_cupy", lambda: fake)
    return fake


def test_cpu_backend_is_numpy():
    b = get_backend("cpu")
    assert b is CPU and b.xp is np and not b.is_gpu
    assert b.describe() == f"cpu (NumPy {np.__version__})"
    x = b.asarray([1, 2, 3], dtype=np.float32)
    assert isinstance(x, np.ndarray) and x.dtype == np.float32
    b.synchronize()  # a no-op on CPU


def test_backend_instance_passes_through():
    custom = Backend("cpu", np)
    assert get_backend(custom) is custom


@pytest.mark.parametrize("name", ["tpu", "GPU", "", "numpy"])
def test_unknown_backend_names_are_rejected(name):
    with pytest.raises(BackendError, match=f"unknown backend {name!r}: expected one of "
                                           "auto, cpu, gpu"):
        get_backend(name)  # type: ignore[arg-type]


def test_gpu_without_gpu_raises_backend_error(no_gpu):
    with pytest.raises(BackendError, match="backend 'gpu' was requested but no GPU is usable"):
        get_backend("gpu")


def test_gpu_request_on_this_machine_is_never_a_silent_fallback():
    if gpu_available():  # pragma: no cover - GPU machines
        assert get_backend("gpu").is_gpu
    else:
        with pytest.raises(BackendError):
            get_backend("gpu")


def test_auto_falls_back_to_cpu_and_logs_once(no_gpu, caplog):
    caplog.set_level(logging.INFO, logger="qilin.backend")
    assert get_backend("auto") is CPU
    assert get_backend("auto") is CPU
    assert get_backend() is CPU
    messages = [r.getMessage() for r in caplog.records if r.name == "qilin.backend"]
    assert messages == [FALLBACK_MESSAGE]


def test_none_reads_qilin_backend_env(no_gpu, monkeypatch):
    monkeypatch.setenv("QILIN_BACKEND", "cpu")
    assert get_backend(None) is CPU
    monkeypatch.setenv("QILIN_BACKEND", "gpu")
    with pytest.raises(BackendError, match="no GPU is usable"):
        get_backend(None)
    monkeypatch.delenv("QILIN_BACKEND")
    assert get_backend(None) is CPU  # auto


def test_auto_picks_the_gpu_when_usable(fake_gpu):
    b = get_backend("auto")
    assert b.is_gpu and b.xp is fake_gpu
    assert get_backend("gpu").xp is fake_gpu


def test_gpu_detection_without_cupy(no_gpu):
    assert gpu_available() is False and gpu_count() == 0 and gpu_names() == []


def test_array_module_and_backend_of():
    a = np.zeros(3)
    assert array_module(a) is np and array_module(a, 1.0, None) is np and array_module() is np
    assert backend_of(a) is CPU
    assert not is_gpu_array(a) and is_gpu_array(FakeCupyArray([1]))


def test_array_module_rejects_mixed_devices(fake_gpu):
    with pytest.raises(BackendError, match="arrays on different devices"):
        array_module(np.zeros(2), FakeCupyArray([1, 2]))
    assert array_module(FakeCupyArray([1])) is fake_gpu
    assert backend_of(FakeCupyArray([1])).is_gpu


def test_cupy_array_without_cupy_is_an_error(no_gpu):
    with pytest.raises(BackendError, match="received a CuPy array but CuPy is not usable"):
        array_module(FakeCupyArray([1]))


def test_to_host_copies_device_arrays():
    assert to_host(FakeCupyArray([1.5, 2.5])).tolist() == [1.5, 2.5]
    a = np.arange(3)
    assert to_host(a) is a
    assert to_host(3.0).shape == ()
    assert CPU.asarray(FakeCupyArray([4, 5])).tolist() == [4, 5]


def test_device_kernel_dispatches_on_array_type(fake_gpu):
    kernel = DeviceKernel("double", cpu=lambda a, scale=2: ("cpu", a * scale),
                          gpu=lambda a, scale=2: ("gpu", a.data * scale))
    assert kernel(np.arange(3))[0] == "cpu"
    device, values = kernel(FakeCupyArray([1, 2]))
    assert device == "gpu" and values.tolist() == [2, 4]
    # arrays given by keyword count too
    assert kernel(a=FakeCupyArray([1]))[0] == "gpu"
    assert kernel(a=np.arange(2))[0] == "cpu"


def test_device_kernel_without_gpu_implementation(fake_gpu):
    kernel = DeviceKernel("cpu_only", cpu=lambda a: a)
    with pytest.raises(BackendError, match="kernel 'cpu_only' has no GPU implementation"):
        kernel(FakeCupyArray([1]))


def test_real_gpu_backend_round_trip(gpu):
    import cupy

    b = get_backend("gpu")
    assert b.is_gpu and b.xp is cupy and gpu_count() >= 1 and gpu_names()
    x = b.asarray(np.arange(5.0))
    assert isinstance(x, cupy.ndarray) and array_module(x) is cupy
    assert b.to_host(x * 2).tolist() == [0.0, 2.0, 4.0, 6.0, 8.0]
    b.synchronize()
    assert b.describe().startswith(f"gpu (CuPy {cupy.__version__}, ")
    assert get_backend("auto").is_gpu


def _kernel_threads_in_task() -> tuple[bool, int]:
    import numba

    from qilin.backend import in_dask_worker, task_numba_threads

    with task_numba_threads():
        return in_dask_worker(), numba.get_num_threads()


def test_cluster_tasks_run_kernels_single_threaded():
    import numba
    from distributed import Client, LocalCluster

    from qilin.backend import in_dask_worker

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        assert client.submit(_kernel_threads_in_task).result(timeout=60) == (True, 1)
    assert not in_dask_worker()
    assert _kernel_threads_in_task() == (False, numba.get_num_threads())


_LATE_ENV_SCRIPT = """
import os
import numba
import numpy as np
from qilin.backend import numba_threads

@numba.njit(parallel=True)
def first(x):
    s = 0.0
    for i in numba.prange(x.size):
        s += x[i]
    return s

first(np.ones(8))                                 # the pool starts with every core
os.environ["NUMBA_NUM_THREADS"] = "1"             # what a Dask worker's env= does later

@numba.njit(parallel=True)
def second(x):
    s = 0.0
    for i in numba.prange(x.size):
        s += 2.0 * x[i]
    return s

with numba_threads(1):
    print(second(np.ones(8)))
"""


def test_kernels_compile_after_the_thread_env_changed_under_a_started_pool(tmp_path):
    """bench_w3 on a cold cache: a worker given NUMBA_NUM_THREADS=1 after numba started."""
    import subprocess
    import sys

    script = tmp_path / "late_env.py"
    script.write_text(_LATE_ENV_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_NUM_THREADS"}
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "16.0"


def test_a_thread_env_set_before_the_pool_starts_is_honoured(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "early_env.py"
    script.write_text(
        "import os, numba\n"
        "from qilin.backend import numba_threads\n"
        "os.environ['NUMBA_NUM_THREADS'] = '1'\n"
        "with numba_threads(None):\n"
        "    print(numba.config.NUMBA_NUM_THREADS, numba.get_num_threads())\n")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_NUM_THREADS"}
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["1", "1"]
