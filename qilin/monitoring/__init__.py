"""Alerts, price monitoring, anomaly detection, system metrics and the Prometheus exporter."""
