"""Backtests and sweeps of a market read from Parquet, one symbol block per task.

A market too large for one process (or one that should not travel through a Dask client)
stays in its Parquet files; every task reads its own block of symbols itself
(:func:`qilin.data.blocks.read_block`: only the trading columns, row groups outside the
block's symbol range skipped by their statistics) onto the market's date axis, so a block's
arrays equal the same symbols' columns of the whole Panel bit for bit.

**Trading fields.** A backtest reads ``close``, ``volume``, ``preclose`` and ``adj_factor``
(those the source has) and the ``name`` column for the ST flags of the A-share price limits
(:data:`TRADING_FIELDS`); nothing else changes a backtest.

**Signal sweeps** (``ma_cross``, ``rsi``, ``bollinger``) are per symbol: a combination's
account is the sum of its per-symbol sub-accounts. Each task runs one parameter tile over
one symbol block with the sweep's own kernel (:func:`qilin.backtest.sweeps.signal_pnl`)
and returns the block's daily equity changes per combination; the blocks' changes are added
on the workers in block order, and only the metrics table of each tile comes back. The sum
runs in another order than the in-memory sweep's (per block, then across blocks), so
metrics agree with ``run_sweep(panel, ...)`` to rounding (about 1e-13 relative), trade
counts exactly; local and cluster runs over a path agree bit for bit.

**Portfolio sweeps** (``momentum_topk``) rank every symbol of a date, so they need the whole
cross-section: the market's trading arrays are read whole, by one task on a worker with a
client (never through the client), then every tile runs on them as with a Panel. The
results equal ``run_sweep(panel, ...)`` bit for bit; the worker needs memory for the whole
market's trading arrays: about 140 bytes per (date, symbol) while they are read and
prepared (4.9 GiB at 7,500 x 5,000), 70 kept, plus 8 per distinct lookback in a tile.

Examples
--------
>>> import os, tempfile
>>> from qilin.data.synthetic import synthetic_bars
>>> from qilin.data.loader import save_bars
>>> from qilin.backtest.sweeps import run_sweep
>>> path = save_bars(synthetic_bars(n_symbols=6, n_days=120, seed=3),
...                  os.path.join(tempfile.mkdtemp(), "bars.parquet"))
>>> res = run_sweep(path, "ma_cross", "fast=5,10 slow=20,40", backend="cpu",
...                 block_symbols=4)
>>> len(res.table), res.shape
(4, (120, 6))
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from qilin.backend import task_numba_threads
from qilin.backtest.strategies import MomentumTopK, StrategyTemplate
from qilin.config import MarketConfig
from qilin.data.blocks import ParquetSource, read_block, scan_axes, symbol_ranges
from qilin.data.panel import Panel
from qilin.errors import DataError

#: Panel fields a backtest reads (those the source has; ``close`` is required).
TRADING_FIELDS = ("close", "volume", "preclose", "adj_factor")
#: Peak bytes one (date, symbol) cell of a block costs while a sweep task reads and prepares
#: it: the Arrow columns, the fields and masks, the trading arrays of ``prepare_market`` with
#: their intermediates and the padded copies (measured 268 with tracemalloc).
SWEEP_BYTES_PER_CELL = 280

MarketData = ParquetSource | str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


def open_source(data: MarketData) -> ParquetSource:
    """``data`` as a :class:`~qilin.data.blocks.ParquetSource` (one passes through).

    Only the files' footers (their schemas) are read.

    Raises
    ------
    DataError
        Missing or non-Parquet files, or something that is not a path or a source.

    Examples
    --------
    >>> try:
    ...     open_source(3.5)
    ... except DataError as exc:
    ...     print(exc)
    expected a Panel, a Parquet path (file, folder or glob) or a ParquetSource, got float
    """
    if isinstance(data, ParquetSource):
        return data
    if not isinstance(data, str | os.PathLike | list | tuple):
        raise DataError("expected a Panel, a Parquet path (file, folder or glob) or a "
                        f"ParquetSource, got {type(data).__name__}")
    return ParquetSource.open(data)


def market_axes(source: ParquetSource, client: Any = None
                ) -> tuple[pd.DatetimeIndex, pd.Index]:
    """The market's sorted dates and symbols; scanned by a worker when ``client`` is given.

    Only the ``date`` and ``symbol`` columns are read (:func:`~qilin.data.blocks.scan_axes`);
    on a cluster the scan is one task and only the two axes come back.
    """
    if client is None:
        return scan_axes(source)
    from qilin.cluster_tasks import gather_within

    [axes] = gather_within(client, [client.submit(scan_axes, source, pure=False)],
                           what="market scan")
    return axes


def trading_fields(source: ParquetSource) -> list[str]:
    """The :data:`TRADING_FIELDS` the source has (``close`` first; its absence is an error
    when a block is read)."""
    return ["close", *[f for f in TRADING_FIELDS[1:] if f in source.columns]]


def read_trading_block(source: ParquetSource, first: str, last: str,
                       dates: pd.DatetimeIndex) -> Panel:
    """The trading fields and ST flags of symbols ``first..last`` on the date axis ``dates``.

    Equal to ``Panel.from_long(all bars).select(symbols=...)`` on these fields.
    """
    return read_block(source, first, last, dates, trading_fields(source), st=True)


def sweep_block_symbols(n_dates: int, memory_budget: int | None) -> int:
    """Symbols per block of a sweep over a path, from the memory budget of one task.

    Examples
    --------
    >>> sweep_block_symbols(7500, 256 * 2**20)
    127
    """
    from qilin.backtest.sweeps import DEFAULT_MEMORY_BUDGET

    budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else int(memory_budget)
    return max(1, budget // (max(1, n_dates) * SWEEP_BYTES_PER_CELL))


# --------------------------------------------------------------------------- tasks
def block_market(source: ParquetSource, first: str, last: str, dates: pd.DatetimeIndex,
                 market: MarketConfig) -> Any:
    """One block's sweep arrays (:func:`~qilin.backtest.sweeps.prepare_market`)."""
    from qilin.backtest.sweeps import prepare_market

    return prepare_market(read_trading_block(source, first, last, dates), market)


def block_equity(m: Any, template: StrategyTemplate, combos: list[dict[str, Any]],
                 backend: str, memory_budget: int | None, lag: int, init_cash: float
                 ) -> tuple[np.ndarray, np.ndarray, frozenset[str]]:
    """Daily equity changes ``(combinations, dates)`` and counters of one tile on one block
    (``m`` from :func:`block_market`), and the backend the kernel ran on."""
    from qilin.backtest.sweeps import signal_pnl

    with task_numba_threads():
        pnl, counters, used = signal_pnl(m, template, combos, backend, memory_budget, lag,
                                         init_cash)
    return pnl, counters, frozenset([used])


def add_block_equity(a: tuple[np.ndarray, np.ndarray, frozenset[str]],
                     b: tuple[np.ndarray, np.ndarray, frozenset[str]]
                     ) -> tuple[np.ndarray, np.ndarray, frozenset[str]]:
    """Two blocks' equity changes and counters together (the fold over blocks)."""
    return a[0] + b[0], a[1] + b[1], a[2] | b[2]


def tile_table(part: tuple[np.ndarray, np.ndarray, frozenset[str]],
               combos: list[dict[str, Any]], n_symbols: int, n_dates: int,
               periods_per_year: float, init_cash: float) -> pd.DataFrame:
    """The metrics table of a tile from its equity changes summed over every block."""
    from qilin.backtest.sweep_kernels_cpu import pnl_returns
    from qilin.backtest.sweeps import _metrics_table

    pnl, counters, used = part
    returns = pnl_returns(pnl, n_symbols * float(init_cash))
    table = _metrics_table(combos, np.ascontiguousarray(returns), counters,
                           n_symbols * n_dates, periods_per_year)
    table["backend"] = ",".join(sorted(used))
    return table


def whole_market(source: ParquetSource, dates: pd.DatetimeIndex, first: str, last: str,
                 market: MarketConfig) -> Any:
    """The whole market's sweep arrays with the portfolio inputs (for ``momentum_topk``)."""
    from qilin.backtest.sweeps import prepare_market

    return prepare_market(read_trading_block(source, first, last, dates), market,
                          portfolio=True)


# --------------------------------------------------------------------------- entry
def sweep_source(
    data: MarketData,
    template: Any,
    combos: list[dict[str, Any]],
    market: MarketConfig,
    backend: str = "auto",
    client: Any = None,
    tile_size: int | None = None,
    memory_budget: int | None = None,
    lag: int = 0,
    init_cash: float = 1e6,
    progress: bool = False,
    block_symbols: int | None = None,
) -> Any:
    """:func:`~qilin.backtest.sweeps.run_sweep` over a Parquet market (see module docstring).

    ``combos`` are the checked combinations of ``template``; ``block_symbols`` the symbols
    per block (default :func:`sweep_block_symbols`). Called by ``run_sweep`` when it is given
    a path or a :class:`~qilin.data.blocks.ParquetSource` instead of a Panel.

    Raises
    ------
    DataError
        An unreadable source or one without the trading columns.
    ClusterError
        As ``run_sweep`` with a client.
    """
    from qilin.backtest.sweeps import (
        DEFAULT_MEMORY_BUDGET,
        SweepResult,
        _tiles,
        cluster_tile_size,
        run_tile,
    )

    t0 = time.perf_counter()
    source = open_source(data)
    dates, symbols = market_axes(source, client)
    if not len(dates) or not len(symbols):
        raise DataError(f"{source.files[0]}: no bars to backtest")
    T, N = len(dates), len(symbols)
    topk = isinstance(template, MomentumTopK)
    budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else memory_budget
    size = tile_size or max(1, min(len(combos), int(budget // 4 // (8 * T + 1))))
    if client is not None and not tile_size:
        size = min(size, cluster_tile_size(len(combos), (T, N), client))
    tiles = _tiles(combos, size)
    ranges = symbol_ranges(symbols, block_symbols or sweep_block_symbols(T, memory_budget))
    what = f"sweep {template.name}"
    if client is None:
        if topk:
            m = whole_market(source, dates, symbols[0], symbols[-1], market)
            parts = [run_tile(m, template, t, backend, memory_budget, lag, init_cash)
                     for t in _progress(tiles, progress, what)]
        else:
            sums: list[Any] = [None] * len(tiles)
            for first, last in _progress(ranges, progress, what, "block"):
                m = block_market(source, first, last, dates, market)
                for i, tile in enumerate(tiles):
                    part = block_equity(m, template, tile, backend, memory_budget, lag,
                                        init_cash)
                    sums[i] = part if sums[i] is None else add_block_equity(sums[i], part)
                del m
            parts = [tile_table(s, t, N, T, market.periods_per_year, init_cash)
                     for s, t in zip(sums, tiles, strict=True)]
    else:
        from qilin.cluster_tasks import gather_within, hold

        dates_f = hold(client, dates)  # the date axis travels once
        if topk:
            m_f = client.submit(whole_market, source, dates_f, symbols[0], symbols[-1],
                                market, pure=False)
            futures = [client.submit(run_tile, m_f, template, t, backend, memory_budget, lag,
                                     init_cash, pure=False) for t in tiles]
        else:
            sums = [None] * len(tiles)
            for first, last in ranges:
                m_f = client.submit(block_market, source, first, last, dates_f, market,
                                    pure=False)
                for i, tile in enumerate(tiles):
                    part = client.submit(block_equity, m_f, template, tile, backend,
                                         memory_budget, lag, init_cash, pure=False)
                    sums[i] = part if sums[i] is None else client.submit(
                        add_block_equity, sums[i], part, pure=False)
            futures = [client.submit(tile_table, s, t, N, T, market.periods_per_year,
                                     init_cash, pure=False)
                       for s, t in zip(sums, tiles, strict=True)]
        parts = gather_within(client, futures, what=what, progress=what if progress else None)
    table = pd.concat(parts, ignore_index=True)
    used = ",".join(sorted({b for cell in table.pop("backend") for b in cell.split(",")}))
    return SweepResult(table, template.name, template.param_names, used,
                       time.perf_counter() - t0, (T, N))


def _progress(items: list[Any], enabled: bool, desc: str, unit: str = "tile") -> Any:
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit=unit)
