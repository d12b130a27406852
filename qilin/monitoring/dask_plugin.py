"""Qilin's metrics on a Dask scheduler's ``/metrics`` endpoint.

The Dask scheduler serves Prometheus metrics from ``prometheus_client``'s global registry at
``http://<dashboard address>/metrics``. :class:`QilinSchedulerPlugin` is a scheduler plugin
that, on the scheduler (in whatever process or machine it runs), registers one collector
there exposing:

* ``qilin_dask_task_transitions_total{finish}`` — tasks that finished in memory or erred,
  counted by the plugin from the scheduler's transitions;
* every metric a client published with :func:`publish_metrics` (its last snapshot per
  ``source``, with a ``source`` label added), so the alert counters and timings of a
  notebook or pipeline running on the cluster are scraped together with the cluster's own.

Examples
--------
>>> plugin = QilinSchedulerPlugin()
>>> plugin.name
'qilin-metrics'
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import prometheus_client
from distributed.diagnostics.plugin import SchedulerPlugin
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from qilin.errors import MonitoringError

log = logging.getLogger(__name__)
PLUGIN_NAME = "qilin-metrics"


class _QilinCollector:
    """Yields the plugin's own metrics and the published snapshots, merged by name."""

    def __init__(self, plugin: QilinSchedulerPlugin) -> None:
        self.plugin = plugin

    def describe(self) -> list[Metric]:
        # Registering in the shared global registry must not call collect() early or claim
        # names; the families change as clients publish.
        return []

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for fam in self.plugin.registry.collect():
            merged[fam.name] = fam
        with self.plugin.lock:
            snapshots = dict(self.plugin.snapshots)
        for source, text in sorted(snapshots.items()):
            for fam in text_string_to_metric_families(text):
                if not fam.name.startswith("qilin_"):
                    continue
                out = merged.get(fam.name)
                if out is None:
                    out = merged[fam.name] = Metric(fam.name, fam.documentation, fam.type)
                for s in fam.samples:
                    out.add_sample(s.name, {**s.labels, "source": source}, s.value)
        yield from merged.values()


class QilinSchedulerPlugin(SchedulerPlugin):
    """Expose qilin's metrics on the scheduler's ``/metrics`` (see the module docs)."""

    name = PLUGIN_NAME

    def __init__(self) -> None:
        self.snapshots: dict[str, str] = {}
        self.scheduler: Any = None
        self._collector: _QilinCollector | None = None

    def _setup(self) -> None:
        self.lock = threading.Lock()
        self.registry = CollectorRegistry()
        self.transitions = Counter("qilin_dask_task_transitions",
                                   "Tasks that reached a final state on this scheduler.",
                                   ["finish"], registry=self.registry)
        self.publishes = Counter("qilin_dask_metric_publishes",
                                 "Metric snapshots received from clients.",
                                 registry=self.registry)

    @classmethod
    def metric_names(cls) -> set[str]:
        """Sample names the plugin itself exports (published snapshots add qilin's)."""
        from qilin.monitoring.prometheus import exported_metric_names

        probe = cls()
        probe._setup()
        return exported_metric_names(probe.registry)

    async def start(self, scheduler: Any) -> None:
        self._setup()
        self.scheduler = scheduler
        self._collector = _QilinCollector(self)
        prometheus_client.REGISTRY.register(self._collector)

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if finish in ("memory", "erred"):
            self.transitions.labels(finish=finish).inc()

    def store(self, text: str, source: str) -> None:
        """Keep ``text`` (Prometheus exposition) as the latest snapshot of ``source``."""
        with self.lock:
            self.snapshots[source] = text
        self.publishes.inc()

    async def close(self) -> None:
        if self._collector is not None:
            try:
                prometheus_client.REGISTRY.unregister(self._collector)
            except KeyError:  # already gone
                pass
            self._collector = None


def install(client: Any) -> None:
    """Register :class:`QilinSchedulerPlugin` on the client's scheduler (idempotent)."""
    client.register_plugin(QilinSchedulerPlugin(), name=PLUGIN_NAME)


def _store_on_scheduler(text: str, source: str, dask_scheduler: Any = None) -> bool:
    plugin = dask_scheduler.plugins.get(PLUGIN_NAME)
    if plugin is None:
        return False
    plugin.store(text, source)
    return True


def publish_metrics(client: Any, metrics: Any, source: str = "client") -> None:
    """Send a snapshot of ``metrics`` (a QilinMetrics) to the scheduler's plugin.

    Call it after work you want visible on the scheduler's ``/metrics`` (or periodically);
    each call replaces the previous snapshot of the same ``source``.

    Raises
    ------
    MonitoringError
        When the plugin is not installed on the scheduler (call :func:`install`).
    """
    ok = client.run_on_scheduler(_store_on_scheduler, metrics.exposition(), source)
    if not ok:
        raise MonitoringError(f"the scheduler at {client.scheduler.address} has no "
                              f"{PLUGIN_NAME!r} plugin; call qilin.monitoring.dask_plugin."
                              "install(client) first")
