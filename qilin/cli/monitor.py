"""``qilin monitor``: replay bars/ticks through the monitors, or serve system metrics.

``qilin monitor replay --data PATH --alerts OUT.jsonl [--speed X] [--rules FILE]
[--metrics-port P]`` replays a long Parquet/CSV file batch by batch (all symbols of a time
at once) through the price monitor and the anomaly detector, serves ``/metrics`` while it
runs, writes the dispatched alerts as JSON lines (atomically, when the run ends) and prints a
summary. ``qilin monitor system [--interval S] [--metrics-port P] [--duration S]`` samples
the machine every ``S`` seconds, serves the system metrics and logs threshold alerts.

``--metrics-port 0`` picks a free port; the bound URL is printed first
(``serving metrics at http://127.0.0.1:PORT/metrics``). The exporter listens on
``monitoring.metrics_host`` from the configuration (127.0.0.1 by default).

Examples
--------
>>> import argparse
>>> parser = argparse.ArgumentParser(prog="qilin")
>>> register(parser.add_subparsers(dest="command"))
>>> args = parser.parse_args(["monitor", "system", "--duration", "1", "--metrics-port", "0"])
>>> args.duration, args.metrics_port, args.interval
(1.0, 0, 1.0)
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from qilin.atomic import atomic_path
from qilin.config import load_config
from qilin.errors import MonitoringError
from qilin.monitoring.alerts import AlertManager, JsonlFileHandler, LogHandler
from qilin.monitoring.prometheus import MetricsServer, QilinMetrics
from qilin.monitoring.replay import (
    MonitorRules,
    load_frame,
    load_rules,
    replay_frame,
)
from qilin.monitoring.system import SystemMonitor


def _serve(metrics: QilinMetrics, host: str | None, port: int | None) -> MetricsServer | None:
    cfg = load_config().monitoring
    if port is not None and port < 0:
        return None
    server = metrics.serve(host or cfg.metrics_host, cfg.metrics_port if port is None else port)
    print(f"serving metrics at {server.url}", flush=True)
    return server


def _replay(args: argparse.Namespace) -> int:
    rules = load_rules(args.rules) if args.rules else MonitorRules(cooldown_s=0.0)
    if args.speed < 0:
        raise MonitoringError(f"--speed must be >= 0 (0 or inf: as fast as possible), got "
                              f"{args.speed}")
    frame = load_frame(args.data, date_format=args.date_format)
    out = Path(args.alerts)
    metrics = QilinMetrics(symbol_labels=args.symbol_labels)
    server = _serve(metrics, args.metrics_host, args.metrics_port)
    try:
        # alerts go to a temporary file (qilin.atomic: never mistaken for data, cleaned up
        # after a killed run) that replaces ``out`` only when the replay is complete
        with atomic_path(out) as partial:
            handlers = [JsonlFileHandler(partial, name="jsonl")]
            if args.log_alerts:
                handlers.append(LogHandler())
            manager = AlertManager(handlers, cooldown_s=rules.cooldown_s,
                                   max_per_second=rules.max_per_second,
                                   handler_timeout_s=5.0, metrics=metrics)
            try:
                summary = replay_frame(frame, rules, manager, metrics, speed=args.speed)
            finally:
                manager.close()
        if args.textfile:
            metrics.write_textfile(args.textfile)
        for line in summary.lines():
            print(line)
        print(f"alerts written to {out}", flush=True)
        if server is not None and args.linger > 0:
            time.sleep(args.linger)
    finally:
        if server is not None:
            server.close()
    return 0


def _system(args: argparse.Namespace) -> int:
    cfg = load_config().monitoring
    if args.interval <= 0:
        raise MonitoringError(f"--interval must be > 0 seconds, got {args.interval}")
    metrics = QilinMetrics()
    handlers: list = [LogHandler()]
    if args.alerts:
        handlers.append(JsonlFileHandler(args.alerts, name="jsonl"))
    manager = AlertManager(handlers, cooldown_s=cfg.alert_cooldown_s, metrics=metrics)
    monitor = SystemMonitor(cfg, alerts=manager, metrics=metrics)
    snap = monitor.sample()
    server = _serve(metrics, args.metrics_host, args.metrics_port)
    deadline = math.inf if args.duration is None else time.monotonic() + args.duration
    samples = 0
    try:
        print(snap.gpu_note or f"GPUs: {', '.join(g.name for g in snap.gpus)}", flush=True)
        while True:
            monitor.check(snap)
            samples += 1
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            time.sleep(min(args.interval, remaining))
            snap = monitor.sample()
        print(f"sampled {samples} times; last: CPU {snap.cpu_usage:.0%}, memory "
              f"{snap.memory_usage:.0%}, process RSS {snap.process_rss_bytes / 2**20:.0f} MiB; "
              f"alerts dispatched: {manager.stats['dispatched']}", flush=True)
    finally:
        manager.close()
        if server is not None:
            server.close()
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``monitor replay`` and ``monitor system`` to the ``qilin`` command."""
    mon = subparsers.add_parser("monitor", help="replay prices through alerts; system metrics")
    sub = mon.add_subparsers(dest="monitor_command", required=True, metavar="ACTION")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--metrics-port", type=int, default=None,
                       help="port for /metrics (0: a free port; -1: do not serve; default: "
                            "monitoring.metrics_port)")
        p.add_argument("--metrics-host", default=None,
                       help="address to bind (default monitoring.metrics_host, 127.0.0.1)")

    rp = sub.add_parser("replay", help="replay bars or ticks through the monitors")
    rp.add_argument("--data", required=True, help="long Parquet/CSV bars or ticks")
    rp.add_argument("--date-format", default=None,
                    help="strptime format of text times, e.g. %%d/%%m/%%Y (needed when the "
                         "day/month order cannot be told from the data)")
    rp.add_argument("--alerts", required=True, help="output JSONL of dispatched alerts")
    rp.add_argument("--speed", type=float, default=math.inf,
                    help="batches per second (0 or inf: as fast as possible)")
    rp.add_argument("--rules", default=None, help="YAML of price rules and detector settings")
    rp.add_argument("--textfile", default=None,
                    help="also write the final metrics in textfile-collector format")
    rp.add_argument("--linger", type=float, default=0.0,
                    help="keep serving /metrics this many seconds after the replay")
    rp.add_argument("--symbol-labels", action="store_true",
                    help="also export per-symbol alert counters")
    rp.add_argument("--log-alerts", action="store_true", help="also log every alert")
    common(rp)
    rp.set_defaults(func=_replay)

    sp = sub.add_parser("system", help="serve CPU/memory/disk/GPU metrics and alert")
    sp.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    sp.add_argument("--duration", type=float, default=None,
                    help="stop after this many seconds (default: run until interrupted)")
    sp.add_argument("--alerts", default=None, help="also append alerts to this JSONL file")
    common(sp)
    sp.set_defaults(func=_system)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``monitor ...`` without the other areas' commands (``python -m`` entry)."""
    from qilin.cli import run

    parser = argparse.ArgumentParser(prog="qilin")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    register(parser.add_subparsers(dest="command", required=True))
    return run(parser, argv)

if __name__ == "__main__":
    sys.exit(main())
