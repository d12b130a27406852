"""Reading one symbol block of a long Parquet source, with column and filter pushdown.

A whole market over a long history does not fit in memory; time-series work only needs each
symbol's full history, so it can run one *symbol block* at a time. A :class:`ParquetSource`
names the files (one file, a folder or a glob, as :func:`qilin.data.loader.resolve_paths`)
and the normalised column names (:func:`qilin.data.loader.normalize_columns`);
:func:`scan_axes` reads only the ``date`` and ``symbol`` columns, batch by batch, to find
the market's trading dates and symbols; :func:`read_block` reads the bars of one contiguous
range of sorted symbols with ``pyarrow.dataset``: only the columns asked for, and a
``first <= symbol <= last`` filter that skips whole row groups by their statistics when the
file is sorted by symbol (the usual layout), and filters rows otherwise. The bars are placed
straight into dates x symbols arrays (no pandas long table) on the market's date axis, so a
block computes exactly as the same symbols would inside the whole Panel.

Examples
--------
>>> import os, shutil, tempfile
>>> from qilin.data.synthetic import synthetic_bars
>>> from qilin.data.loader import save_bars
>>> folder = tempfile.mkdtemp()
>>> path = save_bars(synthetic_bars(n_symbols=6, n_days=20, seed=1),
...                  os.path.join(folder, "bars.parquet"))
>>> src = ParquetSource.open(path)
>>> dates, symbols = scan_axes(src)
>>> len(dates), len(symbols)
(20, 6)
>>> block = read_block(src, symbols[0], symbols[2], dates, fields=["close", "volume"])
>>> block.shape, sorted(block.fields)
((20, 3), ['close', 'volume'])
>>> shutil.rmtree(folder)
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qilin.backend import get_backend
from qilin.data.panel import Panel
from qilin.errors import DataError

#: Fields added from others when absent: ``vwap = amount / volume`` (as ``Panel.from_long``).
DERIVED = {"vwap": ("amount", "volume")}


@dataclass(frozen=True)
class ParquetSource:
    """Long daily bars in one or more Parquet files, with their column renames.

    Small and picklable: a task description on a cluster carries it, and every worker opens
    the files itself (they must be on storage every worker can read).

    Attributes
    ----------
    files : tuple of str
        The Parquet files, in sorted order.
    renames : tuple of (str, str)
        ``(original, qilin name)`` column renames shared by every file.
    columns : tuple of str
        Column names after renaming.
    """

    files: tuple[str, ...]
    renames: tuple[tuple[str, str], ...]
    columns: tuple[str, ...]

    @classmethod
    def open(cls, path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
             ) -> ParquetSource:
        """The source named by ``path`` (file, folder or glob of Parquet files).

        Raises
        ------
        DataError
            Missing files, a CSV file, files whose columns differ, or no ``date``/``symbol``.
        """
        import pyarrow.parquet as pq

        from qilin.data.loader import normalize_columns, resolve_paths

        files = resolve_paths(path)
        first_cols: list[str] | None = None
        for f in files:
            if not f.name.lower().endswith((".parquet", ".pq")):
                raise DataError(f"{f}: streaming reads Parquet only; convert CSV with "
                                "'qilin data' or pandas first")
            try:
                cols = list(pq.read_schema(f).names)
            except Exception as exc:  # pyarrow.ArrowInvalid and friends
                raise DataError(f"{f}: cannot read the Parquet schema: {exc}") from exc
            if first_cols is None:
                first_cols = cols
            elif cols != first_cols:
                raise DataError(f"{f}: columns {cols} differ from {files[0]}'s {first_cols}; "
                                "stream files with the same columns")
        assert first_cols is not None
        ren = normalize_columns(first_cols, source=str(files[0]))
        columns = tuple(ren.get(c, c) for c in first_cols)
        for need in ("date", "symbol"):
            if need not in columns:
                raise DataError(f"{files[0]}: no {need!r} column; columns: {list(columns)}")
        return cls(tuple(str(f) for f in files), tuple(ren.items()), columns)

    def original(self, name: str) -> str:
        """The file's own name of the normalised column ``name``."""
        for orig, new in self.renames:
            if new == name:
                return orig
        return name

    def signature(self) -> str:
        """Hash of each file's path, size and modification time (cheap change detection)."""
        h = hashlib.blake2b(digest_size=16)
        for f in self.files:
            st = os.stat(f)
            h.update(f"{os.path.abspath(f)}\x1f{st.st_size}\x1f{st.st_mtime_ns}\x1e".encode())
        return h.hexdigest()

    def dataset(self) -> Any:
        """The files as one ``pyarrow.dataset.Dataset``."""
        import pyarrow.dataset as ds

        try:
            return ds.dataset(list(self.files), format="parquet")
        except Exception as exc:
            raise DataError(f"{self.files[0]}: cannot open as Parquet: {exc}") from exc

    def numeric_fields(self) -> list[str]:
        """Numeric columns (candidate Panel fields) plus derivable ones (``vwap``)."""
        import pyarrow.types as pat

        schema = self.dataset().schema
        out = [new for orig, new in zip(schema.names, self.columns, strict=True)
               if new not in ("date", "symbol")
               and (pat.is_floating(schema.field(orig).type)
                    or pat.is_integer(schema.field(orig).type))]
        for name, parts in DERIVED.items():
            if name not in out and all(p in out for p in parts):
                out.append(name)
        return out


def scan_axes(source: ParquetSource, batch_rows: int = 1 << 20
              ) -> tuple[pd.DatetimeIndex, pd.Index]:
    """The sorted distinct dates and symbols of ``source``, reading two columns in batches.

    Examples
    --------
    >>> import pyarrow as pa, pyarrow.parquet as pq, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "x.parquet")
    >>> pq.write_table(pa.table({"date": pd.to_datetime(["2024-01-03", "2024-01-02"]),
    ...                          "symbol": ["B", "A"], "close": [1.0, 2.0]}), p)
    >>> d, s = scan_axes(ParquetSource.open(p))
    >>> [str(x.date()) for x in d], list(s)
    (['2024-01-02', '2024-01-03'], ['A', 'B'])
    """
    import pyarrow.compute as pc

    dset = source.dataset()
    dcol, scol = source.original("date"), source.original("symbol")
    dates: list[Any] = []
    symbols: set[str] = set()
    try:
        for batch in dset.to_batches(columns=[dcol, scol], batch_size=batch_rows):
            dates.append(pc.unique(batch.column(0)))
            symbols.update(pc.unique(batch.column(1)).to_pylist())
    except Exception as exc:
        raise DataError(f"{source.files[0]}: cannot read date/symbol: {exc}") from exc
    symbols.discard(None)  # type: ignore[arg-type]
    values = [_date_values(a, source) for a in dates]
    all_ns = np.unique(np.concatenate(values)) if values else np.empty(0, dtype=np.int64)
    all_ns = all_ns[all_ns != np.iinfo(np.int64).min]  # NaT
    return (pd.DatetimeIndex(all_ns.astype("datetime64[ns]")),
            pd.Index(sorted(map(str, symbols)), name="symbol"))


def _date_values(array: Any, source: ParquetSource) -> np.ndarray:
    """int64 nanoseconds of an Arrow date/timestamp/string column (NaT as int64 min)."""
    import pyarrow as pa
    import pyarrow.types as pat

    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    typ = array.type
    if pat.is_timestamp(typ) and typ.tz is not None:
        raise DataError(f"{source.files[0]}: column 'date' is timezone-aware ({typ.tz}); "
                        "store dates as naive midnight timestamps")
    if pat.is_timestamp(typ) or pat.is_date(typ):
        ns = array.cast(pa.timestamp("ns"))
        return ns.fill_null(pa.scalar(np.iinfo(np.int64).min, pa.int64()).cast(
            pa.timestamp("ns"))).to_numpy(zero_copy_only=False).view(np.int64)
    try:
        parsed = pd.to_datetime(pd.Series(array.to_pylist(), dtype=object).astype(str),
                                errors="raise", format="mixed")
    except (ValueError, TypeError) as exc:
        raise DataError(f"{source.files[0]}: column 'date' has values that are not dates "
                        f"({exc}); convert them first") from exc
    return parsed.to_numpy(dtype="datetime64[ns]").view(np.int64)


def fields_to_read(source: ParquetSource, wanted: Iterable[str], adjust: bool) -> list[str]:
    """Source columns needed for the Panel fields ``wanted`` (+ ``close``, ``adj_factor``).

    Raises
    ------
    DataError
        When a field is neither a column nor derivable, or ``adjust`` without ``adj_factor``.
    """
    need: list[str] = []

    def add(name: str) -> None:
        if name not in need:
            need.append(name)

    for name in ["close", *wanted]:
        if name in source.columns:
            add(name)
        elif name in DERIVED and all(p in source.columns for p in DERIVED[name]):
            for p in DERIVED[name]:
                add(p)
        else:
            raise DataError(f"{source.files[0]}: no column {name!r} (needed by the factors); "
                            f"columns: {list(source.columns)}")
    if adjust:
        if "adj_factor" not in source.columns:
            raise DataError(f"{source.files[0]}: adjust needs an 'adj_factor' column; "
                            "drop --adjust or add the column")
        add("adj_factor")
    return need


def read_block(
    source: ParquetSource,
    first: str,
    last: str,
    dates: pd.DatetimeIndex,
    fields: Iterable[str],
    adjust: bool = False,
    validate: str | None = None,
    st: bool = False,
) -> Panel:
    """The bars of the symbols ``first <= symbol <= last`` as a Panel on the axis ``dates``.

    Parameters
    ----------
    source : ParquetSource
    first, last : str
        The block's first and last symbol (inclusive; blocks are ranges of sorted symbols).
    dates : DatetimeIndex
        The market's dates (from :func:`scan_axes`): rows of the block's arrays.
    fields : iterable of str
        Panel fields wanted (``vwap`` is derived from ``amount / volume`` when absent).
    adjust : bool
        Back-adjust prices with ``adj_factor`` (:meth:`Panel.adjusted`).
    validate : {"auto", "raise", "drop", "repair"} or None
        Validate the block's bars with :func:`qilin.data.validation.validate_bars` (this goes
        through a pandas DataFrame of the block's input; None skips it).
    st : bool
        Set ``Panel.st`` from the ``name`` column (``ST``/``*ST`` names) as
        :meth:`Panel.from_long` does, when the source has one (the A-share price limits of
        the backtests read it).

    Raises
    ------
    DataError
        A missing column, an unreadable file, a repeated ``(date, symbol)`` pair or a date
        outside ``dates``.
    """
    wanted = list(dict.fromkeys(fields))
    cols = fields_to_read(source, wanted, adjust)
    if validate is not None:  # the checks need the OHLCV columns even if no factor reads them
        from qilin.data.validation import REQUIRED_COLUMNS

        cols += [c for c in REQUIRED_COLUMNS
                 if c in source.columns and c not in cols and c not in ("date", "symbol")]
    with_name = st and "name" in source.columns
    names = [source.original(c) for c in ("date", "symbol", *cols)]
    if with_name:
        names.append(source.original("name"))
    where = f"{source.files[0]} (symbols {first}..{last})"
    table = _read_rows(source, names, _symbol_range(source, first, last), where)
    if validate is not None:
        return _validated_block(table, source, cols, wanted, dates, adjust, validate, where,
                                with_name)
    date_ns = _date_values(table.column(0), source)
    sym = table.column(1).combine_chunks().dictionary_encode()
    codes = sym.indices.to_numpy(zero_copy_only=False)
    symbols = np.asarray(sym.dictionary.to_pylist(), dtype=object).astype(str)
    values = {c: table.column(i + 2).to_numpy() for i, c in enumerate(cols)}
    flags = _st_flags(table.column(len(cols) + 2)) if with_name else None
    del table
    return _block_panel(date_ns, symbols, codes, values, dates, wanted, adjust, where, flags)


def _symbol_range(source: ParquetSource, first: str, last: str) -> Any:
    """The ``first <= symbol <= last`` filter (row groups are skipped by their statistics)."""
    import pyarrow.dataset as ds

    scol = ds.field(source.original("symbol"))
    return (scol >= first) & (scol <= last)


def _read_rows(source: ParquetSource, names: list[str], flt: Any, where: str) -> Any:
    try:
        return source.dataset().to_table(columns=names, filter=flt)
    except Exception as exc:
        raise DataError(f"{where}: cannot read the block: {exc}") from exc


def _st_flags(names: Any) -> np.ndarray:
    """Per row: is the ``name`` an ST/*ST name (each distinct name classified once)."""
    from qilin.data.boards import is_st_name

    enc = names.combine_chunks().dictionary_encode()
    flags = np.array([is_st_name(u) for u in enc.dictionary.to_pylist()] + [False], dtype=bool)
    codes = enc.indices.fill_null(-1).to_numpy(zero_copy_only=False)
    return flags[codes]


def _validated_block(table: Any, source: ParquetSource, cols: list[str], wanted: list[str],
                     dates: pd.DatetimeIndex, adjust: bool, policy: str, where: str,
                     with_name: bool = False) -> Panel:
    from qilin.data.boards import is_st_name
    from qilin.data.validation import validate_bars

    df = table.rename_columns(["date", "symbol", *cols, *(["name"] if with_name else [])]
                              ).to_pandas()
    df, _ = validate_bars(df, policy=policy, source=where)  # type: ignore[arg-type]
    codes, uniques = pd.factorize(df["symbol"].astype(str))
    values = {c: df[c].to_numpy(dtype=np.float64, na_value=np.nan) for c in cols}
    date_ns = pd.to_datetime(df["date"]).to_numpy(dtype="datetime64[ns]").view(np.int64)
    flags = None
    if with_name:
        name_codes, names = pd.factorize(df["name"])
        flags = np.array([is_st_name(u) for u in names] + [False], dtype=bool)[name_codes]
    return _block_panel(date_ns, np.asarray(uniques, dtype=str), codes, values, dates,
                        wanted, adjust, where, flags)


def _block_panel(date_ns: np.ndarray, symbols: np.ndarray, codes: np.ndarray,
                 values: dict[str, np.ndarray], dates: pd.DatetimeIndex, wanted: list[str],
                 adjust: bool, where: str, st_flags: np.ndarray | None = None) -> Panel:
    """Place long rows into Fortran-ordered dates x symbols arrays (one column per symbol)."""
    dates = pd.DatetimeIndex(dates).as_unit("ns")
    order = np.argsort(symbols, kind="stable")
    sorted_symbols = symbols[order]
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    c = rank[codes] if len(codes) else codes.astype(np.int64)
    axis = dates.asi8
    r = np.searchsorted(axis, date_ns)
    bad = (r >= len(axis)) | (axis[np.minimum(r, len(axis) - 1)] != date_ns)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{where}: date {pd.Timestamp(date_ns[i])} of {symbols[codes[i]]} is "
                        "not on the market's date axis (missing or unparseable date); "
                        "fix or drop that row")
    shape = (len(axis), len(sorted_symbols))
    valid = np.zeros(shape, dtype=bool, order="F")
    valid[r, c] = True
    if int(valid.sum()) != len(r):
        flat = c * shape[0] + r
        srt = np.sort(flat)
        dup = int(srt[np.flatnonzero(srt[1:] == srt[:-1])[0]])
        raise DataError(f"{where}: (date, symbol) repeats, first {sorted_symbols[dup // shape[0]]}"
                        f" on {dates[dup % shape[0]].date()}; validate with policy 'drop' or "
                        "'repair' first")
    fields: dict[str, np.ndarray] = {}
    for name, col in values.items():
        arr = np.full(shape, np.nan, dtype=np.float64, order="F")
        arr[r, c] = col
        fields[name] = arr
    if "vwap" in wanted and "vwap" not in fields:
        with np.errstate(divide="ignore", invalid="ignore"):
            fields["vwap"] = np.where(fields["volume"] > 0, fields["amount"] / fields["volume"],
                                      np.nan)
            fields["vwap"] = np.asfortranarray(fields["vwap"])
    valid &= np.isfinite(fields["close"])
    st = None
    if st_flags is not None:
        st = np.zeros(shape, dtype=bool, order="F")
        st[r, c] = st_flags
    panel = Panel(dates, pd.Index(sorted_symbols, name="symbol"), fields, get_backend("cpu"),
                  valid=valid, st=st)
    if adjust:
        panel = panel.adjusted()
    keep = [n for n in wanted if n in panel.fields]
    if len(keep) != len(panel.fields):
        panel = Panel(panel.dates, panel.symbols, {n: panel.fields[n] for n in keep},
                      panel.backend, panel.valid, panel.suspended, panel.info, panel.st)
    return panel


def symbol_ranges(symbols: Sequence[str], block_symbols: int) -> list[tuple[str, str]]:
    """``(first, last)`` of consecutive blocks of ``block_symbols`` sorted symbols.

    Examples
    --------
    >>> symbol_ranges(["A", "B", "C", "D", "E"], 2)
    [('A', 'B'), ('C', 'D'), ('E', 'E')]
    """
    size = max(1, int(block_symbols))
    return [(str(symbols[i]), str(symbols[min(i + size, len(symbols)) - 1]))
            for i in range(0, len(symbols), size)]


def read_frame(source: ParquetSource, symbols: Sequence[str],
               columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The long bars of ``symbols`` as a pandas DataFrame (columns by their qilin names).

    Reads only ``columns`` (all by default; ``date`` and ``symbol`` always) and the rows of
    these symbols: the filter carries their range, so row groups outside it are skipped by
    their statistics, then keeps only the listed ones.

    Raises
    ------
    DataError
        An unknown column or an unreadable file.

    Examples
    --------
    >>> import os, tempfile
    >>> from qilin.data.synthetic import synthetic_bars
    >>> from qilin.data.loader import save_bars
    >>> path = save_bars(synthetic_bars(n_symbols=4, n_days=5, seed=1),
    ...                  os.path.join(tempfile.mkdtemp(), "b.parquet"))
    >>> src = ParquetSource.open(path)
    >>> _, syms = scan_axes(src)
    >>> df = read_frame(src, [syms[0], syms[2]], ["close"])
    >>> list(df.columns), sorted(df["symbol"].unique()) == [syms[0], syms[2]]
    (['date', 'symbol', 'close'], True)
    """
    import pyarrow.dataset as ds

    wanted = list(source.columns) if columns is None else list(dict.fromkeys(
        ["date", "symbol", *columns]))
    unknown = [c for c in wanted if c not in source.columns]
    if unknown:
        raise DataError(f"{source.files[0]}: no column {unknown[0]!r}; columns: "
                        f"{list(source.columns)}")
    chosen = sorted(map(str, symbols))
    where = f"{source.files[0]} ({len(chosen)} symbols)"
    if not chosen:
        flt = ds.scalar(False)
    else:
        flt = _symbol_range(source, chosen[0], chosen[-1]) & ds.field(
            source.original("symbol")).isin(chosen)
    table = _read_rows(source, [source.original(c) for c in wanted], flt, where)
    return table.rename_columns(wanted).to_pandas()


def source_path_label(source: ParquetSource) -> str:
    """A short label for messages: the file, or the first file and a count."""
    if len(source.files) == 1:
        return source.files[0]
    return f"{Path(source.files[0]).parent} ({len(source.files)} files)"
