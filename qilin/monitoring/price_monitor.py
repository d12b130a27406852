"""Price rules: per-symbol high/low thresholds, percent moves and A-share limit hits.

Rules
-----
``price_above`` / ``price_below``
    The price is above / below a per-symbol threshold.
``pct_move``
    ``|price / previous close - 1|`` exceeds the symbol's threshold (or the default).
``limit_up`` / ``limit_down``
    The price sits at the A-share up / down limit, computed from the previous close with
    :func:`qilin.data.boards.limit_prices` (10% main, 20% ChiNext from 2020-08-24 and STAR,
    5% ST, 30% Beijing; rounded to the cent).

The previous close is the exchange's ``preclose`` where given (it accounts for dividends and
splits), otherwise the last valid price seen before (carried over missing bars). Rules are
held in per-symbol NumPy arrays, so adding or removing one at run time is an O(1) edit and
every tick is a handful of vectorised operations over all symbols.

Examples
--------
>>> import numpy as np
>>> mon = PriceMonitor(["AAPL", "MSFT"], default_move_pct=0.05, limits=False)
>>> mon.add_rule(PriceRule("AAPL", above=200.0))
>>> _ = mon.update(np.array([190.0, 400.0]))
>>> s = mon.update(np.array([201.0, 430.0]))
>>> s.fired["price_above"].tolist(), s.fired["pct_move"].tolist()
([True, False], [True, True])
>>> mon.remove_rule("AAPL", "above")
>>> mon.update(np.array([205.0, 431.0])).fired["price_above"].tolist()
[False, False]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numba
import numpy as np
import pandas as pd

from qilin.backend import to_host
from qilin.data.boards import (
    CHINEXT_REFORM_DATE,
    ST_LIMIT,
    board_of,
    limit_pct_matrix,
    limit_prices,
)
from qilin.errors import MonitoringError
from qilin.monitoring.signals import Signals

RULES = ("price_above", "price_below", "pct_move", "limit_up", "limit_down")
RULE_KINDS = ("above", "below", "move_pct")
_ASHARE = r"\.(?:SH|SZ|BJ)$"
_LIMIT_TOL = 1e-6


@numba.njit(cache=True, error_model="numpy")
def price_rules_nb(price: np.ndarray, given_prev: np.ndarray, ref: np.ndarray,
                   above: np.ndarray, below: np.ndarray, move_pct: np.ndarray,
                   default_move: float, pct: np.ndarray, use_limits: bool,
                   fired: np.ndarray, move: np.ndarray, move_thr: np.ndarray,
                   up: np.ndarray, down: np.ndarray) -> None:
    """One tick of every price rule for every symbol; advances ``ref`` (the last close).

    The limit prices follow :func:`qilin.data.boards.limit_prices` operation for operation.
    """
    for i in range(price.shape[0]):
        p = price[i]
        prev = given_prev[i]
        if np.isnan(prev):
            prev = ref[i]
        mv = p / prev - 1.0
        mt = move_pct[i]
        if np.isnan(mt):
            mt = default_move
        move[i] = mv
        move_thr[i] = mt
        fired[0, i] = p > above[i]
        fired[1, i] = p < below[i]
        fired[2, i] = abs(mv) > mt
        if use_limits:
            u = np.floor(prev * (1 + pct[i]) * 100 + 0.5 + 1e-9) / 100
            d = np.floor(prev * (1 - pct[i]) * 100 + 0.5 + 1e-9) / 100
            up[i] = u
            down[i] = d
            fired[3, i] = p >= u - _LIMIT_TOL
            fired[4, i] = p <= d + _LIMIT_TOL
        if not np.isnan(p):
            ref[i] = p


@dataclass
class PriceRule:
    """Thresholds for one symbol; ``None`` leaves that kind of rule unset."""

    symbol: str
    above: float | None = None
    below: float | None = None
    move_pct: float | None = None

    def __post_init__(self) -> None:
        if self.move_pct is not None and not self.move_pct > 0:
            raise MonitoringError(f"price rule for {self.symbol!r}: move_pct must be > 0, "
                                  f"got {self.move_pct!r}")
        if (self.above is not None and self.below is not None and self.below > self.above):
            raise MonitoringError(f"price rule for {self.symbol!r}: below ({self.below}) is "
                                  f"greater than above ({self.above})")


class PriceMonitor:
    """Price thresholds, percent moves and limit hits, batch or streaming.

    Parameters
    ----------
    symbols : sequence of str
        The universe, in the column order of the prices given to :meth:`update`/`detect`.
    rules : iterable of PriceRule
    default_move_pct : float, optional
        ``pct_move`` threshold for symbols without their own.
    limits : bool or "auto"
        Detect A-share limit hits; ``"auto"`` turns it on when every symbol is an A-share
        code (``.SH``/``.SZ``/``.BJ``).
    """

    def __init__(self, symbols: Sequence[str], rules: Iterable[PriceRule] = (),
                 default_move_pct: float | None = None,
                 limits: bool | Literal["auto"] = "auto") -> None:
        self.symbols = pd.Index([str(s) for s in symbols])
        if self.symbols.has_duplicates:
            dup = self.symbols[self.symbols.duplicated()].tolist()[:5]
            raise MonitoringError(f"PriceMonitor: duplicated symbols {dup}")
        if default_move_pct is not None and not default_move_pct > 0:
            raise MonitoringError(f"PriceMonitor: default_move_pct must be > 0, got "
                                  f"{default_move_pct!r}")
        n = len(self.symbols)
        if limits == "auto":
            limits = bool(n) and bool(self.symbols.str.contains(_ASHARE, regex=True).all())
        self.limits = bool(limits)
        self.default_move_pct = default_move_pct
        self._above = np.full(n, np.nan)
        self._below = np.full(n, np.nan)
        self._move = np.full(n, np.nan)
        self._ref = np.full(n, np.nan)
        self._nan = np.full(n, np.nan)
        self._last_date: Any = None
        self._last_pct = self._nan
        if self.limits:
            two = pd.DatetimeIndex([CHINEXT_REFORM_DATE - pd.Timedelta(days=1),
                                    CHINEXT_REFORM_DATE])
            pct = limit_pct_matrix(self.symbols, two)
            self._pct_before, self._pct_after = pct[0].copy(), pct[1].copy()
            self._main = np.array([board_of(s) == "main" for s in self.symbols])
        for rule in rules:
            self.add_rule(rule)

    # ---------------------------------------------------------------- rules
    def _col(self, symbol: str) -> int:
        j = self.symbols.get_indexer([symbol])[0]
        if j < 0:
            raise MonitoringError(f"price rule for unknown symbol {symbol!r} (not among the "
                                  f"{len(self.symbols)} monitored symbols)")
        return int(j)

    def _set(self, kind: str, j: int, value: float) -> None:
        # Copy on write: Signals already returned keep the thresholds they were judged by.
        attr = {"above": "_above", "below": "_below", "move_pct": "_move"}[kind]
        arr = getattr(self, attr).copy()
        arr[j] = value
        setattr(self, attr, arr)

    def add_rule(self, rule: PriceRule) -> None:
        """Set the thresholds a rule gives (other kinds of the symbol are kept)."""
        j = self._col(rule.symbol)
        for kind in RULE_KINDS:
            value = getattr(rule, kind)
            if value is not None:
                self._set(kind, j, value)

    def remove_rule(self, symbol: str, kind: str | None = None) -> None:
        """Unset one kind (``above``, ``below``, ``move_pct``) or all rules of a symbol."""
        if kind is not None and kind not in RULE_KINDS:
            raise MonitoringError(f"unknown price rule kind {kind!r}; expected one of "
                                  f"{', '.join(RULE_KINDS)}")
        j = self._col(symbol)
        for k in RULE_KINDS:
            if kind is None or kind == k:
                self._set(k, j, np.nan)

    @property
    def rules(self) -> list[PriceRule]:
        """The per-symbol rules currently set."""
        out = []
        for j in np.flatnonzero(~(np.isnan(self._above) & np.isnan(self._below)
                                  & np.isnan(self._move))):
            def opt(a: np.ndarray, j: int = j) -> float | None:
                return None if np.isnan(a[j]) else float(a[j])

            out.append(PriceRule(str(self.symbols[j]), opt(self._above), opt(self._below),
                                 opt(self._move)))
        return out

    def _move_threshold(self) -> np.ndarray:
        default = np.nan if self.default_move_pct is None else self.default_move_pct
        return np.where(np.isnan(self._move), default, self._move)

    # ------------------------------------------------------------------ core
    def _evaluate(self, price: np.ndarray, prev: np.ndarray, pct: np.ndarray | None) -> Signals:
        with np.errstate(invalid="ignore", divide="ignore"):
            move = price / prev - 1.0
            move_thr = self._move_threshold()
            fired = {
                "price_above": price > self._above,
                "price_below": price < self._below,
                "pct_move": np.abs(move) > move_thr,
            }
        values = {"price_above": price, "price_below": price, "pct_move": move}
        thresholds: dict[str, Any] = {"price_above": self._above,
                                      "price_below": self._below, "pct_move": move_thr}
        if pct is not None:
            up, down = limit_prices(prev, pct)
            with np.errstate(invalid="ignore"):
                fired["limit_up"] = price >= up - _LIMIT_TOL
                fired["limit_down"] = price <= down + _LIMIT_TOL
            values["limit_up"] = values["limit_down"] = price
            thresholds["limit_up"], thresholds["limit_down"] = up, down
        return Signals(values, fired, thresholds)

    def detect(self, close: Any, dates: Sequence[Any] | None = None,
               prev_close: Any = None, st: Any = None) -> Signals:
        """All rules over a whole history (dates x symbols).

        Parameters
        ----------
        close : Panel or array (dates x symbols)
            A Panel gives its ``close``, ``dates``, ``st`` and (if present) ``preclose``.
        dates : sequence of dates
            Needed for limit detection when ``close`` is an array.
        prev_close : array, optional
            Exchange previous closes; NaN cells fall back to the last valid close.
        st : bool array, optional
            Special-treatment days (5% limit on main-board names).
        """
        if hasattr(close, "fields"):
            panel = close
            close = panel["close"]
            dates = panel.dates if dates is None else dates
            if prev_close is None and "preclose" in panel:
                prev_close = panel["preclose"]
            if st is None:
                st = panel.st
        px = np.asarray(to_host(close), dtype=np.float64)
        if px.ndim != 2 or px.shape[1] != len(self.symbols):
            raise MonitoringError(f"PriceMonitor.detect: expected dates x {len(self.symbols)} "
                                  f"prices, got shape {px.shape}")
        T = px.shape[0]
        rows = np.where(np.isfinite(px), np.arange(T)[:, None], -1)
        last = np.maximum.accumulate(rows, axis=0)
        ref_idx = np.full(px.shape, -1)
        ref_idx[1:] = last[:-1]
        ref = np.where(ref_idx >= 0, px[np.maximum(ref_idx, 0), np.arange(px.shape[1])],
                       np.nan)
        if prev_close is not None:
            given = np.asarray(to_host(prev_close), dtype=np.float64)
            ref = np.where(np.isfinite(given), given, ref)
        pct = None
        if self.limits:
            if dates is None:
                raise MonitoringError("PriceMonitor.detect: limit detection needs the dates")
            st_arr = None if st is None else np.asarray(to_host(st), dtype=bool)
            pct = limit_pct_matrix(self.symbols, pd.DatetimeIndex(dates), is_st=st_arr)
        return self._evaluate(px, ref, pct)

    def update(self, price: Any, date: Any = None, prev_close: Any = None,
               st: Any = None) -> Signals:
        """Evaluate one tick (a vector over all symbols) and advance the previous close.

        ``date`` is needed for limit detection; ``prev_close`` (NaN cells ignored)
        overrides the remembered close; ``st`` marks special-treatment names.
        """
        p = np.asarray(price, dtype=np.float64)
        n = len(self.symbols)
        if p.shape != (n,):
            raise MonitoringError(f"PriceMonitor.update: expected {n} prices, "
                                  f"got shape {p.shape}")
        given = self._nan if prev_close is None else np.asarray(prev_close, dtype=np.float64)
        pct = self._nan
        if self.limits:
            if date is None:
                raise MonitoringError("PriceMonitor.update: limit detection needs the date")
            if date is not self._last_date:
                self._last_date = date
                self._last_pct = self._pct_before if pd.Timestamp(date) < CHINEXT_REFORM_DATE \
                    else self._pct_after
            pct = self._last_pct
            if st is not None:
                pct = np.where(np.asarray(st, dtype=bool) & self._main, ST_LIMIT, pct)
        fired = np.empty((5, n), dtype=np.bool_)
        move, move_thr = np.empty(n), np.empty(n)
        up, down = np.empty(n), np.empty(n)
        default = np.nan if self.default_move_pct is None else float(self.default_move_pct)
        price_rules_nb(p, given, self._ref, self._above, self._below, self._move, default,
                       pct, self.limits, fired, move, move_thr, up, down)
        values = {"price_above": p, "price_below": p, "pct_move": move}
        thresholds: dict[str, Any] = {"price_above": self._above,
                                      "price_below": self._below, "pct_move": move_thr}
        masks = {"price_above": fired[0], "price_below": fired[1], "pct_move": fired[2]}
        if self.limits:
            values["limit_up"] = values["limit_down"] = p
            thresholds["limit_up"], thresholds["limit_down"] = up, down
            masks["limit_up"], masks["limit_down"] = fired[3], fired[4]
        return Signals(values, masks, thresholds)

    def reset(self) -> None:
        """Forget the remembered previous closes (rules are kept)."""
        self._ref[:] = np.nan
