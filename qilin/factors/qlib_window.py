"""Qlib's window policy: calendar windows with gaps and partial (``min_periods=1``) windows.

qilin's own policy (the default, :mod:`qilin.factors.ops`) reads a window as the last ``n``
*traded* days of a symbol and is NaN until ``n`` have been seen. Qlib evaluates its operators
on each instrument's *calendar* series, where a suspended day is a NaN row, with pandas
``rolling(n, min_periods=1)``:

* a window is the last ``n`` calendar rows (dates of the Panel), suspended days included
  and skipped inside it, so a window after a suspension holds fewer than ``n`` values;
* a window needs one observation (two for std/var/cov/corr, three for skew, four for kurt),
  so values start at a symbol's first bar and exist on suspended days too;
* ``Ref``/``Delta`` (``ts_delay``/``ts_delta``/``ts_pct_change``) shift by calendar rows;
* ``IdxMax``/``IdxMin`` (``ts_argmax``/``ts_argmin``) are ``numpy.argmax`` of the raw window
  counted from its start (a NaN inside the window is where numpy points, as in Qlib), the
  window starting no earlier than the input's first value;
* ``Rank`` is NaN on a NaN day, else the percentile of the newest among the window's values;
  ``Slope``/``Rsquare``/``Resi`` regress the window's values on their calendar positions
  (Qlib's Cython kernels); ``Rsquare`` and ``Corr`` are NaN where a rolling std is within
  2e-5 of 0 (Qlib's guard);
* comparisons (``>``, ``<``, ...) follow numpy: a NaN side compares False (``!=`` True),
  so ``Mean($close > Ref($close, 1), n)`` counts a suspension as a down day, as Qlib does;
  rows before the inputs' first value (before a listing) stay NaN, since Qlib's series
  start there.

:func:`qlib_registry` returns an operator registry with these definitions in place of the
built-in ones (same names and arguments); ``FactorCalculator(window_policy="qlib")`` and
``qilin factors compute --window-policy qlib`` use it. Operators Qlib does not have (EMA/WMA,
indicators, cross-sectional operators) keep qilin's definitions. The kernels are compiled
for the CPU (O(window) per value); GPU arrays are computed on the host and moved back.

Examples
--------
>>> import numpy as np
>>> x = np.array([1.0, 2.0, np.nan, 4.0, 5.0])   # a suspension on day 3
>>> ts_mean(x, 3).tolist()                        # calendar windows, min_periods=1
[1.0, 1.5, 1.5, 3.0, 4.5]
>>> from qilin.factors import ops
>>> ops.ts_mean(x, 3).tolist()                    # qilin: the last 3 traded days
[nan, nan, nan, 2.3333333333333335, 3.6666666666666665]
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit, prange

from qilin.backend import array_module, to_host
from qilin.factors.ops import as_panel_array, check_int
from qilin.factors.registry import OperatorRegistry, active_registry

SUM, MEAN, VAR, SKEW, KURT, MAX, MIN, ARGMAX, ARGMIN = 0, 1, 2, 3, 4, 5, 6, 7, 8
RANK, QUANTILE, MAD, SLOPE, RSQUARE, RESI, COUNT = 9, 10, 11, 12, 13, 14, 15
DELAY, DELTA, PCT_CHANGE = 16, 17, 18
COV, CORR = 0, 1
#: Qlib's near-zero std guard of Rsquare and Corr (``np.isclose(std, 0, atol=2e-5)``).
STD_GUARD = 2e-5


# ------------------------------------------------------------------------------ kernels
@njit(cache=True)
def _first_value_nb(col):
    for i in range(col.shape[0]):
        if not math.isnan(col[i]):
            return i
    return col.shape[0]


@njit(cache=True)
def _var_nb(buf, k, ddof):
    if k - ddof <= 0:
        return np.nan
    m = 0.0
    for i in range(k):
        m += buf[i]
    m /= k
    s = 0.0
    for i in range(k):
        s += (buf[i] - m) ** 2
    return s / (k - ddof)


@njit(cache=True)
def _moment_nb(buf, k, op):
    m = 0.0
    for i in range(k):
        m += buf[i]
    m /= k
    m2 = m3 = m4 = 0.0
    for i in range(k):
        d = buf[i] - m
        m2 += d * d
        m3 += d * d * d
        m4 += d * d * d * d
    m2 /= k
    m3 /= k
    m4 /= k
    if m2 <= 1e-14 * max(1.0, m * m):  # a flat window (pandas gives NaN)
        return np.nan
    if op == SKEW:
        g1 = m3 / m2 ** 1.5
        return math.sqrt(k * (k - 1.0)) / (k - 2.0) * g1
    g2 = m4 / (m2 * m2) - 3.0
    return ((k + 1.0) * g2 + 6.0) * (k - 1.0) / ((k - 2.0) * (k - 3.0))


@njit(cache=True)
def _regression_nb(buf, pos, k, op, newest, n):
    if k < 2:
        return np.nan
    xm = 0.0
    ym = 0.0
    for i in range(k):
        xm += pos[i]
        ym += buf[i]
    xm /= k
    ym /= k
    sxx = sxy = syy = 0.0
    for i in range(k):
        dx = pos[i] - xm
        dy = buf[i] - ym
        sxx += dx * dx
        sxy += dx * dy
        syy += dy * dy
    slope = sxy / sxx
    if op == SLOPE:
        return slope
    if op == RSQUARE:
        if math.sqrt(syy / (k - 1)) <= STD_GUARD:
            return np.nan
        return sxy * sxy / (sxx * syy)
    if math.isnan(newest):  # RESI: the newest point's residual
        return np.nan
    return newest - (slope * n + ym - slope * xm)


@njit(cache=True)
def _window_value_nb(x, j, lo, t, op, n, p, buf, pos):
    if op >= DELAY:
        if t - n < 0:
            return np.nan
        prev = x[t - n, j]
        if op == DELAY:
            return prev
        if op == DELTA:
            return x[t, j] - prev
        return np.nan if prev == 0.0 else x[t, j] / prev - 1.0
    k = 0
    first_nan = -1
    for i in range(lo, t + 1):
        v = x[i, j]
        if math.isnan(v):
            if first_nan < 0:
                first_nan = i
        else:
            buf[k] = v
            pos[k] = n - (t - i)
            k += 1
    if k == 0:
        return np.nan
    if op == SUM or op == MEAN:
        s = 0.0
        for i in range(k):
            s += buf[i]
        return s if op == SUM else s / k
    if op == VAR:
        return _var_nb(buf, k, int(p))
    if op == SKEW:
        return _moment_nb(buf, k, op) if k >= 3 else np.nan
    if op == KURT:
        return _moment_nb(buf, k, op) if k >= 4 else np.nan
    if op == MAX or op == MIN:
        best = buf[0]
        for i in range(1, k):
            if (op == MAX and buf[i] > best) or (op == MIN and buf[i] < best):
                best = buf[i]
        return best
    if op == ARGMAX or op == ARGMIN:
        if first_nan >= 0:  # numpy's argmax/argmin points at the first NaN
            return first_nan - lo + 1.0
        best_i = lo
        for i in range(lo + 1, t + 1):
            v = x[i, j]
            if (op == ARGMAX and v > x[best_i, j]) or (op == ARGMIN and v < x[best_i, j]):
                best_i = i
        return best_i - lo + 1.0
    if op == RANK:
        v = x[t, j]
        if math.isnan(v):
            return np.nan
        below = 0
        not_above = 0
        for i in range(k):
            below += buf[i] < v
            not_above += buf[i] <= v
        return (below + not_above + 1.0) / (2.0 * k)
    if op == MAD:
        m = 0.0
        for i in range(k):
            m += buf[i]
        m /= k
        s = 0.0
        for i in range(k):
            s += abs(buf[i] - m)
        return s / k
    if op == COUNT:
        c = 0.0
        for i in range(k):
            c += buf[i] != 0.0
        return c
    return _regression_nb(buf, pos, k, op, x[t, j], n)


@njit(cache=True)
def _sorted_quantile_nb(x, j, start, n, q, sb, out):
    # A sorted window updated per step (O(window) shifts, no sort): the calendar row
    # leaving is removed if it was a number, the entering one inserted if it is.
    m = 0
    for t in range(start, x.shape[0]):
        if t - n >= start:
            old = x[t - n, j]
            if not math.isnan(old):
                i = np.searchsorted(sb[:m], old)
                for k in range(i, m - 1):
                    sb[k] = sb[k + 1]
                m -= 1
        v = x[t, j]
        if not math.isnan(v):
            i = np.searchsorted(sb[:m], v)
            for k in range(m, i, -1):
                sb[k] = sb[k - 1]
            sb[i] = v
            m += 1
        if m > 0:
            pos = q * (m - 1)
            lo = int(pos)  # pos >= 0: truncation is floor
            hi = min(lo + 1, m - 1)
            out[t, j] = sb[lo] + (sb[hi] - sb[lo]) * (pos - lo)


@njit(parallel=True, cache=True)
def calendar_rolling_nb(x, op, n, p):
    """One-input operator ``op`` over calendar windows of ``n`` rows (min_periods=1)."""
    T, N = x.shape
    out = np.full((T, N), np.nan)
    for j in prange(N):
        buf = np.empty(n)
        pos = np.empty(n)
        start = _first_value_nb(x[:, j])
        if op == QUANTILE:
            _sorted_quantile_nb(x, j, start, n, p, buf, out)
            continue
        for t in range(start, T):
            lo = max(start, t - n + 1)
            out[t, j] = _window_value_nb(x, j, lo, t, op, n, p, buf, pos)
    return out


@njit(cache=True)
def _guard_std_nb(x, j, lo, t):
    k = 0
    m = 0.0
    for i in range(lo, t + 1):
        if not math.isnan(x[i, j]):
            k += 1
            m += x[i, j]
    if k < 2:
        return False
    m /= k
    s = 0.0
    for i in range(lo, t + 1):
        if not math.isnan(x[i, j]):
            s += (x[i, j] - m) ** 2
    return math.sqrt(s / (k - 1)) <= STD_GUARD


@njit(parallel=True, cache=True)
def calendar_rolling2_nb(x, y, op, n):
    """Rolling cov/corr of rows where both sides are numbers (pandas ``rolling.corr``)."""
    T, N = x.shape
    out = np.full((T, N), np.nan)
    for j in prange(N):
        for t in range(T):
            lo = max(0, t - n + 1)
            k = 0
            xm = 0.0
            ym = 0.0
            for i in range(lo, t + 1):
                if not (math.isnan(x[i, j]) or math.isnan(y[i, j])):
                    k += 1
                    xm += x[i, j]
                    ym += y[i, j]
            if k < 2:
                continue
            xm /= k
            ym /= k
            sxx = syy = sxy = 0.0
            for i in range(lo, t + 1):
                if not (math.isnan(x[i, j]) or math.isnan(y[i, j])):
                    dx = x[i, j] - xm
                    dy = y[i, j] - ym
                    sxx += dx * dx
                    syy += dy * dy
                    sxy += dx * dy
            if op == COV:
                out[t, j] = sxy / (k - 1)
            elif sxx > 0.0 and syy > 0.0:
                if not (_guard_std_nb(x, j, lo, t) or _guard_std_nb(y, j, lo, t)):
                    out[t, j] = sxy / math.sqrt(sxx * syy)
    return out


# ---------------------------------------------------------------------------- operators
def _run(x: Any, op: int, n: int, p: float = 0.0) -> Any:
    xp = array_module(x)
    a, was_1d = as_panel_array(to_host(x))
    out = calendar_rolling_nb(np.ascontiguousarray(a), op, n, float(p))
    out = out[:, 0] if was_1d else out
    return out if xp is np else xp.asarray(out)


def _run2(x: Any, y: Any, op: int, n: int) -> Any:
    xp = array_module(x, y)
    a, was_1d = as_panel_array(to_host(x))
    b, _ = as_panel_array(to_host(y), "y")
    if a.shape != b.shape:
        from qilin.errors import DataError

        raise DataError(f"x and y must have the same shape, got {a.shape} and {b.shape}")
    out = calendar_rolling2_nb(a, b, op, n)
    out = out[:, 0] if was_1d else out
    return out if xp is np else xp.asarray(out)


def ts_sum(x: Any, window: int) -> Any:
    """Qlib ``Sum``: sum of the numbers among the last ``window`` calendar rows."""
    return _run(x, SUM, check_int(window, "window"))


def ts_mean(x: Any, window: int) -> Any:
    """Qlib ``Mean``: mean of the numbers among the last ``window`` calendar rows."""
    return _run(x, MEAN, check_int(window, "window"))


def ts_var(x: Any, window: int, ddof: int = 1) -> Any:
    """Qlib ``Var``: variance (``ddof``) of the window's numbers."""
    return _run(x, VAR, check_int(window, "window"), check_int(ddof, "ddof", 0))


def ts_std(x: Any, window: int, ddof: int = 1) -> Any:
    """Qlib ``Std``: standard deviation (``ddof``) of the window's numbers.

    Examples
    --------
    >>> ts_std(np.array([1.0, np.nan, 3.0]), 2).tolist()
    [nan, nan, nan]
    >>> ts_std(np.array([1.0, np.nan, 3.0]), 3).tolist()
    [nan, nan, 1.4142135623730951]
    """
    with np.errstate(invalid="ignore"):
        return array_module(x).sqrt(ts_var(x, window, ddof))


def ts_skew(x: Any, window: int) -> Any:
    """Qlib ``Skew`` (pandas bias-corrected skewness; three numbers needed)."""
    return _run(x, SKEW, check_int(window, "window"))


def ts_kurt(x: Any, window: int) -> Any:
    """Qlib ``Kurt`` (pandas excess kurtosis; four numbers needed)."""
    return _run(x, KURT, check_int(window, "window"))


def ts_max(x: Any, window: int) -> Any:
    """Qlib ``Max`` over calendar windows."""
    return _run(x, MAX, check_int(window, "window"))


def ts_min(x: Any, window: int) -> Any:
    """Qlib ``Min`` over calendar windows."""
    return _run(x, MIN, check_int(window, "window"))


def ts_argmax(x: Any, window: int) -> Any:
    """Qlib ``IdxMax``: ``argmax + 1`` of the raw window (a NaN in it is where numpy points).

    Examples
    --------
    >>> ts_argmax(np.array([1.0, 3.0, 2.0, np.nan, 1.0]), 3).tolist()
    [1.0, 2.0, 2.0, 3.0, 2.0]
    """
    return _run(x, ARGMAX, check_int(window, "window"))


def ts_argmin(x: Any, window: int) -> Any:
    """Qlib ``IdxMin``: ``argmin + 1`` of the raw window."""
    return _run(x, ARGMIN, check_int(window, "window"))


def ts_rank(x: Any, window: int) -> Any:
    """Qlib ``Rank``: percentile of the newest value among the window's numbers.

    Examples
    --------
    >>> ts_rank(np.array([1.0, 3.0, np.nan, 2.0]), 3).tolist()
    [1.0, 1.0, nan, 0.5]
    """
    return _run(x, RANK, check_int(window, "window"))


def ts_quantile(x: Any, window: int, q: float) -> Any:
    """Qlib ``Quantile`` (linear interpolation among the window's numbers)."""
    if not 0.0 <= float(q) <= 1.0:
        from qilin.errors import ParameterError

        raise ParameterError(f"q must be within [0, 1], got {q!r}")
    return _run(x, QUANTILE, check_int(window, "window"), float(q))


def ts_median(x: Any, window: int) -> Any:
    """Qlib ``Med``."""
    return _run(x, QUANTILE, check_int(window, "window"), 0.5)


def ts_mad(x: Any, window: int) -> Any:
    """Qlib ``Mad``: mean absolute deviation of the window's numbers."""
    return _run(x, MAD, check_int(window, "window"))


def ts_slope(x: Any, window: int) -> Any:
    """Qlib ``Slope``: OLS slope of the window's numbers on their calendar positions.

    Examples
    --------
    >>> ts_slope(np.array([1.0, np.nan, 3.0, 4.0]), 3).tolist()
    [nan, nan, 1.0, 1.0]
    """
    return _run(x, SLOPE, check_int(window, "window"))


def ts_rsquare(x: Any, window: int) -> Any:
    """Qlib ``Rsquare`` (NaN where the window's std is within 2e-5 of 0)."""
    return _run(x, RSQUARE, check_int(window, "window"))


def ts_resi(x: Any, window: int) -> Any:
    """Qlib ``Resi``: residual of the newest value (NaN on a NaN day)."""
    return _run(x, RESI, check_int(window, "window"))


def ts_count(cond: Any, window: int) -> Any:
    """Non-zero values among the numbers of the last ``window`` calendar rows."""
    return _run(cond, COUNT, check_int(window, "window"))


def ts_delay(x: Any, d: int) -> Any:
    """Qlib ``Ref``: the value ``d`` calendar rows back (NaN if that day was suspended).

    Examples
    --------
    >>> ts_delay(np.array([1.0, np.nan, 3.0]), 1).tolist()
    [nan, 1.0, nan]
    """
    return _run(x, DELAY, check_int(d, "d"))


def ts_delta(x: Any, d: int) -> Any:
    """Qlib ``Delta``: ``x - Ref(x, d)`` over calendar rows."""
    return _run(x, DELTA, check_int(d, "d"))


def ts_pct_change(x: Any, d: int = 1) -> Any:
    """``x / Ref(x, d) - 1`` over calendar rows (NaN where the earlier value is 0)."""
    return _run(x, PCT_CHANGE, check_int(d, "d"))


def ts_corr(x: Any, y: Any, window: int) -> Any:
    """Qlib ``Corr``: pandas rolling corr (min_periods=1) with Qlib's near-zero-std guard."""
    return _run2(x, y, CORR, check_int(window, "window"))


def ts_cov(x: Any, y: Any, window: int) -> Any:
    """Qlib ``Cov``: pandas rolling cov (ddof=1, min_periods=1)."""
    return _run2(x, y, COV, check_int(window, "window"))


def _numpy_compare(name: str) -> Any:
    fn = {"gt": np.greater, "ge": np.greater_equal, "lt": np.less, "le": np.less_equal,
          "eq": np.equal, "ne": np.not_equal}[name]

    def compare(a: Any, b: Any) -> Any:
        arrays = [v for v in (a, b) if getattr(v, "ndim", 0) >= 1]
        xp = array_module(*arrays)
        with np.errstate(invalid="ignore"):
            out = fn(xp.asarray(a, dtype=np.float64), xp.asarray(b, dtype=np.float64))
        out = out.astype(np.float64)
        if arrays:  # rows before a series starts do not exist in Qlib: NaN, not False
            seen = xp.zeros(out.shape, dtype=bool)
            for v in arrays:
                seen |= ~xp.isnan(xp.asarray(v, dtype=np.float64))
            started = xp.cumsum(seen, axis=0) > 0
            out = xp.where(started, out, np.nan)
        return out

    compare.__name__ = f"qlib_{name}"
    compare.__qualname__ = f"qlib_{name}"
    return compare


qlib_gt, qlib_ge, qlib_lt = _numpy_compare("gt"), _numpy_compare("ge"), _numpy_compare("lt")
qlib_le, qlib_eq, qlib_ne = _numpy_compare("le"), _numpy_compare("eq"), _numpy_compare("ne")

#: Operators replaced under the Qlib window policy.
QLIB_OPERATORS = {
    "ts_sum": ts_sum, "ts_mean": ts_mean, "ts_var": ts_var, "ts_std": ts_std,
    "ts_skew": ts_skew, "ts_kurt": ts_kurt, "ts_max": ts_max, "ts_min": ts_min,
    "ts_argmax": ts_argmax, "ts_argmin": ts_argmin, "ts_rank": ts_rank,
    "ts_quantile": ts_quantile, "ts_median": ts_median, "ts_mad": ts_mad,
    "ts_slope": ts_slope, "ts_rsquare": ts_rsquare, "ts_resi": ts_resi, "ts_count": ts_count,
    "ts_delay": ts_delay, "ts_delta": ts_delta, "ts_pct_change": ts_pct_change,
    "ts_corr": ts_corr, "ts_cov": ts_cov,
    "gt": qlib_gt, "ge": qlib_ge, "lt": qlib_lt, "le": qlib_le, "eq": qlib_eq, "ne": qlib_ne,
}
#: Window policies: ``ours`` (last n traded days, full windows) and ``qlib``.
WINDOW_POLICIES = ("ours", "qlib")


def qlib_registry(base: OperatorRegistry | None = None) -> OperatorRegistry:
    """A copy of ``base`` (the active registry by default) with Qlib's window policy.

    Examples
    --------
    >>> reg = qlib_registry()
    >>> reg.get("Mean").func is ts_mean, reg.get("ts_mean").params[1].kind
    (True, 'window')
    """
    reg = (base if base is not None else active_registry()).copy()
    for name, func in QLIB_OPERATORS.items():
        if name not in reg:
            continue
        old = reg.get(name)
        reg.register(name, func, kind=old.kind, params=old.params,
                     commutative=old.commutative, replace=True,
                     doc=(func.__doc__ or "").split("\n")[0])
    return reg


def registry_for(policy: str, base: OperatorRegistry | None = None) -> OperatorRegistry:
    """The registry of window policy ``policy`` (``ours``: ``base`` itself).

    Raises
    ------
    ParameterError
        For a policy other than ``ours`` or ``qlib``.
    """
    if policy not in WINDOW_POLICIES:
        from qilin.errors import ParameterError

        raise ParameterError(f"window_policy must be one of {', '.join(WINDOW_POLICIES)}, "
                             f"got {policy!r}")
    if policy == "qlib":
        return qlib_registry(base)
    return base if base is not None else active_registry()
