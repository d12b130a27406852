"""GPU kernels behind :mod:`qilin.factors.ops` and :mod:`qilin.factors.indicators`.

The kernels are compiled by numba-cuda from the *same Python cores* as the CPU kernels of
:mod:`qilin.factors.kernels_cpu` (see :mod:`qilin.kernels.targets`): the time-series
kernels run one thread per column of the (dates, symbols) panel, thread ``j`` working on
the strided column ``x[:, j]`` (neighbouring threads read neighbouring addresses) with the
column core the CPU driver also runs; ``cs_rank`` runs one thread per date row with the row
core. Outputs and scratch buffers are allocated in the input's array namespace (CuPy on a
GPU; NumPy under numba-cuda's simulator, which is how CI runs these kernels), and numba-cuda
is imported only when a kernel is first compiled.

Examples
--------
NumPy input runs in the simulator (or is copied to a GPU and back); CuPy input stays there:

>>> from qilin.kernels.targets import simulated
>>> x = np.array([[1.0], [2.0], [np.nan], [3.0], [4.0]])
>>> if simulated() or cuda.is_available():
...     print(ts1_gpu(x, kc.TS_MEAN, 2, 0.0)[:, 0].tolist())
... else:  # neither a GPU nor the simulator: the CPU kernel gives the same numbers
...     print(kc.ts1_nb(x, kc.TS_MEAN, 2, 0.0)[:, 0].tolist())
[nan, 1.5, nan, 2.5, 3.5]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qilin.backend import array_module
from qilin.factors import kernels_cpu as kc
from qilin.factors.kernels_cpu import (
    ind_column_nb,
    pearson_row_nb,
    rank_row_nb,
    ts1_column_nb,
    ts2_column_nb,
)
from qilin.kernels.targets import cuda, gpu_kernel


# ------------------------------------------------------------------------------------------
# kernels (example arguments: the types each kernel gets at launch, for the PTX test)
# ------------------------------------------------------------------------------------------
def _panel(rows: int = 4, cols: int = 3, dtype: Any = np.float64) -> np.ndarray:
    return np.zeros((rows, cols), dtype=dtype)


def _ts1_example() -> tuple[Any, ...]:
    return (_panel(), _panel(), kc.TS_MEAN, 2, 0.0, _panel(dtype=np.int64), _panel(),
            _panel(dtype=np.int64), _panel())


@gpu_kernel(example=_ts1_example)
def _ts1_kernel(x, out, op, w, p, idx, vals, ibuf, fbuf):
    j = cuda.grid(1)
    if j < x.shape[1]:
        ts1_column_nb(x[:, j], out[:, j], op, w, p, idx[:, j], vals[:, j], ibuf[:, j],
                      fbuf[:, j])


def _ts2_example() -> tuple[Any, ...]:
    return (_panel(), _panel(), _panel(), kc.TS_CORR, 2, _panel(dtype=np.int64), _panel(),
            _panel())


@gpu_kernel(example=_ts2_example)
def _ts2_kernel(x, y, out, op, w, idx, xv, yv):
    j = cuda.grid(1)
    if j < x.shape[1]:
        ts2_column_nb(x[:, j], y[:, j], out[:, j], op, w, idx[:, j], xv[:, j], yv[:, j])


def _rank_example() -> tuple[Any, ...]:
    return _panel(), _panel(), _panel(), _panel(dtype=np.int64), _panel(dtype=np.int64), True


@gpu_kernel(example=_rank_example)
def _rank_kernel(x, out, vals, cols, order, as_fraction):
    i = cuda.grid(1)
    if i < x.shape[0]:
        rank_row_nb(x[i], out[i], vals[i], cols[i], order[i], as_fraction)


def _pearson_example() -> tuple[Any, ...]:
    return _panel(), _panel(), _panel(dtype=np.bool_), np.zeros(4)


@gpu_kernel(example=_pearson_example)
def _pearson_kernel(x, y, mask, out):
    i = cuda.grid(1)
    if i < x.shape[0]:
        out[i] = pearson_row_nb(x[i], y[i], mask[i])


def _ind_example() -> tuple[Any, ...]:
    return (_panel(), _panel(), _panel(), _panel(), _panel(), kc.IND_SMA, 2, 1, 1, 0.0,
            _panel(dtype=np.int64), _panel(), _panel(), _panel(), _panel(),
            np.zeros((3, 4, 3)))


@gpu_kernel(example=_ind_example)
def _ind_kernel(high, low, close, volume, out, op, p1, p2, p3, f, idx, hv, lv, cv, vv, tmp):
    j = cuda.grid(1)
    if j < close.shape[1]:
        ind_column_nb(high[:, j], low[:, j], close[:, j], volume[:, j], out[:, j], op, p1,
                      p2, p3, f, idx[:, j], hv[:, j], lv[:, j], cv[:, j], vv[:, j],
                      tmp[:, :, j])


# ------------------------------------------------------------------------------------------
# wrappers: same names and arguments as the CPU kernels
# ------------------------------------------------------------------------------------------
def _panel_input(xp: Any, a: Any) -> Any:
    a = xp.ascontiguousarray(a, dtype=xp.float64)
    if xp is np and not a.flags.writeable:
        # numba types read-only arrays apart (a second compile), and the simulator and
        # numba-cuda's host-array transfer both write every argument back
        a = a.copy()
    return a


def ts1_gpu(x: Any, op: int, w: int, p: float) -> Any:
    """GPU twin of :func:`qilin.factors.kernels_cpu.ts1_nb` (result C-ordered)."""
    xp = array_module(x)
    x = _panel_input(xp, x)
    n_rows, n_cols = x.shape
    n_int, n_float = kc.ts1_scratch_nb(op, w, n_rows)
    out = xp.empty((n_rows, n_cols), dtype=xp.float64)
    _ts1_kernel.launch(
        n_cols, x, out, int(op), int(w), float(p),
        xp.empty((n_rows, n_cols), dtype=xp.int64), xp.empty((n_rows, n_cols), dtype=xp.float64),
        xp.empty((n_int, n_cols), dtype=xp.int64), xp.empty((n_float, n_cols), dtype=xp.float64))
    return out


def ts2_gpu(x: Any, y: Any, op: int, w: int) -> Any:
    """GPU twin of :func:`qilin.factors.kernels_cpu.ts2_nb` (result C-ordered)."""
    xp = array_module(x, y)
    x, y = _panel_input(xp, x), _panel_input(xp, y)
    n_rows, n_cols = x.shape
    out = xp.empty((n_rows, n_cols), dtype=xp.float64)
    _ts2_kernel.launch(
        n_cols, x, y, out, int(op), int(w), xp.empty((n_rows, n_cols), dtype=xp.int64),
        xp.empty((n_rows, n_cols), dtype=xp.float64), xp.empty((n_rows, n_cols), dtype=xp.float64))
    return out


def rank_rows_gpu(x: Any, as_fraction: bool) -> Any:
    """GPU twin of :func:`qilin.factors.kernels_cpu.rank_rows_nb` (one thread per row)."""
    xp = array_module(x)
    x = _panel_input(xp, x)
    n_rows, n_cols = x.shape
    out = xp.empty((n_rows, n_cols), dtype=xp.float64)
    _rank_kernel.launch(
        n_rows, x, out, xp.empty((n_rows, n_cols), dtype=xp.float64),
        xp.empty((n_rows, n_cols), dtype=xp.int64), xp.empty((n_rows, n_cols), dtype=xp.int64),
        bool(as_fraction))
    return out


def pearson_rows_gpu(x: Any, y: Any, mask: Any) -> Any:
    """GPU twin of :func:`qilin.factors.kernels_cpu.pearson_rows_nb` (one thread per row)."""
    xp = array_module(x, y, mask)
    x, y = _panel_input(xp, x), _panel_input(xp, y)
    mask = xp.ascontiguousarray(mask, dtype=xp.bool_)
    out = xp.empty(x.shape[0], dtype=xp.float64)
    _pearson_kernel.launch(x.shape[0], x, y, mask, out)
    return out


def cs_rank_gpu(x: Any) -> Any:
    """GPU twin of :func:`qilin.factors.kernels_cpu.cs_rank_nb` (one thread per date row)."""
    return rank_rows_gpu(x, True)


def ind_gpu(high: Any, low: Any, close: Any, volume: Any, op: int, p1: int, p2: int, p3: int,
            f: float) -> Any:
    """GPU twin of :func:`qilin.factors.kernels_cpu.ind_nb` (result C-ordered)."""
    xp = array_module(high, low, close, volume)
    high, low, close, volume = (_panel_input(xp, a) for a in (high, low, close, volume))
    n_rows, n_cols = close.shape

    def scratch(dtype: Any = xp.float64) -> Any:
        return xp.empty((n_rows, n_cols), dtype=dtype)

    out = scratch()
    _ind_kernel.launch(
        n_cols, high, low, close, volume, out, int(op), int(p1), int(p2), int(p3), float(f),
        scratch(xp.int64), scratch(), scratch(), scratch(), scratch(),
        xp.empty((3, n_rows, n_cols), dtype=xp.float64))
    return out
