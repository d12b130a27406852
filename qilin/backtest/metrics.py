"""Performance metrics, named and defined as in empyrical, on NumPy or CuPy arrays.

Every function takes a 1-D series of simple period returns (a scalar result) or a 2-D
``dates x columns`` array (one result per column), in the array namespace of its input.
NaN handling follows empyrical: a NaN return counts as a period with no return in
compounding and drawdowns (``total_return``, ``annual_return``, ``max_drawdown``) and is
skipped by the moments (``nanmean``/``nanstd``); the number of years is ``len(returns) /
periods_per_year`` including NaN periods.

Definitions (``r`` returns, ``b`` benchmark returns, ``P`` periods per year):

- ``total_return = prod(1 + r) - 1``; ``annual_return = (1 + total_return) ** (P / len(r)) - 1``
- ``annual_volatility = std(r, ddof=1) * sqrt(P)``; ``sharpe_ratio = mean(r - rf) /
  std(r - rf, ddof=1) * sqrt(P)`` (0 deviation of a constant series gives +-inf or NaN)
- ``downside_risk = sqrt(mean(min(r - req, 0) ** 2)) * sqrt(P)``; ``sortino_ratio =
  mean(r - req) * P / downside_risk``
- ``max_drawdown = min(wealth / running_peak - 1)`` (a negative fraction, the initial wealth
  of 1 counts as a peak); ``calmar_ratio = annual_return / |max_drawdown|`` (NaN when there is
  no drawdown); ``max_drawdown_duration`` = the longest run of periods spent below a peak.
- ``beta = cov(r, b) / var(b)`` over periods where ``r`` is present;
  ``alpha = (1 + mean(r - beta * b)) ** P - 1`` (annualised, as empyrical);
  ``tracking_error = std(r - b, ddof=1) * sqrt(P)``; ``information_ratio = mean(r - b) * P /
  tracking_error`` (empyrical's ``excess_sharpe`` times ``sqrt(P)``).
- ``win_rate`` = share of positive values among the present ones, ``profit_factor`` = sum of
  gains over the absolute sum of losses, ``average_trade`` = mean value (apply them to
  per-trade P&L or to period returns).

Examples
--------
>>> import numpy as np
>>> r = np.array([0.01, -0.02, 0.03, np.nan, 0.01])
>>> round(total_return(r), 6)
0.029689
>>> round(max_drawdown(r), 6)
-0.02
>>> max_drawdown_duration(r)
1
>>> round(sharpe_ratio(np.array([0.01, 0.02, 0.0]), periods_per_year=252), 4)
15.8745
>>> sharpe_ratio(np.array([[0.01, 0.0], [0.03, 0.0]]), periods_per_year=1).round(4).tolist()
[1.4142, nan]
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from qilin.backend import array_module, to_host

METRIC_NAMES = (
    "total_return", "annual_return", "annual_volatility", "sharpe_ratio", "sortino_ratio",
    "max_drawdown", "calmar_ratio", "max_drawdown_duration", "win_rate", "profit_factor",
)
BENCHMARK_METRICS = ("alpha", "beta", "information_ratio", "tracking_error")


def _prep(returns: Any) -> tuple[Any, Any, bool]:
    xp = array_module(returns)
    r = xp.asarray(returns, dtype=xp.float64)
    return xp, r, r.ndim == 1


def _out(x: Any, one_d: bool) -> Any:
    if one_d:
        return float(x)
    return x


def _nan_like(xp: Any, r: Any, one_d: bool) -> Any:
    return float("nan") if one_d else xp.full(r.shape[1:], xp.nan)


def total_return(returns: Any) -> Any:
    """Compounded return over the whole series: ``prod(1 + r) - 1`` (NaN as 0)."""
    xp, r, one_d = _prep(returns)
    if len(r) < 1:
        return _nan_like(xp, r, one_d)
    return _out(xp.nanprod(r + 1.0, axis=0) - 1.0, one_d)


def annual_return(returns: Any, periods_per_year: int = 252) -> Any:
    """Geometric CAGR: ``(1 + total_return) ** (periods_per_year / len(returns)) - 1``."""
    xp, r, one_d = _prep(returns)
    if len(r) < 1:
        return _nan_like(xp, r, one_d)
    years = len(r) / periods_per_year
    ending = xp.nanprod(r + 1.0, axis=0)
    with np.errstate(invalid="ignore"):
        return _out(ending ** (1.0 / years) - 1.0, one_d)


def annual_volatility(returns: Any, periods_per_year: int = 252) -> Any:
    """Sample standard deviation (ddof=1) times ``sqrt(periods_per_year)``."""
    xp, r, one_d = _prep(returns)
    if len(r) < 2:
        return _nan_like(xp, r, one_d)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _out(xp.nanstd(r, ddof=1, axis=0) * np.sqrt(periods_per_year), one_d)


def _zero_dispersion_std(xp: Any, values: Any, std: Any) -> Any:
    # identical values have an exact 0 deviation (not a 1e-18 rounding residue), as empyrical
    with np.errstate(invalid="ignore"):
        constant = (xp.nanmax(values, axis=0) == xp.nanmin(values, axis=0)) & xp.isfinite(std)
    return xp.where(constant, 0.0, std)


def sharpe_ratio(returns: Any, periods_per_year: int = 252, risk_free: float = 0.0) -> Any:
    """Annualised Sharpe ratio: ``mean(r - rf) / std(r - rf, ddof=1) * sqrt(P)``."""
    xp, r, one_d = _prep(returns)
    if len(r) < 2:
        return _nan_like(xp, r, one_d)
    adj = r - risk_free
    with np.errstate(invalid="ignore", divide="ignore"):
        std = _zero_dispersion_std(xp, adj, xp.nanstd(adj, ddof=1, axis=0))
        return _out(xp.nanmean(adj, axis=0) / std * np.sqrt(periods_per_year), one_d)


def downside_risk(returns: Any, periods_per_year: int = 252, required_return: float = 0.0) -> Any:
    """Annualised downside deviation below ``required_return`` (empyrical's definition)."""
    xp, r, one_d = _prep(returns)
    if len(r) < 1:
        return _nan_like(xp, r, one_d)
    diff = xp.clip(r - required_return, -xp.inf, 0.0)
    with np.errstate(invalid="ignore"):
        return _out(xp.sqrt(xp.nanmean(diff * diff, axis=0)) * np.sqrt(periods_per_year), one_d)


def sortino_ratio(returns: Any, periods_per_year: int = 252, required_return: float = 0.0) -> Any:
    """``mean(r - req) * P / downside_risk`` (infinite when there is no downside)."""
    xp, r, one_d = _prep(returns)
    if len(r) < 2:
        return _nan_like(xp, r, one_d)
    with np.errstate(invalid="ignore", divide="ignore"):
        num = xp.nanmean(r - required_return, axis=0) * periods_per_year
        return _out(num / xp.asarray(downside_risk(r, periods_per_year, required_return)), one_d)


def _cummax(xp: Any, a: Any) -> Any:
    if xp is np:
        return np.fmax.accumulate(a, axis=0)
    try:
        return xp.maximum.accumulate(a, axis=0)
    except (AttributeError, NotImplementedError, TypeError):  # older CuPy: do it on the host
        return xp.asarray(np.fmax.accumulate(to_host(a), axis=0))


def drawdown_series(returns: Any) -> Any:
    """Drawdown after each period: ``wealth / running_peak - 1`` with an initial peak of 1."""
    xp, r, _ = _prep(returns)
    r = xp.where(xp.isnan(r), 0.0, r)
    wealth = xp.concatenate([xp.ones((1, *r.shape[1:])), xp.cumprod(1.0 + r, axis=0)], axis=0)
    peak = _cummax(xp, wealth)
    return (wealth / peak - 1.0)[1:]


def max_drawdown(returns: Any) -> Any:
    """Largest peak-to-trough loss as a negative fraction (0 when never under water)."""
    xp, r, one_d = _prep(returns)
    if len(r) < 1:
        return _nan_like(xp, r, one_d)
    return _out(xp.nanmin(drawdown_series(r), axis=0), one_d)


def max_drawdown_duration(returns: Any) -> Any:
    """Longest run of consecutive periods spent below the previous peak (an int per column)."""
    xp, r, one_d = _prep(returns)
    under = to_host(drawdown_series(r) < 0) if len(r) else np.zeros((0, *r.shape[1:]), bool)
    under = under.reshape(len(under), int(np.prod(under.shape[1:], dtype=np.int64)))
    best = np.zeros(under.shape[1], dtype=np.int64)
    run = np.zeros(under.shape[1], dtype=np.int64)
    for row in under:
        run = np.where(row, run + 1, 0)
        np.maximum(best, run, out=best)
    return int(best[0]) if one_d else xp.asarray(best)


def calmar_ratio(returns: Any, periods_per_year: int = 252) -> Any:
    """``annual_return / |max_drawdown|``; NaN without a drawdown or when infinite."""
    xp, r, one_d = _prep(returns)
    if len(r) < 1:
        return _nan_like(xp, r, one_d)
    mdd = xp.asarray(max_drawdown(r))
    ar = xp.asarray(annual_return(r, periods_per_year))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = xp.where(mdd < 0, ar / xp.abs(mdd), xp.nan)
    out = xp.where(xp.isinf(out), xp.nan, out)
    return _out(out, one_d)


def win_rate(values: Any) -> Any:
    """Share of positive values among the present (non-NaN) ones."""
    xp, x, one_d = _prep(values)
    n = xp.sum(~xp.isnan(x), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _out(xp.where(n > 0, xp.sum(x > 0, axis=0) / n, xp.nan), one_d)


def profit_factor(values: Any) -> Any:
    """Sum of gains over the absolute sum of losses (inf without losses, NaN when empty)."""
    xp, x, one_d = _prep(values)
    gains = xp.nansum(xp.where(x > 0, x, 0.0), axis=0)
    losses = -xp.nansum(xp.where(x < 0, x, 0.0), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = xp.where(losses > 0, gains / losses, xp.where(gains > 0, xp.inf, xp.nan))
    return _out(out, one_d)


def average_trade(values: Any) -> Any:
    """Mean of the present values (per-trade P&L or returns)."""
    xp, x, one_d = _prep(values)
    with np.errstate(invalid="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return _out(xp.nanmean(x, axis=0), one_d)


def _bench(xp: Any, r: Any, benchmark: Any) -> Any:
    b = xp.asarray(benchmark, dtype=xp.float64)
    if b.shape[0] != r.shape[0]:
        from qilin.errors import BacktestError

        raise BacktestError(
            f"benchmark has {b.shape[0]} periods but returns have {r.shape[0]}: align them first")
    if r.ndim == 2 and b.ndim == 1:
        b = b[:, None]
    return b


def beta(returns: Any, benchmark: Any, risk_free: float = 0.0) -> Any:
    """``cov(r, b) / var(b)`` over the periods where the return is present (empyrical)."""
    xp, r, one_d = _prep(returns)
    b = _bench(xp, r, benchmark)
    r2 = (r if r.ndim == 2 else r[:, None]) - risk_free
    b2 = (b if b.ndim == 2 else b[:, None]) - risk_free
    if len(r2) < 1 or len(b2) < 2:
        return _nan_like(xp, r, one_d)
    ind = xp.where(xp.isnan(r2), xp.nan, b2)
    with np.errstate(invalid="ignore", divide="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            res = ind - xp.nanmean(ind, axis=0)
            cov = xp.nanmean(res * r2, axis=0)
            var = xp.nanmean(res * res, axis=0)
            var = xp.where(var < 1.0e-30, xp.nan, var)
            out = cov / var
    return float(out[0]) if one_d else out


def alpha(returns: Any, benchmark: Any, periods_per_year: int = 252,
          risk_free: float = 0.0) -> Any:
    """Annualised alpha: ``(1 + mean(r - rf - beta * (b - rf))) ** P - 1`` (empyrical)."""
    xp, r, one_d = _prep(returns)
    if len(r) < 2:
        return _nan_like(xp, r, one_d)
    b = _bench(xp, r, benchmark)
    be = xp.asarray(beta(r, b, risk_free))
    with np.errstate(invalid="ignore"):
        series = (r - risk_free) - be * (b - risk_free)
        return _out((xp.nanmean(series, axis=0) + 1.0) ** periods_per_year - 1.0, one_d)


def tracking_error(returns: Any, benchmark: Any, periods_per_year: int = 252) -> Any:
    """Annualised standard deviation (ddof=1) of the active return ``r - b``."""
    xp, r, one_d = _prep(returns)
    if len(r) < 2:
        return _nan_like(xp, r, one_d)
    active = r - _bench(xp, r, benchmark)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _out(xp.nanstd(active, ddof=1, axis=0) * np.sqrt(periods_per_year), one_d)


def information_ratio(returns: Any, benchmark: Any, periods_per_year: int = 252) -> Any:
    """Annualised information ratio ``mean(r - b) * P / tracking_error``."""
    xp, r, one_d = _prep(returns)
    if len(r) < 2:
        return _nan_like(xp, r, one_d)
    active = r - _bench(xp, r, benchmark)
    with np.errstate(invalid="ignore", divide="ignore"):
        std = _zero_dispersion_std(xp, active, xp.nanstd(active, ddof=1, axis=0))
        return _out(xp.nanmean(active, axis=0) / std * np.sqrt(periods_per_year), one_d)


def summary(returns: Any, periods_per_year: int = 252, benchmark: Any = None,
            turnover: Any = None, exposure: Any = None) -> pd.DataFrame:
    """All metrics per column of ``returns`` as a DataFrame (one row per column).

    ``win_rate``/``profit_factor`` here are over periods; ``turnover`` and ``exposure`` are
    the mean daily values of the given series.

    Examples
    --------
    >>> import numpy as np
    >>> s = summary(np.array([[0.01], [-0.02], [0.03]]), periods_per_year=252)
    >>> round(float(s.loc[0, "total_return"]), 6), int(s.loc[0, "max_drawdown_duration"])
    (0.019494, 1)
    """
    r = np.asarray(to_host(returns), dtype=np.float64)
    if r.ndim == 1:
        r = r[:, None]
    P = periods_per_year
    cols: dict[str, Any] = {
        "total_return": total_return(r), "annual_return": annual_return(r, P),
        "annual_volatility": annual_volatility(r, P), "sharpe_ratio": sharpe_ratio(r, P),
        "sortino_ratio": sortino_ratio(r, P), "max_drawdown": max_drawdown(r),
        "calmar_ratio": calmar_ratio(r, P), "max_drawdown_duration": max_drawdown_duration(r),
        "win_rate": win_rate(np.where(r == 0, np.nan, r)),
        "profit_factor": profit_factor(r),
    }
    if turnover is not None:
        cols["turnover"] = np.nanmean(np.asarray(to_host(turnover)).reshape(len(r), -1), axis=0)
    if exposure is not None:
        cols["exposure"] = np.nanmean(np.asarray(to_host(exposure)).reshape(len(r), -1), axis=0)
    if benchmark is not None:
        b = np.asarray(to_host(benchmark), dtype=np.float64).reshape(-1)
        cols["alpha"] = alpha(r, b, P)
        cols["beta"] = beta(r, b)
        cols["information_ratio"] = information_ratio(r, b, P)
        cols["tracking_error"] = tracking_error(r, b, P)
    return pd.DataFrame({k: np.broadcast_to(np.asarray(v), (r.shape[1],)) for k, v in
                         cols.items()})
