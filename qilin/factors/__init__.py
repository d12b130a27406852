"""Factors: operators, indicators, the expression language, Alpha158, the distributed
calculator and factor evaluation (IC, Rank IC, quantiles).

Examples
--------
>>> from qilin import synthetic_market
>>> from qilin.factors import FactorCalculator, evaluate_factor
>>> panel = synthetic_market(n_symbols=10, n_days=60, seed=2)
>>> result = FactorCalculator({"mom5": "ts_pct_change(close, 5)"}, progress=False).compute(panel)
>>> result["mom5"].shape
(60, 10)
"""

from qilin.factors.alpha158 import alpha158_features
from qilin.factors.calculator import FactorCalculator, FactorResult
from qilin.factors.evaluation import FactorEvaluation, evaluate_factor, evaluate_factors
from qilin.factors.expr import evaluate, parse, parse_factor_set
from qilin.factors.registry import register_operator

__all__ = [
    "FactorCalculator",
    "FactorEvaluation",
    "FactorResult",
    "alpha158_features",
    "evaluate",
    "evaluate_factor",
    "evaluate_factors",
    "parse",
    "parse_factor_set",
    "register_operator",
]
