"""Numba CPU kernels behind :mod:`qilin.factors.ops` and :mod:`qilin.factors.indicators`.

Every time-series kernel follows the same shape: a parallel driver loops over columns
(``prange``), compresses the column to its finite observations, runs a *core* on that dense
series and scatters the results back to the rows they came from. The cores are plain loops
over one dense series; :mod:`qilin.factors.kernels_gpu` mirrors them line by line in CUDA.

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

# TA-Lib's TA_IS_ZERO threshold.
TA_EPSILON = 1e-8


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------
@njit(cache=True)
def _compress_nb(col, idx, vals):
    n = 0
    for t in range(col.shape[0]):
        v = col[t]
        if np.isfinite(v):
            idx[n] = t
            vals[n] = v
            n += 1
    return n


@njit(cache=True)
def _window_mean_nb(x, start, stop):
    s = 0.0
    for i in range(start, stop):
        s += x[i]
    return s / (stop - start)


@njit(cache=True)
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


@njit(cache=True)
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
@njit(cache=True)
def _sum_core_nb(x, res, w, as_mean):
    # Running sum, recomputed from scratch at every w-th window to stop drift.
    s = 0.0
    for t in range(w - 1, x.shape[0]):
        if (t - w + 1) % w == 0:
            s = 0.0
            for i in range(t - w + 1, t + 1):
                s += x[i]
        else:
            s += x[t] - x[t - w]
        res[t] = s / w if as_mean else s


@njit(cache=True)
def _moments_core_nb(x, res, w, op, ddof):
    # Sums of powers of (x - c), c = the exact mean of the window at every w-th step, so
    # large offsets (prices ~1e4 with tiny variance) do not cancel catastrophically.
    c = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    s4 = 0.0
    run = 0
    for t in range(x.shape[0]):
        if t > 0 and x[t] == x[t - 1]:
            run += 1
        else:
            run = 1
        if t < w - 1:
            continue
        if (t - w + 1) % w == 0:
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


@njit(cache=True)
def _moment_stat_nb(s1, s2, s3, s4, w, op, ddof, constant):
    n = float(w)
    if op == TS_VAR or op == TS_STD:
        if n - ddof <= 0:
            return np.nan
        ss = s2 - s1 * s1 / n
        if constant or ss < 0.0:
            ss = 0.0
        v = ss / (n - ddof)
        return math.sqrt(v) if op == TS_STD else v
    a = s1 / n
    b = s2 / n - a * a
    if constant or b <= 1e-14:
        return np.nan
    c = s3 / n - a * a * a - 3.0 * a * b
    if op == TS_SKEW:
        if w < 3:
            return np.nan
        r = math.sqrt(b)
        return (math.sqrt(n * (n - 1.0)) * c) / ((n - 2.0) * r * r * r)
    if w < 4:
        return np.nan
    d = s4 / n - a * a * a * a - 6.0 * b * a * a - 4.0 * c * a
    k = (n * n - 1.0) * d / (b * b) - 3.0 * ((n - 1.0) ** 2)
    return k / ((n - 2.0) * (n - 3.0))


@njit(cache=True)
def _minmax_core_nb(x, res, w, op, deque):
    # Monotonic deque of positions; the front is the (first) extreme of the window.
    want_max = op == TS_MAX or op == TS_ARGMAX
    head = 0
    tail = 0
    for t in range(x.shape[0]):
        v = x[t]
        if want_max:
            while tail > head and x[deque[tail - 1]] < v:
                tail -= 1
        else:
            while tail > head and x[deque[tail - 1]] > v:
                tail -= 1
        deque[tail] = t
        tail += 1
        if deque[head] <= t - w:
            head += 1
        if t >= w - 1:
            if op == TS_MAX or op == TS_MIN:
                res[t] = x[deque[head]]
            else:
                res[t] = deque[head] - (t - w + 1) + 1


@njit(cache=True)
def _order_core_nb(x, res, w, op, q, buf):
    # Sorted window kept by binary-search insert/delete.
    m = 0
    for t in range(x.shape[0]):
        if t >= w:
            old = x[t - w]
            k = _bisect_left_nb(buf, m, old)
            for i in range(k, m - 1):
                buf[i] = buf[i + 1]
            m -= 1
        v = x[t]
        k = _bisect_right_nb(buf, m, v)
        for i in range(m, k, -1):
            buf[i] = buf[i - 1]
        buf[k] = v
        m += 1
        if t < w - 1:
            continue
        if op == TS_RANK:
            left = _bisect_left_nb(buf, m, v)
            right = _bisect_right_nb(buf, m, v)
            res[t] = (left + right + 1.0) / (2.0 * w)
        else:
            pos = q * (w - 1)
            lo = int(pos)
            if lo >= w - 1:
                res[t] = buf[w - 1]
            elif pos == lo:
                res[t] = buf[lo]
            else:
                res[t] = buf[lo] + (buf[lo + 1] - buf[lo]) * (pos - lo)


@njit(cache=True)
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
    for t in range(x.shape[0]):
        if t > 0 and x[t] == x[t - 1]:
            run += 1
        else:
            run = 1
        if t < w - 1:
            continue
        if (t - w + 1) % w == 0:
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


@njit(cache=True)
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


@njit(cache=True)
def _shift_core_nb(x, res, d, op):
    for t in range(d, x.shape[0]):
        prev = x[t - d]
        if op == TS_DELAY:
            res[t] = prev
        elif op == TS_DELTA:
            res[t] = x[t] - prev
        elif prev != 0.0:
            res[t] = x[t] / prev - 1.0


@njit(cache=True)
def _count_core_nb(x, res, w):
    cnt = 0
    for t in range(x.shape[0]):
        if x[t] != 0.0:
            cnt += 1
        if t >= w and x[t - w] != 0.0:
            cnt -= 1
        if t >= w - 1:
            res[t] = cnt


@njit(cache=True)
def _ts1_core_nb(x, res, op, w, p, ibuf, fbuf):
    if op == TS_SUM or op == TS_MEAN:
        _sum_core_nb(x, res, w, op == TS_MEAN)
    elif op <= TS_KURT:
        _moments_core_nb(x, res, w, op, p)
    elif op <= TS_ARGMIN:
        _minmax_core_nb(x, res, w, op, ibuf)
    elif op <= TS_QUANTILE:
        _order_core_nb(x, res, w, op, p, fbuf)
    elif op <= TS_WMA:
        _linear_core_nb(x, res, w, op)
    elif op == TS_EMA:
        _ema_core_nb(x, res, w, w - 1)
    elif op <= TS_PCT_CHANGE:
        _shift_core_nb(x, res, w, op)
    else:
        _count_core_nb(x, res, w)


@njit(parallel=True, cache=True)
def ts1_nb(x, op, w, p):
    """Rolling kernel ``op`` (a ``TS_*`` code) over each column of the 2-D array ``x``.

    ``w`` is the window (or span, or shift), ``p`` the extra parameter (ddof for
    var/std, q for quantile). Non-finite entries are skipped and stay NaN.
    """
    n_rows, n_cols = x.shape
    out = np.full((n_rows, n_cols), np.nan)
    for j in prange(n_cols):
        idx = np.empty(n_rows, np.int64)
        vals = np.empty(n_rows)
        n = _compress_nb(x[:, j], idx, vals)
        res = np.full(n, np.nan)
        ibuf = np.empty(n + 1, np.int64)
        fbuf = np.empty(w + 1)
        _ts1_core_nb(vals[:n], res, op, w, p, ibuf, fbuf)
        for k in range(n):
            out[idx[k], j] = res[k]
    return out


# ------------------------------------------------------------------------------------------
# two-input rolling kernels
# ------------------------------------------------------------------------------------------
@njit(cache=True)
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
        if (t - w + 1) % w == 0:
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


@njit(parallel=True, cache=True)
def ts2_nb(x, y, op, w):
    """Rolling two-input kernel ``op`` (``TS_CORR``/``TS_COV``) per column pair.

    An observation needs both ``x`` and ``y`` finite.
    """
    n_rows, n_cols = x.shape
    out = np.full((n_rows, n_cols), np.nan)
    for j in prange(n_cols):
        idx = np.empty(n_rows, np.int64)
        xv = np.empty(n_rows)
        yv = np.empty(n_rows)
        n = 0
        for t in range(n_rows):
            a = x[t, j]
            b = y[t, j]
            if np.isfinite(a) and np.isfinite(b):
                idx[n] = t
                xv[n] = a
                yv[n] = b
                n += 1
        res = np.full(n, np.nan)
        _ts2_core_nb(xv[:n], yv[:n], res, op, w)
        for k in range(n):
            out[idx[k], j] = res[k]
    return out


# ------------------------------------------------------------------------------------------
# cross-section rank
# ------------------------------------------------------------------------------------------
@njit(parallel=True, cache=True)
def cs_rank_nb(x):
    """Average rank / count of each finite entry within its row; NaN for rows < 2 finite."""
    n_rows, n_cols = x.shape
    out = np.full((n_rows, n_cols), np.nan)
    for i in prange(n_rows):
        buf = np.empty(n_cols)
        m = 0
        for j in range(n_cols):
            v = x[i, j]
            if np.isfinite(v):
                buf[m] = v
                m += 1
        if m < 2:
            continue
        srt = np.sort(buf[:m])
        for j in range(n_cols):
            v = x[i, j]
            if np.isfinite(v):
                left = _bisect_left_nb(srt, m, v)
                right = _bisect_right_nb(srt, m, v)
                out[i, j] = (left + right + 1.0) / (2.0 * m)
    return out
