"""Vectorized backtests on Panels: signal and portfolio modes, costs, market rules, metrics, sweeps."""
