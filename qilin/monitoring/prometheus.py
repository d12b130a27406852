"""Prometheus metrics of qilin and three ways to export them.

:class:`QilinMetrics` holds every qilin metric in its own ``CollectorRegistry`` (never the
global one, so two exporters in one process or one test run never collide). Names follow
Prometheus conventions: ``qilin_`` prefix, base units (``_seconds``, ``_bytes``, ``_ratio``
for 0..1 fractions), ``_total`` on counters, and bounded label sets: rule, severity, reason,
handler, operation, gpu index. Per-symbol series exist only with ``symbol_labels=True``.

Export:

* :meth:`QilinMetrics.serve` — an HTTP ``/metrics`` endpoint, bound to 127.0.0.1 by default;
  ``port=0`` picks a free port, reported as :attr:`MetricsServer.port`. It serves at most
  ``max_connections`` connections at once (more are closed at once) and closes a connection
  that sends nothing for ``idle_timeout_s``, so idle clients cannot pile up threads.
* :meth:`QilinMetrics.write_textfile` — the node-exporter textfile-collector format, written
  atomically (temp file in the same folder, then ``os.replace``), for batch/papermill runs.
* :meth:`QilinMetrics.push` — to a Pushgateway.

Examples
--------
>>> m = QilinMetrics()
>>> m.alerts.labels(rule="pct_move", severity="warning").inc()
>>> "qilin_alerts_total" in m.exposition()
True
>>> m.value("qilin_alerts_total", rule="pct_move", severity="warning")
1.0
>>> "qilin_monitor_ticks_total" in exported_metric_names(m.registry)
True
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    make_wsgi_app,
    push_to_gateway,
)

from qilin.atomic import atomic_path
from qilin.errors import MonitoringError

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "gauge": ("",),
    "info": ("_info",),
}


log = logging.getLogger(__name__)


class _QuietHandler(WSGIRequestHandler):
    """Logs nothing per request; its socket timeout is the server's idle timeout."""

    def setup(self) -> None:
        self.timeout = self.server.idle_timeout_s  # type: ignore[attr-defined]
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class BoundedWSGIServer(WSGIServer):
    """A WSGI server with one daemon thread per connection, at most ``max_connections`` of
    them; a connection that sends nothing for ``idle_timeout_s`` is closed.

    Connections beyond the limit are closed as soon as they are accepted (counted in
    :attr:`rejected`); Prometheus retries a failed scrape at its next interval.
    """

    request_queue_size = 128

    def __init__(self, address: tuple[str, int], idle_timeout_s: float,
                 max_connections: int) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.idle_timeout_s = float(idle_timeout_s)
        self.max_connections = int(max_connections)
        self.rejected = 0
        self._slots = threading.BoundedSemaphore(self.max_connections)
        self._active = 0
        self._active_lock = threading.Lock()
        super().__init__(address, _QuietHandler)

    @property
    def active_connections(self) -> int:
        """Connections being served now."""
        return self._active

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.rejected += 1
            self.shutdown_request(request)
            return
        with self._active_lock:
            self._active += 1
        threading.Thread(target=self._serve_one, args=(request, client_address),
                         name="qilin-metrics-conn", daemon=True).start()

    def _serve_one(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except OSError as exc:  # idle timeout (TimeoutError), client went away
            log.debug("metrics connection from %s closed: %s", client_address, exc)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            with self._active_lock:
                self._active -= 1
            self._slots.release()


@dataclass
class MetricsServer:
    """A running ``/metrics`` HTTP endpoint; :meth:`close` stops it."""

    host: str
    port: int
    _httpd: Any
    _thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class QilinMetrics:
    """All qilin metrics, in a dedicated registry.

    Parameters
    ----------
    registry : CollectorRegistry, optional
        Defaults to a new private registry.
    symbol_labels : bool
        Also count alerts per symbol (``qilin_symbol_alerts_total{symbol,rule}``); off by
        default because a label per symbol makes the series count grow with the universe.
    """

    def __init__(self, registry: CollectorRegistry | None = None,
                 symbol_labels: bool = False) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        # alerts
        self.alerts = Counter("qilin_alerts", "Alerts dispatched to handlers.",
                              ["rule", "severity"], registry=r)
        self.alerts_suppressed = Counter(
            "qilin_alerts_suppressed", "Alerts not dispatched (cooldown or rate limit).",
            ["reason"], registry=r)
        self.alerts_dropped = Counter(
            "qilin_alerts_dropped", "Queued alerts dropped because a handler fell behind.",
            ["handler"], registry=r)
        self.alert_handler_failures = Counter(
            "qilin_alert_handler_failures", "Alert handler calls that raised or timed out.",
            ["handler", "kind"], registry=r)
        self.symbol_labels = symbol_labels
        self.symbol_alerts = (Counter("qilin_symbol_alerts", "Alerts dispatched per symbol.",
                                      ["symbol", "rule"], registry=r) if symbol_labels else None)
        # price monitor / anomaly detector
        self.ticks = Counter("qilin_monitor_ticks", "Ticks (bar batches) processed.",
                             registry=r)
        self.symbol_ticks = Counter("qilin_monitor_symbol_ticks",
                                    "Symbol observations processed (symbols x ticks).",
                                    registry=r)
        self.signals = Counter("qilin_monitor_signals",
                               "Rule hits before cooldown and rate limiting.", ["rule"],
                               registry=r)
        self.tick_duration = Histogram("qilin_monitor_tick_duration_seconds",
                                       "Wall time to evaluate one tick.",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.monitored_symbols = Gauge("qilin_monitor_symbols", "Symbols monitored.",
                                       registry=r)
        self.last_tick_time = Gauge("qilin_monitor_last_tick_timestamp_seconds",
                                    "Market time of the last tick processed (Unix time).",
                                    registry=r)
        # system
        self.cpu_usage = Gauge("qilin_system_cpu_usage_ratio", "Machine CPU use, 0..1.",
                               registry=r)
        self.memory_used = Gauge("qilin_system_memory_used_bytes", "Machine memory in use.",
                                 registry=r)
        self.memory_total = Gauge("qilin_system_memory_total_bytes", "Machine memory.",
                                  registry=r)
        self.memory_usage = Gauge("qilin_system_memory_usage_ratio",
                                  "Machine memory in use, 0..1.", registry=r)
        self.disk_used = Gauge("qilin_system_disk_used_bytes", "Disk space used.", ["path"],
                               registry=r)
        self.disk_total = Gauge("qilin_system_disk_total_bytes", "Disk size.", ["path"],
                                registry=r)
        self.disk_usage = Gauge("qilin_system_disk_usage_ratio", "Disk space used, 0..1.",
                                ["path"], registry=r)
        self.process_rss = Gauge("qilin_process_resident_memory_bytes",
                                 "Resident memory of this process.", registry=r)
        self.process_cpu = Gauge("qilin_process_cpu_usage_ratio",
                                 "CPU use of this process (1 = one core).", registry=r)
        self.process_threads = Gauge("qilin_process_threads", "Threads of this process.",
                                     registry=r)
        self.gpu_available = Gauge("qilin_gpu_available",
                                   "1 when GPU metrics come from NVML, else 0.", registry=r)
        self.gpu_utilization = Gauge("qilin_gpu_utilization_ratio", "GPU busy fraction.",
                                     ["gpu"], registry=r)
        self.gpu_memory_used = Gauge("qilin_gpu_memory_used_bytes", "GPU memory in use.",
                                     ["gpu"], registry=r)
        self.gpu_memory_total = Gauge("qilin_gpu_memory_total_bytes", "GPU memory.",
                                      ["gpu"], registry=r)
        self.gpu_memory_usage = Gauge("qilin_gpu_memory_usage_ratio",
                                      "GPU memory in use, 0..1.", ["gpu"], registry=r)
        self.gpu_temperature = Gauge("qilin_gpu_temperature_celsius", "GPU temperature.",
                                     ["gpu"], registry=r)
        # performance
        self.operation_duration = Histogram(
            "qilin_operation_duration_seconds",
            "Duration of timed operations (backtest, prediction, ...).", ["operation"],
            buckets=LATENCY_BUCKETS, registry=r)
        self.operation_errors = Counter("qilin_operation_errors",
                                        "Timed operations that raised.", ["operation"],
                                        registry=r)
        self.rows_processed = Counter("qilin_rows_processed", "Rows processed.",
                                      ["operation"], registry=r)
        self.rows_per_second = Gauge("qilin_rows_per_second",
                                     "Throughput of the last timed call.", ["operation"],
                                     registry=r)

    # ---------------------------------------------------------------- helpers
    def observe_alert_subject(self, alert: Any) -> None:
        """Count a dispatched alert per symbol when ``symbol_labels`` is on."""
        if self.symbol_alerts is not None:
            self.symbol_alerts.labels(symbol=alert.subject, rule=alert.rule).inc()

    def exposition(self) -> str:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry).decode()

    def value(self, sample: str, **labels: str) -> float | None:
        """Current value of one sample (e.g. ``qilin_alerts_total``), or None."""
        v = self.registry.get_sample_value(sample, labels)
        return None if v is None else float(v)

    # ---------------------------------------------------------------- export
    def serve(self, host: str = "127.0.0.1", port: int = 0, idle_timeout_s: float = 10.0,
              max_connections: int = 32) -> MetricsServer:
        """Serve ``/metrics`` over HTTP on a daemon thread; ``port=0`` picks a free port.

        At most ``max_connections`` connections are served at once (one thread each; more
        are closed on accept) and a connection idle for ``idle_timeout_s`` is closed.
        """
        if not idle_timeout_s > 0 or max_connections < 1:
            raise MonitoringError(
                f"metrics server: idle_timeout_s must be > 0 and max_connections >= 1, got "
                f"{idle_timeout_s!r} and {max_connections!r}")
        try:
            httpd = BoundedWSGIServer((host, port), idle_timeout_s, max_connections)
        except OSError as exc:
            raise MonitoringError(f"cannot serve metrics on {host}:{port}: {exc}") from exc
        httpd.set_app(make_wsgi_app(self.registry))
        thread = threading.Thread(target=httpd.serve_forever, name="qilin-metrics",
                                  daemon=True)
        thread.start()
        return MetricsServer(host, int(httpd.server_port), httpd, thread)

    def write_textfile(self, path: str | Path) -> Path:
        """Write the textfile-collector file atomically (temp file + ``os.replace``)."""
        path = Path(path)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            fh.write(generate_latest(self.registry))
            fh.flush()
            os.fsync(fh.fileno())
        return path

    def push(self, gateway: str, job: str = "qilin",
             grouping_key: dict[str, str] | None = None, timeout_s: float = 10.0) -> None:
        """Push every metric to a Pushgateway (``PUT /metrics/job/<job>/...``)."""
        try:
            push_to_gateway(gateway, job=job, registry=self.registry,
                            grouping_key=grouping_key, timeout=timeout_s)
        except OSError as exc:
            raise MonitoringError(f"push to Pushgateway {gateway} (job {job!r}) failed: "
                                  f"{exc}") from exc


def exported_metric_names(registry: CollectorRegistry) -> set[str]:
    """Every sample name the registry can expose (``_total``, ``_bucket`` ... included),
    whether or not a labelled child exists yet."""
    names: set[str] = set()
    for family in registry.collect():
        for suffix in _SUFFIXES.get(family.type, ("",)):
            names.add(family.name + suffix)
        names.update(s.name for s in family.samples)
    return names
