"""Alerts, price monitoring, anomaly detection, system and performance metrics, Prometheus.

Everything here depends only on qilin's base layer (config, data, backend). Batch methods
take a whole Panel; streaming methods take one tick (a vector over all symbols) and keep
O(1) NumPy state per symbol; both give the same results on the same data.
"""

from qilin.monitoring.alerts import (
    Alert,
    AlertManager,
    CallbackHandler,
    JsonlFileHandler,
    LogHandler,
    WebhookHandler,
)
from qilin.monitoring.anomaly import AnomalyConfig, AnomalyDetector
from qilin.monitoring.performance import PerformanceMonitor, Timing
from qilin.monitoring.price_monitor import PriceMonitor, PriceRule
from qilin.monitoring.prometheus import MetricsServer, QilinMetrics, exported_metric_names
from qilin.monitoring.replay import MonitorRules, StreamingMonitor, load_rules, replay_frame
from qilin.monitoring.signals import Signals
from qilin.monitoring.system import GPUStats, SystemMonitor, SystemSnapshot

__all__ = [
    "Alert",
    "AlertManager",
    "AnomalyConfig",
    "AnomalyDetector",
    "CallbackHandler",
    "GPUStats",
    "JsonlFileHandler",
    "LogHandler",
    "MetricsServer",
    "MonitorRules",
    "PerformanceMonitor",
    "PriceMonitor",
    "PriceRule",
    "QilinMetrics",
    "Signals",
    "StreamingMonitor",
    "SystemMonitor",
    "SystemSnapshot",
    "Timing",
    "WebhookHandler",
    "exported_metric_names",
    "load_rules",
    "replay_frame",
]
