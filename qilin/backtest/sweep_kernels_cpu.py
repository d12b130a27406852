"""Fused kernels for parameter sweeps: indicators, signal-mode simulation, metrics.

The sweep never materialises a dates x symbols x parameters array. Indicator series are
computed once per distinct window (``K`` series, each symbols x dates) and the fused kernel
walks every (combination, symbol) column through time with its state in local variables,
adding the column's daily equity change into one ``(combinations, dates)`` accumulator row
(the combination's combined account: the sum of its symbols' sub-accounts, as
``BacktestResult`` aggregates them) and a few counters.

A column is simulated event by event. One vectorised pass turns its four sides into two
bit sets, one bit per bar: *entry* (entry fires and exit does not) and *exit* (the
reverse). The walk then jumps from one bar that asks for a different position to the next
(the next set bit, a word of 64 bars at a time). In between, a flat column earns exactly
0, and a holding column's returns come from one loop over its prices. Only event bars,
bars with an unfilled order, and missing-price or corporate-action bars while holding run
the per-bar rules. The arithmetic is the per-bar arithmetic. The tests hold the returns to
the engine's bar-by-bar ``run_signals`` within 1e-14, and to an independent per-bar
reference on real A-share and S&P data.

One source for both devices: a column's bits (:func:`_column_bits_nb`) and its account
(:func:`_column_nb`, filling orders through :mod:`qilin.kernels.orders`) are
:func:`~qilin.kernels.targets.core` functions. :func:`simulate_signals_nb` runs them on the
CPU (groups of combinations in a ``prange``, symbol by symbol); the GPU kernel of
:mod:`~qilin.backtest.sweep_kernels_gpu` runs the same functions one thread per column. Two
primitives differ by device: adding into the accumulators (atomic on the GPU) and counting
trailing zero bits.

Layout: every per-symbol array is ``(symbols, dates)`` C-contiguous so that a column's
history is contiguous in memory. A combination's rule is 4 *sides* (entry lhs, entry rhs,
exit lhs, exit rhs); a side's value at ``(symbol, t)`` is
``S[base] + coef * S[scaled] + const`` where ``S`` is the indicator stack and an index of
``-1`` means "absent" (0). Entry fires when ``entry_lhs > entry_rhs``, exit when
``exit_lhs > exit_rhs``; a NaN side makes the comparison False.

Examples
--------
>>> import numpy as np
>>> x = np.array([[1.0, 2.0, np.nan, 3.0, 4.0]])
>>> rolling_mean_nb(x, 2).round(2).tolist()
[[nan, 1.5, nan, 2.5, 3.5]]
"""

from __future__ import annotations

import math
from typing import Any

import numba as nb
import numpy as np
from numba.cpython.unsafe.numbers import trailing_zeros

from qilin.backend import DeviceKernel, array_module
from qilin.backtest.portfolio import portfolio_bar_nb, reset_account_nb
from qilin.kernels.orders import (
    QTY_EPS,
    STATUS_FILLED,
    STATUS_NONE,
    buy_nb,
    holding_after_nb,
    sell_nb,
    target_quantity_nb,
)
from qilin.kernels.targets import core, cuda, gpu_kernel

#: Column order of the per-combination counters returned by :func:`simulate_signals_nb`.
COUNTER_NAMES = ("n_trades", "n_wins", "n_closed", "turnover_sum", "exposure_days")
#: Most combinations simulated together over each symbol (cache blocking of the fused
#: kernel: the group shares each symbol's indicator rows from cache).
COMBO_GROUP = 128
#: Bars per tile when a group's entry/exit bits are computed (its indicator rows stay in
#: cache); a multiple of 64, the bars of one bit word.
CODE_TILE = 2048
assert CODE_TILE % 64 == 0
#: Column order of :func:`returns_metrics_nb` output.
METRIC_NAMES = (
    "total_return", "annual_return", "annual_volatility", "sharpe_ratio",
    "sortino_ratio", "max_drawdown", "calmar_ratio",
)


# --------------------------------------------------------------------------- indicators
def rolling_mean_nb(x: np.ndarray, window: int) -> np.ndarray:
    """Simple moving average over the last ``window`` non-NaN observations of each row.

    ``x`` is ``(symbols, dates)``; NaN where the bar is NaN or fewer than ``window`` valid
    observations were seen. Window sums are differences of compensated prefix sums (a
    running sum and its rounding error), exact to a few units in the last place whatever
    the series' length.

    A Python function on purpose: a cached jitted caller of a ``parallel=True`` function can
    crash when loaded from numba's cache by a later process.
    """
    out = np.empty((1, *np.shape(x)))
    rolling_means_into_nb(x, np.array([window]), np.zeros(1, dtype=np.int64), out)
    return out[0]


@nb.njit(cache=True)
def _valid_values_nb(row, pos, values):
    """Positions and values of the non-NaN bars of ``row``; returns their count."""
    n = 0
    for t in range(row.shape[0]):
        v = row[t]
        if v == v:
            pos[n] = t
            values[n] = v
            n += 1
    return n


@nb.njit(cache=True, parallel=True)
def rolling_means_into_nb(x: np.ndarray, windows: np.ndarray, slots: np.ndarray,
                          out: np.ndarray) -> None:
    """:func:`rolling_mean_nb` of ``x`` for every ``windows[q]`` into ``out[slots[q]]``.

    ``out`` is ``(series, symbols, dates)``. Rows in parallel; each row's valid values and
    their prefix sums are computed once for all windows, and every window is then one
    vectorised difference.
    """
    N, T = x.shape
    for i in nb.prange(N):
        pos = np.empty(T, dtype=np.int64)
        v = np.empty(T)
        n = _valid_values_nb(x[i], pos, v)
        # prefix sums with their rounding errors (Knuth's two-sum): P[k] = hi[k] + lo[k]
        hi = np.empty(n + 1)
        lo = np.empty(n + 1)
        s = 0.0
        err = 0.0
        hi[0] = 0.0
        lo[0] = 0.0
        for k in range(n):
            t = s + v[k]
            b = t - s
            err += (s - (t - b)) + (v[k] - b)
            s = t
            hi[k + 1] = s
            lo[k + 1] = err
        mean = np.empty(n)
        for q in range(windows.shape[0]):
            w = windows[q]
            o = out[slots[q], i]
            if n < w:
                o[:] = np.nan
                continue
            m = n - w + 1  # valid bars with a full window: k = w - 1 .. n - 1
            head_hi, tail_hi = hi[w:], hi[:m]
            head_lo, tail_lo = lo[w:], lo[:m]
            res = o[w - 1:] if n == T else mean[:m]  # no missing bar: straight into o
            for u in range(m):
                res[u] = ((head_hi[u] - tail_hi[u]) + (head_lo[u] - tail_lo[u])) / w
            if n == T:
                o[:w - 1] = np.nan
            else:
                o[:] = np.nan
                at = pos[w - 1:n]
                for u in range(m):
                    o[at[u]] = res[u]


@nb.njit(cache=True)
def rolling_std_nb(x: np.ndarray, window: int) -> np.ndarray:
    """Population standard deviation over the last ``window`` non-NaN observations."""
    out = np.full(x.shape, np.nan)
    buf = np.empty(x.shape[1], dtype=np.int64)
    values = np.empty(x.shape[1])
    for i in range(x.shape[0]):
        pos = buf[:_valid_values_nb(x[i], buf, values)]
        for k in range(window - 1, pos.shape[0]):
            mean = 0.0
            for m in range(k - window + 1, k + 1):
                mean += x[i, pos[m]]
            mean /= window
            ss = 0.0
            for m in range(k - window + 1, k + 1):
                d = x[i, pos[m]] - mean
                ss += d * d
            out[i, pos[k]] = math.sqrt(ss / window)
    return out


def ema_nb(x: np.ndarray, window: int) -> np.ndarray:
    """TA-Lib EMA (seeded with the SMA of the first ``window`` values) over non-NaN values.

    A Python function for the same reason as :func:`rolling_mean_nb`.
    """
    out = np.empty((1, *np.shape(x)))
    emas_into_nb(x, np.array([window]), np.zeros(1, dtype=np.int64), out)
    return out[0]


@nb.njit(cache=True, parallel=True)
def emas_into_nb(x: np.ndarray, windows: np.ndarray, slots: np.ndarray,
                 out: np.ndarray) -> None:
    """:func:`ema_nb` of ``x`` for every ``windows[q]`` into ``out[slots[q]]``; rows in
    parallel, each row's valid values gathered once."""
    N, T = x.shape
    for i in nb.prange(N):
        pos = np.empty(T, dtype=np.int64)
        v = np.empty(T)
        n = _valid_values_nb(x[i], pos, v)
        for q in range(windows.shape[0]):
            w = windows[q]
            alpha = 2.0 / (w + 1.0)
            o = out[slots[q], i]
            o[:] = np.nan
            if n < w:
                continue
            ema = 0.0
            for k in range(w):
                ema += v[k]
            ema /= w
            o[pos[w - 1]] = ema
            for k in range(w, n):
                ema = ema + alpha * (v[k] - ema)
                o[pos[k]] = ema


@nb.njit(cache=True)
def rsi_nb(x: np.ndarray, window: int) -> np.ndarray:
    """TA-Lib RSI (Wilder smoothing, seeded with simple averages) over non-NaN values."""
    out = np.full(x.shape, np.nan)
    buf = np.empty(x.shape[1], dtype=np.int64)
    values = np.empty(x.shape[1])
    for i in range(x.shape[0]):
        pos = buf[:_valid_values_nb(x[i], buf, values)]
        if pos.shape[0] <= window:
            continue
        gain = 0.0
        loss = 0.0
        for k in range(1, window + 1):
            d = x[i, pos[k]] - x[i, pos[k - 1]]
            if d > 0:
                gain += d
            else:
                loss -= d
        gain /= window
        loss /= window
        out[i, pos[window]] = 100.0 * gain / (gain + loss) if gain + loss != 0 else 0.0
        for k in range(window + 1, pos.shape[0]):
            d = x[i, pos[k]] - x[i, pos[k - 1]]
            g = d if d > 0 else 0.0
            lo = -d if d < 0 else 0.0
            gain = (gain * (window - 1) + g) / window
            loss = (loss * (window - 1) + lo) / window
            out[i, pos[k]] = 100.0 * gain / (gain + loss) if gain + loss != 0 else 0.0
    return out


@nb.njit(cache=True)
def momentum_nb(x: np.ndarray, lookback: int) -> np.ndarray:
    """``x[t] / x[t - lookback] - 1`` over non-NaN observations (NaN on missing bars)."""
    out = np.full(x.shape, np.nan)
    buf = np.empty(x.shape[1], dtype=np.int64)
    values = np.empty(x.shape[1])
    for i in range(x.shape[0]):
        pos = buf[:_valid_values_nb(x[i], buf, values)]
        for k in range(lookback, pos.shape[0]):
            out[i, pos[k]] = x[i, pos[k]] / x[i, pos[k - lookback]] - 1.0
    return out


# --------------------------------------------------------------------------- simulation
def _trailing_zeros_gpu(bits):
    lowest = bits & (~bits + np.uint64(1))  # bits != 0
    return cuda.popc(lowest - np.uint64(1))


@core(gpu=_trailing_zeros_gpu, inline="always")
def _trailing_zeros_nb(bits):
    """Number of zero bits below the lowest set bit of ``bits`` (a nonzero uint64)."""
    return trailing_zeros(bits)


def _accumulate_gpu(row, t, value):
    cuda.atomic.add(row, t, value)


@core(gpu=_accumulate_gpu)
def _accumulate_nb(row, t, value):
    """``row[t] += value``; atomic on the GPU, where the columns of a combination's symbols
    add into its row at the same time (the CPU adds symbol after symbol)."""
    row[t] += value


@core(inline="always")
def _signal_bits_nb(e0, f0, m0, a0, e1, f1, m1, a1, e2, f2, m2, a2, e3, f3, m3, a3, scaled,
                    mirrored, n, entry_words, exit_words):
    """Entry and exit bits of bars ``s < n`` (bar ``s`` is bit ``s % 64`` of word ``s // 64``):
    the entry bit when entry fires and exit does not, the exit bit for the reverse."""
    for w in range((n + 63) // 64):
        lo = np.uint64(w * 64)
        m = np.uint64(min(64, n - w * 64))  # unsigned indices: no wraparound branch
        ent = np.uint64(0)
        ext = np.uint64(0)
        if mirrored and a0 == 0.0 and a1 == 0.0:  # (x + 0 > y + 0) == (x > y), NaN included
            for i in range(m):
                x = e0[lo + i]
                y = e1[lo + i]
                ent |= np.uint64(x > y) << i
                ext |= np.uint64(y > x) << i
        elif mirrored:  # exit is entry with the sides swapped (e.g. MA cross): two loads per bar
            for i in range(m):
                x = e0[lo + i] + a0
                y = e1[lo + i] + a1
                ent |= np.uint64(x > y) << i
                ext |= np.uint64(y > x) << i
        elif not scaled:  # half the loads
            for i in range(m):
                entry = e0[lo + i] + a0 > e1[lo + i] + a1
                exit_ = e2[lo + i] + a2 > e3[lo + i] + a3
                ent |= np.uint64(entry > exit_) << i  # entry and not exit, branch-free
                ext |= np.uint64(exit_ > entry) << i
        else:
            for i in range(m):
                entry = e0[lo + i] + m0 * f0[lo + i] + a0 > e1[lo + i] + m1 * f1[lo + i] + a1
                exit_ = e2[lo + i] + m2 * f2[lo + i] + a2 > e3[lo + i] + m3 * f3[lo + i] + a3
                ent |= np.uint64(entry > exit_) << i  # entry and not exit, branch-free
                ext |= np.uint64(exit_ > entry) << i
        entry_words[w] = ent
        exit_words[w] = ext


@core(inline="always")
def _first_bit_nb(words, start, stop):
    """First ``s`` in ``[start, stop)`` whose bit is set in ``words``, else ``stop``."""
    if start >= stop:
        return stop
    w = start >> 6
    bits = words[w] & (np.uint64(0xFFFFFFFFFFFFFFFF) << np.uint64(start & 63))
    while bits == 0:
        w += 1
        if w * 64 >= stop:
            return stop
        bits = words[w]
    return min(w * 64 + int(_trailing_zeros_nb(bits)), stop)


@core(inline="always")
def _bit_nb(words, s):
    return (words[s >> 6] >> np.uint64(s & 63)) & np.uint64(1) != 0


#: Columns of the hold-run records: first bar, end bar, cash, quantity, equity before.
RUN_FIELDS = 5


def _runs_full_gpu(runs, n_runs):
    return n_runs == runs.shape[0]


@core(gpu=_runs_full_gpu)
def _runs_full_nb(runs, n_runs):
    """Whether a column's hold-run slots are full. Never on the CPU, whose buffer holds every
    run of a column (runs are at least one bar apart); a GPU thread has a few slots."""
    return False


@core(fastmath={"reassoc"})
def _hold_runs_nb(px, runs, n_runs, port_row):
    """Add the equity changes of a column's hold runs to ``port_row``; returns their
    exposure sum.

    A run is bars ``[start, stop)`` where the column holds ``qty`` shares and ``cash``,
    does not trade and has every price. Per bar it is the arithmetic of the bar-by-bar
    walk (equity - previous equity; one division per bar for the exposure); only the
    exposure sum is reassociated.
    """
    exposure = 0.0
    for r in range(n_runs):
        start, stop = int(runs[r, 0]), int(runs[r, 1])
        cash, qty, prev_eq = runs[r, 2], runs[r, 3], runs[r, 4]
        held = qty * px[start]
        equity = cash + held
        exposure += held / equity if equity > 0.0 else 0.0
        _accumulate_nb(port_row, start, equity - prev_eq)
        now = px[start + 1:stop]
        out = port_row[start + 1:stop]
        for u in range(now.shape[0]):
            held = qty * now[u]
            before = equity
            equity = cash + held
            exposure += held / equity if equity > 0.0 else 0.0
            _accumulate_nb(out, u, equity - before)
    return exposure


@core
def _has_corporate_actions_nb(ratio):
    """Whether a symbol's quantity ratios ever differ from 1."""
    for t in range(ratio.shape[0]):
        if ratio[t] != 1.0:
            return True
    return False


@core
def _symbol_bars_nb(px, ratio, corporate_actions, irregular, last_price):
    """Per bar of one symbol: ``irregular[t]``, the first bar at or after ``t`` with no
    price or a corporate action; ``last_price[t]``, the last price at or before ``t``."""
    nxt = px.shape[0]
    for t in range(px.shape[0] - 1, -1, -1):
        if px[t] != px[t] or (corporate_actions and ratio[t] != 1.0):
            nxt = t
        irregular[t] = nxt
    last = math.nan
    for t in range(px.shape[0]):
        if px[t] == px[t]:
            last = px[t]
        last_price[t] = last


@core(inline="always")
def _column_bits_nb(S, idx, coef, c, j, start, stop, entry_words, exit_words):
    """Entry and exit bits of combination ``c`` on symbol ``j`` for bars ``[start, stop)``
    (``start`` a multiple of 64)."""
    zero = S.shape[0] - 1  # the caller appends an all-zero series for absent operands
    b0 = S[idx[c, 0, 0] if idx[c, 0, 0] >= 0 else zero, j, start:stop]
    k0 = S[idx[c, 0, 1] if idx[c, 0, 1] >= 0 else zero, j, start:stop]
    b1 = S[idx[c, 1, 0] if idx[c, 1, 0] >= 0 else zero, j, start:stop]
    k1 = S[idx[c, 1, 1] if idx[c, 1, 1] >= 0 else zero, j, start:stop]
    b2 = S[idx[c, 2, 0] if idx[c, 2, 0] >= 0 else zero, j, start:stop]
    k2 = S[idx[c, 2, 1] if idx[c, 2, 1] >= 0 else zero, j, start:stop]
    b3 = S[idx[c, 3, 0] if idx[c, 3, 0] >= 0 else zero, j, start:stop]
    k3 = S[idx[c, 3, 1] if idx[c, 3, 1] >= 0 else zero, j, start:stop]
    # an unscaled side multiplies the all-zero series by 0: b + 0 * 0 + a == b + a exactly
    m0 = coef[c, 0, 0] if idx[c, 0, 1] >= 0 else 0.0
    m1 = coef[c, 1, 0] if idx[c, 1, 1] >= 0 else 0.0
    m2 = coef[c, 2, 0] if idx[c, 2, 1] >= 0 else 0.0
    m3 = coef[c, 3, 0] if idx[c, 3, 1] >= 0 else 0.0
    a0, a1, a2, a3 = coef[c, 0, 1], coef[c, 1, 1], coef[c, 2, 1], coef[c, 3, 1]
    scaled = (idx[c, 0, 1] >= 0 or idx[c, 1, 1] >= 0 or idx[c, 2, 1] >= 0
              or idx[c, 3, 1] >= 0)
    mirrored = (not scaled and idx[c, 2, 0] == idx[c, 1, 0] and idx[c, 3, 0] == idx[c, 0, 0]
                and a2 == a1 and a3 == a0)
    _signal_bits_nb(b0, k0, m0, a0, b1, k1, m1, a1, b2, k2, m2, a2, b3, k3, m3, a3, scaled,
                    mirrored, stop - start, entry_words[start // 64:], exit_words[start // 64:])


@core(inline="always")
def _column_nb(j, close, buy_reject, sell_reject, adj_ratio, lag, init_cash, lot, commission_rate,
               min_commission, slip, stamp_duty, port_row, counters_row,
               corporate_actions, irregular, last_price, entry_words, exit_words, runs):
    T = close.shape[1]
    px = close[j]
    buy_codes = buy_reject[j]
    sell_codes = sell_reject[j]
    ratio = adj_ratio[j]
    cash = init_cash
    qty = 0.0
    desired = False
    pending = False
    last_close = math.nan
    prev_inv = 1.0 / init_cash  # 1 / previous equity: one division per step
    prev_eq = init_cash
    bought = 0.0
    sold = 0.0
    n_trades = 0.0
    n_wins = 0.0
    n_closed = 0.0
    turnover = 0.0
    exposure = 0.0
    n_runs = 0
    t = 0
    while t < T:
        if not pending and t >= lag:
            # jump to the next bar that asks for another position (or has no price or a
            # corporate action): in between a flat column earns exactly 0 and a holding
            # one only its price moves
            words = exit_words if desired else entry_words
            if qty == 0.0:  # flat: missing prices and corporate actions change nothing
                nxt = _first_bit_nb(words, t - lag, T - lag) + lag
            else:
                nxt = _first_bit_nb(words, t - lag, irregular[t] - lag) + lag
            if nxt > t:
                if qty != 0.0:  # recorded; their returns are added in one call at the end
                    if _runs_full_nb(runs, n_runs):
                        exposure += _hold_runs_nb(px, runs, n_runs, port_row)
                        n_runs = 0
                    runs[n_runs, 0] = t
                    runs[n_runs, 1] = nxt
                    runs[n_runs, 2] = cash
                    runs[n_runs, 3] = qty
                    runs[n_runs, 4] = prev_eq
                    n_runs += 1
                    equity = cash + qty * px[nxt - 1]
                    prev_inv = 1.0 / equity if equity > 0.0 else 0.0
                    prev_eq = equity
                last_close = last_price[nxt - 1]
                t = nxt
                if t == T:
                    break
                # bar t is an event: run it now rather than search again from it
        if corporate_actions and qty != 0.0:
            qty *= ratio[t]
        s = t - lag
        if s >= 0 and _bit_nb(exit_words if desired else entry_words, s):
            desired = not desired
            pending = True
        p = px[t]
        moved = False
        if pending and p == p and p > 0.0:
            eq = cash + qty * p
            tq = target_quantity_nb(1.0 if desired else 0.0, eq, p, slip, commission_rate, lot)
            if tq > qty + QTY_EPS:
                status, dq, _, notional, fee = buy_nb(
                    buy_codes[t], tq, qty, p, cash, lot, commission_rate, min_commission, slip)
                if status == STATUS_FILLED:
                    cash -= notional + fee
                    qty += dq
                    pending = False
                    moved = True
                    bought += notional + fee
                    n_trades += 1.0
                    turnover += notional * prev_inv
                elif status == STATUS_NONE:
                    pending = False
                # rejected (limit, no volume, cash, precision): the order waits
            elif tq < qty - QTY_EPS:
                status, dq, _, notional, fee = sell_nb(
                    sell_codes[t], tq, qty, p, lot, commission_rate, min_commission, slip,
                    stamp_duty)
                if status == STATUS_FILLED:
                    cash += notional - fee
                    qty = holding_after_nb(qty, -dq)
                    pending = False
                    moved = True
                    sold += notional - fee
                    n_trades += 1.0
                    turnover += notional * prev_inv
                    if qty == 0.0:
                        n_closed += 1.0
                        if sold > bought:
                            n_wins += 1.0
                        sold = 0.0
                        bought = 0.0
                elif status == STATUS_NONE:
                    pending = False
            else:
                pending = False
        if p == p:
            last_close = p
        if qty != 0.0 or moved:  # a flat column without a fill keeps its equity exactly
            held = qty * last_close if qty != 0.0 else 0.0
            equity = cash + held
            inv = 1.0 / equity if equity > 0.0 else 0.0
            exposure += held * inv
            _accumulate_nb(port_row, t, equity - prev_eq)
            prev_inv = inv
            prev_eq = equity
        t += 1
    exposure += _hold_runs_nb(px, runs, n_runs, port_row)
    _accumulate_nb(counters_row, 0, n_trades)
    _accumulate_nb(counters_row, 1, n_wins)
    _accumulate_nb(counters_row, 2, n_closed)
    _accumulate_nb(counters_row, 3, turnover)
    _accumulate_nb(counters_row, 4, exposure)


@nb.njit(cache=True, parallel=True)
def simulate_signals_nb(S, idx, coef, close, buy_reject, sell_reject, adj_ratio, lag, init_cash,
                        lot, commission_rate, min_commission, slip, stamp_duty, t_plus_one,
                        port, counters, group=COMBO_GROUP, order=None):
    """Run every (combination, symbol) column of one symbol tile, accumulating in place.

    Parameters
    ----------
    S : float64 array (K + 1, symbols, dates)
        Indicator stack; the last series must be all zeros (it stands for absent operands).
    idx : int64 array (combinations, 4, 2)
        Per side ``(base, scaled)`` indices into ``S`` (``-1`` = absent).
    coef : float64 array (combinations, 4, 2)
        Per side ``(coef, const)``.
    close : float64 array (symbols, dates)
        Raw (traded) close; NaN on missing bars.
    buy_reject, sell_reject : int8 arrays (symbols, dates)
        Rejection codes of :func:`~qilin.backtest.rules.trading_arrays` (0: a buy, a sell,
        may fill).
    adj_ratio : float64 array (symbols, dates)
        Held quantity multiplier at the start of each day (corporate actions).
    t_plus_one : bool
        Accepted for the market profile's sake; with one order per bar and column, shares
        bought on a day are never sold that day, so T+1 holds by construction.
    port : float64 array (combinations, dates)
        Receives ``sum_j (equity[c, j, t] - equity[c, j, t - 1])``, the change of the
        combination's combined equity (``equity[c, j, -1] = init_cash``); symbol tiles add
        into the same rows. :func:`pnl_returns` turns it into daily returns.
    counters : float64 array (combinations, 5)
        Receives the sums named in :data:`COUNTER_NAMES`.
    group : int
        Combinations walked together over each symbol (:func:`combo_group` picks it).
    order : int64 array (combinations,), optional
        The order in which combinations are grouped (:func:`combo_order`: combinations
        that read the same indicator rows side by side; :func:`deal_groups`: groups of
        similar work spread over the threads); default as given.
    """
    C = idx.shape[0]
    N, T = close.shape
    has_ca = np.zeros(N, dtype=np.bool_)
    for j in range(N):
        has_ca[j] = _has_corporate_actions_nb(adj_ratio[j])
    # cache blocking: a group of combinations walks the symbols together, so a symbol's
    # prices and indicator rows come from memory about once per group
    n_signal = max(T - lag, 0)  # bars with a signal (bar s decides bar s + lag)
    n_groups = (C + group - 1) // group
    if order is None:
        order = np.arange(C)
    for g in nb.prange(n_groups):
        lo = g * group
        hi = min(C, lo + group)
        irregular = np.empty(T, dtype=np.int64)
        last_price = np.empty(T)
        entry_bits = np.zeros((hi - lo, (T + 63) // 64), dtype=np.uint64)
        exit_bits = np.zeros((hi - lo, (T + 63) // 64), dtype=np.uint64)
        runs = np.empty((T // 2 + 1, RUN_FIELDS))  # runs are separated by at least one bar
        for j in range(N):
            _symbol_bars_nb(close[j], adj_ratio[j], has_ca[j], irregular, last_price)
            # bits tile by tile of bars: the group's indicator rows stay in cache
            for start in range(0, n_signal, CODE_TILE):
                stop = min(start + CODE_TILE, n_signal)
                for i in range(lo, hi):
                    _column_bits_nb(S, idx, coef, order[i], j, start, stop, entry_bits[i - lo],
                                    exit_bits[i - lo])
            for i in range(lo, hi):
                c = order[i]
                _column_nb(j, close, buy_reject, sell_reject, adj_ratio, lag, init_cash, lot,
                           commission_rate, min_commission, slip, stamp_duty, port[c],
                           counters[c], has_ca[j], irregular, last_price,
                           entry_bits[i - lo], exit_bits[i - lo], runs)


def combo_group(n_combos: int) -> int:
    """Combinations per kernel group: up to :data:`COMBO_GROUP`, but at least two groups per
    numba thread when there are few combinations (so that every thread has work).

    Examples
    --------
    >>> combo_group(10_000)
    128
    >>> 1 <= combo_group(3) <= 2
    True
    """
    return max(1, min(COMBO_GROUP, -(-n_combos // (2 * nb.get_num_threads()))))


def combo_order(idx: np.ndarray) -> np.ndarray:
    """Combinations in Z-order of their entry sides' indicator rows.

    Consecutive combinations then read few distinct rows (a grid of fast x slow windows
    becomes square blocks), so a kernel group fetches fewer rows from memory.

    Examples
    --------
    >>> idx = np.full((4, 4, 2), -1)
    >>> idx[:, 0, 0] = [0, 0, 1, 1]
    >>> idx[:, 1, 0] = [2, 3, 2, 3]
    >>> combo_order(idx).tolist()
    [0, 2, 1, 3]
    """
    a = (idx[:, 0, 0] + 1).astype(np.uint64)
    b = (idx[:, 1, 0] + 1).astype(np.uint64)
    key = np.zeros(len(idx), dtype=np.uint64)
    for bit in range(32):
        one = np.uint64(1)
        key |= ((a >> np.uint64(bit)) & one) << np.uint64(2 * bit)
        key |= ((b >> np.uint64(bit)) & one) << np.uint64(2 * bit + 1)
    return np.argsort(key, kind="stable").astype(np.int64)


def deal_groups(order: np.ndarray, group: int, threads: int | None = None) -> np.ndarray:
    """``order`` with its groups of ``group`` combinations dealt round-robin to ``threads``.

    The kernel's ``prange`` hands each thread one contiguous run of groups. Neighbouring
    groups in Z-order have similar windows and so similar work, so dealing them out
    balances the threads (a few percent of wall time on two threads).

    Examples
    --------
    >>> deal_groups(np.arange(8), 2, threads=2).tolist()
    [0, 1, 4, 5, 2, 3, 6, 7]
    """
    threads = threads or nb.get_num_threads()
    chunks = [order[i:i + group] for i in range(0, len(order), group)]
    return np.concatenate([chunks[g] for t in range(threads)
                           for g in range(t, len(chunks), threads)])


# --------------------------------------------------------------------------- metrics
def pnl_returns(pnl: np.ndarray, base: float) -> np.ndarray:
    """Daily returns of combined accounts from their daily equity changes.

    ``pnl`` is ``(combinations, dates)`` as accumulated by :func:`simulate_signals_nb`;
    ``base`` the combined starting capital (symbols x ``init_cash``). Equity is ``base +
    cumsum(pnl)``; the return of day ``t`` is ``equity_t / equity_{t-1} - 1``, 0 on the
    first day, as ``BacktestResult.returns`` (and ``backtest run``'s aggregate).

    Examples
    --------
    >>> pnl_returns(np.array([[-5.0, 105.0, -110.0]]), 1000.0).round(6).tolist()
    [[0.0, 0.105528, -0.1]]
    """
    from qilin.backtest.result import equity_returns

    return equity_returns((base + np.cumsum(pnl, axis=1)).T).T


@nb.njit(cache=True, parallel=True)
def returns_metrics_nb(port: np.ndarray, periods_per_year: float) -> np.ndarray:
    """Empyrical metrics of each row of daily returns, in one streaming pass per row.

    Columns as :data:`METRIC_NAMES`. Same definitions as ``empyrical``: geometric CAGR,
    sample std (ddof=1), sortino with downside deviation over all periods, drawdown
    anchored at the starting value, calmar NaN without a drawdown.
    """
    C, T = port.shape
    out = np.full((C, 7), np.nan)
    for c in nb.prange(C):
        wealth = 1.0
        peak = 1.0
        mdd = 0.0
        s = 0.0
        down = 0.0
        for t in range(T):
            r = port[c, t]
            s += r
            if r < 0:
                down += r * r
            wealth *= 1.0 + r
            if wealth > peak:
                peak = wealth
            dd = (wealth - peak) / peak
            if dd < mdd:
                mdd = dd
        mean = s / T
        ss = 0.0
        for t in range(T):
            d = port[c, t] - mean
            ss += d * d
        total = wealth - 1.0
        annual = wealth ** (periods_per_year / T) - 1.0 if wealth > 0 else -1.0
        out[c, 0] = total
        out[c, 1] = annual
        if T > 1:
            std = math.sqrt(ss / (T - 1))
            out[c, 2] = std * math.sqrt(periods_per_year)
            if std > 0:
                out[c, 3] = mean / std * math.sqrt(periods_per_year)
            dr = math.sqrt(down / T) * math.sqrt(periods_per_year)
            if dr > 0:
                out[c, 4] = mean * periods_per_year / dr
            elif mean > 0:
                out[c, 4] = math.inf
        out[c, 5] = mdd
        if mdd < 0:
            out[c, 6] = annual / abs(mdd)
    return out


# --------------------------------------------------------------------------- top-k
# The top-k functions are cores compiled for the CPU (numba, the ``*_nb`` drivers below) and,
# from the same source, for the GPU (numba-cuda kernels, one thread per ranking and one per
# combination); see :mod:`qilin.kernels.targets`.
def _rank_candidates_gpu(scores, tradable, lb, t, ranked):
    """:func:`rank_candidates_nb` without allocation (GPU): the ``q``-th pick is the best
    candidate after the ``(q - 1)``-th in the order (score descending, symbol ascending), one
    pass over the symbols per pick."""
    N = scores.shape[2]
    m = 0
    for j in range(N):
        if tradable[t, j] and not math.isnan(scores[lb, t, j]):
            m += 1
    prev_v = math.inf
    prev_j = -1
    for q in range(min(ranked.shape[2], m)):
        best_j = -1
        best_v = 0.0
        for j in range(N):
            if not tradable[t, j]:
                continue
            v = scores[lb, t, j]
            if math.isnan(v) or v > prev_v or (v == prev_v and j <= prev_j):
                continue  # no candidate, or ranked already
            if best_j < 0 or v > best_v:
                best_j = j
                best_v = v
        ranked[lb, t, q] = best_j
        prev_v = best_v
        prev_j = best_j
    return m


@core(gpu=_rank_candidates_gpu)
def rank_candidates_nb(scores, tradable, lb, t, ranked):
    """Rank the tradable symbols with a score at ``(lb, t)``: ``ranked[lb, t, :]`` receives
    the first of them by descending score (ties in symbol order), as many as fit; returns how
    many there are. A primitive: a stable sort on the CPU, a selection without allocation on
    the GPU (:func:`_rank_candidates_gpu`), same result."""
    N = scores.shape[2]
    depth = ranked.shape[2]
    cand = np.empty(N, dtype=np.int64)
    vals = np.empty(N)
    m = 0
    for j in range(N):
        if tradable[t, j]:
            v = scores[lb, t, j]
            if not math.isnan(v):
                cand[m] = j
                vals[m] = -v
                m += 1
    if m > 0:
        order = np.argsort(vals[:m], kind="mergesort")
        for q in range(min(depth, m)):
            ranked[lb, t, q] = cand[order[q]]
    return m


@core
def topk_ranking_nb(scores, tradable, needed, lb, t, ranked, n_candidates):
    """The ranking of lookback ``lb`` on date ``t`` (see :func:`topk_candidates_nb`)."""
    n_candidates[lb, t] = 0
    if needed[t]:
        n_candidates[lb, t] = rank_candidates_nb(scores, tradable, lb, t, ranked)


@nb.njit(cache=True, parallel=True)
def topk_candidates_nb(scores, tradable, needed, ranked, n_candidates):
    """The best-scored tradable symbols of every (lookback, date) a combination rebalances on.

    ``scores`` is ``(lookbacks, dates, symbols)``; ``needed[t]`` says whether some
    combination rebalances on date ``t``; ``tradable`` which names may be picked (the bars
    that exist, as ``MomentumTopK.targets``). ``n_candidates[l, t]`` receives how many such
    symbols have a score, ``ranked[l, t, :]`` the first of them by descending score (ties in
    symbol order), as many as fit. Every combination with that lookback reads them, so each
    ranking is sorted once for the whole sweep. The GPU twin is
    :func:`topk_candidates_gpu` (same core, one thread per ranking).
    """
    L, T = n_candidates.shape
    for lt in nb.prange(L * T):
        lb = lt // T
        topk_ranking_nb(scores, tradable, needed, lb, lt - lb * T, ranked, n_candidates)


def _candidates_example() -> tuple[Any, ...]:
    L, T, N, depth = 2, 4, 3, 2
    return (np.zeros((L, T, N)), np.zeros((T, N), np.bool_), np.zeros(T, np.bool_),
            np.zeros((L, T, depth), np.int64), np.zeros((L, T), np.int64))


@gpu_kernel(example=_candidates_example)
def _topk_candidates_kernel(scores, tradable, needed, ranked, n_candidates):
    lt = cuda.grid(1)
    L, T = n_candidates.shape
    if lt < L * T:
        lb = lt // T
        topk_ranking_nb(scores, tradable, needed, lb, lt - lb * T, ranked, n_candidates)


def topk_candidates_gpu(scores: Any, tradable: Any, needed: Any, ranked: Any,
                        n_candidates: Any) -> None:
    """:func:`topk_candidates_nb` on the GPU: one thread per (lookback, date), no allocation
    (each pick is a pass over the symbols, ``depth x symbols`` per ranking)."""
    xp = array_module(scores, tradable, needed, ranked, n_candidates)
    L, T = n_candidates.shape
    _topk_candidates_kernel.launch(L * T, xp.ascontiguousarray(scores),
                                   xp.ascontiguousarray(tradable), xp.ascontiguousarray(needed),
                                   ranked, n_candidates)


#: Column order of the per-combination counters of :func:`topk_portfolio_sweep_nb`.
TOPK_COUNTER_NAMES = ("n_trades", "turnover_sum", "exposure_sum")


@core
def topk_combination_nb(c, slot, ranked, n_candidates, combos, lag, exec_price, close,
                        adj_ratio, buy_reject, sell_reject, init_cash, commission_rate,
                        min_commission, slippage, stamp_duty, lot, qty, last_close, target,
                        pending, last_reject, tq, dqs, discard, rec_side, rec_status, port,
                        counters):
    """Combination ``c`` of the top-k sweep, bar by bar through the engine's
    :func:`~qilin.backtest.portfolio.portfolio_bar_nb` (see :func:`topk_portfolio_sweep_nb`).

    ``qty .. dqs`` are this combination's account state (``symbols``-long, any content).
    Row ``slot`` of the 2-D ``rec_side`` and ``rec_status`` receives one bar's orders, and
    row ``slot`` of ``discard`` every per-symbol float output the sweep does not keep
    (closing quantities and values, order quantities, prices and costs: written, never
    read). Writes ``port[c]`` and ``counters[c]``.
    """
    T, N = close.shape
    lb = combos[c, 0]
    k = combos[c, 1]
    every = combos[c, 2]
    reset_account_nb(qty, last_close, target, pending, last_reject, tq, dqs)
    cash = init_cash
    fills = 0.0
    turnover = 0.0
    exposure = 0.0
    prev = init_cash
    for i in range(T):
        t = i - lag  # the signal date executing on bar i
        rebalance = False
        if t >= 0 and t % every == 0:
            m = n_candidates[lb, t]
            if m > 0:
                kk = min(k, m)
                for j in range(N):
                    target[j] = 0.0
                for q in range(kk):
                    target[ranked[lb, t, q]] = 1.0 / kk
                rebalance = True
        for j in range(N):
            rec_status[slot, j] = 0
        cash, _, day_traded, held = portfolio_bar_nb(
            i, rebalance, exec_price, close, adj_ratio, buy_reject, sell_reject, cash,
            commission_rate, min_commission, slippage, stamp_duty, lot, qty, last_close,
            target, pending, last_reject, tq, dqs, slot, discard, discard, rec_side, rec_status,
            discard, discard, discard)
        eq = cash + held
        port[c, i] = eq / prev - 1.0 if i > 0 else 0.0
        if prev > 0.0:
            turnover += day_traded / prev
        for j in range(N):
            if rec_status[slot, j] == STATUS_FILLED:
                fills += 1.0
        if eq > 0.0:
            exposure += held / eq
        prev = eq
    counters[c, 0] = fills
    counters[c, 1] = turnover
    counters[c, 2] = exposure


@nb.njit(cache=True, parallel=True)
def topk_portfolio_sweep_nb(ranked, n_candidates, combos, lag, exec_price, close, adj_ratio,
                            buy_reject, sell_reject, init_cash, commission_rate,
                            min_commission, slippage, stamp_duty, lot, n_workers, port,
                            counters):
    """Momentum top-k sweep through the portfolio engine's own state machine.

    Each combination ``combos[c] = (lookback index, k, rebalance)`` is exactly
    ``run_portfolio(panel, weights=MomentumTopK().targets(panel, ...), rebalance=1,
    lag=lag)``: on every
    ``rebalance``-th date (``t % rebalance == 0``) that has ranked candidates (``ranked`` /
    ``n_candidates`` from :func:`topk_candidates_nb` over the bars that exist), the best
    ``min(k, candidates)`` get weight ``1 / min(k, candidates)`` and every other name 0;
    the targets execute ``lag`` bars later through
    :func:`qilin.backtest.portfolio.portfolio_bar_nb`, the bar of the engine's account core
    (lots, costs, minimum commission, limits, suspensions, corporate actions). Trading arrays
    are the engine's ``(dates, symbols)`` execution inputs.

    ``port[c]`` receives the daily returns of the account (first day 0), ``counters[c]``
    the sums named in :data:`TOPK_COUNTER_NAMES` (filled orders; traded notional / previous
    equity; position value / equity). ``n_workers`` state buffers are allocated, one per
    parallel worker, each reused over its combinations (:func:`topk_combination_nb`, the
    per-combination core that :func:`topk_portfolio_sweep_gpu` runs one thread each).
    """
    C = combos.shape[0]
    N = close.shape[1]
    for g in nb.prange(n_workers):
        qty = np.empty(N)
        last_close = np.empty(N)
        target = np.empty(N)
        pending = np.empty(N, dtype=np.bool_)
        last_reject = np.empty(N, dtype=np.int64)
        tq = np.empty(N)
        dqs = np.empty(N)
        discard = np.empty((1, N))
        rec_side = np.empty((1, N), dtype=np.int8)
        rec_status = np.empty((1, N), dtype=np.int8)
        for c in range(g, C, n_workers):
            topk_combination_nb(c, 0, ranked, n_candidates, combos, lag, exec_price, close,
                                adj_ratio, buy_reject, sell_reject, init_cash, commission_rate,
                                min_commission, slippage, stamp_duty, lot, qty, last_close,
                                target, pending, last_reject, tq, dqs, discard, rec_side,
                                rec_status, port, counters)


def _sweep_example() -> tuple[Any, ...]:
    L, T, N, C, depth = 2, 4, 3, 5, 2
    f2, codes = np.zeros((T, N)), np.zeros((T, N), np.int8)

    def rows(dtype: Any = np.float64) -> np.ndarray:
        return np.zeros((N, C), dtype).T

    return (np.zeros((L, T, depth), np.int64), np.zeros((L, T), np.int64),
            np.ones((C, 3), np.int64), 0, f2, f2, f2, codes, codes, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0,
            rows(), rows(), rows(), rows(np.bool_), rows(np.int64), rows(), rows(), rows(),
            rows(np.int8), rows(np.int8), np.zeros((C, T)),
            np.zeros((C, len(TOPK_COUNTER_NAMES))))


@gpu_kernel(example=_sweep_example)
def _topk_sweep_kernel(ranked, n_candidates, combos, lag, exec_price, close, adj_ratio,
                       buy_reject, sell_reject, init_cash, commission_rate, min_commission,
                       slippage, stamp_duty, lot, qty, last_close, target, pending, last_reject,
                       tq, dqs, discard, rec_side, rec_status, port, counters):
    c = cuda.grid(1)
    if c < combos.shape[0]:
        topk_combination_nb(c, c, ranked, n_candidates, combos, lag, exec_price, close,
                            adj_ratio, buy_reject, sell_reject, init_cash, commission_rate,
                            min_commission, slippage, stamp_duty, lot, qty[c], last_close[c],
                            target[c], pending[c], last_reject[c], tq[c], dqs[c], discard,
                            rec_side, rec_status, port, counters)


def topk_portfolio_sweep_gpu(ranked: Any, n_candidates: Any, combos: Any, lag: int,
                             exec_price: Any, close: Any, adj_ratio: Any, buy_reject: Any,
                             sell_reject: Any, init_cash: float, commission_rate: float,
                             min_commission: float, slippage: float, stamp_duty: float,
                             lot: float, port: Any, counters: Any) -> None:
    """:func:`topk_portfolio_sweep_nb` on the GPU: one thread per combination, each with its
    row of ``(combinations, symbols)`` state and scratch arrays, allocated in the inputs'
    namespace (CuPy on a GPU, NumPy under numba-cuda's simulator). The rows are columns of
    ``(symbols, combinations)`` memory, so the threads of a warp touch neighbouring
    addresses."""
    xp = array_module(ranked, n_candidates, combos, exec_price, close, port, counters)
    C = combos.shape[0]
    N = close.shape[1]

    def rows(dtype: Any = np.float64) -> Any:
        return xp.empty((N, C), dtype=dtype).T

    ranked, n_candidates, combos, exec_price, close, adj_ratio, buy_reject, sell_reject = (
        xp.ascontiguousarray(a) for a in (ranked, n_candidates, combos, exec_price, close,
                                          adj_ratio, buy_reject, sell_reject))
    _topk_sweep_kernel.launch(
        C, ranked, n_candidates, combos, int(lag), exec_price, close, adj_ratio, buy_reject,
        sell_reject, float(init_cash), float(commission_rate), float(min_commission),
        float(slippage), float(stamp_duty), float(lot), rows(), rows(), rows(), rows(np.bool_),
        rows(np.int64), rows(), rows(), rows(), rows(np.int8), rows(np.int8), port, counters)


def _topk_sweep_cpu(ranked: np.ndarray, n_candidates: np.ndarray, combos: np.ndarray, lag: int,
                    *args: Any) -> None:
    workers = max(1, min(combos.shape[0], nb.get_num_threads()))
    topk_portfolio_sweep_nb(ranked, n_candidates, combos, int(lag), *args[:-2], workers,
                            *args[-2:])


#: Rankings of :func:`topk_candidates_nb` on the device that holds the arrays.
topk_candidates = DeviceKernel("topk_candidates", cpu=topk_candidates_nb,
                               gpu=topk_candidates_gpu)
#: The top-k sweep on the device that holds the arrays: ``topk_portfolio_sweep(ranked,
#: n_candidates, combos, lag, exec_price, close, adj_ratio, buy_reject, sell_reject, init_cash,
#: commission_rate, min_commission, slippage, stamp_duty, lot, port, counters)``
#: (:func:`topk_portfolio_sweep_nb` with its worker count chosen, or
#: :func:`topk_portfolio_sweep_gpu`).
topk_portfolio_sweep = DeviceKernel("topk_portfolio_sweep", cpu=_topk_sweep_cpu,
                                    gpu=topk_portfolio_sweep_gpu)
