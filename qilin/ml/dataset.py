"""Leak-free model datasets: factor features at the close of ``t``, labels from ``t`` onwards.

Timing convention (the one of :mod:`qilin.backtest`): a feature on row ``t`` is known at the
close of ``t``; a position taken on it trades at the close of ``t + lag`` at the earliest and
earns from ``t + lag + 1`` on. The label is an expression of the factor language evaluated
over the bars and **shifted back** by ``horizon + lag`` rows, so the default label
``close / ts_delay(close, h) - 1`` on row ``t`` is ``close[t+lag+h] / close[t+lag] - 1``
(back-adjusted close when the bars carry ``adj_factor``). A label expression only ever looks
backwards (the language has no future operator), so the shift is the only place the future
enters, and :meth:`Dataset.split` keeps at least ``horizon + lag`` dates between segments
(purge), so no training label overlaps a later segment's label period.

Examples
--------
>>> from qilin.data.synthetic import synthetic_market
>>> from qilin.factors.calculator import FactorCalculator
>>> bars = synthetic_market(n_symbols=8, n_days=80, seed=1)
>>> f = FactorCalculator({"mom": "close / ts_delay(close, 5) - 1"}, backend="cpu",
...                      progress=False).compute(bars)
>>> ds = Dataset(f, bars, horizon=2)
>>> split = ds.split(train=(0, 39), valid=(42, 59), test=(62, 79))
>>> split.train.X.shape[1], split.purge
(1, 2)
>>> ds.split(train=(0, 39), test=(40, 79))  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
qilin.errors.LeakageError: segment 'test' starts 0 date(s) after 'train' ends ...purge gap...
"""

from __future__ import annotations

import itertools
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from qilin.data.panel import Panel
from qilin.errors import DataError, LeakageError, ParameterError
from qilin.factors.evaluation import forward_returns, information_coefficient, rank_rows
from qilin.factors.expr import evaluate, parse
from qilin.ml.processors import Processor, ProcessorChain, default_processors

LabelNorm = Literal["rank", "zscore"] | None
DateLike = str | pd.Timestamp | int


def default_label(horizon: int) -> str:
    """The default label expression: the ``horizon``-day close-to-close return.

    Examples
    --------
    >>> default_label(5)
    'close / ts_delay(close, 5) - 1'
    """
    return f"close / ts_delay(close, {int(horizon)}) - 1"


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ParameterError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def shift_back(a: np.ndarray, rows: int) -> np.ndarray:
    """``out[t] = a[t + rows]`` (NaN for the last ``rows`` rows).

    Examples
    --------
    >>> shift_back(np.array([[1.0], [2.0], [3.0]]), 1).ravel().tolist()
    [2.0, 3.0, nan]
    """
    out = np.full(a.shape, np.nan, dtype=np.float64)
    if rows < a.shape[0]:
        out[: a.shape[0] - rows] = a[rows:]
    return out


def normalize_cs(x: np.ndarray, how: LabelNorm) -> np.ndarray:
    """Cross-sectional normalisation per date: ``"rank"`` (centered rank in [-0.5, 0.5]),
    ``"zscore"`` or ``None`` (unchanged).

    Examples
    --------
    >>> normalize_cs(np.array([[3.0, 1.0, 2.0]]), "rank").tolist()
    [[0.5, -0.5, 0.0]]
    """
    if how is None:
        return x
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if how == "rank":
            r = rank_rows(x)
            n = np.isfinite(x).sum(axis=1, keepdims=True)
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.where(n > 1, (r - 1.0) / (n - 1.0) - 0.5, np.nan * x)
        if how == "zscore":
            mean = np.nanmean(x, axis=1, keepdims=True)
            std = np.nanstd(x, axis=1, keepdims=True)
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.where(std > 0, (x - mean) / std, np.nan)
    raise ParameterError(f"label_norm must be 'rank', 'zscore' or None, got {how!r}")


# ----------------------------------------------------------------------------- features
def _feature_arrays(features: Any, bars: Panel) -> tuple[list[str], np.ndarray]:
    """``(names, (T, N, F) float32)`` aligned to the bars' dates and symbols."""
    if isinstance(features, str | os.PathLike):
        path = Path(features)
        if not path.exists():
            raise DataError(f"factor file {path} does not exist")
        try:
            features = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types for a bad file
            raise DataError(f"cannot read factor file {path}: {exc}") from None
    if isinstance(features, pd.DataFrame):
        features = Panel.from_long(features)
    if hasattr(features, "values") and hasattr(features, "names") and \
            not isinstance(features, Panel):  # a FactorResult
        names = list(features.names)
        values, dates, symbols = features.values, features.dates, features.symbols
    elif isinstance(features, Panel):
        names = [n for n in features.fields]
        values = {n: features.backend.to_host(features[n]) for n in names}
        dates, symbols = features.dates, features.symbols
    else:
        raise DataError("features must be a FactorResult, a Panel, a long DataFrame or a "
                        f"Parquet path, got {type(features).__name__}")
    if not names:
        raise DataError("the factor data has no feature columns")
    r = pd.DatetimeIndex(dates).get_indexer(bars.dates)
    c = pd.Index(symbols).get_indexer(bars.symbols)
    if (r >= 0).sum() == 0 or (c >= 0).sum() == 0:
        raise DataError("the factor data shares no date or no symbol with the bars")
    T, N = bars.shape
    x = np.full((T, N, len(names)), np.nan, dtype=np.float32)
    rs, cs = np.nonzero(r >= 0)[0], np.nonzero(c >= 0)[0]
    for k, n in enumerate(names):
        v = np.asarray(values[n], dtype=np.float64)
        x[np.ix_(rs, cs, [k])] = v[np.ix_(r[rs], c[cs])][..., None]
    return names, x


# ----------------------------------------------------------------------------- segments
@dataclass
class SegmentData:
    """The rows of one segment: features ``X`` (rows x features), label ``y`` and row keys.

    Attributes
    ----------
    X : ndarray (n_rows, n_features), float32
    y : ndarray (n_rows,), float64; NaN where the label is not known yet (test rows only)
    date_idx, sym_idx : ndarray of int
        Row and column of each row in the dataset's dates x symbols grid.
    """

    name: str
    X: np.ndarray
    y: np.ndarray
    date_idx: np.ndarray
    sym_idx: np.ndarray
    dates: pd.DatetimeIndex
    symbols: pd.Index
    features: list[str]
    rows: tuple[int, int] = (0, 0)

    def __len__(self) -> int:
        return int(self.X.shape[0])

    @property
    def labelled(self) -> np.ndarray:
        """True for rows whose label is known."""
        return np.isfinite(self.y)

    def to_frame(self) -> pd.DataFrame:
        """Features and ``label`` indexed by ``(date, symbol)``."""
        idx = pd.MultiIndex.from_arrays(
            [self.dates[self.date_idx], self.symbols[self.sym_idx]], names=["date", "symbol"])
        df = pd.DataFrame(self.X, index=idx, columns=self.features)
        df["label"] = self.y
        return df

    def date_blocks(self, block_dates: int) -> list[np.ndarray]:
        """Row positions grouped in blocks of ``block_dates`` consecutive dates."""
        block_dates = _check_int("block_dates", block_dates, 1)
        if not len(self):
            return []
        key = (self.date_idx - self.date_idx.min()) // block_dates
        cuts = np.flatnonzero(np.diff(key)) + 1
        return np.split(np.arange(len(self)), cuts)

    def to_dask(self, client: Any = None, block_dates: int = 20) -> tuple[Any, Any]:
        """``(X, y)`` as dask arrays with one chunk per block of dates.

        With a ``client`` every block is scattered to a worker once and the arrays are built
        on those futures, so distributed training reads the blocks where they live and
        nothing is gathered back to the client.
        """
        import dask.array as da
        from dask import delayed

        blocks = self.date_blocks(block_dates)
        if not blocks:
            raise DataError(f"segment {self.name!r} has no rows to put in a dask array")
        xs, ys = [], []
        for rows in blocks:
            xb, yb = np.ascontiguousarray(self.X[rows]), np.ascontiguousarray(self.y[rows])
            if client is not None:
                fx, fy = client.scatter([xb, yb], hash=False)
                xs.append(da.from_delayed(fx, xb.shape, dtype=xb.dtype))
                ys.append(da.from_delayed(fy, yb.shape, dtype=yb.dtype))
            else:
                xs.append(da.from_delayed(delayed(xb), xb.shape, dtype=xb.dtype))
                ys.append(da.from_delayed(delayed(yb), yb.shape, dtype=yb.dtype))
        return da.concatenate(xs, axis=0), da.concatenate(ys, axis=0)

    def to_grid(self, values: Any) -> np.ndarray:
        """Per-row values (e.g. predictions) as a dates x symbols array of this segment."""
        v = np.asarray(values, dtype=np.float64).ravel()
        if v.shape[0] != len(self):
            raise DataError(f"{v.shape[0]} values for {len(self)} rows of segment {self.name!r}")
        lo, hi = self.rows
        out = np.full((hi - lo + 1, len(self.symbols)), np.nan)
        out[self.date_idx - lo, self.sym_idx] = v
        return out

    def scores(self, predictions: Any, name: str = "score") -> Panel:
        """Predictions as a score Panel (this segment's dates x all symbols)."""
        lo, hi = self.rows
        grid = self.to_grid(predictions)
        return Panel(self.dates[lo:hi + 1], self.symbols, {name: grid}, valid=np.isfinite(grid))


@dataclass
class DatasetSplit:
    """Segments built with processors fitted on ``train`` only.

    Attributes
    ----------
    train, valid, test : SegmentData or None
    processors : ProcessorChain
        Fitted on the training rows; ``processors.report()`` lists dropped features.
    purge : int
        Minimum number of dates kept between consecutive segments.
    """

    train: SegmentData
    valid: SegmentData | None
    test: SegmentData | None
    processors: ProcessorChain
    purge: int
    segments: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def features(self) -> list[str]:
        """Features the model sees (after dropping constant/all-NaN ones)."""
        return list(self.processors.features)

    def report(self) -> dict[str, Any]:
        """Segments (dates, rows), purge and the processors' report."""
        out: dict[str, Any] = {"purge": self.purge, "segments": dict(self.segments),
                               "rows": {}, **self.processors.report()}
        for s in (self.train, self.valid, self.test):
            if s is not None:
                out["rows"][s.name] = len(s)
        return out


class Dataset:
    """Features from a factor set joined with a label from the bars, on one dates x symbols grid.

    Parameters
    ----------
    features : FactorResult, Panel, long DataFrame or Parquet path
        Factor values (known at the close of each row's date).
    bars : Panel
        The market data the label is computed from; defines the grid.
    label : str, optional
        A factor-language expression known at the close of ``t + lag + horizon``; shifted back
        by ``horizon + lag`` rows. Default :func:`default_label` (h-day close-to-close return).
    horizon : int
        Label horizon in trading days.
    lag : int
        Execution lag in days (0: trade at the signal's close).
    label_norm : {"rank", "zscore", None}
        Cross-sectional normalisation of the label per date.
    processors : sequence of Processor, optional
        Feature processors (default :func:`~qilin.ml.processors.default_processors`), fitted
        on each split's training rows.
    leak_threshold : float or None
        A feature whose mean per-date Rank IC with the label over the training rows reaches
        this value is refused as a leak (the future label itself). ``None`` disables.

    Raises
    ------
    DataError, ExpressionError, ParameterError
        For unreadable features, a bad label expression or parameters.
    """

    def __init__(
        self,
        features: Any,
        bars: Panel,
        label: str | None = None,
        horizon: int = 1,
        lag: int = 0,
        label_norm: LabelNorm = None,
        processors: Sequence[Processor] | None = None,
        leak_threshold: float | None = 0.95,
    ) -> None:
        if not isinstance(bars, Panel):
            raise DataError(f"bars must be a Panel, got {type(bars).__name__}")
        if bars.backend.is_gpu:
            bars = bars.to("cpu")
        self.horizon = _check_int("horizon", horizon, 1)
        self.lag = _check_int("lag", lag, 0)
        if label_norm not in ("rank", "zscore", None):
            raise ParameterError(f"label_norm must be 'rank', 'zscore' or None, got "
                                 f"{label_norm!r}")
        self.label_norm = label_norm
        self.label_expr = label if label is not None else default_label(self.horizon)
        self.leak_threshold = leak_threshold
        self._processor_spec = list(processors) if processors is not None else None
        self.bars = bars
        self.dates, self.symbols = bars.dates, bars.symbols
        self.features, self.x = _feature_arrays(features, bars)
        priced = bars.adjusted() if "adj_factor" in bars.fields else bars
        node = parse(self.label_expr, variables=list(priced.fields))
        raw = np.asarray(priced.backend.to_host(evaluate(node, priced)), dtype=np.float64)
        valid = np.asarray(priced.backend.to_host(priced.valid), dtype=bool)
        raw = np.where(valid, raw, np.nan)
        #: The label before cross-sectional normalisation (e.g. the forward return).
        self.raw_label = shift_back(raw, self.shift)
        self.label = normalize_cs(self.raw_label, label_norm)
        self.valid = valid
        fwd = forward_returns(np.where(valid, priced.backend.to_host(priced["close"]), np.nan),
                              (self.horizon,))[self.horizon]
        #: ``horizon``-day forward return under the timing convention (IC reference).
        self.forward_return = shift_back(fwd, self.lag)

    # ------------------------------------------------------------------ basics
    @property
    def shift(self) -> int:
        """Rows the label is shifted back by: ``horizon + lag`` (also the minimum purge)."""
        return self.horizon + self.lag

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(dates, symbols, features)``."""
        return tuple(self.x.shape)  # type: ignore[return-value]

    def __repr__(self) -> str:
        T, N, F = self.shape
        return (f"Dataset({T} dates x {N} symbols x {F} features, label={self.label_expr!r}, "
                f"shift={self.shift}, label_norm={self.label_norm})")

    def row_of(self, date: DateLike, side: Literal["left", "right"] = "left") -> int:
        """Row of a date (an int is taken as a row). ``left``: first date >= it;
        ``right``: last date <= it."""
        if isinstance(date, int | np.integer) and not isinstance(date, bool):
            if not 0 <= date < len(self.dates):
                raise ParameterError(f"row {date} is outside 0..{len(self.dates) - 1}")
            return int(date)
        ts = pd.Timestamp(date)
        if side == "left":
            return int(self.dates.searchsorted(ts, "left"))
        return int(self.dates.searchsorted(ts, "right")) - 1

    def _rows(self, name: str, seg: tuple[DateLike, DateLike]) -> tuple[int, int]:
        if not isinstance(seg, tuple | list) or len(seg) != 2:
            raise ParameterError(f"segment {name!r} must be a (start, end) pair, got {seg!r}")
        lo, hi = self.row_of(seg[0], "left"), self.row_of(seg[1], "right")
        if hi < lo or lo >= len(self.dates):
            raise ParameterError(f"segment {name!r} = {seg!r} contains no date of the dataset "
                                 f"({self.dates[0].date()}..{self.dates[-1].date()})")
        return lo, hi

    # ------------------------------------------------------------------ split
    def split(
        self,
        train: tuple[DateLike, DateLike],
        valid: tuple[DateLike, DateLike] | None = None,
        test: tuple[DateLike, DateLike] | None = None,
        purge: int | None = None,
        processors: Sequence[Processor] | None = None,
    ) -> DatasetSplit:
        """Build train / valid / test segments (inclusive date ranges or row numbers).

        Processors are fitted on the training rows only. Training and valid rows without a
        label are dropped; test rows are kept (their ``y`` is NaN where not known yet).

        Raises
        ------
        LeakageError
            Overlapping or unordered segments, fewer than ``purge`` dates between two
            segments, or a feature that equals the label (see ``leak_threshold``).
        """
        purge = self.shift if purge is None else _check_int("purge", purge, 0)
        if purge < self.shift:
            raise LeakageError(f"purge={purge} is shorter than the label span horizon + lag = "
                               f"{self.shift} dates; use purge >= {self.shift}")
        named = [("train", train), ("valid", valid), ("test", test)]
        spans = [(n, self._rows(n, s)) for n, s in named if s is not None]
        for (n0, (_, b0)), (n1, (a1, _)) in itertools.pairwise(spans):
            gap = a1 - b0 - 1
            if gap < purge:
                where = f"{self.dates[b0].date()} / {self.dates[a1].date()}"
                what = "overlaps" if gap < 0 else f"starts {gap} date(s) after"
                if gap < 0:
                    raise LeakageError(f"segment {n1!r} {what} {n0!r} ({where}); segments must "
                                       "be in time order without overlap")
                raise LeakageError(
                    f"segment {n1!r} starts {gap} date(s) after {n0!r} ends ({where}); labels "
                    f"span horizon + lag = {self.shift} dates, so leave a purge gap of at "
                    f"least {purge} dates")
        chain = ProcessorChain(processors if processors is not None else
                               (self._processor_spec if self._processor_spec is not None
                                else default_processors()))
        rows = dict(spans)
        a, b = rows["train"]
        self._check_leak(a, b)
        xt = chain.fit_transform(self.x[a:b + 1], self.features)
        seg_train = self._segment("train", a, b, xt, chain.features, keep_unlabelled=False)
        out = {}
        for n in ("valid", "test"):
            if n in rows:
                lo, hi = rows[n]
                out[n] = self._segment(n, lo, hi, chain.transform(self.x[lo:hi + 1]),
                                       chain.features, keep_unlabelled=(n == "test"))
        segs = {n: (str(self.dates[lo].date()), str(self.dates[hi].date()))
                for n, (lo, hi) in rows.items()}
        return DatasetSplit(seg_train, out.get("valid"), out.get("test"), chain, purge, segs)

    def apply(self, processors: ProcessorChain, start: DateLike | None = None,
              end: DateLike | None = None, name: str = "predict") -> SegmentData:
        """Rows of ``[start, end]`` through already fitted processors (e.g. a registered
        model's); rows without a label are kept (prediction).

        Raises
        ------
        DataError
            When this dataset's features differ from those the processors were fitted on.
        """
        if list(self.features) != list(processors.input_features):
            raise DataError("features differ from the model's: "
                            f"{feature_difference(processors.input_features, self.features)}")
        lo = 0 if start is None else self.row_of(start, "left")
        hi = len(self.dates) - 1 if end is None else self.row_of(end, "right")
        if hi < lo:
            raise ParameterError(f"no date of the dataset lies in [{start}, {end}]")
        return self._segment(name, lo, hi, processors.transform(self.x[lo:hi + 1]),
                             processors.features, keep_unlabelled=True)

    def _segment(self, name: str, lo: int, hi: int, x: np.ndarray, features: list[str],
                 keep_unlabelled: bool) -> SegmentData:
        y = self.label[lo:hi + 1]
        keep = self.valid[lo:hi + 1].copy()
        if not keep_unlabelled:
            keep &= np.isfinite(y)
        r, c = np.nonzero(keep)
        return SegmentData(name, np.ascontiguousarray(x[r, c], dtype=np.float32), y[r, c],
                           r + lo, c, self.dates, self.symbols, list(features), (lo, hi))

    def _check_leak(self, lo: int, hi: int) -> None:
        if self.leak_threshold is None:
            return
        y = self.raw_label[lo:hi + 1]
        for k, name in enumerate(self.features):
            f = self.x[lo:hi + 1, :, k].astype(np.float64)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                ric = np.nanmean(information_coefficient(f, y, "spearman"))
            if np.isfinite(ric) and abs(ric) >= self.leak_threshold:
                raise LeakageError(
                    f"feature {name!r} has a mean Rank IC of {ric:.3f} with the label "
                    f"{self.label_expr!r} over the training dates: it looks ahead (it is the "
                    "future label); remove it or compute it from data up to each date")

    def evaluate(self, segment: SegmentData, predictions: Any) -> tuple[Panel, dict[str, Any]]:
        """The score Panel of ``predictions`` on ``segment`` and its IC / Rank IC against the
        ``horizon``-day forward return (:func:`qilin.ml.scores.prediction_metrics`)."""
        from qilin.ml.scores import prediction_metrics

        scores = segment.scores(predictions)
        lo, hi = segment.rows
        return scores, prediction_metrics(scores, self.forward_return[lo:hi + 1])

    # ------------------------------------------------------------------ frames
    def to_frame(self, start: DateLike | None = None, end: DateLike | None = None
                 ) -> pd.DataFrame:
        """Raw (unprocessed) features and ``label`` indexed by ``(date, symbol)`` (valid bars)."""
        lo = 0 if start is None else self.row_of(start, "left")
        hi = len(self.dates) - 1 if end is None else self.row_of(end, "right")
        keep = self.valid[lo:hi + 1]
        r, c = np.nonzero(keep)
        idx = pd.MultiIndex.from_arrays([self.dates[r + lo], self.symbols[c]],
                                        names=["date", "symbol"])
        df = pd.DataFrame(self.x[lo:hi + 1][r, c], index=idx, columns=self.features)
        df["label"] = self.label[lo:hi + 1][r, c]
        return df

    def fingerprint(self) -> str:
        """Hash of the bars and features (for the registry's ``data_fingerprint``)."""
        import hashlib

        h = hashlib.blake2b(digest_size=16)
        h.update(self.bars.fingerprint().encode())
        h.update("\x1f".join(self.features).encode())
        h.update(np.ascontiguousarray(self.x).tobytes())
        h.update(self.label_expr.encode())
        return h.hexdigest()


def feature_difference(expected: Sequence[str], got: Sequence[str]) -> str:
    """One line naming missing, unexpected and reordered features.

    Examples
    --------
    >>> feature_difference(["a", "b", "c"], ["a", "c", "d"])
    "missing ['b']; unexpected ['d']"
    >>> feature_difference(["a", "b"], ["b", "a"])
    'same features in a different order'
    """
    missing = [f for f in expected if f not in set(got)]
    extra = [f for f in got if f not in set(expected)]
    parts = []
    if missing:
        parts.append(f"missing {missing[:20]}")
    if extra:
        parts.append(f"unexpected {extra[:20]}")
    if not parts:
        return "same features in a different order" if list(expected) != list(got) else "none"
    return "; ".join(parts)


def feature_names(data: Any) -> list[str]:
    """Feature names of a Dataset, a DatasetSplit or a SegmentData."""
    if isinstance(data, Dataset | DatasetSplit | SegmentData):
        return list(data.features)
    raise ParameterError(f"cannot read feature names from {type(data).__name__}")
