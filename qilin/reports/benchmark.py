"""Benchmark return series for tear sheets: an index file or the equal-weight market.

Examples
--------
>>> import numpy as np, pandas as pd
>>> from qilin.data.panel import Panel
>>> p = Panel.from_arrays({"close": np.array([[10.0, 20.0], [11.0, 19.0], [11.0, np.nan]])},
...                       pd.date_range("2024-01-01", periods=3), ["A", "B"])
>>> equal_weight_returns(p).round(4).tolist()
[0.0, 0.025, 0.0]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qilin.errors import DataError


def equal_weight_returns(panel: Any) -> pd.Series:
    """Daily mean close-to-close return of the names with a return that day (0 when none)."""
    r = np.asarray(panel.returns())
    ok = np.isfinite(r)
    n = ok.sum(axis=1)
    total = np.where(ok, r, 0.0).sum(axis=1)
    return pd.Series(np.where(n > 0, total / np.maximum(n, 1), 0.0), index=panel.dates,
                     name="equal-weight market")


def load_benchmark(path: str | Path, dates: pd.DatetimeIndex | None = None) -> pd.Series:
    """Daily close-to-close returns of a one-symbol bars file (``date, close``), e.g. the SSE
    Composite; reindexed to ``dates`` when given (a missing day counts as flat).

    Raises
    ------
    DataError
        Missing file, no ``date``/``close`` column, or several symbols.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"benchmark file {p} does not exist")
    try:
        df = pd.read_csv(p) if p.suffix.lower() == ".csv" else pd.read_parquet(p)
    except Exception as exc:
        raise DataError(f"benchmark file {p}: cannot read it: {exc}") from exc
    missing = {"date", "close"} - set(df.columns)
    if missing:
        raise DataError(f"benchmark file {p} has no {sorted(missing)} column(s); columns: "
                        f"{list(df.columns)}")
    if "symbol" in df.columns and df["symbol"].nunique() > 1:
        raise DataError(f"benchmark file {p} holds {df['symbol'].nunique()} symbols; give a "
                        "one-symbol index file")
    close = df.assign(date=pd.to_datetime(df["date"])).set_index("date")["close"].sort_index()
    name = str(df["symbol"].iloc[0]) if "symbol" in df.columns and len(df) else p.stem
    ret = close.pct_change()
    if dates is not None:
        ret = close.reindex(close.index.union(dates)).ffill().pct_change().reindex(dates)
    return ret.fillna(0.0).rename(name)


def benchmark_returns(path: str | Path | None, panel: Any) -> pd.Series:
    """The index file's returns on ``panel``'s dates, or the panel's equal-weight market."""
    return load_benchmark(path, panel.dates) if path else equal_weight_returns(panel)
