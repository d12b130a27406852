"""Alerts and the :class:`AlertManager` that routes them to pluggable handlers.

An :class:`Alert` names the rule that fired, its severity, the symbol or resource it is about
(``subject``), the observed value and the threshold. The manager applies a per-key cooldown
(one ``(rule, subject)`` condition does not fire a storm), a global rate limit, and isolates
handlers from each other: every handler runs on its own worker thread, a handler that raises
or does not finish within ``handler_timeout_s`` is logged and counted, and the others still
get the alert. The cooldown runs on the alerts' own time (market time during a replay); the
rate limit runs on the wall clock, because it protects the handlers.

Examples
--------
>>> got = []
>>> manager = AlertManager([CallbackHandler(got.append)], cooldown_s=60)
>>> a = Alert("price_above", "warning", "AAPL", "AAPL above 200", 201.0, 200.0,
...           time=datetime(2024, 1, 2, 15, 0, tzinfo=UTC))
>>> manager.fire(a), manager.fire(a)
(True, False)
>>> [x.subject for x in got], manager.stats["suppressed_cooldown"]
(['AAPL'], 1)
>>> manager.close()
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import os
import socket
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

from qilin.errors import MonitoringError

log = logging.getLogger(__name__)

Severity = Literal["info", "warning", "critical"]
SEVERITIES: tuple[str, ...] = ("info", "warning", "critical")


def _utc(t: datetime | Any) -> datetime:
    """A timezone-aware UTC datetime from a datetime or pandas Timestamp (naive = UTC)."""
    if hasattr(t, "to_pydatetime"):
        t = t.to_pydatetime()
    if not isinstance(t, datetime):
        raise MonitoringError(f"alert time must be a datetime, got {type(t).__name__} {t!r}")
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


@dataclass(frozen=True)
class Alert:
    """One fired condition.

    Parameters
    ----------
    rule : str
        Rule name, e.g. ``"price_above"``, ``"return_zscore"``, ``"cpu_high"``.
    severity : {"info", "warning", "critical"}
    subject : str
        The symbol or resource the alert is about (``"600519.SH"``, ``"cpu"``, ``"gpu0"``).
    message : str
        One human-readable line.
    value : float
        The observed value.
    threshold : float
        The threshold the value crossed.
    time : datetime
        When the condition was observed (market time in replays); naive means UTC.
    """

    rule: str
    severity: Severity
    subject: str
    message: str
    value: float
    threshold: float
    time: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise MonitoringError(
                f"alert {self.rule!r} for {self.subject!r}: severity {self.severity!r} is not "
                f"one of {', '.join(SEVERITIES)}"
            )
        object.__setattr__(self, "time", _utc(self.time))

    @property
    def key(self) -> tuple[str, str]:
        """The cooldown key: ``(rule, subject)``."""
        return (self.rule, self.subject)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (ISO-8601 time, NaN values as ``None``)."""

        def num(x: float) -> float | None:
            x = float(x)
            return x if math.isfinite(x) else None

        return {
            "rule": self.rule, "severity": self.severity, "subject": self.subject,
            "message": self.message, "value": num(self.value),
            "threshold": num(self.threshold), "time": self.time.isoformat(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Alert:
        """Inverse of :meth:`to_dict`."""
        nan = float("nan")
        return cls(d["rule"], d["severity"], d["subject"], d["message"],
                   nan if d["value"] is None else d["value"],
                   nan if d["threshold"] is None else d["threshold"],
                   datetime.fromisoformat(d["time"]))


class AlertHandler(Protocol):
    """Anything with a ``name`` and a ``handle(alert)`` method."""

    name: str

    def handle(self, alert: Alert) -> None: ...


class LogHandler:
    """Log each alert (``critical`` at ERROR, ``warning`` at WARNING, ``info`` at INFO)."""

    _LEVELS: ClassVar[dict[str, int]] = {
        "info": logging.INFO, "warning": logging.WARNING, "critical": logging.ERROR}

    def __init__(self, logger: logging.Logger | None = None, name: str = "log") -> None:
        self.logger = logger or logging.getLogger("qilin.alerts")
        self.name = name

    def handle(self, alert: Alert) -> None:
        self.logger.log(self._LEVELS[alert.severity], "[%s] %s %s: %s", alert.severity,
                        alert.rule, alert.subject, alert.message)


class CallbackHandler:
    """Call a Python function with each alert."""

    def __init__(self, fn: Callable[[Alert], Any], name: str | None = None) -> None:
        self.fn = fn
        self.name = name or f"callback:{getattr(fn, '__name__', type(fn).__name__)}"

    def handle(self, alert: Alert) -> None:
        self.fn(alert)


class JsonlFileHandler:
    """Append each alert as one JSON line to a file (one ``write`` per line, flushed;
    ``fsync=True`` also forces each line to disk)."""

    def __init__(self, path: str | Path, name: str | None = None, fsync: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.name = name or f"jsonl:{self.path.name}"
        self.fsync = fsync
        self._lock = threading.Lock()

    def handle(self, alert: Alert) -> None:
        line = json.dumps(alert.to_dict(), ensure_ascii=False) + "\n"
        with self._lock, open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            if self.fsync:
                os.fsync(fh.fileno())


def _abort_connection(conn: http.client.HTTPConnection) -> None:
    """Shut the connection's socket down from another thread: a blocked read returns."""
    sock = conn.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def post_with_deadline(url: str, body: bytes, headers: dict[str, str],
                       seconds: float) -> int:
    """POST ``body`` to ``url`` and read the whole response within ``seconds`` overall.

    A socket timeout bounds each read, not the request: a server that drips one byte per
    read holds ``urllib`` forever. Here a timer shuts the socket down when the deadline
    passes, whatever the server does.

    Returns
    -------
    int
        The HTTP status.

    Raises
    ------
    TimeoutError
        The deadline passed.
    OSError
        The connection failed.

    Examples
    --------
    >>> post_with_deadline("http://127.0.0.1:9/", b"{}", {}, 0.0)
    Traceback (most recent call last):
    ...
    TimeoutError: POST http://127.0.0.1:9/: no time left (deadline 0 s)
    """
    if seconds <= 0:
        raise TimeoutError(f"POST {url}: no time left (deadline {seconds:g} s)")
    parts = urllib.parse.urlsplit(url)
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(parts.hostname or "", parts.port, timeout=seconds)
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        _abort_connection(conn)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    try:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        return int(resp.status)
    except (OSError, http.client.HTTPException) as exc:
        if expired.is_set():
            raise TimeoutError(f"POST {url}: no complete response within {seconds:g} s") from None
        if isinstance(exc, OSError):
            raise
        raise OSError(f"POST {url}: {type(exc).__name__}: {exc}") from None
    finally:
        timer.cancel()
        conn.close()


class WebhookHandler:
    """HTTP POST the alert as JSON to a URL, retrying a bounded number of times.

    Every delivery ends within ``deadline_s`` (all attempts and back-offs together) and every
    attempt within ``timeout_s`` (connect, send and the whole response, not per read).

    Parameters
    ----------
    url : str
    retries : int
        Extra attempts after the first (so at most ``retries + 1`` requests).
    timeout_s : float
        Overall bound on one request (connect, send, read the whole response).
    backoff_s : float
        Sleep before retry ``k`` is ``backoff_s * 2**(k-1)``.
    headers : dict, optional
        Extra request headers.
    deadline_s : float, optional
        Overall bound on one delivery; default ``(retries + 1) * timeout_s`` plus the
        back-offs.
    """

    def __init__(self, url: str, retries: int = 3, timeout_s: float = 2.0,
                 backoff_s: float = 0.05, headers: dict[str, str] | None = None,
                 name: str | None = None, deadline_s: float | None = None) -> None:
        if retries < 0:
            raise MonitoringError(f"WebhookHandler: retries must be >= 0, got {retries}")
        if not url.startswith(("http://", "https://")):
            raise MonitoringError(f"WebhookHandler: url must be http(s)://..., got {url!r}")
        if not timeout_s > 0:
            raise MonitoringError(f"WebhookHandler: timeout_s must be > 0, got {timeout_s}")
        if deadline_s is None:
            deadline_s = (retries + 1) * timeout_s + backoff_s * (2 ** retries - 1)
        if not deadline_s > 0:
            raise MonitoringError(f"WebhookHandler: deadline_s must be > 0, got {deadline_s}")
        self.url = url
        self.retries = retries
        self.timeout_s = timeout_s
        self.backoff_s = backoff_s
        self.deadline_s = float(deadline_s)
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self.name = name or f"webhook:{url}"
        self.attempts = 0

    def handle(self, alert: Alert) -> None:
        body = json.dumps(alert.to_dict()).encode()
        deadline = time.monotonic() + self.deadline_s
        last: Exception | None = None
        tries = 0
        for attempt in range(self.retries + 1):
            if attempt:
                pause = self.backoff_s * 2 ** (attempt - 1)
                if time.monotonic() + pause >= deadline:
                    break
                time.sleep(pause)
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.attempts += 1
            tries += 1
            try:
                status = post_with_deadline(self.url, body, self.headers,
                                            min(self.timeout_s, left))
            except OSError as exc:  # TimeoutError is an OSError
                last = exc
                log.debug("webhook %s attempt %d failed: %s", self.url, attempt + 1, exc)
                continue
            if status < 400:
                return
            last = OSError(f"HTTP Error {status}")
            log.debug("webhook %s attempt %d: HTTP %d", self.url, attempt + 1, status)
        raise MonitoringError(
            f"webhook {self.url}: {tries} attempts failed within {self.deadline_s:g} s, "
            f"last error: {last}"
        )


class _TokenBucket:
    """At most ``rate`` events per second on average, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        self.rate, self.burst, self.clock = rate, float(burst), clock
        self.tokens = float(burst)
        self.last = clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class AlertManager:
    """Route alerts to handlers with cooldown, rate limiting and handler isolation.

    Parameters
    ----------
    handlers : iterable of AlertHandler
    cooldown_s : float
        Silence period per ``(rule, subject)``, measured on the alerts' ``time``.
    max_per_second : float, optional
        Global rate limit on the wall clock (token bucket); ``None`` for none.
    burst : int
        Bucket size for the rate limit.
    handler_timeout_s : float
        How long :meth:`fire` waits for the handlers; a handler still running is logged as
        timed out and left to finish on its own thread. While that call is still running the
        handler counts as stuck: later calls to :meth:`fire` queue its alerts without waiting
        for it, so a hung handler delays at most one ``fire``.
    max_queue : int
        Batches waiting per handler. When a slow or hung handler has this many waiting, the
        oldest waiting batch is dropped to make room; dropped alerts are counted in
        ``stats["dropped"]`` and ``qilin_alerts_dropped_total{handler}``.
    metrics : QilinMetrics, optional
        Counts alerts, suppressions and handler failures in Prometheus metrics.
    clock : callable
        Wall clock for the rate limit (``time.monotonic``).
    """

    def __init__(
        self,
        handlers: Iterable[AlertHandler] = (),
        cooldown_s: float = 300.0,
        max_per_second: float | None = None,
        burst: int = 100,
        handler_timeout_s: float = 5.0,
        metrics: Any = None,
        clock: Callable[[], float] = time.monotonic,
        max_queue: int = 1000,
    ) -> None:
        if cooldown_s < 0:
            raise MonitoringError(f"AlertManager: cooldown_s must be >= 0, got {cooldown_s}")
        if max_per_second is not None and max_per_second <= 0:
            raise MonitoringError(
                f"AlertManager: max_per_second must be > 0 or None, got {max_per_second}")
        if not isinstance(max_queue, int) or max_queue < 1:
            raise MonitoringError(f"AlertManager: max_queue must be an integer >= 1, got "
                                  f"{max_queue!r}")
        self.max_queue = max_queue
        self.cooldown_s = float(cooldown_s)
        self.handler_timeout_s = float(handler_timeout_s)
        self.metrics = metrics
        self._bucket = (_TokenBucket(max_per_second, burst, clock)
                        if max_per_second is not None else None)
        self._last_fired: dict[tuple[str, str], datetime] = {}
        self._handlers: dict[str, AlertHandler] = {}
        self._executors: dict[str, ThreadPoolExecutor] = {}
        self._queued: dict[str, deque[tuple[Future[None], int]]] = {}
        self._stuck: dict[str, Future[None]] = {}
        self._lock = threading.Lock()
        self._closed = False
        self.stats: dict[str, int] = {
            "received": 0, "dispatched": 0, "suppressed_cooldown": 0, "rate_limited": 0,
            "handler_errors": 0, "handler_timeouts": 0, "dropped": 0,
        }
        self.handler_failures: dict[str, int] = {}
        for h in handlers:
            self.add_handler(h)

    # ------------------------------------------------------------ handlers
    @property
    def handlers(self) -> list[AlertHandler]:
        return list(self._handlers.values())

    def add_handler(self, handler: AlertHandler) -> None:
        """Add a handler; its ``name`` must be unique within this manager."""
        name = getattr(handler, "name", None)
        if not name or not callable(getattr(handler, "handle", None)):
            raise MonitoringError(
                f"alert handler {handler!r} needs a 'name' and a 'handle(alert)' method")
        with self._lock:
            if name in self._handlers:
                raise MonitoringError(f"an alert handler named {name!r} is already registered")
            self._handlers[name] = handler
            self._executors[name] = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix=f"qilin-alert-{name[:20]}")
            self._queued[name] = deque()

    def remove_handler(self, name: str) -> None:
        """Remove a handler by name."""
        with self._lock:
            if name not in self._handlers:
                raise MonitoringError(f"no alert handler named {name!r}; have "
                                      f"{sorted(self._handlers)}")
            del self._handlers[name]
            self._queued.pop(name, None)
            self._stuck.pop(name, None)
            self._executors.pop(name).shutdown(wait=False, cancel_futures=True)

    # --------------------------------------------------------------- firing
    def _admit(self, alert: Alert) -> bool:
        with self._lock:
            self.stats["received"] += 1
            last = self._last_fired.get(alert.key)
            if last is not None and (alert.time - last).total_seconds() < self.cooldown_s:
                self.stats["suppressed_cooldown"] += 1
                self._count_suppressed("cooldown")
                return False
            if self._bucket is not None and not self._bucket.take():
                self.stats["rate_limited"] += 1
                self._count_suppressed("rate_limit")
                return False
            self._last_fired[alert.key] = alert.time
            self.stats["dispatched"] += 1
        return True

    def _count_suppressed(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.alerts_suppressed.labels(reason=reason).inc()

    def _failed(self, name: str, kind: str, exc: BaseException | None, alert: Alert) -> None:
        with self._lock:
            self.stats["handler_timeouts" if kind == "timeout" else "handler_errors"] += 1
            self.handler_failures[name] = self.handler_failures.get(name, 0) + 1
        if self.metrics is not None:
            self.metrics.alert_handler_failures.labels(handler=name, kind=kind).inc()
        if kind == "timeout":
            log.error("alert handler %r timed out after %.3gs on %s/%s", name,
                      self.handler_timeout_s, alert.rule, alert.subject)
        else:
            log.error("alert handler %r failed on %s/%s: %s", name, alert.rule, alert.subject,
                      exc)

    def fire(self, alert: Alert) -> bool:
        """Send one alert to every handler unless cooled down or rate limited.

        Returns
        -------
        bool
            True when the alert was dispatched to the handlers.
        """
        return self.fire_many([alert]) == 1

    def fire_many(self, alerts: Iterable[Alert]) -> int:
        """Admit each alert in order, then hand the admitted ones to every handler as one
        batch (one thread hand-off per handler); returns how many were dispatched."""
        if self._closed:
            raise MonitoringError("AlertManager is closed; cannot fire alerts")
        batch = [a for a in alerts if self._admit(a)]
        if not batch:
            return 0
        if self.metrics is not None:
            for a in batch:
                self.metrics.alerts.labels(rule=a.rule, severity=a.severity).inc()
                self.metrics.observe_alert_subject(a)
        futures: dict[Future[None], str] = {}
        with self._lock:
            for name, handler in self._handlers.items():
                fut = self._enqueue(name, handler, batch)
                stuck = self._stuck.get(name)
                if stuck is None or stuck.done():
                    self._stuck.pop(name, None)
                    futures[fut] = name
        _, pending = wait_futures(futures, timeout=self.handler_timeout_s)
        for fut in pending:
            with self._lock:
                self._stuck[futures[fut]] = fut
            self._failed(futures[fut], "timeout", None, batch[0])
        return len(batch)

    def _enqueue(self, name: str, handler: AlertHandler, batch: list[Alert]) -> Future[None]:
        """Queue ``batch`` for one handler (lock held), dropping the oldest waiting batch
        when ``max_queue`` batches already wait."""
        queued = self._queued[name]
        while queued and queued[0][0].done():
            queued.popleft()
        waiting = [entry for entry in queued if not entry[0].running()]
        if len(waiting) >= self.max_queue:
            oldest, n_alerts = waiting[0]
            if oldest.cancel():
                queued.remove((oldest, n_alerts))
                self.stats["dropped"] += n_alerts
                if self.metrics is not None:
                    self.metrics.alerts_dropped.labels(handler=name).inc(n_alerts)
                log.warning("alert handler %r is behind: dropped the oldest %d queued "
                            "alert(s)", name, n_alerts)
        fut = self._executors[name].submit(self._run_handler, name, handler, batch)
        queued.append((fut, len(batch)))
        return fut

    def _run_handler(self, name: str, handler: AlertHandler, batch: list[Alert]) -> None:
        for alert in batch:
            try:
                handler.handle(alert)
            except Exception as exc:
                self._failed(name, "error", exc, alert)

    def reset_cooldowns(self) -> None:
        """Forget when each key last fired."""
        with self._lock:
            self._last_fired.clear()

    def close(self) -> None:
        """Stop the handler threads (running handlers finish on their own)."""
        with self._lock:
            for ex in self._executors.values():
                ex.shutdown(wait=False, cancel_futures=True)
            self._closed = True

    def __enter__(self) -> AlertManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
