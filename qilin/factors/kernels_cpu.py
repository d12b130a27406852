"""Per-series cores behind :mod:`qilin.factors.ops` and :mod:`qilin.factors.indicators`.

Every time-series kernel has the same shape: for each column, compress the column to its
finite observations, run a *core* on that dense series and scatter the results back to the
rows they came from. The cores, and the column cores that do those three steps, are plain
numba-compilable Python (:func:`qilin.kernels.targets.core`: no allocation, :mod:`math`
instead of NumPy ufuncs, scratch buffers passed in). This module compiles them for the CPU
and drives them with ``prange`` over series-major rows (each symbol contiguous);
:mod:`qilin.factors.kernels_gpu` compiles the same column cores for the GPU with numba-cuda,
one thread per column of the (dates, symbols) panel. The one place the targets differ is
sorting (:func:`_argsort_nb`: NumPy's argsort here, a heap sort on the GPU).

Kernel codes (the ``op`` arguments) are module constants, shared with the GPU module.

Examples
--------
>>> import numpy as np
>>> x = np.array([[1.0], [2.0], [np.nan], [3.0], [4.0]])
>>> ts1_nb(x, TS_MEAN, 2, 0.0)[:, 0].tolist()
[nan, 1.5, nan, 2.5, 3.5]
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from qilin.kernels.targets import core

# --- single-input rolling kernels (ts1_nb) -------------------------------------------------
TS_SUM = 0
TS_MEAN = 1
TS_VAR = 2
TS_STD = 3
TS_SKEW = 4
TS_KURT = 5
TS_MAX = 6
TS_MIN = 7
TS_ARGMAX = 8
TS_ARGMIN = 9
TS_RANK = 10
TS_QUANTILE = 11
TS_SLOPE = 12
TS_RSQUARE = 13
TS_RESI = 14
TS_WMA = 15
TS_EMA = 16
TS_DELAY = 17
TS_DELTA = 18
TS_PCT_CHANGE = 19
TS_COUNT = 20
TS_MAD = 21

# --- two-input rolling kernels (ts2_nb) ----------------------------------------------------
TS_CORR = 0
TS_COV = 1

# --- indicators (ind_nb), TA-Lib definitions -----------------------------------------------
IND_SMA = 0
IND_EMA = 1
IND_WMA = 2
IND_DEMA = 3
IND_TEMA = 4
IND_MACD = 5
IND_MACD_SIGNAL = 6
IND_MACD_HIST = 7
IND_RSI = 8
IND_BBANDS_UPPER = 9
IND_BBANDS_MIDDLE = 10
IND_BBANDS_LOWER = 11
IND_ATR = 12
IND_NATR = 13
IND_CCI = 14
IND_WILLR = 15
IND_MFI = 16
IND_OBV = 17
IND_ROC = 18
IND_STOCH_K = 19
IND_STOCH_D = 20
IND_ADX = 21
IND_VWAP = 22

# TA-Lib's TA_IS_ZERO threshold, and MFI's relative dead zone for "no price move".
TA_EPSILON = 1e-8
MFI_DEAD_ZONE = 1e-14


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------
def series_major(x):
    """``x`` (dates, symbols) as a writeable C-ordered (symbols, dates) float64 array.

    Each symbol's series is then contiguous, which is what the time-series drivers walk. A
    Fortran-ordered ``x`` costs nothing (its transpose already is that array); a C-ordered
    one costs one transposing copy.

    Examples
    --------
    >>> x = np.asfortranarray(np.ones((3, 2)))
    >>> series_major(x).shape, np.shares_memory(series_major(x), x)
    ((2, 3), True)
    """
    xt = np.asarray(x, dtype=np.float64).T
    if not (xt.flags.c_contiguous and xt.flags.writeable):
        # numba compiles read-only and strided arrays as separate types: copy instead
        xt = np.array(xt, order="C", copy=True)
    return xt


@core
def _compress_nb(col, idx, vals):
    n = 0
    for t in range(col.shape[0]):
        v = col[t]
        if math.isfinite(v):
            idx[n] = t
            vals[n] = v
            n += 1
    return n


@core
def _compress_pair_nb(x, y, idx, xv, yv):
    n = 0
    for t in range(x.shape[0]):
        a = x[t]
        b = y[t]
        if math.isfinite(a) and math.isfinite(b):
            idx[n] = t
            xv[n] = a
            yv[n] = b
            n += 1
    return n


@core
def _compress_bars_nb(high, low, close, volume, idx, hv, lv, cv, vv):
    n = 0
    for t in range(close.shape[0]):
        a = high[t]
        b = low[t]
        c = close[t]
        d = volume[t]
        if math.isfinite(a) and math.isfinite(b) and math.isfinite(c) and math.isfinite(d):
            idx[n] = t
            hv[n] = a
            lv[n] = b
            cv[n] = c
            vv[n] = d
            n += 1
    return n


@core
def _fill_nan_nb(a):
    for t in range(a.shape[0]):
        a[t] = math.nan


@core
def _expand_nb(dest, idx, n):
    # Inverse of the compression, in place, for a dest that is NaN from row n on: result k
    # moves to row idx[k] and row k becomes NaN unless a result lands there. Walking from
    # the end is safe because idx[k] >= k: no store reaches a row that is still to be read.
    for k in range(n - 1, -1, -1):
        v = dest[k]
        dest[k] = math.nan
        dest[idx[k]] = v


@core
def _finite_span_nb(col):
    first = 0
    while first < col.shape[0] and not math.isfinite(col[first]):
        first += 1
    last = col.shape[0]
    while last > first and not math.isfinite(col[last - 1]):
        last -= 1
    return first, last


@core
def _count_finite_nb(col, start, stop):
    span = col[start:stop]
    n = 0
    for t in range(span.shape[0]):
        n += math.isfinite(span[t])
    return n


@core
def _window_mean_nb(x, start, stop):
    window = x[start:stop]  # a view: indices known non-negative, no wraparound branch
    s = 0.0
    for i in range(window.shape[0]):
        s += window[i]
    return s / (stop - start)


@core
def _bisect_left_nb(buf, m, v):
    lo = 0
    hi = m
    while lo < hi:
        mid = (lo + hi) // 2
        if buf[mid] < v:
            lo = mid + 1
        else:
            hi = mid
    return lo


@core
def _bisect_right_nb(buf, m, v):
    lo = 0
    hi = m
    while lo < hi:
        mid = (lo + hi) // 2
        if buf[mid] <= v:
            lo = mid + 1
        else:
            hi = mid
    return lo


# ------------------------------------------------------------------------------------------
# cores: one dense series x (finite values only) -> res (pre-filled with NaN)
# ------------------------------------------------------------------------------------------
@core
def _sum_core_nb(x, res, w, as_mean):
    # Running sum, recomputed from scratch at every w-th window to stop drift.
    s = 0.0
    since = 0
    for t in range(w - 1, x.shape[0]):
        if since == 0:
            s = 0.0
            for i in range(t - w + 1, t + 1):
                s += x[i]
        else:
            s += x[t] - x[t - w]
        since = since + 1 if since + 1 < w else 0
        res[t] = s / w if as_mean else s


@core
def _moments_core_nb(x, res, w, op, ddof):
    # Sums of powers of (x - c), c = the exact mean of the window at every w-th step, so
    # large offsets (prices ~1e4 with tiny variance) do not cancel catastrophically.
    c = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    s4 = 0.0
    run = 0
    since = 0
    for t in range(x.shape[0]):
        if t > 0 and x[t] == x[t - 1]:
            run += 1
        else:
            run = 1
        if t < w - 1:
            continue
        exact = since == 0
        since = since + 1 if since + 1 < w else 0
        if exact:
            c = _window_mean_nb(x, t - w + 1, t + 1)
            s1 = 0.0
            s2 = 0.0
            s3 = 0.0
            s4 = 0.0
            for i in range(t - w + 1, t + 1):
                d = x[i] - c
                d2 = d * d
                s1 += d
                s2 += d2
                s3 += d2 * d
                s4 += d2 * d2
        else:
            d = x[t] - c
            e = x[t - w] - c
            d2 = d * d
            e2 = e * e
            s1 += d - e
            s2 += d2 - e2
            s3 += d2 * d - e2 * e
            s4 += d2 * d2 - e2 * e2
        res[t] = _moment_stat_nb(s1, s2, s3, s4, w, op, ddof, run >= w)


@core
def _moment_stat_nb(s1, s2, s3, s4, w, op, ddof, constant):
    n = float(w)
    if op == TS_VAR or op == TS_STD:
        if n - ddof <= 0:
            return math.nan
        ss = s2 - s1 * s1 / n
        if constant or ss < 0.0:
            ss = 0.0
        v = ss / (n - ddof)
        return math.sqrt(v) if op == TS_STD else v
    a = s1 / n
    b = s2 / n - a * a
    if constant or b <= 1e-14:
        return math.nan
    c = s3 / n - a * a * a - 3.0 * a * b
    if op == TS_SKEW:
        if w < 3:
            return math.nan
        r = math.sqrt(b)
        return (math.sqrt(n * (n - 1.0)) * c) / ((n - 2.0) * r * r * r)
    if w < 4:
        return math.nan
    d = s4 / n - a * a * a * a - 6.0 * b * a * a - 4.0 * c * a
    k = (n * n - 1.0) * d / (b * b) - 3.0 * ((n - 1.0) ** 2)
    return k / ((n - 2.0) * (n - 3.0))


@core
def _minmax_core_nb(x, res, w, op, pos_after, value_after):
    # van Herk / Gil-Werman: cut the series into blocks of w. A window [s, t] is the tail of
    # s's block plus the head of t's block, so its extreme is the better of the extreme
    # from s to its block's end (a backward scan, kept per position) and the extreme from
    # t's block start to t (a forward scan): O(1) per step, no data-dependent loops. Values
    # are compared as sign * x so one loop serves max and min; ties go to the earliest
    # position, as with numpy.argmax.
    n = x.shape[0]
    sign = 1.0 if op == TS_MAX or op == TS_ARGMAX else -1.0
    for start in range(0, n, w):
        best = min(start + w, n) - 1
        top = sign * x[best]
        for i in range(best, start - 1, -1):
            v = sign * x[i]
            if v >= top:
                top = v
                best = i
            pos_after[i] = best
            value_after[i] = top
    head = 0
    head_top = 0.0
    since = 0
    for t in range(n):
        v = sign * x[t]
        if since == 0 or v > head_top:
            head = t
            head_top = v
        since = since + 1 if since + 1 < w else 0
        if t < w - 1:
            continue
        s = t - w + 1
        best = pos_after[s] if value_after[s] >= head_top else head
        if op == TS_MAX or op == TS_MIN:
            res[t] = x[best]
        else:
            res[t] = best - s + 1


@core
def _rank_core_nb(x, res, w):
    # Count of window values below / not above the newest: O(window) per step, but a
    # branch-free loop the compiler vectorises, faster than a sorted window at w <= ~100.
    for t in range(w - 1, x.shape[0]):
        window = x[t - w + 1:t + 1]  # a view: no wraparound branch, so it vectorises
        v = x[t]
        below = 0
        not_above = 0
        for i in range(w):
            below += window[i] < v
            not_above += window[i] <= v
        res[t] = (below + not_above + 1.0) / (2.0 * w)


@core
def _quantile_core_nb(x, res, w, q, buf):
    # Sorted window: the value leaving is overwritten by the one entering, which then moves
    # to its place (the shift covers only the ranks between the two values).
    m = 0
    for t in range(x.shape[0]):
        v = x[t]
        if t < w:
            k = _bisect_right_nb(buf, m, v)
            for i in range(m, k, -1):
                buf[i] = buf[i - 1]
            buf[k] = v
            m += 1
        else:
            k = _bisect_left_nb(buf, m, x[t - w])
            while k + 1 < m and buf[k + 1] < v:
                buf[k] = buf[k + 1]
                k += 1
            while k > 0 and buf[k - 1] > v:
                buf[k] = buf[k - 1]
                k -= 1
            buf[k] = v
        if t < w - 1:
            continue
        pos = q * (w - 1)
        lo = int(pos)
        if lo >= w - 1:
            res[t] = buf[w - 1]
        elif pos == lo:
            res[t] = buf[lo]
        else:
            res[t] = buf[lo] + (buf[lo + 1] - buf[lo]) * (pos - lo)


@core
def _linear_core_nb(x, res, w, op):
    # OLS of the window on 1..w (slope, R^2, newest residual) and the linear-weighted mean.
    xbar = (w + 1.0) / 2.0
    sxx = w * (w * w - 1.0) / 12.0
    den = w * (w + 1.0) / 2.0
    c = 0.0
    sy = 0.0
    siy = 0.0
    syy = 0.0
    run = 0
    since = 0
    for t in range(x.shape[0]):
        if t > 0 and x[t] == x[t - 1]:
            run += 1
        else:
            run = 1
        if t < w - 1:
            continue
        exact = since == 0
        since = since + 1 if since + 1 < w else 0
        if exact:
            c = _window_mean_nb(x, t - w + 1, t + 1)
            sy = 0.0
            siy = 0.0
            syy = 0.0
            for i in range(t - w + 1, t + 1):
                d = x[i] - c
                sy += d
                siy += (i - t + w) * d
                syy += d * d
        else:
            d = x[t] - c
            e = x[t - w] - c
            siy += w * d - sy
            sy += d - e
            syy += d * d - e * e
        if op == TS_WMA:
            res[t] = c + siy / den
            continue
        if sxx <= 0.0:
            continue
        sxy = siy - xbar * sy
        slope = sxy / sxx
        if op == TS_SLOPE:
            res[t] = slope
        elif op == TS_RESI:
            res[t] = (x[t] - c) - (sy / w + slope * (w - xbar))
        else:
            vyy = syy - sy * sy / w
            if run < w and vyy > 0.0:
                res[t] = sxy * sxy / (sxx * vyy)


@core
def _ema_core_nb(x, res, span, start):
    # TA-Lib EMA: seeded with the SMA of the `span` values ending at `start`.
    n = x.shape[0]
    if start >= n or start < span - 1:
        return
    k = 2.0 / (span + 1.0)
    e = _window_mean_nb(x, start - span + 1, start + 1)
    res[start] = e
    for t in range(start + 1, n):
        e = (x[t] - e) * k + e
        res[t] = e


@core
def _shift_core_nb(x, res, d, op):
    for t in range(d, x.shape[0]):
        prev = x[t - d]
        if op == TS_DELAY:
            res[t] = prev
        elif op == TS_DELTA:
            res[t] = x[t] - prev
        elif prev != 0.0:
            res[t] = x[t] / prev - 1.0


@core
def _count_core_nb(x, res, w):
    cnt = 0
    for t in range(x.shape[0]):
        if x[t] != 0.0:
            cnt += 1
        if t >= w and x[t - w] != 0.0:
            cnt -= 1
        if t >= w - 1:
            res[t] = cnt


@core
def _mad_core_nb(x, res, w):
    # Mean absolute deviation from the window mean (Qlib Mad): O(window) per step.
    for t in range(w - 1, x.shape[0]):
        window = x[t - w + 1:t + 1]
        avg = _window_mean_nb(x, t - w + 1, t + 1)
        dev = 0.0
        for i in range(w):
            dev += abs(window[i] - avg)
        res[t] = dev / w


@core
def _ts1_core_nb(x, res, op, w, p, ibuf, fbuf):
    if op == TS_SUM or op == TS_MEAN:
        _sum_core_nb(x, res, w, op == TS_MEAN)
    elif op <= TS_KURT:
        _moments_core_nb(x, res, w, op, p)
    elif op <= TS_ARGMIN:
        _minmax_core_nb(x, res, w, op, ibuf, fbuf)
    elif op == TS_RANK:
        _rank_core_nb(x, res, w)
    elif op == TS_QUANTILE:
        _quantile_core_nb(x, res, w, p, fbuf)
    elif op <= TS_WMA:
        _linear_core_nb(x, res, w, op)
    elif op == TS_EMA:
        _ema_core_nb(x, res, w, w - 1)
    elif op <= TS_PCT_CHANGE:
        _shift_core_nb(x, res, w, op)
    elif op == TS_COUNT:
        _count_core_nb(x, res, w)
    else:
        _mad_core_nb(x, res, w)


@core
def ts1_scratch_nb(op, w, n_rows):
    """Lengths of the integer and float scratch buffers ``op`` needs per column of ``n_rows``.

    Examples
    --------
    >>> ts1_scratch_nb(TS_MAX, 5, 100), ts1_scratch_nb(TS_QUANTILE, 5, 100)
    ((101, 101), (1, 6))
    """
    if TS_MAX <= op <= TS_ARGMIN:
        return n_rows + 1, n_rows + 1
    if op == TS_QUANTILE:
        return 1, min(w, n_rows) + 1
    return 1, 1


@core
def ts1_column_nb(col, dest, op, w, p, idx, vals, ibuf, fbuf):
    """Rolling kernel ``op`` over one column ``col`` (all rows) into ``dest``.

    ``idx`` and ``vals`` hold the compressed column (as long as ``col``), ``ibuf`` and
    ``fbuf`` are the core's scratch (:func:`ts1_scratch_nb`). Shared by the CPU driver and
    the GPU kernel.
    """
    _fill_nan_nb(dest)
    first, last = _finite_span_nb(col)
    n = last - first
    if n == 0 or _count_finite_nb(col, first, last) == n:
        # one unbroken run (e.g. missing only before listing or after delisting)
        _ts1_core_nb(col[first:last], dest[first:last], op, w, p, ibuf, fbuf)
        return
    n = _compress_nb(col, idx, vals)
    _ts1_core_nb(vals[:n], dest[:n], op, w, p, ibuf, fbuf)
    _expand_nb(dest, idx, n)


@njit(parallel=True, cache=True)
def _ts1_series_nb(xt, op, w, p):
    n_series, n_rows = xt.shape
    out = np.empty((n_series, n_rows))
    n_int, n_float = ts1_scratch_nb(op, w, n_rows)
    for j in prange(n_series):
        ints = np.empty(n_rows + n_int, np.int64)  # one allocation each per column
        floats = np.empty(n_rows + n_float)
        ts1_column_nb(xt[j], out[j], op, w, p, ints[:n_rows], floats[:n_rows], ints[n_rows:],
                      floats[n_rows:])
    return out


def ts1_nb(x, op, w, p):
    """Rolling kernel ``op`` (a ``TS_*`` code) over each column of the 2-D array ``x``.

    ``w`` is the window (or span, or shift), ``p`` the extra parameter (ddof for
    var/std, q for quantile). Non-finite entries are skipped and stay NaN. The result is
    Fortran-ordered (each column contiguous); a Fortran-ordered ``x`` is read without a copy.
    """
    return _ts1_series_nb(series_major(x), op, w, p).T


# ------------------------------------------------------------------------------------------
# two-input rolling kernels
# ------------------------------------------------------------------------------------------
@core
def _ts2_core_nb(x, y, res, op, w):
    cx = 0.0
    cy = 0.0
    sx = 0.0
    sy = 0.0
    sxx = 0.0
    syy = 0.0
    sxy = 0.0
    run_x = 0
    run_y = 0
    since = 0
    for t in range(x.shape[0]):
        if t > 0 and x[t] == x[t - 1]:
            run_x += 1
        else:
            run_x = 1
        if t > 0 and y[t] == y[t - 1]:
            run_y += 1
        else:
            run_y = 1
        if t < w - 1:
            continue
        exact = since == 0
        since = since + 1 if since + 1 < w else 0
        if exact:
            cx = _window_mean_nb(x, t - w + 1, t + 1)
            cy = _window_mean_nb(y, t - w + 1, t + 1)
            sx = 0.0
            sy = 0.0
            sxx = 0.0
            syy = 0.0
            sxy = 0.0
            for i in range(t - w + 1, t + 1):
                dx = x[i] - cx
                dy = y[i] - cy
                sx += dx
                sy += dy
                sxx += dx * dx
                syy += dy * dy
                sxy += dx * dy
        else:
            dx = x[t] - cx
            dy = y[t] - cy
            ex = x[t - w] - cx
            ey = y[t - w] - cy
            sx += dx - ex
            sy += dy - ey
            sxx += dx * dx - ex * ex
            syy += dy * dy - ey * ey
            sxy += dx * dy - ex * ey
        if w < 2:
            continue
        cov = sxy - sx * sy / w
        if op == TS_COV:
            res[t] = cov / (w - 1.0)
            continue
        vx = sxx - sx * sx / w
        vy = syy - sy * sy / w
        if run_x >= w or run_y >= w or vx <= 0.0 or vy <= 0.0:
            continue
        res[t] = cov / math.sqrt(vx * vy)


@core
def ts2_column_nb(xcol, ycol, dest, op, w, idx, xv, yv):
    """Rolling two-input kernel ``op`` over one column pair into ``dest`` (scratch as long
    as the columns). Shared by the CPU driver and the GPU kernel."""
    _fill_nan_nb(dest)
    n = _compress_pair_nb(xcol, ycol, idx, xv, yv)
    _ts2_core_nb(xv[:n], yv[:n], dest[:n], op, w)
    _expand_nb(dest, idx, n)


@njit(parallel=True, cache=True)
def _ts2_series_nb(xt, yt, op, w):
    n_series, n_rows = xt.shape
    out = np.empty((n_series, n_rows))
    for j in prange(n_series):
        ts2_column_nb(xt[j], yt[j], out[j], op, w, np.empty(n_rows, np.int64),
                      np.empty(n_rows), np.empty(n_rows))
    return out


def ts2_nb(x, y, op, w):
    """Rolling two-input kernel ``op`` (``TS_CORR``/``TS_COV``) per column pair.

    An observation needs both ``x`` and ``y`` finite. The result is Fortran-ordered.
    """
    return _ts2_series_nb(series_major(x), series_major(y), op, w).T


# ------------------------------------------------------------------------------------------
# cross-section rank
# ------------------------------------------------------------------------------------------
@core
def _heap_sift_nb(values, order, root, end):
    # Move order[root] down the max-heap order[root:end] (keyed by values[order[.]]).
    while True:
        child = 2 * root + 1
        if child >= end:
            return
        if child + 1 < end and values[order[child + 1]] > values[order[child]]:
            child += 1
        if values[order[root]] >= values[order[child]]:
            return
        swap = order[root]
        order[root] = order[child]
        order[child] = swap
        root = child


@core
def heap_argsort_nb(values, m, order):
    """``order[:m]`` = indices sorting ``values[:m]`` ascending, by an in-place heap sort.

    The GPU's :func:`_argsort_nb` (no allocation, no recursion). Equal values may come in
    any order; callers average over ties.

    Examples
    --------
    >>> order = np.empty(4, np.int64)
    >>> heap_argsort_nb(np.array([3.0, 1.0, 2.0, 0.5]), 4, order)
    >>> order.tolist()
    [3, 1, 2, 0]
    """
    for i in range(m):
        order[i] = i
    for root in range(m // 2 - 1, -1, -1):
        _heap_sift_nb(values, order, root, m)
    for end in range(m - 1, 0, -1):
        swap = order[0]
        order[0] = order[end]
        order[end] = swap
        _heap_sift_nb(values, order, 0, end)


@core(gpu=heap_argsort_nb)
def _argsort_nb(values, m, order):
    # Sorting primitive: NumPy's introsort on the CPU, heap_argsort_nb on the GPU.
    order[:m] = np.argsort(values[:m])


@core
def rank_row_nb(row, dest, vals, cols, order, as_fraction):
    """Average rank of each finite entry of ``row`` into ``dest`` (NaN elsewhere).

    Ranks are 1-based and ties share their mean rank; with ``as_fraction`` each is divided
    by the count of finite entries and a row with fewer than two is all NaN (``cs_rank``).
    ``vals``, ``cols`` and ``order`` are scratch as long as the row. Sorts the row's finite
    values once and walks the runs of ties. Shared by the CPU drivers and the GPU kernel.

    Examples
    --------
    >>> dest, vals = np.empty(4), np.empty(4)
    >>> cols, order = np.empty(4, np.int64), np.empty(4, np.int64)
    >>> rank_row_nb(np.array([3.0, 1.0, 3.0, np.nan]), dest, vals, cols, order, False)
    >>> dest.tolist()
    [2.5, 1.0, 2.5, nan]
    >>> rank_row_nb(np.array([3.0, 1.0, 3.0, np.nan]), dest, vals, cols, order, True)
    >>> dest.tolist()
    [0.8333333333333334, 0.3333333333333333, 0.8333333333333334, nan]
    """
    m = 0
    for j in range(row.shape[0]):
        v = row[j]
        dest[j] = math.nan
        if math.isfinite(v):
            vals[m] = v
            cols[m] = j
            m += 1
    if m < 2 and (as_fraction or m == 0):
        return
    _argsort_nb(vals, m, order)
    scale = 2.0 * m if as_fraction else 2.0
    k = 0
    while k < m:
        e = k
        while e + 1 < m and vals[order[e + 1]] == vals[order[k]]:
            e += 1
        r = (k + e + 2.0) / scale
        for q in range(k, e + 1):
            dest[cols[order[q]]] = r
        k = e + 1


@njit(parallel=True, cache=True)
def rank_rows_nb(x, as_fraction):
    """:func:`rank_row_nb` of every row, rows in parallel (a new C-ordered array)."""
    n_rows, n_cols = x.shape
    out = np.empty((n_rows, n_cols))
    for i in prange(n_rows):
        rank_row_nb(x[i], out[i], np.empty(n_cols), np.empty(n_cols, np.int64),
                    np.empty(n_cols, np.int64), as_fraction)
    return out


def cs_rank_nb(x):
    """Average rank / count of each finite entry within its row; NaN for rows < 2 finite."""
    return rank_rows_nb(x, True)


@core
def pearson_row_nb(x, y, mask):
    """Pearson correlation of ``x`` and ``y`` over the entries where ``mask`` is True.

    Means first, then the sums of products of deviations (two passes, no temporaries);
    NaN for fewer than two entries or a constant side; clipped to [-1, 1].

    Examples
    --------
    >>> pearson_row_nb(np.array([1.0, 2.0, 3.0, 9.0]), np.array([2.0, 4.0, 7.0, 0.0]),
    ...                np.array([True, True, True, False]))
    0.9933992677987828
    """
    n = 0
    sx = 0.0
    sy = 0.0
    for j in range(x.shape[0]):
        if mask[j]:
            n += 1
            sx += x[j]
            sy += y[j]
    if n < 2:
        return math.nan
    mx = sx / n
    my = sy / n
    sxy = 0.0
    sxx = 0.0
    syy = 0.0
    for j in range(x.shape[0]):
        if mask[j]:
            dx = x[j] - mx
            dy = y[j] - my
            sxy += dx * dy
            sxx += dx * dx
            syy += dy * dy
    if not (sxx > 0.0 and syy > 0.0):
        return math.nan
    r = sxy / math.sqrt(sxx * syy)
    if r > 1.0:
        return 1.0
    if r < -1.0:
        return -1.0
    return r  # NaN stays NaN (an infinite value under the mask)


@njit(parallel=True, cache=True)
def pearson_rows_nb(x, y, mask):
    """:func:`pearson_row_nb` of every row, rows in parallel."""
    out = np.empty(x.shape[0])
    for i in prange(x.shape[0]):
        out[i] = pearson_row_nb(x[i], y[i], mask[i])
    return out


# ------------------------------------------------------------------------------------------
# indicators: TA-Lib's algorithms on the dense series of rows where all inputs are finite
# ------------------------------------------------------------------------------------------
@core
def _true_range_nb(high, low, prev_close):
    r = high - low
    a = abs(high - prev_close)
    if a > r:
        r = a
    b = abs(low - prev_close)
    if b > r:
        r = b
    return r


@core
def _multi_ema_core_nb(x, res, tmp, p, depth):
    # EMA, DEMA (depth 2) or TEMA (depth 3); each stage is an EMA of the previous stage's
    # defined values, seeded with their first p-value SMA.
    n = x.shape[0]
    _ema_core_nb(x, tmp[0], p, p - 1)
    for k in range(1, depth):
        off = k * (p - 1)
        if off >= n:
            return
        _ema_core_nb(tmp[k - 1][off:n], tmp[k][off:n], p, p - 1)
    for t in range(depth * (p - 1), n):
        if depth == 1:
            res[t] = tmp[0][t]
        elif depth == 2:
            res[t] = 2.0 * tmp[0][t] - tmp[1][t]
        else:
            res[t] = 3.0 * tmp[0][t] - 3.0 * tmp[1][t] + tmp[2][t]


@core
def _macd_core_nb(x, res, tmp, fast, slow, signal, which):
    # TA-Lib alignment: both EMAs start at index slow-1 (the fast one seeded with the SMA of
    # the `fast` values ending there); the signal EMA starts signal-1 values later.
    if slow < fast:
        fast, slow = slow, fast
    n = x.shape[0]
    _ema_core_nb(x, tmp[0], fast, slow - 1)
    _ema_core_nb(x, tmp[1], slow, slow - 1)
    for t in range(slow - 1, n):
        tmp[2][t] = tmp[0][t] - tmp[1][t]
    if slow - 1 >= n:
        return
    _ema_core_nb(tmp[2][slow - 1:n], tmp[1][slow - 1:n], signal, signal - 1)
    for t in range(slow + signal - 2, n):
        if which == IND_MACD:
            res[t] = tmp[2][t]
        elif which == IND_MACD_SIGNAL:
            res[t] = tmp[1][t]
        else:
            res[t] = tmp[2][t] - tmp[1][t]


@core
def _rsi_core_nb(x, res, p):
    n = x.shape[0]
    if n <= p:
        return
    gain = 0.0
    loss = 0.0
    for t in range(1, p + 1):
        d = x[t] - x[t - 1]
        if d < 0:
            loss -= d
        else:
            gain += d
    loss /= p
    gain /= p
    total = gain + loss
    res[p] = 0.0 if -TA_EPSILON < total < TA_EPSILON else 100.0 * (gain / total)
    for t in range(p + 1, n):
        d = x[t] - x[t - 1]
        loss *= p - 1
        gain *= p - 1
        if d < 0:
            loss -= d
        else:
            gain += d
        loss /= p
        gain /= p
        total = gain + loss
        res[t] = 0.0 if -TA_EPSILON < total < TA_EPSILON else 100.0 * (gain / total)


@core
def _bbands_core_nb(x, res, tmp, p, nbdev, which):
    _sum_core_nb(x, tmp[0], p, True)
    _moments_core_nb(x, tmp[1], p, TS_VAR, 0.0)
    for t in range(p - 1, x.shape[0]):
        var = tmp[1][t]
        std = math.sqrt(var) if var >= TA_EPSILON else 0.0
        if which == IND_BBANDS_UPPER:
            res[t] = tmp[0][t] + nbdev * std
        elif which == IND_BBANDS_MIDDLE:
            res[t] = tmp[0][t]
        else:
            res[t] = tmp[0][t] - nbdev * std


@core
def _atr_core_nb(high, low, close, res, p, normalised):
    n = close.shape[0]
    if n <= p:
        return
    atr = 0.0
    for t in range(1, p + 1):
        atr += _true_range_nb(high[t], low[t], close[t - 1])
    atr /= p
    for t in range(p, n):
        if t > p:
            atr *= p - 1
            atr += _true_range_nb(high[t], low[t], close[t - 1])
            atr /= p
        if not normalised:
            res[t] = atr
        elif close[t] != 0.0:
            res[t] = (atr / close[t]) * 100.0
        else:
            res[t] = 0.0


@core
def _cci_core_nb(high, low, close, res, tmp, p):
    n = close.shape[0]
    for t in range(n):
        tmp[0][t] = (high[t] + low[t] + close[t]) / 3.0
    for t in range(p - 1, n):
        avg = _window_mean_nb(tmp[0], t - p + 1, t + 1)
        dev = 0.0
        for i in range(t - p + 1, t + 1):
            dev += abs(tmp[0][i] - avg)
        diff = tmp[0][t] - avg
        if diff != 0.0 and dev != 0.0:
            res[t] = diff / (0.015 * (dev / p))
        else:
            res[t] = 0.0


@core
def _window_extremes_nb(high, low, start, stop):
    hh = high[start]
    ll = low[start]
    for i in range(start + 1, stop):
        if high[i] > hh:
            hh = high[i]
        if low[i] < ll:
            ll = low[i]
    return hh, ll


@core
def _willr_core_nb(high, low, close, res, p):
    for t in range(p - 1, close.shape[0]):
        hh, ll = _window_extremes_nb(high, low, t - p + 1, t + 1)
        diff = (hh - ll) / (-100.0)
        res[t] = (hh - close[t]) / diff if diff != 0.0 else 0.0


@core
def _stoch_core_nb(high, low, close, res, tmp, fastk, slowk, slowd, which):
    n = close.shape[0]
    for t in range(fastk - 1, n):
        hh, ll = _window_extremes_nb(high, low, t - fastk + 1, t + 1)
        diff = (hh - ll) / 100.0
        tmp[0][t] = (close[t] - ll) / diff if diff != 0.0 else 0.0
    k_start = fastk + slowk - 2
    for t in range(k_start, n):
        tmp[1][t] = _window_mean_nb(tmp[0], t - slowk + 1, t + 1)
    first = k_start + slowd - 1
    for t in range(first, n):
        if which == IND_STOCH_K:
            res[t] = tmp[1][t]
        else:
            res[t] = _window_mean_nb(tmp[1], t - slowd + 1, t + 1)


@core
def _mfi_core_nb(high, low, close, volume, res, tmp, p):
    # tmp[0]: positive money flow of each bar, tmp[1]: negative money flow. As TA-Lib 0.6:
    # a typical-price move within 1e-14 of the prices' scale counts as no move.
    n = close.shape[0]
    prev = (high[0] + low[0] + close[0]) / 3.0 if n > 0 else 0.0
    for t in range(1, n):
        tp = (high[t] + low[t] + close[t]) / 3.0
        d = tp - prev
        flat = abs(d) <= MFI_DEAD_ZONE * (abs(tp) + abs(prev))
        prev = tp
        mf = 0.0 if flat else tp * volume[t]
        tmp[0][t] = 0.0 if d < 0.0 else mf
        tmp[1][t] = mf if d < 0.0 else 0.0
    for t in range(p, n):
        pos = 0.0
        neg = 0.0
        for i in range(t - p + 1, t + 1):
            pos += tmp[0][i]
            neg += tmp[1][i]
        total = pos + neg
        if total <= 0.0:
            res[t] = 0.0
        else:
            res[t] = 100.0 * (min(max(pos, 0.0), total) / total)


@core
def _obv_core_nb(close, volume, res):
    n = close.shape[0]
    if n == 0:
        return
    obv = volume[0]
    res[0] = obv
    for t in range(1, n):
        if close[t] > close[t - 1]:
            obv += volume[t]
        elif close[t] < close[t - 1]:
            obv -= volume[t]
        res[t] = obv


@core
def _roc_core_nb(x, res, p):
    for t in range(p, x.shape[0]):
        prev = x[t - p]
        res[t] = ((x[t] / prev) - 1.0) * 100.0 if prev != 0.0 else 0.0


@core
def _dm_step_nb(high, low, t):
    # (plus DM, minus DM) of bar t, TA-Lib's rule
    diff_p = high[t] - high[t - 1]
    diff_m = low[t - 1] - low[t]
    if diff_m > 0 and diff_p < diff_m:
        return 0.0, diff_m
    if diff_p > 0 and diff_p > diff_m:
        return diff_p, 0.0
    return 0.0, 0.0


@core
def _dx_nb(plus_dm, minus_dm, tr):
    # DX in percent, or -1 when TA-Lib would skip the update
    if -TA_EPSILON < tr < TA_EPSILON:
        return -1.0
    minus_di = 100.0 * (minus_dm / tr)
    plus_di = 100.0 * (plus_dm / tr)
    total = minus_di + plus_di
    if -TA_EPSILON < total < TA_EPSILON:
        return -1.0
    return 100.0 * (abs(minus_di - plus_di) / total)


@core
def _adx_core_nb(high, low, close, res, p):
    n = close.shape[0]
    if n <= 2 * p - 1:
        return
    plus_dm = 0.0
    minus_dm = 0.0
    tr = 0.0
    for t in range(1, p):
        dp, dm = _dm_step_nb(high, low, t)
        plus_dm += dp
        minus_dm += dm
        tr += _true_range_nb(high[t], low[t], close[t - 1])
    sum_dx = 0.0
    for t in range(p, 2 * p):
        dp, dm = _dm_step_nb(high, low, t)
        minus_dm -= minus_dm / p
        plus_dm -= plus_dm / p
        minus_dm += dm
        plus_dm += dp
        tr = tr - (tr / p) + _true_range_nb(high[t], low[t], close[t - 1])
        dx = _dx_nb(plus_dm, minus_dm, tr)
        if dx >= 0.0:
            sum_dx += dx
    adx = sum_dx / p
    res[2 * p - 1] = adx
    for t in range(2 * p, n):
        dp, dm = _dm_step_nb(high, low, t)
        minus_dm -= minus_dm / p
        plus_dm -= plus_dm / p
        minus_dm += dm
        plus_dm += dp
        tr = tr - (tr / p) + _true_range_nb(high[t], low[t], close[t - 1])
        dx = _dx_nb(plus_dm, minus_dm, tr)
        if dx >= 0.0:
            adx = ((adx * (p - 1)) + dx) / p
        res[t] = adx


@core
def _vwap_core_nb(high, low, close, volume, res, p):
    for t in range(p - 1, close.shape[0]):
        pv = 0.0
        vol = 0.0
        for i in range(t - p + 1, t + 1):
            pv += (high[i] + low[i] + close[i]) / 3.0 * volume[i]
            vol += volume[i]
        if vol != 0.0:
            res[t] = pv / vol


@core
def _ind_core_nb(high, low, close, volume, res, tmp, op, p1, p2, p3, f):
    if op == IND_SMA:
        _sum_core_nb(close, res, p1, True)
    elif op == IND_EMA:
        _multi_ema_core_nb(close, res, tmp, p1, 1)
    elif op == IND_WMA:
        _linear_core_nb(close, res, p1, TS_WMA)
    elif op == IND_DEMA:
        _multi_ema_core_nb(close, res, tmp, p1, 2)
    elif op == IND_TEMA:
        _multi_ema_core_nb(close, res, tmp, p1, 3)
    elif op <= IND_MACD_HIST:
        _macd_core_nb(close, res, tmp, p1, p2, p3, op)
    elif op == IND_RSI:
        _rsi_core_nb(close, res, p1)
    elif op <= IND_BBANDS_LOWER:
        _bbands_core_nb(close, res, tmp, p1, f, op)
    elif op <= IND_NATR:
        _atr_core_nb(high, low, close, res, p1, op == IND_NATR)
    elif op == IND_CCI:
        _cci_core_nb(high, low, close, res, tmp, p1)
    elif op == IND_WILLR:
        _willr_core_nb(high, low, close, res, p1)
    elif op == IND_MFI:
        _mfi_core_nb(high, low, close, volume, res, tmp, p1)
    elif op == IND_OBV:
        _obv_core_nb(close, volume, res)
    elif op == IND_ROC:
        _roc_core_nb(close, res, p1)
    elif op <= IND_STOCH_D:
        _stoch_core_nb(high, low, close, res, tmp, p1, p2, p3, op)
    elif op == IND_ADX:
        _adx_core_nb(high, low, close, res, p1)
    else:
        _vwap_core_nb(high, low, close, volume, res, p1)


@core
def ind_column_nb(high, low, close, volume, dest, op, p1, p2, p3, f, idx, hv, lv, cv, vv,
                  tmp):
    """Indicator ``op`` over one column of each input into ``dest``, on the rows where all
    four are finite. ``idx``, ``hv``, ``lv``, ``cv``, ``vv`` are scratch as long as the
    columns, ``tmp`` a (3, rows) scratch. Shared by the CPU driver and the GPU kernel."""
    _fill_nan_nb(dest)
    n = _compress_bars_nb(high, low, close, volume, idx, hv, lv, cv, vv)
    for k in range(3):
        _fill_nan_nb(tmp[k][:n])
    _ind_core_nb(hv[:n], lv[:n], cv[:n], vv[:n], dest[:n], tmp, op, p1, p2, p3, f)
    _expand_nb(dest, idx, n)


@njit(parallel=True, cache=True)
def _ind_series_nb(ht, lt, ct, vt, op, p1, p2, p3, f):
    n_series, n_rows = ct.shape
    out = np.empty((n_series, n_rows))
    for j in prange(n_series):
        ind_column_nb(ht[j], lt[j], ct[j], vt[j], out[j], op, p1, p2, p3, f,
                      np.empty(n_rows, np.int64), np.empty(n_rows), np.empty(n_rows),
                      np.empty(n_rows), np.empty(n_rows), np.empty((3, n_rows)))
    return out


def ind_nb(high, low, close, volume, op, p1, p2, p3, f):
    """Indicator ``op`` (an ``IND_*`` code) per column on rows where all inputs are finite.

    ``p1, p2, p3`` are the integer periods, ``f`` the float parameter (Bollinger width).
    Inputs an indicator does not use may be passed as ``close`` again. The result is
    Fortran-ordered.
    """
    inputs = (high, low, close, volume)
    major: dict[int, np.ndarray] = {}
    for a in inputs:
        if id(a) not in major:  # the same array passed twice is converted once
            major[id(a)] = series_major(a)
    ht, lt, ct, vt = (major[id(a)] for a in inputs)
    return _ind_series_nb(ht, lt, ct, vt, op, p1, p2, p3, f).T
