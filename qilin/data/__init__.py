"""Market data: loading, validation, the Panel, the synthetic market and a Qlib reader.

Examples
--------
>>> from qilin.data import synthetic_bars, validate_bars
>>> clean, report = validate_bars(synthetic_bars(n_symbols=5, n_days=20), market="cn")
>>> report.ok
True
"""

from qilin.data.loader import load_bars, load_panel, normalize_columns, save_bars
from qilin.data.panel import Panel
from qilin.data.qlib import read_qlib
from qilin.data.synthetic import synthetic_bars, synthetic_market
from qilin.data.validation import CHECKS, ValidationReport, validate_bars

__all__ = [
    "CHECKS",
    "Panel",
    "ValidationReport",
    "load_bars",
    "load_panel",
    "normalize_columns",
    "read_qlib",
    "save_bars",
    "synthetic_bars",
    "synthetic_market",
    "validate_bars",
]
