"""Factor evaluation: forward returns, IC / Rank IC, quantile returns, turnover, decay.

Every statistic is computed per date across symbols on dates x symbols arrays of one array
namespace (NumPy on CPU, CuPy on GPU), then gathered into small pandas tables. The numbers
are alphalens' numbers for the same inputs (see ``docs/evaluation.md`` for the few deliberate
differences):

* forward return for horizon ``h`` at date ``t``: ``close[t+h] / close[t] - 1`` on the
  panel's trading dates, NaN when either end is missing (alphalens forward-fills prices
  first; we do not, so a suspended stock never shows a stale, zero return);
* IC is Pearson and Rank IC is Spearman (average ranks for ties), per date;
* quantiles per date are ``pd.qcut(x, q, labels=False) + 1`` (alphalens
  ``quantize_factor``): a date with fewer distinct edges than ``q + 1`` (too few names or
  heavy ties) gets no quantiles;
* mean return by quantile, quantile turnover and factor rank autocorrelation follow
  ``mean_return_by_quantile``, ``quantile_turnover`` and ``factor_rank_autocorrelation``;
* the long-short spread is the top-minus-bottom quantile mean return (alphalens >= 0.5
  halves it to a 100%-gross book; we report the plain difference) and the cumulative
  long-short curve compounds the daily (1-day horizon) spread.

Examples
--------
>>> import numpy as np
>>> close = np.array([[10.0, 20.0, 5.0, 8.0], [11.0, 19.0, 5.5, 8.0],
...                   [12.1, 19.0, 5.0, 8.8]])
>>> fwd = forward_returns(close, horizons=(1,))
>>> np.round(fwd[1][0], 3).tolist()
[0.1, -0.05, 0.1, 0.0]
>>> factor = np.array([[4.0, 1.0, 3.0, 2.0], [1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]])
>>> round(float(information_coefficient(factor, fwd[1], method="spearman")[0]), 6)
0.948683
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats

from qilin.atomic import write_json_atomic
from qilin.backend import (
    Backend,
    BackendName,
    DeviceKernel,
    array_module,
    get_backend,
    to_host,
)
from qilin.data.panel import Panel
from qilin.errors import DataError, ParameterError
from qilin.factors import kernels_cpu as kc
from qilin.factors import kernels_gpu as kg

DEFAULT_HORIZONS: tuple[int, ...] = (1, 5, 10, 20)
DropPolicy = Literal["all", "each"]

__all__ = [
    "DEFAULT_HORIZONS",
    "FactorEvaluation",
    "evaluate_factor",
    "evaluate_factors",
    "factor_matrix",
    "factor_rank_autocorrelation",
    "forward_returns",
    "ic_statistics",
    "information_coefficient",
    "mean_return_by_quantile",
    "quantile_turnover",
    "quantize_factor",
    "rank_rows",
    "rank_rows_grouped",
    "summary_table",
]


# ------------------------------------------------------------------ validation helpers
def _check_horizons(horizons: Iterable[int]) -> tuple[int, ...]:
    hs = tuple(sorted({int(h) for h in horizons}))
    if not hs:
        raise ParameterError("horizons is empty: give at least one forward-return horizon")
    bad = [h for h in hs if h < 1]
    if bad:
        raise ParameterError(f"horizons must be positive numbers of days, got {bad}")
    return hs


def _check_quantiles(quantiles: int) -> int:
    if isinstance(quantiles, bool) or not isinstance(quantiles, int | np.integer) \
            or quantiles < 1:
        raise ParameterError(
            f"quantiles must be a positive integer (e.g. 5 or 10), got {quantiles!r}")
    return int(quantiles)


# ------------------------------------------------------------------ forward returns
def forward_returns(
    panel_or_close: Panel | Any, horizons: Iterable[int] = DEFAULT_HORIZONS
) -> dict[int, Any]:
    """Forward close-to-close returns per horizon, as dates x symbols arrays.

    Parameters
    ----------
    panel_or_close : Panel or array
        A Panel (its ``close`` is used) or a dates x symbols close array (NumPy or CuPy).
    horizons : iterable of int
        Horizons in trading days (rows of the array).

    Returns
    -------
    dict of int to array
        ``out[h][t] = close[t + h] / close[t] - 1``; NaN for the last ``h`` dates and
        wherever either price is missing. Same array namespace as the input.

    Examples
    --------
    >>> import numpy as np
    >>> fwd = forward_returns(np.array([[1.0], [2.0], [np.nan], [4.0]]), horizons=(1, 2))
    >>> fwd[1][:, 0].tolist()
    [1.0, nan, nan, nan]
    >>> fwd[2][:, 0].tolist()
    [nan, 1.0, nan, nan]
    """
    close = panel_or_close["close"] if isinstance(panel_or_close, Panel) else panel_or_close
    xp = array_module(close)
    close = xp.asarray(close, dtype=xp.float64)
    if close.ndim != 2:
        raise DataError(f"close must be a dates x symbols 2-D array, got shape {close.shape}")
    out: dict[int, Any] = {}
    for h in _check_horizons(horizons):
        fwd = xp.full(close.shape, xp.nan, dtype=xp.float64)
        if h < close.shape[0]:
            with np.errstate(divide="ignore", invalid="ignore"):
                fwd[:-h] = close[h:] / close[:-h] - 1.0
        out[h] = fwd
    return out


# ------------------------------------------------------------------ per-row primitives
def _rank_rows_cpu(x: np.ndarray, as_fraction: bool) -> np.ndarray:
    return kc.rank_rows_nb(np.ascontiguousarray(x, dtype=np.float64), as_fraction)


def _pearson_rows_cpu(x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return kc.pearson_rows_nb(np.ascontiguousarray(x, dtype=np.float64),
                              np.ascontiguousarray(y, dtype=np.float64),
                              np.ascontiguousarray(mask, dtype=np.bool_))


_rank_rows = DeviceKernel("rank_rows", cpu=_rank_rows_cpu, gpu=kg.rank_rows_gpu)
_pearson_rows_kernel = DeviceKernel("pearson_rows", cpu=_pearson_rows_cpu,
                                    gpu=kg.pearson_rows_gpu)


def rank_rows(x: Any) -> Any:
    """Average ranks (1-based, ties share their mean rank) of each row; NaN stays NaN.

    NumPy arrays go to the numba kernel (rows in parallel), CuPy arrays to its GPU twin:
    one row core, :func:`qilin.factors.kernels_cpu.rank_row_nb`, which ``cs_rank`` shares.
    +-inf count as missing, as everywhere in factor evaluation.

    Examples
    --------
    >>> import numpy as np
    >>> rank_rows(np.array([[3.0, 1.0, 3.0, np.nan], [2.0, 2.0, 2.0, 1.0]])).tolist()
    [[2.5, 1.0, 2.5, nan], [3.0, 3.0, 3.0, 1.0]]
    """
    return _rank_rows(x, False)


def _pearson_rows(x: Any, y: Any, mask: Any) -> Any:
    """Pearson correlation of each row of ``x`` and ``y`` over the columns in ``mask``.

    One row core, :func:`qilin.factors.kernels_cpu.pearson_row_nb`: a numba kernel over
    rows in parallel for NumPy arrays, its GPU twin for CuPy arrays.
    """
    return _pearson_rows_kernel(x, y, mask)


def _masked(x: Any, mask: Any) -> Any:
    xp = array_module(x)
    return xp.where(mask, x, xp.nan)


def information_coefficient(
    factor: Any,
    fwd: Any,
    method: Literal["pearson", "spearman"] = "pearson",
    mask: Any = None,
) -> Any:
    """Per-date correlation across symbols of factor values and forward returns.

    Parameters
    ----------
    factor, fwd : array
        Dates x symbols arrays (same namespace).
    method : {"pearson", "spearman"}
        IC (Pearson) or Rank IC (Spearman: Pearson of average ranks).
    mask : bool array, optional
        Cells to use; default: both values finite. Ranks are taken within the mask.

    Returns
    -------
    array
        One value per date; NaN where fewer than two names or a constant cross-section.

    Examples
    --------
    >>> import numpy as np
    >>> f = np.array([[1.0, 2.0, 3.0, np.nan]])
    >>> r = np.array([[0.1, 0.3, 0.2, 0.5]])
    >>> information_coefficient(f, r, "spearman").round(6).tolist()
    [0.5]
    """
    xp = array_module(factor, fwd)
    valid = xp.isfinite(factor) & xp.isfinite(fwd)
    mask = valid if mask is None else (mask & valid)
    if method == "spearman":
        factor, fwd = rank_rows(_masked(factor, mask)), rank_rows(_masked(fwd, mask))
    elif method != "pearson":
        raise ParameterError(f"method must be 'pearson' or 'spearman', got {method!r}")
    return _pearson_rows(factor, fwd, mask)


def _pandas_qcut_probs(quantiles: int) -> np.ndarray:
    """The probabilities ``pd.qcut(x, q)`` asks for (nudged up where not exact in base 2)."""
    probs = np.linspace(0, 1, quantiles + 1)
    np.putmask(probs, quantiles * probs != np.arange(quantiles + 1), np.nextafter(probs, 1))
    return probs


def _row_quantiles(sorted_x: Any, n: Any, probs: np.ndarray) -> Any:
    """``np.quantile(row[:n], probs)`` (linear) per row of NaN-last sorted data, bit for bit."""
    xp = array_module(sorted_x)
    rows = xp.arange(sorted_x.shape[0])
    last = xp.maximum(n - 1, 0)
    edges = []
    for p in probs.tolist():
        virtual = (n - 1).astype(xp.float64) * p
        below = xp.floor(virtual)
        top = virtual >= n - 1
        prev = xp.where(top, last, below.astype(xp.int64))
        nxt = xp.where(top, last, prev + 1)
        a = sorted_x[rows, xp.maximum(prev, 0)]
        b = sorted_x[rows, xp.maximum(nxt, 0)]
        gamma = virtual - below
        diff = b - a
        edges.append(xp.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma))
    return xp.stack(edges, axis=1)


def quantize_factor(factor: Any, quantiles: int = 5, mask: Any = None) -> Any:
    """Per-date quantile labels ``1..quantiles`` (0 = no label), like alphalens.

    Each date's finite values (within ``mask``) are cut as ``pd.qcut(x, quantiles,
    labels=False) + 1``: edges at the linear-interpolated sample quantiles, right-closed
    bins, the lowest edge included. When two edges coincide (fewer names than needed or
    heavy ties) pandas refuses the cut and alphalens drops the date; here every name of
    that date gets label 0.

    Examples
    --------
    >>> import numpy as np
    >>> quantize_factor(np.array([[1.0, 2.0, 3.0, 4.0, np.nan], [1.0, 1.0, 1.0, 2.0, 3.0]]),
    ...                 quantiles=2).tolist()
    [[1, 1, 2, 2, 0], [0, 0, 0, 0, 0]]
    """
    q = _check_quantiles(quantiles)
    xp = array_module(factor)
    x = xp.asarray(factor, dtype=xp.float64)
    finite = xp.isfinite(x) if mask is None else (xp.isfinite(x) & mask)
    x = xp.where(finite, x, xp.nan)
    n = finite.sum(axis=1)
    edges = _row_quantiles(xp.sort(x, axis=1), n, _pandas_qcut_probs(q))
    distinct = (xp.diff(edges, axis=1) > 0).all(axis=1) if q > 1 else xp.ones_like(n, bool)
    ok = distinct & (n > 0)
    count_below = xp.zeros(x.shape, dtype=xp.int64)
    for k in range(q + 1):
        count_below += edges[:, k:k + 1] < x
    labels = xp.maximum(count_below, 1)
    return xp.where(finite & ok[:, None], labels, 0).astype(xp.int16)


def _quantile_daily_means(fwd: Any, labels: Any, mask: Any, quantiles: int) -> tuple[Any, Any]:
    """Daily mean forward return and name count per quantile: two (dates, q) arrays."""
    xp = array_module(fwd)
    means, counts = [], []
    r = xp.where(mask, fwd, 0.0)
    for q in range(1, quantiles + 1):
        member = mask & (labels == q)
        c = member.sum(axis=1)
        s = xp.where(member, r, 0.0).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            means.append(xp.where(c > 0, s / xp.maximum(c, 1), xp.nan))
        counts.append(c)
    return xp.stack(means, axis=1), xp.stack(counts, axis=1)


def mean_return_by_quantile(
    fwd: Any, labels: Any, mask: Any, quantiles: int, demeaned: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean forward return per quantile (like alphalens ``mean_return_by_quantile``).

    The return of a quantile on a date is the equal-weighted mean over its names; the
    reported mean is the average of those daily means over the dates where the quantile has
    names, and the standard error is their std (ddof=1) over ``sqrt(number of dates)``.
    ``demeaned`` subtracts each date's mean return over all names in ``mask`` first.

    Returns
    -------
    mean, std_error : ndarray of shape (quantiles,)
    daily : ndarray of shape (dates, quantiles)
        The (possibly demeaned) daily quantile means, on the host.

    Examples
    --------
    >>> import numpy as np
    >>> fwd = np.array([[0.01, 0.02, 0.03, 0.04]])
    >>> labels = np.array([[1, 1, 2, 2]])
    >>> m, se, d = mean_return_by_quantile(fwd, labels, labels > 0, 2, demeaned=True)
    >>> np.round(m, 4).tolist()
    [-0.01, 0.01]
    """
    xp = array_module(fwd)
    daily, _ = _quantile_daily_means(fwd, labels, mask, quantiles)
    if demeaned:
        n = mask.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            day_mean = xp.where(mask, fwd, 0.0).sum(axis=1) / xp.maximum(n, 1)
        daily = daily - day_mean[:, None]
    daily = to_host(daily)
    seen = np.isfinite(daily)
    count = seen.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(count > 0, np.nansum(daily, axis=0) / np.maximum(count, 1), np.nan)
        dev = np.where(seen, daily - mean, 0.0)
        std = np.where(count > 1, np.sqrt((dev**2).sum(axis=0) / np.maximum(count - 1, 1)),
                       np.nan)
        std_error = std / np.sqrt(count)
    return mean, std_error, daily


def quantile_turnover(labels: Any, quantile: int, period: int = 1) -> np.ndarray:
    """Share of a quantile's names that were not in it ``period`` dates earlier.

    Like alphalens ``quantile_turnover``: NaN where the quantile is empty on the date or
    ``period`` dates earlier (the first ``period`` dates, dates that could not be quantized).

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.array([[1, 2, 2], [2, 1, 2], [2, 1, 2]])
    >>> quantile_turnover(labels, 2).tolist()
    [nan, 0.5, 0.0]
    """
    xp = array_module(labels)
    member = labels == quantile
    now = member.sum(axis=1)
    new = xp.zeros(now.shape, dtype=xp.int64)
    before = xp.zeros(now.shape, dtype=bool)
    if period < member.shape[0]:
        new[period:] = (member[period:] & ~member[:-period]).sum(axis=1)
        before[period:] = member[:-period].any(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = xp.where((now > 0) & before, new / xp.maximum(now, 1), xp.nan)
    return to_host(out).astype(np.float64)


def factor_rank_autocorrelation(factor: Any, mask: Any, period: int = 1) -> np.ndarray:
    """Correlation across names of today's factor ranks with those ``period`` dates ago.

    Like alphalens ``factor_rank_autocorrelation``: ranks are taken per date over the names
    in ``mask``; the Pearson correlation uses the names ranked on both dates.

    Examples
    --------
    >>> import numpy as np
    >>> f = np.array([[1.0, 2.0, 3.0], [1.0, 3.0, 2.0], [1.0, 3.0, 2.0]])
    >>> factor_rank_autocorrelation(f, np.isfinite(f)).round(3).tolist()
    [nan, 0.5, 1.0]
    """
    return _rank_autocorrelation(rank_rows(_masked(factor, mask)), period)


def _rank_autocorrelation(ranks: Any, period: int) -> np.ndarray:
    xp = array_module(ranks)
    out = xp.full(ranks.shape[0], xp.nan)
    if period < ranks.shape[0]:
        now, before = ranks[period:], ranks[:-period]
        both = xp.isfinite(now) & xp.isfinite(before)
        out[period:] = _pearson_rows(now, before, both)
    return to_host(out)


def ic_statistics(ic: Any) -> dict[str, float]:
    """Mean, std (ddof=1), ICIR, t-stat and two-sided p-value of a per-date IC series.

    ``t = mean / (std / sqrt(n))`` over the ``n`` dates with a finite IC, the p-value from
    Student's t with ``n - 1`` degrees of freedom (``scipy.stats.ttest_1samp``).

    Examples
    --------
    >>> s = ic_statistics([0.1, 0.2, 0.3, float("nan")])
    >>> round(s["mean"], 6), round(s["ir"], 6), round(s["t"], 6), s["n"]
    (0.2, 2.0, 3.464102, 3)
    """
    v = np.asarray(to_host(ic) if hasattr(ic, "shape") else ic, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    n = int(v.size)
    mean = float(v.mean()) if n else math.nan
    std = float(v.std(ddof=1)) if n > 1 else math.nan
    ir = mean / std if n > 1 and std > 0 else math.nan
    t = ir * math.sqrt(n) if n > 1 and std > 0 else math.nan
    p = float(2.0 * stats.t.sf(abs(t), n - 1)) if math.isfinite(t) else math.nan
    return {"mean": mean, "std": std, "ir": ir, "t": t, "p": p, "n": n}


# ------------------------------------------------------------------ inputs
def factor_matrix(factor: Any, panel: Panel, name: str = "factor") -> Any:
    """Align a factor to the panel's dates x symbols grid, on the panel's backend.

    Parameters
    ----------
    factor : array, Series or DataFrame
        A dates x symbols array shaped like the panel; a Series indexed by
        ``(date, symbol)``; a wide DataFrame (dates x symbols); or a long DataFrame with
        ``date``, ``symbol`` and one value column (or a column named ``name``).
    panel : Panel
    name : str
        Column to take from a long DataFrame with several value columns; used in errors.

    Raises
    ------
    DataError
        Wrong shape, unknown symbols or dates outside the panel, duplicate rows.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> p = Panel.from_arrays({"close": np.ones((2, 2))}, pd.date_range("2024-01-01", periods=2),
    ...                       ["A", "B"])
    >>> long = pd.DataFrame({"date": pd.to_datetime(["2024-01-02"]), "symbol": ["B"],
    ...                      "mom": [0.5]})
    >>> factor_matrix(long, p).tolist()
    [[nan, nan], [nan, 0.5]]
    """
    be = panel.backend
    if hasattr(factor, "shape") and not isinstance(factor, pd.DataFrame | pd.Series):
        arr = be.asarray(factor, dtype=np.float64)
        if arr.shape != panel.shape:
            raise DataError(
                f"factor {name!r} has shape {arr.shape}, expected the panel's {panel.shape} "
                "(dates x symbols)"
            )
        return arr
    if isinstance(factor, pd.DataFrame) and {"date", "symbol"} <= set(factor.columns):
        values = [c for c in factor.columns if c not in ("date", "symbol")]
        col = name if name in values else (values[0] if len(values) == 1 else None)
        if col is None:
            raise DataError(
                f"long factor frame has several value columns {values}; pass name= one of them"
            )
        factor = factor.set_index(["date", "symbol"])[col]
    if isinstance(factor, pd.Series):
        if factor.index.nlevels != 2:
            raise DataError(f"factor Series {name!r} must be indexed by (date, symbol)")
        if factor.index.duplicated().any():
            first = factor.index[factor.index.duplicated()][0]
            raise DataError(f"factor {name!r} repeats (date, symbol) {first}")
        dates = pd.DatetimeIndex(pd.to_datetime(factor.index.get_level_values(0)))
        syms = factor.index.get_level_values(1).astype(str)
        r = panel.dates.get_indexer(dates)
        c = panel.symbols.get_indexer(syms)
        _report_unaligned(name, dates, syms, r, c)
        arr = np.full(panel.shape, np.nan)
        arr[r, c] = factor.to_numpy(dtype=np.float64, na_value=np.nan)
        return be.asarray(arr)
    if isinstance(factor, pd.DataFrame):
        wide = factor.copy()
        wide.index = pd.DatetimeIndex(pd.to_datetime(wide.index))
        wide.columns = wide.columns.astype(str)
        r = panel.dates.get_indexer(wide.index)
        c = panel.symbols.get_indexer(wide.columns)
        _report_unaligned(name, wide.index[r < 0], wide.columns[c < 0], r[r < 0], c[c < 0])
        return be.asarray(wide.reindex(index=panel.dates, columns=panel.symbols)
                          .to_numpy(dtype=np.float64, na_value=np.nan))
    raise DataError(f"factor {name!r}: unsupported type {type(factor).__name__}")


def _report_unaligned(name: str, dates: Any, syms: Any, r: np.ndarray, c: np.ndarray) -> None:
    if (c < 0).any():
        missing = pd.unique(np.asarray(syms)[c < 0])[:5].tolist()
        raise DataError(f"factor {name!r} has symbols not in the panel, e.g. {missing}")
    if (r < 0).any():
        missing = [str(pd.Timestamp(d).date()) for d in pd.unique(np.asarray(dates)[r < 0])[:5]]
        raise DataError(f"factor {name!r} has dates not among the panel's dates, e.g. {missing}")


def _group_codes(groups: Any, panel: Panel) -> tuple[np.ndarray, list[Any]]:
    """Integer group codes (dates x symbols, -1 = no group) and the group labels."""
    if isinstance(groups, str):
        if panel.info.empty or groups not in panel.info.columns:
            cols = [] if panel.info.empty else list(panel.info.columns)
            raise ParameterError(
                f"groups={groups!r} is not a column of panel.info (has {cols})")
        groups = panel.info[groups].reindex(panel.symbols).to_numpy()
    elif isinstance(groups, Mapping):
        groups = pd.Series(groups).reindex(panel.symbols.astype(str)).to_numpy()
    elif isinstance(groups, pd.Series):
        groups = groups.reindex(panel.symbols).to_numpy()
    g = np.asarray(to_host(groups) if hasattr(groups, "shape") else groups, dtype=object)
    if g.shape == (panel.shape[1],):
        g = np.broadcast_to(g, panel.shape)
    if g.shape != panel.shape:
        raise ParameterError(
            f"groups has shape {g.shape}: expected ({panel.shape[1]},) per symbol or "
            f"{panel.shape} per date and symbol"
        )
    flat = pd.Series(g.ravel())
    codes, labels = pd.factorize(flat, sort=True)  # missing -> -1
    return codes.reshape(panel.shape), list(labels)


# ------------------------------------------------------------------ result
def _json_value(v: Any) -> Any:
    if isinstance(v, float | np.floating):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, np.integer):
        return int(v)
    return v


def _json_key(k: Any) -> str:
    if isinstance(k, pd.Timestamp):
        return str(k.date())
    if isinstance(k, tuple):
        return "|".join(_json_key(x) for x in k)
    return str(k)


def _frame_to_json(df: pd.DataFrame) -> dict[str, Any]:
    """``{row: {column: value}}`` with string keys and NaN as None."""
    return {_json_key(i): {_json_key(c): _json_value(v) for c, v in row.items()}
            for i, row in df.iterrows()}


def _series_to_json(s: pd.Series) -> dict[str, Any]:
    """``{index: value}`` with string keys and NaN as None."""
    return {_json_key(i): _json_value(v) for i, v in s.items()}


@dataclass
class FactorEvaluation:
    """Everything :func:`evaluate_factor` measured for one factor.

    Attributes
    ----------
    name : str
    horizons : tuple of int
    quantiles : int
    ic, rank_ic : DataFrame
        Per-date IC (Pearson) and Rank IC (Spearman); dates x horizons.
    summary : DataFrame
        Per horizon: ``ic_mean ic_std ic_ir ic_t ic_p ic_n`` and the same for ``rank_ic_``.
    ic_decay : DataFrame
        Mean IC and Rank IC by horizon.
    quantile_returns, quantile_returns_demeaned, quantile_std_error : DataFrame
        Quantile x horizon mean forward return (raw / demeaned by the date's mean) and the
        standard error of the raw mean.
    quantile_daily_returns : dict of int to DataFrame
        Per horizon, dates x quantiles daily equal-weighted mean forward return.
    long_short : DataFrame
        Per-date top-minus-bottom mean forward return; dates x horizons.
    cumulative_long_short : Series
        Compounded daily (1-day) long-short return, ``prod(1 + spread) - 1``; dates with no
        spread count as flat.
    turnover : DataFrame
        Per-date quantile turnover; columns ``(horizon, quantile)`` with the horizon as the
        look-back in dates.
    rank_autocorrelation : DataFrame
        Per-date factor rank autocorrelation; dates x horizons (look-back).
    group_ic : DataFrame or None
        Rank IC per (date, group) x horizons when grouped.
    coverage : Series
        Names evaluated per date.
    backend : str
    """

    name: str
    horizons: tuple[int, ...]
    quantiles: int
    ic: pd.DataFrame
    rank_ic: pd.DataFrame
    summary: pd.DataFrame
    ic_decay: pd.DataFrame
    quantile_returns: pd.DataFrame
    quantile_returns_demeaned: pd.DataFrame
    quantile_std_error: pd.DataFrame
    quantile_daily_returns: dict[int, pd.DataFrame]
    long_short: pd.DataFrame
    cumulative_long_short: pd.Series
    turnover: pd.DataFrame
    rank_autocorrelation: pd.DataFrame
    coverage: pd.Series
    backend: str
    group_ic: pd.DataFrame | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def turnover_summary(self) -> pd.DataFrame:
        """Mean turnover per quantile (rows) and look-back horizon (columns)."""
        return self.turnover.mean().unstack(0)

    @property
    def group_ic_summary(self) -> pd.DataFrame | None:
        """Mean Rank IC per group (rows) and horizon (columns), when grouped."""
        if self.group_ic is None:
            return None
        return self.group_ic.groupby(level="group").mean()

    def to_dict(self, series: bool = True) -> dict[str, Any]:
        """A JSON-safe dict (NaN becomes None); ``series=False`` keeps only the tables.

        Examples
        --------
        >>> ev = _tiny_evaluation()
        >>> sorted(ev.to_dict(series=False))[:4]
        ['backend', 'cumulative_long_short_final', 'horizons', 'ic_decay']
        """
        out: dict[str, Any] = {
            "name": self.name,
            "horizons": list(self.horizons),
            "quantiles": self.quantiles,
            "backend": self.backend,
            "summary": _frame_to_json(self.summary),
            "ic_decay": _frame_to_json(self.ic_decay),
            "quantile_returns": _frame_to_json(self.quantile_returns),
            "quantile_returns_demeaned": _frame_to_json(self.quantile_returns_demeaned),
            "quantile_std_error": _frame_to_json(self.quantile_std_error),
            "long_short_mean": _series_to_json(self.long_short.mean().rename("mean")),
            "turnover_mean": _frame_to_json(self.turnover_summary),
            "rank_autocorrelation_mean": _series_to_json(
                self.rank_autocorrelation.mean().rename("mean")),
            "cumulative_long_short_final": (
                float(self.cumulative_long_short.iloc[-1])
                if len(self.cumulative_long_short) else None),
            "meta": self.meta,
        }
        if self.group_ic is not None:
            out["group_ic_mean"] = _frame_to_json(self.group_ic_summary)  # type: ignore[arg-type]
        if series:
            out["ic"] = _frame_to_json(self.ic)
            out["rank_ic"] = _frame_to_json(self.rank_ic)
            out["long_short"] = _frame_to_json(self.long_short)
            out["cumulative_long_short"] = _series_to_json(
                self.cumulative_long_short.rename("cumulative"))
        return out

    def to_json(self, path: str | os.PathLike[str], series: bool = True) -> Path:
        """Write :meth:`to_dict` as JSON atomically (temp file + ``os.replace``)."""
        path = Path(path)
        write_json_atomic(path, self.to_dict(series=series))
        return path

    def plot(self, out_dir: str | os.PathLike[str]) -> list[Path]:
        """Save IC series, quantile returns and cumulative long-short PNGs; return paths."""
        from qilin.factors.evaluation_plots import plot_evaluation

        return plot_evaluation(self, out_dir)


# ------------------------------------------------------------------ evaluation
def evaluate_factor(
    factor: Any,
    panel: Panel,
    horizons: Iterable[int] = DEFAULT_HORIZONS,
    quantiles: int = 5,
    groups: Any = None,
    backend: BackendName | Backend | None = None,
    dropna: DropPolicy = "all",
    name: str = "factor",
) -> FactorEvaluation:
    """Evaluate one factor against the panel's forward returns.

    Parameters
    ----------
    factor : array, Series or DataFrame
        Factor values observed at each date's close (see :func:`factor_matrix`).
    panel : Panel
        Market data; its ``close`` gives forward returns (pass ``panel.adjusted()`` for
        unadjusted data with an ``adj_factor``).
    horizons : iterable of int
        Forward-return horizons in trading days.
    quantiles : int
        Number of per-date quantile buckets (e.g. 5 or 10).
    groups : str, array, mapping or Series, optional
        Group per symbol (``(n_symbols,)``) or per date and symbol, or the name of a
        ``panel.info`` column such as ``"industry"`` or ``"board"``; adds ``group_ic``.
    backend : {"auto", "cpu", "gpu"}, Backend or None
        Where to compute; default: the panel's backend.
    dropna : {"all", "each"}
        ``"all"`` (alphalens): a (date, symbol) is evaluated only if the factor and every
        horizon's forward return are finite and the date can be quantized, so every
        horizon uses the same names. ``"each"``: names need a finite factor and price;
        each horizon then uses the names whose forward return exists (the last dates keep
        their short-horizon IC).
    name : str
        Factor name, kept in the result.

    Returns
    -------
    FactorEvaluation

    Examples
    --------
    >>> ev = _tiny_evaluation()
    >>> round(float(ev.summary.loc[1, "rank_ic_mean"]), 4)  # mean of 0.9487, 0.2, 0.0
    0.3829
    >>> ev.quantile_returns.shape
    (2, 1)
    """
    hs = _check_horizons(horizons)
    q = _check_quantiles(quantiles)
    if dropna not in ("all", "each"):
        raise ParameterError(f"dropna must be 'all' or 'each', got {dropna!r}")
    be = panel.backend if backend is None else get_backend(backend)
    if be.name != panel.backend.name:
        panel = panel.to(be)
    xp = be.xp
    f = factor_matrix(factor, panel, name)
    fwd = forward_returns(panel["close"], sorted({*hs, 1}))
    base = xp.isfinite(f) & panel.valid & xp.isfinite(panel["close"])
    if dropna == "all":
        for h in hs:
            base &= xp.isfinite(fwd[h])
    labels = quantize_factor(f, q, mask=base)
    if dropna == "all":
        base &= labels > 0
    masks = {h: base if dropna == "all" and h in hs else base & xp.isfinite(fwd[h])
             for h in {*hs, 1}}
    dates = panel.dates

    base_ranks = rank_rows(_masked(f, base))  # every horizon's mask is `base` under "all"
    ic, ric = {}, {}
    for h in hs:
        ic[h] = to_host(information_coefficient(f, fwd[h], "pearson", masks[h]))
        f_ranks = base_ranks if dropna == "all" else rank_rows(_masked(f, masks[h]))
        ric[h] = to_host(_pearson_rows(f_ranks, rank_rows(_masked(fwd[h], masks[h])), masks[h]))
    ic_df = pd.DataFrame(ic, index=dates).rename_axis(index="date", columns="horizon")
    ric_df = pd.DataFrame(ric, index=dates).rename_axis(index="date", columns="horizon")
    rows = {}
    for h in hs:
        a, b = ic_statistics(ic[h]), ic_statistics(ric[h])
        rows[h] = {**{f"ic_{k}": v for k, v in a.items()},
                   **{f"rank_ic_{k}": v for k, v in b.items()}}
    summary = pd.DataFrame.from_dict(rows, orient="index").rename_axis("horizon")
    decay = summary[["ic_mean", "rank_ic_mean"]].copy()

    qidx = pd.Index(range(1, q + 1), name="quantile")
    mean_raw, se_raw, mean_dm = {}, {}, {}
    daily_q: dict[int, pd.DataFrame] = {}
    spreads = {}
    for h in (*hs, *([1] if 1 not in hs else [])):
        m, se, daily = mean_return_by_quantile(fwd[h], labels, masks[h], q, demeaned=False)
        spread = daily[:, -1] - daily[:, 0]
        spreads[h] = spread
        if h not in hs:
            continue
        mean_raw[h], se_raw[h] = m, se
        mean_dm[h] = mean_return_by_quantile(fwd[h], labels, masks[h], q, demeaned=True)[0]
        daily_q[h] = pd.DataFrame(daily, index=dates, columns=qidx)
    cols = pd.Index(hs, name="horizon")
    quantile_returns = pd.DataFrame(mean_raw, index=qidx, columns=cols)
    quantile_dm = pd.DataFrame(mean_dm, index=qidx, columns=cols)
    quantile_se = pd.DataFrame(se_raw, index=qidx, columns=cols)
    long_short = pd.DataFrame({h: spreads[h] for h in hs}, index=dates).rename_axis(
        index="date", columns="horizon")
    ls1 = pd.Series(spreads[1], index=dates)
    cumulative = ((1.0 + ls1.fillna(0.0)).cumprod() - 1.0).rename("cumulative_long_short")
    used = np.asarray(to_host(base.any(axis=1)))
    if used.any():  # the curve starts at the first evaluated date, ends at the last spread
        first = int(np.argmax(used))
        last_ls = np.flatnonzero(np.isfinite(spreads[1]))
        stop = int(last_ls[-1]) + 1 if last_ls.size else first + 1
        cumulative = cumulative.iloc[first:max(stop, first + 1)]

    turnover = pd.DataFrame(
        {(h, k): quantile_turnover(labels, k, h) for h in hs for k in range(1, q + 1)},
        index=dates)
    turnover.columns = pd.MultiIndex.from_tuples(turnover.columns, names=["horizon", "quantile"])
    autocorr = pd.DataFrame({h: _rank_autocorrelation(base_ranks, h) for h in hs},
                            index=dates).rename_axis(index="date", columns="horizon")
    group_ic = None
    if groups is not None:
        group_ic = _group_rank_ic(f, fwd, masks, hs, groups, panel)
    coverage = pd.Series(to_host(base.sum(axis=1)), index=dates, name="names")
    return FactorEvaluation(
        name=name, horizons=hs, quantiles=q, ic=ic_df, rank_ic=ric_df, summary=summary,
        ic_decay=decay, quantile_returns=quantile_returns, quantile_returns_demeaned=quantile_dm,
        quantile_std_error=quantile_se, quantile_daily_returns=daily_q, long_short=long_short,
        cumulative_long_short=cumulative, turnover=turnover, rank_autocorrelation=autocorr,
        coverage=coverage, backend=be.name, group_ic=group_ic,
        meta={"dropna": dropna, "n_dates": int(panel.shape[0]),
              "n_symbols": int(panel.shape[1]),
              "evaluated_dates": int((coverage > 0).sum())},
    )


def _stable_argsort_rows(a: Any) -> Any:
    xp = array_module(a)
    try:
        return xp.argsort(a, axis=1, kind="stable")
    except TypeError:  # an xp without ``kind``: CuPy's sorts are stable already
        return xp.argsort(a, axis=1)


def rank_rows_grouped(x: Any, codes: Any, n_groups: int) -> Any:
    """Average ranks within each (row, group); NaN where ``x`` is NaN or the code is < 0.

    ``codes`` are integer group codes ``0..n_groups-1`` (``-1``: no group), same shape as
    ``x``. One sort per row by (group, value), so the cost does not grow with the number
    of groups.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[5.0, 1.0, 3.0, 2.0, 2.0, np.nan]])
    >>> rank_rows_grouped(x, np.array([[0, 1, 0, 1, 1, 0]]), 2).tolist()
    [[2.0, 1.0, 1.0, 2.5, 2.5, nan]]
    """
    xp = array_module(x)
    x = xp.asarray(x, dtype=xp.float64)
    n_rows, n_cols = x.shape
    if x.size == 0:
        return x.copy()
    valid = xp.isfinite(x) & (codes >= 0)
    small = xp.int16 if n_groups < 2**15 - 1 else xp.int64  # numpy radix-sorts int16
    g = xp.where(valid, codes, n_groups).astype(small)  # unranked cells: an extra group
    rows = xp.arange(n_rows)[:, None]
    xv = xp.where(valid, x, xp.nan)
    by_value = xp.argsort(xv, axis=1)
    g_by_value = xp.take_along_axis(g, by_value, axis=1)
    then_group = _stable_argsort_rows(g_by_value)  # by group, ties keep the value order
    order = xp.take_along_axis(by_value, then_group, axis=1)
    s = xp.take_along_axis(xv, order, axis=1)
    gs = xp.take_along_axis(g_by_value, then_group, axis=1).astype(xp.int64)
    starts = xp.ones(x.shape, dtype=bool)
    starts[:, 1:] = (s[:, 1:] != s[:, :-1]) | (gs[:, 1:] != gs[:, :-1])
    tie = xp.cumsum(starts, axis=1) - 1
    row_base = rows * n_cols
    flat = (tie + row_base).ravel()
    tie_counts = xp.bincount(flat, minlength=n_rows * n_cols)
    tie_first = (xp.cumsum(tie_counts) - tie_counts)[flat].reshape(x.shape) - row_base
    gflat = (gs + rows * (n_groups + 1)).ravel()
    g_counts = xp.bincount(gflat, minlength=n_rows * (n_groups + 1))
    g_first = (xp.cumsum(g_counts) - g_counts)[gflat].reshape(x.shape) - row_base
    ranks_sorted = tie_first - g_first + (tie_counts[flat].reshape(x.shape) + 1) / 2.0
    ranks = xp.empty_like(x)
    ranks[rows, order] = ranks_sorted
    return xp.where(valid, ranks, xp.nan)


def _grouped_pearson(x: Any, y: Any, codes: Any, n_groups: int) -> Any:
    """Pearson of ``x`` and ``y`` per (row, group) over cells where both are finite.

    Returns a (rows, groups) array; NaN for fewer than two names or a constant side.
    """
    xp = array_module(x, y)
    n_rows = x.shape[0]
    mask = xp.isfinite(x) & xp.isfinite(y) & (codes >= 0)
    flat = (xp.arange(n_rows)[:, None] * n_groups + codes)[mask]
    xv, yv = x[mask], y[mask]
    size = n_rows * n_groups
    n = xp.bincount(flat, minlength=size)
    safe_n = xp.maximum(n, 1)
    dx = xv - (xp.bincount(flat, weights=xv, minlength=size) / safe_n)[flat]
    dy = yv - (xp.bincount(flat, weights=yv, minlength=size) / safe_n)[flat]
    sxy = xp.bincount(flat, weights=dx * dy, minlength=size)
    sxx = xp.bincount(flat, weights=dx * dx, minlength=size)
    syy = xp.bincount(flat, weights=dy * dy, minlength=size)
    ok = (n >= 2) & (sxx > 0) & (syy > 0)
    r = sxy / xp.sqrt(xp.where(ok, sxx * syy, 1.0))
    return xp.where(ok, xp.clip(r, -1.0, 1.0), xp.nan).reshape(n_rows, n_groups)


def _group_rank_ic(f: Any, fwd: Mapping[int, Any], masks: Mapping[int, Any],
                   hs: Sequence[int], groups: Any, panel: Panel) -> pd.DataFrame:
    """Rank IC per (date, group) like alphalens ``factor_information_coefficient(by_group)``."""
    codes, labels = _group_codes(groups, panel)
    dev_codes = panel.backend.asarray(codes)
    n_groups = len(labels)
    per_h, present = {}, np.zeros((panel.shape[0], n_groups), dtype=bool)
    shared = len({id(masks[h]) for h in hs}) == 1
    f_ranks = rank_rows_grouped(_masked(f, masks[hs[0]]), dev_codes, n_groups)
    for h in hs:
        fr = f_ranks if shared or h == hs[0] else rank_rows_grouped(
            _masked(f, masks[h]), dev_codes, n_groups)
        rr = rank_rows_grouped(_masked(fwd[h], masks[h]), dev_codes, n_groups)
        per_h[h] = to_host(_grouped_pearson(fr, rr, dev_codes, n_groups)).ravel()
        used = to_host(masks[h] & (dev_codes >= 0))
        for_rows = np.zeros_like(present)
        np.logical_or.at(for_rows, (np.nonzero(used)[0], codes[used]), True)
        present |= for_rows
    index = pd.MultiIndex.from_product([panel.dates, labels], names=["date", "group"])
    out = pd.DataFrame(per_h, index=index)[present.ravel()]
    out.columns = pd.Index(hs, name="horizon")
    return out


def evaluate_factors(
    factors: pd.DataFrame | Panel | Mapping[str, Any] | Any,
    panel: Panel,
    progress: bool = False,
    **kwargs: Any,
) -> dict[str, FactorEvaluation]:
    """Evaluate many factors; keyword arguments go to :func:`evaluate_factor`.

    Parameters
    ----------
    factors : DataFrame, Panel, FactorResult or mapping
        A long frame with ``date``, ``symbol`` and one column per factor; a Panel whose
        fields are factors (or a ``FactorCalculator.compute`` result); or a mapping of name
        to anything :func:`factor_matrix` accepts.
    progress : bool
        Show a progress bar (tqdm, on stderr) over the factors.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> close = np.array([[10.0, 20.0, 5.0, 8.0], [11.0, 19.0, 5.5, 8.0], [12.1, 19.0, 5.0, 8.8]])
    >>> days = pd.date_range("2024-01-01", periods=3)
    >>> p = Panel.from_arrays({"close": close}, days, list("ABCD"))
    >>> evs = evaluate_factors({"a": close, "b": -close}, p, horizons=(1,), quantiles=2)
    >>> sorted(evs), round(float(evs["a"].rank_ic.iloc[0, 0] + evs["b"].rank_ic.iloc[0, 0]), 12)
    (['a', 'b'], 0.0)
    """
    items: dict[str, Any]
    if isinstance(getattr(factors, "panel", None), Panel):  # a FactorCalculator result
        factors = factors.panel  # type: ignore[union-attr]
    if isinstance(factors, Panel):
        same = factors.dates.equals(panel.dates) and factors.symbols.equals(panel.symbols)
        items = {n: a if same else pd.DataFrame(to_host(a), index=factors.dates,
                                                 columns=factors.symbols)
                 for n, a in factors.fields.items()}
    elif isinstance(factors, pd.DataFrame):
        if not {"date", "symbol"} <= set(factors.columns):
            raise DataError("a factors frame needs 'date' and 'symbol' columns plus factor columns")
        names = [c for c in factors.columns if c not in ("date", "symbol")]
        if not names:
            raise DataError("the factors frame has no factor columns besides date and symbol")
        indexed = factors.set_index(["date", "symbol"])
        items = {n: indexed[n] for n in names}
    else:
        items = dict(factors)
    if not progress:
        return {n: evaluate_factor(v, panel, name=n, **kwargs) for n, v in items.items()}
    from tqdm.auto import tqdm

    out = {}
    with tqdm(total=len(items), desc="evaluating factors", unit="factor", leave=False) as bar:
        for n, v in items.items():
            bar.set_postfix_str(n, refresh=False)
            out[n] = evaluate_factor(v, panel, name=n, **kwargs)
            bar.update(1)
    return out


def summary_table(evaluations: Mapping[str, FactorEvaluation]) -> pd.DataFrame:
    """One row per (factor, horizon): IC / Rank IC mean, ICIR, t, long-short, turnover.

    ``top_turnover`` is the mean turnover of the top quantile at the horizon's look-back and
    ``rank_autocorr`` the mean factor rank autocorrelation at that look-back.

    Examples
    --------
    >>> summary_table({"x": _tiny_evaluation()}).columns.tolist()[:3]
    ['ic_mean', 'ic_ir', 'rank_ic_mean']
    """
    rows = []
    for name, ev in evaluations.items():
        for h in ev.horizons:
            s = ev.summary.loc[h]
            rows.append({
                "factor": name, "horizon": h,
                "ic_mean": s["ic_mean"], "ic_ir": s["ic_ir"],
                "rank_ic_mean": s["rank_ic_mean"], "rank_ic_ir": s["rank_ic_ir"],
                "rank_ic_t": s["rank_ic_t"], "rank_ic_p": s["rank_ic_p"],
                "long_short_mean": ev.long_short[h].mean(),
                "top_turnover": ev.turnover[(h, ev.quantiles)].mean(),
                "rank_autocorr": ev.rank_autocorrelation[h].mean(),
            })
    return pd.DataFrame(rows).set_index(["factor", "horizon"])


def _tiny_evaluation() -> FactorEvaluation:
    """A 4-date x 4-symbol evaluation used by the doctests."""
    close = np.array([[10.0, 20.0, 5.0, 8.0], [11.0, 19.0, 5.5, 8.0],
                      [12.1, 19.0, 5.0, 8.8], [12.0, 19.5, 5.1, 8.7]])
    factor = np.array([[4.0, 1.0, 3.0, 2.0], [1.0, 2.0, 3.0, 4.0],
                       [1.0, 2.0, 4.0, 3.0], [1.0, 2.0, 3.0, 4.0]])
    panel = Panel.from_arrays({"close": close}, pd.date_range("2024-01-01", periods=4),
                              list("ABCD"))
    return evaluate_factor(factor, panel, horizons=(1,), quantiles=2)
