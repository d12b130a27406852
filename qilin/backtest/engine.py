"""The backtest engine's entry points: signal mode and portfolio mode.

- :func:`run_signals` — every column trades its own capital from entry/exit signals or
  target exposures (one column core: numba ``prange`` over columns, or numba-cuda on a GPU).
- :func:`run_portfolio` — one account over all symbols from scores (top-k with a drop band
  or TopkDropout) or target weights.

Both return a :class:`~qilin.backtest.result.BacktestResult`; the pinned semantics are in
:mod:`qilin.backtest.signal` and :mod:`qilin.backtest.portfolio` and ``docs/backtest.md``.

Examples
--------
>>> from qilin.data.synthetic import synthetic_market
>>> panel = synthetic_market(4, 60, seed=1)
>>> close = panel["close"]
>>> res = run_signals(panel, target=(close > 0).astype(float), market="cn")
>>> res.equity.shape, bool((res.trades["status"] == "filled").any())
((60, 4), True)
"""

from __future__ import annotations

from qilin.backtest.portfolio import run_portfolio, select_top_k
from qilin.backtest.result import BacktestResult
from qilin.backtest.signal import run_signals, simulate_signals_nb

__all__ = ["BacktestResult", "run_portfolio", "run_signals", "select_top_k",
           "simulate_signals_nb"]
