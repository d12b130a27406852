"""Qilin's metrics on a real Dask scheduler's /metrics (LocalCluster, dashboard on loopback)."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from qilin.errors import MonitoringError
from qilin.monitoring.dask_plugin import install, publish_metrics
from qilin.monitoring.prometheus import QilinMetrics


def _samples(port: int) -> dict[str, list]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, list] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append(s)
    return out


def test_qilin_series_on_scheduler_metrics():
    from distributed import Client, LocalCluster

    with LocalCluster(processes=False, n_workers=1, threads_per_worker=1,
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        port = cluster.scheduler.http_server.port
        with pytest.raises(MonitoringError, match="install"):
            publish_metrics(client, QilinMetrics())
        install(client)
        assert client.gather(client.map(lambda x: x * 2, range(6))) == [0, 2, 4, 6, 8, 10]
        metrics = QilinMetrics()
        metrics.alerts.labels(rule="return_zscore", severity="warning").inc(4)
        publish_metrics(client, metrics, source="notebook")
        samples = _samples(port)
        assert any(n.startswith("dask_scheduler") for n in samples)   # the scheduler's own
        done = [s for s in samples["qilin_dask_task_transitions_total"]
                if s.labels == {"finish": "memory"}]
        assert done and done[0].value >= 6
        alerts = samples["qilin_alerts_total"]
        assert [(s.labels, s.value) for s in alerts] == [
            ({"rule": "return_zscore", "severity": "warning", "source": "notebook"}, 4.0)]
        metrics.alerts.labels(rule="return_zscore", severity="warning").inc()
        publish_metrics(client, metrics, source="notebook")              # replaces
        assert _samples(port)["qilin_alerts_total"][0].value == 5.0
    from prometheus_client import REGISTRY

    assert REGISTRY.get_sample_value("qilin_dask_task_transitions_total",
                                     {"finish": "memory"}) is None    # unregistered on close
