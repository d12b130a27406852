"""China A-share boards and their daily price-limit rules.

Limits are relative to the previous close: 10% main board, 20% ChiNext (``300xxx``/``301xxx``
from 2020-08-24, 10% before) and STAR (``688xxx``/``689xxx``), 5% for ST names, 30% Beijing
(``.BJ``, ``8xxxxx``/``43xxxx``/``92xxxx``). Symbols are ``CODE.EXCHANGE`` (``600519.SH``).

Examples
--------
>>> board_of("300750.SZ"), board_of("688981.SH"), board_of("600519.SH"), board_of("830799.BJ")
('chinext', 'star', 'main', 'bj')
>>> limit_pct("300750.SZ", "2020-08-21"), limit_pct("300750.SZ", "2020-08-24")
(0.1, 0.2)
>>> limit_pct("600519.SH", "2021-01-04", is_st=True)
0.05
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

Board = Literal["main", "chinext", "star", "bj"]
CHINEXT_REFORM_DATE = pd.Timestamp("2020-08-24")
_LIMITS: dict[str, float] = {"main": 0.10, "chinext": 0.20, "star": 0.20, "bj": 0.30}
ST_LIMIT = 0.05


def board_of(symbol: str) -> Board:
    """Board of an A-share symbol such as ``'600519.SH'`` (``'main'`` when unrecognised)."""
    code, _, exchange = symbol.partition(".")
    exchange = exchange.upper()
    if exchange == "BJ" or (code.startswith(("8", "43", "92")) and exchange != "SH"):
        return "bj"
    if code.startswith(("688", "689")):
        return "star"
    if code.startswith(("300", "301")):
        return "chinext"
    return "main"


def limit_pct(symbol: str, date: str | pd.Timestamp, is_st: bool = False) -> float:
    """Daily price-limit fraction for one symbol on one date."""
    board = board_of(symbol)
    if board == "chinext" and pd.Timestamp(date) < CHINEXT_REFORM_DATE:
        board = "main"
    if is_st and board == "main":
        return ST_LIMIT
    return _LIMITS[board]


def limit_pct_matrix(
    symbols: pd.Index | list[str],
    dates: pd.DatetimeIndex,
    is_st: np.ndarray | None = None,
) -> np.ndarray:
    """Dates x symbols array of limit fractions, vectorised over the whole panel.

    Parameters
    ----------
    symbols : sequence of str
    dates : DatetimeIndex
    is_st : bool array (dates x symbols), optional
        Where True on a main-board name, the 5% ST limit applies.

    Examples
    --------
    >>> days = pd.DatetimeIndex(["2020-01-02", "2021-01-04"])
    >>> m = limit_pct_matrix(["600000.SH", "300001.SZ"], days)
    >>> m.tolist()
    [[0.1, 0.1], [0.1, 0.2]]
    """
    boards = np.array([board_of(s) for s in symbols])
    base = np.array([_LIMITS[b] for b in boards])
    out = np.broadcast_to(base, (len(dates), len(boards))).copy()
    chinext = boards == "chinext"
    if chinext.any():
        before = np.asarray(dates < CHINEXT_REFORM_DATE)
        out[np.ix_(before, chinext)] = _LIMITS["main"]
    if is_st is not None:
        main = boards == "main"
        out[np.asarray(is_st, dtype=bool) & main[None, :]] = ST_LIMIT
    return out


def is_st_name(name: object) -> bool:
    """True for a special-treatment name (``'ST ...'``, ``'*ST ...'``, ``'SST'``, ``'S*ST'``)."""
    return isinstance(name, str) and "ST" in name.upper().replace(" ", "")[:4]


def limit_prices(preclose: np.ndarray, pct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Up and down limit prices from the previous close, rounded to the 0.01 CNY tick.

    Exchanges round the limit price half-up to the cent.

    Examples
    --------
    >>> up, down = limit_prices(np.array([10.05]), np.array([0.1]))
    >>> float(up[0]), float(down[0])
    (11.06, 9.05)
    """
    up = np.floor(preclose * (1 + pct) * 100 + 0.5 + 1e-9) / 100
    down = np.floor(preclose * (1 - pct) * 100 + 0.5 + 1e-9) / 100
    return up, down
