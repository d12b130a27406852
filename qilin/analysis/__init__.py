"""Distributed analysis over a Dask cluster: per-symbol analysis, backtests, parameter search."""
