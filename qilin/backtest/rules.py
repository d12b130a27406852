"""Market rules: lots, T+1, daily price limits and suspensions, as arrays for the kernels.

The kernels never look at symbols, boards or limit prices: :func:`trading_arrays` turns a
:class:`~qilin.data.panel.Panel` and a market profile's :class:`MarketRules` into what every
kernel reads, per (date, symbol): the execution price (NaN on a missing or suspended bar),
the marking close, the corporate-action quantity ratio, and whether a buy and a sell may
fill there, as rejection codes (0: allowed; else ``suspended``, ``no_volume``, ``limit_up``
or ``limit_down``, the codes of :mod:`qilin.kernels.orders`).

Limits are relative to the previous close: the ``preclose`` field when the Panel has it
(the exchange's previous close, which accounts for ex-dividend adjustments), else the last
valid close before the day. The fraction comes from :func:`qilin.data.boards.limit_pct_matrix`
(10% main board, 20% ChiNext/STAR, 5% ST, 30% Beijing) and the price is rounded to the cent
by :func:`qilin.data.boards.limit_prices`.

Examples
--------
>>> import numpy as np, pandas as pd
>>> from qilin.data.panel import Panel
>>> close = np.array([[10.0], [11.0], [12.1]])
>>> p = Panel.from_arrays({"close": close}, pd.date_range("2021-01-04", periods=3), ["600000.SH"])
>>> up, down = limit_arrays(p, MarketRules(price_limits=True))
>>> up[:, 0].tolist(), down[:, 0].tolist()
([inf, 11.0, 12.1], [-inf, 9.0, 9.9])
>>> limit_hits(p, MarketRules(price_limits=True))[0][:, 0].tolist()
[False, True, True]
>>> arrays = trading_arrays(p, MarketRules(price_limits=True))
>>> arrays.buy_reject[:, 0].tolist(), arrays.sell_reject[:, 0].tolist()  # 3 = limit_up
([0, 3, 3], [0, 0, 0])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numba as nb
import numpy as np

from qilin.backend import to_host
from qilin.config import MarketConfig, load_market
from qilin.data.boards import limit_pct_matrix, limit_prices
from qilin.data.panel import Panel
from qilin.errors import BacktestError
from qilin.kernels.orders import (
    REJECT_LIMIT_DOWN,
    REJECT_LIMIT_UP,
    REJECT_NO_VOLUME,
    REJECT_SUSPENDED,
)

#: Tolerance for "at the limit" comparisons (prices are quoted in cents).
LIMIT_TOL = 1e-9


@dataclass(frozen=True)
class MarketRules:
    """Trading rules of a market profile.

    Parameters
    ----------
    lot_size : int
        Orders are whole multiples of this many shares (100 in China, 1 in the US).
    t_plus_one : bool
        Shares bought on a day cannot be sold before the next trading day.
    price_limits : bool
        No buying at/above the up limit, no selling at/below the down limit.
    block_zero_volume : bool
        A bar with a volume of 0 (nothing traded that day) is not tradable: orders wait and
        are recorded as rejected with the reason ``no_volume``. Needs a ``volume`` field.
    allow_short : bool
        Whether the market allows short positions (portfolio mode's long-short books).
    """

    lot_size: int = 1
    t_plus_one: bool = False
    price_limits: bool = False
    block_zero_volume: bool = True
    allow_short: bool = False

    def __post_init__(self) -> None:
        if int(self.lot_size) != self.lot_size or self.lot_size < 1:
            raise BacktestError(f"lot_size={self.lot_size!r} must be a positive integer")

    @classmethod
    def from_market(cls, market: MarketConfig | str, **overrides: Any) -> MarketRules:
        """Rules of a market profile (``"cn"``, ``"us"`` or a MarketConfig), with overrides."""
        m = load_market(market) if isinstance(market, str) else market
        kw = {"lot_size": m.lot_size, "t_plus_one": m.t_plus_one,
              "price_limits": m.price_limits, "block_zero_volume": m.block_zero_volume,
              "allow_short": m.allow_short}
        kw.update(overrides)
        return cls(**kw)


def previous_close(panel: Panel) -> np.ndarray:
    """Reference close for each day's limits: ``preclose`` if present, else last valid close.

    Returns a host array (dates x symbols); NaN where no previous close is known.
    """
    close = to_host(panel["close"]).astype(np.float64)
    T, N = close.shape
    prev = np.full((T, N), np.nan)
    if T > 1:
        filled = ffill_rows(close)
        prev[1:] = filled[:-1]
    if "preclose" in panel:
        pre = to_host(panel["preclose"]).astype(np.float64)
        prev = np.where(np.isfinite(pre) & (pre > 0), pre, prev)
    return prev


def limit_arrays(panel: Panel, rules: MarketRules) -> tuple[np.ndarray, np.ndarray]:
    """Up and down limit prices (host arrays, dates x symbols).

    ``+inf`` / ``-inf`` where the rules have no price limits or no previous close is known,
    and where the previous close is so small that the limit rounded to the cent says nothing
    (an up limit not above the previous close, a down limit of 0): such a limit would block
    every order and mislabel it ``limit_up`` / ``limit_down``.
    """
    T, N = panel.shape
    if not rules.price_limits:
        return np.full((T, N), np.inf), np.full((T, N), -np.inf)
    prev = previous_close(panel)
    pct = limit_pct_matrix(panel.symbols, panel.dates, is_st=to_host(panel.st))
    up, down = limit_prices(np.nan_to_num(prev, nan=0.0), pct)
    known = np.isfinite(prev) & (prev > 0)
    return (np.where(known & (up > prev), up, np.inf),
            np.where(known & (down > 0), down, -np.inf))


def no_volume(panel: Panel, rules: MarketRules) -> np.ndarray:
    """Bars with a price but a volume of 0, which ``rules`` do not let trade (host bool array).

    All False when the rules allow such bars or the panel has no ``volume`` field.

    Examples
    --------
    >>> import pandas as pd
    >>> p = Panel.from_arrays({"close": np.ones((3, 1)), "volume": np.array([[5.0], [0], [1]])},
    ...                       pd.date_range("2021-01-04", periods=3), ["A"])
    >>> no_volume(p, MarketRules())[:, 0].tolist()
    [False, True, False]
    """
    if not rules.block_zero_volume or "volume" not in panel:
        return np.zeros(panel.shape, dtype=bool)
    vol = to_host(panel["volume"]).astype(np.float64)
    return to_host(panel.valid) & (vol == 0.0)


def limit_hits(panel: Panel, rules: MarketRules, price: str = "close") -> tuple[np.ndarray,
                                                                               np.ndarray]:
    """Where ``price`` sits at/above the up limit (no buys) and at/below the down limit."""
    up, down = limit_arrays(panel, rules)
    px = to_host(panel[price]).astype(np.float64)
    with np.errstate(invalid="ignore"):
        return px >= up - LIMIT_TOL, px <= down + LIMIT_TOL


@dataclass(frozen=True)
class TradingArrays:
    """What every kernel reads about the market, as host ``(dates, symbols)`` arrays.

    Attributes
    ----------
    price : float64
        Execution price (the chosen field); NaN where the bar is missing or suspended. Bars
        with a price but no volume keep it (their codes say they cannot trade).
    close : float64
        Close for marking positions; NaN where the bar is missing.
    adj_ratio : float64
        Held-quantity multiplier at the start of each bar (corporate actions; 1 if none).
    buy_reject, sell_reject : int8
        0 where a buy (a sell) may fill; else why not: ``REJECT_SUSPENDED`` (no usable
        price: missing, suspended, not positive), ``REJECT_NO_VOLUME``, ``REJECT_LIMIT_UP``
        (buys only), ``REJECT_LIMIT_DOWN`` (sells only). A bar closed to both sides carries
        the same code in both (:func:`qilin.kernels.orders.halted_nb`).
    """

    price: np.ndarray
    close: np.ndarray
    adj_ratio: np.ndarray
    buy_reject: np.ndarray
    sell_reject: np.ndarray


def trading_arrays(panel: Panel, rules: MarketRules, price: str = "close") -> TradingArrays:
    """The one translation of ``panel`` under ``rules`` into kernel inputs.

    A buy is blocked at/above the up limit (``price >= up - LIMIT_TOL``), a sell at/below
    the down limit, both on a bar without a usable price (``suspended``) or, where the rules
    block it, without volume (``no_volume``, which wins over ``suspended``).

    Parameters
    ----------
    panel : Panel
    rules : MarketRules
    price : str
        The field orders execute at (``"close"`` or ``"open"``).

    Raises
    ------
    BacktestError
        When the panel has no ``price`` field.
    """
    if price not in panel:
        raise BacktestError(f"price={price!r} needs a {price!r} field in the panel")
    tradable = to_host(panel.valid) & ~to_host(panel.suspended)
    px = np.where(tradable, to_host(panel[price]).astype(np.float64), np.nan)
    close = np.where(to_host(panel.valid), to_host(panel["close"]).astype(np.float64), np.nan)
    halted_no_volume = tradable & no_volume(panel, rules)
    usable = (px > 0.0) & ~halted_no_volume  # NaN compares False
    closed = np.where(halted_no_volume, REJECT_NO_VOLUME, REJECT_SUSPENDED).astype(np.int8)
    up, down = limit_arrays(panel, rules)
    with np.errstate(invalid="ignore"):
        at_up = px >= up - LIMIT_TOL
        at_down = px <= down + LIMIT_TOL
    buy = np.where(usable, np.where(at_up, REJECT_LIMIT_UP, 0), closed).astype(np.int8)
    sell = np.where(usable, np.where(at_down, REJECT_LIMIT_DOWN, 0), closed).astype(np.int8)
    return TradingArrays(px, close, adj_ratio(panel), buy, sell)


def adj_ratio(panel: Panel) -> np.ndarray:
    """Per-bar quantity multiplier ``adj_factor[t] / adj_factor[previous bar]`` (1 if none)."""
    T, N = panel.shape
    if "adj_factor" not in panel:
        return np.ones((T, N))
    adj = to_host(panel["adj_factor"]).astype(np.float64)
    prev = np.full((T, N), np.nan)
    prev[1:] = ffill_rows(adj)[:-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        r = adj / prev
    return np.where(np.isfinite(r) & (r > 0), r, 1.0)


def ffill_rows(a: np.ndarray) -> np.ndarray:
    """Forward-fill non-finite values down each column (leading ones stay as they are).

    Examples
    --------
    >>> ffill_rows(np.array([[np.nan, 1.0], [2.0, np.nan], [np.inf, 3.0]])).tolist()
    [[nan, 1.0], [2.0, 1.0], [2.0, 3.0]]
    """
    a = np.ascontiguousarray(a)
    out = np.empty_like(a)
    _ffill_rows_nb(a, out)
    return out


@nb.njit(cache=True)
def _ffill_rows_nb(a: np.ndarray, out: np.ndarray) -> None:
    if a.shape[0] == 0:
        return
    out[0] = a[0]
    for t in range(1, a.shape[0]):
        for j in range(a.shape[1]):
            v = a[t, j]
            out[t, j] = v if np.isfinite(v) else out[t - 1, j]
