"""One Python source compiled for the CPU (numba) and the GPU (numba-cuda).

Without a GPU the GPU side runs in numba-cuda's simulator (tests/conftest.py); the PTX test
compiles every GPU kernel of the package for a real compute capability in a child process
without the simulator, so a construct the CUDA compiler rejects fails here.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from qilin.kernels import core, cuda, gpu_kernel
from qilin.kernels.targets import KERNELS, device, kernels_runnable, rebind

pytestmark = pytest.mark.skipif(not kernels_runnable(),
                                reason="GPU kernels need numba-cuda's simulator or a CUDA GPU")

TAG = 7.0


@core
def _step_core(a, b):
    return a + b * TAG


def _which_gpu():
    return 1


@core(gpu=_which_gpu)
def _which_core():
    return 0


@core
def _column_sum_core(x, out, target, j):
    s = 0.0
    for t in range(x.shape[0]):
        v = x[t, j]
        if math.isfinite(v):
            s = _step_core(s, v)
        out[t, j] = s
    target[j] = _which_core()


def example_args():
    x = np.zeros((4, 3))
    return x, x.copy(), np.zeros(3, np.int64)


@gpu_kernel(example=example_args)
def _column_sum_kernel(x, out, target):
    j = cuda.grid(1)
    if j < x.shape[1]:
        _column_sum_core(x, out, target, j)


def test_same_source_runs_on_both_targets_and_primitives_switch():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 300))  # three blocks of 128 threads, the last one partial
    x[5, 7] = np.nan
    cpu, cpu_target = np.empty_like(x), np.full(x.shape[1], -1)
    for j in range(x.shape[1]):
        _column_sum_core(x, cpu, cpu_target, j)
    gpu, gpu_target = np.full_like(x, np.nan), np.full(x.shape[1], -1)
    _column_sum_kernel.launch(x.shape[1], x, gpu, gpu_target)
    assert np.array_equal(gpu, cpu)  # same arithmetic: bit-identical
    assert (cpu_target == 0).all() and (gpu_target == 1).all()  # the primitive switched
    assert cpu[-1, 0] == pytest.approx(np.nansum(x[:, 0]) * TAG)


def test_rebind_replaces_dispatchers_and_keeps_constants():
    seen = []
    fn = rebind(_column_sum_core, lambda py: seen.append(py.__name__) or py)
    assert sorted(seen) == ["_step_core", "_which_core"]
    assert fn.__globals__["TAG"] == TAG and fn.__globals__["math"] is math
    assert _column_sum_core.py_func.__globals__["_step_core"] is _step_core  # untouched
    assert device(_step_core) is device(_step_core.py_func)  # compiled once


def test_every_gpu_kernel_compiles_to_ptx_without_a_driver():
    script = textwrap.dedent("""
        import importlib, pkgutil, sys
        import qilin
        for m in pkgutil.walk_packages(qilin.__path__, "qilin."):
            if not m.name.startswith(("qilin.cli", "qilin.pipelines", "qilin.reports")):
                importlib.import_module(m.name)
        sys.path.insert(0, sys.argv[1])
        import test_targets  # noqa: F401  (this file's own kernel)
        from qilin.kernels.targets import KERNELS
        for k in KERNELS:
            ptx = k.ptx()
            assert ".target sm_90" in ptx and ".entry" in ptx, k.name
            print("ptx", k.name, len(ptx))
    """)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    done = subprocess.run([sys.executable, "-c", script, os.path.dirname(__file__)],
                          capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    compiled = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("ptx ")]
    assert "_column_sum_kernel" in compiled


def test_a_kernel_without_example_arguments_cannot_hide_from_the_ptx_test():
    def _bare_kernel(x):
        pass

    bare = gpu_kernel(_bare_kernel)
    try:
        with pytest.raises(TypeError, match="declares no example arguments"):
            bare.ptx()
    finally:
        KERNELS.remove(bare)
