"""Factor operators on dates x symbols arrays (NumPy on CPU, CuPy on GPU).

Every operator takes 2-D arrays shaped (dates, symbols) of one array namespace and returns
a float64 array of the same shape and namespace. A 1-D array is accepted as one series (for
``ts_*``) or one cross-section (for ``cs_*``) and returned 1-D. Time-series operators run a
compiled kernel per column (numba on CPU, a CuPy kernel on GPU); cross-section operators work
row by row with array operations.

NaN policy
----------
* Missing observations are the non-finite entries (NaN, +-inf); they are skipped.
* A time-series window is the last ``window`` finite observations of that column, so a
  suspended day neither counts as an observation nor contaminates later windows.
* The output at a row whose input is missing is NaN, and it stays NaN until ``window``
  finite observations have been seen (no ``min_periods`` warm-up).
* Two-input operators (``ts_corr``, ``ts_cov``) need both inputs finite on a row.
* ``ts_delay``/``ts_delta``/``ts_pct_change`` shift by ``d`` finite observations.
* Cross-section operators skip missing entries of the row; a row with fewer than 2 finite
  values gives NaN everywhere (``cs_rank`` of a single value included).
* Element-wise operators never warn and never return +-inf where NaN is meant: log of a
  non-positive number, division by zero and invalid powers give NaN; comparisons give
  1.0/0.0, or NaN when an input is NaN.

Examples
--------
>>> import numpy as np
>>> x = np.array([1.0, 2.0, np.nan, 4.0, 8.0])
>>> ts_mean(x, 2).tolist()
[nan, 1.5, nan, 3.0, 6.0]
>>> ts_delay(x, 1).tolist()
[nan, 1.0, nan, 2.0, 4.0]
>>> cs_rank(np.array([[3.0, 1.0, 2.0, np.nan]])).tolist()
[[1.0, 0.3333333333333333, 0.6666666666666666, nan]]
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from qilin.backend import DeviceKernel, array_module
from qilin.errors import DataError, ParameterError
from qilin.factors import kernels_cpu as kc
from qilin.factors import kernels_gpu as kg

__all__ = [
    "abs",
    "add",
    "cs_demean",
    "cs_neutralize",
    "cs_rank",
    "cs_scale",
    "cs_winsorize",
    "cs_zscore",
    "div",
    "eq",
    "ge",
    "gt",
    "le",
    "log",
    "lt",
    "max",
    "min",
    "mul",
    "ne",
    "power",
    "sign",
    "sub",
    "ts_argmax",
    "ts_argmin",
    "ts_corr",
    "ts_count",
    "ts_cov",
    "ts_decay_linear",
    "ts_delay",
    "ts_delta",
    "ts_ema",
    "ts_kurt",
    "ts_mad",
    "ts_max",
    "ts_mean",
    "ts_median",
    "ts_min",
    "ts_pct_change",
    "ts_quantile",
    "ts_rank",
    "ts_resi",
    "ts_rsquare",
    "ts_skew",
    "ts_slope",
    "ts_std",
    "ts_sum",
    "ts_var",
    "ts_wma",
    "where",
]

_ts1 = DeviceKernel("ts1", cpu=kc.ts1_nb, gpu=kg.ts1_gpu)
_ts2 = DeviceKernel("ts2", cpu=kc.ts2_nb, gpu=kg.ts2_gpu)
_cs_rank = DeviceKernel("cs_rank", cpu=kc.cs_rank_nb, gpu=kg.cs_rank_gpu)


# ------------------------------------------------------------------------------------------
# argument checking
# ------------------------------------------------------------------------------------------
#: Largest integer argument (window, span, shift) the kernels accept.
MAX_INT = 2**62


def check_int(value: Any, name: str, minimum: int = 1) -> int:
    """Return ``value`` as an int, or raise :class:`ParameterError` naming ``name``.

    Examples
    --------
    >>> check_int(5, "window")
    5
    >>> check_int(0, "window")
    Traceback (most recent call last):
    ...
    qilin.errors.ParameterError: window must be an integer >= 1, got 0
    """
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok or value < minimum:
        raise ParameterError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value > MAX_INT:  # beyond int64 the kernels would overflow (or compile a new type)
        raise ParameterError(f"{name} must be at most {MAX_INT}, got {value!r}")
    return int(value)


def as_panel_array(x: Any, name: str = "x", order: str = "C") -> tuple[Any, bool]:
    """Return ``(a, was_1d)``: ``x`` as a float64 2-D array of its namespace.

    Parameters
    ----------
    order : {"C", "K"}
        ``"C"``: C-ordered (one date contiguous), what the cross-sectional kernels walk.
        ``"K"``: a NumPy array keeps its layout; the CPU time-series kernels read a
        Fortran-ordered one (one symbol contiguous) without a copy. GPU arrays are always
        C-ordered.

    Raises
    ------
    DataError
        When ``x`` is not 1-D or 2-D.
    """
    xp = array_module(x)
    a = xp.asarray(x, dtype=xp.float64)
    was_1d = a.ndim == 1
    if was_1d:
        a = a.reshape(-1, 1)
    elif a.ndim != 2:
        raise DataError(f"{name} must be a 2-D (dates x symbols) or 1-D array, got shape "
                        f"{tuple(a.shape)}")
    if xp is not np or order == "C":
        a = xp.ascontiguousarray(a)
    if xp is np and order == "C" and not a.flags.writeable:
        # numba compiles read-only arrays as a separate type: one copy beats a recompile
        a = a.copy()
    return a, was_1d


def _same_shape(a: Any, b: Any, names: tuple[str, str]) -> None:
    if a.shape != b.shape:
        raise DataError(f"{names[0]} and {names[1]} must have the same shape, got "
                        f"{tuple(a.shape)} and {tuple(b.shape)}")


def _rolling(x: Any, op: int, n: int, p: float = 0.0) -> Any:
    a, was_1d = as_panel_array(x, order="K")
    out = _ts1(a, op, n, float(p))
    return out[:, 0] if was_1d else out


# ------------------------------------------------------------------------------------------
# time series
# ------------------------------------------------------------------------------------------
def ts_sum(x: Any, window: int) -> Any:
    """Rolling sum over the last ``window`` finite observations.

    Examples
    --------
    >>> import numpy as np
    >>> ts_sum(np.array([1.0, 2.0, 3.0, 4.0]), 3).tolist()
    [nan, nan, 6.0, 9.0]
    """
    return _rolling(x, kc.TS_SUM, check_int(window, "window"))


def ts_mean(x: Any, window: int) -> Any:
    """Rolling mean over the last ``window`` finite observations.

    Examples
    --------
    >>> import numpy as np
    >>> ts_mean(np.array([1.0, 2.0, 3.0, 4.0]), 2).tolist()
    [nan, 1.5, 2.5, 3.5]
    """
    return _rolling(x, kc.TS_MEAN, check_int(window, "window"))


def ts_var(x: Any, window: int, ddof: int = 1) -> Any:
    """Rolling variance (``ddof=1``: sample variance like pandas/Qlib).

    Parameters
    ----------
    x : array (dates, symbols)
    window : int >= 1
        Number of finite observations per window.
    ddof : int >= 0
        Delta degrees of freedom; NaN where ``window - ddof <= 0``.

    Returns
    -------
    float64 array like ``x``

    Examples
    --------
    >>> import numpy as np
    >>> ts_var(np.array([1.0, 2.0, 4.0]), 3).tolist()
    [nan, nan, 2.333333333333333]
    """
    w = check_int(window, "window")
    return _rolling(x, kc.TS_VAR, w, check_int(ddof, "ddof", 0))


def ts_std(x: Any, window: int, ddof: int = 1) -> Any:
    """Rolling standard deviation (``ddof=1`` by default; indicators pass ``ddof=0``).

    Parameters
    ----------
    x : array (dates, symbols)
    window : int >= 1
    ddof : int >= 0

    Returns
    -------
    float64 array like ``x``; exactly 0 for a window of identical values.

    Examples
    --------
    >>> import numpy as np
    >>> ts_std(np.array([1.0, 3.0, 5.0]), 2, ddof=0).tolist()
    [nan, 1.0, 1.0]
    """
    w = check_int(window, "window")
    return _rolling(x, kc.TS_STD, w, check_int(ddof, "ddof", 0))


def ts_skew(x: Any, window: int) -> Any:
    """Rolling bias-corrected skewness (pandas ``rolling.skew``); needs ``window >= 3``.

    Examples
    --------
    >>> import numpy as np
    >>> round(float(ts_skew(np.array([1.0, 2.0, 10.0]), 3)[2]), 6)
    1.652317
    """
    return _rolling(x, kc.TS_SKEW, check_int(window, "window"))


def ts_kurt(x: Any, window: int) -> Any:
    """Rolling bias-corrected excess kurtosis (pandas ``rolling.kurt``); ``window >= 4``.

    Examples
    --------
    >>> import numpy as np
    >>> round(float(ts_kurt(np.array([1.0, 2.0, 3.0, 10.0]), 4)[3]), 6)
    3.228
    """
    return _rolling(x, kc.TS_KURT, check_int(window, "window"))


def ts_mad(x: Any, window: int) -> Any:
    """Rolling mean absolute deviation from the window mean (Qlib Mad).

    Examples
    --------
    >>> import numpy as np
    >>> ts_mad(np.array([1.0, 2.0, 6.0]), 3).tolist()
    [nan, nan, 2.0]
    """
    return _rolling(x, kc.TS_MAD, check_int(window, "window"))


def ts_max(x: Any, window: int) -> Any:
    """Rolling maximum (van Herk / Gil-Werman blocks, O(T) per column).

    Examples
    --------
    >>> import numpy as np
    >>> ts_max(np.array([3.0, 1.0, 2.0, 0.0]), 2).tolist()
    [nan, 3.0, 2.0, 2.0]
    """
    return _rolling(x, kc.TS_MAX, check_int(window, "window"))


def ts_min(x: Any, window: int) -> Any:
    """Rolling minimum (van Herk / Gil-Werman blocks, O(T) per column).

    Examples
    --------
    >>> import numpy as np
    >>> ts_min(np.array([3.0, 1.0, 2.0, 0.0]), 2).tolist()
    [nan, 1.0, 1.0, 0.0]
    """
    return _rolling(x, kc.TS_MIN, check_int(window, "window"))


def ts_argmax(x: Any, window: int) -> Any:
    """1-based position of the first maximum counted from the oldest element (Qlib IdxMax).

    Examples
    --------
    >>> import numpy as np
    >>> ts_argmax(np.array([3.0, 1.0, 3.0, 0.0]), 3).tolist()
    [nan, nan, 1.0, 2.0]
    """
    return _rolling(x, kc.TS_ARGMAX, check_int(window, "window"))


def ts_argmin(x: Any, window: int) -> Any:
    """1-based position of the first minimum counted from the oldest element (Qlib IdxMin).

    Examples
    --------
    >>> import numpy as np
    >>> ts_argmin(np.array([3.0, 1.0, 3.0, 0.0]), 3).tolist()
    [nan, nan, 2.0, 3.0]
    """
    return _rolling(x, kc.TS_ARGMIN, check_int(window, "window"))


def ts_rank(x: Any, window: int) -> Any:
    """Percentile of the newest value within its window, in (0, 1] (Qlib Rank).

    Equals ``scipy.stats.percentileofscore(window_values, newest, kind="rank") / 100``.

    Examples
    --------
    >>> import numpy as np
    >>> ts_rank(np.array([1.0, 3.0, 2.0, 2.0]), 3).tolist()
    [nan, nan, 0.6666666666666666, 0.5]
    """
    return _rolling(x, kc.TS_RANK, check_int(window, "window"))


def ts_quantile(x: Any, window: int, q: float) -> Any:
    """Rolling quantile with linear interpolation (pandas ``rolling(w).quantile(q)``).

    Parameters
    ----------
    x : array (dates, symbols)
    window : int >= 1
    q : float in [0, 1]
        0.5 is the median, 1.0 the maximum.

    Returns
    -------
    float64 array like ``x``

    Examples
    --------
    >>> import numpy as np
    >>> ts_quantile(np.array([4.0, 1.0, 3.0, 2.0]), 4, 0.25).tolist()
    [nan, nan, nan, 1.75]
    """
    w = check_int(window, "window")
    if not isinstance(q, numbers.Real) or not 0.0 <= float(q) <= 1.0:
        raise ParameterError(f"q must be a number in [0, 1], got {q!r}")
    return _rolling(x, kc.TS_QUANTILE, w, float(q))


def ts_median(x: Any, window: int) -> Any:
    """Rolling median (``ts_quantile`` at 0.5).

    Examples
    --------
    >>> import numpy as np
    >>> ts_median(np.array([4.0, 1.0, 3.0, 2.0]), 4).tolist()
    [nan, nan, nan, 2.5]
    """
    return ts_quantile(x, window, 0.5)


def ts_slope(x: Any, window: int) -> Any:
    """OLS slope of the window values on 1..window (Qlib Slope).

    Examples
    --------
    >>> import numpy as np
    >>> ts_slope(np.array([1.0, 3.0, 5.0, 4.0]), 3).tolist()
    [nan, nan, 2.0, 0.5]
    """
    return _rolling(x, kc.TS_SLOPE, check_int(window, "window"))


def ts_rsquare(x: Any, window: int) -> Any:
    """R-squared of the OLS fit of the window on 1..window (Qlib Rsquare); NaN if flat.

    Examples
    --------
    >>> import numpy as np
    >>> ts_rsquare(np.array([1.0, 3.0, 5.0, 4.0]), 3).round(6).tolist()
    [nan, nan, 1.0, 0.25]
    """
    return _rolling(x, kc.TS_RSQUARE, check_int(window, "window"))


def ts_resi(x: Any, window: int) -> Any:
    """Residual of the newest point of the OLS fit of the window on 1..window (Qlib Resi).

    Examples
    --------
    >>> import numpy as np
    >>> ts_resi(np.array([1.0, 3.0, 5.0, 4.0]), 3).round(6).tolist()
    [nan, nan, 0.0, -0.5]
    """
    return _rolling(x, kc.TS_RESI, check_int(window, "window"))


def ts_wma(x: Any, window: int) -> Any:
    """Linearly weighted mean, weights 1..window with the newest heaviest (TA-Lib WMA).

    Examples
    --------
    >>> import numpy as np
    >>> ts_wma(np.array([1.0, 2.0, 4.0]), 2).round(6).tolist()
    [nan, 1.666667, 3.333333]
    """
    return _rolling(x, kc.TS_WMA, check_int(window, "window"))


def ts_decay_linear(x: Any, window: int) -> Any:
    """WorldQuant's name for :func:`ts_wma`.

    Examples
    --------
    >>> import numpy as np
    >>> ts_decay_linear(np.array([1.0, 2.0, 4.0]), 2).round(6).tolist()
    [nan, 1.666667, 3.333333]
    """
    return ts_wma(x, window)


def ts_ema(x: Any, span: int) -> Any:
    """Exponential moving average, alpha = 2/(span+1), seeded with the SMA of the first
    ``span`` observations (TA-Lib EMA).

    Parameters
    ----------
    x : array (dates, symbols)
    span : int >= 1
        The first output is at the ``span``-th finite observation.

    Returns
    -------
    float64 array like ``x``

    Examples
    --------
    >>> import numpy as np
    >>> ts_ema(np.array([1.0, 3.0, 5.0, 8.0]), 3).tolist()
    [nan, nan, 3.0, 5.5]
    """
    return _rolling(x, kc.TS_EMA, check_int(span, "span"))


def ts_delay(x: Any, d: int) -> Any:
    """The value ``d`` finite observations earlier (Qlib Ref).

    Parameters
    ----------
    x : array (dates, symbols)
    d : int >= 1
        Shift in observations of the column (missing rows are not counted).

    Returns
    -------
    float64 array like ``x``

    Examples
    --------
    >>> import numpy as np
    >>> ts_delay(np.array([1.0, 2.0, 4.0]), 1).tolist()
    [nan, 1.0, 2.0]
    """
    return _rolling(x, kc.TS_DELAY, check_int(d, "d"))


def ts_delta(x: Any, d: int) -> Any:
    """``x - ts_delay(x, d)``.

    Examples
    --------
    >>> import numpy as np
    >>> ts_delta(np.array([1.0, 2.0, 4.0]), 1).tolist()
    [nan, 1.0, 2.0]
    """
    return _rolling(x, kc.TS_DELTA, check_int(d, "d"))


def ts_pct_change(x: Any, d: int = 1) -> Any:
    """``x / ts_delay(x, d) - 1`` (NaN where the earlier value is 0).

    Examples
    --------
    >>> import numpy as np
    >>> ts_pct_change(np.array([1.0, 2.0, 4.0]), 1).tolist()
    [nan, 1.0, 1.0]
    """
    return _rolling(x, kc.TS_PCT_CHANGE, check_int(d, "d"))


def ts_count(cond: Any, window: int) -> Any:
    """Number of non-zero (True) values among the last ``window`` finite observations.

    Examples
    --------
    >>> import numpy as np
    >>> ts_count(np.array([1.0, 0.0, np.nan, 1.0, 1.0]), 2).tolist()
    [nan, 1.0, nan, 1.0, 2.0]
    """
    return _rolling(cond, kc.TS_COUNT, check_int(window, "window"))


def _rolling2(x: Any, y: Any, op: int, window: int) -> Any:
    w = check_int(window, "window")
    a, was_1d = as_panel_array(x, "x", order="K")
    b, _ = as_panel_array(y, "y", order="K")
    _same_shape(a, b, ("x", "y"))
    out = _ts2(a, b, op, w)
    return out[:, 0] if was_1d else out


def ts_corr(x: Any, y: Any, window: int) -> Any:
    """Rolling Pearson correlation (pandas ``rolling.corr``); NaN when either side is flat.

    Examples
    --------
    >>> import numpy as np
    >>> ts_corr(np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 5.0]), 3).round(6).tolist()
    [nan, nan, 0.981981]
    """
    return _rolling2(x, y, kc.TS_CORR, window)


def ts_cov(x: Any, y: Any, window: int) -> Any:
    """Rolling sample covariance, ddof=1 (pandas ``rolling.cov``).

    Examples
    --------
    >>> import numpy as np
    >>> ts_cov(np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 5.0]), 3).tolist()
    [nan, nan, 1.5]
    """
    return _rolling2(x, y, kc.TS_COV, window)


# ------------------------------------------------------------------------------------------
# cross section (one date = one row)
# ------------------------------------------------------------------------------------------
def _cs_input(x: Any) -> tuple[Any, Any, Any, Any, bool]:
    a, was_1d = as_panel_array(x)
    if was_1d:  # a 1-D input is one cross-section
        a = a.reshape(1, -1)
    xp = array_module(a)
    valid = xp.isfinite(a)
    n = valid.sum(axis=1, keepdims=True)
    return xp, a, valid, n, was_1d


def _cs_output(out: Any, valid: Any, n: Any, was_1d: bool) -> Any:
    xp = array_module(out)
    out = xp.where(valid & (n >= 2), out, xp.nan)
    return out[0] if was_1d else out


def _row_mean(xp: Any, a: Any, valid: Any, n: Any) -> Any:
    return xp.where(valid, a, 0.0).sum(axis=1, keepdims=True) / xp.maximum(n, 1)


def _row_quantile(xp: Any, a: Any, valid: Any, n: Any, q: float) -> Any:
    """Linear-interpolated quantile of each row's finite values (``numpy.nanquantile``)."""
    srt = xp.sort(xp.where(valid, a, xp.inf), axis=1)
    last = xp.maximum(n - 1, 0)
    pos = q * last
    lo = xp.floor(pos).astype(xp.int64)
    hi = xp.minimum(lo + 1, last)
    vlo = xp.take_along_axis(srt, lo, axis=1)
    vhi = xp.take_along_axis(srt, hi, axis=1)
    with np.errstate(invalid="ignore"):
        return xp.where(hi > lo, vlo + (vhi - vlo) * (pos - lo), vlo)


def cs_rank(x: Any) -> Any:
    """Average rank within the row divided by the row's count of finite values.

    Same as pandas ``rank(axis=1, pct=True)`` (ties get their average rank), except that a
    row with fewer than 2 finite values is all NaN.

    Examples
    --------
    >>> import numpy as np
    >>> cs_rank(np.array([[1.0, 2.0, 2.0, 5.0]])).tolist()
    [[0.25, 0.625, 0.625, 1.0]]
    """
    a, was_1d = as_panel_array(x)
    if was_1d:
        return _cs_rank(a.reshape(1, -1))[0]
    return _cs_rank(a)


def cs_demean(x: Any) -> Any:
    """Subtract the row mean.

    Examples
    --------
    >>> import numpy as np
    >>> cs_demean(np.array([[1.0, 2.0, np.nan, 6.0]])).tolist()
    [[-2.0, -1.0, nan, 3.0]]
    """
    xp, a, valid, n, was_1d = _cs_input(x)
    return _cs_output(a - _row_mean(xp, a, valid, n), valid, n, was_1d)


def cs_zscore(x: Any, ddof: int = 0) -> Any:
    """``(x - row mean) / row std``; population std (``ddof=0``) by default.

    A row with zero dispersion is NaN.

    Parameters
    ----------
    x : array (dates, symbols)
    ddof : int >= 0
        Use 1 for the sample std (pandas ``std()``, alphalens).

    Returns
    -------
    float64 array like ``x``

    Examples
    --------
    >>> import numpy as np
    >>> cs_zscore(np.array([[1.0, 3.0, np.nan]])).tolist()
    [[-1.0, 1.0, nan]]
    """
    ddof = check_int(ddof, "ddof", 0)
    xp, a, valid, n, was_1d = _cs_input(x)
    dev = xp.where(valid, a - _row_mean(xp, a, valid, n), 0.0)
    var = (dev * dev).sum(axis=1, keepdims=True) / xp.maximum(n - ddof, 1)
    std = xp.sqrt(var)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = xp.where(std > 0, dev / xp.where(std > 0, std, 1.0), xp.nan)
    return _cs_output(out, valid, n, was_1d)


def cs_scale(x: Any, a: float = 1.0) -> Any:
    """Scale the row so that the sum of absolute values is ``a``.

    Examples
    --------
    >>> import numpy as np
    >>> cs_scale(np.array([[1.0, -3.0, np.nan]]), a=2.0).tolist()
    [[0.5, -1.5, nan]]
    """
    xp, arr, valid, n, was_1d = _cs_input(x)
    total = xp.where(valid, xp.abs(arr), 0.0).sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = xp.where(total > 0, arr * float(a) / xp.where(total > 0, total, 1.0), xp.nan)
    return _cs_output(out, valid, n, was_1d)


def cs_winsorize(
    x: Any,
    method: str = "mad",
    k: float = 3.0,
    limits: tuple[float, float] = (0.01, 0.99),
) -> Any:
    """Clip each row's outliers.

    ``method="mad"`` clips to ``median +- k * 1.4826 * MAD`` (``k`` robust standard
    deviations; a row whose MAD is 0 is left unclipped). ``method="quantile"`` clips to the
    row's ``limits`` quantiles (linear interpolation, like ``numpy.nanquantile``).

    Examples
    --------
    >>> import numpy as np
    >>> cs_winsorize(np.array([[1.0, 2.0, 3.0, 4.0, 100.0]]), k=1.0).round(4).tolist()
    [[1.5174, 2.0, 3.0, 4.0, 4.4826]]
    >>> cs_winsorize(np.array([[1.0, 2.0, 3.0, 4.0, 5.0]]), "quantile",
    ...              limits=(0.25, 0.75)).tolist()
    [[2.0, 2.0, 3.0, 4.0, 4.0]]
    """
    xp, arr, valid, n, was_1d = _cs_input(x)
    if method == "mad":
        if not isinstance(k, numbers.Real) or not k > 0:
            raise ParameterError(f"k must be a positive number, got {k!r}")
        med = _row_quantile(xp, arr, valid, n, 0.5)
        with np.errstate(invalid="ignore"):
            mad = _row_quantile(xp, xp.abs(arr - med), valid, n, 0.5)
        half = xp.where(mad > 0, float(k) * 1.4826 * mad, xp.inf)
        with np.errstate(invalid="ignore"):
            lower, upper = med - half, med + half
    elif method == "quantile":
        lo_q, hi_q = limits
        if not 0.0 <= lo_q <= hi_q <= 1.0:
            raise ParameterError(f"limits must satisfy 0 <= low <= high <= 1, got {limits!r}")
        lower = _row_quantile(xp, arr, valid, n, float(lo_q))
        upper = _row_quantile(xp, arr, valid, n, float(hi_q))
    else:
        raise ParameterError(f"method must be 'mad' or 'quantile', got {method!r}")
    with np.errstate(invalid="ignore"):
        out = xp.minimum(xp.maximum(arr, lower), upper)
    return _cs_output(out, valid, n, was_1d)


def _group_demean(xp: Any, values: Any, flat: Any, valid: Any, n_bins: int) -> Any:
    keys = flat[valid]
    counts = xp.bincount(keys, minlength=n_bins)
    sums = xp.bincount(keys, weights=values[valid], minlength=n_bins)
    means = sums / xp.maximum(counts, 1)
    return values - means[flat]


def cs_neutralize(x: Any, groups: Any = None, mcap: Any = None) -> Any:
    """Per-date OLS residual of ``x`` on industry dummies and/or log market cap.

    Parameters
    ----------
    x : array (dates, symbols)
    groups : int codes, shape (dates, symbols) or (symbols,), optional
        Industry codes >= 0; a negative or NaN code marks a missing industry.
    mcap : array like ``x``, optional
        Market capitalisation; non-positive or non-finite values are missing.

    The regression has an intercept (or one dummy per industry); entries missing in any
    input are NaN. With both inputs the residual is computed by Frisch-Waugh-Lovell:
    demean ``x`` and log mcap within industries, then regress one on the other.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[1.0, 3.0, 10.0, 14.0]])
    >>> cs_neutralize(x, groups=np.array([0, 0, 1, 1])).tolist()
    [[-1.0, 1.0, -2.0, 2.0]]
    >>> cs_neutralize(np.array([[1.0, 2.0, 3.0]]), mcap=np.exp([[1.0, 2.0, 3.0]])).round(12)
    array([[0., 0., 0.]])
    """
    if groups is None and mcap is None:
        raise ParameterError("cs_neutralize needs groups, mcap or both")
    xp, arr, valid, _, was_1d = _cs_input(x)
    n_rows = arr.shape[0]
    lm = None
    if mcap is not None:
        m, _ = as_panel_array(mcap, "mcap")
        m = m.reshape(arr.shape) if m.size == arr.size else m
        _same_shape(arr, m, ("x", "mcap"))
        ok = xp.isfinite(m) & (m > 0)
        lm = xp.log(xp.where(ok, m, 1.0))
        valid = valid & ok
    if groups is not None:
        g = xp.asarray(groups)
        if g.ndim == 1:
            g = xp.broadcast_to(g.reshape(1, -1), arr.shape)
        _same_shape(arr, g, ("x", "groups"))
        if g.dtype.kind == "f":
            gok = xp.isfinite(g) & (g >= 0)
            if bool((xp.where(gok, g, 0) % 1 != 0).any()):
                raise DataError("groups must hold integer industry codes")
        elif g.dtype.kind in "iub":
            gok = g >= 0
        else:
            raise DataError(f"groups must hold integer industry codes, got dtype {g.dtype}")
        valid = valid & gok
        codes = xp.where(gok, g, 0).astype(xp.int64)
        n_groups = int(codes.max()) + 1 if codes.size else 1
        rows = xp.arange(n_rows, dtype=xp.int64).reshape(-1, 1)
        flat = rows * n_groups + codes
        resid = _group_demean(xp, arr, flat, valid, n_rows * n_groups)
        if lm is not None:
            lm = _group_demean(xp, lm, flat, valid, n_rows * n_groups)
    else:
        n = valid.sum(axis=1, keepdims=True)
        resid = arr - _row_mean(xp, arr, valid, n)
        lm = lm - _row_mean(xp, lm, valid, n)
    if lm is not None:
        lmv = xp.where(valid, lm, 0.0)
        sxy = (xp.where(valid, resid, 0.0) * lmv).sum(axis=1, keepdims=True)
        sxx = (lmv * lmv).sum(axis=1, keepdims=True)
        beta = xp.where(sxx > 0, sxy / xp.where(sxx > 0, sxx, 1.0), 0.0)
        resid = resid - beta * lm
    n = valid.sum(axis=1, keepdims=True)
    return _cs_output(resid, valid, n, was_1d)


# ------------------------------------------------------------------------------------------
# element-wise
# ------------------------------------------------------------------------------------------
def _xp(*args: Any) -> Any:
    return array_module(*[a for a in args if hasattr(a, "shape")])


def _f64(xp: Any, a: Any) -> Any:
    return xp.asarray(a, dtype=xp.float64)


def _nan_if_not_finite(xp: Any, out: Any) -> Any:
    return xp.where(xp.isfinite(out), out, xp.nan)


def add(a: Any, b: Any) -> Any:
    """``a + b``.

    Examples
    --------
    >>> add(1.0, 2.0).tolist()
    3.0
    """
    xp = _xp(a, b)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is inf, no warning
        return _f64(xp, a) + _f64(xp, b)


def sub(a: Any, b: Any) -> Any:
    """``a - b``.

    Examples
    --------
    >>> sub(1.0, 2.0).tolist()
    -1.0
    """
    xp = _xp(a, b)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is inf, no warning
        return _f64(xp, a) - _f64(xp, b)


def mul(a: Any, b: Any) -> Any:
    """``a * b``.

    Examples
    --------
    >>> mul(3.0, 2.0).tolist()
    6.0
    """
    xp = _xp(a, b)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is inf, no warning
        return _f64(xp, a) * _f64(xp, b)


def div(a: Any, b: Any) -> Any:
    """``a / b`` with NaN (not +-inf) where ``b`` is 0.

    Examples
    --------
    >>> import numpy as np
    >>> div(np.array([1.0, 1.0, 0.0]), np.array([2.0, 0.0, 0.0])).tolist()
    [0.5, nan, nan]
    """
    xp = _xp(a, b)
    a, b = _f64(xp, a), _f64(xp, b)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out = xp.divide(a, b)
    zero = b == 0
    if out.ndim == 0:
        return xp.where(zero, xp.nan, out)
    out[xp.broadcast_to(zero, out.shape)] = xp.nan
    return out


def abs_(x: Any) -> Any:
    """Absolute value (exported as ``abs``).

    Examples
    --------
    >>> import numpy as np
    >>> abs_(np.array([-1.0, np.nan])).tolist()
    [1.0, nan]
    """
    xp = _xp(x)
    return xp.abs(_f64(xp, x))


def log(x: Any) -> Any:
    """Natural log; NaN (not -inf, no warning) for non-positive input.

    Examples
    --------
    >>> import numpy as np
    >>> log(np.array([1.0, 0.0, -1.0])).tolist()
    [0.0, nan, nan]
    """
    xp = _xp(x)
    x = _f64(xp, x)
    ok = x > 0
    return xp.where(ok, xp.log(xp.where(ok, x, 1.0)), xp.nan)


def sign(x: Any) -> Any:
    """Sign (-1, 0, 1), NaN stays NaN.

    Examples
    --------
    >>> import numpy as np
    >>> sign(np.array([-2.0, 0.0, 3.0, np.nan])).tolist()
    [-1.0, 0.0, 1.0, nan]
    """
    xp = _xp(x)
    return xp.sign(_f64(xp, x))


def power(x: Any, p: Any) -> Any:
    """``x ** p``; NaN where the result is not a finite real number.

    Examples
    --------
    >>> import numpy as np
    >>> power(np.array([4.0, -4.0, 0.0]), np.array([0.5, 0.5, -1.0])).tolist()
    [2.0, nan, nan]
    """
    xp = _xp(x, p)
    with np.errstate(all="ignore"):
        return _nan_if_not_finite(xp, xp.power(_f64(xp, x), _f64(xp, p)))


def where(cond: Any, a: Any, b: Any) -> Any:
    """``a`` where ``cond`` is non-zero, else ``b``; NaN where ``cond`` is NaN.

    Examples
    --------
    >>> import numpy as np
    >>> where(np.array([1.0, 0.0, np.nan]), 1.0, 2.0).tolist()
    [1.0, 2.0, nan]
    """
    xp = _xp(cond, a, b)
    c = _f64(xp, cond)
    return xp.where(xp.isnan(c), xp.nan, xp.where(c != 0, _f64(xp, a), _f64(xp, b)))


def max_(a: Any, b: Any) -> Any:
    """Element-wise maximum, NaN if either is NaN (Qlib Greater; exported as ``max``).

    Examples
    --------
    >>> import numpy as np
    >>> max_(np.array([1.0, 5.0, np.nan]), 2.0).tolist()
    [2.0, 5.0, nan]
    """
    xp = _xp(a, b)
    return xp.maximum(_f64(xp, a), _f64(xp, b))


def min_(a: Any, b: Any) -> Any:
    """Element-wise minimum, NaN if either is NaN (Qlib Less; exported as ``min``).

    Examples
    --------
    >>> import numpy as np
    >>> min_(np.array([1.0, 5.0, np.nan]), 2.0).tolist()
    [1.0, 2.0, nan]
    """
    xp = _xp(a, b)
    return xp.minimum(_f64(xp, a), _f64(xp, b))


def _compare(a: Any, b: Any, op: Any) -> Any:
    xp = _xp(a, b)
    a, b = _f64(xp, a), _f64(xp, b)
    res = op(a, b).astype(xp.float64)
    return xp.where(xp.isnan(a) | xp.isnan(b), xp.nan, res)


def gt(a: Any, b: Any) -> Any:
    """``a > b`` as 1.0/0.0, NaN where either input is NaN.

    Examples
    --------
    >>> import numpy as np
    >>> gt(np.array([1.0, 3.0, np.nan]), 2.0).tolist()
    [0.0, 1.0, nan]
    """
    return _compare(a, b, _xp(a, b).greater)


def ge(a: Any, b: Any) -> Any:
    """``a >= b`` as 1.0/0.0, NaN where either input is NaN.

    Examples
    --------
    >>> ge(2.0, 2.0).tolist()
    1.0
    """
    return _compare(a, b, _xp(a, b).greater_equal)


def lt(a: Any, b: Any) -> Any:
    """``a < b`` as 1.0/0.0, NaN where either input is NaN.

    Examples
    --------
    >>> lt(1.0, 2.0).tolist()
    1.0
    """
    return _compare(a, b, _xp(a, b).less)


def le(a: Any, b: Any) -> Any:
    """``a <= b`` as 1.0/0.0, NaN where either input is NaN.

    Examples
    --------
    >>> le(3.0, 2.0).tolist()
    0.0
    """
    return _compare(a, b, _xp(a, b).less_equal)


def eq(a: Any, b: Any) -> Any:
    """``a == b`` as 1.0/0.0, NaN where either input is NaN.

    Examples
    --------
    >>> eq(2.0, 2.0).tolist()
    1.0
    """
    return _compare(a, b, _xp(a, b).equal)


def ne(a: Any, b: Any) -> Any:
    """``a != b`` as 1.0/0.0, NaN where either input is NaN.

    Examples
    --------
    >>> ne(2.0, 2.0).tolist()
    0.0
    """
    return _compare(a, b, _xp(a, b).not_equal)


# Exported under the expression-language names. Defined last: from here on ``abs``, ``max``
# and ``min`` in this module are these operators, so no function above calls the builtins.
abs = abs_
max = max_
min = min_
