"""Market data: loading, validation, the Panel, the synthetic market and a Qlib reader."""

from qilin.data.panel import Panel

__all__ = ["Panel"]
