"""System metrics (CPU, memory, disk, this process, GPUs via NVML) and threshold alerts.

GPU figures come from NVML through ``pynvml`` (the ``nvidia-ml-py`` package), imported
lazily. Without it, or without an NVIDIA driver, the GPU fields are omitted and
:attr:`SystemSnapshot.gpu_note` says why.

Threshold rules (defaults from :class:`qilin.config.MonitoringConfig`): ``cpu_high`` above
80% CPU, ``memory_high`` above 80% memory, ``gpu_memory_high`` above 90% of a GPU's memory.

Examples
--------
>>> mon = SystemMonitor()
>>> snap = mon.sample()
>>> 0.0 <= snap.memory_usage <= 1.0 and snap.memory_total_bytes > 0
True
>>> busy = SystemSnapshot(time=snap.time, cpu_usage=0.95, memory_used_bytes=1,
...                       memory_total_bytes=10, disk={}, process_rss_bytes=1,
...                       process_cpu_usage=0.0, process_threads=1)
>>> [a.rule for a in mon.check(busy)]
['cpu_high']
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from qilin.config import MonitoringConfig
from qilin.monitoring.alerts import Alert, AlertManager

log = logging.getLogger(__name__)


@dataclass
class GPUStats:
    """One GPU as NVML reports it."""

    index: int
    name: str
    utilization: float
    memory_used_bytes: int
    memory_total_bytes: int
    temperature_c: float

    @property
    def memory_usage(self) -> float:
        return self.memory_used_bytes / self.memory_total_bytes if self.memory_total_bytes else 0.0


@dataclass
class SystemSnapshot:
    """One sample of the machine and this process. Fractions are 0..1."""

    time: datetime
    cpu_usage: float
    memory_used_bytes: int
    memory_total_bytes: int
    disk: dict[str, tuple[int, int]]
    process_rss_bytes: int
    process_cpu_usage: float
    process_threads: int
    gpus: list[GPUStats] = field(default_factory=list)
    gpu_note: str = ""

    @property
    def memory_usage(self) -> float:
        return self.memory_used_bytes / self.memory_total_bytes if self.memory_total_bytes else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        out: dict[str, Any] = {
            "time": self.time.isoformat(), "cpu_usage": self.cpu_usage,
            "memory_used_bytes": self.memory_used_bytes,
            "memory_total_bytes": self.memory_total_bytes, "memory_usage": self.memory_usage,
            "disk": {p: {"used_bytes": u, "total_bytes": t} for p, (u, t) in self.disk.items()},
            "process_rss_bytes": self.process_rss_bytes,
            "process_cpu_usage": self.process_cpu_usage,
            "process_threads": self.process_threads,
        }
        if self.gpus:
            out["gpus"] = [{**g.__dict__, "memory_usage": g.memory_usage} for g in self.gpus]
        else:
            out["gpu_note"] = self.gpu_note
        return out


def read_gpus() -> tuple[list[GPUStats], str]:
    """GPU stats from NVML, or ``([], reason)`` when NVML is not usable."""
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        return [], "GPU metrics omitted: pynvml (nvidia-ml-py) is not installed"
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return [], f"GPU metrics omitted: NVML could not start ({exc})"
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(h)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            util = pynvml.nvmlDeviceGetUtilizationRates(h)
            temp = pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)
            gpus.append(GPUStats(i, name.decode() if isinstance(name, bytes) else str(name),
                                 util.gpu / 100.0, int(mem.used), int(mem.total), float(temp)))
        return gpus, "" if gpus else "GPU metrics omitted: NVML reports no GPU"
    except Exception as exc:
        return [], f"GPU metrics omitted: NVML query failed ({exc})"
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


class SystemMonitor:
    """Sample the machine, publish to metrics and raise threshold alerts.

    Parameters
    ----------
    config : MonitoringConfig, optional
        Thresholds (percentages).
    alerts : AlertManager, optional
        Where :meth:`check` sends alerts (they are returned either way).
    metrics : QilinMetrics, optional
        Gauges updated by :meth:`sample`.
    disk_paths : sequence of str
        Mount points whose usage is reported (``/`` by default).
    """

    def __init__(self, config: MonitoringConfig | None = None,
                 alerts: AlertManager | None = None, metrics: Any = None,
                 disk_paths: tuple[str, ...] = ("/",)) -> None:
        self.config = config or MonitoringConfig()
        self.alerts = alerts
        self.metrics = metrics
        self.disk_paths = tuple(disk_paths)
        self._process = psutil.Process()
        self._process.cpu_percent(None)
        psutil.cpu_percent(None)
        self.gpu_note = ""

    def sample(self) -> SystemSnapshot:
        """Read CPU (since the previous call), memory, disks, this process and GPUs."""
        vm = psutil.virtual_memory()
        disk = {}
        for p in self.disk_paths:
            if Path(p).exists():
                du = psutil.disk_usage(p)
                disk[p] = (int(du.used), int(du.total))
        gpus, note = read_gpus()
        if note and note != self.gpu_note:
            log.info(note)
        self.gpu_note = note
        snap = SystemSnapshot(
            time=datetime.now(UTC), cpu_usage=psutil.cpu_percent(None) / 100.0,
            memory_used_bytes=int(vm.total - vm.available), memory_total_bytes=int(vm.total),
            disk=disk, process_rss_bytes=int(self._process.memory_info().rss),
            process_cpu_usage=self._process.cpu_percent(None) / 100.0,
            process_threads=self._process.num_threads(), gpus=gpus, gpu_note=note,
        )
        if self.metrics is not None:
            self.publish(snap)
        return snap

    def publish(self, snap: SystemSnapshot) -> None:
        """Set the system gauges of :attr:`metrics` from a snapshot."""
        m = self.metrics
        m.cpu_usage.set(snap.cpu_usage)
        m.memory_used.set(snap.memory_used_bytes)
        m.memory_total.set(snap.memory_total_bytes)
        m.memory_usage.set(snap.memory_usage)
        for p, (used, total) in snap.disk.items():
            m.disk_used.labels(path=p).set(used)
            m.disk_total.labels(path=p).set(total)
            m.disk_usage.labels(path=p).set(used / total if total else 0.0)
        m.process_rss.set(snap.process_rss_bytes)
        m.process_cpu.set(snap.process_cpu_usage)
        m.process_threads.set(snap.process_threads)
        m.gpu_available.set(1 if snap.gpus else 0)
        for g in snap.gpus:
            gi = str(g.index)
            m.gpu_utilization.labels(gpu=gi).set(g.utilization)
            m.gpu_memory_used.labels(gpu=gi).set(g.memory_used_bytes)
            m.gpu_memory_total.labels(gpu=gi).set(g.memory_total_bytes)
            m.gpu_memory_usage.labels(gpu=gi).set(g.memory_usage)
            m.gpu_temperature.labels(gpu=gi).set(g.temperature_c)

    def check(self, snap: SystemSnapshot) -> list[Alert]:
        """Alerts for the thresholds a snapshot crosses (also fired through ``alerts``)."""
        c = self.config
        out = []
        if snap.cpu_usage * 100 > c.cpu_threshold_pct:
            out.append(Alert("cpu_high", "warning", "cpu",
                             f"CPU use {snap.cpu_usage:.0%} above {c.cpu_threshold_pct:g}%",
                             snap.cpu_usage, c.cpu_threshold_pct / 100, snap.time))
        if snap.memory_usage * 100 > c.memory_threshold_pct:
            out.append(Alert("memory_high", "warning", "memory",
                             f"memory use {snap.memory_usage:.0%} above "
                             f"{c.memory_threshold_pct:g}%",
                             snap.memory_usage, c.memory_threshold_pct / 100, snap.time))
        for g in snap.gpus:
            if g.memory_usage * 100 > c.gpu_memory_threshold_pct:
                out.append(Alert("gpu_memory_high", "critical", f"gpu{g.index}",
                                 f"GPU {g.index} ({g.name}) memory {g.memory_usage:.0%} above "
                                 f"{c.gpu_memory_threshold_pct:g}%", g.memory_usage,
                                 c.gpu_memory_threshold_pct / 100, snap.time))
        if self.alerts is not None:
            self.alerts.fire_many(out)
        return out
