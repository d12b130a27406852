"""Validation of long-format daily bars, with a report of every finding and every change.

:func:`validate_bars` runs the checks in :data:`CHECKS` over ``date, symbol, open, high, low,
close, volume`` (plus the optional ``amount, preclose, adj_factor, ...``) and applies a policy:

``auto`` (the default of :func:`~qilin.data.loader.load_panel` and of ``--validate``)
    Stop (:class:`~qilin.errors.ValidationError`, report attached) only on findings that
    would corrupt results if the bars were used as they are (:data:`BLOCKING`, repeated
    ``(date, symbol)`` rows whose values differ, and decimal shifts: a jump by a power of
    ten that reverses); the message names ``--validate repair|drop|none`` and what each
    would change. Every other finding is kept in the report and the bars pass unchanged
    (a NaN price or volume is missing data to every computation), except that identical
    copies of a repeated row are removed (recorded).
``raise``
    Raise :class:`~qilin.errors.ValidationError` (report attached) when any finding has
    severity ``error``; otherwise return the bars sorted by symbol then date.
``drop``
    Remove every row with an error finding (for a repeated ``(date, symbol)`` pair, the
    earlier copies; the last one is kept) and list each removed row in ``report.changes``.
``repair``
    Fix what is safely fixable and record every changed cell: repeated pairs keep the last
    copy, a date with a time of day is floored to its day, and an open or close outside
    ``[low, high]`` (or ``high < low``) widens ``high`` and
    ``low`` to the bar's extremes (``ohlc_fix="widen"``, the default) or clips open and close
    into ``[low, high]`` (``ohlc_fix="clip"``). Rows with errors that cannot be fixed safely
    (missing or non-positive prices, bad dates, negative volume, spikes that reverse) are
    dropped and listed, as under ``drop``.

Warnings (zero volume, one-day jumps that look like unadjusted splits, other large jumps,
A-share price-limit breaches, ``preclose`` that disagrees with the previous close) never
remove or change rows; they are only reported. Nothing is changed silently: column renames,
time zones dropped, dates parsed (and the day/month order used), symbols stripped of spaces,
sorting, de-duplication, dtype conversions, dropped rows and repaired cells all appear in
``report.changes``.

Examples
--------
>>> import pandas as pd
>>> bars = pd.DataFrame({
...     "date": pd.to_datetime(["2024-01-02", "2024-01-03", "2024-01-02"]),
...     "symbol": ["A", "A", "B"],
...     "open": [10.0, 10.2, 5.0], "high": [10.5, 10.4, 5.2],
...     "low": [9.8, 10.1, 4.9], "close": [10.2, 10.6, 5.1],
...     "volume": [1000.0, 0.0, 300.0]})
>>> clean, report = validate_bars(bars, policy="repair")
>>> report.counts().to_dict()
{'close_outside_range': 1, 'zero_volume': 1}
>>> clean.loc[1, "high"]
np.float64(10.6)
>>> report.ok
False
>>> validate_bars(bars, policy="raise")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
qilin.errors.ValidationError: bars failed validation: 1 error finding(s) ...(close 10.6 > high 10.4)
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from qilin.atomic import write_text_atomic
from qilin.config import MarketConfig
from qilin.data.dates import parse_dates
from qilin.errors import DataError, ValidationError

Policy = Literal["auto", "raise", "drop", "repair"]
POLICIES = ("auto", "raise", "drop", "repair")
REQUIRED_COLUMNS = ("date", "symbol", "open", "high", "low", "close", "volume")
PRICE_COLUMNS = ("open", "high", "low", "close")
OPTIONAL_NUMERIC = ("amount", "preclose", "adj_factor", "float_mcap", "total_mcap", "vwap")
FINDING_COLUMNS = ("check", "severity", "symbol", "date", "column", "value", "detail", "row")
CHANGE_COLUMNS = ("action", "symbol", "date", "column", "old", "new", "reason", "row")

#: Every check: name -> (severity, what it means).
CHECKS: dict[str, tuple[str, str]] = {
    "missing_column": ("error", "a required column is absent"),
    "bad_date": ("error", "date is missing or not parseable as a date"),
    "time_of_day": ("error", "date carries a time of day (daily bars are dated at midnight; "
                             "often a time-zone conversion): repair floors it to the day"),
    "missing_symbol": ("error", "symbol is missing or empty"),
    "mixed_symbol_forms": ("error", "one numeric code written two ways (1, 000001, 000001.SZ): "
                                    "one stock would count as two"),
    "bad_value": ("error", "a numeric column holds a value that is not a number"),
    "duplicate_row": ("error", "the (date, symbol) pair repeats; the earlier copy is reported"),
    "nan_price": ("error", "open/high/low/close is NaN or infinite"),
    "nonpositive_price": ("error", "open/high/low/close is <= 0"),
    "nan_volume": ("error", "volume is NaN or infinite"),
    "negative_volume": ("error", "volume is negative"),
    "high_below_low": ("error", "high < low"),
    "open_outside_range": ("error", "open is outside [low, high]"),
    "close_outside_range": ("error", "close is outside [low, high]"),
    "jump_reversal": ("error", "a price jump beyond the threshold that reverses within a few "
                               "bars (decimal shift, bad tick, flip between adjusted and raw)"),
    "unsorted": ("warning", "rows are not sorted by symbol then date"),
    "nan_value": ("warning", "an optional numeric column is NaN or infinite"),
    "zero_volume": ("warning", "volume is zero"),
    "split_jump": ("warning", "a one-day price ratio near 2, 3, 4, 5, 10, 20, 100 (or inverse) "
                              "without an adj_factor change: an unadjusted split?"),
    "large_jump": ("warning", "|log return| beyond the threshold that does not reverse"),
    "limit_breach": ("warning", "A-share close/high/low outside the daily price limit from "
                                "preclose (first bars after listing excluded)"),
    "preclose_mismatch": ("warning", "preclose differs from the previous close while "
                                     "adj_factor is unchanged"),
}
#: Errors that ``repair`` fixes in place (rows with any other error are dropped).
REPAIRABLE = frozenset({"time_of_day", "duplicate_row", "high_below_low", "open_outside_range",
                        "close_outside_range"})
#: Under ``auto``, the errors that stop (they would corrupt results if used as they are);
#: ``duplicate_row`` stops only when the copies differ and ``jump_reversal`` only for a
#: decimal shift (a jump by a power of ten that reverses). Other errors pass, reported.
BLOCKING = frozenset({"bad_date", "missing_symbol", "mixed_symbol_forms", "bad_value",
                      "time_of_day", "nonpositive_price", "negative_volume"})
_SPLIT_RATIOS = np.log([2.0, 3.0, 4.0, 5.0, 10.0, 20.0, 100.0])
_DECIMAL_RATIOS = np.log([10.0, 100.0, 1000.0, 10000.0])
_REL_TOL = 1e-9


@dataclass
class ValidationReport:
    """What validation found and what it changed.

    Attributes
    ----------
    findings : DataFrame
        One row per finding: ``check, severity, symbol, date, column, value, detail, row``
        (``row`` is the position in the input, -1 for whole-column findings).
    changes : DataFrame
        One row per change: ``action`` (``drop_row``, ``set_value``, ``sort``, ``dedupe``,
        ``convert_dtype``, ``rename_column``), ``symbol, date, column, old, new, reason, row``.
    policy : str
    source : str or None
        The file the bars came from, when known.
    market : str or None
    n_rows_in, n_rows_out : int
    """

    findings: pd.DataFrame
    changes: pd.DataFrame
    policy: str = "raise"
    source: str | None = None
    market: str | None = None
    n_rows_in: int = 0
    n_rows_out: int = 0
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def errors(self) -> pd.DataFrame:
        """Findings with severity ``error``."""
        return self.findings[self.findings["severity"] == "error"]

    @property
    def warnings(self) -> pd.DataFrame:
        """Findings with severity ``warning``."""
        return self.findings[self.findings["severity"] == "warning"]

    @property
    def ok(self) -> bool:
        """True when there is no finding at all."""
        return self.findings.empty

    @property
    def has_errors(self) -> bool:
        """True when at least one finding has severity ``error``."""
        return not self.errors.empty

    def counts(self) -> pd.Series:
        """Number of findings per check (checks without findings are left out).

        Examples
        --------
        >>> _, rep = validate_bars(_tiny_bars(volume=[0.0, 5.0]), policy="drop")
        >>> rep.counts().to_dict()
        {'zero_volume': 1}
        """
        if self.findings.empty:
            return pd.Series(dtype="int64", name="count")
        counts = self.findings["check"].value_counts()
        order = [c for c in CHECKS if c in counts.index]
        return counts.reindex(order).rename("count").rename_axis("check")

    def for_symbol(self, symbol: str) -> pd.DataFrame:
        """Findings for one symbol."""
        return self.findings[self.findings["symbol"] == symbol]

    def summary(self, max_examples: int = 3) -> str:
        """Readable text: totals, then each check with its count and first examples."""
        n_err = int((self.findings["severity"] == "error").sum())
        n_warn = int((self.findings["severity"] == "warning").sum())
        head = [
            f"validation of {self.source or 'bars'} (policy={self.policy}"
            f"{', market=' + self.market if self.market else ''})",
            f"rows: {self.n_rows_in} in, {self.n_rows_out} out; "
            f"{n_err} error(s), {n_warn} warning(s); {len(self.changes)} change(s)",
        ]
        if self.findings.empty:
            head.append("no findings: the bars passed every check")
        for check, count in self.counts().items():
            sev, what = CHECKS[str(check)]
            head.append(f"  [{sev}] {check}: {count} ({what})")
            sub = self.findings[self.findings["check"] == check].head(max_examples)
            for rec in sub.itertuples():
                where = " ".join(x for x in (_fmt_sym(rec.symbol), _fmt_date(rec.date)) if x)
                head.append(f"      {where or '-'}: {rec.detail}")
        if not self.changes.empty:
            acts = self.changes["action"].value_counts()
            head.append("changes: " + ", ".join(f"{a} {n}" for a, n in acts.items()))
        return "\n".join(head)

    def brief(self) -> str:
        """One line: the source, policy, counts per check and number of changes.

        Examples
        --------
        >>> _, rep = validate_bars(_tiny_bars(volume=[0.0, 5.0]), policy="drop")
        >>> rep.brief()
        'validation of bars (policy=drop): 0 error(s), 1 warning(s) (zero_volume 1); 0 change(s)'
        """
        counts = " ".join(f"{k} {v}" for k, v in self.counts().items())
        return (f"validation of {self.source or 'bars'} (policy={self.policy}): "
                f"{len(self.errors)} error(s), {len(self.warnings)} warning(s)"
                f"{' (' + counts + ')' if counts else ''}; {len(self.changes)} change(s)")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: metadata, counts, findings and changes as lists of records."""
        return {
            "source": self.source,
            "policy": self.policy,
            "market": self.market,
            "params": self.params,
            "n_rows_in": self.n_rows_in,
            "n_rows_out": self.n_rows_out,
            "ok": self.ok,
            "has_errors": self.has_errors,
            "counts": {str(k): int(v) for k, v in self.counts().items()},
            "findings": _records(self.findings),
            "changes": _records(self.changes),
        }

    def to_json(self, path: str | os.PathLike[str] | None = None) -> str:
        """The report as JSON text; written atomically to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False)
        if path is not None:
            write_text_atomic(path, text)
        return text


def _fmt_sym(sym: Any) -> str:
    return "" if sym is None or (isinstance(sym, float) and math.isnan(sym)) else str(sym)


def _fmt_date(date: Any) -> str:
    if date is None or date is pd.NaT or (isinstance(date, float) and math.isnan(date)):
        return ""
    return str(pd.Timestamp(date).date())


def _json_value(v: Any) -> Any:
    if v is None or v is pd.NaT:
        return None
    if isinstance(v, pd.Timestamp):
        return str(v.date()) if v == v.normalize() else v.isoformat()
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    cols = list(df.columns)
    return [{c: _json_value(v) for c, v in zip(cols, row, strict=True)}
            for row in df.itertuples(index=False, name=None)]


def _empty(columns: Iterable[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})


class _Collector:
    """Accumulates findings and changes as vectorised blocks."""

    def __init__(self) -> None:
        self.findings: list[pd.DataFrame] = []
        self.changes: list[pd.DataFrame] = []

    def add(self, check: str, work: pd.DataFrame, mask: Any, column: str | None,
            value: Any, detail: Any) -> None:
        mask = np.asarray(mask, dtype=bool)
        n = int(mask.sum())
        if not n:
            return
        sub = work.loc[mask]
        if callable(value):
            value = value(np.flatnonzero(mask))
        if callable(detail):
            detail = detail(np.flatnonzero(mask))
        self.findings.append(pd.DataFrame({
            "check": check, "severity": CHECKS[check][0],
            "symbol": sub["symbol"].to_numpy(dtype=object),
            "date": sub["date"].to_numpy(),
            "column": column,
            "value": _select(value, mask, n),
            "detail": _select(detail, mask, n),
            "row": sub["_row"].to_numpy(),
        }))

    def add_global(self, check: str, column: str | None, value: Any, detail: str) -> None:
        self.findings.append(pd.DataFrame({
            "check": [check], "severity": [CHECKS[check][0]], "symbol": [None],
            "date": [pd.NaT], "column": [column], "value": [value], "detail": [detail],
            "row": [-1]}))

    def change(self, action: str, sub: pd.DataFrame | None, column: str | None,
               old: Any, new: Any, reason: Any) -> None:
        if sub is None:
            self.changes.append(pd.DataFrame({
                "action": [action], "symbol": [None], "date": [pd.NaT], "column": [column],
                "old": [old], "new": [new], "reason": [reason], "row": [-1]}))
            return
        if sub.empty:
            return
        self.changes.append(pd.DataFrame({
            "action": action, "symbol": sub["symbol"].to_numpy(dtype=object),
            "date": sub["date"].to_numpy(), "column": column,
            "old": _as_obj(old, len(sub)), "new": _as_obj(new, len(sub)),
            "reason": _as_obj(reason, len(sub)), "row": sub["_row"].to_numpy()}))

    def frames(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        f = (pd.concat(self.findings, ignore_index=True) if self.findings
             else _empty(FINDING_COLUMNS))
        if not f.empty:
            order = {c: i for i, c in enumerate(CHECKS)}
            f = (f.assign(_o=f["check"].map(order))
                 .sort_values(["_o", "symbol", "date", "row"], kind="stable")
                 .drop(columns="_o").reset_index(drop=True))
            f["date"] = pd.to_datetime(f["date"])
        c = pd.concat(self.changes, ignore_index=True) if self.changes else _empty(CHANGE_COLUMNS)
        return f[list(FINDING_COLUMNS)], c[list(CHANGE_COLUMNS)]


def _select(x: Any, mask: np.ndarray, n: int) -> Any:
    if isinstance(x, pd.Series | np.ndarray | list) and len(x) == n and len(x) != len(mask):
        return np.asarray(x, dtype=object)
    if isinstance(x, pd.Series | np.ndarray):
        return np.asarray(x)[mask]
    if isinstance(x, list):
        return np.asarray(x, dtype=object)[mask]
    return [x] * n


def _as_obj(x: Any, n: int) -> Any:
    if isinstance(x, pd.Series | np.ndarray | list):
        return np.asarray(x, dtype=object)
    return [x] * n


def _market_name(market: str | MarketConfig | None) -> str | None:
    if market is None:
        return None
    if isinstance(market, MarketConfig):
        return market.name
    if market not in ("cn", "us"):
        raise DataError(f"parameter market: expected 'cn', 'us' or a MarketConfig, got {market!r}")
    return market


def validate_bars(
    df: pd.DataFrame,
    policy: Policy = "raise",
    market: str | MarketConfig | None = None,
    jump_threshold: float = 0.4,
    reversal_window: int = 5,
    split_tolerance: float = 0.03,
    ohlc_fix: Literal["widen", "clip"] = "widen",
    listing_grace: int = 5,
    source: str | None = None,
    date_format: str | None = None,
) -> tuple[pd.DataFrame, ValidationReport]:
    """Check long daily bars and apply a policy; see the module docstring for the policies.

    Parameters
    ----------
    df : DataFrame
        Long bars with at least ``date, symbol, open, high, low, close, volume``.
    policy : {"raise", "auto", "drop", "repair"}
        See the module docstring; ``auto`` stops only on findings that would corrupt
        results.
    market : {"cn", "us"}, MarketConfig or None
        ``"cn"`` adds the A-share checks (price limits from ``preclose``, ``preclose``
        against the previous close).
    jump_threshold : float
        ``|log(close_t / close_t-1)|`` beyond which a move is a jump (0.4: +49% / -33%).
        Computed on ``close * adj_factor`` when ``adj_factor`` is present, so corporate
        actions that the factor accounts for are not jumps.
    reversal_window : int
        A jump that is undone (the price comes back within 25% of the jump in log terms)
        within this many bars is a ``jump_reversal`` error; the bars in between are flagged.
    split_tolerance : float
        Log distance to a split ratio (2, 3, 1.5, 10, ...) under which a jump is
        ``split_jump``.
    ohlc_fix : {"widen", "clip"}
        How ``repair`` fixes open/close outside ``[low, high]``.
    listing_grace : int
        Bars after a symbol's first bar excluded from the A-share limit check (new listings
        trade without limits for their first days).
    source : str, optional
        File name used in messages and in the report.
    date_format : str, optional
        ``strptime`` format for text dates (see :func:`qilin.data.dates.parse_dates`);
        without it, ambiguous day/month text dates raise :class:`~qilin.errors.DataError`.

    Returns
    -------
    (DataFrame, ValidationReport)
        The bars after the policy (sorted by symbol then date, fresh index) and the report.

    Raises
    ------
    ValidationError
        Under ``raise`` when there are error findings, under ``auto`` when there are
        findings that would corrupt results, and under every policy when a
        required column is missing (report attached as ``.report``).
    DataError
        For a bad parameter, or text dates whose day/month order is ambiguous.

    Notes
    -----
    Normalisations applied before validation and recorded in ``df.attrs`` by the loader
    (``renamed_columns``, ``normalisations``: time zones dropped, dates parsed) are copied
    into ``report.changes``, so the report lists every change from the file to the result.
    """
    if policy not in POLICIES:
        raise DataError(f"parameter policy: expected one of {POLICIES}, got {policy!r}")
    if ohlc_fix not in ("widen", "clip"):
        raise DataError(f"parameter ohlc_fix: expected 'widen' or 'clip', got {ohlc_fix!r}")
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"validate_bars expects a pandas DataFrame, got {type(df).__name__}")
    if not jump_threshold > 0:
        raise DataError(f"parameter jump_threshold must be > 0, got {jump_threshold}")
    mkt = _market_name(market)
    where = f" in {source}" if source else ""
    params = {"jump_threshold": jump_threshold, "reversal_window": reversal_window,
              "split_tolerance": split_tolerance, "ohlc_fix": ohlc_fix,
              "listing_grace": listing_grace}
    col = _Collector()

    def report(out_rows: int) -> ValidationReport:
        f, c = col.frames()
        return ValidationReport(f, c, policy, source, mkt, len(df), out_rows, params)

    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    for c in missing:
        col.add_global("missing_column", c, None,
                       f"required column {c!r} is absent{where}; columns: {list(df.columns)}")
    if missing:
        rep = report(0)
        raise ValidationError(f"bars{where} lack required column(s) {missing}; columns: "
                              f"{list(df.columns)}", rep)

    work = df.reset_index(drop=True).copy()
    work["_row"] = np.arange(len(work))

    # ---- normalisations done by the loader (column renames, dates parsed, zones dropped)
    for orig, new_name in dict(df.attrs.get("renamed_columns") or {}).items():
        col.change("rename_column", None, new_name, orig, new_name, "column-name normalisation")
    for note in df.attrs.get("normalisations") or ():
        col.change(note["action"], None, note.get("column"), note.get("old"), note.get("new"),
                   note.get("reason"))

    # ---- types
    dates, notes = parse_dates(work["date"], date_format=date_format, source=source or "bars")
    for note in notes:
        col.change(note["action"], None, note["column"], note["old"], note["new"],
                   note["reason"])
    bad_date = dates.isna().to_numpy().copy()
    work["date"] = dates
    sym_missing = work["symbol"].isna().to_numpy().copy()
    work["symbol"] = work["symbol"].astype(object).where(~sym_missing, None)
    if not sym_missing.all():
        present = ~sym_missing
        if not pd.api.types.is_string_dtype(df["symbol"]) or \
                pd.api.types.is_bool_dtype(df["symbol"]):
            col.change("convert_dtype", None, "symbol", str(df["symbol"].dtype), "str",
                       "symbols converted to text")
        as_text = work.loc[present, "symbol"].astype(str)
        stripped = as_text.str.strip()
        changed = np.zeros(len(work), dtype=bool)
        changed[np.flatnonzero(present)] = (stripped != as_text).to_numpy()
        work.loc[present, "symbol"] = stripped
        if changed.any():
            col.change("set_value", work.loc[changed], "symbol",
                       as_text[changed[present]].to_numpy(dtype=object),
                       stripped[changed[present]].to_numpy(dtype=object),
                       "leading/trailing spaces stripped from symbol")
    sym_missing = sym_missing | (work["symbol"] == "").to_numpy()
    mixed = _mixed_symbols(col, work, sym_missing, policy)
    raw_dates = df["date"]
    col.add("bad_date", work, bad_date, "date",
            lambda i: raw_dates.iloc[i].astype(str).to_numpy(),
            "date is missing or not a date")
    col.add("missing_symbol", work, sym_missing, "symbol", None, "symbol is missing")
    day = work["date"].dt.normalize()
    tod = (~bad_date & (work["date"] != day)).to_numpy()
    col.add("time_of_day", work, tod, "date",
            lambda i: work["date"].iloc[i].astype(str).to_numpy(),
            lambda i: [f"date {d} has a time of day; daily bars are dated at midnight"
                       for d in work["date"].iloc[i]])
    if tod.any() and policy == "repair":
        col.change("set_value", work.loc[tod], "date", work.loc[tod, "date"].to_numpy(),
                   day[tod].to_numpy(), "time of day removed (repair)")
        work.loc[tod, "date"] = day[tod]
        tod = np.zeros(len(work), dtype=bool)

    bad_value = np.zeros(len(work), dtype=bool)
    for c in (*PRICE_COLUMNS, "volume", *OPTIONAL_NUMERIC):
        if c not in work.columns:
            continue
        if pd.api.types.is_bool_dtype(work[c]) or not pd.api.types.is_numeric_dtype(work[c]):
            raw = work[c]
            num = pd.to_numeric(raw, errors="coerce")
            unparsed = (num.isna() & raw.notna()).to_numpy()
            col.add("bad_value", work, unparsed, c,
                    lambda i, raw=raw: raw.iloc[i].astype(str).to_numpy(),
                    lambda i, raw=raw, c=c: [f"{c} {v!r} is not a number"
                                             for v in raw.iloc[i].to_numpy()])
            col.change("convert_dtype", None, c, str(raw.dtype), "float64",
                       f"{int(unparsed.sum())} value(s) not numeric")
            if c in (*PRICE_COLUMNS, "volume"):
                bad_value |= unparsed
            work[c] = num.astype("float64")
        elif work[c].dtype != np.float64:
            work[c] = work[c].astype("float64")

    # ---- order and duplicates (stable sort: "last" means last in the input)
    key_ok = ~(bad_date | sym_missing)
    ordered = work.sort_values(["symbol", "date"], kind="stable", na_position="last")
    if not np.array_equal(ordered["_row"].to_numpy(), work["_row"].to_numpy()):
        n_out = int((ordered["_row"].to_numpy() != np.arange(len(work))).sum())
        col.add_global("unsorted", None, n_out,
                       f"{n_out} row(s) out of (symbol, date) order{where}")
        col.change("sort", None, None, None, None, "sorted by symbol then date")
    work = ordered.reset_index(drop=True)
    key_ok = key_ok[work["_row"].to_numpy()]
    bad_date = bad_date[work["_row"].to_numpy()]
    sym_missing = sym_missing[work["_row"].to_numpy()]
    bad_value = bad_value[work["_row"].to_numpy()]
    tod = tod[work["_row"].to_numpy()]
    mixed = mixed[work["_row"].to_numpy()]
    dup = work.duplicated(["symbol", "date"], keep="last").to_numpy() & key_ok
    col.add("duplicate_row", work, dup, None, work["close"].to_numpy(),
            "(date, symbol) repeats; a later row wins")

    # ---- values
    err = {name: np.zeros(len(work), dtype=bool) for name in CHECKS}
    err["bad_date"], err["missing_symbol"], err["bad_value"] = bad_date, sym_missing, bad_value
    err["time_of_day"] = tod
    err["mixed_symbol_forms"] = mixed
    err["duplicate_row"] = dup
    finite = {}
    for c in PRICE_COLUMNS:
        v = work[c].to_numpy()
        fin = np.isfinite(v)
        finite[c] = fin & (v > 0)
        m = ~fin & ~bad_value
        col.add("nan_price", work, m, c, v, f"{c} is NaN or infinite")
        err["nan_price"] |= m
        m = fin & (v <= 0)
        col.add("nonpositive_price", work, m, c, v,
                lambda i, v=v, c=c: [f"{c} {x:g} <= 0" for x in v[i]])
        err["nonpositive_price"] |= m
    vol = work["volume"].to_numpy()
    m = ~np.isfinite(vol) & ~bad_value
    col.add("nan_volume", work, m, "volume", vol, "volume is NaN or infinite")
    err["nan_volume"] = m
    m = vol < 0
    col.add("negative_volume", work, m, "volume", vol,
            lambda i: [f"volume {x:g} < 0" for x in vol[i]])
    err["negative_volume"] = m
    col.add("zero_volume", work, vol == 0, "volume", vol, "volume is 0")
    for c in OPTIONAL_NUMERIC:
        if c in work.columns:
            v = work[c].to_numpy()
            col.add("nan_value", work, ~np.isfinite(v), c, v, f"{c} is NaN or infinite")

    # ---- OHLC consistency
    o, h, l, c_ = (work[x].to_numpy() for x in PRICE_COLUMNS)
    all4 = finite["open"] & finite["high"] & finite["low"] & finite["close"]
    tol_h, tol_l = h * (1 + _REL_TOL), l * (1 - _REL_TOL)
    hbl = all4 & (h < l * (1 - _REL_TOL))
    col.add("high_below_low", work, hbl, "high", h,
            lambda i: [f"high {a:g} < low {b:g}" for a, b in zip(h[i], l[i], strict=True)])
    err["high_below_low"] = hbl
    ranged = all4 & ~hbl  # with high < low there is no range to be outside of
    for name, px in (("open", o), ("close", c_)):
        above, below = ranged & (px > tol_h), ranged & (px < tol_l)
        col.add(f"{name}_outside_range", work, above | below, name, px,
                lambda i, px=px, name=name: [
                    f"{name} {px[k]:g} > high {h[k]:g}" if px[k] > h[k]
                    else f"{name} {px[k]:g} < low {l[k]:g}" for k in i])
        err[f"{name}_outside_range"] = above | below

    # ---- jumps (per symbol, on rows with a usable close, adjusted when a factor exists)
    usable = finite["close"] & key_ok & ~dup
    px = c_.copy()
    has_adj = "adj_factor" in work.columns
    if has_adj:
        adj = work["adj_factor"].to_numpy()
        px = np.where(np.isfinite(adj) & (adj > 0), c_ * adj, c_)
    idx = np.flatnonzero(usable)
    if len(idx) > 1:
        sym = work["symbol"].to_numpy(dtype=object)[idx]
        lp = np.log(px[idx])
        r = np.diff(lp, prepend=np.nan)
        same = np.r_[False, sym[1:] == sym[:-1]]
        r[~same] = np.nan
        decimal = _flag_jumps(col, work, err, idx, sym, r, px, jump_threshold,
                              reversal_window, split_tolerance)
    else:
        decimal = np.zeros(len(work), dtype=bool)

    # ---- A-share market rules
    if mkt == "cn":
        _cn_checks(col, work, usable, listing_grace)

    # ---- policy
    error_rows = np.zeros(len(work), dtype=bool)
    for name, m in err.items():
        if CHECKS[name][0] == "error":
            error_rows |= m
    f_partial, _ = col.frames()
    n_errors = int((f_partial["severity"] == "error").sum())
    if policy == "raise":
        if n_errors:
            rep = report(0)
            errs = rep.errors
            counts = rep.counts()
            err_counts = ", ".join(f"{k}: {v}" for k, v in counts.items()
                                   if CHECKS[str(k)][0] == "error")
            first = errs.iloc[0]
            loc = " ".join(x for x in (_fmt_sym(first["symbol"]), _fmt_date(first["date"])) if x)
            raise ValidationError(
                f"bars{where} failed validation: {n_errors} error finding(s) ({err_counts}); "
                f"first: {first['check']} {loc} ({first['detail']})", rep)
        out = work
    elif policy == "auto":
        conflict = dup & _conflicting(work) if dup.any() else dup
        block = conflict | (err["jump_reversal"] & decimal)
        for name in BLOCKING:
            block |= err[name]
        if block.any():
            raise ValidationError(_auto_message(report(0), work, err, block, conflict,
                                                decimal, error_rows, dup, where),
                                  report(0))
        if dup.any():
            _record_drops(col, work, err, dup, dedupe=dup)
        out = work.loc[~dup]
    elif policy == "drop":
        _record_drops(col, work, err, error_rows)
        out = work.loc[~error_rows]
    else:
        fixable_only = np.ones(len(work), dtype=bool)
        for name, m in err.items():
            if CHECKS[name][0] == "error" and name not in REPAIRABLE:
                fixable_only &= ~m
        drop = error_rows & ~fixable_only
        drop |= dup
        _record_drops(col, work, err, drop, dedupe=dup)
        keep = ~drop
        fix = keep & (err["high_below_low"] | err["open_outside_range"]
                      | err["close_outside_range"])
        work = _repair_ohlc(col, work, fix, ohlc_fix)
        out = work.loc[keep]
    out = out.drop(columns="_row").reset_index(drop=True)
    return out, report(len(out))


def _mixed_symbols(col: _Collector, work: pd.DataFrame, sym_missing: np.ndarray,
                   policy: str) -> np.ndarray:
    """Flag short code forms (``1`` next to ``000001.SZ``); ``repair`` rewrites unique ones."""
    from qilin.data.symbols import full_form_of, mixed_forms

    mixed = np.zeros(len(work), dtype=bool)
    forms = mixed_forms(pd.unique(work.loc[~sym_missing, "symbol"]))
    if not forms:
        return mixed
    sym = work["symbol"].to_numpy(dtype=object)
    mixed = work["symbol"].isin(list(forms)).to_numpy() & ~sym_missing
    col.add("mixed_symbol_forms", work, mixed, "symbol", sym,
            lambda i: [f"symbol {sym[k]!r} and {', '.join(map(repr, forms[sym[k]]))} look like "
                       "one code written two ways" for k in i])
    if policy == "repair":
        full = full_form_of(forms)
        fix = mixed & work["symbol"].isin(list(full)).to_numpy()
        old = sym[fix]
        new = np.array([full[s] for s in old], dtype=object)
        work.loc[fix, "symbol"] = new
        col.change("set_value", work.loc[fix], "symbol", old, new,
                   "short code form rewritten to the one full form in the file (repair)")
        mixed &= ~fix
    return mixed


def _conflicting(work: pd.DataFrame) -> np.ndarray:
    """Rows whose (date, symbol) repeats with different values in some column."""
    cols = [c for c in work.columns if c != "_row"]
    h = pd.util.hash_pandas_object(work[cols], index=False)
    n = h.groupby([work["symbol"], work["date"]], dropna=False).transform("nunique")
    return (n > 1).to_numpy()


def _auto_message(rep: ValidationReport, work: pd.DataFrame, err: dict[str, np.ndarray],
                  block: np.ndarray, conflict: np.ndarray, decimal: np.ndarray,
                  error_rows: np.ndarray, dup: np.ndarray, where: str) -> str:
    """One line: what would corrupt results, and what each --validate choice would change."""
    kinds = {n: int(err[n].sum()) for n in sorted(BLOCKING) if err[n].any()}
    if conflict.any():
        kinds["duplicate_row with different values"] = int(conflict.sum())
    if (err["jump_reversal"] & decimal).any():
        kinds["jump_reversal by a power of ten (decimal shift)"] = int(
            (err["jump_reversal"] & decimal).sum())
    rows = set(work.loc[block, "_row"].tolist())
    errs = rep.errors
    first = errs[errs["row"].isin(rows)]
    first = first.iloc[0] if len(first) else errs.iloc[0]
    loc = " ".join(x for x in (_fmt_sym(first["symbol"]), _fmt_date(first["date"])) if x)
    nonrep = np.zeros(len(work), dtype=bool)
    for name, m in err.items():
        if CHECKS[name][0] == "error" and name not in REPAIRABLE:
            nonrep |= m
    r_drop = nonrep | dup
    r_fix = error_rows & ~r_drop
    return (f"bars{where}: {int(block.sum())} row(s) would corrupt results if used as they are "
            f"({', '.join(f'{k}: {v}' for k, v in kinds.items())}); first: {first['check']} "
            f"{loc} ({first['detail']}). Choose with --validate (validate= in Python): "
            f"'repair' fixes {int(r_fix.sum())} row(s), keeps the last of repeated rows and "
            f"drops {int(r_drop.sum())} row(s) in all; 'drop' drops the {int(error_rows.sum())} "
            "row(s) with an error finding; 'none' uses the bars unchecked")


def _flag_jumps(col: _Collector, work: pd.DataFrame, err: dict[str, np.ndarray],
                idx: np.ndarray, sym: np.ndarray, r: np.ndarray, px: np.ndarray,
                threshold: float, window: int, tolerance: float) -> np.ndarray:
    big = np.flatnonzero(np.abs(np.nan_to_num(r)) > threshold)
    n = len(r)
    reversal = np.zeros(n, dtype=bool)
    shifted = np.zeros(n, dtype=bool)
    consumed = np.zeros(n, dtype=bool)
    detail_rev: dict[int, str] = {}
    for i in big:
        if consumed[i]:
            continue
        cum = 0.0
        for j in range(i + 1, min(n, i + window + 1)):
            if sym[j] != sym[i] or np.isnan(r[j]):
                break
            cum = r[i] + np.nansum(r[i + 1:j + 1])
            if abs(r[j]) > threshold and np.sign(r[j]) != np.sign(r[i]) \
                    and abs(cum) < 0.25 * abs(r[i]):
                reversal[i:j] = True
                if np.min(np.abs(abs(r[i]) - _DECIMAL_RATIOS)) < tolerance:
                    shifted[i:j] = True
                consumed[i:j + 1] = True
                for k in range(i, j):
                    detail_rev[k] = (f"price x{math.exp(r[i]):.3g} on a jump, back within "
                                     f"{j - i} bar(s) (x{math.exp(r[j]):.3g})")
                break
    rows = np.zeros(len(work), dtype=bool)
    rows[idx[reversal]] = True
    det = np.array([""] * len(work), dtype=object)
    for k, text in detail_rev.items():
        det[idx[k]] = text
    col.add("jump_reversal", work, rows, "close", px, det)
    err["jump_reversal"] = rows

    ratio = np.full(len(work), np.nan)
    ratio[idx] = np.exp(r)
    other = np.zeros(n, dtype=bool)
    other[big] = True
    other &= ~consumed
    dist = np.min(np.abs(np.abs(r[:, None]) - _SPLIT_RATIOS[None, :]), axis=1) \
        if n else np.zeros(0)
    split = other & (np.nan_to_num(dist, nan=np.inf) < tolerance)
    large = other & ~split
    split_rows = np.zeros(len(work), dtype=bool)
    split_rows[idx[split]] = True
    large_rows = np.zeros(len(work), dtype=bool)
    large_rows[idx[large]] = True
    def texts(i: np.ndarray) -> list[str]:
        return [f"close ratio {x:.4g} to the previous bar" for x in ratio[i]]

    col.add("split_jump", work, split_rows, "close", ratio, texts)
    col.add("large_jump", work, large_rows, "close", ratio, texts)
    decimal = np.zeros(len(work), dtype=bool)
    decimal[idx[shifted]] = True
    return decimal


def _cn_checks(col: _Collector, work: pd.DataFrame, usable: np.ndarray,
               listing_grace: int) -> None:
    from qilin.data.boards import CHINEXT_REFORM_DATE, board_of, is_st_name, limit_prices

    sym = work["symbol"].astype(object)
    close = work["close"].to_numpy()
    prev_close = work["close"].where(usable).groupby(sym).shift(1).to_numpy()
    has_pre = "preclose" in work.columns
    pre = work["preclose"].to_numpy() if has_pre else prev_close
    if has_pre and "adj_factor" in work.columns:
        adj = work["adj_factor"].to_numpy()
        prev_adj = work["adj_factor"].where(usable).groupby(sym).shift(1).to_numpy()
        same_adj = np.isclose(adj, prev_adj, rtol=1e-12, atol=0)
        mism = usable & np.isfinite(prev_close) & same_adj & (np.abs(pre - prev_close) > 0.005)
        col.add("preclose_mismatch", work, mism, "preclose", pre,
                lambda i: [f"preclose {pre[k]:g} != previous close {prev_close[k]:g}"
                           for k in i])
    uniq = pd.unique(sym.dropna())
    boards = sym.map({s: board_of(str(s)) for s in uniq}).to_numpy(dtype=object)
    pct = np.select([boards == "bj", (boards == "chinext") | (boards == "star")], [0.3, 0.2],
                    0.1)
    pct = np.where((boards == "chinext") & (work["date"] < CHINEXT_REFORM_DATE).to_numpy(),
                   0.1, pct)
    if "name" in work.columns:
        codes, uniques = pd.factorize(work["name"])  # classify each distinct name once
        st = np.array([is_st_name(u) for u in uniques] + [False], dtype=bool)[codes]
        pct = np.where(st & (boards == "main"), 0.05, pct)
    up, down = limit_prices(pre, pct)
    seq = work.groupby(sym).cumcount().to_numpy()
    check = usable & np.isfinite(pre) & (pre > 0) & (seq >= listing_grace)
    tick = 0.005
    hi, lo = work["high"].to_numpy(), work["low"].to_numpy()
    breach = check & ((close > up + tick) | (close < down - tick) | (hi > up + tick)
                      | (lo < down - tick))
    col.add("limit_breach", work, breach, "close", close,
            lambda i: [f"close {close[k]:g} (high {hi[k]:g}, low {lo[k]:g}) outside "
                       f"[{down[k]:g}, {up[k]:g}] from preclose {pre[k]:g} at {pct[k]:.0%}"
                       for k in i])


def _record_drops(col: _Collector, work: pd.DataFrame, err: dict[str, np.ndarray],
                  drop: np.ndarray, dedupe: np.ndarray | None = None) -> None:
    if not drop.any():
        return
    names = [n for n in CHECKS if CHECKS[n][0] == "error" and err[n].any()]
    reasons = np.array([""] * len(work), dtype=object)
    for n in names:
        m = err[n] & drop
        reasons[m] = np.where(reasons[m] == "", n, reasons[m] + "," + n)
    sub = work.loc[drop]
    action = "drop_row"
    col.change(action, sub, None, None, None, reasons[drop])
    if dedupe is not None and dedupe.any():
        col.change("dedupe", None, None, int(dedupe.sum()), None,
                   "kept the last copy of each repeated (date, symbol)")


def _repair_ohlc(col: _Collector, work: pd.DataFrame, fix: np.ndarray,
                 how: str) -> pd.DataFrame:
    if not fix.any():
        return work
    work = work.copy()
    o, h, l, c = (work[x].to_numpy().copy() for x in PRICE_COLUMNS)
    new = {"open": o.copy(), "high": h.copy(), "low": l.copy(), "close": c.copy()}
    if how == "widen":
        new["high"] = np.where(fix, np.maximum.reduce([o, h, l, c]), h)
        new["low"] = np.where(fix, np.minimum.reduce([o, h, l, c]), l)
    else:
        swap = fix & (h < l)
        hi = np.where(swap, l, h)
        lo = np.where(swap, h, l)
        new["high"], new["low"] = hi, lo
        new["open"] = np.where(fix, np.clip(o, lo, hi), o)
        new["close"] = np.where(fix, np.clip(c, lo, hi), c)
    for name in PRICE_COLUMNS:
        old = work[name].to_numpy()
        changed = fix & (new[name] != old)
        col.change("set_value", work.loc[changed], name, old[changed], new[name][changed],
                   f"ohlc_fix={how}")
        work[name] = new[name]
    return work


def _tiny_bars(volume: list[float]) -> pd.DataFrame:
    """Two clean bars of one symbol (for doctests)."""
    return pd.DataFrame({
        "date": pd.to_datetime(["2024-01-02", "2024-01-03"]), "symbol": ["A", "A"],
        "open": [1.0, 1.0], "high": [1.1, 1.1], "low": [0.9, 0.9], "close": [1.0, 1.05],
        "volume": volume})
