"""Portfolio mode: the symbols share one account; scores or target weights drive it.

Semantics:

- **Rebalance dates** are every ``rebalance`` bars from the first signal date with any
  finite score/weight; a scheduled date whose row has no finite value is skipped (holdings
  are kept). Signals use data up to that date's close and execute with the same
  timing as signal mode (close of ``t + lag``, or open of ``t + 1 + lag``).
- **Selection (scores).** Eligible names have a finite score and a bar on the signal date.
  Names are ranked by score (best first, ties by column order). Without ``n_drop``, the
  previous selection keeps its names while their rank stays below ``top_k + band``; with
  ``n_drop`` (Qlib's TopkDropout), at most ``n_drop`` held names ranked outside the top k
  are dropped per rebalance, worst first. The selection is then filled to ``top_k`` with the
  best-ranked names not held. The previous selection is the previous *target* set (it
  does not depend on fills).
- **Weights.** ``weighting="equal"``: ``1 / len(selection)``; ``"score"``: proportional to
  the positive part of the score (equal when all are <= 0). Weights are clipped at
  ``max_weight``; the remainder stays in cash. With ``weights=`` the given row is used
  directly (NaN as 0, clipped at ``max_weight``; a negative weight is a short, an error
  where the market does not allow shorts; a row whose ``sum(|w|)`` exceeds 1 is an error).
- **Long-short** (``short_k > 0``, markets with ``allow_short``): the ``short_k``
  worst-ranked eligible names not held long are shorted; longs share +0.5 and shorts -0.5
  of the equity (dollar-neutral, gross 1). A short's target quantity is sized like a long
  and negated; its sale proceeds stay in cash, covering is a buy (whole short, fractional
  shares included), and it is marked at the last close like a long.
- **Execution** on a rebalance bar: ``E = cash + sum(qty * p)`` (p the execution price, the
  last close for names without a bar); target quantity per name ``floor(w * E /
  (p * (1 + s) * (1 + commission_rate)) / lot) * lot``. Sells first (a weight of 0 sells
  everything), then buys; when cash is short, all buy quantities are scaled by
  ``cash / needed`` (rounded down to lots) and then cut to what cash affords
  (:func:`~qilin.kernels.orders.affordable_buy_nb`). Fill prices, costs, suspensions,
  price limits, adjustments and marking follow signal mode; a rejected order is retried on
  the following bars (re-sized each time) until it fills or the next rebalance replaces the
  targets. Each name gets at most one order per
  bar, so T+1 holds by construction.
- **Where it runs.** The account is one core, :func:`portfolio_account_nb` (bar by bar
  through :func:`portfolio_bar_nb`, which the top-k sweep shares), compiled for the CPU
  (:func:`simulate_portfolio_nb`) and from the same source for the GPU
  (:func:`simulate_portfolio_gpu`); :func:`run_portfolio` runs it where the panel lives.

Examples
--------
>>> import numpy as np, pandas as pd
>>> from qilin.data.panel import Panel
>>> close = np.array([[10.0, 20.0], [11.0, 20.0], [11.0, 22.0]])
>>> p = Panel.from_arrays({"close": close}, pd.date_range("2024-01-01", periods=3), ["A", "B"])
>>> scores = np.array([[2.0, 1.0], [np.nan, np.nan], [np.nan, np.nan]])
>>> res = run_portfolio(p, scores=scores, top_k=1, market="us", init_cash=1000.0,
...                     costs={"slippage_bps": 0.0})
>>> res.equity[:, 0].tolist(), res.positions[0].tolist()
([1000.0, 1100.0, 1100.0], [100.0, 0.0])
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import numba
import numpy as np
import pandas as pd

from qilin.backend import Backend, DeviceKernel, array_module, get_backend, to_host
from qilin.backtest.costs import CostModel
from qilin.backtest.result import (
    REJECT_CASH,
    REJECT_PRECISION,
    STATUS_FILLED,
    BacktestResult,
    gather_trades,
)
from qilin.backtest.rules import MarketRules
from qilin.backtest.signal import (
    QTY_EPS,
    ExecPrice,
    align_frame,
    check_not_empty,
    execution_inputs,
    execution_shift,
    resolve_market,
    shift_rows,
)
from qilin.config import MarketConfig
from qilin.data.panel import Panel
from qilin.errors import BacktestError
from qilin.kernels.orders import (
    MAX_EXACT,
    STATUS_NONE,
    buy_step_nb,
    commission_nb,
    fill_buy_nb,
    floor_nb,
    halted_nb,
    holding_after_nb,
    record_fill_nb,
    record_rejection_nb,
    sell_nb,
    target_quantity_nb,
)
from qilin.kernels.targets import core, cuda, gpu_kernel


def rank_desc(scores: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """0-based rank by descending score among eligible names (ties by column); others inf."""
    s = np.where(eligible, scores, -np.inf)
    order = np.argsort(-s, kind="stable")
    rank = np.empty(len(s), dtype=np.float64)
    rank[order] = np.arange(len(s))
    return np.where(eligible, rank, np.inf)


def select_top_k(scores: np.ndarray, eligible: np.ndarray, previous: np.ndarray, top_k: int,
                 n_drop: int | None = None, band: int = 0) -> np.ndarray:
    """Boolean selection of at most ``top_k`` names (see the module docstring).

    Examples
    --------
    >>> s = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    >>> ok = np.ones(5, bool)
    >>> select_top_k(s, ok, np.array([0, 0, 0, 1, 1], bool), 2, band=2).tolist()
    [True, False, False, True, False]
    >>> select_top_k(s, ok, np.array([0, 0, 0, 1, 1], bool), 2, n_drop=1).tolist()
    [True, False, False, True, False]
    """
    rank = rank_desc(scores, eligible)
    kept = previous & eligible
    if n_drop is None:
        kept &= rank < top_k + band
    else:
        outside = np.flatnonzero(kept & (rank >= top_k))
        worst_first = outside[np.argsort(-rank[outside], kind="stable")]
        kept[worst_first[:n_drop]] = False
    if kept.sum() > top_k:
        idx = np.flatnonzero(kept)
        kept[:] = False
        kept[idx[np.argsort(rank[idx], kind="stable")[:top_k]]] = True
    need = top_k - int(kept.sum())
    if need > 0:
        cand = np.flatnonzero(eligible & ~kept)
        cand = cand[np.argsort(rank[cand], kind="stable")]
        kept[cand[:need]] = True
    return kept


def target_weights(
    panel: Panel,
    scores: np.ndarray | None,
    weights: np.ndarray | None,
    top_k: int,
    n_drop: int | None,
    band: int,
    rebalance: int,
    weighting: str,
    max_weight: float,
    short_k: int = 0,
    allow_short: bool = False,
) -> np.ndarray:
    """Target weights on signal dates (NaN rows: not a rebalance date).

    With ``short_k > 0`` the book is long-short and dollar-neutral: the ``top_k`` best
    names share +0.5 of the equity and the ``short_k`` worst (never a long name) share
    -0.5. With ``weights=`` negative weights are shorts when ``allow_short``; the gross
    weight ``sum(|w|)`` may not exceed 1.
    """
    src = scores if scores is not None else weights
    assert src is not None
    T, N = src.shape
    out = np.full((T, N), np.nan)
    has = np.isfinite(src).any(axis=1)
    if not has.any():
        return out
    first = int(np.argmax(has))
    tradable = to_host(panel.valid) & ~to_host(panel.suspended)
    previous = np.zeros(N, dtype=bool)
    previous_short = np.zeros(N, dtype=bool)
    for t in range(first, T, rebalance):
        row = src[t]
        if not np.isfinite(row).any():  # no information on this date: keep the holdings
            continue
        if weights is not None:
            w = np.where(np.isfinite(row), row, 0.0)
            if (w < 0).any() and not allow_short:
                c = int(np.flatnonzero(w < 0)[0])
                raise BacktestError(f"negative weight {w[c]} on {panel.dates[t].date()} for "
                                    f"symbol {panel.symbols[c]!r}: this market does not "
                                    "allow short selling (allow_short in its profile)")
            w = np.clip(w, -max_weight, max_weight)
            if np.abs(w).sum() > 1 + 1e-9:
                raise BacktestError(f"weights on {panel.dates[t].date()} sum to "
                                    f"{np.abs(w).sum():.6g} > 1 in absolute value (gross): "
                                    "leverage is not supported")
            out[t] = w
            continue
        eligible = np.isfinite(row) & tradable[t]
        sel = select_top_k(row, eligible, previous, top_k, n_drop, band)
        previous = sel
        leg = 0.5 if short_k > 0 else 1.0
        w = leg * _leg_weights(sel, row, weighting)
        if short_k > 0:
            short = select_top_k(-row, eligible & ~sel, previous_short, short_k, n_drop, band)
            previous_short = short
            w -= leg * _leg_weights(short, -row, weighting)
        out[t] = np.clip(w, -max_weight, max_weight)
    return out


def _leg_weights(sel: np.ndarray, row: np.ndarray, weighting: str) -> np.ndarray:
    """Weights of one leg summing to 1: equal, or proportional to the positive score."""
    if not sel.any():
        return np.zeros(len(sel))
    if weighting == "score":
        pos = np.where(sel, np.maximum(np.nan_to_num(row), 0.0), 0.0)
        if pos.sum() > 0:
            return pos / pos.sum()
    return sel / sel.sum()


@core(refcounts=False)  # called once a bar with 20 arrays
def portfolio_bar_nb(i, rebalance, exec_price, close, adj_ratio, buy_reject, sell_reject, cash,
                     commission_rate, min_commission, slippage, stamp_duty, lot, qty, last_close,
                     target, pending, last_reject, tq, dqs, row, qty_out, value_out, rec_side,
                     rec_status, rec_qty, rec_price, rec_cost):
    """Bar ``i`` of one shared account (module docstring semantics); returns ``(cash,
    day_cost, day_traded, held)`` after it, ``held`` being the marked value of the positions.

    The account's state is the per-symbol arrays ``qty, last_close, target, pending,
    last_reject`` (``tq, dqs`` are scratch), updated in place. On a ``rebalance`` bar the
    caller has put the new target weights (0 for names to sell out) in ``target`` before the
    call. ``buy_reject`` and ``sell_reject`` are the market's rejection codes
    (:func:`qilin.backtest.rules.trading_arrays`); orders fill through the primitives of
    :mod:`qilin.kernels.orders`. Orders and the closing quantities and values are written to
    row ``row`` of the 2-D ``rec_*`` and ``qty_out``/``value_out`` arrays (``row = i`` for a
    full history, a scratch row for a sweep that keeps only the daily account figures).
    """
    N = qty.shape[0]
    for j in range(N):
        if qty[j] != 0.0:
            qty[j] *= adj_ratio[i, j]
    if rebalance:
        for j in range(N):
            pending[j] = target[j] != 0.0 or qty[j] != 0.0
            last_reject[j] = 0
    day_cost = 0.0
    day_traded = 0.0
    n_pending = 0
    for j in range(N):
        if pending[j]:
            n_pending += 1
    if n_pending > 0:
        eq = cash
        for j in range(N):
            if qty[j] != 0.0:
                p = exec_price[i, j]
                eq += qty[j] * (p if p == p and p > 0.0 else last_close[j])
        for j in range(N):
            tq[j] = qty[j]
            if pending[j] and not halted_nb(buy_reject[i, j]):
                w = target[j]
                if w < 0.0:  # a short: sized like a long, negated
                    tq[j] = -target_quantity_nb(-w, eq, exec_price[i, j], slippage,
                                                commission_rate, lot)
                else:
                    tq[j] = target_quantity_nb(w, eq, exec_price[i, j], slippage,
                                               commission_rate, lot)
        # sells first
        for j in range(N):
            if not pending[j]:
                continue
            p = exec_price[i, j]
            reject = 0
            side = -1
            if halted_nb(buy_reject[i, j]):
                reject = buy_reject[i, j]
                if (target[j] > 0.0 and qty[j] == 0.0) or (qty[j] < 0.0 and target[j] >= 0.0):
                    side = 1
            elif tq[j] < qty[j] - QTY_EPS:
                status, dq, fill_px, notional, c = sell_nb(
                    sell_reject[i, j], tq[j], qty[j], p, lot, commission_rate, min_commission,
                    slippage, stamp_duty)
                if status == STATUS_FILLED:
                    cash += notional - c
                    qty[j] = holding_after_nb(qty[j], -dq)
                    record_fill_nb(row, j, -1, dq, fill_px, c, rec_side, rec_status, rec_qty,
                                   rec_price, rec_cost)
                    day_cost += c + dq * (p - fill_px)
                    day_traded += notional
                if status == STATUS_FILLED or status == STATUS_NONE:
                    pending[j] = False
                else:
                    reject = status
            elif tq[j] <= qty[j] + QTY_EPS:
                pending[j] = False
                if not (target[j] != 0.0 and qty[j] == 0.0):
                    continue
                reject = REJECT_CASH  # one lot costs more than the target's value
                side = 1 if target[j] > 0.0 else -1
            else:
                continue  # a buy, handled below
            if reject != 0:
                if reject != last_reject[j]:
                    record_rejection_nb(row, j, side, reject, p, rec_side, rec_status,
                                        rec_qty, rec_price, rec_cost)
                last_reject[j] = reject
        # buys (dqs < 0: none on this bar), scaled down together when cash is short
        need = 0.0
        for j in range(N):
            dqs[j] = -1.0
            if not pending[j] or halted_nb(buy_reject[i, j]) or not tq[j] > qty[j] + QTY_EPS:
                continue  # not a buy (a sell rejected above stays pending for the next bar)
            p = exec_price[i, j]
            reject = buy_reject[i, j]
            if reject == 0:
                dq = buy_step_nb(tq[j], qty[j], lot)
                if not dq <= MAX_EXACT:  # too many shares for a float (or inf)
                    reject = REJECT_PRECISION
                elif dq <= 0.0:
                    pending[j] = False
                else:
                    dqs[j] = dq
                    notional = dq * p * (1.0 + slippage)
                    need += notional + commission_nb(notional, commission_rate,
                                                     min_commission)
            if reject != 0:
                if last_reject[j] != reject:
                    record_rejection_nb(row, j, 1, reject, p, rec_side, rec_status, rec_qty,
                                        rec_price, rec_cost)
                last_reject[j] = reject
        if need > cash:
            scale = max(cash, 0.0) / need
            for j in range(N):
                if dqs[j] > 0.0:
                    dqs[j] = floor_nb(dqs[j] * scale / lot) * lot
        for j in range(N):
            if dqs[j] < 0.0:
                continue
            p = exec_price[i, j]
            status, dq, fill_px, notional, c = fill_buy_nb(
                dqs[j], p, cash, lot, commission_rate, min_commission, slippage)
            if status != STATUS_FILLED:
                if last_reject[j] != status:
                    record_rejection_nb(row, j, 1, status, p, rec_side, rec_status, rec_qty,
                                        rec_price, rec_cost)
                last_reject[j] = status
                continue
            cash -= notional + c
            qty[j] = holding_after_nb(qty[j], dq)
            pending[j] = False
            record_fill_nb(row, j, 1, dq, fill_px, c, rec_side, rec_status, rec_qty,
                           rec_price, rec_cost)
            day_cost += c + dq * (fill_px - p)
            day_traded += notional
    held = 0.0
    for j in range(N):
        c_j = close[i, j]
        if c_j == c_j:
            last_close[j] = c_j
        v = qty[j] * last_close[j] if qty[j] != 0.0 else 0.0
        qty_out[row, j] = qty[j]
        value_out[row, j] = v
        held += v
    return cash, day_cost, day_traded, held


@core
def reset_account_nb(qty, last_close, target, pending, last_reject, tq, dqs):
    """Put an account's per-symbol state arrays in their state before the first bar."""
    for j in range(qty.shape[0]):
        qty[j] = 0.0
        last_close[j] = math.nan
        target[j] = 0.0
        pending[j] = False
        last_reject[j] = 0
        tq[j] = 0.0
        dqs[j] = 0.0


@core
def portfolio_account_nb(weights, rebalance_row, exec_price, close, adj_ratio, buy_reject,
                         sell_reject, init_cash, commission_rate, min_commission, slippage,
                         stamp_duty, lot, qty, last_close, target, pending, last_reject, tq,
                         dqs, equity, qty_out, value_out, cost_out, traded_out, rec_side,
                         rec_status, rec_qty, rec_price, rec_cost):
    """The account core: one shared account over all bars, its state arrays passed in.

    ``weights[i]`` are the targets executing on bar ``i`` when ``rebalance_row[i]`` (NaN as
    0). ``qty, last_close, target, pending, last_reject, tq, dqs`` (``symbols``-long, any
    content) hold the account's state; the ``(dates, symbols)`` outputs and the ``(dates,
    1)`` ``equity, cost_out, traded_out`` receive the history (``rec_status`` must start at 0:
    only orders are written). Compiled for the CPU (:func:`simulate_portfolio_nb`) and, from
    this same source, for the GPU (:func:`simulate_portfolio_gpu`).
    """
    T, N = weights.shape
    reset_account_nb(qty, last_close, target, pending, last_reject, tq, dqs)
    cash = init_cash
    for i in range(T):
        rebalance = rebalance_row[i]
        if rebalance:
            for j in range(N):
                w = weights[i, j]
                target[j] = w if w == w else 0.0
        cash, day_cost, day_traded, held = portfolio_bar_nb(
            i, rebalance, exec_price, close, adj_ratio, buy_reject, sell_reject, cash,
            commission_rate, min_commission, slippage, stamp_duty, lot, qty, last_close,
            target, pending, last_reject, tq, dqs, i, qty_out, value_out, rec_side, rec_status,
            rec_qty, rec_price, rec_cost)
        equity[i, 0] = cash + held
        cost_out[i, 0] = day_cost
        traded_out[i, 0] = day_traded


@numba.njit(cache=True)
def simulate_portfolio_nb(weights, rebalance_row, exec_price, close, adj_ratio, buy_reject,
                          sell_reject, init_cash, commission_rate, min_commission, slippage,
                          stamp_duty, lot, equity, qty_out, value_out, cost_out, traded_out,
                          rec_side, rec_status, rec_qty, rec_price, rec_cost):
    """One shared account trading towards target weights (module docstring semantics), on
    the CPU: allocates the account's state and runs :func:`portfolio_account_nb`.

    ``weights[i]`` are the targets executing on bar ``i`` when ``rebalance_row[i]``.
    """
    N = weights.shape[1]
    portfolio_account_nb(weights, rebalance_row, exec_price, close, adj_ratio, buy_reject,
                         sell_reject, init_cash, commission_rate, min_commission, slippage,
                         stamp_duty, lot, np.empty(N), np.empty(N), np.empty(N),
                         np.empty(N, dtype=np.bool_), np.empty(N, dtype=np.int64), np.empty(N),
                         np.empty(N), equity, qty_out, value_out, cost_out, traded_out,
                         rec_side, rec_status, rec_qty, rec_price, rec_cost)


def _account_example() -> tuple[Any, ...]:
    T, N = 3, 2
    f2, f1, col = np.zeros((T, N)), np.zeros(N), np.zeros((T, 1))
    codes = np.zeros((T, N), np.int8)
    return (f2, np.zeros(T, np.bool_), f2, f2, f2, codes, codes, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0,
            f1, f1, f1, np.zeros(N, np.bool_), np.zeros(N, np.int64), f1, f1, col, f2, f2,
            col, col, codes, codes, f2, f2, f2)


@gpu_kernel(example=_account_example)
def _portfolio_account_kernel(weights, rebalance_row, exec_price, close, adj_ratio,
                              buy_reject, sell_reject, init_cash, commission_rate,
                              min_commission, slippage, stamp_duty, lot, qty, last_close, target,
                              pending, last_reject, tq, dqs, equity, qty_out, value_out,
                              cost_out, traded_out, rec_side, rec_status, rec_qty, rec_price,
                              rec_cost):
    if cuda.grid(1) == 0:
        portfolio_account_nb(weights, rebalance_row, exec_price, close, adj_ratio, buy_reject,
                             sell_reject, init_cash, commission_rate, min_commission, slippage,
                             stamp_duty, lot, qty, last_close, target, pending, last_reject, tq,
                             dqs, equity, qty_out, value_out, cost_out, traded_out, rec_side,
                             rec_status, rec_qty, rec_price, rec_cost)


#: Names of the outputs of :func:`simulate_portfolio` in the order the kernels take them.
ACCOUNT_OUTPUTS = ("equity", "qty", "value", "cost", "traded", "rec_side", "rec_status",
                   "rec_qty", "rec_price", "rec_cost")


def _account_outputs(xp: Any, T: int, N: int) -> dict[str, Any]:
    out = {name: xp.zeros((T, 1)) for name in ("equity", "cost", "traded")}
    out.update({name: xp.zeros((T, N)) for name in ("qty", "value", "rec_qty", "rec_price",
                                                    "rec_cost")})
    out["rec_side"] = xp.zeros((T, N), dtype=np.int8)
    out["rec_status"] = xp.zeros((T, N), dtype=np.int8)
    return {name: out[name] for name in ACCOUNT_OUTPUTS}


def _simulate_portfolio_cpu(weights: np.ndarray, rebalance_row: np.ndarray,
                            exec_price: np.ndarray, close: np.ndarray, adj_ratio: np.ndarray,
                            buy_reject: np.ndarray, sell_reject: np.ndarray, *params: float
                            ) -> dict[str, np.ndarray]:
    out = _account_outputs(np, *weights.shape)
    simulate_portfolio_nb(weights, rebalance_row, exec_price, close, adj_ratio, buy_reject,
                          sell_reject, *params, *out.values())
    return out


def simulate_portfolio_gpu(weights: Any, rebalance_row: Any, exec_price: Any, close: Any,
                           adj_ratio: Any, buy_reject: Any, sell_reject: Any,
                           *params: float) -> dict[str, Any]:
    """:func:`simulate_portfolio` through the GPU kernel compiled from the account core.

    The outputs and the account's state are allocated in the inputs' array namespace (CuPy
    on a GPU, NumPy under numba-cuda's simulator). One account is one GPU thread, and
    ``run_portfolio`` has one account, so this launches a single thread that walks every
    bar: it is correct (the CPU's arithmetic, from the same source; bit-identical to the CPU
    under numba-cuda's simulator) and keeps a GPU panel's data on the device, but it is not
    fast; the top-k sweep
    (:func:`qilin.backtest.sweep_kernels_cpu.topk_portfolio_sweep_gpu`) is where many accounts
    run at once.
    """
    inputs = (weights, rebalance_row, exec_price, close, adj_ratio, buy_reject, sell_reject)
    xp = array_module(*inputs)
    weights, rebalance_row, exec_price, close, adj_ratio, buy_reject, sell_reject = (
        xp.ascontiguousarray(a) for a in inputs)
    T, N = weights.shape
    out = _account_outputs(xp, T, N)
    state = (xp.empty(N), xp.empty(N), xp.empty(N), xp.empty(N, dtype=np.bool_),
             xp.empty(N, dtype=np.int64), xp.empty(N), xp.empty(N))
    _portfolio_account_kernel.launch(1, weights, rebalance_row, exec_price, close, adj_ratio,
                                     buy_reject, sell_reject, *params, *state, *out.values())
    return out


_simulate_portfolio = DeviceKernel("simulate_portfolio", cpu=_simulate_portfolio_cpu,
                                   gpu=simulate_portfolio_gpu)


def simulate_portfolio(weights: Any, rebalance_row: Any, exec_price: Any, close: Any,
                       adj_ratio: Any, buy_reject: Any, sell_reject: Any, init_cash: float,
                       commission_rate: float, min_commission: float, slippage: float,
                       stamp_duty: float, lot: float) -> dict[str, Any]:
    """Run the account over all bars on the device that holds the arrays.

    Parameters
    ----------
    weights : (dates, symbols) float array
        Target weights executing on each bar where ``rebalance_row`` (NaN as 0).
    rebalance_row : (dates,) bool array
    exec_price, close, adj_ratio : (dates, symbols) float arrays
    buy_reject, sell_reject : (dates, symbols) int8 arrays
        The execution inputs (:func:`qilin.backtest.signal.execution_inputs`): prices and
        the market's rejection codes (:func:`qilin.backtest.rules.trading_arrays`; 0 where
        an order may fill).
    init_cash, commission_rate, min_commission, slippage, stamp_duty, lot : float

    Returns
    -------
    dict
        :data:`ACCOUNT_OUTPUTS` as arrays of the inputs' namespace: ``equity``, ``cost`` and
        ``traded`` ``(dates, 1)``; ``qty``, ``value`` and the order records ``rec_*``
        ``(dates, symbols)``. NumPy input runs :func:`simulate_portfolio_nb`, CuPy input
        :func:`simulate_portfolio_gpu`.

    Examples
    --------
    >>> px, open_ = np.array([[10.0], [11.0]]), np.zeros((2, 1), np.int8)
    >>> out = simulate_portfolio(np.array([[1.0], [np.nan]]), np.array([True, False]), px,
    ...                          px, np.ones_like(px), open_, open_, 1000.0, 0.0, 0.0, 0.0,
    ...                          0.0, 1.0)
    >>> out["equity"][:, 0].tolist(), out["qty"][:, 0].tolist()
    ([1000.0, 1100.0], [100.0, 100.0])
    """
    return _simulate_portfolio(weights, rebalance_row, exec_price, close, adj_ratio, buy_reject,
                               sell_reject, float(init_cash), float(commission_rate),
                               float(min_commission), float(slippage), float(stamp_duty),
                               float(lot))


def run_portfolio(
    panel: Panel,
    scores: Any = None,
    weights: Any = None,
    top_k: int = 10,
    n_drop: int | None = None,
    band: int = 0,
    rebalance: int = 1,
    weighting: Literal["equal", "score"] = "equal",
    max_weight: float = 1.0,
    short_k: int = 0,
    market: MarketConfig | str = "cn",
    lag: int = 0,
    price: ExecPrice = "close",
    init_cash: float = 1_000_000.0,
    costs: CostModel | Mapping[str, float] | None = None,
    rules: MarketRules | Mapping[str, Any] | None = None,
    backend: str | Backend | None = None,
) -> BacktestResult:
    """Backtest one account over all symbols, driven by scores (top-k) or target weights.

    Parameters
    ----------
    panel : Panel
    scores : float array or DataFrame (dates x symbols), optional
        Higher is better; NaN: not eligible. Selection by :func:`select_top_k`.
    weights : float array or DataFrame, optional
        Target weights used as given on rebalance dates. Exclusive with ``scores``.
    top_k, n_drop, band : int
        Selection size, the TopkDropout drop limit (None: use ``band``), the rank band.
    rebalance : int
        Rebalance every this many bars from the first signal date.
    weighting : {"equal", "score"}
    max_weight : float
        Cap on any single weight's size (the rest stays in cash).
    short_k : int
        With scores: also short the ``short_k`` worst-ranked names (never a long one);
        the book is then dollar-neutral, +0.5 long and -0.5 short of the equity. Needs a
        market that allows short selling (``allow_short``: ``us`` yes, ``cn`` no); a short
        position is marked like a long one (negative quantity), its sale proceeds stay in
        cash, and covering is a buy.
    market, lag, price, init_cash, costs, rules :
        As in :func:`qilin.backtest.signal.run_signals`.
    backend : {"cpu", "gpu", "auto"}, Backend or None
        Where the account runs; None (default): the panel's backend. The target weights
        are chosen on the host with NumPy (the selection has no GPU path); on the GPU the
        execution inputs go to the device and the account runs in the GPU kernel compiled
        from the same source as the CPU one (:func:`simulate_portfolio_gpu`: one thread, as
        the account is sequential over bars and names, so correct rather than fast).

    Returns
    -------
    BacktestResult with one equity column named ``portfolio``.
    """
    if (scores is None) == (weights is None):
        raise BacktestError("portfolio mode needs exactly one of scores or weights")
    if int(top_k) != top_k or top_k < 1:
        raise BacktestError(f"top_k={top_k!r} must be a positive integer")
    if n_drop is not None and (int(n_drop) != n_drop or n_drop < 0):
        raise BacktestError(f"n_drop={n_drop!r} must be a non-negative integer or None")
    if int(band) != band or band < 0:
        raise BacktestError(f"band={band!r} must be a non-negative integer")
    if int(rebalance) != rebalance or rebalance < 1:
        raise BacktestError(f"rebalance={rebalance!r} must be a positive integer")
    if weighting not in ("equal", "score"):
        raise BacktestError(f"weighting={weighting!r} must be 'equal' or 'score'")
    if not 0 < max_weight <= 1:
        raise BacktestError(f"max_weight={max_weight!r} must lie in (0, 1]")
    if not init_cash > 0:
        raise BacktestError(f"init_cash={init_cash!r} must be positive")
    if int(short_k) != short_k or short_k < 0:
        raise BacktestError(f"short_k={short_k!r} must be a non-negative integer")
    check_not_empty(panel)
    be = panel.backend if backend is None else get_backend(backend)
    m, cm, mr = resolve_market(market, costs, rules)
    if short_k and not mr.allow_short:
        raise BacktestError(f"short_k={short_k}: market {m.name!r} does not allow short "
                            f"selling (allow_short: false in configs/markets/{m.name}.yaml); "
                            "use short_k=0 (long only) or a market that allows shorts")
    if short_k and weights is not None:
        raise BacktestError("short_k applies to scores; give negative weights for shorts")
    sc = None if scores is None else align_frame(scores, panel, "scores").astype(np.float64)
    wt = None if weights is None else align_frame(weights, panel, "weights").astype(np.float64)
    w = target_weights(panel, sc, wt, int(top_k), n_drop, int(band), int(rebalance), weighting,
                       float(max_weight), int(short_k), mr.allow_short)
    shift = execution_shift(lag, price)
    is_reb = shift_rows(np.isfinite(w).any(axis=1)[:, None].astype(float), shift)[:, 0] == 1.0
    w_exec = np.ascontiguousarray(shift_rows(w, shift))
    inputs = execution_inputs(panel, mr, price)
    arrays = (w_exec, is_reb, inputs["exec_price"], inputs["close"], inputs["adj_ratio"],
              inputs["buy_reject"], inputs["sell_reject"])
    arrays = tuple(be.asarray(a) for a in arrays)  # on the device where the panel lives
    out = simulate_portfolio(*arrays, float(init_cash), cm.commission_rate, cm.min_commission,
                             cm.slippage, cm.stamp_duty_rate, float(mr.lot_size))
    out = {name: to_host(a) for name, a in out.items()}
    trades = gather_trades(panel.dates, panel.symbols, out["rec_side"], out["rec_status"],
                           out["rec_qty"], out["rec_price"], out["rec_cost"])
    return BacktestResult(panel.dates, panel.symbols, equity=out["equity"],
                          positions=out["qty"], value=out["value"], costs=out["cost"],
                          traded=out["traded"], trades=trades,
                          periods_per_year=m.periods_per_year, init_cash=float(init_cash),
                          accounts=pd.Index(["portfolio"]), backend=be.name)
