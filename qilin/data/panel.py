"""The Panel: aligned dates x symbols arrays per field, on one array backend.

Long-format DataFrames are only the edges (input and output); all computation in qilin
takes a Panel's 2-D arrays. A missing bar (not listed yet, delisted, suspended) is NaN in
every price field and False in ``valid``.

Examples
--------
>>> import pandas as pd
>>> long = pd.DataFrame({
...     "date": pd.to_datetime(["2024-01-02", "2024-01-02", "2024-01-03"]),
...     "symbol": ["A", "B", "A"],
...     "open": [10.0, 20.0, 10.5], "high": [10.6, 20.4, 10.9],
...     "low": [9.9, 19.8, 10.4], "close": [10.5, 20.0, 10.8],
...     "volume": [1000.0, 500.0, 800.0]})
>>> p = Panel.from_long(long)
>>> p.shape
(2, 2)
>>> p["close"].tolist()
[[10.5, 20.0], [10.8, nan]]
>>> p.valid.tolist()
[[True, True], [True, False]]
>>> p.to_long()["close"].tolist()
[10.5, 20.0, 10.8]
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from qilin.backend import Backend, BackendName, get_backend, to_host
from qilin.errors import DataError

PRICE_FIELDS = ("open", "high", "low", "close")
BAR_FIELDS = (*PRICE_FIELDS, "volume", "amount", "vwap")
#: Optional per-bar numeric fields carried from long data when present.
OPTIONAL_FIELDS = ("amount", "preclose", "adj_factor", "float_mcap", "total_mcap")
#: Per-symbol attributes kept in ``Panel.info`` (last observed value per symbol).
INFO_COLUMNS = ("name", "industry", "board")


@dataclass
class Panel:
    """Market data as dates x symbols arrays.

    Parameters
    ----------
    dates : DatetimeIndex
        Sorted, unique trading dates (rows).
    symbols : Index
        Sorted, unique symbols (columns).
    fields : mapping of str to array
        Each a ``(len(dates), len(symbols))`` float array of the backend's ``xp``.
    backend : Backend
        Where the arrays live.
    valid : bool array, optional
        True where a bar exists. Defaults to ``isfinite(close)``.
    suspended : bool array, optional
        True where the symbol was listed but did not trade (no bar between its first and
        last bar). Derived from ``valid`` when not given.
    info : DataFrame, optional
        Per-symbol attributes indexed by symbol (``name``, ``industry``, ``board`` ...).
    st : bool array, optional
        True where the symbol traded under special treatment (ST / *ST) that day.
    """

    dates: pd.DatetimeIndex
    symbols: pd.Index
    fields: dict[str, Any]
    backend: Backend = field(default_factory=lambda: get_backend("cpu"))
    valid: Any = None
    suspended: Any = None
    info: pd.DataFrame = field(default_factory=pd.DataFrame)
    st: Any = None

    def __post_init__(self) -> None:
        self.dates = pd.DatetimeIndex(self.dates)
        self.symbols = pd.Index(self.symbols)
        shape = (len(self.dates), len(self.symbols))
        xp = self.backend.xp
        for name, arr in list(self.fields.items()):
            arr = self.backend.asarray(arr)
            if arr.shape != shape:
                raise DataError(f"field {name!r} has shape {arr.shape}, expected {shape}")
            self.fields[name] = arr
        if self.valid is None:
            if "close" not in self.fields:
                raise DataError("a Panel needs a 'close' field or an explicit 'valid' mask")
            self.valid = xp.isfinite(self.fields["close"])
        self.valid = self.backend.asarray(self.valid, dtype=bool)
        if self.suspended is None:
            self.suspended = _gaps_inside_listing(self.valid, xp)
        self.suspended = self.backend.asarray(self.suspended, dtype=bool)
        if self.st is None:
            self.st = xp.zeros(shape, dtype=bool)
        self.st = self.backend.asarray(self.st, dtype=bool)
        if not self.info.empty:
            self.info = self.info.reindex(self.symbols)

    # ----------------------------------------------------------------- basics
    @property
    def shape(self) -> tuple[int, int]:
        """``(n_dates, n_symbols)``."""
        return (len(self.dates), len(self.symbols))

    @property
    def xp(self) -> Any:
        """The array namespace of this Panel's backend."""
        return self.backend.xp

    def __getitem__(self, name: str) -> Any:
        if name == "returns":
            return self.returns()
        try:
            return self.fields[name]
        except KeyError:
            raise KeyError(
                f"Panel has no field {name!r}; fields: {', '.join(sorted(self.fields))}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self.fields or name == "returns"

    def __repr__(self) -> str:
        span = f"{self.dates[0].date()}..{self.dates[-1].date()}" if len(self.dates) else "empty"
        return (
            f"Panel({self.shape[0]} dates x {self.shape[1]} symbols, {span}, "
            f"fields={sorted(self.fields)}, backend={self.backend.name})"
        )

    def returns(self, field_name: str = "close") -> Any:
        """Close-to-close simple returns; row 0 and bars after a gap's first day are NaN.

        A return is only defined between two consecutive trading dates on which the symbol
        has a bar, so the first bar after a suspension has a NaN return.
        """
        xp = self.xp
        px = self.fields[field_name]
        out = xp.full(px.shape, xp.nan, dtype=xp.float64)
        out[1:] = px[1:] / px[:-1] - 1.0
        return out

    def with_fields(self, **new_fields: Any) -> Panel:
        """A copy sharing arrays, with fields added or replaced."""
        fields = dict(self.fields)
        fields.update(new_fields)
        return Panel(self.dates, self.symbols, fields, self.backend, self.valid,
                     self.suspended, self.info, self.st)

    # -------------------------------------------------------------- selection
    def select(
        self,
        symbols: Iterable[str] | None = None,
        start: str | pd.Timestamp | None = None,
        end: str | pd.Timestamp | None = None,
        fields: Iterable[str] | None = None,
    ) -> Panel:
        """Sub-panel by symbols (in the given order), an inclusive date range and fields.

        Raises
        ------
        DataError
            When a requested symbol or field is not in the Panel.
        """
        rows = slice(None)
        if start is not None or end is not None:
            lo = 0 if start is None else self.dates.searchsorted(pd.Timestamp(start), "left")
            hi = len(self.dates) if end is None else self.dates.searchsorted(
                pd.Timestamp(end), "right")
            rows = slice(lo, hi)
        cols: Any = slice(None)
        new_symbols = self.symbols
        if symbols is not None:
            symbols = list(symbols)
            idx = self.symbols.get_indexer(symbols)
            if (idx < 0).any():
                missing = [s for s, i in zip(symbols, idx, strict=True) if i < 0]
                raise DataError(f"symbols not in the Panel: {missing[:10]}")
            cols = idx if self.backend.name == "cpu" else self.xp.asarray(idx)
            new_symbols = self.symbols[idx]
        names = list(self.fields) if fields is None else list(fields)
        for n in names:
            if n not in self.fields:
                raise DataError(f"field {n!r} not in the Panel")

        def take(a: Any) -> Any:
            return a[rows][:, cols]

        return Panel(
            self.dates[rows], new_symbols, {n: take(self.fields[n]) for n in names},
            self.backend, take(self.valid), take(self.suspended),
            self.info.reindex(new_symbols) if not self.info.empty else self.info, take(self.st),
        )

    def symbol_blocks(self, n_blocks: int) -> Iterator[Panel]:
        """Split into ``n_blocks`` panels of whole symbol histories (time-series work)."""
        for idx in np.array_split(np.arange(self.shape[1]), max(1, n_blocks)):
            if len(idx):
                yield self.select(symbols=self.symbols[idx])

    def to(self, backend: BackendName | Backend) -> Panel:
        """The same Panel with its arrays on another backend."""
        be = get_backend(backend)
        if be.name == self.backend.name:
            return self
        return Panel(self.dates, self.symbols, dict(self.fields), be, self.valid,
                     self.suspended, self.info, self.st)

    # ----------------------------------------------------------- adjustments
    def adjusted(self) -> Panel:
        """Back-adjusted prices: ``open high low close vwap preclose`` times ``adj_factor``.

        Volume is divided by the factor so that ``amount`` is preserved. Without an
        ``adj_factor`` field the Panel is returned unchanged.
        """
        if "adj_factor" not in self.fields:
            return self
        f = self.fields["adj_factor"]
        new = {}
        for name in (*PRICE_FIELDS, "vwap", "preclose"):
            if name in self.fields:
                new[name] = self.fields[name] * f
        if "volume" in self.fields:
            new["volume"] = self.fields["volume"] / f
        new["adj_factor"] = self.xp.where(self.valid, 1.0, self.xp.nan)
        return self.with_fields(**new)

    def fingerprint(self) -> str:
        """A stable hash of dates, symbols and field contents (for caches and manifests)."""
        h = hashlib.blake2b(digest_size=16)
        h.update(np.asarray(self.dates.asi8).tobytes())
        h.update("\x1f".join(map(str, self.symbols)).encode())
        for name in sorted(self.fields):
            h.update(name.encode())
            h.update(np.ascontiguousarray(to_host(self.fields[name])).tobytes())
        return h.hexdigest()

    # --------------------------------------------------------------- edges
    @classmethod
    def from_long(
        cls,
        df: pd.DataFrame,
        fields: Iterable[str] | None = None,
        backend: BackendName | Backend = "cpu",
        dtype: Any = np.float64,
    ) -> Panel:
        """Pivot long bars (``date, symbol, open, high, low, close, volume`` ...) to a Panel.

        Numeric columns become fields (``vwap`` is derived as ``amount / volume`` when
        ``amount`` is present and ``vwap`` is not); ``name`` becomes the ``st`` mask and,
        with ``industry`` and the board, per-symbol ``info``.

        Raises
        ------
        DataError
            When ``date``/``symbol`` are missing or a (date, symbol) pair repeats.
        """
        for col in ("date", "symbol"):
            if col not in df.columns:
                raise DataError(f"long data has no {col!r} column; columns: {list(df.columns)}")
        if df.duplicated(["date", "symbol"]).any():
            dup = df.loc[df.duplicated(["date", "symbol"], keep=False), ["date", "symbol"]]
            first = dup.iloc[0]
            raise DataError(
                f"{len(dup)} rows repeat a (date, symbol) pair, first: "
                f"{first['symbol']} on {pd.Timestamp(first['date']).date()}; "
                "validate with policy='drop' or 'repair' first"
            )
        dates = pd.DatetimeIndex(pd.to_datetime(df["date"]).unique()).sort_values()
        symbols = pd.Index(pd.unique(df["symbol"].astype(str))).sort_values()
        r = dates.get_indexer(pd.to_datetime(df["date"]))
        c = symbols.get_indexer(df["symbol"].astype(str))
        if fields is None:
            fields = [
                col for col in df.columns
                if col not in ("date", "symbol") and pd.api.types.is_numeric_dtype(df[col])
                and not pd.api.types.is_bool_dtype(df[col])
            ]
        shape = (len(dates), len(symbols))
        out: dict[str, np.ndarray] = {}
        for name in fields:
            if name not in df.columns:
                raise DataError(f"long data has no {name!r} column")
            arr = np.full(shape, np.nan, dtype=dtype)
            arr[r, c] = df[name].to_numpy(dtype=np.float64, na_value=np.nan)
            out[name] = arr
        valid = np.zeros(shape, dtype=bool)
        valid[r, c] = True
        if "close" in out:
            valid &= np.isfinite(out["close"])
        if "vwap" not in out and "amount" in out and "volume" in out:
            with np.errstate(divide="ignore", invalid="ignore"):
                out["vwap"] = np.where(out["volume"] > 0, out["amount"] / out["volume"], np.nan)
        st = np.zeros(shape, dtype=bool)
        info = pd.DataFrame(index=symbols)
        if "name" in df.columns:
            from qilin.data.boards import is_st_name

            codes, uniques = pd.factorize(df["name"])  # classify each distinct name once
            flags = np.array([is_st_name(u) for u in uniques] + [False], dtype=bool)
            st[r, c] = flags[codes]
        last = df.sort_values("date").groupby(df["symbol"].astype(str)).last()
        for col in ("name", "industry"):
            if col in df.columns:
                info[col] = last[col].reindex(symbols)
        if symbols.str.contains(r"\.(?:SH|SZ|BJ)$", regex=True).any():
            from qilin.data.boards import board_of

            info["board"] = [board_of(s) for s in symbols]
        be = get_backend(backend)
        return cls(dates, symbols, out, be, valid, None, info, st)

    def to_long(self, fields: Iterable[str] | None = None, dropna: bool = True) -> pd.DataFrame:
        """Long DataFrame ``date, symbol, <fields>`` sorted by date then symbol.

        Rows where the bar does not exist (``valid`` False) are dropped when ``dropna``.
        """
        names = list(self.fields) if fields is None else list(fields)
        T, N = self.shape
        data: dict[str, Any] = {
            "date": np.repeat(self.dates.values, N),
            "symbol": np.tile(self.symbols.values.astype(object), T),
        }
        for name in names:
            data[name] = to_host(self[name]).reshape(-1)
        out = pd.DataFrame(data)
        if dropna:
            out = out[to_host(self.valid).reshape(-1)]
        return out.reset_index(drop=True)

    @classmethod
    def from_arrays(
        cls,
        arrays: Mapping[str, Any],
        dates: Iterable[Any],
        symbols: Iterable[str],
        backend: BackendName | Backend = "cpu",
        **kwargs: Any,
    ) -> Panel:
        """Build a Panel from ready 2-D arrays (dates x symbols)."""
        return cls(pd.DatetimeIndex(list(dates)), pd.Index(list(symbols)), dict(arrays),
                   get_backend(backend), **kwargs)


def _gaps_inside_listing(valid: Any, xp: Any) -> Any:
    """True where a symbol has no bar between its first and last bar (a suspension)."""
    v = xp.asarray(valid, dtype=bool)
    if v.size == 0:
        return v.copy()
    seen_before = xp.cumsum(v, axis=0) > 0
    seen_after = xp.flip(xp.cumsum(xp.flip(v, axis=0), axis=0), axis=0) > 0
    return seen_before & seen_after & ~v
