"""Technical indicators under their lowercase TA-Lib names, on dates x symbols arrays.

Each function takes 2-D arrays (dates x symbols; NumPy or CuPy; 1-D means one series) and
returns float64 of the same shape. Definitions and default parameters are TA-Lib's: EMA
seeded with the SMA of its first ``timeperiod`` values, Wilder smoothing for RSI, ATR and
ADX, population standard deviation for Bollinger bands, TA-Lib's MACD alignment (both
EMAs start at ``slowperiod - 1``; every MACD output starts ``signalperiod - 1`` later) and
STOCH's slow %K / slow %D with simple moving averages. Moving averages other than SMA in
BBANDS/STOCH (TA-Lib's ``matype``) are not offered.

NaN policy (as for :mod:`qilin.factors.ops`): a row where any input is non-finite is not an
observation: it is skipped, its output is NaN, and the indicator runs on each column's
remaining history as if the missing rows did not exist (so a suspended day does not reset
or contaminate an EMA). Outputs are NaN during TA-Lib's look-back period.

``vwap`` is not a TA-Lib function: it is the rolling volume-weighted typical price
``sum(tp * volume) / sum(volume)`` over the last ``timeperiod`` observations, with
``tp = (high + low + close) / 3``; NaN where the window's volume is 0.

Examples
--------
>>> import numpy as np
>>> close = np.array([1.0, 2.0, 3.0, 2.0, 5.0])
>>> sma(close, 3).tolist()
[nan, nan, 2.0, 2.3333333333333335, 3.3333333333333335]
>>> rsi(close, 2).round(4).tolist()
[nan, nan, 100.0, 50.0, 87.5]
"""

from __future__ import annotations

from typing import Any

from qilin.backend import DeviceKernel
from qilin.errors import DataError, ParameterError
from qilin.factors import kernels_cpu as kc
from qilin.factors import kernels_gpu as kg
from qilin.factors.ops import as_panel_array, check_int

__all__ = [
    "adx",
    "atr",
    "bbands_lower",
    "bbands_middle",
    "bbands_upper",
    "cci",
    "dema",
    "ema",
    "macd",
    "macd_hist",
    "macd_signal",
    "mfi",
    "natr",
    "obv",
    "roc",
    "rsi",
    "sma",
    "stoch_d",
    "stoch_k",
    "tema",
    "vwap",
    "willr",
]

_ind = DeviceKernel("indicator", cpu=kc.ind_nb, gpu=kg.ind_gpu)


def _run(op: int, inputs: dict[str, Any], p1: int = 1, p2: int = 1, p3: int = 1,
         f: float = 0.0) -> Any:
    arrays = {}
    was_1d = False
    for name, value in inputs.items():
        arrays[name], was_1d = as_panel_array(value, name, order="K")
    first_name, first = next(iter(arrays.items()))
    for name, a in arrays.items():
        if a.shape != first.shape:
            raise DataError(f"{name} has shape {tuple(a.shape)} but {first_name} has "
                            f"{tuple(first.shape)}")
    close = arrays.get("close", first)
    high = arrays.get("high", close)
    low = arrays.get("low", close)
    volume = arrays.get("volume", close)
    out = _ind(high, low, close, volume, op, p1, p2, p3, float(f))
    return out[:, 0] if was_1d else out


def _period(value: Any, name: str = "timeperiod", minimum: int = 2) -> int:
    return check_int(value, name, minimum)


def _width(value: Any, name: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be a number, got {value!r}") from None


def sma(close: Any, timeperiod: int = 30) -> Any:
    """Simple moving average (TA-Lib SMA).

    Examples
    --------
    >>> import numpy as np
    >>> sma(np.array([1.0, 2.0, 3.0]), 2).tolist()
    [nan, 1.5, 2.5]
    """
    return _run(kc.IND_SMA, {"close": close}, _period(timeperiod))


def ema(close: Any, timeperiod: int = 30) -> Any:
    """Exponential moving average seeded with the SMA (TA-Lib EMA).

    Examples
    --------
    >>> import numpy as np
    >>> ema(np.array([1.0, 3.0, 5.0, 8.0]), 3).tolist()
    [nan, nan, 3.0, 5.5]
    """
    return _run(kc.IND_EMA, {"close": close}, _period(timeperiod))


def wma(close: Any, timeperiod: int = 30) -> Any:
    """Linearly weighted moving average, newest weight ``timeperiod`` (TA-Lib WMA).

    Examples
    --------
    >>> import numpy as np
    >>> wma(np.array([1.0, 2.0, 4.0]), 2).round(6).tolist()
    [nan, 1.666667, 3.333333]
    """
    return _run(kc.IND_WMA, {"close": close}, _period(timeperiod))


def dema(close: Any, timeperiod: int = 30) -> Any:
    """Double EMA, ``2 * EMA - EMA(EMA)`` (TA-Lib DEMA).

    Examples
    --------
    >>> import numpy as np
    >>> dema(np.array([1.0, 2.0, 3.0, 4.0]), 2).tolist()
    [nan, nan, 3.0, 4.0]
    """
    return _run(kc.IND_DEMA, {"close": close}, _period(timeperiod))


def tema(close: Any, timeperiod: int = 30) -> Any:
    """Triple EMA, ``3 EMA - 3 EMA(EMA) + EMA(EMA(EMA))`` (TA-Lib TEMA).

    Examples
    --------
    >>> import numpy as np
    >>> tema(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), 2).tolist()
    [nan, nan, nan, 4.0, 5.0]
    """
    return _run(kc.IND_TEMA, {"close": close}, _period(timeperiod))


def _macd(op: int, close: Any, fastperiod: int, slowperiod: int, signalperiod: int) -> Any:
    fast = _period(fastperiod, "fastperiod")
    slow = _period(slowperiod, "slowperiod")
    signal = _period(signalperiod, "signalperiod", 1)
    return _run(op, {"close": close}, fast, slow, signal)


def macd(close: Any, fastperiod: int = 12, slowperiod: int = 26, signalperiod: int = 9) -> Any:
    """MACD line, fast EMA - slow EMA, with TA-Lib's alignment (first value at index
    ``slowperiod + signalperiod - 2``).

    Examples
    --------
    >>> import numpy as np
    >>> macd(np.arange(6.0), 2, 3, 2).tolist()
    [nan, nan, nan, 0.5, 0.5, 0.5]
    """
    return _macd(kc.IND_MACD, close, fastperiod, slowperiod, signalperiod)


def macd_signal(close: Any, fastperiod: int = 12, slowperiod: int = 26,
                signalperiod: int = 9) -> Any:
    """MACD signal line, the EMA of the MACD line (TA-Lib MACD ``macdsignal``).

    Examples
    --------
    >>> import numpy as np
    >>> macd_signal(np.arange(6.0), 2, 3, 2).tolist()
    [nan, nan, nan, 0.5, 0.5, 0.5]
    """
    return _macd(kc.IND_MACD_SIGNAL, close, fastperiod, slowperiod, signalperiod)


def macd_hist(close: Any, fastperiod: int = 12, slowperiod: int = 26,
              signalperiod: int = 9) -> Any:
    """MACD histogram, MACD line - signal line (TA-Lib MACD ``macdhist``).

    Examples
    --------
    >>> import numpy as np
    >>> macd_hist(np.arange(6.0), 2, 3, 2).tolist()
    [nan, nan, nan, 0.0, 0.0, 0.0]
    """
    return _macd(kc.IND_MACD_HIST, close, fastperiod, slowperiod, signalperiod)


def rsi(close: Any, timeperiod: int = 14) -> Any:
    """Relative strength index with Wilder smoothing (TA-Lib RSI).

    Examples
    --------
    >>> import numpy as np
    >>> rsi(np.array([1.0, 2.0, 1.0, 2.0]), 2).tolist()
    [nan, nan, 50.0, 75.0]
    """
    return _run(kc.IND_RSI, {"close": close}, _period(timeperiod))


def bbands_upper(close: Any, timeperiod: int = 20, nbdevup: float = 2.0) -> Any:
    """Upper Bollinger band: SMA + ``nbdevup`` population std (TA-Lib BBANDS).

    Examples
    --------
    >>> import numpy as np
    >>> bbands_upper(np.array([1.0, 3.0, 5.0]), 2).tolist()
    [nan, 4.0, 6.0]
    """
    return _run(kc.IND_BBANDS_UPPER, {"close": close}, _period(timeperiod),
                f=_width(nbdevup, "nbdevup"))


def bbands_middle(close: Any, timeperiod: int = 20) -> Any:
    """Middle Bollinger band, the SMA (TA-Lib BBANDS).

    Examples
    --------
    >>> import numpy as np
    >>> bbands_middle(np.array([1.0, 3.0, 5.0]), 2).tolist()
    [nan, 2.0, 4.0]
    """
    return _run(kc.IND_BBANDS_MIDDLE, {"close": close}, _period(timeperiod))


def bbands_lower(close: Any, timeperiod: int = 20, nbdevdn: float = 2.0) -> Any:
    """Lower Bollinger band: SMA - ``nbdevdn`` population std (TA-Lib BBANDS).

    Examples
    --------
    >>> import numpy as np
    >>> bbands_lower(np.array([1.0, 3.0, 5.0]), 2).tolist()
    [nan, 0.0, 2.0]
    """
    return _run(kc.IND_BBANDS_LOWER, {"close": close}, _period(timeperiod),
                f=_width(nbdevdn, "nbdevdn"))


def atr(high: Any, low: Any, close: Any, timeperiod: int = 14) -> Any:
    """Average true range with Wilder smoothing (TA-Lib ATR).

    Examples
    --------
    >>> import numpy as np
    >>> h, l, c = np.array([2.0, 3.0, 4.0]), np.array([1.0, 1.0, 2.0]), np.array([1.5, 2.0, 3.0])
    >>> atr(h, l, c, 1).tolist()
    [nan, 2.0, 2.0]
    """
    return _run(kc.IND_ATR, {"high": high, "low": low, "close": close},
                _period(timeperiod, minimum=1))


def natr(high: Any, low: Any, close: Any, timeperiod: int = 14) -> Any:
    """Normalised ATR, ``100 * ATR / close`` (TA-Lib NATR).

    Examples
    --------
    >>> import numpy as np
    >>> h, l, c = np.array([2.0, 3.0, 4.0]), np.array([1.0, 1.0, 2.0]), np.array([1.5, 2.0, 4.0])
    >>> natr(h, l, c, 1).tolist()
    [nan, 100.0, 50.0]
    """
    return _run(kc.IND_NATR, {"high": high, "low": low, "close": close},
                _period(timeperiod, minimum=1))


def cci(high: Any, low: Any, close: Any, timeperiod: int = 14) -> Any:
    """Commodity channel index (TA-Lib CCI): ``(tp - SMA(tp)) / (0.015 * mean deviation)``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([1.0, 2.0, 4.0])
    >>> cci(x, x, x, 3).round(4).tolist()
    [nan, nan, 100.0]
    """
    return _run(kc.IND_CCI, {"high": high, "low": low, "close": close}, _period(timeperiod))


def willr(high: Any, low: Any, close: Any, timeperiod: int = 14) -> Any:
    """Williams' %R, ``-100 * (highest high - close) / (highest high - lowest low)``.

    Examples
    --------
    >>> import numpy as np
    >>> willr(np.array([3.0, 4.0]), np.array([1.0, 2.0]), np.array([2.0, 3.5]), 2).round(6).tolist()
    [nan, -16.666667]
    """
    return _run(kc.IND_WILLR, {"high": high, "low": low, "close": close}, _period(timeperiod))


def mfi(high: Any, low: Any, close: Any, volume: Any, timeperiod: int = 14) -> Any:
    """Money flow index (TA-Lib MFI; moves within 1e-14 of the price scale count as flat).

    Examples
    --------
    >>> import numpy as np
    >>> x, v = np.array([1.0, 2.0, 1.0, 3.0]), np.array([10.0, 10.0, 10.0, 10.0])
    >>> mfi(x, x, x, v, 2).round(6).tolist()
    [nan, nan, 66.666667, 75.0]
    """
    return _run(kc.IND_MFI, {"high": high, "low": low, "close": close, "volume": volume},
                _period(timeperiod))


def obv(close: Any, volume: Any) -> Any:
    """On-balance volume starting from the first observation's volume (TA-Lib OBV).

    Examples
    --------
    >>> import numpy as np
    >>> obv(np.array([1.0, 2.0, 2.0, 1.0]), np.array([5.0, 3.0, 4.0, 1.0])).tolist()
    [5.0, 8.0, 8.0, 7.0]
    """
    return _run(kc.IND_OBV, {"close": close, "volume": volume})


def roc(close: Any, timeperiod: int = 10) -> Any:
    """Rate of change in percent, ``100 * (close / close[t - timeperiod] - 1)`` (TA-Lib ROC).

    Examples
    --------
    >>> import numpy as np
    >>> roc(np.array([2.0, 3.0, 1.0]), 1).tolist()
    [nan, 50.0, -66.66666666666667]
    """
    return _run(kc.IND_ROC, {"close": close}, _period(timeperiod, minimum=1))


def _stoch(op: int, high: Any, low: Any, close: Any, fastk_period: int, slowk_period: int,
           slowd_period: int) -> Any:
    return _run(op, {"high": high, "low": low, "close": close},
                _period(fastk_period, "fastk_period", 1),
                _period(slowk_period, "slowk_period", 1),
                _period(slowd_period, "slowd_period", 1))


def stoch_k(high: Any, low: Any, close: Any, fastk_period: int = 5, slowk_period: int = 3,
            slowd_period: int = 3) -> Any:
    """Slow %K of TA-Lib STOCH (SMA of fast %K), aligned with slow %D like TA-Lib.

    Examples
    --------
    >>> import numpy as np
    >>> h, l = np.array([3.0, 4.0, 5.0]), np.array([1.0, 2.0, 3.0])
    >>> stoch_k(h, l, np.array([2.0, 4.0, 4.0]), 2, 1, 1).tolist()
    [nan, 100.0, 66.66666666666667]
    """
    return _stoch(kc.IND_STOCH_K, high, low, close, fastk_period, slowk_period, slowd_period)


def stoch_d(high: Any, low: Any, close: Any, fastk_period: int = 5, slowk_period: int = 3,
            slowd_period: int = 3) -> Any:
    """Slow %D of TA-Lib STOCH (SMA of slow %K).

    Examples
    --------
    >>> import numpy as np
    >>> h, l = np.array([3.0, 4.0, 5.0]), np.array([1.0, 2.0, 3.0])
    >>> stoch_d(h, l, np.array([2.0, 4.0, 4.0]), 2, 1, 2).tolist()
    [nan, nan, 83.33333333333334]
    """
    return _stoch(kc.IND_STOCH_D, high, low, close, fastk_period, slowk_period, slowd_period)


def adx(high: Any, low: Any, close: Any, timeperiod: int = 14) -> Any:
    """Average directional index with Wilder smoothing (TA-Lib ADX).

    Examples
    --------
    >>> import numpy as np
    >>> h = np.array([2.0, 3.0, 4.0, 5.0])
    >>> adx(h, h - 1.0, h - 0.5, 2).tolist()
    [nan, nan, nan, 100.0]
    """
    return _run(kc.IND_ADX, {"high": high, "low": low, "close": close}, _period(timeperiod))


def vwap(high: Any, low: Any, close: Any, volume: Any, timeperiod: int = 20) -> Any:
    """Rolling volume-weighted typical price over the last ``timeperiod`` observations.

    Examples
    --------
    >>> import numpy as np
    >>> x, v = np.array([1.0, 2.0, 4.0]), np.array([1.0, 3.0, 0.0])
    >>> vwap(x, x, x, v, 2).tolist()
    [nan, 1.75, 2.0]
    """
    return _run(kc.IND_VWAP, {"high": high, "low": low, "close": close, "volume": volume},
                _period(timeperiod, minimum=1))
