"""Fused GPU (CuPy RawKernel) sweep kernel: one CUDA thread per (combination, symbol) column.

The same pinned signal-mode semantics as :func:`qilin.backtest.sweep_kernels_cpu
.simulate_signals_nb`, compiled with ``--fmad=false`` so that sizing and cost arithmetic
round like the CPU kernel. Each thread keeps its column's state (cash, quantity, desired
state, counters) in registers and walks the dates; per date a warp shuffle sums the 32
columns' equity changes and one lane adds them into the combination's ``port[c, t]`` row, so
nothing of size dates x symbols x combinations is ever stored. Device arrays are laid out
``(dates, symbols)`` so that the lanes of a warp read consecutive addresses.

CuPy is imported lazily: importing this module needs no GPU.

Examples
--------
>>> KERNEL_NAME
'simulate_signals'
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from qilin.backtest.costs import AFFORDABLE_BUY_CUDA
from qilin.backtest.strategies import compute_series

KERNEL_NAME = "simulate_signals"
THREADS_PER_BLOCK = 128

_SOURCE = AFFORDABLE_BUY_CUDA + r"""
#ifndef WARP_SUM
#define WARP_SUM(x) for (int off = 16; off > 0; off >>= 1) \
    x += __shfl_down_sync(0xffffffffu, x, off)
#define LANE_ZERO ((threadIdx.x & 31) == 0)
#endif
extern "C" __global__ void simulate_signals(
    const double* __restrict__ S, const long long* __restrict__ idx,
    const double* __restrict__ coef, const double* __restrict__ close,
    const unsigned char* __restrict__ can_buy, const unsigned char* __restrict__ can_sell,
    const double* __restrict__ adj_ratio, const int T, const int N, const int lag,
    const double init_cash, const double lot, const double cr, const double min_comm,
    const double slip, const double stamp, const int t_plus_one,
    double* __restrict__ port, double* __restrict__ counters)
{
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    const int c = blockIdx.y;
    const bool active = j < N;
    const int jj = active ? j : 0;
    const long long TN = (long long)T * N;
    const double* B[4];
    const double* K[4];
    double M[4], A[4];
    for (int s = 0; s < 4; ++s) {
        long long b = idx[(c * 4 + s) * 2];
        long long k = idx[(c * 4 + s) * 2 + 1];
        B[s] = b >= 0 ? S + b * TN : (const double*)0;
        K[s] = k >= 0 ? S + k * TN : (const double*)0;
        M[s] = coef[(c * 4 + s) * 2];
        A[s] = coef[(c * 4 + s) * 2 + 1];
    }
    double cash = init_cash, qty = 0.0, last_close = nan(""), prev_inv = 1.0 / init_cash;
    double prev_eq = init_cash;
    double bought = 0.0, sold = 0.0, n_trades = 0.0, n_wins = 0.0, n_closed = 0.0;
    double turnover = 0.0, exposure = 0.0;
    const double eps = 1e-9;
    bool desired = false, pending = false;
    for (int t = 0; t < T; ++t) {
        const long long o = (long long)t * N + jj;
        if (qty != 0.0) qty *= adj_ratio[o];
        const int s = t - lag;
        if (s >= 0) {
            const long long os = (long long)s * N + jj;
            double v[4];
            for (int q = 0; q < 4; ++q) {
                double x = A[q];
                if (B[q]) x += B[q][os];
                if (K[q]) x += M[q] * K[q][os];
                v[q] = x;
            }
            const bool entry = v[0] > v[1];
            const bool ex = v[2] > v[3];
            if (entry != ex && entry != desired) {
                desired = entry;
                pending = true;
            }
        }
        const double p = close[o];
        if (pending && p == p && p > 0.0) {
            const double eq = cash + qty * p;
            const double buy_px = p * (1.0 + slip);
            double tq = 0.0;
            if (desired && eq > 0.0) tq = floor(eq / (buy_px * (1.0 + cr)) / lot) * lot;
            if (tq > qty + eps) {
                if (can_buy[o]) {
                    double dq = floor((tq - qty) / lot + eps) * lot;
                    if (!(dq <= QILIN_MAX_EXACT)) {
                        // beyond float precision: rejected (the order waits), as the engine
                    } else if (dq <= 0.0) {
                        pending = false;
                    } else {
                        QILIN_AFFORDABLE_BUY(dq, buy_px, cash, lot, cr, min_comm);
                        if (dq > 0.0) {
                            const double notional = dq * buy_px;
                            const double fee = fmax(cr * notional, min_comm);
                            cash -= notional + fee;
                            qty += dq;
                            pending = false;
                            bought += notional + fee;
                            n_trades += 1.0;
                            turnover += notional * prev_inv;
                        }
                    }
                }
            } else if (tq < qty - eps) {
                if (can_sell[o]) {
                    const double dq = tq <= 0.0 ? qty : floor((qty - tq) / lot + eps) * lot;
                    if (dq <= 0.0) {
                        pending = false;
                    } else {
                        const double notional = dq * (p * (1.0 - slip));
                        const double fee = fmax(cr * notional, min_comm) + stamp * notional;
                        cash += notional - fee;
                        qty -= dq;
                        if (qty < eps) qty = 0.0;
                        pending = false;
                        sold += notional - fee;
                        n_trades += 1.0;
                        turnover += notional * prev_inv;
                        if (qty == 0.0) {
                            n_closed += 1.0;
                            if (sold > bought) n_wins += 1.0;
                            sold = 0.0;
                            bought = 0.0;
                        }
                    }
                }
            } else {
                pending = false;
            }
        }
        if (p == p) last_close = p;
        const double held = qty != 0.0 ? qty * last_close : 0.0;
        const double equity = cash + held;
        const double inv = equity > 0.0 ? 1.0 / equity : 0.0;
        exposure += held * inv;
        double r = active ? equity - prev_eq : 0.0;  // change of the combined equity
        prev_inv = inv;
        prev_eq = equity;
        WARP_SUM(r);
        if (LANE_ZERO && r != 0.0) atomicAdd(&port[(long long)c * T + t], r);
    }
    double cnt[5] = {n_trades, n_wins, n_closed, turnover, exposure};
    for (int q = 0; q < 5; ++q) {
        double x = active ? cnt[q] : 0.0;
        WARP_SUM(x);
        if (LANE_ZERO && x != 0.0) atomicAdd(&counters[c * 5 + q], x);
    }
}
"""


@functools.cache
def _kernel() -> Any:
    import cupy as cp  # type: ignore[import-not-found]

    return cp.RawKernel(_SOURCE, KERNEL_NAME, options=("--fmad=false",))


def launch(S: Any, idx: Any, coef: Any, close: Any, can_buy: Any, can_sell: Any,
           adj_ratio: Any, args: tuple, port: Any, counters: Any) -> None:
    """Launch the fused kernel on device arrays laid out ``(K, dates, symbols)``/``(dates,
    symbols)``; ``args`` as for the CPU kernel (lag ... t_plus_one). Accumulates in place."""
    lag, init_cash, lot, cr, min_comm, slip, stamp, t1 = args
    T, N = close.shape
    C = idx.shape[0]
    grid = ((N + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK, C)
    _kernel()(grid, (THREADS_PER_BLOCK,), (
        S, idx, coef, close, can_buy, can_sell, adj_ratio, np.int32(T), np.int32(N),
        np.int32(lag), np.float64(init_cash), np.float64(lot), np.float64(cr),
        np.float64(min_comm), np.float64(slip), np.float64(stamp), np.int32(bool(t1)),
        port, counters,
    ))


def _to_device(a: np.ndarray, sl: slice, dtype: Any) -> Any:
    """Rows ``sl`` of a host ``(symbols, dates)`` array as a device ``(dates, symbols)``."""
    import cupy as cp

    return cp.ascontiguousarray(cp.asarray(np.ascontiguousarray(a[sl].T), dtype=dtype))


def simulate_signals_gpu(m: Any, keys: list, idx: np.ndarray, coef: np.ndarray, args: tuple,
                         block: int) -> tuple[np.ndarray, np.ndarray]:
    """Run a parameter tile on the GPU, symbol block by symbol block.

    Indicator series are computed on the host once per distinct key and block (numba) and
    copied to the device; returns host ``port (C, T)`` and ``counters (C, 5)``.
    """
    import cupy as cp

    N, T = m.shape
    C = idx.shape[0]
    port = cp.zeros((C, T))
    counters = cp.zeros((C, 5))
    d_idx = cp.asarray(idx, dtype=cp.int64)
    d_coef = cp.asarray(coef, dtype=cp.float64)
    for lo in range(0, N, block):
        sl = slice(lo, min(N, lo + block))
        px = np.ascontiguousarray(m.signal_px[sl])
        S = cp.empty((max(1, len(keys)), T, sl.stop - lo))
        for k, key in enumerate(keys):
            S[k] = cp.asarray(np.ascontiguousarray(compute_series(key, px).T))
        launch(S, d_idx, d_coef, _to_device(m.close, sl, cp.float64),
               _to_device(m.can_buy, sl, cp.uint8), _to_device(m.can_sell, sl, cp.uint8),
               _to_device(m.adj_ratio, sl, cp.float64), args, port, counters)
    cp.cuda.Stream.null.synchronize()
    return port.get(), counters.get()
