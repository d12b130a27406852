"""Prometheus: naming, isolated registries, HTTP exporter, textfile, Pushgateway, a real
Prometheus server scraping qilin, promtool on the alert rules, the Grafana dashboard."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from qilin.errors import MonitoringError
from qilin.monitoring.dask_plugin import QilinSchedulerPlugin
from qilin.monitoring.prometheus import QilinMetrics, exported_metric_names

REPO = Path(__file__).resolve().parents[2]
PROM_DIR = REPO / "configs" / "prometheus"
UNITS = ("_total", "_seconds", "_bytes", "_ratio", "_celsius", "_symbols", "_threads",
         "_available", "_per_second", "_count", "_sum", "_bucket", "_created")


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


def test_metric_names_follow_conventions():
    m = QilinMetrics()
    families = list(m.registry.collect())
    assert families
    for fam in families:
        assert fam.name.startswith("qilin_"), fam.name
        assert re.fullmatch(r"[a-z_]+", fam.name), fam.name
        if fam.type == "counter":
            assert not fam.name.endswith("_total")   # the client appends _total
        if fam.type == "histogram":
            assert fam.name.endswith("_seconds"), fam.name
    names = exported_metric_names(m.registry)
    assert {"qilin_alerts_total", "qilin_monitor_tick_duration_seconds_bucket",
            "qilin_system_memory_used_bytes", "qilin_gpu_memory_usage_ratio"} <= names
    for name in names:
        assert name.endswith(UNITS), f"{name} has no unit/type suffix"
    # bounded labels: alerts about symbols create no per-symbol series unless asked for
    from qilin.monitoring.alerts import Alert, AlertManager

    wide = QilinMetrics(symbol_labels=True)
    for metrics in (m, wide):
        with AlertManager(cooldown_s=0, metrics=metrics) as manager:
            manager.fire(Alert("pct_move", "warning", "600519.SH", "moved", 0.06, 0.05))
    assert "600519.SH" not in m.exposition()
    assert 'qilin_symbol_alerts_total{rule="pct_move",symbol="600519.SH"} 1.0' in \
        wide.exposition()


def test_registries_are_isolated():
    a, b = QilinMetrics(), QilinMetrics()
    a.ticks.inc(5)
    assert a.value("qilin_monitor_ticks_total") == 5
    assert b.value("qilin_monitor_ticks_total") == 0
    from prometheus_client import REGISTRY

    assert REGISTRY.get_sample_value("qilin_monitor_ticks_total") is None


def test_http_exporter_on_free_loopback_port():
    m = QilinMetrics()
    m.alerts.labels(rule="limit_up", severity="info").inc(2)
    with m.serve(port=0) as server:
        assert server.host == "127.0.0.1" and server.port > 0
        text = _scrape(server.url)
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    sample = next(s for s in fams["qilin_alerts"].samples if s.name == "qilin_alerts_total")
    assert sample.labels == {"rule": "limit_up", "severity": "info"} and sample.value == 2
    with pytest.raises(OSError):
        _scrape(server.url)                                   # closed
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        with pytest.raises(MonitoringError, match="cannot serve metrics"):
            m.serve(port=busy.getsockname()[1])
    finally:
        busy.close()


def test_textfile_written_atomically(tmp_path):
    m = QilinMetrics()
    m.rows_processed.labels(operation="backtest").inc(1234)
    target = tmp_path / "textfile" / "qilin.prom"
    m.write_textfile(target)
    text = target.read_text()
    assert 'qilin_rows_processed_total{operation="backtest"} 1234.0' in text
    m.rows_processed.labels(operation="backtest").inc(1)
    m.write_textfile(target)
    assert 'qilin_rows_processed_total{operation="backtest"} 1235.0' in target.read_text()
    assert [p.name for p in target.parent.iterdir()] == ["qilin.prom"]   # no temp left


def test_push_to_fake_pushgateway(http_recorder):
    gw = http_recorder()
    m = QilinMetrics()
    m.ticks.inc(7)
    m.push(gw.url, job="nightly", grouping_key={"run": "r42"})
    method, path, body = gw.requests[0]
    assert method == "PUT" and path == "/metrics/job/nightly/run/r42"
    assert "qilin_monitor_ticks_total 7.0" in body.decode()
    dead = http_recorder(respond=lambda n: 500)
    with pytest.raises(MonitoringError, match="Pushgateway"):
        m.push(dead.url, job="nightly")


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.prometheus
def test_real_prometheus_scrapes_qilin(tmp_path):
    prom = shutil.which("prometheus") or ("/usr/bin/prometheus"
                                           if Path("/usr/bin/prometheus").exists() else None)
    if prom is None:
        pytest.skip("Debian's prometheus binary is not installed (make prometheus installs it)")
    m = QilinMetrics()
    m.alerts.labels(rule="volume_spike", severity="info").inc(3)
    m.monitored_symbols.set(500)
    with m.serve(port=0) as exporter:
        cfg = tmp_path / "prometheus.yml"
        cfg.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: qilin\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{exporter.port}']\n")
        port = _free_port()
        proc = subprocess.Popen(
            [prom, f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            query = urllib.parse.urlencode({"query": 'qilin_alerts_total{rule="volume_spike"}'})
            url = f"http://127.0.0.1:{port}/api/v1/query?{query}"
            deadline = time.monotonic() + 30
            result = []
            while time.monotonic() < deadline and not result:
                time.sleep(0.5)
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                try:
                    result = json.loads(_scrape(url))["data"]["result"]
                except OSError:
                    continue
            assert result, "Prometheus did not report qilin_alerts_total within 30 s"
            assert result[0]["metric"]["job"] == "qilin"
            assert result[0]["metric"]["severity"] == "info"
            assert float(result[0]["value"][1]) == 3.0
            sym = json.loads(_scrape(
                f"http://127.0.0.1:{port}/api/v1/query?query=qilin_monitor_symbols"))
            assert float(sym["data"]["result"][0]["value"][1]) == 500.0
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _promtool() -> str:
    tool = shutil.which("promtool") or ("/usr/bin/promtool"
                                         if Path("/usr/bin/promtool").exists() else None)
    if tool is None:
        pytest.skip("Debian's promtool is not installed (make prometheus installs it)")
    return tool


@pytest.mark.prometheus
def test_alert_rules_pass_promtool():
    tool = _promtool()
    check = subprocess.run([tool, "check", "rules", str(PROM_DIR / "alerts.yml")],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS" in check.stdout
    unit = subprocess.run([tool, "test", "rules", str(PROM_DIR / "alerts_test.yml")],
                          capture_output=True, text=True, timeout=60)
    assert unit.returncode == 0, unit.stdout + unit.stderr
    conf = subprocess.run([tool, "check", "config", str(PROM_DIR / "prometheus.yml")],
                          capture_output=True, text=True, timeout=60)
    assert conf.returncode == 0, conf.stdout + conf.stderr


def _metric_names_in(expr: str) -> set[str]:
    return set(re.findall(r"\bqilin_[a-z_]+\b", expr))


def _all_exported() -> set[str]:
    from qilin.pipelines.metrics import metric_names

    return exported_metric_names(QilinMetrics(symbol_labels=True).registry) | \
        QilinSchedulerPlugin.metric_names() | metric_names()


def test_alert_rules_reference_only_exported_metrics():
    import yaml

    rules = yaml.safe_load((PROM_DIR / "alerts.yml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    used = set().union(*(_metric_names_in(e) for e in exprs))
    assert used and used <= _all_exported(), used - _all_exported()


def test_grafana_dashboard_uses_only_exported_metrics():
    dash = json.loads((REPO / "configs" / "grafana" / "qilin-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 10
    used = set().union(*(_metric_names_in(e) for e in exprs))
    missing = used - _all_exported()
    assert not missing, f"dashboard uses metrics qilin does not export: {missing}"
    assert {"qilin_alerts_total", "qilin_system_cpu_usage_ratio"} <= used
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])


def test_http_exporter_bounds_threads_and_closes_idle_connections():
    """300 clients that connect and say nothing: threads stay bounded (today's defect was
    one thread per connection, forever) and every connection is closed after the idle
    timeout; then scrapes work again."""
    import threading

    m = QilinMetrics()
    m.ticks.inc(3)
    with m.serve(port=0, idle_timeout_s=0.5, max_connections=8) as server:
        before = threading.active_count()
        idle = []
        try:
            for _ in range(300):
                s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
                idle.append(s)
            time.sleep(0.2)
            assert threading.active_count() <= before + 8, threading.active_count()
            assert server._httpd.active_connections <= 8
            assert server._httpd.rejected > 0              # over the limit: closed at once
            t0 = time.monotonic()
            for s in idle:                          # the server closes each one: EOF
                s.settimeout(5)
                assert s.recv(1) == b""
            assert time.monotonic() - t0 < 0.5 + 3
        finally:
            for s in idle:
                s.close()
        deadline = time.monotonic() + 5
        while threading.active_count() > before and time.monotonic() < deadline:
            time.sleep(0.02)
        assert threading.active_count() <= before
        assert "qilin_monitor_ticks_total 3.0" in _scrape(server.url)
