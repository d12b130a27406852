"""Market data: loading, validation, the Panel, the synthetic market and Qlib folders.

The public API of the data layer; import every name from ``qilin.data`` (the submodules are
the implementation, and their layout may change):

Loading and saving
    :func:`load_panel` (bars -> validated :class:`Panel`), :func:`load_bars` (long bars:
    Parquet/CSV files, folders, globs or a Qlib folder), :func:`save_bars` (atomic),
    :func:`normalize_columns` and :data:`COLUMN_ALIASES` (column-name normalisation),
    :func:`parse_dates` (explicit date parsing, ambiguous day/month dates refused).
Validation
    :func:`validate_bars`, :class:`ValidationReport`, :data:`CHECKS` (every check with its
    severity), :data:`POLICIES`, :data:`BLOCKING` (what stops the default ``auto`` policy),
    :func:`mixed_forms` (one A-share code written two ways).
The Panel
    :class:`Panel`: dates x symbols arrays (NumPy or CuPy) with ``valid``/``suspended``/``st``.
Qlib
    :func:`read_qlib` (a Qlib folder as a Panel), :func:`read_qlib_bars` (as long bars),
    :func:`is_qlib_folder` (layout detection).
Synthetic market
    :func:`synthetic_market` (a Panel), :func:`synthetic_bars` (long bars).
A-share boards
    :func:`board_of`, :func:`limit_pct`, :func:`limit_pct_matrix`, :func:`limit_prices`,
    :func:`is_st_name`.

Examples
--------
>>> from qilin.data import synthetic_bars, validate_bars
>>> clean, report = validate_bars(synthetic_bars(n_symbols=5, n_days=20), market="cn")
>>> report.ok
True
"""

from qilin.data.boards import board_of, is_st_name, limit_pct, limit_pct_matrix, limit_prices
from qilin.data.dates import parse_dates
from qilin.data.loader import COLUMN_ALIASES, load_bars, load_panel, normalize_columns, save_bars
from qilin.data.panel import Panel
from qilin.data.qlib import is_qlib_folder, read_qlib, read_qlib_bars
from qilin.data.symbols import mixed_forms
from qilin.data.synthetic import synthetic_bars, synthetic_market
from qilin.data.validation import (
    BLOCKING,
    CHECKS,
    POLICIES,
    ValidationReport,
    validate_bars,
)

__all__ = [
    "BLOCKING",
    "CHECKS",
    "COLUMN_ALIASES",
    "POLICIES",
    "Panel",
    "ValidationReport",
    "board_of",
    "is_qlib_folder",
    "is_st_name",
    "limit_pct",
    "limit_pct_matrix",
    "limit_prices",
    "load_bars",
    "load_panel",
    "mixed_forms",
    "normalize_columns",
    "parse_dates",
    "read_qlib",
    "read_qlib_bars",
    "save_bars",
    "synthetic_bars",
    "synthetic_market",
    "validate_bars",
]
