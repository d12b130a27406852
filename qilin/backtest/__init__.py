"""Vectorized backtests on Panels.

Signal and portfolio modes, costs, market rules, metrics and parameter sweeps.
"""
