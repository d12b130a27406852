"""ClusterManager("remote") against real `dask scheduler` / `dask worker` processes on loopback.

Every process is started by a fixture that terminates (then kills) it in ``finally``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from qilin.cluster import ClusterManager, security_from_tls
from qilin.config import TLSConfig, load_config
from qilin.errors import ClusterError

DASK = Path(sys.executable).with_name("dask")
STARTUP_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def processes() -> Iterator[list[subprocess.Popen]]:
    """Collects started processes and always stops them: SIGTERM to all, then SIGKILL."""
    started: list[subprocess.Popen] = []
    try:
        yield started
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 5
        for proc in started:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _log_tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:] if path.exists() else "(no log)"


def start_worker(
    procs: list, folder: Path, sched_file: Path, name: str, *tls_args: str
) -> subprocess.Popen:
    """A single-threaded `dask worker` without a nanny (so that SIGKILL kills the worker
    itself) that finds its scheduler through the scheduler file."""
    cmd = [str(DASK), "worker", "--scheduler-file", str(sched_file), "--name", name,
           "--nthreads", "1", "--no-nanny", "--host", "127.0.0.1",
           "--dashboard-address", "127.0.0.1:0", "--memory-limit", "1GiB",
           "--local-directory", str(folder / f"dir-{name}"), *tls_args]
    with open(folder / f"worker-{name}.log", "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=folder)
    procs.append(proc)
    return proc


def start_cluster(
    procs: list, folder: Path, workers: tuple[str, ...], *tls_args: str
) -> tuple[str, Path]:
    """Start `dask scheduler` on a free loopback port and its workers all at once.

    Returns the scheduler address and scheduler file once the scheduler listens."""
    sched_file = folder / "scheduler.json"
    log = folder / "scheduler.log"
    protocol = ("--protocol", "tls") if tls_args else ()
    cmd = [str(DASK), "scheduler", "--host", "127.0.0.1", "--port", str(free_port()),
           "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(sched_file),
           *protocol, *tls_args]
    with open(log, "wb") as fh:
        scheduler = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=folder)
    procs.append(scheduler)
    for name in workers:
        start_worker(procs, folder, sched_file, name, *tls_args)
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if scheduler.poll() is not None:
            raise RuntimeError(f"dask scheduler exited:\n{_log_tail(log)}")
        if sched_file.exists():
            with contextlib.suppress(json.JSONDecodeError, KeyError):
                return json.loads(sched_file.read_text())["address"], sched_file
        time.sleep(0.05)
    raise RuntimeError(f"dask scheduler did not start:\n{_log_tail(log)}")


@pytest.fixture(scope="module")
def remote(tmp_path_factory) -> Iterator[dict]:
    """A scheduler and two workers shared by the read-only tests of this module."""
    folder = tmp_path_factory.mktemp("remote")
    with processes() as procs:
        address, sched_file = start_cluster(procs, folder, ("w1", "w2"))
        yield {"address": address, "scheduler_file": sched_file, "folder": folder}


def _task_functions():
    """Task functions defined in a closure, so that dask ships them by value: the scheduler
    and worker processes cannot import this test module by name."""

    def block_sum(seed: int) -> float:
        return float(np.random.default_rng(seed).standard_normal(10_000).sum())

    def slow_block_sum(seed: int, marker_dir: str, delay: float) -> float:
        """Leave a marker naming the worker, then take a while, then compute."""
        from distributed import get_worker

        Path(marker_dir, f"{get_worker().name}-{seed}").touch()
        time.sleep(delay)
        return block_sum(seed)

    return block_sum, slow_block_sum


block_sum, slow_block_sum = _task_functions()


# -- connecting -------------------------------------------------------------------------------


def test_connect_by_address_computes_and_reports(remote, capsys):
    cm = ClusterManager("remote", address=remote["address"], n_workers=2, timeout=STARTUP_S)
    with cm as client:
        result = client.gather(client.map(block_sum, range(10)))
        assert result == [block_sum(s) for s in range(10)]
        d = cm.describe()
        assert d["mode"] == "remote" and d["scheduler_address"] == remote["address"]
        assert d["n_workers"] == 2 and d["threads"] == 2
        assert d["memory_limit_bytes"] == 2 * 2**30
        assert d["version_mismatches"] == []
        assert cm.version_mismatches == []
        link = cm.dashboard_link
        assert link.startswith("http://127.0.0.1:") and link.endswith("/status")
        # the link points at the scheduler's HTTP server (rendering /status is left to the
        # threads-mode test: bokeh makes it slow)
        with urllib.request.urlopen(link.replace("/status", "/health"), timeout=10) as resp:
            assert resp.read() == b"ok"
        workers = client.run(lambda: __import__("qilin").__version__)
        assert len(workers) == 2
    out = capsys.readouterr().out
    assert f"qilin cluster [remote] {remote['address']}: 2 workers" in out
    assert link in out


def test_connect_by_scheduler_file_from_config(remote, monkeypatch):
    monkeypatch.setenv("QILIN_CLUSTER__SCHEDULER_FILE", str(remote["scheduler_file"]))
    monkeypatch.setenv("QILIN_CLUSTER__N_WORKERS", "2")
    cfg = load_config(cluster="remote")
    cm = ClusterManager.from_config(cfg.cluster, verbose=False)
    with cm as client:
        assert cm.describe()["scheduler_address"] == remote["address"]
        assert client.submit(block_sum, 7).result() == block_sum(7)
        assert cm.describe()["n_workers"] == 2
    assert not cm.started
    with cm as again:  # a closed manager can connect again (re-reading the scheduler file)
        assert again.submit(block_sum, 8).result() == block_sum(8)


def test_asking_for_more_workers_than_connected_fails_after_timeout(remote):
    t0 = time.monotonic()
    with pytest.raises(ClusterError, match=r"has 2 worker\(s\), fewer than the 5 asked for"):
        ClusterManager("remote", address=remote["address"], n_workers=5, timeout=1.5,
                       verbose=False).start()
    assert time.monotonic() - t0 < 1.5 + 10


def test_unreachable_address_fails_fast_with_the_address():
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    t0 = time.monotonic()
    with pytest.raises(ClusterError, match=f"no Dask scheduler answered at {address} within 2 s"):
        ClusterManager("remote", address=address, timeout=2.0, verbose=False).start()
    elapsed = time.monotonic() - t0
    assert elapsed < 2.0 + 3.0, elapsed


@contextlib.contextmanager
def silent_server() -> Iterator[str]:
    """A TCP server on loopback that accepts every connection and never sends a byte."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    server.settimeout(0.1)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"tcp://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in accepted:
            conn.close()
        server.close()


def test_endpoint_that_accepts_but_never_answers_fails_within_timeout():
    """The handshake after the TCP connect is bounded too (it used to hang for minutes)."""
    with silent_server() as address:
        t0 = time.monotonic()
        with pytest.raises(ClusterError, match=f"no Dask scheduler answered at {address} "
                                               "within 2 s"):
            ClusterManager("remote", address=address, timeout=2.0, verbose=False).start()
        elapsed = time.monotonic() - t0
    assert elapsed < 2.0 + 3.0, elapsed


def test_missing_scheduler_file_fails_within_timeout(tmp_path):
    missing = tmp_path / "nowhere.json"
    t0 = time.monotonic()
    with pytest.raises(ClusterError, match=r"scheduler file .*nowhere.json has no scheduler"):
        ClusterManager("remote", scheduler_file=missing, timeout=1.0, verbose=False).start()
    assert 1.0 <= time.monotonic() - t0 < 1.0 + 3.0


# -- TLS --------------------------------------------------------------------------------------


def _make_certs(folder: Path) -> dict[str, Path]:
    """A throwaway CA and one certificate it signed, made with the openssl command."""
    ca_key, ca, key, csr, cert = (folder / n for n in
                                  ("ca.key", "ca.pem", "key.pem", "req.csr", "cert.pem"))
    run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
        "-days", "1", "-subj", "/CN=qilin-test-ca")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
        "-subj", "/CN=127.0.0.1")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "1")
    return {"ca": ca, "cert": cert, "key": key}


@pytest.mark.skipif(not any((Path(p) / "openssl").exists()
                            for p in os.environ.get("PATH", "").split(os.pathsep)),
                    reason="the openssl command is needed to make test certificates")
def test_tls_scheduler_with_tls_config_files(tmp_path):
    certs = _make_certs(tmp_path)
    tls_args = ("--tls-ca-file", str(certs["ca"]), "--tls-cert", str(certs["cert"]),
                "--tls-key", str(certs["key"]))
    with processes() as procs:
        address, _ = start_cluster(procs, tmp_path, (), *tls_args)
        assert address.startswith("tls://127.0.0.1:")
        tls = TLSConfig(ca_file=str(certs["ca"]), cert_file=str(certs["cert"]),
                        key_file=str(certs["key"]))
        bare = address.removeprefix("tls://")  # the tls:// scheme is added from the config
        cm = ClusterManager("remote", address=bare, security=tls, timeout=STARTUP_S,
                            verbose=False)
        with cm as client:  # no workers needed: the scheduler computes over the TLS comm
            assert client.run_on_scheduler(block_sum, 3) == block_sum(3)
            assert cm.describe()["scheduler_address"] == address  # tls:// was added
        # a distributed Security object is accepted as is
        with ClusterManager("remote", address=address, security=security_from_tls(tls),
                            timeout=STARTUP_S, verbose=False) as client:
            assert client.run_on_scheduler(block_sum, 4) == block_sum(4)
        # without TLS the handshake never completes: a clear error within the timeout
        with pytest.raises(ClusterError, match="no Dask scheduler answered"):
            ClusterManager("remote", address=address, timeout=2.0, verbose=False).start()


# -- failures during a computation (last: it adds a worker to the shared cluster, then kills it)


def test_worker_killed_mid_computation_result_still_correct(remote, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    seeds = list(range(9))
    with processes() as procs:
        victim = start_worker(procs, tmp_path, remote["scheduler_file"], "victim")
        with ClusterManager("remote", address=remote["address"], n_workers=3,
                            timeout=STARTUP_S, verbose=False) as client:
            assert victim.pid in client.run(os.getpid).values()
            futures = client.map(slow_block_sum, seeds, marker_dir=str(markers), delay=0.5)
            deadline = time.monotonic() + 30
            while not list(markers.glob("victim-*")):
                assert time.monotonic() < deadline, "no task started on the victim worker"
                time.sleep(0.02)
            (running,) = markers.glob("victim-*")
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait(timeout=10)
            results = client.gather(futures)  # the scheduler reschedules the lost task
            assert results == [block_sum(s) for s in seeds]
            killed_seed = running.name.split("-")[1]
            reruns = [m.name for m in markers.glob(f"w?-{killed_seed}")]
            assert reruns, "the killed task was not re-run on a surviving worker"
            assert len(client.scheduler_info(n_workers=-1)["workers"]) == 2
