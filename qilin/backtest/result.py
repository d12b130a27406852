"""Backtest results: equity, returns, positions, trades, turnover, costs and exposure.

Both modes return a :class:`BacktestResult`. In signal mode every column is its own account
(``equity`` is dates x symbols); in portfolio mode the symbols share one account and
``equity`` is one column named ``"portfolio"``. Trade records are a long DataFrame with one
row per order attempt: ``date, symbol, side, quantity, price, cost, status, reason``.

Examples
--------
>>> import numpy as np, pandas as pd
>>> r = BacktestResult(pd.date_range("2024-01-01", periods=3), pd.Index(["A"]),
...     equity=np.array([[100.0], [110.0], [99.0]]), positions=np.zeros((3, 1)),
...     value=np.zeros((3, 1)), costs=np.zeros((3, 1)), traded=np.zeros((3, 1)),
...     trades=empty_trades(), periods_per_year=252, init_cash=100.0)
>>> r.returns[:, 0].round(4).tolist()
[0.0, 0.1, -0.1]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np
import pandas as pd

from qilin.backtest import metrics as M
from qilin.kernels.orders import (
    REJECT_CASH,
    REJECT_LIMIT_DOWN,
    REJECT_LIMIT_UP,
    REJECT_NO_VOLUME,
    REJECT_PRECISION,
    REJECT_SUSPENDED,
    REJECT_T_PLUS_ONE,
    STATUS_FILLED,
)

#: Names in trade records of the kernels' status codes (``rec_status``, defined with the
#: order primitives in :mod:`qilin.kernels.orders`).
REASONS = {
    STATUS_FILLED: "",
    REJECT_SUSPENDED: "suspended",
    REJECT_LIMIT_UP: "limit_up",
    REJECT_LIMIT_DOWN: "limit_down",
    REJECT_CASH: "insufficient_cash",
    REJECT_T_PLUS_ONE: "t_plus_one",
    REJECT_NO_VOLUME: "no_volume",
    REJECT_PRECISION: "beyond_precision",
}
_REASON_TABLE = np.array([REASONS.get(i, "") for i in range(max(REASONS) + 1)], dtype=object)
TRADE_COLUMNS = ("date", "symbol", "side", "quantity", "price", "cost", "status", "reason")


def equity_returns(equity: np.ndarray) -> np.ndarray:
    """Daily returns ``equity_t / equity_{t-1} - 1`` along axis 0 (first day 0).

    Examples
    --------
    >>> equity_returns(np.array([100.0, 110.0, 99.0])).round(6).tolist()
    [0.0, 0.1, -0.1]
    """
    out = np.zeros_like(equity, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out[1:] = equity[1:] / equity[:-1] - 1.0
    return out


def empty_trades() -> pd.DataFrame:
    """A trade-record frame with no rows and the standard columns."""
    return pd.DataFrame({
        "date": pd.Series([], dtype="datetime64[ns]"), "symbol": pd.Series([], dtype=object),
        "side": pd.Series([], dtype=object), "quantity": pd.Series([], dtype=float),
        "price": pd.Series([], dtype=float), "cost": pd.Series([], dtype=float),
        "status": pd.Series([], dtype=object), "reason": pd.Series([], dtype=object)})


def gather_trades(dates: pd.DatetimeIndex, symbols: pd.Index, side: np.ndarray,
                  status: np.ndarray, qty: np.ndarray, price: np.ndarray,
                  cost: np.ndarray) -> pd.DataFrame:
    """Long trade records from the kernels' dense (dates x symbols) record arrays."""
    rows, cols = np.nonzero(status)
    if rows.size == 0:
        return empty_trades()
    st = status[rows, cols]
    order = np.lexsort((cols, rows))
    rows, cols, st = rows[order], cols[order], st[order]
    return pd.DataFrame({
        "date": dates[rows],
        "symbol": np.asarray(symbols, dtype=object)[cols],
        "side": np.where(side[rows, cols] > 0, "buy", "sell").astype(object),
        "quantity": qty[rows, cols],
        "price": price[rows, cols],
        "cost": cost[rows, cols],
        "status": np.where(st == STATUS_FILLED, "filled", "rejected").astype(object),
        "reason": _REASON_TABLE[st],
    })


@dataclass
class BacktestResult:
    """What a backtest produced.

    Attributes
    ----------
    dates, symbols : indexes of the rows and columns.
    equity : (dates, accounts) array of account values (cash + marked positions).
    positions : (dates, symbols) array of shares held at each close.
    value : (dates, symbols) array of position values at each close (last valid close).
    costs : (dates, accounts) array of commission + stamp duty + slippage paid that day.
    traded : (dates, accounts) array of traded notional that day.
    trades : DataFrame of order records (filled and rejected).
    periods_per_year : int of the market profile, for annualised metrics.
    init_cash : float, starting cash per account.
    accounts : names of the equity columns (the symbols in signal mode, ``portfolio``).
    """

    dates: pd.DatetimeIndex
    symbols: pd.Index
    equity: np.ndarray
    positions: np.ndarray
    value: np.ndarray
    costs: np.ndarray
    traded: np.ndarray
    trades: pd.DataFrame
    periods_per_year: int = 252
    init_cash: float = 1_000_000.0
    accounts: pd.Index = field(default=None)  # type: ignore[assignment]
    backend: str = "cpu"

    def __post_init__(self) -> None:
        if self.accounts is None:
            self.accounts = (pd.Index(self.symbols) if self.equity.shape[1] == len(self.symbols)
                             else pd.Index(["portfolio"]))

    @property
    def returns(self) -> np.ndarray:
        """Daily returns ``equity_t / equity_{t-1} - 1`` (first day 0), per account."""
        return equity_returns(self.equity)

    @property
    def combined_returns(self) -> np.ndarray:
        """Daily returns of all accounts taken together (the sum of their equity).

        This is what ``qilin backtest run`` reports as the aggregate and what a sweep row
        reports, so the two agree.
        """
        return equity_returns(self.equity.sum(axis=1))

    @property
    def exposure(self) -> np.ndarray:
        """Fraction of each account's equity held in positions at each close."""
        held = self.value if self.value.shape == self.equity.shape else \
            self.value.sum(axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.equity > 0, held / self.equity, 0.0)

    @property
    def turnover(self) -> np.ndarray:
        """Traded notional over the previous day's equity (first day: over initial cash)."""
        prev = np.vstack([np.full((1, self.equity.shape[1]), self.init_cash), self.equity[:-1]])
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(prev > 0, self.traded / prev, 0.0)

    def returns_frame(self) -> pd.DataFrame:
        """Daily returns as a DataFrame (dates x accounts)."""
        return pd.DataFrame(self.returns, index=self.dates, columns=self.accounts)

    def equity_frame(self) -> pd.DataFrame:
        """Equity as a DataFrame (dates x accounts)."""
        return pd.DataFrame(self.equity, index=self.dates, columns=self.accounts)

    def positions_long(self) -> pd.DataFrame:
        """Non-zero positions as long rows ``date, symbol, quantity, value``."""
        r, c = np.nonzero(self.positions)
        return pd.DataFrame({"date": self.dates[r],
                             "symbol": np.asarray(self.symbols, dtype=object)[c],
                             "quantity": self.positions[r, c], "value": self.value[r, c]})

    def returns_long(self) -> pd.DataFrame:
        """Long rows ``date, account, return, equity, turnover, cost, exposure``."""
        T, A = self.equity.shape
        return pd.DataFrame({
            "date": np.repeat(self.dates.values, A),
            "account": np.tile(np.asarray(self.accounts, dtype=object), T),
            "return": self.returns.reshape(-1), "equity": self.equity.reshape(-1),
            "turnover": self.turnover.reshape(-1), "cost": self.costs.reshape(-1),
            "exposure": self.exposure.reshape(-1)})

    def round_trips(self) -> pd.DataFrame:
        """Closed round trips per symbol from the filled trades.

        A round trip opens with a trade while flat (a buy for a long, a sale for a short)
        and closes with the trade that leaves the position at 0. ``pnl`` = net sale
        proceeds (after commission and duty) minus the total buy cost (notional plus
        commission); ``return`` = ``pnl`` over the opening side's amount (the buy cost of a
        long, the net sale proceeds of a short). Positions still open at the end, and a
        position that crosses 0 without being flat, do not close a round trip.
        """
        cols = ["symbol", "entry_date", "exit_date", "pnl", "return"]
        t = self.trades[self.trades["status"] == "filled"] if len(self.trades) else self.trades
        if not len(t):
            return pd.DataFrame({c: [] for c in cols})
        r = self.dates.get_indexer(t["date"])
        c = self.symbols.get_indexer(t["symbol"])
        buys = t["side"].to_numpy() == "buy"
        flow = np.where(buys, -1.0, 1.0) * t["quantity"].to_numpy() * t["price"].to_numpy() \
            - t["cost"].to_numpy()
        order = np.lexsort((r, c))
        r, c, buys, flow = r[order], c[order], buys[order], flow[order]
        flat_after = self.positions[r, c] == 0
        sym, start, end, pnl, spent = _round_trips_nb(c, r, buys, flow, flat_after)
        with np.errstate(invalid="ignore", divide="ignore"):
            ret = np.where(spent > 0, pnl / spent, np.nan)
        return pd.DataFrame({"symbol": np.asarray(self.symbols, dtype=object)[sym],
                             "entry_date": self.dates[start], "exit_date": self.dates[end],
                             "pnl": pnl, "return": ret})

    def metrics(self, benchmark: Any = None) -> pd.DataFrame:
        """Performance metrics per account (rows) — see :mod:`qilin.backtest.metrics`.

        Return metrics come from the daily returns; ``win_rate``, ``profit_factor`` and
        ``average_trade`` (mean P&L in cash) from the closed :meth:`round_trips`;
        ``trade_count`` counts filled orders; ``turnover`` and ``exposure`` are daily means.

        Parameters
        ----------
        benchmark : array-like of daily returns aligned with ``dates``, optional
            Adds ``alpha beta information_ratio tracking_error``.
        """
        filled = self.trades[self.trades["status"] == "filled"]
        signal_mode = len(self.accounts) == len(self.symbols)
        out = M.summary(self.returns, periods_per_year=self.periods_per_year,
                        benchmark=benchmark, turnover=self.turnover, exposure=self.exposure)
        out.index = self.accounts
        trips = self.round_trips()
        if signal_mode:
            out["trade_count"] = filled["symbol"].value_counts().reindex(
                self.accounts, fill_value=0).to_numpy()
            pnl = trips.pivot_table(index=trips.groupby("symbol").cumcount(), columns="symbol",
                                    values="pnl").reindex(columns=self.accounts).to_numpy() \
                if len(trips) else np.full((1, len(self.accounts)), np.nan)
            out["round_trips"] = trips["symbol"].value_counts().reindex(
                self.accounts, fill_value=0).to_numpy()
        else:
            out["trade_count"] = len(filled)
            pnl = trips["pnl"].to_numpy()[:, None] if len(trips) else np.full((1, 1), np.nan)
            out["round_trips"] = len(trips)
        out["costs_paid"] = self.costs.sum(axis=0)
        out["win_rate"] = M.win_rate(pnl)
        out["profit_factor"] = M.profit_factor(pnl)
        out["average_trade"] = M.average_trade(pnl)
        return out


@numba.njit(cache=True)
def _round_trips_nb(col, row, is_buy, flow, flat_after):
    """Round trips over filled trades sorted by (column, row); see ``round_trips``."""
    n = len(col)
    sym = np.empty(n, np.int64)
    start = np.empty(n, np.int64)
    end = np.empty(n, np.int64)
    pnl = np.empty(n)
    spent = np.empty(n)
    k = 0
    open_col = -1
    opened = -1
    long_trip = True
    acc = 0.0
    cost = 0.0
    for i in range(n):
        if col[i] != open_col:
            open_col = col[i]
            opened = -1
        if opened < 0:
            opened = row[i]
            long_trip = is_buy[i]
            acc = 0.0
            cost = 0.0
        acc += flow[i]
        if is_buy[i] == long_trip:  # the opening side: buys of a long, sales of a short
            cost += -flow[i] if long_trip else flow[i]
        if flat_after[i]:
            sym[k] = col[i]
            start[k] = opened
            end[k] = row[i]
            pnl[k] = acc
            spent[k] = cost
            k += 1
            opened = -1
    return sym[:k], start[:k], end[:k], pnl[:k], spent[:k]
