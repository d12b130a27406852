"""A plain per-bar Python reference of the pinned signal-mode semantics (for sweep tests).

Written independently of the kernels: it reads Panel arrays (dates x symbols), derives the
price limits straight from ``qilin.data.boards`` and loops bar by bar.
"""

from __future__ import annotations

import math

import numpy as np

from qilin.config import MarketConfig
from qilin.data.boards import limit_pct_matrix, limit_prices
from qilin.data.panel import Panel


def reference_limits(panel: Panel, market: MarketConfig) -> tuple[np.ndarray, np.ndarray]:
    close = np.asarray(panel["close"], dtype=float)
    T, N = close.shape
    if not market.price_limits:
        return np.full((T, N), np.inf), np.full((T, N), -np.inf)
    prev = np.full((T, N), np.nan)
    for j in range(N):
        last = np.nan
        for t in range(T):
            prev[t, j] = last
            if not math.isnan(close[t, j]):
                last = close[t, j]
    if "preclose" in panel:
        pre = np.asarray(panel["preclose"], dtype=float)
        prev = np.where(np.isfinite(pre) & (pre > 0), pre, prev)
    pct = limit_pct_matrix(panel.symbols, panel.dates, is_st=np.asarray(panel.st))
    up, down = limit_prices(np.nan_to_num(prev), pct)
    known = np.isfinite(prev) & (prev > 0)
    return np.where(known, up, np.inf), np.where(known, down, -np.inf)


def reference_column(close, entries, exits, up, down, adj, market: MarketConfig, lag: int = 0,
                     init_cash: float = 1e6) -> dict:
    """One symbol, bar by bar: daily returns and trade counts.

    A change of the desired state (entry -> long, exit -> flat) makes an order pending; a
    pending order targets ``floor(E / (buy fill * (1 + rate)) / lot) * lot`` shares (0 when
    flat) and trades the difference when the bar allows it.
    """
    T = len(close)
    lot = market.lot_size
    cr, mc = market.commission_rate, market.min_commission
    slip = market.slippage_bps / 1e4
    eps = 1e-9
    cash, qty, desired, pending = init_cash, 0.0, 0.0, False
    last_close, last_af = math.nan, math.nan
    prev_eq = init_cash
    rets, equity, n_trades, wins, closed = [], [], 0, 0, 0
    bought = sold = 0.0
    for t in range(T):
        p = close[t]
        valid = not math.isnan(p)
        if valid and adj is not None and not math.isnan(adj[t]):
            if qty > 0 and not math.isnan(last_af):
                qty *= adj[t] / last_af
            last_af = adj[t]
        if t - lag >= 0:
            e, x = bool(entries[t - lag]), bool(exits[t - lag])
            want = 1.0 if e and not x else 0.0 if x and not e else None
            if want is not None and want != desired:
                desired, pending = want, True
        if pending and valid:
            eq = cash + qty * p
            buy_px = p * (1 + slip)
            tq = math.floor(eq / (buy_px * (1 + cr)) / lot) * lot if desired else 0.0
            if tq > qty + eps and p < up[t] - 1e-9:
                dq = math.floor((tq - qty) / lot + eps) * lot
                while dq > 0 and cash - dq * buy_px - max(cr * dq * buy_px, mc) < 0:
                    dq -= lot
                if dq > 0:
                    fee = max(cr * dq * buy_px, mc)
                    cash -= dq * buy_px + fee
                    bought += dq * buy_px + fee
                    qty += dq
                    pending = False
                    n_trades += 1
            elif tq < qty - eps and p > down[t] + 1e-9:
                dq = qty if tq <= 0 else math.floor((qty - tq) / lot + eps) * lot
                notional = dq * p * (1 - slip)
                fee = max(cr * notional, mc) + market.stamp_duty_rate * notional
                cash += notional - fee
                sold += notional - fee
                qty -= dq
                qty = 0.0 if qty < eps else qty
                pending = False
                n_trades += 1
                if qty == 0.0:
                    closed += 1
                    wins += sold > bought
                    bought = sold = 0.0
            elif abs(tq - qty) <= eps:
                pending = False
        if valid:
            last_close = p
        eq = cash + qty * last_close if qty > 0 else cash
        rets.append(eq / prev_eq - 1 if t > 0 else 0.0)
        equity.append(eq)
        prev_eq = eq
    return {"returns": np.array(rets), "equity": np.array(equity), "n_trades": n_trades,
            "wins": wins, "closed": closed}


def reference_portfolio(panel: Panel, entries: np.ndarray, exits: np.ndarray,
                        market: MarketConfig, lag: int = 0) -> dict:
    """Returns of the combined account (the sum of the per-symbol reference accounts'
    equity, first day 0), and summed counters."""
    up, down = reference_limits(panel, market)
    close = np.asarray(panel["close"], dtype=float)
    adj = np.asarray(panel["adj_factor"], dtype=float) if "adj_factor" in panel else None
    cols = [reference_column(close[:, j], entries[:, j], exits[:, j], up[:, j], down[:, j],
                             None if adj is None else adj[:, j], market, lag)
            for j in range(close.shape[1])]
    total = np.sum([c["equity"] for c in cols], axis=0)
    returns = np.zeros_like(total)
    returns[1:] = total[1:] / total[:-1] - 1.0
    return {
        "returns": returns,
        "n_trades": sum(c["n_trades"] for c in cols),
        "wins": sum(c["wins"] for c in cols),
        "closed": sum(c["closed"] for c in cols),
        "columns": cols,
    }
