"""Typed exceptions raised by qilin.

Every error says what was wrong and where (file, column, symbol, date, key path or
expression position) so that a researcher can fix the input without reading the source.
"""

from __future__ import annotations


class QilinError(Exception):
    """Base class of every error qilin raises on purpose."""


class ConfigError(QilinError, ValueError):
    """A configuration key is unknown, missing or has the wrong type."""


class BackendError(QilinError, RuntimeError):
    """The requested array backend is not available (e.g. ``gpu`` without a GPU)."""


class ParameterError(QilinError, ValueError):
    """A function argument is out of range or of the wrong type (e.g. a window of 0)."""


class ClusterError(QilinError, RuntimeError):
    """A Dask cluster could not be started, reached or is inconsistent."""


class DataError(QilinError, ValueError):
    """Input market data is malformed (missing columns, bad dtypes, unreadable file)."""


class ValidationError(DataError):
    """Market data failed validation under the ``raise`` policy.

    Attributes
    ----------
    report : qilin.data.validation.ValidationReport or None
        The full report of findings.
    """

    def __init__(self, message: str, report: object | None = None) -> None:
        super().__init__(message)
        self.report = report


class ExpressionError(QilinError, ValueError):
    """A factor expression could not be parsed or checked.

    Attributes
    ----------
    expression : str
        The expression text.
    position : int
        Zero-based character offset of the problem in ``expression``.
    """

    def __init__(self, message: str, expression: str = "", position: int = 0) -> None:
        self.expression = expression
        self.position = position
        where = ""
        if expression:
            caret = " " * position + "^"
            where = f"\n  {expression}\n  {caret}"
        super().__init__(f"{message} (at position {position}){where}")


class BacktestError(QilinError, ValueError):
    """A backtest was given inconsistent inputs (shapes, parameters, market rules)."""


class MonitoringError(QilinError, RuntimeError):
    """A monitoring component was misconfigured or failed."""


class LeakageError(DataError):
    """A dataset would let future information reach training (overlapping segments, a purge
    gap shorter than the label horizon, or a feature that equals the future label)."""
