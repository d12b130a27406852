"""Distributed analysis over a Dask cluster: per-symbol analysis, backtests, parameter search."""

from qilin.analysis.analyzer import (
    AnalysisFrame,
    DistributedStockAnalyzer,
    OptimizationResult,
    default_block_size,
)

__all__ = ["AnalysisFrame", "DistributedStockAnalyzer", "OptimizationResult",
           "default_block_size"]
