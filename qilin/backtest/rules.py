"""Market rules: lots, T+1, daily price limits and suspensions, as arrays for the kernels.

The kernels never look at symbols or boards: they receive, per (date, symbol), the up and
down limit prices (``+inf``/``-inf`` where no limit applies) and the execution price (NaN on
a missing or suspended bar, on which nothing trades). This module builds those arrays from a
:class:`~qilin.data.panel.Panel` and a market profile.

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
