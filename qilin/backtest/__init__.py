"""Backtests on Panels: the signal and portfolio engines, costs and market rules, metrics,
strategy templates and parameter sweeps.

Examples
--------
>>> from qilin import synthetic_market
>>> from qilin.backtest import run_sweep
>>> panel = synthetic_market(n_symbols=4, n_days=80, seed=3)
>>> sweep = run_sweep(panel, "ma_cross", "fast=3:5:2 slow=10", market="cn", backend="cpu")
>>> len(sweep.table)
2
"""

from qilin.backtest.costs import CostModel
from qilin.backtest.engine import BacktestResult, run_portfolio, run_signals
from qilin.backtest.metrics import summary as performance_summary
from qilin.backtest.rules import MarketRules
from qilin.backtest.strategies import get_strategy
from qilin.backtest.sweeps import ParameterGrid, SweepResult, parse_grid, run_sweep

__all__ = [
    "BacktestResult",
    "CostModel",
    "MarketRules",
    "ParameterGrid",
    "SweepResult",
    "get_strategy",
    "parse_grid",
    "performance_summary",
    "run_portfolio",
    "run_signals",
    "run_sweep",
]
