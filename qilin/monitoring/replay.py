"""Replay recorded bars or ticks through the price monitor and the anomaly detector.

Input is a long table (Parquet or CSV): ``symbol``, a time column (``date``, ``timestamp``
or ``time``), a price (``close`` or ``price``) and optionally ``volume``, ``preclose`` and
``name`` (A-share ST flags). All rows sharing a time form one batch — one vectorised update
over every symbol. Daily bars (every time at midnight) are replayed as bars: a missing bar
is a gap. Anything else is replayed as ticks: a symbol without a tick at a time keeps its
state, and percent moves and limits are measured against the previous *day's* last price
(the ``preclose`` column where given; on a symbol's first day, its previous tick).

Rules come from a YAML file (:func:`load_rules`)::

    default_move_pct: 0.07          # pct_move threshold for every symbol
    limits: auto                    # A-share limit hits: auto | true | false
    price_rules:
      - {symbol: 600519.SH, above: 2000, below: 1500, move_pct: 0.05}
    anomaly: {return_window: 20, return_z: 4.0, vol_short: 5, vol_long: 60}
    alerts: {cooldown_s: 0, max_per_second: null}

Examples
--------
>>> rules = MonitorRules.from_dict({"default_move_pct": 0.05,
...                                  "anomaly": {"return_window": 10}})
>>> rules.default_move_pct, rules.anomaly.return_window
(0.05, 10)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from qilin.data.boards import is_st_name
from qilin.errors import DataError, MonitoringError
from qilin.monitoring.alerts import AlertManager
from qilin.monitoring.anomaly import AnomalyConfig, AnomalyDetector, warm_up
from qilin.monitoring.price_monitor import PriceMonitor, PriceRule
from qilin.monitoring.prometheus import QilinMetrics
from qilin.monitoring.signals import Signals

TIME_COLUMNS = ("date", "timestamp", "time")
PRICE_COLUMNS = ("close", "price")
_RULE_KEYS = {"default_move_pct", "limits", "price_rules", "anomaly", "alerts"}
_ALERT_KEYS = {"cooldown_s", "max_per_second"}


@dataclass
class MonitorRules:
    """Price rules, detector settings and alert policy of a monitoring run."""

    price_rules: list[PriceRule] = field(default_factory=list)
    default_move_pct: float | None = None
    limits: bool | str = "auto"
    anomaly: AnomalyConfig = field(default_factory=AnomalyConfig)
    cooldown_s: float = 0.0
    max_per_second: float | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "rules") -> MonitorRules:
        """Build from a mapping; unknown keys raise :class:`MonitoringError` naming them."""
        unknown = sorted(set(d) - _RULE_KEYS)
        if unknown:
            raise MonitoringError(f"{where}: unknown keys {unknown}; known: "
                                  f"{sorted(_RULE_KEYS)}")
        rules = []
        for i, r in enumerate(d.get("price_rules") or []):
            if not isinstance(r, dict) or "symbol" not in r:
                raise MonitoringError(f"{where}: price_rules[{i}] must be a mapping with a "
                                      f"'symbol', got {r!r}")
            extra = sorted(set(r) - {"symbol", "above", "below", "move_pct"})
            if extra:
                raise MonitoringError(f"{where}: price_rules[{i}] has unknown keys {extra}")
            rules.append(PriceRule(str(r["symbol"]), r.get("above"), r.get("below"),
                                   r.get("move_pct")))
        alerts = d.get("alerts") or {}
        extra = sorted(set(alerts) - _ALERT_KEYS)
        if extra:
            raise MonitoringError(f"{where}: alerts has unknown keys {extra}; known: "
                                  f"{sorted(_ALERT_KEYS)}")
        limits = d.get("limits", "auto")
        if limits not in (True, False, "auto"):
            raise MonitoringError(f"{where}: limits must be true, false or auto, got {limits!r}")
        return cls(rules, d.get("default_move_pct"), limits,
                   AnomalyConfig.from_dict(d.get("anomaly") or {}),
                   float(alerts.get("cooldown_s", 0.0)), alerts.get("max_per_second"))


def load_rules(path: str | Path) -> MonitorRules:
    """Read a rules YAML file (see the module docs)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise MonitoringError(f"rules file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise MonitoringError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise MonitoringError(f"{path}: expected a mapping at the top level")
    return MonitorRules.from_dict(data, where=str(path))


def load_frame(path: str | Path, date_format: str | None = None) -> pd.DataFrame:
    """Read long bars/ticks from Parquet or CSV (or a folder of bar files, or a Qlib data
    folder), normalised to ``time, symbol, price ...``.

    Text times are parsed as :func:`qilin.data.dates.parse_dates` does (an ambiguous
    day/month order is refused unless ``date_format`` says it); a price or volume that is
    not a number, an empty file and one symbol written two ways are :class:`DataError`.
    """
    from qilin.data.dates import parse_dates
    from qilin.data.symbols import mixed_forms

    path = Path(path)
    if not path.exists():
        raise DataError(f"replay data not found: {path}")
    if path.is_file() and path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes); expected a header and rows of ticks")
    try:
        if path.is_dir():  # a folder of bar files or a Qlib data folder: the bars loader
            from qilin.data.loader import load_bars

            df = load_bars(path, date_format=date_format)
        elif path.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        elif path.suffix.lower() in (".csv", ".gz"):
            df = pd.read_csv(path, dtype={"symbol": str})
        else:
            raise DataError(f"{path}: expected a .parquet or .csv file")
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: cannot read it: {exc}") from exc
    tcol = next((c for c in TIME_COLUMNS if c in df.columns), None)
    pcol = next((c for c in PRICE_COLUMNS if c in df.columns), None)
    if tcol is None or pcol is None or "symbol" not in df.columns:
        raise DataError(f"{path}: needs columns 'symbol', one of {TIME_COLUMNS} and one of "
                        f"{PRICE_COLUMNS}; has {list(df.columns)}")
    if df.empty:
        raise DataError(f"{path}: no rows (header-only file); expected rows of ticks")
    times, _ = parse_dates(df[tcol], date_format, source=str(path), column=tcol)
    symbols = df["symbol"].astype(str)
    forms = mixed_forms(symbols.unique())
    if forms:
        short, full = next(iter(forms.items()))
        raise DataError(f"{path}: column 'symbol' writes one code two ways ({short!r} and "
                        f"{full[0]!r}); write every symbol in one form")
    out = pd.DataFrame({"time": times, "symbol": symbols,
                        "price": _numeric(df[pcol], path, pcol)})
    for col in ("volume", "preclose"):
        if col in df.columns:
            out[col] = _numeric(df[col], path, col)
    if "name" in df.columns:
        out["st"] = df["name"].map(is_st_name).astype(bool)
    return out


def _numeric(col: pd.Series, path: Path, name: str) -> pd.Series:
    """``col`` as float; a value that is not a number (an empty cell is fine) is an error."""
    values = pd.to_numeric(col, errors="coerce")
    bad = values.isna() & col.notna() & (col.astype(str).str.strip() != "")
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise DataError(f"{path}: column {name!r} row {row + 1} is not a number: "
                        f"{col.iloc[row]!r}")
    return values.astype(float)


@dataclass
class ReplaySummary:
    """What a replay did."""

    mode: str
    ticks: int
    symbols: int
    symbol_ticks: int
    signals: dict[str, int]
    alerts_dispatched: int
    alerts_suppressed: int
    elapsed_s: float

    def lines(self) -> list[str]:
        rate = self.symbol_ticks / self.elapsed_s if self.elapsed_s > 0 else math.inf
        out = [f"replayed {self.ticks} {self.mode} batches x {self.symbols} symbols "
               f"({self.symbol_ticks} symbol-ticks) in {self.elapsed_s:.2f}s "
               f"({rate:,.0f} symbol-ticks/s)",
               f"alerts: {self.alerts_dispatched} dispatched, {self.alerts_suppressed} "
               "suppressed (cooldown/rate limit)"]
        out += [f"  {rule}: {n}" for rule, n in sorted(self.signals.items())]
        return out


class StreamingMonitor:
    """A :class:`PriceMonitor` and an :class:`AnomalyDetector` fed the same ticks, with
    alerts and metrics.

    Parameters
    ----------
    symbols : sequence of str
    rules : MonitorRules
    alerts : AlertManager, optional
    metrics : QilinMetrics, optional
    ticks : bool
        Tick mode (missing = no tick) instead of bar mode (missing = gap).
    """

    def __init__(self, symbols: Any, rules: MonitorRules, alerts: AlertManager | None = None,
                 metrics: QilinMetrics | None = None, ticks: bool = False) -> None:
        self.symbols = pd.Index(symbols)
        self.prices = PriceMonitor(self.symbols, rules.price_rules, rules.default_move_pct,
                                   rules.limits)  # type: ignore[arg-type]
        self.detector = AnomalyDetector(rules.anomaly, n_symbols=len(self.symbols),
                                        skip_missing=ticks)
        warm_up()
        self.alerts = alerts
        self.metrics = metrics
        self.ticks = ticks
        self.signal_counts: dict[str, int] = {}
        if metrics is not None:
            metrics.monitored_symbols.set(len(self.symbols))

    def process(self, when: pd.Timestamp, price: np.ndarray, volume: np.ndarray | None = None,
                prev_close: np.ndarray | None = None, st: np.ndarray | None = None) -> Signals:
        """Evaluate one batch, fire its alerts and update the metrics."""
        t0 = time.perf_counter()
        date = when.normalize() if self.prices.limits else None
        sig = self.prices.update(price, date=date, prev_close=prev_close, st=st).merge(
            self.detector.update(price, volume))
        fired = {r: int(np.count_nonzero(m)) for r, m in sig.fired.items()}
        for r, n in fired.items():
            self.signal_counts[r] = self.signal_counts.get(r, 0) + n
        if self.alerts is not None and any(fired.values()):
            self.alerts.fire_many(sig.alerts(self.symbols, when))
        m = self.metrics
        if m is not None:
            for r, n in fired.items():
                if n:
                    m.signals.labels(rule=r).inc(n)
            m.ticks.inc()
            m.symbol_ticks.inc(int(np.count_nonzero(np.isfinite(price))))
            m.last_tick_time.set(when.timestamp())
            m.tick_duration.observe(time.perf_counter() - t0)
        return sig


def replay_frame(frame: pd.DataFrame, rules: MonitorRules, alerts: AlertManager | None = None,
           metrics: QilinMetrics | None = None, speed: float = math.inf,
           on_batch: Callable[[int], None] | None = None) -> ReplaySummary:
    """Replay a normalised frame (:func:`load_frame`) batch by batch.

    ``speed`` is batches per second (``0`` or ``inf``: as fast as possible).
    """
    if frame.empty:
        raise DataError("replay: the data has no rows")
    dup = frame.duplicated(["time", "symbol"])
    if dup.any():
        first = frame.loc[dup].iloc[0]
        raise DataError(f"replay: {int(dup.sum())} rows repeat a (time, symbol) pair, first "
                        f"{first['symbol']} at {first['time']}")
    times = pd.DatetimeIndex(frame["time"].unique()).sort_values()
    symbols = pd.Index(frame["symbol"].unique()).sort_values()
    ticks = bool((times != times.normalize()).any())
    r = times.get_indexer(frame["time"])
    c = symbols.get_indexer(frame["symbol"])

    def dense(col: str, fill: Any = np.nan, dtype: Any = np.float64) -> np.ndarray | None:
        if col not in frame.columns:
            return None
        arr = np.full((len(times), len(symbols)), fill, dtype=dtype)
        arr[r, c] = frame[col].to_numpy()
        return arr

    price, volume, preclose = dense("price"), dense("volume"), dense("preclose")
    st = dense("st", False, bool)
    assert price is not None
    mon = StreamingMonitor(symbols, rules, alerts, metrics, ticks=ticks)
    pace = 0.0 if (speed == 0 or math.isinf(speed)) else 1.0 / speed
    day_close = np.full(len(symbols), np.nan)
    last_price = np.full(len(symbols), np.nan)
    day = None
    start = time.perf_counter()
    for t, when in enumerate(times):
        if pace:
            delay = start + t * pace - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        prev = None if preclose is None else preclose[t]
        if ticks:
            if day is not None and when.normalize() != day:
                day_close = np.where(np.isfinite(last_price), last_price, day_close)
            day = when.normalize()
            prev = day_close if prev is None else np.where(np.isfinite(prev), prev, day_close)
            last_price = np.where(np.isfinite(price[t]), price[t], last_price)
        mon.process(when, price[t], None if volume is None else volume[t], prev,
                    None if st is None else st[t])
        if on_batch is not None:
            on_batch(t)
    elapsed = time.perf_counter() - start
    stats = alerts.stats if alerts is not None else {}
    return ReplaySummary(
        "tick" if ticks else "bar", len(times), len(symbols),
        int(np.count_nonzero(np.isfinite(price))), mon.signal_counts,
        stats.get("dispatched", 0),
        stats.get("suppressed_cooldown", 0) + stats.get("rate_limited", 0), elapsed)
