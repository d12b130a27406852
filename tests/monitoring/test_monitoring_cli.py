"""``qilin monitor replay`` and ``qilin monitor system`` as real subprocesses, with /metrics
scraped over HTTP while they run."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from qilin.monitoring.anomaly import AnomalyConfig, AnomalyDetector
from qilin.monitoring.price_monitor import PriceMonitor

REPO = Path(__file__).resolve().parents[2]
ENTRY = [sys.executable, "-m", "qilin.cli.monitor", "monitor"]


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([*ENTRY, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([*ENTRY, *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _metrics_url(proc: subprocess.Popen) -> str:
    line = proc.stdout.readline() if proc.stdout else ""
    assert line.startswith("serving metrics at http://127.0.0.1:"), (
        line + (proc.stderr.read() if proc.poll() is not None and proc.stderr else ""))
    return line.split(" at ", 1)[1].strip()


def _sample(url: str, name: str) -> float | None:
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name:
                return s.value
    return None


@pytest.fixture(scope="module")
def ashare_bars(ashare_path, tmp_path_factory) -> Path:
    df = pd.read_parquet(ashare_path, filters=[("date", ">=", pd.Timestamp("2020-07-01")),
                                               ("date", "<=", pd.Timestamp("2020-09-30"))])
    syms = sorted(df["symbol"].unique())
    df = df[df["symbol"].isin(syms[::12] + [s for s in syms if s.startswith("300")][:6])]
    path = tmp_path_factory.mktemp("bars") / "bars.parquet"
    df.to_parquet(path)
    return path


def test_replay_subprocess_serves_metrics_and_writes_alerts(ashare_bars, tmp_path):
    rules = tmp_path / "rules.yml"
    rules.write_text("default_move_pct: 0.06\n"
                     "price_rules:\n  - {symbol: 000001.SZ, above: 14.0}\n"
                     "anomaly: {return_window: 10, return_z: 3.0, vol_short: 3, vol_long: 15,"
                     " volume_window: 5, volume_ratio: 3.0, price_window: 10, price_z: 3.0}\n"
                     "alerts: {cooldown_s: 0}\n")
    out = tmp_path / "alerts.jsonl"
    n_dates = pd.read_parquet(ashare_bars, columns=["date"])["date"].nunique()
    proc = _start(["replay", "--data", str(ashare_bars), "--alerts", str(out), "--speed", "25",
                   "--rules", str(rules), "--metrics-port", "0"])
    try:
        url = _metrics_url(proc)
        ticks_seen = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:
            v = _sample(url, "qilin_monitor_ticks_total")
            if v:
                ticks_seen.append(v)
            if len(ticks_seen) >= 2 and not out.exists():
                break
            time.sleep(0.3)
        assert ticks_seen and 0 < ticks_seen[-1] < n_dates     # scraped mid-run
        assert _sample(url, "qilin_monitor_symbols") > 0
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert f"replayed {n_dates} bar batches" in stdout
    assert not list(tmp_path.glob(".*partial"))
    got = {(pd.Timestamp(d["time"]).tz_localize(None), d["subject"], d["rule"])
           for d in map(json.loads, out.read_text().splitlines())}
    # The same alerts, computed in batch over the whole panel in this process.
    from qilin.data.panel import Panel

    p = Panel.from_long(pd.read_parquet(ashare_bars))
    from qilin.monitoring.replay import load_rules

    r = load_rules(rules)
    assert r.anomaly == AnomalyConfig(return_window=10, return_z=3.0, vol_short=3,
                                      vol_long=15, volume_window=5, volume_ratio=3.0,
                                      price_window=10, price_z=3.0)
    sig = PriceMonitor(p.symbols, r.price_rules, 0.06).detect(p).merge(
        AnomalyDetector(r.anomaly).detect(p))
    ev = sig.events(p.dates, p.symbols)
    expect = set(zip(ev["date"], ev["symbol"], ev["rule"], strict=True))
    assert got == expect
    assert {"limit_up", "pct_move", "price_above"} <= {rule for _, _, rule in got}


def test_replay_ticks_csv_against_previous_day_close(tmp_path):
    ticks = pd.DataFrame({
        "timestamp": pd.to_datetime(["2024-01-02 09:30", "2024-01-02 09:30", "2024-01-02 10:00",
                                     "2024-01-03 09:30", "2024-01-03 10:00",
                                     "2024-01-03 10:00"]),
        "symbol": ["AAA", "BBB", "AAA", "AAA", "AAA", "BBB"],
        "price": [10.0, 20.0, 10.2, 10.8, 10.3, 21.5],
        "volume": [100, 200, 150, 300, 120, 500],
    })
    data = tmp_path / "ticks.csv"
    ticks.to_csv(data, index=False)
    rules = tmp_path / "rules.yml"
    rules.write_text("default_move_pct: 0.05\n")
    out = tmp_path / "alerts.jsonl"
    res = _run(["replay", "--data", str(data), "--alerts", str(out), "--rules", str(rules),
                "--metrics-port", "-1"])
    assert res.returncode == 0, res.stderr
    assert "replayed 4 tick batches x 2 symbols (6 symbol-ticks)" in res.stdout
    alerts = [json.loads(s) for s in out.read_text().splitlines()]
    # AAA 10.8 vs the previous day's last 10.2 = +5.9%; BBB 21.5 vs 20.0 = +7.5%;
    # AAA 10.3 = +1.0% does not fire.
    assert [(a["subject"], a["time"][:16], round(a["value"], 4)) for a in alerts] == [
        ("AAA", "2024-01-03T09:30", round(10.8 / 10.2 - 1, 4)),
        ("BBB", "2024-01-03T10:00", 0.075)]


def test_replay_bad_rules_exit_2(tmp_path, ashare_bars):
    rules = tmp_path / "rules.yml"
    rules.write_text("default_move: 0.05\n")
    res = _run(["replay", "--data", str(ashare_bars), "--alerts", str(tmp_path / "a.jsonl"),
                "--rules", str(rules), "--metrics-port", "-1"])
    assert res.returncode == 2
    assert "unknown keys ['default_move']" in res.stderr and str(rules) in res.stderr
    res = _run(["replay", "--data", str(tmp_path / "none.parquet"), "--alerts",
                str(tmp_path / "a.jsonl")])
    assert res.returncode == 2 and "replay data not found" in res.stderr


def test_system_subprocess_serves_metrics_for_bounded_duration(tmp_path):
    proc = _start(["system", "--interval", "0.2", "--duration", "3", "--metrics-port", "0"])
    try:
        url = _metrics_url(proc)
        total = None
        deadline = time.monotonic() + 10
        while total is None and time.monotonic() < deadline:
            total = _sample(url, "qilin_system_memory_total_bytes")
            time.sleep(0.2)
        import psutil

        assert total == psutil.virtual_memory().total
        rss = _sample(url, "qilin_process_resident_memory_bytes")
        assert rss and rss > 10 * 2**20
        t0 = time.monotonic()
        stdout, stderr = proc.communicate(timeout=30)
        assert time.monotonic() - t0 < 5                        # --duration bounds it
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert "sampled" in stdout and "alerts dispatched" in stdout
    assert np.isfinite(float(stdout.split("CPU ")[1].split("%")[0]))


def test_monitor_is_registered_in_the_qilin_command():
    res = subprocess.run([sys.executable, "-m", "qilin.cli", "monitor", "system",
                          "--interval", "0.2", "--duration", "0.5", "--metrics-port", "-1"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "sampled" in res.stdout
    bad = subprocess.run([sys.executable, "-m", "qilin.cli", "monitor", "system",
                          "--interval", "0", "--duration", "1", "--metrics-port", "-1"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--interval must be > 0" in bad.stderr


def test_replay_frame_in_process_counts_and_metrics():
    from qilin.monitoring.alerts import AlertManager, CallbackHandler
    from qilin.monitoring.prometheus import QilinMetrics
    from qilin.monitoring.replay import MonitorRules, replay_frame

    frame = pd.DataFrame({
        "time": pd.to_datetime(["2024-01-02"] * 2 + ["2024-01-03"] * 2 + ["2024-01-04"]),
        "symbol": ["A", "B", "A", "B", "A"],
        "price": [10.0, 20.0, 11.0, 20.1, 11.1],
        "volume": [1.0, 2.0, 1.0, 2.0, 1.0],
    })
    got: list = []
    metrics = QilinMetrics()
    manager = AlertManager([CallbackHandler(got.append)], cooldown_s=0, metrics=metrics)
    summary = replay_frame(frame, MonitorRules(default_move_pct=0.05), manager, metrics)
    manager.close()
    assert (summary.mode, summary.ticks, summary.symbols, summary.symbol_ticks) == \
        ("bar", 3, 2, 5)
    assert [(a.subject, a.rule, str(a.time.date())) for a in got] == [
        ("A", "pct_move", "2024-01-03")]                     # +10%; B +0.5%, A +0.9% do not
    assert summary.signals["pct_move"] == 1 and summary.alerts_dispatched == 1
    assert metrics.value("qilin_monitor_ticks_total") == 3
    assert metrics.value("qilin_monitor_symbol_ticks_total") == 5
    assert metrics.value("qilin_monitor_signals_total", rule="pct_move") == 1
    assert metrics.value("qilin_monitor_last_tick_timestamp_seconds") == \
        pd.Timestamp("2024-01-04", tz="UTC").timestamp()
    from qilin.errors import DataError

    with pytest.raises(DataError, match="repeat a"):
        replay_frame(pd.concat([frame, frame.iloc[:1]]), MonitorRules())
