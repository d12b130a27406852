"""Load a page in headless Chromium and collect its console errors (DevTools protocol)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--remote-debugging-port=0", "--remote-allow-origins=*"]


def chromium_binary() -> str:
    """Debian's chromium; skips outside CI when absent, fails in CI."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed (scripts/ensure-chromium.sh installs it)")
    pytest.skip("chromium is not installed (scripts/ensure-chromium.sh installs it)")


class Browser:
    """One headless Chromium with a fresh profile; :meth:`console_errors` per page."""

    def __init__(self) -> None:
        import websocket

        self._ws_mod = websocket
        self.profile = tempfile.mkdtemp(prefix="qilin-chromium-")
        self.proc = subprocess.Popen([chromium_binary(), *FLAGS,
                                      f"--user-data-dir={self.profile}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        port = None
        deadline = time.monotonic() + 60
        while port is None and time.monotonic() < deadline:
            line = self.proc.stderr.readline()  # type: ignore[union-attr]
            if not line and self.proc.poll() is not None:
                break
            m = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            port = int(m.group(1)) if m else None
        if port is None:
            self.close()
            raise RuntimeError("chromium did not start its DevTools endpoint within 60 s")
        self.port = port

    def console_errors(self, url: str, timeout: float = 30.0) -> tuple[bool, list[str]]:
        """(load event seen, console errors / exceptions / error log entries) for ``url``."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/json/new?about:blank",
                                         method="PUT")
        with urllib.request.urlopen(request, timeout=10) as resp:
            target = json.load(resp)
        ws = self._ws_mod.create_connection(target["webSocketDebuggerUrl"], timeout=2)
        errors: list[str] = []
        loaded = False
        try:
            for i, method in enumerate(("Runtime.enable", "Log.enable", "Page.enable"), 1):
                ws.send(json.dumps({"id": i, "method": method}))
            pending = {1, 2, 3}
            ready_by = time.monotonic() + timeout
            while pending and time.monotonic() < ready_by:
                try:
                    pending.discard(json.loads(ws.recv()).get("id"))
                except self._ws_mod.WebSocketTimeoutException:
                    continue
            ws.send(json.dumps({"id": 9, "method": "Page.navigate", "params": {"url": url}}))
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                try:
                    msg = json.loads(ws.recv())
                except self._ws_mod.WebSocketTimeoutException:
                    continue
                method, params = msg.get("method"), msg.get("params", {})
                if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                    errors.append(" ".join(str(a.get("value", a.get("description", "")))
                                           for a in params.get("args", [])))
                elif method == "Runtime.exceptionThrown":
                    d = params["exceptionDetails"]
                    errors.append(d.get("exception", {}).get("description", d.get("text", "")))
                elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                    errors.append(params["entry"]["text"])
                elif method == "Page.loadEventFired" and not loaded:
                    loaded = True
                    end = time.monotonic() + 1.5  # late errors from scripts run on load
        finally:
            ws.close()
            urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/close/{target['id']}",
                                   timeout=10).close()
        return loaded, errors

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        shutil.rmtree(self.profile, ignore_errors=True)


def file_url(path: Path) -> str:
    return path.resolve().as_uri()
