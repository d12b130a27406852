"""Tear sheets a researcher would show: strategy (:mod:`qilin.reports.strategy`) and factor
(:mod:`qilin.reports.factor`) reports, each an HTML page with its PNG figures.

The numbers come from :mod:`qilin.backtest.metrics` and :mod:`qilin.factors.evaluation`;
this package only arranges, formats and draws them (matplotlib, Agg backend).
"""

from qilin.reports.benchmark import benchmark_returns, equal_weight_returns, load_benchmark
from qilin.reports.factor import factor_correlation, factor_tear_sheet, factor_values
from qilin.reports.strategy import drawdown_table, monthly_returns, strategy_tear_sheet

__all__ = ["benchmark_returns", "drawdown_table", "equal_weight_returns", "factor_correlation",
           "factor_tear_sheet", "factor_values", "load_benchmark", "monthly_returns",
           "strategy_tear_sheet"]
