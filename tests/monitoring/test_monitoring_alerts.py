"""AlertManager: cooldown, rate limiting, handler isolation, JSONL and webhook handlers."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from qilin.errors import MonitoringError
from qilin.monitoring.alerts import (
    Alert,
    AlertManager,
    CallbackHandler,
    JsonlFileHandler,
    LogHandler,
    WebhookHandler,
)
from qilin.monitoring.prometheus import QilinMetrics

T0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)


def alert(rule: str = "pct_move", subject: str = "AAPL", t: datetime = T0,
          severity: str = "warning") -> Alert:
    return Alert(rule, severity, subject, f"{subject} {rule}", 0.07, 0.05, t)  # type: ignore[arg-type]


def test_alert_roundtrip_and_validation():
    a = alert()
    d = a.to_dict()
    assert d["time"] == "2024-03-01T14:30:00+00:00"
    assert Alert.from_dict(json.loads(json.dumps(d))) == a
    naive = Alert("r", "info", "x", "m", 1.0, 2.0, datetime(2024, 1, 1))
    assert naive.time.tzinfo is UTC
    with pytest.raises(MonitoringError, match="severity 'fatal'"):
        Alert("r", "fatal", "x", "m", 1.0, 2.0)  # type: ignore[arg-type]
    nan = Alert("r", "info", "x", "m", float("nan"), 1.0, T0).to_dict()
    assert nan["value"] is None


def test_cooldown_per_key_on_alert_time():
    got: list[Alert] = []
    with AlertManager([CallbackHandler(got.append)], cooldown_s=60) as m:
        assert m.fire(alert(t=T0))
        assert not m.fire(alert(t=T0 + timedelta(seconds=59)))      # same key, in cooldown
        assert m.fire(alert(subject="MSFT", t=T0 + timedelta(seconds=1)))  # other key
        assert m.fire(alert(rule="price_above", t=T0 + timedelta(seconds=2)))
        assert m.fire(alert(t=T0 + timedelta(seconds=60)))           # cooldown over
        assert m.stats["suppressed_cooldown"] == 1
        assert [(a.rule, a.subject) for a in got] == [
            ("pct_move", "AAPL"), ("pct_move", "MSFT"), ("price_above", "AAPL"),
            ("pct_move", "AAPL")]
        m.reset_cooldowns()
        assert m.fire(alert(t=T0 + timedelta(seconds=61)))


def test_rate_limit_token_bucket_with_fake_clock():
    now = [0.0]
    got: list[Alert] = []
    metrics = QilinMetrics()
    m = AlertManager([CallbackHandler(got.append)], cooldown_s=0, max_per_second=2, burst=3,
                     clock=lambda: now[0], metrics=metrics)
    fired = [m.fire(alert(subject=f"S{i}")) for i in range(5)]
    assert fired == [True, True, True, False, False]                # burst of 3
    now[0] = 1.0                                                     # +2 tokens
    assert [m.fire(alert(subject=f"T{i}")) for i in range(3)] == [True, True, False]
    assert m.stats["rate_limited"] == 3 and len(got) == 5
    assert metrics.value("qilin_alerts_suppressed_total", reason="rate_limit") == 3
    assert metrics.value("qilin_alerts_total", rule="pct_move", severity="warning") == 5
    m.close()


def test_raising_handler_does_not_stop_others(caplog):
    got: list[Alert] = []

    def boom(a: Alert) -> None:
        raise RuntimeError("handler exploded")

    metrics = QilinMetrics()
    m = AlertManager([CallbackHandler(boom, name="boom"), CallbackHandler(got.append)],
                     cooldown_s=0, metrics=metrics)
    with caplog.at_level("ERROR", logger="qilin.monitoring.alerts"):
        assert m.fire(alert())
    assert len(got) == 1
    assert m.stats["handler_errors"] == 1 and m.handler_failures == {"boom": 1}
    assert "handler exploded" in caplog.text and "'boom'" in caplog.text
    assert metrics.value("qilin_alert_handler_failures_total", handler="boom",
                         kind="error") == 1
    m.close()


def test_slow_handler_times_out_without_blocking_others(caplog):
    release = threading.Event()
    fast: list[float] = []
    t_start = time.perf_counter()

    def slow(a: Alert) -> None:
        release.wait(5)

    m = AlertManager([CallbackHandler(slow, name="slow"),
                      CallbackHandler(lambda a: fast.append(time.perf_counter() - t_start),
                                      name="fast")],
                     cooldown_s=0, handler_timeout_s=0.2)
    try:
        with caplog.at_level("ERROR", logger="qilin.monitoring.alerts"):
            m.fire(alert())
        elapsed = time.perf_counter() - t_start
        assert fast and fast[0] < 0.15             # the fast handler was not held up
        assert 0.15 < elapsed < 1.5                # fire() waited about the timeout only
        assert m.stats["handler_timeouts"] == 1
        assert "timed out" in caplog.text
    finally:
        release.set()
        m.close()


def test_handler_management_errors(tmp_path):
    m = AlertManager([LogHandler()])
    with pytest.raises(MonitoringError, match="already registered"):
        m.add_handler(LogHandler())
    with pytest.raises(MonitoringError, match="no alert handler named 'x'"):
        m.remove_handler("x")
    m.remove_handler("log")
    assert m.handlers == []
    with pytest.raises(MonitoringError, match="needs a 'name'"):
        m.add_handler(object())  # type: ignore[arg-type]
    m.close()
    with pytest.raises(MonitoringError, match="closed"):
        m.fire(alert())
    with pytest.raises(MonitoringError, match="cooldown_s"):
        AlertManager(cooldown_s=-1)


def test_log_and_jsonl_handlers(tmp_path, caplog):
    path = tmp_path / "sub" / "alerts.jsonl"
    with AlertManager([JsonlFileHandler(path), LogHandler()], cooldown_s=0) as m:
        with caplog.at_level("INFO", logger="qilin.alerts"):
            m.fire(alert(severity="critical"))
            m.fire(alert(subject="MSFT", severity="info"))
    lines = [json.loads(s) for s in path.read_text().splitlines()]
    assert [d["subject"] for d in lines] == ["AAPL", "MSFT"]
    assert lines[0]["severity"] == "critical" and lines[0]["threshold"] == 0.05
    levels = [r.levelname for r in caplog.records if r.name == "qilin.alerts"]
    assert levels == ["ERROR", "INFO"]


def test_webhook_success(http_recorder):
    srv = http_recorder()
    hook = WebhookHandler(srv.url + "/hook", retries=2, backoff_s=0.01)
    with AlertManager([hook], cooldown_s=0) as m:
        m.fire(alert())
    assert len(srv.requests) == 1
    method, path, body = srv.requests[0]
    assert (method, path) == ("POST", "/hook")
    assert json.loads(body) == alert().to_dict()


def test_webhook_failures_then_success_on_retry(http_recorder):
    srv = http_recorder(respond=lambda n: 500 if n <= 2 else 200)
    hook = WebhookHandler(srv.url, retries=3, backoff_s=0.01)
    with AlertManager([hook], cooldown_s=0) as m:
        m.fire(alert())
        assert m.stats["handler_errors"] == 0
    assert len(srv.requests) == 3 and hook.attempts == 3


def test_webhook_permanent_failure_is_bounded(http_recorder, caplog):
    srv = http_recorder(respond=lambda n: 503)
    hook = WebhookHandler(srv.url, retries=2, backoff_s=0.01)
    got: list[Alert] = []
    with AlertManager([hook, CallbackHandler(got.append)], cooldown_s=0) as m:
        with caplog.at_level("ERROR", logger="qilin.monitoring.alerts"):
            m.fire(alert())
        assert m.stats["handler_errors"] == 1
    assert len(srv.requests) == 3                  # 1 try + 2 retries, then it gives up
    assert len(got) == 1
    assert "3 attempts failed" in caplog.text


def test_webhook_unreachable_and_bad_url():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()                                      # nothing listens there now
    hook = WebhookHandler(f"http://127.0.0.1:{port}/", retries=1, backoff_s=0.01,
                          timeout_s=0.5)
    with pytest.raises(MonitoringError, match="2 attempts failed"):
        hook.handle(alert())
    with pytest.raises(MonitoringError, match="http"):
        WebhookHandler("ftp://x")


# -- endpoints that never finish: every delivery has an overall deadline ------------------


class StallingServer:
    """A raw HTTP endpoint on 127.0.0.1 that reads each request and then either never
    answers (``mode="hung"``) or drips a response one byte every 50 ms forever
    (``mode="drip"``): each socket read succeeds, so a per-read timeout never fires."""

    def __init__(self, mode: str) -> None:
        import socket

        self.mode = mode
        self.stop = threading.Event()
        self.connections = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.05)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, conn) -> None:
        drip = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 100_000
        with conn:
            conn.settimeout(0.05)
            try:
                conn.recv(65536)
            except OSError:
                pass
            i = 0
            while not self.stop.wait(0.05):
                if self.mode == "drip":
                    try:
                        conn.sendall(drip[i:i + 1])
                    except OSError:
                        return
                    i += 1

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=5)
        self.sock.close()


@pytest.fixture
def stalling_server():
    made: list[StallingServer] = []

    def make(mode: str) -> StallingServer:
        made.append(StallingServer(mode))
        return made[-1]

    yield make
    for s in made:
        s.close()


@pytest.mark.parametrize("mode", ["drip", "hung"])
def test_webhook_delivery_has_an_overall_deadline(stalling_server, mode):
    srv = stalling_server(mode)
    hook = WebhookHandler(srv.url, retries=5, timeout_s=0.3, backoff_s=0.01, deadline_s=0.8)
    t0 = time.monotonic()
    with pytest.raises(MonitoringError, match=r"attempts failed within 0.8 s"):
        hook.handle(alert())
    elapsed = time.monotonic() - t0
    assert 0.6 < elapsed < 0.8 + 0.5, elapsed     # the deadline, not retries x reads
    assert 2 <= hook.attempts <= 3 and srv.connections == hook.attempts
    # one attempt alone is bounded by timeout_s even when the server keeps dripping
    hook = WebhookHandler(srv.url, retries=0, timeout_s=0.3)
    t0 = time.monotonic()
    with pytest.raises(MonitoringError, match="1 attempts failed"):
        hook.handle(alert())
    assert time.monotonic() - t0 < 0.3 + 0.5


def test_hung_webhook_delays_one_fire_and_its_queue_is_bounded(stalling_server):
    srv = stalling_server("hung")
    metrics = QilinMetrics()
    hook = WebhookHandler(srv.url, retries=0, timeout_s=2.0)
    got: list[Alert] = []
    m = AlertManager([hook, CallbackHandler(got.append)], cooldown_s=0,
                     handler_timeout_s=0.2, max_queue=3, metrics=metrics)
    try:
        t0 = time.monotonic()
        m.fire(alert(subject="S0"))                # waits handler_timeout_s, then moves on
        first = time.monotonic() - t0
        t1 = time.monotonic()
        for i in range(1, 20):                     # the hook is stuck: no more waiting
            m.fire(alert(subject=f"S{i}"))
        rest = time.monotonic() - t1
        assert 0.15 < first < 1.0, first
        assert rest < 0.5, rest
        assert m.stats["handler_timeouts"] == 1
        # S0 is being delivered, 3 wait; the other 16 were dropped, oldest first
        assert m.stats["dropped"] == 16
        assert metrics.value("qilin_alerts_dropped_total", handler=hook.name) == 16
        deadline = time.monotonic() + 5
        while len(got) < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [a.subject for a in got] == [f"S{i}" for i in range(20)]  # others unaffected
    finally:
        m.close()
