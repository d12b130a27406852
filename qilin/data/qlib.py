"""Reader for Qlib's on-disk daily data, so Qlib users can point qilin at their data folder.

A Qlib data folder holds

* ``calendars/day.txt``: one trading date per line;
* ``instruments/<market>.txt``: lines ``SYMBOL<TAB>start<TAB>end`` (``all.txt``, ``csi300.txt``
  ...); a symbol may have several lines (several membership spans);
* ``features/<symbol lower-cased>/<field>.day.bin``: little-endian float32; the first value is
  the index into the calendar of the first stored bar, the rest are the bars, one per
  calendar day from there.

Qlib stores **adjusted** prices: ``$close = raw close * $factor`` and
``$volume = raw volume / $factor`` (its ``factor`` is qilin's ``adj_factor``). With
``prices="raw"`` (the default) :func:`read_qlib` divides the price fields by the factor and
multiplies volume by it, so the Panel follows qilin's convention (raw prices plus
``adj_factor``) and ``panel.adjusted()`` gives Qlib's values back. With
``prices="adjusted"`` the fields keep Qlib's values and ``adj_factor`` is 1 on every bar
(as after ``Panel.adjusted()``), so nothing is adjusted twice.

Examples
--------
>>> import numpy as np, os, shutil, tempfile
>>> root = tempfile.mkdtemp()
>>> os.makedirs(f"{root}/calendars"); os.makedirs(f"{root}/instruments")
>>> os.makedirs(f"{root}/features/sh600000")
>>> with open(f"{root}/calendars/day.txt", "w") as fh:
...     _ = fh.write("2024-01-02\\n2024-01-03\\n2024-01-04\\n")
>>> with open(f"{root}/instruments/all.txt", "w") as fh:
...     _ = fh.write("SH600000\\t2024-01-02\\t2024-01-04\\n")
>>> np.array([1, 10.5, 10.8], dtype="<f4").tofile(f"{root}/features/sh600000/close.day.bin")
>>> p = read_qlib(root, fields=("close",), prices="adjusted")
>>> list(p.symbols), p["close"][:, 0].tolist()
(['600000.SH'], [nan, 10.5, 10.800000190734863])
>>> shutil.rmtree(root)
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from qilin.backend import Backend, BackendName, get_backend
from qilin.data.panel import Panel
from qilin.errors import DataError

log = logging.getLogger(__name__)

DEFAULT_FIELDS = ("open", "high", "low", "close", "volume", "factor")
#: Fields that are prices in Qlib (divided by ``factor`` for raw prices).
QLIB_PRICE_FIELDS = ("open", "high", "low", "close", "vwap")
_CN_CODE = re.compile(r"^(SH|SZ|BJ)(\d{6})$")


def qlib_to_qilin_symbol(symbol: str) -> str:
    """``SH600000`` -> ``600000.SH``; other symbols unchanged (upper-cased).

    Examples
    --------
    >>> qlib_to_qilin_symbol("sz000001"), qlib_to_qilin_symbol("AAPL")
    ('000001.SZ', 'AAPL')
    """
    s = symbol.strip().upper()
    m = _CN_CODE.match(s)
    return f"{m.group(2)}.{m.group(1)}" if m else s


def read_calendar(root: str | os.PathLike[str], freq: str = "day") -> pd.DatetimeIndex:
    """The trading calendar ``calendars/<freq>.txt`` of a Qlib data folder.

    Raises
    ------
    DataError
        When the file is missing, empty, unparseable or not strictly increasing.
    """
    path = Path(root) / "calendars" / f"{freq}.txt"
    if not path.exists():
        raise DataError(f"Qlib calendar not found: {path}")
    lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    if not lines:
        raise DataError(f"{path}: the calendar is empty")
    cal = pd.to_datetime(pd.Series(lines), errors="coerce")
    if cal.isna().any():
        bad = int(np.flatnonzero(cal.isna().to_numpy())[0])
        raise DataError(f"{path}: line {bad + 1} is not a date: {lines[bad]!r}")
    idx = pd.DatetimeIndex(cal, name="date")
    if not idx.is_monotonic_increasing or not idx.is_unique:
        raise DataError(f"{path}: dates are not strictly increasing")
    return idx


def read_instruments(root: str | os.PathLike[str], market: str = "all") -> pd.DataFrame:
    """Membership spans from ``instruments/<market>.txt``: columns ``symbol, start, end``.

    Raises
    ------
    DataError
        When the file is missing (listing the markets that exist) or a line is malformed.
    """
    folder = Path(root) / "instruments"
    path = folder / f"{market}.txt"
    if not path.exists():
        known = sorted(p.stem for p in folder.glob("*.txt")) if folder.exists() else []
        raise DataError(f"Qlib instruments file not found: {path} (available: {known})")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("\t") if "\t" in line else line.split()
        if len(parts) < 3:
            raise DataError(f"{path}: line {n} should be 'SYMBOL<TAB>start<TAB>end': {line!r}")
        try:
            rows.append((parts[0].strip().upper(), pd.Timestamp(parts[1].strip()),
                         pd.Timestamp(parts[2].strip())))
        except ValueError as exc:
            raise DataError(f"{path}: line {n} has a bad date: {line!r} ({exc})") from None
    return pd.DataFrame(rows, columns=["symbol", "start", "end"])


def read_feature(path: str | os.PathLike[str], n_calendar: int) -> tuple[int, np.ndarray]:
    """One ``.bin`` feature file: ``(start index into the calendar, float32 values)``.

    Raises
    ------
    DataError
        When the file is empty, its start index is not an integer inside the calendar, or it
        runs past the end of the calendar.
    """
    raw = np.fromfile(path, dtype="<f4")
    if raw.size == 0:
        raise DataError(f"{path}: empty feature file (expected a start index and values)")
    first = float(raw[0])
    if not first.is_integer() or not 0 <= first < n_calendar:
        raise DataError(f"{path}: start index {first} is not a day of the "
                        f"{n_calendar}-day calendar")
    start = int(first)
    values = raw[1:]
    if start + values.size > n_calendar:
        raise DataError(f"{path}: {values.size} values from calendar index {start} run past "
                        f"the calendar's {n_calendar} days")
    return start, values


def read_qlib(
    root: str | os.PathLike[str],
    instruments: str | Sequence[str] = "all",
    fields: Sequence[str] = DEFAULT_FIELDS,
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
    freq: str = "day",
    prices: Literal["raw", "adjusted"] = "raw",
    symbol_style: Literal["qilin", "qlib"] = "qilin",
    backend: BackendName | Backend = "cpu",
    dtype: Any = np.float64,
) -> Panel:
    """Read a Qlib data folder into a :class:`~qilin.data.panel.Panel`.

    Parameters
    ----------
    root : path
        The folder holding ``calendars/``, ``instruments/`` and ``features/``.
    instruments : str or list of str
        A file stem of ``instruments/`` (``"all"``, ``"csi300"``): bars outside a symbol's
        membership spans are masked; or a list of symbols (``"SH600000"``), read over
        the whole calendar.
    fields : sequence of str
        Feature names (``open high low close volume factor vwap change`` ...). ``factor``
        becomes the ``adj_factor`` field.
    start, end : date-like, optional
        Inclusive date range (defaults: the whole calendar).
    freq : str
        Calendar / feature frequency suffix (``day``).
    prices : {"raw", "adjusted"}
        See the module docstring; ``raw`` needs ``factor`` among the fields.
    symbol_style : {"qilin", "qlib"}
        ``qilin`` turns ``SH600000`` into ``600000.SH`` (A-share boards and limits then
        work); ``qlib`` keeps Qlib's names.
    backend : {"cpu", "gpu", "auto"} or Backend
    dtype : float dtype

    Raises
    ------
    DataError
        Missing calendar, instruments or features (naming the path), a field absent for
        every symbol, malformed files, or ``prices="raw"`` without ``factor``.
    """
    if prices not in ("raw", "adjusted"):
        raise DataError(f"parameter prices: expected 'raw' or 'adjusted', got {prices!r}")
    if symbol_style not in ("qilin", "qlib"):
        raise DataError(f"parameter symbol_style: expected 'qilin' or 'qlib', got "
                        f"{symbol_style!r}")
    fields = list(dict.fromkeys(fields))
    if prices == "raw" and "factor" not in fields:
        raise DataError("prices='raw' needs the 'factor' field to undo Qlib's adjustment; add "
                        "'factor' to fields or pass prices='adjusted'")
    root = Path(root)
    cal = read_calendar(root, freq)
    if isinstance(instruments, str):
        spans: pd.DataFrame | None = read_instruments(root, instruments)
        symbols = list(dict.fromkeys(spans["symbol"]))
    else:
        spans = None
        symbols = list(dict.fromkeys(s.strip().upper() for s in instruments))
    if not symbols:
        raise DataError(f"{root}: no instruments selected ({instruments!r})")
    lo = 0 if start is None else int(cal.searchsorted(pd.Timestamp(start), "left"))
    hi = len(cal) if end is None else int(cal.searchsorted(pd.Timestamp(end), "right"))
    dates = cal[lo:hi]
    T, N = len(cal), len(symbols)
    features = root / "features"
    if not features.is_dir():
        raise DataError(f"Qlib features folder not found: {features}")
    data: dict[str, np.ndarray] = {}
    for name in fields:
        arr = np.full((T, N), np.nan, dtype=np.float64)
        found = 0
        for j, sym in enumerate(symbols):
            path = features / sym.lower() / f"{name}.{freq}.bin"
            if not path.exists():
                continue
            first, values = read_feature(path, T)
            arr[first:first + values.size, j] = values
            found += 1
        if not found:
            example = features / symbols[0].lower() / f"{name}.{freq}.bin"
            raise DataError(f"Qlib field {name!r} not found for any of {N} instrument(s) "
                            f"(e.g. {example})")
        if found < N:
            log.info("Qlib field %r missing for %d of %d instruments", name, N - found, N)
        data[name] = arr
    if spans is not None:
        member = np.zeros((T, N), dtype=bool)
        col = {s: j for j, s in enumerate(symbols)}
        for rec in spans.itertuples(index=False):
            a = int(cal.searchsorted(rec.start, "left"))
            b = int(cal.searchsorted(rec.end, "right"))
            member[a:b, col[rec.symbol]] = True
        for arr in data.values():
            arr[~member] = np.nan
    data = {k: v[lo:hi] for k, v in data.items()}
    if "factor" in data:
        factor = data.pop("factor")
        if prices == "raw":
            for name in QLIB_PRICE_FIELDS:
                if name in data:
                    data[name] = data[name] / factor
            if "volume" in data:
                data["volume"] = data["volume"] * factor
            data["adj_factor"] = factor
        else:
            data["adj_factor"] = np.where(np.isfinite(factor), 1.0, np.nan)
    names = [qlib_to_qilin_symbol(s) if symbol_style == "qilin" else s for s in symbols]
    order = np.argsort(np.asarray(names, dtype=object), kind="stable")
    sym_index = pd.Index(np.asarray(names, dtype=object)[order], name="symbol")
    if sym_index.has_duplicates:
        raise DataError(f"{root}: symbols collide after renaming: "
                        f"{sym_index[sym_index.duplicated()].tolist()[:5]}")
    out = {k: np.ascontiguousarray(v[:, order]).astype(dtype, copy=False)
           for k, v in data.items()}
    valid = np.isfinite(out["close"]) if "close" in out else np.logical_or.reduce(
        [np.isfinite(v) for v in out.values()])
    info = pd.DataFrame(index=sym_index)
    if symbol_style == "qilin" and sym_index.str.contains(r"\.(?:SH|SZ|BJ)$").any():
        from qilin.data.boards import board_of

        info["board"] = [board_of(s) for s in sym_index]
    return Panel(pd.DatetimeIndex(dates, name="date"), sym_index, out, get_backend(backend),
                 valid=valid, info=info)


def is_qlib_folder(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a folder laid out as Qlib data (``calendars/`` and ``features/``).

    Examples
    --------
    >>> import tempfile
    >>> is_qlib_folder(tempfile.gettempdir())
    False
    """
    p = Path(path)
    return p.is_dir() and (p / "calendars").is_dir() and (p / "features").is_dir()


def qlib_field_names(root: str | os.PathLike[str], freq: str = "day") -> list[str]:
    """Feature names stored for at least one instrument (``close``, ``factor`` ...), sorted."""
    names: set[str] = set()
    suffix = f".{freq}.bin"
    features = Path(root) / "features"
    for sym in os.scandir(features):
        if sym.is_dir() and not sym.name.startswith("."):
            names.update(e.name[:-len(suffix)] for e in os.scandir(sym.path)
                         if e.name.endswith(suffix))
    return sorted(names)


def read_qlib_bars(
    root: str | os.PathLike[str],
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
    freq: str = "day",
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """A Qlib data folder as qilin long bars, with notes on what the conversion changed.

    Reads every stored field of the instruments in ``instruments/all.txt`` (or every folder
    under ``features/`` when there is no ``all.txt``) with :func:`read_qlib`: raw prices
    plus ``adj_factor`` when ``factor`` is stored, Qlib's adjusted prices otherwise;
    ``SH600000`` becomes ``600000.SH``. This is how ``load_bars``/``load_panel`` (and so
    every ``--data``) read a Qlib folder.

    Returns
    -------
    (DataFrame, list of dict)
        Long bars ``date, symbol, <fields>`` (one row per existing bar) and the notes (one
        per conversion) that validation lists under ``changes``.

    Raises
    ------
    DataError
        As for :func:`read_qlib`, or when no field is stored at all.
    """
    root = Path(root)
    fields = qlib_field_names(root, freq)
    if not fields:
        raise DataError(f"Qlib folder {root}: no *.{freq}.bin feature files under "
                        f"{root / 'features'}")
    if (root / "instruments" / "all.txt").exists():
        instruments: str | list[str] = "all"
    else:
        instruments = sorted(e.name for e in os.scandir(root / "features")
                             if e.is_dir() and not e.name.startswith("."))
    prices: Literal["raw", "adjusted"] = "raw" if "factor" in fields else "adjusted"
    panel = read_qlib(root, instruments=instruments, fields=fields, start=start, end=end,
                      freq=freq, prices=prices)
    df = panel.to_long().sort_values(["symbol", "date"], kind="stable", ignore_index=True)
    df["symbol"] = df["symbol"].astype(str)
    where = f"Qlib folder {root}"
    which = "all.txt" if isinstance(instruments, str) else "every folder in features/"
    notes = [{"action": "qlib_import", "column": None, "old": f"{root}", "new": "long bars",
              "reason": f"{where}: instruments {which}, fields {fields}; symbols such as "
                        "SH600000 renamed 600000.SH"}]
    if prices == "raw":
        notes.append({"action": "qlib_import", "column": "adj_factor", "old": "factor",
                      "new": "adj_factor",
                      "reason": f"{where}: adjusted prices divided (volume multiplied) by "
                                "factor to raw prices; factor kept as adj_factor"})
    else:
        notes.append({"action": "qlib_import", "column": None, "old": None, "new": None,
                      "reason": f"{where}: no factor stored; prices are Qlib's adjusted "
                                "prices as stored"})
    return df, notes
