"""Timers for qilin's own work: durations, throughput, errors, latency and error-rate alerts.

:meth:`PerformanceMonitor.timer` is a context manager and :meth:`PerformanceMonitor.timed`
a decorator; both record a duration per *operation* (``backtest``, ``prediction`` ...; keep
the set of names small, they become a metric label), rows processed and rows per second,
and count the calls that raised. Rules (defaults from :class:`qilin.config.MonitoringConfig`):

``latency_high``
    A call of an operation listed in ``latency_thresholds`` (``prediction`` and
    ``inference`` at 100 ms by default) took longer than its threshold.
``error_rate_high``
    More than 5% of the last ``error_window`` calls of an operation raised (once at least
    ``min_calls`` calls were seen).

Examples
--------
>>> perf = PerformanceMonitor(latency_thresholds={"prediction": 10.0})
>>> with perf.timer("backtest", rows=1000) as t:
...     _ = sum(range(1000))
>>> perf.stats("backtest")["count"], t.rows
(1, 1000)
>>> @perf.timed("prediction")
... def predict(x):
...     return 2 * x
>>> predict(3), perf.stats("prediction")["count"]
(6, 1)
>>> [a.rule for a in perf.record("prediction", 12.5)]
['latency_high']
"""

from __future__ import annotations

import functools
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from qilin.config import MonitoringConfig
from qilin.errors import MonitoringError
from qilin.monitoring.alerts import Alert, AlertManager

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Timing:
    """What a :meth:`PerformanceMonitor.timer` block measured (``rows`` may be set inside)."""

    operation: str
    rows: int | None = None
    seconds: float = float("nan")
    error: bool = False


class _OpStats:
    def __init__(self, window: int) -> None:
        self.count = 0
        self.errors = 0
        self.total_s = 0.0
        self.last_s = float("nan")
        self.rows = 0
        self.last_rows_per_s = float("nan")
        self.recent_errors: deque[bool] = deque(maxlen=window)


class PerformanceMonitor:
    """Time operations, publish metrics and raise latency / error-rate alerts.

    Parameters
    ----------
    metrics : QilinMetrics, optional
    alerts : AlertManager, optional
    config : MonitoringConfig, optional
        ``latency_threshold_s`` and ``error_rate_threshold``.
    latency_thresholds : mapping of str to float, optional
        Per-operation latency limits in seconds; default ``prediction`` and ``inference``
        at ``config.latency_threshold_s``.
    error_window : int
        Calls over which the error rate is measured.
    min_calls : int
        Calls needed before the error-rate rule can fire.
    """

    def __init__(self, metrics: Any = None, alerts: AlertManager | None = None,
                 config: MonitoringConfig | None = None,
                 latency_thresholds: Mapping[str, float] | None = None,
                 error_window: int = 100, min_calls: int = 20) -> None:
        self.config = config or MonitoringConfig()
        self.metrics = metrics
        self.alerts = alerts
        if latency_thresholds is None:
            t = self.config.latency_threshold_s
            latency_thresholds = {"prediction": t, "inference": t}
        for op, t in latency_thresholds.items():
            if not t > 0:
                raise MonitoringError(f"latency threshold for {op!r} must be > 0, got {t!r}")
        self.latency_thresholds = dict(latency_thresholds)
        if error_window < 1 or min_calls < 1:
            raise MonitoringError(f"error_window ({error_window}) and min_calls ({min_calls}) "
                                  "must be >= 1")
        self.error_window = error_window
        self.min_calls = min_calls
        self._ops: dict[str, _OpStats] = {}

    def record(self, operation: str, seconds: float, rows: int | None = None,
               error: bool = False) -> list[Alert]:
        """Record one call; returns (and fires) the alerts it triggers."""
        st = self._ops.setdefault(operation, _OpStats(self.error_window))
        st.count += 1
        st.total_s += seconds
        st.last_s = seconds
        st.errors += int(error)
        st.recent_errors.append(error)
        if rows is not None and seconds > 0:
            st.rows += rows
            st.last_rows_per_s = rows / seconds
        m = self.metrics
        if m is not None:
            m.operation_duration.labels(operation=operation).observe(seconds)
            if error:
                m.operation_errors.labels(operation=operation).inc()
            if rows is not None:
                m.rows_processed.labels(operation=operation).inc(rows)
                if seconds > 0:
                    m.rows_per_second.labels(operation=operation).set(rows / seconds)
        now = datetime.now(UTC)
        out = []
        limit = self.latency_thresholds.get(operation)
        if limit is not None and seconds > limit:
            out.append(Alert("latency_high", "warning", operation,
                             f"{operation} took {seconds * 1e3:.1f} ms (limit "
                             f"{limit * 1e3:.1f} ms)", seconds, limit, now))
        n = len(st.recent_errors)
        if n >= self.min_calls:
            rate = sum(st.recent_errors) / n
            if rate > self.config.error_rate_threshold:
                out.append(Alert("error_rate_high", "critical", operation,
                                 f"{operation}: {rate:.1%} of the last {n} calls failed "
                                 f"(limit {self.config.error_rate_threshold:.1%})", rate,
                                 self.config.error_rate_threshold, now))
        if self.alerts is not None:
            self.alerts.fire_many(out)
        return out

    @contextmanager
    def timer(self, operation: str, rows: int | None = None) -> Iterator[Timing]:
        """Time a block; an exception inside counts as an error and propagates."""
        timing = Timing(operation, rows)
        t0 = time.perf_counter()
        try:
            yield timing
        except BaseException:
            timing.error = True
            raise
        finally:
            timing.seconds = time.perf_counter() - t0
            self.record(operation, timing.seconds, timing.rows, timing.error)

    def timed(self, operation: str, rows: Callable[..., int] | None = None) -> Callable[[F], F]:
        """Decorator timing every call; ``rows(result)`` gives the rows processed."""

        def deco(fn: F) -> F:
            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                with self.timer(operation) as t:
                    result = fn(*args, **kwargs)
                    if rows is not None:
                        t.rows = int(rows(result))
                return result

            return wrapper  # type: ignore[return-value]

        return deco

    def stats(self, operation: str) -> dict[str, float]:
        """Count, errors, total/last seconds, rows, last rows/s and recent error rate."""
        st = self._ops.get(operation)
        if st is None:
            raise MonitoringError(f"no timings recorded for operation {operation!r}; have "
                                  f"{sorted(self._ops)}")
        n = len(st.recent_errors)
        return {"count": st.count, "errors": st.errors, "total_s": st.total_s,
                "last_s": st.last_s, "rows": st.rows, "rows_per_s": st.last_rows_per_s,
                "error_rate": sum(st.recent_errors) / n if n else 0.0}
