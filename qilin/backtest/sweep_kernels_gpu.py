"""Fused GPU sweep kernel: the CPU kernel's column cores, one thread per (combination, symbol).

The GPU runs the very Python functions the CPU kernel
(:func:`qilin.backtest.sweep_kernels_cpu.simulate_signals_nb`) compiles with numba:
:func:`~qilin.backtest.sweep_kernels_cpu._column_bits_nb` (a column's entry/exit bit words)
and :func:`~qilin.backtest.sweep_kernels_cpu._column_nb` (its account, event by event, with
the order primitives of :mod:`qilin.kernels.orders`), compiled by numba-cuda through
:mod:`qilin.kernels.targets`. What differs is only what a GPU thread cannot do like a CPU
loop, passed in or swapped as a primitive:

- scratch is allocated here, not in the kernel: each thread's bit words and
  :data:`HOLD_RUN_SLOTS` hold-run slots (the column adds its hold runs whenever the slots are
  full; the CPU has room for all of them and adds them at the end);
- each symbol's bar summary (:func:`~qilin.backtest.sweep_kernels_cpu._symbol_bars_nb`) is
  computed once per symbol by :data:`symbol_bars_kernel`, as the CPU does once per symbol and
  group;
- the columns of a combination's symbols add into its ``port[c, t]`` row and counters with
  atomic additions (``_accumulate_nb``'s GPU version), so the order of those additions,
  and so the last bits of the sums, differ from the CPU's symbol-after-symbol order (the
  tests hold them to 1e-12 relative).

Device arrays are laid out ``(dates, symbols)`` and reach the cores as transposed views, so
the lanes of a warp (consecutive symbols of one combination) read consecutive addresses.
:func:`simulate_block` takes arrays of either namespace: CuPy on a GPU, NumPy under
numba-cuda's simulator (``NUMBA_ENABLE_CUDASIM=1``, how CI runs it).

Examples
--------
>>> HOLD_RUN_SLOTS
1
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qilin.backend import array_module
from qilin.backtest.sweep_kernels_cpu import (
    RUN_FIELDS,
    _column_bits_nb,
    _column_nb,
    _has_corporate_actions_nb,
    _symbol_bars_nb,
)
from qilin.kernels.targets import cuda, gpu_kernel

#: Hold runs a GPU thread buffers before adding their returns (one: each run is added when
#: the next one starts).
HOLD_RUN_SLOTS = 1
#: Most bytes of per-column scratch (bit words and hold-run slots) one launch allocates;
#: combinations are launched in chunks below it.
SCRATCH_BYTES = 1 << 28


def _symbol_bars_example() -> tuple:
    T, N = 3, 2
    f = np.zeros((T, N)).T
    return f, f, np.zeros(N, np.bool_), np.zeros((T, N), np.int64).T, f


@gpu_kernel(example=_symbol_bars_example)
def symbol_bars_kernel(close, adj_ratio, corporate_actions, irregular, last_price):
    """Per symbol ``j`` (one thread each): whether it has corporate actions, and its
    :func:`~qilin.backtest.sweep_kernels_cpu._symbol_bars_nb` rows."""
    j = cuda.grid(1)
    if j < close.shape[0]:
        ca = _has_corporate_actions_nb(adj_ratio[j])
        corporate_actions[j] = ca
        _symbol_bars_nb(close[j], adj_ratio[j], ca, irregular[j], last_price[j])


def _columns_example() -> tuple:
    T, N, C = 3, 2, 1
    S = np.zeros((2, T, N)).transpose(0, 2, 1)
    f = np.zeros((T, N)).T
    codes = np.zeros((T, N), np.int8).T
    idx = np.zeros((C, 4, 2), np.int64)
    words = np.zeros((1, N * C), np.uint64).T
    runs = np.zeros((N * C, HOLD_RUN_SLOTS, RUN_FIELDS))
    return (S, idx, np.zeros((C, 4, 2)), 0, C, f, codes, codes, f, np.zeros(N, np.bool_),
            np.zeros((T, N), np.int64).T, f, 0, 1e6, 100.0, 0.0003, 5.0, 0.0005, 0.0005,
            np.zeros((C, T)), np.zeros((C, 5)), words, words, runs)


@gpu_kernel(example=_columns_example)
def sweep_columns_kernel(S, idx, coef, first_combo, n_combos, close, buy_reject, sell_reject,
                         adj_ratio, corporate_actions, irregular, last_price, lag, init_cash,
                         lot, commission_rate, min_commission, slip, stamp_duty, port,
                         counters, entry_bits, exit_bits, runs):
    """Column ``(first_combo + k, j)`` per thread ``k * symbols + j``: its entry/exit bits,
    then its account, added into ``port[c]`` and ``counters[c]`` (atomically)."""
    col = cuda.grid(1)
    n_symbols = close.shape[0]
    if col < n_combos * n_symbols:
        k = col // n_symbols
        j = col - k * n_symbols
        c = first_combo + k
        n_signal = max(close.shape[1] - lag, 0)  # bars with a signal (s decides s + lag)
        _column_bits_nb(S, idx, coef, c, j, 0, n_signal, entry_bits[col], exit_bits[col])
        _column_nb(j, close, buy_reject, sell_reject, adj_ratio, lag, init_cash, lot,
                   commission_rate, min_commission, slip, stamp_duty, port[c], counters[c],
                   corporate_actions[j], irregular[j], last_price[j], entry_bits[col],
                   exit_bits[col], runs[col])


def _on_device(xp: Any, a: Any) -> Any:
    """A C-contiguous array ready for a kernel: CuPy as is; NumPy (numba-cuda's simulator)
    copied once to a numba device array, so views of it stay views in the kernel."""
    return cuda.to_device(a) if xp is np else a


def _transposed_view(xp: Any, a: Any, axes: tuple[int, ...]) -> Any:
    """``a`` stored transposed by ``axes`` on the device and viewed back in ``a``'s shape."""
    return _on_device(xp, xp.ascontiguousarray(a.transpose(axes))).transpose(axes)


def simulate_block(S: Any, idx: Any, coef: Any, close: Any, buy_reject: Any, sell_reject: Any,
                   adj_ratio: Any, args: tuple, port: Any, counters: Any, group: int = 0,
                   order: Any = None) -> None:
    """The GPU counterpart of :func:`~qilin.backtest.sweep_kernels_cpu.simulate_signals_nb`
    on one symbol block: same arrays and layout (``S`` ``(K + 1, symbols, dates)`` with the
    all-zero series last, market arrays ``(symbols, dates)``), ``args`` its ``(lag,
    init_cash, lot, commission_rate, min_commission, slip, stamp_duty, t_plus_one)``.
    Accumulates into ``port`` and ``counters`` in place. ``group`` and ``order`` (the CPU's
    cache blocking) are accepted and ignored.
    """
    xp = array_module(S, close, port)
    lag, init_cash, lot, rate, min_comm, slip, stamp, _ = args
    N, T = close.shape
    C = idx.shape[0]
    swap = (1, 0)
    stack = _transposed_view(xp, xp.asarray(S, dtype=xp.float64), (0, 2, 1))
    px = _transposed_view(xp, xp.asarray(close, dtype=xp.float64), swap)
    buy = _transposed_view(xp, xp.asarray(buy_reject, dtype=xp.int8), swap)
    sell = _transposed_view(xp, xp.asarray(sell_reject, dtype=xp.int8), swap)
    ratio = _transposed_view(xp, xp.asarray(adj_ratio, dtype=xp.float64), swap)
    rules = [_on_device(xp, xp.ascontiguousarray(a)) for a in (idx, coef)]
    corporate_actions = _on_device(xp, xp.zeros(N, dtype=xp.bool_))
    irregular = _on_device(xp, xp.zeros((T, N), dtype=xp.int64)).T
    last_price = _on_device(xp, xp.zeros((T, N))).T
    symbol_bars_kernel.launch(N, px, ratio, corporate_actions, irregular, last_price)
    words = (T + 63) // 64
    per_column = 8 * (2 * words + HOLD_RUN_SLOTS * RUN_FIELDS)
    chunk = max(1, min(C, SCRATCH_BYTES // (per_column * N)))
    for first in range(0, C, chunk):
        n = min(chunk, C - first)
        entry_bits = _on_device(xp, xp.zeros((words, n * N), dtype=xp.uint64)).T
        exit_bits = _on_device(xp, xp.zeros((words, n * N), dtype=xp.uint64)).T
        runs = _on_device(xp, xp.zeros((n * N, HOLD_RUN_SLOTS, RUN_FIELDS)))
        sweep_columns_kernel.launch(
            n * N, stack, *rules, first, n, px, buy, sell, ratio, corporate_actions,
            irregular, last_price, int(lag), float(init_cash), float(lot), float(rate),
            float(min_comm), float(slip), float(stamp), port, counters, entry_bits, exit_bits,
            runs)
