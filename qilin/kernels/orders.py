"""Order primitives: how every engine and sweep kernel fills a buy or a sell, written once.

Each primitive is a :func:`~qilin.kernels.targets.core`: numba-compiled for the CPU and, as
the same Python source, a numba-cuda device function for the GPU. The signal engine
(:mod:`qilin.backtest.signal`), the portfolio engine and the fused sweep kernels call them;
none of them writes out fill arithmetic of its own.

- **Sizing.** :func:`target_quantity_nb`: whole lots worth ``exposure`` of the equity at
  the buy-side fill price grossed up by the commission rate.
- **Buys** (:func:`buy_nb`): the step from the held to the target quantity
  (:func:`buy_step_nb`: whole lots, or the whole short plus the long when covering), filled
  by :func:`fill_buy_nb` within what cash affords after commission
  (:func:`affordable_buy_nb`, closed form) at the slippage-adjusted price
  ``p * (1 + slippage)``; commission ``max(rate * notional, min_commission)``.
- **Sells** (:func:`sell_nb`): the whole-lot step down to the target, or the whole long
  (plus any short) when the target is at or below 0 (:func:`sell_step_nb`), at
  ``p * (1 - slippage)``; commission plus stamp duty. The holding after a fill is
  :func:`holding_after_nb`. T+1 holds by construction: an engine sends at most one order
  per column and bar, so shares bought on a day are never sold that day.
- **Rejections and fills** as dense records (:func:`record_rejection_nb`,
  :func:`record_fill_nb`), with the status codes below.

Both fills return ``(status, quantity, fill price, notional, cost)``: the status is
:data:`STATUS_FILLED`, :data:`STATUS_NONE` (nothing to trade: the step rounds to 0 lots) or
the ``REJECT_*`` reason the order did not fill; callers update their own cash and holdings.
The arithmetic is the same operations in the same order on both targets; the CPU compilation
never contracts them into fused multiply-adds (numba enables no ``contract`` flag without
``fastmath``) and neither does numba-cuda without ``fastmath=True``, which these cores never
ask for.

Examples
--------
>>> target_quantity_nb(0.5, 10_000.0, 10.0, 0.0, 0.0, 100.0)
500.0
>>> status, qty, price, notional, cost = buy_nb(0, 500.0, 0.0, 10.0, 10_000.0, 100.0,
...                                             0.001, 5.0, 0.0)
>>> status == STATUS_FILLED, qty, price, notional, cost
(True, 500.0, 10.0, 5000.0, 5.0)
>>> sell_nb(0, 0.0, 500.0, 10.0, 100.0, 0.001, 5.0, 0.0, 0.001)[1:]
(500.0, 10.0, 5000.0, 10.0)
>>> buy_nb(REJECT_LIMIT_UP, 500.0, 0.0, 10.0, 10_000.0, 100.0, 0.0, 0.0, 0.0)[0] == REJECT_LIMIT_UP
True
"""

from __future__ import annotations

import numpy as np

from qilin.kernels.targets import core

#: Status codes of the dense order records (``rec_status``); names in
#: :data:`qilin.backtest.result.REASONS`.
STATUS_NONE = 0
STATUS_FILLED = 1
REJECT_SUSPENDED = 2
REJECT_LIMIT_UP = 3
REJECT_LIMIT_DOWN = 4
REJECT_CASH = 5
REJECT_T_PLUS_ONE = 6
REJECT_NO_VOLUME = 7
REJECT_PRECISION = 8

#: Largest share count (and traded notional) a float64 holds exactly: 2**53. An order
#: beyond it (or a non-finite one, e.g. from a price near 0) is rejected with the reason
#: ``beyond_precision`` instead of being sized with lost units.
MAX_EXACT = 9007199254740992.0
#: Quantities closer than this are equal (whole-lot arithmetic in floats).
QTY_EPS = 1e-9
_WHOLE = 4503599627370496.0  # 2**52: every float64 at least this large is a whole number


def _floor_gpu(x):
    # numba-cuda's math.floor returns a float; the simulator runs Python's, which returns an
    # int and raises on inf/NaN: this exact floor is the same on both
    if not abs(x) < _WHOLE or x == 0.0:  # whole already, inf, NaN (and -0.0 stays -0.0)
        return x
    whole = float(int(x))
    return whole - 1.0 if whole > x else whole


@core(gpu=_floor_gpu, inline="always")
def floor_nb(x):
    """``floor(x)`` as a float, inf and NaN passing through (NumPy's ``floor``).

    numba's ``math.floor`` returns an int64 on the CPU (garbage beyond 2**63); this
    primitive keeps the float on both targets.

    Examples
    --------
    >>> floor_nb(2.5), floor_nb(-2.5), floor_nb(float("inf"))
    (2.0, -3.0, inf)
    """
    return np.floor(x)


@core(inline="always")
def halted_nb(reason):
    """Whether a bar's rejection code (see :func:`qilin.backtest.rules.trading_arrays`)
    closes it to both sides: missing/suspended or no volume, as opposed to a price limit."""
    return reason == REJECT_SUSPENDED or reason == REJECT_NO_VOLUME


@core(inline="always")
def commission_nb(notional, commission_rate, min_commission):
    """``max(commission_rate * notional, min_commission)`` of one order."""
    return max(commission_rate * notional, min_commission)


@core(inline="always")
def buy_fits_nb(q, buy_px, cash, commission_rate, min_commission):
    """Whether ``cash`` covers ``q`` shares at ``buy_px`` plus ``max(rate * n, min)``."""
    notional = q * buy_px
    return cash - notional - max(commission_rate * notional, min_commission) >= 0.0


@core(inline="always")
def affordable_buy_nb(dq, buy_px, cash, lot, commission_rate, min_commission):
    """The largest multiple of ``lot`` up to ``dq`` whose notional plus commission ``cash``
    covers; 0 when not even one lot is affordable.

    The commission is ``max(commission_rate * notional, min_commission)``, so a notional
    ``n`` is affordable when ``n <= min(cash / (1 + rate), cash - min_commission)``. That
    bound gives the quantity in closed form; rounding is then corrected by at most one lot
    up and two lots down, so the cost is constant whatever the quantities (no loop over
    lots). ``dq`` must be a whole number of lots no larger than :data:`MAX_EXACT` (callers
    reject larger orders first).

    Examples
    --------
    >>> affordable_buy_nb(1000.0, 10.0, 5000.0, 100.0, 0.001, 5.0)
    400.0
    >>> affordable_buy_nb(100.0, 1e12, 1e6, 100.0, 0.0, 0.0)
    0.0
    """
    if not dq > 0.0:
        return 0.0
    room = min(cash / (1.0 + commission_rate), cash - min_commission)
    est = 0.0
    if room > 0.0:
        est = floor_nb(room / (buy_px * lot)) * lot
    if not est <= dq:  # also when the division overflowed
        est = dq
    if est + lot <= dq and buy_fits_nb(est + lot, buy_px, cash, commission_rate,
                                       min_commission):
        est += lot
    for _ in range(2):
        if est <= 0.0 or buy_fits_nb(est, buy_px, cash, commission_rate, min_commission):
            break
        est -= lot
    if est > 0.0 and not buy_fits_nb(est, buy_px, cash, commission_rate, min_commission):
        est = 0.0
    return max(est, 0.0)


@core(inline="always")
def target_quantity_nb(exposure, equity, price, slippage, commission_rate, lot):
    """Whole lots worth ``exposure`` of ``equity``:
    ``floor(exposure * equity / (p * (1 + slippage) * (1 + commission_rate)) / lot) * lot``;
    0 unless both are positive. The buy-side fill price sizes either direction."""
    if exposure > 0.0 and equity > 0.0:
        buy_px = price * (1.0 + slippage)
        return floor_nb(exposure * equity / (buy_px * (1.0 + commission_rate)) / lot) * lot
    return 0.0


@core(inline="always")
def buy_step_nb(target_qty, qty, lot):
    """Shares a buy from ``qty`` towards ``target_qty`` trades, before cash is checked.

    Covering a short (``qty < 0 <= target_qty``) buys all of it, fractional shares
    included, plus the long; from no holding the target itself (already whole lots);
    otherwise the whole-lot step ``floor((target_qty - qty) / lot + QTY_EPS) * lot``.
    Not bounded: callers reject a step beyond :data:`MAX_EXACT`.

    Examples
    --------
    >>> buy_step_nb(500.0, 0.0, 100.0), buy_step_nb(500.0, 120.0, 100.0)
    (500.0, 300.0)
    >>> buy_step_nb(200.0, -150.5, 100.0)
    350.5
    """
    if qty == 0.0 and target_qty <= MAX_EXACT:
        return target_qty  # already whole lots, exactly (no division needed)
    if qty < 0.0 <= target_qty:
        return target_qty - qty
    return floor_nb((target_qty - qty) / lot + QTY_EPS) * lot


@core(inline="always")
def fill_buy_nb(dq, price, cash, lot, commission_rate, min_commission, slippage):
    """Fill up to ``dq`` shares (whole lots, at most :data:`MAX_EXACT`) at
    ``price * (1 + slippage)``, cut to what ``cash`` affords after commission.

    Returns ``(status, quantity, fill price, notional, commission)``: ``insufficient_cash``
    when not one lot is affordable (or ``dq`` is 0).

    Examples
    --------
    >>> fill_buy_nb(1000.0, 10.0, 5000.0, 100.0, 0.001, 5.0, 0.0)[1:]
    (400.0, 10.0, 4000.0, 5.0)
    """
    fill_px = price * (1.0 + slippage)
    q = affordable_buy_nb(dq, fill_px, cash, lot, commission_rate, min_commission)
    if q <= 0.0:
        return REJECT_CASH, 0.0, fill_px, 0.0, 0.0
    notional = q * fill_px
    return STATUS_FILLED, q, fill_px, notional, commission_nb(notional, commission_rate,
                                                              min_commission)


@core(inline="always")
def buy_nb(blocked, target_qty, qty, price, cash, lot, commission_rate, min_commission,
           slippage):
    """Fill a buy from ``qty`` towards ``target_qty`` within ``cash`` and whole lots.

    ``blocked`` is the bar's buy rejection code (0: buys allowed). The step is
    :func:`buy_step_nb`, the fill :func:`fill_buy_nb`. Returns ``(status, quantity, fill
    price, notional, commission)``; a step beyond :data:`MAX_EXACT` is rejected
    ``beyond_precision``, one lot more than cash affords ``insufficient_cash``.
    """
    fill_px = price * (1.0 + slippage)
    status = STATUS_NONE
    dq = 0.0
    notional = 0.0
    cost = 0.0
    if blocked != 0:
        status = int(blocked)
    else:
        step = buy_step_nb(target_qty, qty, lot)
        if not step <= MAX_EXACT:  # too many shares for a float (or inf)
            status = REJECT_PRECISION
        elif step > 0.0:
            status, dq, fill_px, notional, cost = fill_buy_nb(
                step, price, cash, lot, commission_rate, min_commission, slippage)
    return status, dq, fill_px, notional, cost


@core(inline="always")
def sell_step_nb(target_qty, qty, lot):
    """Shares a sell from ``qty`` down to ``target_qty`` trades.

    Out of a long (``target_qty <= 0 < qty``): all of it, fractional shares included,
    plus the short; otherwise the whole-lot step ``floor((qty - target_qty) / lot +
    QTY_EPS) * lot``.

    Examples
    --------
    >>> sell_step_nb(0.0, 150.5, 100.0), sell_step_nb(100.0, 350.0, 100.0)
    (150.5, 200.0)
    >>> sell_step_nb(-200.0, 150.0, 100.0)
    350.0
    """
    if target_qty <= 0.0 < qty:
        return qty - target_qty
    return floor_nb((qty - target_qty) / lot + QTY_EPS) * lot


@core(inline="always")
def sell_nb(blocked, target_qty, qty, price, lot, commission_rate, min_commission, slippage,
            stamp_duty):
    """Fill a sell from ``qty`` down to ``target_qty`` (:func:`sell_step_nb`) at
    ``price * (1 - slippage)``; ``blocked`` is the bar's sell rejection code (0: sells
    allowed).

    Returns ``(status, quantity, fill price, notional, commission + stamp duty)``; a step
    beyond :data:`MAX_EXACT` (a short too large for a float) is rejected ``beyond_precision``.
    """
    fill_px = price * (1.0 - slippage)
    status = STATUS_NONE
    dq = 0.0
    notional = 0.0
    cost = 0.0
    if blocked != 0:
        status = int(blocked)
    else:
        step = sell_step_nb(target_qty, qty, lot)
        if not step <= MAX_EXACT:
            status = REJECT_PRECISION
        elif step > 0.0:
            status = STATUS_FILLED
            dq = step
            notional = dq * fill_px
            cost = commission_nb(notional, commission_rate, min_commission) \
                + stamp_duty * notional
    return status, dq, fill_px, notional, cost


@core(inline="always")
def holding_after_nb(qty, traded):
    """Shares held after a fill of ``traded`` shares (positive bought, negative sold); a
    holding within :data:`QTY_EPS` of 0 is 0.

    Examples
    --------
    >>> holding_after_nb(300.0, -300.0 + 1e-12), holding_after_nb(-150.0, 350.0)
    (0.0, 200.0)
    """
    held = qty + traded
    return 0.0 if abs(held) < QTY_EPS else held


@core
def record_fill_nb(i, j, side, quantity, price, cost, rec_side, rec_status, rec_qty,
                   rec_price, rec_cost):
    """Write a filled order (``side`` +1 buy, -1 sell) at ``[i, j]`` of the dense records."""
    rec_side[i, j] = side
    rec_status[i, j] = STATUS_FILLED
    rec_qty[i, j] = quantity
    rec_price[i, j] = price
    rec_cost[i, j] = cost


@core
def record_rejection_nb(i, j, side, reason, price, rec_side, rec_status, rec_qty, rec_price,
                        rec_cost):
    """Write an order that did not fill (``reason``, a ``REJECT_*`` code) at ``[i, j]``."""
    rec_side[i, j] = side
    rec_status[i, j] = reason
    rec_qty[i, j] = 0.0
    rec_price[i, j] = price
    rec_cost[i, j] = 0.0
