"""Small helpers for tests that read the real data files (importable as ``realdata``)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from qilin.data.panel import Panel

#: Running in CI (``CI=true``): tests shrink their data sizes, never their checks.
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def load_subset(path: Path, symbols: list[str], start: str | None = None,
                end: str | None = None) -> Panel:
    """A Panel of some symbols (and optionally an inclusive date range) of a real data file."""
    df = pd.read_parquet(path, filters=[("symbol", "in", list(symbols))])
    if start is not None:
        df = df[df["date"] >= pd.Timestamp(start)]
    if end is not None:
        df = df[df["date"] <= pd.Timestamp(end)]
    return Panel.from_long(df)
