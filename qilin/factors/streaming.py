"""A factor set over a whole market, streamed symbol block by symbol block to Parquet.

The market (long Parquet bars, far larger than memory) is cut into contiguous ranges of
sorted symbols sized from a memory budget. Each block is one *pure task* of
``(source, block, settings)``: read its bars (column and filter pushdown,
:func:`qilin.data.blocks.read_block`), back-adjust, compute with
:class:`~qilin.factors.calculator.FactorCalculator` in-process, and write its own partition
``part-NNNNN.parquet`` straight from the dates x symbols arrays (Arrow arrays over the same
memory; float32 stays float32; lz4 with byte-stream-split by default; written with
``O_DIRECT`` where allowed, :mod:`qilin.direct_io`). The same task runs
in a local process pool (both cores busy: while one process computes, the other reads or
writes), in-process with a read-ahead and write-behind thread, or on a Dask cluster where
each worker reads its own block from shared storage, so only task descriptions and small
summaries pass through the client.

Resume: a partition is written atomically (:mod:`qilin.atomic`), then a marker
``_qilin/blocks/part-NNNNN.json`` holding its key, built like the factor cache's
(:meth:`qilin.factors.cache.FactorCache.key` of the factor set, the data fingerprint of the
block's input arrays, the dtype and the settings). A rerun skips every block whose marker
matches (without reading it when the source files are unchanged by size and mtime), so a
crash at 90 % costs the unfinished blocks only.

Output layout (``out_dir``)::

    part-00000.parquet ...    columns date, symbol, <factors>; rows of existing bars,
                              sorted by symbol then date; one file per symbol block
    _qilin/dataset.json       factors, dtype, settings, the date axis and the block list
    _qilin/blocks/*.json      one marker per finished block (its key, files and sizes)

or, with ``partition_by="year"``, one file per block and calendar year in hive folders::

    year=2016/part-00000.parquet ...   the block's rows of that year (same columns)

``pandas.read_parquet(out_dir)``, ``dask.dataframe.read_parquet(out_dir)`` and
:func:`qilin.data.loader.load_bars` read it (``_``- and ``.``-prefixed names are not data);
pandas and dask add a ``year`` column from the folder names of the year layout and prune
folders by ``filters=[("year", ...)]``.

Examples
--------
>>> import os, tempfile
>>> from qilin.data.synthetic import synthetic_bars
>>> from qilin.data.loader import save_bars
>>> d = tempfile.mkdtemp()
>>> src = save_bars(synthetic_bars(n_symbols=8, n_days=40, seed=1), os.path.join(d, "b.parquet"))
>>> res = stream_factors(src, os.path.join(d, "out"), {"mom": "close / ts_delay(close, 5)"},
...                      block_symbols=3, workers=1, progress=False)
>>> res.blocks, res.computed, res.skipped
(3, 3, 0)
>>> import pandas as pd
>>> list(pd.read_parquet(os.path.join(d, "out")).columns)
['date', 'symbol', 'mom']
>>> stream_factors(src, os.path.join(d, "out"), {"mom": "close / ts_delay(close, 5)"},
...                block_symbols=3, workers=1, progress=False).skipped
3
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qilin.atomic import atomic_path, write_json_atomic
from qilin.backend import numba_threads
from qilin.data.blocks import ParquetSource, read_block, scan_axes
from qilin.data.panel import Panel
from qilin.direct_io import open_large_write
from qilin.errors import ClusterError, DataError, ExpressionError, ParameterError
from qilin.factors.cache import FactorCache, data_fingerprint, field_fingerprints

log = logging.getLogger(__name__)

#: Bump when the partition layout changes (it is part of every block key). 2: columns are
#: required (not nullable): factor values are NaN where undefined, never null.
LAYOUT_VERSION = "2"
CODECS = ("lz4", "zstd", "snappy", "none")
#: Output layouts: one file per symbol block, or per symbol block and calendar year.
PARTITIONS = ("block", "year")
META_DIR = "_qilin"
_PART = re.compile(r"^part-(\d{5,})\.parquet$")
_YEAR_DIR = re.compile(r"^year=(\d+)$")
#: Memory model of one block, in bytes per (date, symbol) cell (see block_symbols_for_budget).
LIVE_F64_INTERMEDIATES = 24
#: Resident memory of a worker process before its first block (interpreter, numpy, pandas,
#: pyarrow, numba and the compiled kernels), and of the parent while it waits.
PROCESS_BASE_BYTES = 450 * 2**20
#: Jobs smaller than this (feature-cells) run in-process unless ``workers`` is given: a
#: spawned process needs seconds to start and load the compiled kernels.
SMALL_JOB_CELLS = 300_000_000
#: Seconds a cluster run waits with no worker connected before it fails.
NO_WORKERS_S = 120.0


# ------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class StreamSettings:
    """What a block's values depend on besides its data (part of every block key).

    Attributes
    ----------
    factors : tuple of (name, expression)
    dtype : {"float32", "float64"}
    adjust : bool
        Back-adjust prices with ``adj_factor`` first.
    validate : str or None
        Validation policy applied per block, or None.
    codec : {"lz4", "zstd", "snappy", "none"}
        Parquet compression (not part of the key: it does not change values). lz4 by
        default: on the W6 whole-market job it took 51-55 s end to end against zstd level
        1's 58-63 s, for 1.12x the bytes (``benchmarks/RESULTS.md``).
    level : int or None
        Codec level (zstd: 1 by default).
    extra : tuple of (str, str)
        Further settings that change values (e.g. a window policy), part of the key.
    partition_by : {"block", "year"}
        ``block``: one file per block, ``part-NNNNN.parquet``; ``year``: one per block and
        calendar year, ``year=YYYY/part-NNNNN.parquet`` (hive layout). Part of the key (a
        block's files are its layout's), though not of its values.
    direct_io : bool
        Write partitions with ``O_DIRECT`` where the file system allows it
        (:func:`qilin.direct_io.open_large_write`); not part of the key (same bytes).
    """

    factors: tuple[tuple[str, str], ...]
    dtype: str = "float32"
    adjust: bool = False
    validate: str | None = None
    codec: str = "lz4"
    level: int | None = None
    extra: tuple[tuple[str, str], ...] = ()
    partition_by: str = "block"
    direct_io: bool = True

    def key_text(self) -> str:
        """Settings that change values or files, as text (the ``extra`` of the cache key).

        The default ``block`` layout adds nothing, so that datasets written before there
        was a choice keep their keys.
        """
        settings: dict[str, Any] = {"layout": LAYOUT_VERSION, "adjust": self.adjust,
                                    "validate": self.validate, "extra": list(self.extra)}
        if self.partition_by != "block":
            settings["partition"] = self.partition_by
        return json.dumps(settings, sort_keys=True)


@dataclass(frozen=True)
class BlockTask:
    """One symbol block: a pure function of these fields (a few hundred bytes).

    Attributes
    ----------
    source : ParquetSource
    out_dir : str
    index : int
        Partition number (``part-{index:05d}.parquet``).
    first, last : str
        First and last symbol of the block (inclusive range of sorted symbols).
    n_symbols : int
    settings : StreamSettings
    threads : int
        Numba threads of the task's kernels.
    """

    source: ParquetSource
    out_dir: str
    index: int
    first: str
    last: str
    n_symbols: int
    settings: StreamSettings
    threads: int = 1

    @property
    def part_name(self) -> str:
        return f"part-{self.index:05d}.parquet"

    @property
    def part_path(self) -> Path:
        return Path(self.out_dir) / self.part_name

    @property
    def marker_path(self) -> Path:
        return Path(self.out_dir) / META_DIR / "blocks" / f"part-{self.index:05d}.json"

    def year_file(self, year: int) -> str:
        """The block's file of ``year`` in the year layout, relative to ``out_dir``."""
        return f"year={year}/{self.part_name}"

    def params_key(self, dates_key: str) -> str:
        """Key of everything but the data: factor set, dtype, settings, block, date axis."""
        text = "\x1f".join((_factor_set_key(self.settings.factors), self.settings.dtype,
                            self.settings.key_text(), self.first, self.last,
                            str(self.n_symbols), dates_key))
        return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


@dataclass
class StreamResult:
    """Summary of a streamed run.

    Attributes
    ----------
    out_dir : Path
    blocks, computed, skipped : int
        Partitions in the dataset; computed now; kept from an earlier run.
    rows : int
        Rows (existing bars) in the dataset.
    cells : int
        ``dates x symbols x factors`` of the market (the feature-cells of the job).
    seconds : float
    block_symbols : int
    workers : int
    summaries : list of dict
        One small summary per block (index, rows, bytes, skipped; for a computed block the
        seconds of each phase, the worker's pid and the Unix times it started and finished).
    """

    out_dir: Path
    blocks: int
    computed: int
    skipped: int
    rows: int
    cells: int
    seconds: float
    block_symbols: int
    workers: int
    summaries: list[dict[str, Any]] = field(default_factory=list)

    @property
    def cells_per_second(self) -> float:
        """Feature-cells per second of wall time."""
        return self.cells / self.seconds if self.seconds > 0 else float("nan")


# ---------------------------------------------------------------------- the budget
def parse_memory(value: str | int | float | None) -> int | None:
    """Bytes of ``"8GiB"``, ``"512MB"``, ``"2e9"`` or a number (None passes through).

    Raises
    ------
    ParameterError
        For text that is not a size, or a size that is not positive.

    Examples
    --------
    >>> parse_memory("8GiB"), parse_memory("512MB"), parse_memory(None)
    (8589934592, 512000000, None)
    """
    if value is None:
        return None
    from dask.utils import parse_bytes

    try:
        n = int(parse_bytes(value)) if isinstance(value, str) else int(value)
    except (ValueError, TypeError):
        raise ParameterError(f"memory limit {value!r} is not a size; write e.g. 8GiB or "
                             "512MiB") from None
    if n <= 0:
        raise ParameterError(f"memory limit must be positive, got {value!r}")
    return n


def bytes_per_cell(n_fields: int, n_factors: int, itemsize: int) -> int:
    """Peak bytes one (date, symbol) cell of a block costs while it is read, computed, written.

    Read: the Arrow columns and the pivoted float64 arrays (and their adjusted copies);
    compute: the float64 inputs in the stage layout plus :data:`LIVE_F64_INTERMEDIATES`
    intermediates alive at once (measured about 20 for Alpha158) and the results; write: the
    results and a compacted copy of them where bars are missing.

    Examples
    --------
    >>> bytes_per_cell(6, 158, 4)
    1600
    """
    return 8 * n_fields * 3 + 8 * LIVE_F64_INTERMEDIATES + 2 * itemsize * n_factors


def block_symbols_for_budget(memory_limit: int, n_dates: int, n_fields: int, n_factors: int,
                             itemsize: int, workers: int, in_flight: int = 1) -> int:
    """Symbols per block so that ``workers`` processes fit in ``memory_limit`` bytes.

    Each worker process holds :data:`PROCESS_BASE_BYTES` plus ``in_flight`` blocks of
    :func:`bytes_per_cell` each; the parent holds one more base.

    Raises
    ------
    ParameterError
        When the budget cannot hold even one symbol per block.

    Examples
    --------
    >>> block_symbols_for_budget(8 * 2**30, 7500, 6, 158, 4, workers=2)
    298
    """
    per_worker = (memory_limit - PROCESS_BASE_BYTES) // max(1, workers)
    if workers > 1:  # spawned processes, each with its own interpreter and kernels
        per_worker -= PROCESS_BASE_BYTES
    per_symbol = n_dates * bytes_per_cell(n_fields, n_factors, itemsize) * in_flight
    n = int(per_worker // per_symbol) if per_worker > 0 else 0
    if n < 1:
        need = workers * (per_symbol + PROCESS_BASE_BYTES * (workers > 1)) + PROCESS_BASE_BYTES
        raise ParameterError(
            f"memory limit {memory_limit / 2**30:.2f} GiB cannot hold one symbol of "
            f"{n_dates} dates x {n_factors} factors on {workers} worker(s) (needs about "
            f"{need / 2**30:.2f} GiB); raise --memory-limit or use fewer workers")
    return n


# --------------------------------------------------------------------------- plan
def _factor_items(factors: Any) -> list[tuple[str, str]]:
    if isinstance(factors, str):
        if factors.lower() != "alpha158":
            raise ExpressionError(f"unknown factor set {factors!r}: pass 'alpha158', a dict "
                                  "or a list of (name, expression) pairs")
        from qilin.factors.alpha158 import alpha158_features

        return list(alpha158_features())
    items = list(factors.items()) if isinstance(factors, Mapping) else list(factors)
    if not items:
        raise ExpressionError("the factor set is empty")
    return [(str(n), str(e)) for n, e in items]


def _factor_set_key(factors: Iterable[tuple[str, str]]) -> str:
    from qilin.factors.expr import parse_factor_set

    roots = parse_factor_set(list(factors), None, ())
    text = "\x1f".join(f"{n}={node.key}" for n, node in roots.items())
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _check_time_series_only(roots: Mapping[str, Any]) -> None:
    from qilin.factors.calculator import DATES, plan_stages
    from qilin.factors.expr import Call

    if any(st.layout == DATES for st in plan_stages(list(roots.values()))):
        cs = [n for n, r in roots.items()
              if any(isinstance(x, Call) and x.kind == "cs" for x in r.walk())]
        raise ExpressionError(
            f"factors {cs[:5]} use cross-sectional operators; streaming by symbol blocks "
            "computes time-series factors only (compute those with FactorCalculator.compute "
            "on a Panel)")


def _dates_key(dates: pd.DatetimeIndex) -> str:
    return hashlib.blake2b(np.asarray(dates.asi8).tobytes(), digest_size=16).hexdigest()


@dataclass
class StreamPlan:
    """The blocks of a streamed run and what they share."""

    source: ParquetSource
    out_dir: Path
    settings: StreamSettings
    dates: pd.DatetimeIndex
    tasks: list[BlockTask]
    block_symbols: int
    workers: int
    fields: list[str]

    @property
    def cells(self) -> int:
        n_symbols = sum(t.n_symbols for t in self.tasks)
        return len(self.dates) * n_symbols * len(self.settings.factors)


def plan_stream(
    data: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    factors: Any = "alpha158",
    dtype: str = "float32",
    adjust: bool = False,
    validate: str | None = None,
    memory_limit: str | int | None = "4GiB",
    block_symbols: int | None = None,
    workers: int = 1,
    codec: str = "lz4",
    level: int | None = None,
    extra: Mapping[str, Any] | None = None,
    threads: int | None = None,
    min_blocks: int | None = None,
    partition_by: str = "block",
    direct_io: bool = True,
) -> StreamPlan:
    """Scan the source's axes, size the blocks and describe one task per block.

    Nothing is computed or written (see :func:`stream_factors`).

    Raises
    ------
    DataError, ExpressionError, ParameterError
        Unreadable source, a bad or cross-sectional factor, a bad setting or budget.
    """
    from qilin.factors.expr import parse_factor_set, variables_of

    if dtype not in ("float32", "float64"):
        raise ParameterError(f"dtype must be float32 or float64, got {dtype!r}")
    if codec not in CODECS:
        raise ParameterError(f"codec must be one of {', '.join(CODECS)}, got {codec!r}")
    if partition_by not in PARTITIONS:
        raise ParameterError(f"partition_by must be one of {', '.join(PARTITIONS)}, got "
                             f"{partition_by!r}")
    if validate not in (None, "auto", "raise", "drop", "repair"):
        raise ParameterError(f"validate must be auto, raise, drop, repair or None, got "
                             f"{validate!r}")
    if not isinstance(workers, int) or workers < 1:
        raise ParameterError(f"workers must be a positive integer, got {workers!r}")
    if block_symbols is not None and (not isinstance(block_symbols, int) or block_symbols < 1):
        raise ParameterError(f"block_symbols must be a positive integer, got {block_symbols!r}")
    items = _factor_items(factors)
    source = ParquetSource.open(data)
    roots = parse_factor_set(items, None, source.numeric_fields())
    _check_time_series_only(roots)
    fields = sorted(variables_of(roots.values()))
    dates, symbols = scan_axes(source)
    if not len(symbols):
        raise DataError(f"{source.files[0]}: no rows to compute")
    limit = parse_memory(memory_limit)
    itemsize = np.dtype(dtype).itemsize
    sized_here = block_symbols is None
    if block_symbols is None:
        if limit is None:
            block_symbols = 500
        else:
            block_symbols = block_symbols_for_budget(
                limit, len(dates), len(fields) + 1 + adjust, len(items), itemsize, workers,
                in_flight=2 if workers == 1 else 1)
        # at least two blocks per worker (four in-process), so that reading, computing and
        # writing overlap and the workers finish together
        blocks = min_blocks if min_blocks is not None else max(4, 2 * workers)
        block_symbols = min(block_symbols, -(-len(symbols) // max(1, blocks)))
    block_symbols = max(1, min(block_symbols, len(symbols)))
    settings = StreamSettings(tuple(items), dtype, adjust, validate, codec, level,
                              tuple(sorted((str(k), json.dumps(v, sort_keys=True, default=str))
                                           for k, v in (extra or {}).items())), partition_by,
                              bool(direct_io))
    n_threads = threads if threads is not None else (
        max(1, (os.cpu_count() or 1) // workers))
    slots = (min_blocks // 2 if min_blocks is not None else workers) if sized_here else 1
    tasks = []
    start = 0
    for i, size in enumerate(block_sizes(len(symbols), block_symbols, slots)):
        block = symbols[start:start + size]
        start += size
        tasks.append(BlockTask(source, os.fspath(out_dir), i, str(block[0]), str(block[-1]),
                               len(block), settings, n_threads))
    return StreamPlan(source, Path(out_dir), settings, dates, tasks, block_symbols, workers,
                      fields)


def block_sizes(n_symbols: int, block_symbols: int, slots: int = 1) -> list[int]:
    """Symbols per block, in order: blocks of ``block_symbols``, with a smaller tail.

    With ``slots`` > 1 blocks running at once, the symbols left once no more than
    ``slots`` full blocks remain are cut into ``2 * slots`` near-equal blocks, so that the
    workers finish within about half a small block of each other rather than one idling
    while another computes a whole last block (blocks are handed out in order).

    Examples
    --------
    >>> block_sizes(10, 4)
    [4, 4, 2]
    >>> block_sizes(5000, 290, slots=2)  # doctest: +ELLIPSIS
    [290, 290, ..., 290, 90, 90, 90, 90]
    >>> len(block_sizes(5000, 290, slots=2)), sum(block_sizes(5000, 290, slots=2))
    (20, 5000)
    """
    if slots <= 1:
        return [block_symbols] * (n_symbols // block_symbols) + \
            ([n_symbols % block_symbols] if n_symbols % block_symbols else [])
    sizes = []
    rest = n_symbols
    while rest > slots * block_symbols:
        sizes.append(block_symbols)
        rest -= block_symbols
    pieces = min(2 * slots, rest)
    return sizes + [rest // pieces + (j < rest % pieces) for j in range(pieces)]


def _write_dataset_meta(plan: StreamPlan) -> None:
    """``_qilin/dataset.json``: what the dataset holds; tasks read the date axis from it."""
    meta = {
        "format": "qilin-factor-dataset", "layout": LAYOUT_VERSION,
        "source": list(plan.source.files), "factors": [list(f) for f in plan.settings.factors],
        "dtype": plan.settings.dtype, "adjust": plan.settings.adjust,
        "validate": plan.settings.validate, "extra": dict(plan.settings.extra),
        "codec": plan.settings.codec, "partition_by": plan.settings.partition_by,
        "direct_io": plan.settings.direct_io,
        "block_symbols": plan.block_symbols,
        "fields": plan.fields,
        "dates": [str(d.date()) if d == d.normalize() else d.isoformat() for d in plan.dates],
        "blocks": [{"index": t.index, "file": t.part_name, "first": t.first, "last": t.last,
                    "n_symbols": t.n_symbols} for t in plan.tasks],
    }
    write_json_atomic(plan.out_dir / META_DIR / "dataset.json", meta)


def _year_dirs(out_dir: Path) -> list[Path]:
    """The ``year=YYYY`` folders of a dataset."""
    if not out_dir.exists():
        return []
    return sorted(p for p in out_dir.iterdir() if p.is_dir() and _YEAR_DIR.match(p.name))


def _remove_stale(plan: StreamPlan, keep: set[str] | None = None) -> int:
    """Delete the files of blocks that are not in this plan (another budget) or of the other
    layout, markers of blocks not in this plan, and the temporary files a killed run left
    (hidden ``.part-*.tmp`` names; one run per dataset at a time). Returns the files removed.

    ``keep`` overrides the partition names to keep (an empty set clears every partition).
    """
    out = plan.out_dir
    wanted = {t.part_name for t in plan.tasks} if keep is None else keep
    by_year = plan.settings.partition_by == "year"
    n = 0
    if not out.exists():
        return 0
    years = _year_dirs(out)
    for folder in (out, out / META_DIR / "blocks", *years):
        for p in folder.glob(".part-*.tmp"):
            p.unlink(missing_ok=True)
    for folder, layout_is_year in ((out, False), *((y, True) for y in years)):
        for p in list(folder.iterdir()):
            if _PART.match(p.name) and (p.name not in wanted or layout_is_year != by_year):
                p.unlink(missing_ok=True)
                n += 1
        if layout_is_year and not any(folder.iterdir()):
            folder.rmdir()
    for m in (out / META_DIR / "blocks").glob("part-*.json"):
        if m.name.replace(".json", ".parquet") not in wanted:
            m.unlink(missing_ok=True)
    return n


def read_dates(out_dir: str | os.PathLike[str]) -> pd.DatetimeIndex:
    """The date axis of a streamed dataset (from ``_qilin/dataset.json``).

    Raises
    ------
    DataError
        When ``out_dir`` has no dataset description.
    """
    meta = read_dataset_meta(out_dir)
    return pd.DatetimeIndex(pd.to_datetime(meta["dates"])).as_unit("ns")


def read_dataset_meta(out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """``_qilin/dataset.json`` of a streamed dataset.

    Raises
    ------
    DataError
        When ``out_dir`` has no (readable) dataset description.
    """
    path = Path(out_dir) / META_DIR / "dataset.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a qilin factor dataset ({exc}); run 'qilin factors "
                        "compute --out-dir' first") from exc


# ---------------------------------------------------------------------- one block
def _block_key(task: BlockTask, panel: Panel) -> str:
    prints = field_fingerprints(panel, panel.fields)
    fp = data_fingerprint(prints, panel.fields)
    return FactorCache.key(_factor_set_key(task.settings.factors), fp, task.settings.dtype,
                           task.settings.key_text())


def _marker(task: BlockTask) -> dict[str, Any] | None:
    try:
        return json.loads(task.marker_path.read_text())
    except (OSError, ValueError):
        return None


def _marker_files(part_name: str, marker: dict[str, Any]) -> dict[str, int]:
    """The files a block's marker lists, relative to ``out_dir``, with their sizes."""
    files = marker.get("files")
    if isinstance(files, dict):
        return files
    return {part_name: marker.get("bytes", -1)}  # a marker written before the year layout


def _files_present(out_dir: str | os.PathLike[str], files: dict[str, int]) -> bool:
    for rel, size in files.items():
        path = Path(out_dir) / rel
        if not path.exists() or path.stat().st_size != size:
            return False
    return True


def _finished(task: BlockTask, marker: dict[str, Any] | None) -> bool:
    return marker is not None and _files_present(task.out_dir,
                                                 _marker_files(task.part_name, marker))


def dataset_files(out_dir: str | os.PathLike[str]) -> list[Path]:
    """The data files of a finished streamed dataset, block by block, from its markers.

    Raises
    ------
    DataError
        Not a dataset, or a block whose marker or files are missing (an unfinished run).

    Examples
    --------
    >>> import os, tempfile
    >>> from qilin.data.synthetic import synthetic_bars
    >>> from qilin.data.loader import save_bars
    >>> d = tempfile.mkdtemp()
    >>> src = save_bars(synthetic_bars(n_symbols=4, n_days=300, seed=1),
    ...                 os.path.join(d, "b.parquet"))
    >>> _ = stream_factors(src, os.path.join(d, "out"), {"r": "close / ts_delay(close, 1)"},
    ...                    block_symbols=2, partition_by="year", progress=False)
    >>> [f"{p.parent.name}/{p.name}" for p in dataset_files(os.path.join(d, "out"))]
    ... # doctest: +NORMALIZE_WHITESPACE
    ['year=2016/part-00000.parquet', 'year=2017/part-00000.parquet',
     'year=2016/part-00001.parquet', 'year=2017/part-00001.parquet']
    """
    out = Path(out_dir)
    meta = read_dataset_meta(out)
    files: list[Path] = []
    missing = []
    for b in meta["blocks"]:
        part_name = f"part-{int(b['index']):05d}.parquet"
        try:
            marker = json.loads((out / META_DIR / "blocks" / part_name.replace(
                ".parquet", ".json")).read_text())
            block_files = _marker_files(part_name, marker)
        except (OSError, ValueError):
            block_files = {part_name: -1}
        if not _files_present(out, block_files):
            missing.append(part_name)
            continue
        files.extend(out / rel for rel in sorted(block_files))
    if missing:
        raise DataError(f"{out}: partition {missing[0]} is missing ({len(missing)} of "
                        f"{len(meta['blocks'])} blocks unfinished); finish the run first "
                        "(rerun the same compute command)")
    return files


def load_block(task: BlockTask, dates: pd.DatetimeIndex, fields: list[str]) -> Panel:
    """Read, (validate,) back-adjust one block's bars (the task's first phase)."""
    return read_block(task.source, task.first, task.last, dates, fields,
                      adjust=task.settings.adjust, validate=task.settings.validate)


def compute_block(task: BlockTask, panel: Panel) -> Any:
    """The factor values of one block (:class:`FactorResult`, dates x symbols arrays)."""
    from qilin.factors.calculator import FactorCalculator

    options = {k: json.loads(v) for k, v in task.settings.extra}
    calc = FactorCalculator(list(task.settings.factors), backend="cpu",
                            dtype=task.settings.dtype, progress=False,
                            kernel_threads=task.threads,
                            window_policy=options.get("window_policy", "ours"),
                            missing_fields=options.get("missing_fields") or None,
                            derive_vwap=bool(options.get("derive_vwap", False)))
    return calc.compute(panel)


def partition_table(result: Any, valid: np.ndarray) -> Any:
    """An Arrow table of one block's results: rows of existing bars, symbol then date.

    The symbol-major order is the arrays' own memory order (Fortran, one column per
    symbol), so a block with every bar present is written from views of the result arrays;
    otherwise each column is compacted once with the ``valid`` mask. Every column is
    required (not nullable): an undefined factor value is NaN, so Parquet stores no
    definition levels (a W6 block wrote in 1.43 s instead of 1.57 s with lz4).
    """
    import pyarrow as pa

    T, n = valid.shape
    vflat = np.asfortranarray(valid).ravel(order="K")
    full = bool(vflat.all())
    idx = None if full else np.flatnonzero(vflat)
    if full:
        t = np.tile(np.arange(T), n)
        c = np.repeat(np.arange(n, dtype=np.int32), T)
    else:
        c, t = np.divmod(idx, T)
        c = c.astype(np.int32)
    dates = pa.array(result.dates.values[t].astype("datetime64[ns]"), pa.timestamp("ns"))
    symbols = pa.DictionaryArray.from_arrays(
        pa.array(c, pa.int32()), pa.array(np.asarray(result.symbols, dtype=object).astype(str))
    ).cast(pa.string())
    cols = [dates, symbols]
    for name in result.names:
        arr = result.values[name]
        flat = arr.ravel(order="F")  # a view of a Fortran-ordered array
        cols.append(pa.array(flat if full else flat[vflat]))
    schema = pa.schema([pa.field("date", pa.timestamp("ns"), nullable=False),
                        pa.field("symbol", pa.string(), nullable=False),
                        *(pa.field(name, col.type, nullable=False)
                          for name, col in zip(result.names, cols[2:], strict=True))])
    return pa.Table.from_arrays(cols, schema=schema)


def write_partition(task: BlockTask, table: Any) -> dict[str, int]:
    """Write ``table`` to the task's files atomically; returns each file's size in bytes.

    The ``block`` layout writes ``part-NNNNN.parquet``; the ``year`` layout one
    ``year=YYYY/part-NNNNN.parquet`` per calendar year the block has rows in (each a
    filtered copy of that year's rows, one year at a time) and removes the block's files of
    years it no longer has. Keys are paths relative to ``out_dir``.
    """
    if task.settings.partition_by != "year":
        _write_parquet(task, table, task.part_path)
        return {task.part_name: task.part_path.stat().st_size}
    import pyarrow as pa
    import pyarrow.compute as pc

    out = Path(task.out_dir)
    year_of_row = pc.year(table.column("date")).to_numpy(zero_copy_only=False)
    years = np.unique(year_of_row)
    files: dict[str, int] = {}
    for year in years.tolist():
        rows = table if len(years) == 1 else table.filter(pa.array(year_of_row == year))
        rel = task.year_file(year)
        _write_parquet(task, rows, out / rel)
        files[rel] = (out / rel).stat().st_size
        del rows
    for old in out.glob(f"year=*/{task.part_name}"):
        if f"{old.parent.name}/{old.name}" not in files:
            old.unlink(missing_ok=True)
    return files


def _write_parquet(task: BlockTask, table: Any, path: Path) -> None:
    import pyarrow.parquet as pq

    s = task.settings
    level = s.level if s.level is not None else (1 if s.codec == "zstd" else None)
    floats = [n for n in table.column_names if n not in ("date", "symbol")]
    with atomic_path(path) as tmp, open_large_write(tmp, s.direct_io) as sink:
        pq.write_table(
            table, sink, compression=s.codec, compression_level=level,
            use_dictionary=["symbol"], write_statistics=["date", "symbol"],
            use_byte_stream_split=floats if s.codec != "none" else False,
            row_group_size=256 * 1024,
        )


def _finish_block(task: BlockTask, key: str, params_key: str, source_sig: str, rows: int,
                  files: dict[str, int], seconds: dict[str, float],
                  started: float) -> dict[str, Any]:
    nbytes = sum(files.values())
    times = {"started": started, "finished": time.time()}
    marker = {"key": key, "params_key": params_key, "source": source_sig, "rows": rows,
              "bytes": nbytes, "files": files, "first": task.first, "last": task.last,
              "n_symbols": task.n_symbols, "seconds": seconds, "pid": os.getpid(), **times}
    write_json_atomic(task.marker_path, marker)
    return {"index": task.index, "rows": rows, "bytes": nbytes, "skipped": False,
            "pid": os.getpid(), **seconds, **times}


class _BlockRun:
    """The phases of one task, so that a pipeline can overlap them across blocks."""

    def __init__(self, task: BlockTask, dates: pd.DatetimeIndex, fields: list[str]) -> None:
        self.task = task
        self.dates = dates
        self.fields = fields
        self.dates_key = _dates_key(dates)
        self.params_key = task.params_key(self.dates_key)
        self.source_sig = task.source.signature()
        self.seconds: dict[str, float] = {}
        self.started: float | None = None  # Unix time the task began (run_block) or its read

    def quick_skip(self) -> dict[str, Any] | None:
        """Skip without reading when the marker matches and the source files are unchanged."""
        m = _marker(self.task)
        if _finished(self.task, m) and m is not None and m.get("params_key") == \
                self.params_key and m.get("source") == self.source_sig:
            return {"index": self.task.index, "rows": m["rows"], "bytes": m["bytes"],
                    "skipped": True}
        return None

    def read(self) -> tuple[Panel, str] | dict[str, Any]:
        if self.started is None:
            self.started = time.time()
        t0 = time.perf_counter()
        panel = load_block(self.task, self.dates, self.fields)
        key = _block_key(self.task, panel)
        self.seconds["read"] = time.perf_counter() - t0
        m = _marker(self.task)
        if _finished(self.task, m) and m is not None and m.get("key") == key:
            # same data under a new file signature (touched, copied): keep the partition
            write_json_atomic(self.task.marker_path, {**m, "source": self.source_sig,
                                                      "params_key": self.params_key})
            return {"index": self.task.index, "rows": m["rows"], "bytes": m["bytes"],
                    "skipped": True}
        return panel, key

    def compute(self, panel: Panel) -> Any:
        t0 = time.perf_counter()
        with numba_threads(self.task.threads):
            result = compute_block(self.task, panel)
        self.seconds["compute"] = time.perf_counter() - t0
        return result

    def write(self, result: Any, valid: np.ndarray, key: str) -> dict[str, Any]:
        t0 = time.perf_counter()
        table = partition_table(result, valid)
        rows = table.num_rows
        files = write_partition(self.task, table)
        del table
        self.seconds["write"] = time.perf_counter() - t0
        return _finish_block(self.task, key, self.params_key, self.source_sig, rows, files,
                             self.seconds,
                             self.started if self.started is not None else time.time())


def run_block(task: BlockTask) -> dict[str, Any]:
    """Read, compute and write one block; a pure function of ``task`` (safe to rerun).

    The date axis and field list come from ``out_dir/_qilin/dataset.json`` (written by
    :func:`stream_factors` before any task runs), so the task itself stays small. Returns a
    small summary (index, rows, bytes, skipped, seconds per phase, and the Unix times the
    task started and finished).
    """
    started = time.time()
    meta = read_dataset_meta(task.out_dir)
    dates = read_dates(task.out_dir)
    run = _BlockRun(task, dates, list(meta["fields"]))
    run.started = started
    done = run.quick_skip()
    if done is not None:
        return done
    got = run.read()
    if isinstance(got, dict):
        return got
    panel, key = got
    result = run.compute(panel)
    valid = np.asarray(panel.valid)
    del panel
    return run.write(result, valid, key)


# ------------------------------------------------------------------------ executors
class _Progress:
    """Blocks done, feature-cells/s and an ETA, on a tqdm bar or as log lines."""

    def __init__(self, total: int, cells_per_block: list[int], enabled: bool,
                 stream: Any = None) -> None:
        self.total, self.done, self.cells = total, 0, 0
        self.cells_per_block = cells_per_block
        self.start = time.perf_counter()
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc="factor blocks", unit="block",
                            file=stream or sys.stderr, smoothing=0.1)

    def update(self, summary: dict[str, Any]) -> None:
        self.done += 1
        if not summary.get("skipped"):
            self.cells += self.cells_per_block[summary["index"]]
        rate = self.cells / max(time.perf_counter() - self.start, 1e-9)
        if self.bar is not None:
            self.bar.set_postfix_str(f"{rate / 1e6:.1f} M cells/s", refresh=False)
            self.bar.update(1)
        log.info("block %d done (%d/%d)%s", summary["index"], self.done, self.total,
                 " (kept)" if summary.get("skipped") else "")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _run_inprocess(runs: list[_BlockRun], on_done: Callable[[dict[str, Any]], None]) -> None:
    """Read-ahead and write-behind threads around the compute of the calling thread.

    pyarrow reads and writes release the GIL, so block i+1 is read and block i-1 written
    while block i computes.
    """
    todo = []
    for run in runs:
        done = run.quick_skip()
        if done is not None:
            on_done(done)
        else:
            todo.append(run)
    if not todo:
        return
    with ThreadPoolExecutor(1, thread_name_prefix="qilin-read") as reader, \
            ThreadPoolExecutor(1, thread_name_prefix="qilin-write") as writer:
        ahead: Future = reader.submit(todo[0].read)
        behind: Future | None = None
        for i, run in enumerate(todo):
            got = ahead.result()
            if i + 1 < len(todo):
                ahead = reader.submit(todo[i + 1].read)
            if isinstance(got, dict):
                on_done(got)
                continue
            panel, key = got
            result = run.compute(panel)
            valid = np.asarray(panel.valid)
            del panel, got
            if behind is not None:
                on_done(behind.result())
            behind = writer.submit(run.write, result, valid, key)
            del result
        if behind is not None:
            on_done(behind.result())


def _worker_init(threads: int) -> None:
    os.environ.setdefault("NUMBA_NUM_THREADS", str(max(1, threads)))


def _run_processes(tasks: list[BlockTask], workers: int,
                   on_done: Callable[[dict[str, Any]], None]) -> None:
    """One block per task in a pool of ``workers`` spawned processes."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init,
                             initargs=(tasks[0].threads,)) as pool:
        pending = {pool.submit(run_block, t) for t in tasks}
        try:
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    on_done(fut.result())
        except BaseException:  # a failed block stops the run: do not start the others
            for fut in pending:
                fut.cancel()
            raise


def _run_dask(tasks: list[BlockTask], client: Any,
              on_done: Callable[[dict[str, Any]], None]) -> None:
    """One future per block; a lost worker's blocks are rerun by the scheduler.

    Waiting has a bound: when no worker has been connected for :data:`NO_WORKERS_S`
    seconds, a :class:`~qilin.errors.ClusterError` says so (finished blocks are kept).
    """
    from distributed import wait

    futures = [client.submit(run_block, t, key=f"qilin-block-{t.index:05d}-"
                             f"{hashlib.blake2b(repr(t).encode(), digest_size=8).hexdigest()}",
                             pure=False, retries=2) for t in tasks]
    try:
        pending = set(futures)
        alone_since: float | None = None
        while pending:
            try:
                done = wait(list(pending), timeout=2.0, return_when="FIRST_COMPLETED").done
            except TimeoutError:
                done = set()
            for fut in done:
                on_done(fut.result())
            pending -= set(done)
            if done or client.scheduler_info().get("workers"):
                alone_since = None
            elif alone_since is None:
                alone_since = time.monotonic()
            elif time.monotonic() - alone_since > NO_WORKERS_S:
                raise ClusterError(
                    f"no worker connected to {client.scheduler.address} for {NO_WORKERS_S:.0f}"
                    f" s with {len(pending)} block(s) left; start workers and rerun (finished "
                    "blocks are kept)")
    except BaseException:
        client.cancel(futures)
        raise
    finally:
        for fut in futures:
            fut.release()


def stream_factors(
    data: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    factors: Any = "alpha158",
    dtype: str = "float32",
    adjust: bool = False,
    validate: str | None = None,
    memory_limit: str | int | None = "4GiB",
    block_symbols: int | None = None,
    workers: int | None = None,
    client: Any = None,
    codec: str = "lz4",
    level: int | None = None,
    extra: Mapping[str, Any] | None = None,
    resume: bool = True,
    progress: bool = True,
    progress_stream: Any = None,
    partition_by: str = "block",
    direct_io: bool = True,
) -> StreamResult:
    """Compute a time-series factor set over a Parquet market into a partitioned dataset.

    Parameters
    ----------
    data : path, glob or list
        Long Parquet bars (``date, symbol, open, high, low, close, volume`` ...).
    out_dir : path
        The output dataset folder (see the module docstring for its layout).
    factors : "alpha158", dict or list of (name, expression)
        Time-series factors (no ``cs_*`` operators: those need every symbol at once).
    dtype : {"float32", "float64"}
        Output dtype (computation is float64).
    adjust : bool
        Back-adjust prices with ``adj_factor`` (:meth:`Panel.adjusted`).
    validate : {"auto", "raise", "drop", "repair"} or None
        Validate each block's bars (through pandas; None skips it, the fastest).
    memory_limit : str or int or None
        Budget for the whole job (all worker processes), e.g. ``"8GiB"``; sizes the blocks
        (:func:`block_symbols_for_budget`). On a cluster it is the budget of one worker.
    block_symbols : int, optional
        Symbols per block (overrides the budget).
    workers : int, optional
        Local worker processes (default: the CPU count, or 1 for jobs under
        :data:`SMALL_JOB_CELLS` feature-cells; 1 runs in-process with read-ahead and
        write-behind threads). Ignored with ``client``.
    client : distributed.Client, optional
        Run one task per block on this cluster; every worker must read ``data`` and write
        ``out_dir`` at the same paths (shared storage).
    codec, level
        Parquet compression (lz4 by default; zstd for about 11 % smaller files, at level 1
        unless ``level`` says otherwise).
    extra : mapping, optional
        Settings that change values, stored in every block key and passed to the
        calculator: ``window_policy`` ("ours"/"qlib"), ``missing_fields`` ("raise"/"nan"),
        ``derive_vwap`` (bool).
    resume : bool
        Keep finished partitions whose key matches (default). False clears ``out_dir``'s
        partitions first.
    progress : bool
        Show blocks done, cells/s and an ETA.
    partition_by : {"block", "year"}
        ``block`` (default): one file per symbol block, ``part-NNNNN.parquet``; ``year``:
        one per block and calendar year, ``year=YYYY/part-NNNNN.parquet``, so that readers
        can select years by their folders (``filters=[("year", ">=", 2020)]``). Values and
        rows are the same in both; a rerun with the other layout recomputes every block.
    direct_io : bool
        Write partitions with ``O_DIRECT``, past the page cache, where the file system
        allows it (default; the same bytes, written about twice as fast where the cache's
        writeback is slow, see :mod:`qilin.direct_io`). False writes through the cache.

    Returns
    -------
    StreamResult

    Raises
    ------
    DataError, ExpressionError, ParameterError
        See :func:`plan_stream`.
    """
    start = time.perf_counter()
    min_blocks = None
    if client is not None:
        info = client.scheduler_info().get("workers", {})
        n_workers = max(1, len(info))
        local_workers = 1  # the budget is per worker; each runs one block per thread
        min_blocks = 2 * max(1, sum(int(w.get("nthreads", 1)) for w in info.values()))
    else:
        n_workers = local_workers = workers or (os.cpu_count() or 1)
    plan = plan_stream(data, out_dir, factors, dtype, adjust, validate, memory_limit,
                       block_symbols, local_workers, codec, level, extra,
                       threads=1 if client is not None else None, min_blocks=min_blocks,
                       partition_by=partition_by, direct_io=direct_io)
    if client is None and workers is None and local_workers > 1 and \
            plan.cells < SMALL_JOB_CELLS:
        # starting processes (each loads the compiled kernels) costs more than it saves
        n_workers = local_workers = 1
        plan = plan_stream(data, out_dir, factors, dtype, adjust, validate, memory_limit,
                           block_symbols, 1, codec, level, extra, partition_by=partition_by,
                           direct_io=direct_io)
    if not resume:
        _remove_stale(plan, keep=set())
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    _write_dataset_meta(plan)
    stale = _remove_stale(plan)
    if stale:
        log.info("removed %d partition file(s) of an earlier layout (block size or "
                 "partition_by)", stale)
    T = len(plan.dates)
    n_f = len(plan.settings.factors)
    bar = _Progress(len(plan.tasks), [T * t.n_symbols * n_f for t in plan.tasks], progress,
                    progress_stream)
    summaries: list[dict[str, Any]] = []

    def on_done(summary: dict[str, Any]) -> None:
        summaries.append(summary)
        bar.update(summary)

    try:
        if client is not None:
            _run_dask(plan.tasks, client, on_done)
        elif local_workers == 1 or len(plan.tasks) == 1:
            runs = [_BlockRun(t, plan.dates, plan.fields) for t in plan.tasks]
            _run_inprocess(runs, on_done)
        else:
            todo = []
            for t in plan.tasks:
                done = _BlockRun(t, plan.dates, plan.fields).quick_skip()
                if done is not None:
                    on_done(done)
                else:
                    todo.append(t)
            if todo:
                _run_processes(todo, min(local_workers, len(todo)), on_done)
    finally:
        bar.close()
    summaries.sort(key=lambda s: s["index"])
    seconds = time.perf_counter() - start
    skipped = sum(bool(s.get("skipped")) for s in summaries)
    result = StreamResult(plan.out_dir, len(plan.tasks), len(plan.tasks) - skipped, skipped,
                          sum(int(s["rows"]) for s in summaries), plan.cells, seconds,
                          plan.block_symbols, n_workers, summaries)
    write_json_atomic(plan.out_dir / META_DIR / "last_run.json",
                      {k: v for k, v in asdict(result).items() if k != "out_dir"})
    return result

