"""SystemMonitor (psutil, NVML when present) and PerformanceMonitor timers and rules."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from qilin.config import MonitoringConfig
from qilin.errors import MonitoringError
from qilin.monitoring.alerts import Alert, AlertManager, CallbackHandler
from qilin.monitoring.performance import PerformanceMonitor
from qilin.monitoring.prometheus import QilinMetrics
from qilin.monitoring.system import GPUStats, SystemMonitor, SystemSnapshot, read_gpus


def test_sample_publishes_real_figures():
    import psutil

    metrics = QilinMetrics()
    mon = SystemMonitor(metrics=metrics, disk_paths=("/", "/definitely/not/here"))
    snap = mon.sample()
    assert 0 <= snap.cpu_usage <= 1 and 0 < snap.memory_usage < 1
    assert snap.memory_total_bytes == psutil.virtual_memory().total
    assert list(snap.disk) == ["/"]
    assert snap.process_rss_bytes == pytest.approx(psutil.Process().memory_info().rss,
                                                   rel=0.2)
    assert metrics.value("qilin_system_memory_total_bytes") == snap.memory_total_bytes
    assert metrics.value("qilin_process_resident_memory_bytes") == snap.process_rss_bytes
    assert metrics.value("qilin_system_disk_usage_ratio", path="/") == pytest.approx(
        snap.disk["/"][0] / snap.disk["/"][1])
    d = snap.to_dict()
    if snap.gpus:                                            # a GPU machine with NVML
        assert metrics.value("qilin_gpu_available") == 1
        assert "gpus" in d
    else:
        assert snap.gpu_note.startswith("GPU metrics omitted")
        assert d["gpu_note"] == snap.gpu_note and "gpus" not in d
        assert metrics.value("qilin_gpu_available") == 0
        assert metrics.value("qilin_gpu_memory_used_bytes", gpu="0") is None


def test_read_gpus_without_nvml_says_why():
    gpus, note = read_gpus()
    try:
        import pynvml  # noqa: F401
    except ImportError:
        assert gpus == [] and "pynvml" in note


def _snap(cpu: float, mem: float, gpu_mem: float | None = None) -> SystemSnapshot:
    gpus = [] if gpu_mem is None else [GPUStats(0, "Fake GPU", 0.5, int(gpu_mem * 100), 100,
                                                60.0)]
    return SystemSnapshot(datetime(2024, 1, 1, tzinfo=UTC), cpu, int(mem * 1000), 1000, {},
                          1, 0.0, 1, gpus)


def test_threshold_rules_fire_through_alert_manager():
    got: list[Alert] = []
    metrics = QilinMetrics()
    with AlertManager([CallbackHandler(got.append)], cooldown_s=0) as manager:
        mon = SystemMonitor(MonitoringConfig(), alerts=manager, metrics=metrics)
        assert mon.check(_snap(0.79, 0.79, 0.89)) == []
        out = mon.check(_snap(0.81, 0.85, 0.95))
    assert [a.rule for a in out] == ["cpu_high", "memory_high", "gpu_memory_high"]
    assert [a.subject for a in got] == ["cpu", "memory", "gpu0"]
    assert out[2].severity == "critical" and out[2].threshold == pytest.approx(0.9)
    mon.publish(_snap(0.5, 0.5, 0.95))
    assert metrics.value("qilin_gpu_memory_usage_ratio", gpu="0") == pytest.approx(0.95)
    assert metrics.value("qilin_gpu_temperature_celsius", gpu="0") == 60.0
    custom = SystemMonitor(MonitoringConfig(cpu_threshold_pct=50.0))
    assert [a.rule for a in custom.check(_snap(0.6, 0.1))] == ["cpu_high"]


def test_timer_context_and_decorator_record_metrics():
    metrics = QilinMetrics()
    perf = PerformanceMonitor(metrics=metrics)
    with perf.timer("backtest") as t:
        time.sleep(0.02)
        t.rows = 5000
    st = perf.stats("backtest")
    assert st["count"] == 1 and 0.015 < st["last_s"] < 1.0
    assert st["rows_per_s"] == pytest.approx(5000 / st["last_s"])
    assert metrics.value("qilin_operation_duration_seconds_count", operation="backtest") == 1
    assert metrics.value("qilin_rows_processed_total", operation="backtest") == 5000

    @perf.timed("features", rows=len)
    def build(n: int) -> list[int]:
        return list(range(n))

    assert build(300) == list(range(300))
    assert perf.stats("features")["rows"] == 300
    with pytest.raises(ValueError, match="bad input"), perf.timer("backtest"):
        raise ValueError("bad input")
    assert perf.stats("backtest")["errors"] == 1
    assert metrics.value("qilin_operation_errors_total", operation="backtest") == 1
    with pytest.raises(MonitoringError, match="no timings recorded for operation 'nope'"):
        perf.stats("nope")


def test_latency_and_error_rate_rules():
    got: list[Alert] = []
    with AlertManager([CallbackHandler(got.append)], cooldown_s=0) as manager:
        perf = PerformanceMonitor(alerts=manager, min_calls=20, error_window=20)
        assert perf.record("prediction", 0.09) == []
        assert [a.rule for a in perf.record("prediction", 0.11)] == ["latency_high"]
        assert perf.record("backtest", 30.0) == []            # no latency rule for backtests
        for _ in range(18):
            perf.record("training", 1.0)
        assert perf.record("training", 1.0, error=True) == []  # 19 calls: not enough yet
        out = perf.record("training", 1.0, error=True)         # 2/20 = 10% > 5%
        assert [a.rule for a in out] == ["error_rate_high"]
        assert out[0].value == pytest.approx(0.1)
        one = PerformanceMonitor(min_calls=20, error_window=20)
        for i in range(20):
            last = one.record("scoring", 0.001, error=(i == 0))  # 1/20 = 5%: not above
        assert last == []
    assert [a.rule for a in got] == ["latency_high", "error_rate_high"]
    with pytest.raises(MonitoringError, match="latency threshold"):
        PerformanceMonitor(latency_thresholds={"prediction": 0})


def test_nvml_readings_are_mapped(monkeypatch):
    """The NVML path, with a stand-in pynvml module (this machine has no NVIDIA driver)."""
    import sys
    import types

    calls: list[str] = []
    fake = types.SimpleNamespace(
        NVML_TEMPERATURE_GPU=0,
        nvmlInit=lambda: calls.append("init"),
        nvmlShutdown=lambda: calls.append("shutdown"),
        nvmlDeviceGetCount=lambda: 2,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetName=lambda h: b"NVIDIA H100 80GB HBM3" if h == 0 else "NVIDIA H200",
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(used=(h + 1) * 2**30,
                                                                total=80 * 2**30),
        nvmlDeviceGetUtilizationRates=lambda h: types.SimpleNamespace(gpu=37 + h),
        nvmlDeviceGetTemperature=lambda h, sensor: 55 + h,
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    gpus, note = read_gpus()
    assert note == "" and calls == ["init", "shutdown"]
    assert [(g.index, g.name, g.utilization, g.memory_used_bytes, g.temperature_c)
            for g in gpus] == [(0, "NVIDIA H100 80GB HBM3", 0.37, 2**30, 55.0),
                               (1, "NVIDIA H200", 0.38, 2 * 2**30, 56.0)]
    metrics = QilinMetrics()
    snap = SystemMonitor(metrics=metrics).sample()
    assert len(snap.gpus) == 2 and metrics.value("qilin_gpu_available") == 1
    assert metrics.value("qilin_gpu_memory_usage_ratio", gpu="1") == pytest.approx(2 / 80)

    def broken_init() -> None:
        raise RuntimeError("NVML Shared Library Not Found")

    monkeypatch.setattr(fake, "nvmlInit", broken_init)
    gpus, note = read_gpus()
    assert gpus == [] and "NVML could not start" in note and "Not Found" in note
