"""Loading long-format daily bars (Parquet or CSV; pandas, dask or dask-cudf) into a Panel.

Input is one row per ``(date, symbol)`` with ``date, symbol, open, high, low, close, volume``
and optionally ``amount, preclose, adj_factor, name, industry, float_mcap`` (other columns
are kept). ``path`` is one file, a directory (every ``.parquet``/``.pq``/``.csv``/``.csv.gz``
file below it, in sorted order, skipping hidden files and folders) or a glob pattern
(temporary files of atomic writes are skipped).

Column names are normalised explicitly and reported: names are lower-cased with spaces turned
into underscores, then the aliases in :data:`COLUMN_ALIASES` (``ts_code`` -> ``symbol``,
``trade_date`` -> ``date``, ``vol`` -> ``volume``, ``pre_close`` -> ``preclose`` ...) are
applied. Each rename is logged and kept in ``df.attrs["renamed_columns"]`` (and in the
validation report's ``changes`` under ``load_panel``). Units are never converted: Tushare's
``vol`` is in lots of 100 shares and its ``amount`` in thousands of CNY, and stay so.

Examples
--------
>>> import os, shutil, tempfile
>>> from qilin.data.synthetic import synthetic_bars
>>> folder = tempfile.mkdtemp()
>>> path = save_bars(synthetic_bars(n_symbols=6, n_days=20, seed=1),
...                  os.path.join(folder, "bars.parquet"))
>>> load_bars(path, columns=["date", "symbol", "close"], start="2016-01-10").shape[1]
3
>>> panel = load_panel(path, backend="cpu")
>>> panel.shape
(20, 6)
>>> shutil.rmtree(folder)
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from qilin.atomic import atomic_path, is_temp_name
from qilin.backend import Backend, BackendName, get_backend
from qilin.config import MarketConfig
from qilin.data.dates import parse_dates
from qilin.data.panel import Panel
from qilin.data.qlib import is_qlib_folder, read_qlib_bars
from qilin.data.validation import Policy, ValidationReport, validate_bars
from qilin.errors import BackendError, DataError

log = logging.getLogger(__name__)

Engine = Literal["pandas", "dask", "dask_cudf"]
ENGINES = ("pandas", "dask", "dask_cudf")
#: Known alternative column names (after lower-casing) and the qilin name they map to.
COLUMN_ALIASES: dict[str, str] = {
    "ts_code": "symbol", "code": "symbol", "ticker": "symbol", "instrument": "symbol",
    "sec_code": "symbol", "stock_code": "symbol",
    "trade_date": "date", "datetime": "date", "trade_dt": "date", "timestamp": "date",
    "vol": "volume",
    "pre_close": "preclose", "prev_close": "preclose",
    "adjfactor": "adj_factor", "adj_factor_": "adj_factor", "factor": "adj_factor",
    "amt": "amount", "turnover_value": "amount",
    "sec_name": "name", "stock_name": "name",
}
_PARQUET_SUFFIXES = (".parquet", ".pq")
_CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.zst", ".csv.bz2")


def normalize_columns(
    columns: Iterable[str], aliases: bool | Mapping[str, str] = True, source: str = "bars"
) -> dict[str, str]:
    """The renames (original -> qilin name) that normalisation would apply to ``columns``.

    Parameters
    ----------
    columns : iterable of str
    aliases : bool or mapping
        ``True``: lower-case plus :data:`COLUMN_ALIASES`; ``False``: no renaming; a mapping:
        lower-case plus :data:`COLUMN_ALIASES` updated with this mapping (keys lower-case).
    source : str
        Named in the error message.

    Raises
    ------
    DataError
        When two columns would get the same name (e.g. both ``vol`` and ``volume``).

    Examples
    --------
    >>> normalize_columns(["ts_code", "trade_date", "Open", "vol", "close"])
    {'ts_code': 'symbol', 'trade_date': 'date', 'Open': 'open', 'vol': 'volume'}
    """
    cols = [str(c) for c in columns]
    if aliases is False:
        return {}
    table = dict(COLUMN_ALIASES)
    if isinstance(aliases, Mapping):
        table.update({str(k).lower(): str(v) for k, v in aliases.items()})
    renames: dict[str, str] = {}
    for c in cols:
        key = c.strip().lower().replace(" ", "_")
        new = table.get(key, key)
        if new != c:
            renames[c] = new
    final = [renames.get(c, c) for c in cols]
    seen: dict[str, str] = {}
    for orig, new in zip(cols, final, strict=True):
        if new in seen:
            raise DataError(
                f"{source}: columns {seen[new]!r} and {orig!r} both map to {new!r}; "
                "rename one yourself or pass aliases=False"
            )
        seen[new] = orig
    return renames


def resolve_paths(path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Files named by ``path``: a file, a directory (searched recursively) or a glob.

    Hidden files and folders below a directory, and temporary files of atomic writes
    (:func:`qilin.atomic.is_temp_name`) matched by a glob, are skipped: they are writes in
    progress or leftovers of killed writers, never data.

    Raises
    ------
    DataError
        When nothing matches, or a file has an unsupported extension.
    """
    if isinstance(path, list | tuple):
        out: list[Path] = []
        for p in path:
            out.extend(resolve_paths(p))
        return out
    text = os.fspath(path)
    if any(ch in text for ch in "*?["):
        found = [Path(p) for p in sorted(glob.glob(text, recursive=True)) if Path(p).is_file()]
        files = [p for p in found if not is_temp_name(p.name)]
        _log_skipped(len(found) - len(files), text)
        where = f"glob {text!r}"
    elif os.path.isdir(text):
        root = Path(text)
        found = sorted(p for p in root.rglob("*") if p.is_file() and _format_of(p))
        files = [p for p in found if not _hidden_below(p, root)]
        _log_skipped(len(found) - len(files), text)
        where = f"directory {text}"
    elif os.path.exists(text):
        files = [Path(text)]
        where = text
    else:
        raise DataError(f"bars file not found: {text}")
    if not files:
        raise DataError(f"no Parquet or CSV files in {where}")
    for f in files:
        if not _format_of(f):
            raise DataError(f"{f}: unsupported file type (expected .parquet, .pq, .csv or .csv.gz)")
    return files


def _hidden_below(path: Path, root: Path) -> bool:
    """True when ``path`` or a folder between ``root`` and it is hidden or a temporary name."""
    return any(part.startswith(".") or is_temp_name(part)
               for part in path.relative_to(root).parts)


def _log_skipped(n: int, where: str) -> None:
    if n:
        log.info("%s: skipped %d hidden or temporary file(s) (writes in progress or left by "
                 "killed writers)", where, n)


def _format_of(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(_PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(_CSV_SUFFIXES):
        return "csv"
    return None


def _file_columns(path: Path) -> list[str]:
    if path.is_file() and path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes); expected a header and rows of bars "
                        "(date, symbol, open, high, low, close, volume)")
    try:
        if _format_of(path) == "parquet":
            import pyarrow.parquet as pq

            return list(pq.read_schema(path).names)
        return list(pd.read_csv(path, nrows=0).columns)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the file header: {exc}") from exc
    except Exception as exc:  # pyarrow.ArrowInvalid and friends
        raise DataError(f"{path}: cannot read the file header: {exc}") from exc


def _plan(files: list[Path], columns: Sequence[str] | None,
          aliases: bool | Mapping[str, str]) -> tuple[dict[Path, dict[str, str]],
                                                      dict[Path, list[str] | None]]:
    """Per file: the renames and the original column names to read."""
    renames: dict[Path, dict[str, str]] = {}
    to_read: dict[Path, list[str] | None] = {}
    for f in files:
        cols = _file_columns(f)
        ren = normalize_columns(cols, aliases, source=str(f))
        renames[f] = ren
        if columns is None:
            to_read[f] = None
            continue
        back = {ren.get(c, c): c for c in cols}
        missing = [c for c in columns if c not in back]
        if missing:
            raise DataError(
                f"{f}: no column {missing[0]!r}"
                f"{' (and ' + str(missing[1:]) + ')' if len(missing) > 1 else ''}; "
                f"columns after normalisation: {sorted(back)}"
            )
        to_read[f] = [back[c] for c in columns]
    return renames, to_read


def _report_renames(renames: dict[Path, dict[str, str]]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for f, ren in renames.items():
        if ren:
            log.info("%s: renamed columns %s", f, ", ".join(f"{a}->{b}" for a, b in ren.items()))
        merged.update(ren)
    return merged


def _filter_pandas(df: pd.DataFrame, symbols: Sequence[str] | None, start: Any, end: Any,
                   source: str, date_format: str | None = None,
                   notes: list[dict[str, Any]] | None = None) -> pd.DataFrame:
    if "date" in df.columns:
        df["date"], found = parse_dates(df["date"], date_format=date_format, source=source)
        if notes is not None:
            notes.extend(found)
        n_bad = int(df["date"].isna().sum())
        if n_bad:
            log.warning("%s: %d row(s) with an unparseable date (kept as NaT)", source, n_bad)
    if "symbol" in df.columns:
        df["symbol"] = df["symbol"].astype(str).where(df["symbol"].notna(), None)
    mask = np.ones(len(df), dtype=bool)
    if symbols is not None:
        _need(df, "symbol", source)
        mask &= df["symbol"].isin(list(symbols)).to_numpy()
    if start is not None:
        _need(df, "date", source)
        mask &= (df["date"] >= pd.Timestamp(start)).to_numpy()
    if end is not None:
        _need(df, "date", source)
        mask &= (df["date"] <= pd.Timestamp(end)).to_numpy()
    return df if mask.all() else df.loc[mask]


def _need(df: Any, column: str, source: str) -> None:
    if column not in df.columns:
        raise DataError(f"{source}: filtering needs a {column!r} column; columns: "
                        f"{list(df.columns)}")


def _text_columns(f: Path, ren: dict[str, str]) -> dict[str, Any]:
    """CSV columns to read as text: codes such as ``000001`` must keep their zeros."""
    header = _file_columns(f)
    return {c: str for c in header if ren.get(c, c) in ("symbol", "name", "industry")}


def _read_pandas(f: Path, cols: list[str] | None, ren: dict[str, str],
                 symbols: Sequence[str] | None) -> pd.DataFrame:
    try:
        if _format_of(f) == "parquet":
            filters = None
            sym_col = next((o for o, n in ren.items() if n == "symbol"), "symbol")
            if symbols is not None and (cols is None or sym_col in cols) \
                    and sym_col in _file_columns(f):
                filters = [(sym_col, "in", list(symbols))]
            return pd.read_parquet(f, columns=cols, filters=filters)
        return pd.read_csv(f, usecols=cols, dtype=_text_columns(f, ren))
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{f}: cannot read {_format_of(f)}: {exc}") from exc


def load_bars(
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    engine: Engine = "pandas",
    columns: Sequence[str] | None = None,
    symbols: Sequence[str] | None = None,
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
    aliases: bool | Mapping[str, str] = True,
    date_format: str | None = None,
) -> Any:
    """Read long daily bars from Parquet or CSV.

    Parameters
    ----------
    path : path, glob or list of them
        One file, a directory, a glob (``data/*.parquet``) or a list; or a Qlib data folder
        (``calendars/``, ``instruments/``, ``features/``, detected by its layout and read
        with :func:`qilin.data.qlib.read_qlib_bars`).
    engine : {"pandas", "dask", "dask_cudf"}
        ``pandas`` returns an in-memory DataFrame; ``dask`` a lazy dask DataFrame (one
        partition per file or row group); ``dask_cudf`` a lazy dask-cuDF DataFrame on GPU.
    columns : list of str, optional
        Columns to read, by their normalised names.
    symbols : list of str, optional
        Keep only these symbols (pushed down into Parquet reads).
    start, end : date-like, optional
        Inclusive date range.
    aliases : bool or mapping
        Column-name normalisation, see :func:`normalize_columns`.
    date_format : str, optional
        ``strptime`` format of text dates (``"%d/%m/%Y"``); without it, day/month-order
        text dates whose order the data cannot tell are refused (never guessed), see
        :func:`qilin.data.dates.parse_dates`.

    Returns
    -------
    DataFrame or dask DataFrame
        ``date`` parsed to ``datetime64[ns]``, ``symbol`` as strings; ``attrs`` holds
        ``source``, ``renamed_columns`` and ``normalisations`` (dates parsed, time zones
        dropped; pandas engine), which validation copies into its report.

    Raises
    ------
    DataError
        Missing files, unreadable files, unknown columns (naming the file and column).
    BackendError
        ``engine="dask_cudf"`` without dask-cudf installed.
    """
    if engine not in ENGINES:
        raise DataError(f"parameter engine: expected one of {ENGINES}, got {engine!r}")
    if not isinstance(path, list | tuple) and is_qlib_folder(path):
        return _load_qlib(path, engine, columns, symbols, start, end)
    files = resolve_paths(path)
    source = os.fspath(path) if not isinstance(path, list | tuple) else ", ".join(map(str, path))
    renames, to_read = _plan(files, columns, aliases)
    merged = _report_renames(renames)
    if engine == "pandas":
        parts = []
        notes: list[dict[str, Any]] = []
        for f in files:
            part = _read_pandas(f, to_read[f], renames[f], symbols)
            if part.empty and (symbols is None or _format_of(f) == "csv"):
                raise DataError(f"{f}: no rows (header-only file); expected rows of bars "
                                "(date, symbol, open, high, low, close, volume)")
            part = part.rename(columns=renames[f])
            parts.append(_filter_pandas(part, symbols, start, end, str(f), date_format, notes))
        df = pd.concat(parts, ignore_index=True) if len(parts) > 1 else \
            parts[0].reset_index(drop=True)
        df.attrs["source"] = source
        df.attrs["renamed_columns"] = merged
        df.attrs["normalisations"] = notes
        return df
    return _load_lazy(files, engine, renames, to_read, symbols, start, end, date_format)


def _load_qlib(path: str | os.PathLike[str], engine: str, columns: Sequence[str] | None,
               symbols: Sequence[str] | None, start: Any, end: Any) -> Any:
    """A Qlib data folder as long bars (read eagerly; ``dask`` gets one partition)."""
    df, notes = read_qlib_bars(path, start=start, end=end)
    if symbols is not None:
        df = df[df["symbol"].isin(list(symbols))].reset_index(drop=True)
    if columns is not None:
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise DataError(f"Qlib folder {path}: no field {missing[0]!r}; fields: "
                            f"{sorted(df.columns)}")
        df = df[list(columns)]
    df.attrs["source"] = os.fspath(path)
    df.attrs["renamed_columns"] = {}
    df.attrs["normalisations"] = notes
    if engine == "pandas":
        return df
    if engine == "dask":
        import dask.dataframe as dd

        return dd.from_pandas(df, npartitions=1)
    raise DataError(f"Qlib folder {path}: engine {engine!r} is not supported for Qlib folders; "
                    "use engine='pandas' or 'dask'")


def _load_lazy(files: list[Path], engine: str, renames: dict[Path, dict[str, str]],
               to_read: dict[Path, list[str] | None], symbols: Sequence[str] | None,
               start: Any, end: Any, date_format: str | None = None) -> Any:
    formats = {_format_of(f) for f in files}
    if len(formats) > 1:
        raise DataError(f"engine {engine!r} reads one format at a time; got Parquet and CSV "
                        f"files: {[str(f) for f in files[:4]]}")
    if len({tuple(sorted(r.items())) for r in renames.values()}) > 1 or \
            len({tuple(c) if c else None for c in to_read.values()}) > 1:
        raise DataError(f"engine {engine!r} needs files with the same columns; "
                        f"{files[0]} and others differ")
    fmt = formats.pop()
    ren = renames[files[0]]
    cols = to_read[files[0]]
    if engine == "dask_cudf":
        try:
            import dask_cudf  # type: ignore[import-not-found]
        except Exception as exc:
            raise BackendError(
                "engine 'dask_cudf' needs dask-cudf and a CUDA GPU (install qilin[gpu]); "
                f"import failed: {exc}. Use engine='dask' or 'pandas' on CPU."
            ) from None
        reader = dask_cudf
    else:
        import dask.dataframe as dd

        reader = dd
    names = [str(f) for f in files]
    try:
        if fmt == "parquet":
            ddf = reader.read_parquet(names, columns=cols)
        else:
            ddf = reader.read_csv(names, usecols=cols, dtype=_text_columns(files[0], ren))
    except Exception as exc:
        raise DataError(f"{names[0]}: cannot read {fmt} with {engine}: {exc}") from exc
    ddf = ddf.rename(columns=ren)
    if "date" in ddf.columns:
        if engine == "dask":
            ddf["date"] = ddf["date"].map_partitions(_dates_ns, date_format, names[0],
                                                     meta=("date", "datetime64[ns]"))
        else:
            ddf["date"] = ddf["date"].astype("datetime64[ns]")
    if symbols is not None:
        _need(ddf, "symbol", names[0])
        ddf = ddf[ddf["symbol"].isin(list(symbols))]
    if start is not None:
        _need(ddf, "date", names[0])
        ddf = ddf[ddf["date"] >= pd.Timestamp(start)]
    if end is not None:
        _need(ddf, "date", names[0])
        ddf = ddf[ddf["date"] <= pd.Timestamp(end)]
    return ddf


def _dates_ns(col: pd.Series, date_format: str | None, source: str) -> pd.Series:
    dates, notes = parse_dates(col, date_format=date_format, source=source)
    for note in notes:
        if note["action"] == "drop_timezone":
            log.warning("%s", note["reason"])
    return dates


def load_panel(
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    backend: BackendName | Backend = "auto",
    validate: Policy | None = "auto",
    market: str | MarketConfig | None = None,
    fields: Sequence[str] | None = None,
    symbols: Sequence[str] | None = None,
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
    engine: Engine = "pandas",
    aliases: bool | Mapping[str, str] = True,
    date_format: str | None = None,
    dtype: Any = np.float64,
    return_report: bool = False,
    **validate_options: Any,
) -> Panel | tuple[Panel, ValidationReport | None]:
    """Load bars, validate them and pivot them into a :class:`~qilin.data.panel.Panel`.

    Parameters
    ----------
    path, engine, symbols, start, end, aliases, date_format
        As for :func:`load_bars` (a lazy engine is computed before validation).
    backend : {"auto", "cpu", "gpu"} or Backend
        Where the Panel's arrays go.
    validate : {"auto", "raise", "drop", "repair"} or None
        Validation policy (:func:`~qilin.data.validation.validate_bars`). ``auto`` (the
        default) stops only on findings that would corrupt results (decimal shifts,
        repeated rows with different values, bad dates or symbols ...) and passes the rest
        (NaN prices are missing data), with every finding in the report; ``None`` skips
        validation (a repeated ``(date, symbol)`` still fails in ``Panel.from_long``).
    market : {"cn", "us"}, MarketConfig or None
        Enables market-specific checks (A-share price limits for ``cn``).
    fields : list of str, optional
        Numeric fields to keep (default: every numeric column).
    dtype : float dtype
        dtype of the Panel's fields.
    return_report : bool
        Return ``(panel, report)`` instead of the Panel alone.
    **validate_options
        Passed to :func:`~qilin.data.validation.validate_bars` (``jump_threshold`` ...).

    Raises
    ------
    ValidationError
        Under ``validate="raise"`` when the bars have error findings, under ``"auto"``
        when they have findings that would corrupt results (the message names the
        policies to choose from and what each would change).
    DataError, BackendError
        As for :func:`load_bars`.
    """
    df = load_bars(path, engine=engine, symbols=symbols, start=start, end=end, aliases=aliases,
                   date_format=date_format)
    if engine != "pandas":
        df = df.compute()
        if engine == "dask_cudf":
            df = df.to_pandas()
        if df.empty:
            raise DataError(f"{path}: no rows (empty or header-only files, or filters that "
                            "match nothing)")
        merged: dict[str, str] = {}
        if isinstance(path, list | tuple) or not is_qlib_folder(path):
            for ren in _plan(resolve_paths(path), None, aliases)[0].values():
                merged.update(ren)
        df.attrs["renamed_columns"] = merged
        df.attrs["source"] = os.fspath(path) if not isinstance(path, list | tuple) \
            else str(path)
    report: ValidationReport | None = None
    if validate is not None:
        df, report = validate_bars(df, policy=validate, market=market,
                                   source=df.attrs.get("source"), **validate_options)
        if not report.ok:
            log.warning("%s (findings kept in the report; the bars are used as they are "
                        "where a finding does not stop the run)", report.brief())
    panel = Panel.from_long(df, fields=fields, backend=get_backend(backend), dtype=dtype)
    return (panel, report) if return_report else panel


def save_bars(
    df: pd.DataFrame,
    path: str | os.PathLike[str],
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Write bars atomically to Parquet or CSV (by extension): temp file, then ``os.replace``.

    Parameters
    ----------
    df : DataFrame
    path : path
        ``.parquet``/``.pq`` or ``.csv``/``.csv.gz``.
    progress : callable, optional
        Called with the number of rows written after each chunk (CSV is written in chunks).

    Raises
    ------
    DataError
        For an unsupported extension.
    """
    target = Path(path)
    fmt = _format_of(target)
    if fmt is None:
        raise DataError(f"{target}: unsupported output type (use .parquet, .pq, .csv or "
                        ".csv.gz)")
    with atomic_path(target) as tmp:
        if fmt == "parquet":
            df.to_parquet(tmp, index=False)
            if progress:
                progress(len(df))
        elif target.name.lower().endswith(".gz"):
            df.to_csv(tmp, index=False, compression="gzip")
            if progress:
                progress(len(df))
        else:
            chunk = 200_000
            with open(tmp, "w", newline="") as fh:
                for i in range(0, max(len(df), 1), chunk):
                    df.iloc[i:i + chunk].to_csv(fh, index=False, header=(i == 0))
                    if progress:
                        progress(min(chunk, len(df) - i))
    return target
