"""Factor evaluation (IC, Rank IC) over a streamed whole-market factor dataset.

IC and Rank IC are cross-sectional: one correlation per date across *every* symbol, so the
symbol-block partitions of :func:`qilin.factors.streaming.stream_factors` cannot be
evaluated one by one. What is small is one factor over the whole market (dates x symbols
float32, 150 MB at 7,500 x 5,000): the dataset is read a *group of factor columns* at a time
(Parquet column pushdown: every value is read once in all), each group sized from the
memory budget, placed into dates x symbols matrices, and evaluated with
:func:`qilin.factors.evaluation.information_coefficient` against forward returns built once
from the source's closes (read block by block, back-adjusted as the dataset was).

Examples
--------
>>> import os, tempfile
>>> from qilin.data.synthetic import synthetic_bars
>>> from qilin.data.loader import save_bars
>>> from qilin.factors.streaming import stream_factors
>>> d = tempfile.mkdtemp()
>>> src = save_bars(synthetic_bars(n_symbols=8, n_days=60, seed=1), os.path.join(d, "b.parquet"))
>>> _ = stream_factors(src, os.path.join(d, "out"), {"mom": "close / ts_delay(close, 5)"},
...                    block_symbols=3, workers=1, progress=False)
>>> ev = evaluate_dataset(os.path.join(d, "out"), horizons=(1,), progress=False)
>>> list(ev.summary.columns[:3])
['ic_mean_1', 'ic_ir_1', 'rank_ic_mean_1']
>>> ev.ic["mom"].shape
(60, 2)
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qilin.data.blocks import ParquetSource, read_block
from qilin.errors import DataError, ParameterError
from qilin.factors.evaluation import forward_returns, ic_statistics, information_coefficient
from qilin.factors.streaming import (
    PROCESS_BASE_BYTES,
    dataset_files,
    parse_memory,
    read_dataset_meta,
)

#: Float64 working arrays of one factor's evaluation (ranks, masks, products).
EVAL_WORK_ARRAYS = 8


@dataclass
class DatasetEvaluation:
    """IC and Rank IC of every factor of a dataset.

    Attributes
    ----------
    summary : DataFrame
        One row per factor: ``ic_mean_h, ic_ir_h, rank_ic_mean_h, rank_ic_ir_h`` per horizon.
    ic : dict of str to DataFrame
        Per factor, the per-date series (columns ``ic_h`` and ``rank_ic_h``).
    seconds : float
    groups : int
        Column groups the dataset was read in.
    """

    summary: pd.DataFrame
    ic: dict[str, pd.DataFrame]
    seconds: float
    groups: int


def _positions(files: list[Path], dates: pd.DatetimeIndex,
               symbols: pd.Index) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per partition file, each row's date and symbol position (read once: two columns)."""
    import pyarrow.parquet as pq

    out = []
    for f in files:
        t = pq.read_table(f, columns=["date", "symbol"])
        d = t.column("date").to_numpy().astype("datetime64[ns]").view(np.int64)
        s = t.column("symbol").combine_chunks().dictionary_encode()
        codes = s.indices.to_numpy(zero_copy_only=False)
        where = symbols.get_indexer(s.dictionary.to_pylist())
        out.append((np.searchsorted(dates.asi8, d).astype(np.int32),
                    where[codes].astype(np.int32)))
    return out


def _closes(meta: dict[str, Any], dates: pd.DatetimeIndex) -> tuple[np.ndarray, pd.Index]:
    """The market's (adjusted) closes, dates x symbols, read block by block from the source."""
    source = ParquetSource.open(meta["source"])
    parts, names = [], []
    for b in meta["blocks"]:
        p = read_block(source, b["first"], b["last"], dates, ["close"],
                       adjust=bool(meta.get("adjust")))
        parts.append(np.asarray(p["close"]))
        names.extend(map(str, p.symbols))
    return np.hstack(parts), pd.Index(names, name="symbol")


def evaluate_dataset(
    out_dir: str | os.PathLike[str],
    factors: Sequence[str] | None = None,
    horizons: Iterable[int] = (1, 5, 10),
    memory_limit: str | int | None = "4GiB",
    progress: bool = True,
) -> DatasetEvaluation:
    """IC and Rank IC per date of the factors of a streamed dataset, a column group at a time.

    Parameters
    ----------
    out_dir : path
        A dataset written by :func:`~qilin.factors.streaming.stream_factors` (its source
        must still be readable: forward returns come from its closes).
    factors : list of str, optional
        Factor columns to evaluate (default: all).
    horizons : iterable of int
        Forward-return horizons in trading days.
    memory_limit : str or int or None
        Budget; sizes the column groups (None: 16 factors per group).
    progress : bool
        A progress bar over factors, with an ETA.

    Raises
    ------
    DataError
        Not a dataset, an unfinished one, or an unknown factor.
    ParameterError
        A budget too small for one factor.
    """
    import pyarrow.parquet as pq

    start = time.perf_counter()
    out = Path(out_dir)
    meta = read_dataset_meta(out)
    dates = pd.DatetimeIndex(pd.to_datetime(meta["dates"])).as_unit("ns")
    names = [f[0] for f in meta["factors"]]
    wanted = list(names) if factors is None else list(factors)
    unknown = [f for f in wanted if f not in names]
    if unknown:
        raise DataError(f"{out}: no factor {unknown[0]!r} in the dataset; it has "
                        f"{names[:5]}{'...' if len(names) > 5 else ''}")
    files = dataset_files(out)
    hs = tuple(horizons)
    close, symbols = _closes(meta, dates)
    fwd = forward_returns(close, hs)
    del close
    T, N = len(dates), len(symbols)
    limit = parse_memory(memory_limit)
    per_factor = T * N * (np.dtype(meta["dtype"]).itemsize + 8 * EVAL_WORK_ARRAYS // 4)
    fixed = PROCESS_BASE_BYTES + T * N * 8 * (len(hs) + 1 + EVAL_WORK_ARRAYS)
    if limit is None:
        group = 16
    else:
        group = int((limit - fixed) // per_factor)
        if group < 1:
            raise ParameterError(f"memory limit {limit / 2**30:.2f} GiB cannot evaluate one "
                                 f"factor over {T} dates x {N} symbols (needs about "
                                 f"{(fixed + per_factor) / 2**30:.2f} GiB); raise it")
    pos = _positions(files, dates, symbols)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(wanted), desc="evaluating factors", unit="factor")
    rows: dict[str, dict[str, float]] = {}
    series: dict[str, pd.DataFrame] = {}
    n_groups = 0
    try:
        for g in range(0, len(wanted), group):
            cols = wanted[g:g + group]
            n_groups += 1
            mats = {c: np.full((T, N), np.nan, dtype=meta["dtype"]) for c in cols}
            for f, (r, c) in zip(files, pos, strict=True):
                table = pq.read_table(f, columns=cols)
                for name in cols:
                    mats[name][r, c] = table.column(name).to_numpy()
                del table
            for name in cols:
                x = mats.pop(name).astype(np.float64)
                row, per_date = {}, {}
                for h in hs:
                    for label, method in (("ic", "pearson"), ("rank_ic", "spearman")):
                        ic = np.asarray(information_coefficient(x, fwd[h], method))
                        st = ic_statistics(ic)
                        row[f"{label}_mean_{h}"], row[f"{label}_ir_{h}"] = st["mean"], st["ir"]
                        per_date[f"{label}_{h}"] = ic
                rows[name] = row
                series[name] = pd.DataFrame(per_date, index=dates)
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    order = [f"{lab}_{stat}_{h}" for h in hs for lab in ("ic", "rank_ic")
             for stat in ("mean", "ir")]
    summary = pd.DataFrame.from_dict(rows, orient="index")[order]
    summary.index.name = "factor"
    return DatasetEvaluation(summary, series, time.perf_counter() - start, n_groups)
