"""Walk-forward windows: train (and valid) in the past, test in the future, purged.

Each window is a set of inclusive row ranges on a dataset's dates. Between the end of one
segment and the start of the next there are at least ``purge`` dates (no label of an earlier
segment reaches into a later one) plus ``embargo`` more dates (a safety margin for features
with serial correlation). Windows step forward by ``step`` dates; their test ranges tile the
dates without overlap, so stitching the out-of-sample predictions gives one prediction per
(date, symbol).

Examples
--------
>>> ws = walk_forward_windows(100, train=40, test=10, purge=2)
>>> len(ws), ws[0].train, ws[0].test, ws[1].train, ws[1].test
(5, (0, 39), (42, 51), (10, 49), (52, 61))
>>> walk_forward_windows(100, train=40, test=10, purge=2, mode="expanding")[1].train
(0, 49)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from qilin.errors import LeakageError, ParameterError

Span = tuple[int, int]


@dataclass(frozen=True)
class Window:
    """One walk-forward window: inclusive row ranges."""

    index: int
    train: Span
    valid: Span | None
    test: Span

    def segments(self) -> dict[str, Span]:
        """``{"train": ..., "valid": ..., "test": ...}`` (valid omitted when None)."""
        out = {"train": self.train, "test": self.test}
        if self.valid is not None:
            out["valid"] = self.valid
        return out


def _pos(name: str, v: Any, low: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ParameterError(f"{name} must be an integer >= {low}, got {v!r}")
    return v


def walk_forward_windows(
    n_dates: int,
    train: int,
    test: int,
    step: int | None = None,
    valid: int = 0,
    purge: int = 1,
    embargo: int = 0,
    mode: Literal["rolling", "expanding"] = "rolling",
    start: int = 0,
) -> list[Window]:
    """Rolling or expanding walk-forward windows over ``n_dates`` rows.

    Parameters
    ----------
    n_dates : int
        Number of dates (rows) available.
    train, test, valid : int
        Segment lengths in dates (``valid=0``: no valid segment).
    step : int, optional
        Dates between consecutive windows (default ``test``); ``step < test`` is refused
        because test ranges would overlap.
    purge, embargo : int
        Dates left out between consecutive segments: ``purge`` (>= the label span of the
        dataset) plus ``embargo``.
    mode : {"rolling", "expanding"}
        Rolling keeps the training length; expanding starts every window at ``start``.
    start : int
        First row used.

    Raises
    ------
    ParameterError
        Bad sizes, or no window fits.
    LeakageError
        ``step < test`` (overlapping test windows).
    """
    n_dates, train, test = _pos("n_dates", n_dates), _pos("train", train), _pos("test", test)
    step = test if step is None else _pos("step", step)
    valid, purge = _pos("valid", valid, 0), _pos("purge", purge, 0)
    embargo, start = _pos("embargo", embargo, 0), _pos("start", start, 0)
    if mode not in ("rolling", "expanding"):
        raise ParameterError(f"mode must be 'rolling' or 'expanding', got {mode!r}")
    if step < test:
        raise LeakageError(f"step={step} < test={test}: test windows would overlap")
    gap = purge + embargo
    out: list[Window] = []
    k = 0
    while True:
        t0 = start + k * step
        tr = (start if mode == "expanding" else t0, t0 + train - 1)
        cursor = tr[1] + 1 + gap
        va = None
        if valid:
            va = (cursor, cursor + valid - 1)
            cursor = va[1] + 1 + gap
        te = (cursor, cursor + test - 1)
        if te[1] >= n_dates:
            break
        out.append(Window(k, tr, va, te))
        k += 1
    if not out:
        raise ParameterError(
            f"no walk-forward window fits in {n_dates} dates (train={train}, valid={valid}, "
            f"test={test}, purge={purge}, embargo={embargo}); shorten them")
    return out
