"""Helpers for the monitoring tests: a tiny HTTP server on 127.0.0.1 that records requests."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class Recorder:
    """A loopback HTTP server; ``respond(n)`` decides the status of the n-th request."""

    def __init__(self, respond: Callable[[int], int] = lambda n: 200, delay_s: float = 0.0):
        self.requests: list[tuple[str, str, bytes]] = []
        self.respond = respond
        self.lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with recorder.lock:
                    recorder.requests.append((self.command, self.path, body))
                    n = len(recorder.requests)
                status = recorder.respond(n)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_PUT = do_GET = do_DELETE = _any

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def http_recorder() -> Iterator[Callable[..., Recorder]]:
    made: list[Recorder] = []

    def make(respond: Callable[[int], int] = lambda n: 200) -> Recorder:
        r = Recorder(respond)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


@pytest.fixture(scope="session")
def ashare_panel(ashare_path):
    """A-share bars 2020-06..2020-12 for ~120 symbols: main board, ChiNext across its
    2020-08-24 limit reform, STAR, ST names; real limit-up and limit-down days."""
    import pandas as pd

    from qilin.data.panel import Panel

    df = pd.read_parquet(ashare_path, filters=[("date", ">=", pd.Timestamp("2020-06-01")),
                                               ("date", "<=", pd.Timestamp("2020-12-31"))])
    syms = sorted(df["symbol"].unique())
    st_syms = sorted(df.loc[df["name"].str.contains("ST", na=False), "symbol"].unique())
    pick = (syms[::8] + [s for s in syms if s.startswith("300")][:15]
            + [s for s in syms if s.startswith("688")][:10] + st_syms[:10])
    return Panel.from_long(df[df["symbol"].isin(sorted(set(pick)))])


@pytest.fixture(scope="session")
def sp500_panel(sp500_path):
    """S&P 500 bars 2015-2016 for 60 symbols (includes missing bars)."""
    import pandas as pd

    from qilin.data.panel import Panel

    df = pd.read_parquet(sp500_path, filters=[("date", ">=", pd.Timestamp("2015-01-01")),
                                              ("date", "<=", pd.Timestamp("2016-12-31"))])
    syms = sorted(df["symbol"].unique())[::8]
    return Panel.from_long(df[df["symbol"].isin(syms)])
