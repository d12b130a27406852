"""Signal mode: every column is its own account trading its own capital.

Semantics (pinned; the fused sweep kernels reproduce them exactly):

- **Desired exposure.** ``entries``/``exits`` (booleans) set the desired state to long (1)
  or flat (0); both on one bar change nothing. Or ``target`` gives the fraction of the
  column's equity to hold long, in ``[0, 1]``; NaN means "no new target". Signals use data
  up to the close of their day ``t``.
- **Timing.** ``price="close"``: the order for day ``t`` executes at the close of ``t + lag``;
  ``price="open"``: at the open of ``t + 1 + lag`` (the first open strictly after the
  signal's close, plus ``lag`` bars). A close execution earns from the next bar on; an open
  execution earns ``close / open`` on its own bar. Signals with no execution bar left are
  dropped.
- **When orders are sent.** When the desired exposure changes, and (if
  ``rebalance_threshold > 0``) when ``|desired - held exposure| > rebalance_threshold`` at
  the execution price. With the default 0, drift never triggers trades.
- **Sizing.** ``E = cash + qty * p`` at the execution price ``p``; the target quantity is
  ``floor(e * E / (p * (1 + s) * (1 + commission_rate)) / lot) * lot`` (the buy-side fill
  price is used for both directions). Buys are whole lots, cut to what cash affords after
  costs (closed form, :func:`~qilin.kernels.orders.affordable_buy_nb`); more than 2**53
  shares is rejected ``beyond_precision``; a desired exposure of 0 sells the whole position.
- **Fills and costs.** Buys fill at ``p * (1 + s)``, sells at ``p * (1 - s)``,
  ``s = slippage_bps / 1e4``; commission ``max(rate * notional, min_commission)`` per order,
  stamp duty on sells; all paid from cash.
- **Rules** (:func:`qilin.backtest.rules.trading_arrays`, read by the kernel as codes). No
  order on a missing/suspended bar (reason ``suspended``) nor on a priced bar with zero
  volume (``no_volume``; its execution price is recorded as ``NO_VOLUME_PRICE``); with price
  limits no buy when ``p >= up_limit - 1e-9`` and no sell when ``p <= down_limit + 1e-9``
  (same test for open and close executions). A blocked order is recorded as rejected and
  retried on the next bar while the desire still differs; a rejection is recorded once per
  reason while it repeats. T+1: a column sends at most one order per bar, so shares bought
  on a day are never sold that day (T+1 holds by construction with daily bars).
- **Corporate actions.** With an ``adj_factor`` field the held quantity is multiplied by
  ``adj_factor[t] / adj_factor[previous bar]`` at the start of day ``t``; trading uses raw prices.
- **Marking.** ``equity_t = cash_t + qty_t * last valid close``; returns
  ``equity_t / equity_{t-1} - 1`` (0 on the first day).

One source for both devices: :func:`signal_column_nb` is a column's account, a
:func:`~qilin.kernels.targets.core` filling orders through :mod:`qilin.kernels.orders`; the
CPU runs it over columns in a numba ``prange`` (:func:`simulate_signals_nb`), the GPU one
thread per column (:data:`simulate_signals_kernel`). :data:`simulate_signals` dispatches on
the arrays' type.

Examples
--------
>>> import numpy as np, pandas as pd
>>> from qilin.data.panel import Panel
>>> close = np.array([[10.0], [11.0], [12.1], [12.1]])
>>> p = Panel.from_arrays({"close": close}, pd.date_range("2024-01-01", periods=4), ["A"])
>>> entries = np.array([[True], [False], [False], [False]])
>>> exits = np.array([[False], [False], [True], [False]])
>>> res = run_signals(p, entries=entries, exits=exits, market="us", init_cash=1000.0,
...                   costs={"slippage_bps": 0.0})
>>> res.equity[:, 0].tolist()
[1000.0, 1100.0, 1210.0, 1210.0]
>>> res.trades[["side", "quantity", "price", "status"]].values.tolist()
[['buy', 100.0, 10.0, 'filled'], ['sell', 100.0, 12.1, 'filled']]
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
from qilin.backtest.result import BacktestResult, gather_trades
from qilin.backtest.rules import MarketRules, trading_arrays
from qilin.config import MarketConfig, load_market
from qilin.data.panel import Panel
from qilin.errors import BacktestError
from qilin.kernels.orders import (
    QTY_EPS,
    REJECT_CASH,
    REJECT_NO_VOLUME,
    STATUS_FILLED,
    STATUS_NONE,
    buy_nb,
    halted_nb,
    holding_after_nb,
    record_fill_nb,
    record_rejection_nb,
    sell_nb,
    target_quantity_nb,
)
from qilin.kernels.targets import core, cuda, gpu_kernel

ExecPrice = Literal["close", "open"]
#: Execution price marking a bar that has a price but no volume (not tradable, recorded as
#: ``no_volume``); NaN marks a missing or suspended bar (``suspended``).
NO_VOLUME_PRICE = -1.0


#: Input arrays of the engine kernels, in argument order (``(dates, columns)`` each).
KERNEL_INPUTS = ("target", "exec_price", "close", "adj_ratio", "buy_reject", "sell_reject")
#: Output arrays, in argument order: float64 then the int8 records.
KERNEL_OUTPUTS = ("equity", "qty", "value", "cost", "traded", "rec_side", "rec_status",
                  "rec_qty", "rec_price", "rec_cost")
_INT8_OUTPUTS = ("rec_side", "rec_status")


@core
def signal_column_nb(j, target, exec_price, close, adj_ratio, buy_reject, sell_reject,
                     init_cash, commission_rate, min_commission, slippage, stamp_duty, lot,
                     rebalance_threshold, equity, qty_out, value_out, cost_out, traded_out,
                     rec_side, rec_status, rec_qty, rec_price, rec_cost):
    """Column ``j``'s account through every bar (see the module docstring for the rules).

    All 2-D arrays are ``(bars, columns)`` and already aligned on execution bars:
    ``target[i]`` is the desired exposure whose order executes on bar ``i`` (NaN: no new
    target); ``buy_reject``/``sell_reject`` are :func:`~qilin.backtest.rules.trading_arrays`
    codes. Writes column ``j`` of the outputs and of the dense order records; fills go
    through the primitives of :mod:`qilin.kernels.orders`.
    """
    T = target.shape[0]
    cash = init_cash
    qty = 0.0
    last_close = math.nan
    desired = 0.0
    pending = False
    last_reject = 0
    for i in range(T):
        if qty != 0.0:
            qty *= adj_ratio[i, j]
        s = target[i, j]
        if s == s and s != desired:
            desired = s
            pending = True
            last_reject = 0
        p = exec_price[i, j]
        closed = buy_reject[i, j]
        valid = not halted_nb(closed)
        if rebalance_threshold > 0.0 and not pending and valid:
            eq0 = cash + qty * p
            if eq0 > 0.0 and abs(desired - qty * p / eq0) > rebalance_threshold:
                pending = True
                last_reject = 0
        day_cost = 0.0
        day_traded = 0.0
        if pending:
            reject = 0
            side = 0
            if not valid:
                reject = closed
                side = 1
                if qty != 0.0 and desired * (cash + qty * last_close) <= qty * last_close:
                    side = -1
            else:
                eq = cash + qty * p
                tq = target_quantity_nb(desired, eq, p, slippage, commission_rate, lot)
                if tq > qty + QTY_EPS:
                    side = 1
                    status, dq, fill_px, notional, c = buy_nb(
                        buy_reject[i, j], tq, qty, p, cash, lot, commission_rate,
                        min_commission, slippage)
                    if status == STATUS_FILLED:
                        cash -= notional + c
                        qty += dq
                        pending = False
                        record_fill_nb(i, j, 1, dq, fill_px, c, rec_side, rec_status, rec_qty,
                                       rec_price, rec_cost)
                        day_cost = c + dq * (fill_px - p)
                        day_traded = notional
                    elif status == STATUS_NONE:
                        pending = False
                    else:
                        reject = status
                elif tq < qty - QTY_EPS:
                    side = -1
                    status, dq, fill_px, notional, c = sell_nb(
                        sell_reject[i, j], tq, qty, p, lot, commission_rate, min_commission,
                        slippage, stamp_duty)
                    if status == STATUS_FILLED:
                        cash += notional - c
                        qty = holding_after_nb(qty, -dq)
                        pending = False
                        record_fill_nb(i, j, -1, dq, fill_px, c, rec_side, rec_status,
                                       rec_qty, rec_price, rec_cost)
                        day_cost = c + dq * (p - fill_px)
                        day_traded = notional
                    elif status == STATUS_NONE:
                        pending = False
                    else:
                        reject = status
                else:
                    pending = False
                    if desired > 0.0 and qty == 0.0:  # one lot costs more than the equity
                        side = 1
                        reject = REJECT_CASH
            if reject != 0 and reject != last_reject:
                record_rejection_nb(i, j, side, reject, p, rec_side, rec_status, rec_qty,
                                    rec_price, rec_cost)
            if reject != 0:
                last_reject = reject
        c_i = close[i, j]
        if c_i == c_i:
            last_close = c_i
        held = qty * last_close if qty != 0.0 else 0.0
        equity[i, j] = cash + held
        qty_out[i, j] = qty
        value_out[i, j] = held
        cost_out[i, j] = day_cost
        traded_out[i, j] = day_traded


@numba.njit(parallel=True, cache=True)
def simulate_signals_nb(target, exec_price, close, adj_ratio, buy_reject, sell_reject,
                        init_cash, commission_rate, min_commission, slippage, stamp_duty, lot,
                        rebalance_threshold, equity, qty_out, value_out, cost_out,
                        traded_out, rec_side, rec_status, rec_qty, rec_price, rec_cost):
    """Every column's account (:func:`signal_column_nb`), columns in parallel on the CPU."""
    for j in numba.prange(target.shape[1]):
        signal_column_nb(j, target, exec_price, close, adj_ratio, buy_reject, sell_reject,
                         init_cash, commission_rate, min_commission, slippage, stamp_duty, lot,
                         rebalance_threshold, equity, qty_out, value_out, cost_out,
                         traded_out, rec_side, rec_status, rec_qty, rec_price, rec_cost)


def _kernel_example() -> tuple:
    T, N = 3, 2
    f = np.zeros((T, N))
    codes = np.zeros((T, N), np.int8)
    params = (1e6, 0.0003, 5.0, 0.0005, 0.0005, 100.0, 0.0)
    return (f, f, f, f, codes, codes, *params, f, f, f, f, f, codes, codes, f, f, f)


@gpu_kernel(example=_kernel_example)
def simulate_signals_kernel(target, exec_price, close, adj_ratio, buy_reject, sell_reject,
                            init_cash, commission_rate, min_commission, slippage, stamp_duty,
                            lot, rebalance_threshold, equity, qty_out, value_out, cost_out,
                            traded_out, rec_side, rec_status, rec_qty, rec_price, rec_cost):
    """:func:`signal_column_nb` on the GPU, one thread per column."""
    j = cuda.grid(1)
    if j < target.shape[1]:
        signal_column_nb(j, target, exec_price, close, adj_ratio, buy_reject, sell_reject,
                         init_cash, commission_rate, min_commission, slippage, stamp_duty, lot,
                         rebalance_threshold, equity, qty_out, value_out, cost_out,
                         traded_out, rec_side, rec_status, rec_qty, rec_price, rec_cost)


def _simulate_cpu(target: np.ndarray, exec_price: np.ndarray, close: np.ndarray,
                  adj_ratio: np.ndarray, buy_reject: np.ndarray, sell_reject: np.ndarray,
                  params: tuple) -> dict[str, np.ndarray]:
    # column-major arrays: each column's history is contiguous for the per-column loop
    T, N = target.shape
    out = {name: np.zeros((T, N), np.int8 if name in _INT8_OUTPUTS else np.float64, order="F")
           for name in KERNEL_OUTPUTS}
    floats = [np.asfortranarray(a, dtype=np.float64)
              for a in (target, exec_price, close, adj_ratio)]
    codes = [np.asfortranarray(a, dtype=np.int8) for a in (buy_reject, sell_reject)]
    simulate_signals_nb(*floats, *codes, *params, *out.values())
    return out


def _simulate_gpu(target: Any, exec_price: Any, close: Any, adj_ratio: Any, buy_reject: Any,
                  sell_reject: Any, params: tuple) -> dict[str, Any]:
    # outputs in the inputs' namespace: CuPy on a GPU, NumPy under numba-cuda's simulator
    xp = array_module(target)
    T, N = target.shape
    floats = [xp.ascontiguousarray(a, dtype=xp.float64)
              for a in (target, exec_price, close, adj_ratio)]
    codes = [xp.ascontiguousarray(a, dtype=xp.int8) for a in (buy_reject, sell_reject)]
    out = {name: xp.zeros((T, N), xp.int8 if name in _INT8_OUTPUTS else xp.float64)
           for name in KERNEL_OUTPUTS}
    simulate_signals_kernel.launch(N, *floats, *codes, *(float(p) for p in params),
                                   *out.values())
    return out


#: The signal engine's kernel: the CPU driver for NumPy inputs, the GPU kernel for CuPy ones.
#: Takes the :data:`KERNEL_INPUTS` arrays and the parameters ``(init_cash, commission_rate,
#: min_commission, slippage, stamp_duty, lot, rebalance_threshold)``; returns the
#: :data:`KERNEL_OUTPUTS` arrays in the inputs' namespace.
simulate_signals = DeviceKernel("simulate_signals", cpu=_simulate_cpu, gpu=_simulate_gpu)


# ------------------------------------------------------------------------ preparation
def align_frame(x: Any, panel: Panel, name: str) -> np.ndarray:
    """A (dates x symbols) host array from an array or a DataFrame indexed like the panel."""
    if isinstance(x, pd.DataFrame):
        x = x.reindex(index=panel.dates, columns=panel.symbols)
        arr = x.to_numpy()
    else:
        arr = np.asarray(to_host(x))
    if arr.shape != panel.shape:
        raise BacktestError(f"{name} has shape {arr.shape}, expected the panel's {panel.shape}")
    return arr


def desired_from_signals(entries: Any, exits: Any, panel: Panel) -> np.ndarray:
    """Desired exposure changes from entry/exit booleans: 1 on entry, 0 on exit, else NaN."""
    e = align_frame(entries, panel, "entries")
    x = align_frame(exits, panel, "exits")
    e = np.where(pd.isna(e), False, e).astype(bool)
    x = np.where(pd.isna(x), False, x).astype(bool)
    out = np.full(panel.shape, np.nan)
    out[e & ~x] = 1.0
    out[x & ~e] = 0.0
    return out


def check_target(target: np.ndarray, panel: Panel) -> np.ndarray:
    """Validate target exposures in [0, 1] (NaN allowed), naming the first bad cell."""
    t = np.asarray(target, dtype=np.float64)
    bad = np.isfinite(t) & ((t < 0) | (t > 1)) | np.isinf(t)
    if bad.any():
        r, c = (int(v[0]) for v in np.nonzero(bad))
        what = "negative (short selling is not supported)" if t[r, c] < 0 else "above 1"
        raise BacktestError(
            f"target exposure {t[r, c]} is {what} on {panel.dates[r].date()} for symbol "
            f"{panel.symbols[c]!r}: targets must lie in [0, 1]")
    return t


def shift_rows(a: np.ndarray, k: int) -> np.ndarray:
    """Rows moved ``k`` bars later (the first ``k`` rows become NaN)."""
    if k == 0:
        return a.copy()
    out = np.full_like(a, np.nan, dtype=np.float64)
    if k < len(a):
        out[k:] = a[:-k]
    return out


def execution_shift(lag: int, price: str) -> int:
    """Bars between a signal's close and its execution bar."""
    if int(lag) != lag or lag < 0:
        raise BacktestError(f"lag={lag!r} must be a non-negative integer")
    if price not in ("close", "open"):
        raise BacktestError(f"price={price!r} must be 'close' or 'open'")
    return int(lag) + (1 if price == "open" else 0)


def check_not_empty(panel: Panel) -> None:
    """Raise BacktestError for a panel without dates or symbols (nothing to backtest)."""
    if panel.shape[0] == 0 or panel.shape[1] == 0:
        raise BacktestError(f"the data has {panel.shape[0]} dates x {panel.shape[1]} symbols: "
                            "nothing to backtest; check the file and the date/symbol filters")


def resolve_market(market: MarketConfig | str, costs: CostModel | Mapping[str, float] | None,
                   rules: MarketRules | Mapping[str, Any] | None
                   ) -> tuple[MarketConfig, CostModel, MarketRules]:
    """The market profile with its cost model and rules (each overridable)."""
    m = load_market(market) if isinstance(market, str) else market
    cm = costs if isinstance(costs, CostModel) else CostModel.from_market(m, **dict(costs or {}))
    mr = (rules if isinstance(rules, MarketRules)
          else MarketRules.from_market(m, **dict(rules or {})))
    return m, cm, mr


def execution_inputs(panel: Panel, rules: MarketRules, price: str) -> dict[str, np.ndarray]:
    """The engines' host inputs: :func:`~qilin.backtest.rules.trading_arrays` as a dict.

    ``exec_price`` is :data:`NO_VOLUME_PRICE` on bars that have a price but no volume (the
    price the engines record for an order rejected there; NaN on a missing or suspended
    bar). Keys: ``exec_price close adj_ratio buy_reject sell_reject``.
    """
    arrays = trading_arrays(panel, rules, price)
    px = np.where(arrays.buy_reject == REJECT_NO_VOLUME, NO_VOLUME_PRICE, arrays.price)
    return {"exec_price": np.ascontiguousarray(px), "close": arrays.close,
            "adj_ratio": arrays.adj_ratio, "buy_reject": arrays.buy_reject,
            "sell_reject": arrays.sell_reject}


def run_signals(
    panel: Panel,
    entries: Any = None,
    exits: Any = None,
    target: Any = None,
    market: MarketConfig | str = "cn",
    lag: int = 0,
    price: ExecPrice = "close",
    init_cash: float = 1_000_000.0,
    rebalance_threshold: float = 0.0,
    costs: CostModel | Mapping[str, float] | None = None,
    rules: MarketRules | Mapping[str, Any] | None = None,
    backend: str | Backend | None = None,
) -> BacktestResult:
    """Backtest per-column signals; each symbol trades its own ``init_cash``.

    Parameters
    ----------
    panel : Panel
        Bars with ``close`` (and ``open`` for open executions; ``preclose``, ``adj_factor``
        used when present).
    entries, exits : bool arrays or DataFrames (dates x symbols), optional
        Entry/exit signals known at each day's close.
    target : float array or DataFrame, optional
        Desired long exposure in [0, 1] (NaN: keep the previous target). Exclusive with
        entries/exits.
    market : "cn", "us" or MarketConfig
        Costs, lot size, T+1 and price limits come from the profile.
    lag : int
        Extra bars between the signal and its execution.
    price : {"close", "open"}
        Execution at the close of ``t + lag`` or the open of ``t + 1 + lag``.
    init_cash : float
        Starting cash of every column.
    rebalance_threshold : float
        Also re-trade when the held exposure drifts more than this from the target.
    costs, rules : CostModel / MarketRules or mappings of overrides, optional
    backend : "cpu", "gpu", "auto", Backend or None
        Where the state machine runs (trade records are gathered on the host); None: the
        panel's own backend.

    Returns
    -------
    BacktestResult
    """
    if target is not None and (entries is not None or exits is not None):
        raise BacktestError("give either target or entries/exits, not both")
    if target is None and (entries is None or exits is None):
        raise BacktestError("signal mode needs target, or both entries and exits")
    if not init_cash > 0:
        raise BacktestError(f"init_cash={init_cash!r} must be positive")
    if not rebalance_threshold >= 0:
        raise BacktestError(f"rebalance_threshold={rebalance_threshold!r} must be >= 0")
    check_not_empty(panel)
    m, cm, mr = resolve_market(market, costs, rules)
    desired = (check_target(align_frame(target, panel, "target"), panel) if target is not None
               else desired_from_signals(entries, exits, panel))
    inputs = execution_inputs(panel, mr, price)
    inputs["target"] = np.ascontiguousarray(shift_rows(desired, execution_shift(lag, price)))
    params = (float(init_cash), cm.commission_rate, cm.min_commission, cm.slippage,
              cm.stamp_duty_rate, float(mr.lot_size), float(rebalance_threshold))
    be = panel.backend if backend is None else get_backend(backend)
    out = simulate_signals(*(be.asarray(inputs[name]) for name in KERNEL_INPUTS), params)
    out = {name: to_host(a) for name, a in out.items()}
    trades = gather_trades(panel.dates, panel.symbols, out["rec_side"], out["rec_status"],
                           out["rec_qty"], out["rec_price"], out["rec_cost"])
    return BacktestResult(panel.dates, panel.symbols, equity=out["equity"], positions=out["qty"],
                          value=out["value"], costs=out["cost"], traded=out["traded"],
                          trades=trades, periods_per_year=m.periods_per_year,
                          init_cash=float(init_cash), backend=be.name)
