"""Parsing the ``date`` column of daily bars: explicit formats, no guessing, every change noted.

:func:`parse_dates` turns a column of dates (datetime64, time-zone-aware datetime64, integers
``YYYYMMDD`` or text) into naive ``datetime64[ns]`` and returns, next to it, a list of notes:
one dict per normalisation it applied (``action, column, old, new, reason``), which the
validation report lists under ``changes``.

Rules:

- time-zone-aware dates (a tz dtype, or text with a ``+09:00``/``Z`` offset) keep their
  local wall-clock time and lose the zone (``2013-02-08 00:00+09:00`` stays 2013-02-08: the
  trading day is the exchange's local day); the zone dropped is noted.
- ``date_format`` (a ``strptime`` format such as ``"%d/%m/%Y"``) is used as given.
- Without it, text dates in day/month order (``03/04/2016``, ``3.4.16``) are read day-first
  only when some value cannot be month-first (a first field above 12), month-first only when
  some value cannot be day-first, and otherwise refused as ambiguous with a
  :class:`~qilin.errors.DataError` that names the two formats to choose from. The order
  inferred is noted. Year-first text (``2016-03-04``, ``2016/3/4``) and ``YYYYMMDD`` are read
  as year, month, day.

Examples
--------
>>> import pandas as pd
>>> d, notes = parse_dates(pd.Series(["25/03/2016", "04/03/2016"]))
>>> [str(x.date()) for x in d], notes[0]["action"]
(['2016-03-25', '2016-03-04'], 'convert_dtype')
>>> parse_dates(pd.Series(["03/04/2016"]), source="a.csv")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
qilin.errors.DataError: a.csv column 'date': ambiguous day/month order...
>>> d, _ = parse_dates(pd.Series(["03/04/2016"]), date_format="%d/%m/%Y")
>>> str(d[0].date())
'2016-04-03'
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from qilin.errors import DataError

_OFFSET = r"(?:Z|[+-]\d{2}:?\d{2})$"
_TIME = r"(\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)"
_DMY = r"^(\d{1,2})[/.\-](\d{1,2})[/.\-](\d{2}|\d{4})(?:\s.*)?$"


def _note(action: str, old: Any, new: Any, reason: str, column: str) -> dict[str, Any]:
    return {"action": action, "column": column, "old": old, "new": new, "reason": reason}


def parse_dates(
    col: pd.Series,
    date_format: str | None = None,
    source: str = "bars",
    column: str = "date",
) -> tuple[pd.Series, list[dict[str, Any]]]:
    """Parse ``col`` into naive ``datetime64[ns]``; return it with the normalisation notes.

    Parameters
    ----------
    col : Series
        Dates as datetime64 (naive or tz-aware), integers ``YYYYMMDD`` or text.
    date_format : str, optional
        ``strptime`` format for text dates (``"%d/%m/%Y"``); values that do not match
        become NaT (reported as ``bad_date`` by validation).
    source, column : str
        Named in messages.

    Returns
    -------
    (Series, list of dict)
        The parsed dates (unparseable values are NaT) and one note per normalisation.

    Raises
    ------
    DataError
        Text dates whose day/month order cannot be told from the data (and no
        ``date_format``), or that mix both orders.
    """
    where = f"{source} column {column!r}"
    notes: list[dict[str, Any]] = []
    if pd.api.types.is_datetime64_any_dtype(col):
        tz = getattr(col.dt, "tz", None)
        if tz is not None:
            notes.append(_note("drop_timezone", str(tz), "naive", f"{where}: time zone {tz} "
                               "dropped, local wall-clock dates kept", column))
            col = col.dt.tz_localize(None)
        return col.astype("datetime64[ns]"), notes
    if pd.api.types.is_integer_dtype(col):
        notes.append(_note("convert_dtype", str(col.dtype), "datetime64[ns]",
                           f"{where}: integers read as YYYYMMDD", column))
        return pd.to_datetime(col.astype("string"), format="%Y%m%d",
                              errors="coerce").astype("datetime64[ns]"), notes
    codes, uniques = pd.factorize(col.astype("string").str.strip())
    parsed = _parse_text(pd.Series(uniques, dtype="string"), col.dtype, date_format, where,
                         column, notes)
    out = parsed.to_numpy()[codes]  # each distinct text is parsed once
    out[codes < 0] = np.datetime64("NaT")
    return pd.Series(out, index=col.index, name=col.name, dtype="datetime64[ns]"), notes


def _parse_text(text: pd.Series, dtype: Any, date_format: str | None, where: str, column: str,
                notes: list[dict[str, Any]]) -> pd.Series:
    """Parse distinct date texts (no missing values) into naive ``datetime64[ns]``."""
    present = text
    if date_format is not None:
        notes.append(_note("convert_dtype", str(dtype), "datetime64[ns]",
                           f"{where}: text dates read with date_format={date_format!r}", column))
        try:
            out = pd.to_datetime(text, format=date_format, errors="coerce")
        except (ValueError, TypeError) as exc:
            raise DataError(f"{where}: date_format {date_format!r} is not a valid strptime "
                            f"format ({exc}); e.g. '%d/%m/%Y'") from None
        return _naive(out, notes, where, column)
    if len(present) and present.str.fullmatch(r"\d{8}").all():
        notes.append(_note("convert_dtype", str(dtype), "datetime64[ns]",
                           f"{where}: text dates read as YYYYMMDD", column))
        return pd.to_datetime(text, format="%Y%m%d", errors="coerce").astype(
            "datetime64[ns]")
    has_offset = present.str.contains(_TIME.replace("(", "(?:", 1) + r"\s*" + _OFFSET,
                                      regex=True)
    if has_offset.any():
        offsets = present[has_offset].str.extract("(" + _OFFSET[:-1] + r")$")[0]
        kinds = sorted(set(offsets.dropna().tolist()))
        notes.append(_note("drop_timezone", ", ".join(kinds[:5]), "naive",
                           f"{where}: {int(has_offset.sum())} date(s) with a UTC offset; "
                           "offset dropped, local wall-clock dates kept", column))
        text = text.str.replace(_TIME + r"\s*" + _OFFSET, r"\1", regex=True)
        present = text.dropna()
    fmt = _day_month_order(present, where)
    if fmt is not None:
        notes.append(_note("convert_dtype", str(dtype), "datetime64[ns]",
                           f"{where}: text dates read {fmt[1]}", column))
        out = pd.to_datetime(text, dayfirst=fmt[0], errors="coerce", format="mixed")
    else:
        if len(present):
            notes.append(_note("convert_dtype", str(dtype), "datetime64[ns]",
                               f"{where}: text dates parsed", column))
        try:
            out = pd.to_datetime(text, errors="coerce", format="mixed")
        except (ValueError, TypeError) as exc:
            raise DataError(f"{where}: cannot parse the dates ({exc}); pass date_format "
                            "(--date-format), e.g. '%Y-%m-%d'") from None
    return _naive(out, notes, where, column)


def _naive(out: pd.Series, notes: list[dict[str, Any]], where: str, column: str) -> pd.Series:
    tz = getattr(out.dt, "tz", None)
    if tz is not None:
        notes.append(_note("drop_timezone", str(tz), "naive",
                           f"{where}: time zone {tz} dropped, local wall-clock dates kept",
                           column))
        out = out.dt.tz_localize(None)
    return out.astype("datetime64[ns]")


def _day_month_order(present: pd.Series, where: str) -> tuple[bool, str] | None:
    """``(dayfirst, description)`` for day/month-order text dates, None for other forms."""
    parts = present.str.extract(_DMY)
    matched = parts[0].notna()
    if not matched.any():
        return None
    first = parts.loc[matched, 0].astype(int)
    second = parts.loc[matched, 1].astype(int)
    day_first = bool((first > 12).any())
    month_first = bool((second > 12).any())
    ex = present[matched]
    if day_first and month_first:
        a = ex[(first > 12).to_numpy()].iloc[0]
        b = ex[(second > 12).to_numpy()].iloc[0]
        raise DataError(f"{where}: dates mix day/month order ({a!r} is day-first, {b!r} is "
                        "month-first); fix the file or pass date_format (--date-format)")
    if day_first:
        return True, "day-first (dd/mm/yyyy): some first fields exceed 12"
    if month_first:
        return False, "month-first (mm/dd/yyyy): some second fields exceed 12"
    sep = next((ch for ch in ex.iloc[0] if ch in "/.-"), "/")
    year = "%Y" if len(parts.loc[matched, 2].iloc[0]) == 4 else "%y"
    raise DataError(
        f"{where}: ambiguous day/month order: every date (e.g. {ex.iloc[0]!r}) reads both "
        f"ways; pass date_format='%d{sep}%m{sep}{year}' or '%m{sep}%d{sep}{year}' "
        "(CLI: --date-format)")
