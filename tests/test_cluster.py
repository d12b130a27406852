"""ClusterManager with real local clusters (processes and threads), config and version checks."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import qilin
from qilin.cluster import (
    CHECKED_PACKAGES,
    ClusterManager,
    VersionMismatch,
    default_n_workers,
    resolve_mode,
    security_from_tls,
    version_mismatches,
)
from qilin.config import ClusterConfig, TLSConfig, load_config
from qilin.errors import ClusterError

REPO = Path(__file__).resolve().parent.parent
PYTHON = REPO / ".venv" / "bin" / "python"


def _block_sum(seed: int) -> float:
    return float(np.random.default_rng(seed).standard_normal(1000).sum())


def _versions(client_numpy: str = "2.1.0", **workers: str) -> dict:
    def entry(numpy: str, python: str = "3.11.7.final.0") -> dict:
        return {"packages": {"python": python, "dask": "2026.8.0", "distributed": "2026.8.0",
                             "numpy": numpy, "pandas": "2.2.3", "qilin": "0.1.0"}}

    return {
        "client": entry(client_numpy),
        "scheduler": entry(client_numpy),
        "workers": {addr: entry(v) for addr, v in workers.items()},
    }


# -- pure logic -------------------------------------------------------------------------------


def test_version_mismatches_none_when_equal():
    assert version_mismatches(_versions("2.1.0", w1="2.1.0", w2="2.1.0")) == []


def test_version_mismatches_names_package_and_worker():
    (m,) = version_mismatches(_versions("2.1.0", w1="2.1.0", w2="1.26.4"))
    assert m == VersionMismatch("numpy", "2.1.0", "2.1.0", {"w2": "1.26.4"})
    assert str(m) == "numpy: client 2.1.0, scheduler 2.1.0, worker w2 1.26.4"


def test_version_mismatches_python_compares_major_minor_and_missing_package():
    versions = _versions("2.1.0", w1="2.1.0")
    versions["scheduler"]["packages"]["python"] = "3.11.2.final.0"  # same 3.11: fine
    versions["workers"]["w1"]["packages"]["python"] = "3.12.1.final.0"
    versions["workers"]["w1"]["packages"]["qilin"] = None
    found = {m.package: m for m in version_mismatches(versions)}
    assert set(found) == {"python", "qilin"}
    assert found["python"].workers == {"w1": "3.12.1.final.0"}
    assert "worker w1 not installed" in str(found["qilin"])
    assert CHECKED_PACKAGES == ("python", "dask", "distributed", "numpy", "pandas", "qilin")


def test_resolve_mode_and_validation():
    assert resolve_mode("auto") == "local"  # no GPU / dask-cuda on this machine
    with pytest.raises(ClusterError, match="unknown cluster mode 'gpu'"):
        ClusterManager("gpu")  # type: ignore[arg-type]
    with pytest.raises(ClusterError, match="needs an address"):
        ClusterManager("remote")
    with pytest.raises(ClusterError, match="n_workers must be a positive integer, got 0"):
        ClusterManager("local", n_workers=0)
    with pytest.raises(ClusterError, match="timeout must be positive"):
        ClusterManager("local", timeout=0)
    with pytest.raises(ClusterError, match="not started"):
        ClusterManager("threads").client  # noqa: B018


def test_default_n_workers_is_bounded_by_cores():
    assert default_n_workers() == max(1, min(len(os.sched_getaffinity(0)), 4))


def test_from_config_maps_every_field(tmp_path):
    cfg = load_config(
        cluster="remote",
        env={},
        overrides={"cluster.address": "tcp://10.1.2.3:8786", "cluster.n_workers": 3,
                   "cluster.timeout_s": 4.5, "cluster.strict_versions": True,
                   "cluster.dashboard_address": ""},
    )
    cm = ClusterManager.from_config(cfg.cluster, verbose=False)
    assert (cm.mode, cm.address, cm.n_workers, cm.timeout) == (
        "remote", "tcp://10.1.2.3:8786", 3, 4.5)
    assert cm.strict_versions and cm.check_versions and cm.security is None
    assert cm.dashboard_address is None and cm.verbose is False


def test_security_from_tls_files(tmp_path):
    assert security_from_tls(TLSConfig()) is None
    files = {}
    for name in ("ca.pem", "cert.pem", "key.pem"):
        files[name] = tmp_path / name
        files[name].write_text("x")
    sec = security_from_tls(TLSConfig(str(files["ca.pem"]), str(files["cert.pem"]),
                                      str(files["key.pem"])))
    assert sec.require_encryption
    assert sec.tls_ca_file == str(files["ca.pem"])
    assert sec.tls_client_cert == str(files["cert.pem"])
    assert sec.tls_client_key == str(files["key.pem"])
    with pytest.raises(ClusterError, match=r"cluster.tls.ca_file: file not found: .*nope.pem"):
        security_from_tls(TLSConfig(str(tmp_path / "nope.pem"), str(files["cert.pem"])))


def test_cuda_mode_without_dask_cuda_is_a_clear_error():
    pytest.importorskip("distributed")
    try:
        import dask_cuda  # noqa: F401
    except ImportError:
        with pytest.raises(ClusterError, match="needs dask-cuda"):
            ClusterManager("cuda", verbose=False).start()
    else:  # pragma: no cover - GPU machines
        pytest.skip("dask-cuda is installed here; the gpu test covers cuda mode")


# -- real clusters ----------------------------------------------------------------------------


def test_threads_cluster_computes_describes_and_closes(capsys):
    cm = ClusterManager("threads", n_workers=1, threads_per_worker=2)
    with cm as client:
        assert client is cm.client and cm.start() is client  # start() is idempotent
        futures = client.map(_block_sum, range(8))
        assert client.gather(futures) == [_block_sum(s) for s in range(8)]
        d = cm.describe()
        assert d["mode"] == "threads" and d["n_workers"] == 1 and d["threads"] == 2
        assert d["scheduler_address"].startswith("inproc://")
        assert d["version_mismatches"] == []
        link = cm.dashboard_link
        assert link.startswith("http://127.0.0.1:") and link.endswith("/status")
        with urllib.request.urlopen(link, timeout=10) as resp:  # the dashboard really serves
            assert resp.status == 200
    assert not cm.started
    out = capsys.readouterr().out
    assert "qilin cluster [threads]" in out and link in out
    cm.close()  # closing twice is harmless


def test_auto_starts_a_local_process_cluster_on_loopback(caplog):
    caplog.set_level(logging.INFO, logger="qilin.cluster")
    cm = ClusterManager("auto", n_workers=2, threads_per_worker=1, memory_limit="1GiB",
                        verbose=False, timeout=30)
    with cm as client:
        assert cm.resolved_mode == "local"  # no GPU / dask-cuda here
        cm_pids = client.run(os.getpid)
        assert len(cm_pids) == 2 and os.getpid() not in cm_pids.values()
        assert all(addr.startswith("tcp://127.0.0.1:") for addr in cm_pids)
        # qilin itself is importable on the workers
        assert set(client.run(lambda: __import__("qilin").__version__).values()) == {
            qilin.__version__}
        total = client.submit(sum, client.map(_block_sum, range(6))).result()
        assert total == pytest.approx(sum(_block_sum(s) for s in range(6)), abs=1e-12)
        workers = client.scheduler_info(n_workers=-1)["workers"]
        assert {w["memory_limit"] for w in workers.values()} == {2**30}
        assert cm.dashboard_link.startswith("http://127.0.0.1:")
    assert "qilin cluster [local] tcp://127.0.0.1:" in caplog.text
    assert "auto" in repr(cm) and "not started" in repr(cm)


def test_without_dashboard_http_stays_on_a_free_loopback_port():
    cm = ClusterManager("threads", n_workers=1, dashboard_address=None, verbose=False)
    with cm:
        assert cm.dashboard_link is None and cm.describe()["dashboard"] is None
        http = cm._cluster.scheduler.http_server  # /health and /metrics only
        bound = {sock.getsockname()[:2] for sock in http._sockets.values()}
        assert bound and all(host == "127.0.0.1" and port != 8787 for host, port in bound), bound


def test_strict_versions_raise_on_mismatch(monkeypatch):
    import distributed

    real = distributed.Client.get_versions

    def fake(self, check=False, packages=None):
        versions = real(self, check=check, packages=packages)
        for entry in versions["workers"].values():
            entry["packages"]["pandas"] = "0.25.0"
        return versions

    monkeypatch.setattr(distributed.Client, "get_versions", fake)
    cm = ClusterManager("threads", n_workers=1, dashboard_address=None, verbose=False,
                        strict_versions=True)
    with pytest.raises(ClusterError, match=r"pandas: client .*, worker inproc://\S+ 0.25.0"):
        cm.start()
    assert not cm.started  # the cluster was closed on failure
    warn = ClusterManager("threads", n_workers=1, dashboard_address=None, verbose=False)
    with warn:
        assert [m.package for m in warn.version_mismatches] == ["pandas"]


def test_script_with_main_guard_runs_a_process_cluster(tmp_path):
    script = tmp_path / "analysis.py"
    script.write_text(textwrap.dedent("""
        from qilin.cluster import ClusterManager

        def square(x):
            return x * x

        if __name__ == "__main__":
            with ClusterManager("local", n_workers=1, threads_per_worker=1) as client:
                print("RESULT", sum(client.gather(client.map(square, range(5)))))
    """))
    proc = subprocess.run([str(PYTHON), str(script)], capture_output=True, text=True,
                          timeout=90, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "RESULT 30" in proc.stdout
    assert "dashboard: http://127.0.0.1:" in proc.stdout


def test_start_inside_a_spawned_worker_import_explains_the_main_guard(monkeypatch):
    # What a worker process sees when it re-imports an unguarded script: __mp_main__.
    monkeypatch.setattr(sys.modules["__main__"], "__name__", "__mp_main__")
    with pytest.raises(ClusterError, match=r'under `if __name__ == "__main__":`'):
        ClusterManager("local", n_workers=1, verbose=False).start()


def test_cluster_config_defaults_match_manager_defaults():
    cfg = ClusterConfig()
    cm = ClusterManager.from_config(cfg)
    ref = ClusterManager()
    for name in ("mode", "n_workers", "threads_per_worker", "memory_limit", "dashboard_address",
                 "timeout", "check_versions", "strict_versions"):
        assert getattr(cm, name) == getattr(ref, name), name


def test_cuda_cluster_one_worker_per_gpu(gpu):
    pytest.importorskip("dask_cuda")
    from qilin.backend import gpu_count

    cm = ClusterManager("cuda", verbose=False, timeout=60)
    with cm as client:
        assert cm.resolved_mode == "cuda" and cm.describe()["n_workers"] == gpu_count()
        assert client.submit(lambda: __import__("cupy").arange(4).sum().item()).result() == 6


if sys.platform != "linux":  # pragma: no cover
    pytestmark = pytest.mark.skip("process clusters are tested on Linux")


def test_process_cluster_inside_a_papermill_notebook(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    papermill = pytest.importorskip("papermill")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python",
                                 "display_name": "Python 3"}
    params = nbformat.v4.new_code_cell("n = 3")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [
        params,
        nbformat.v4.new_code_cell(textwrap.dedent("""
            from qilin.cluster import ClusterManager

            def cube(x):
                return x ** 3

            cm = ClusterManager("local", n_workers=1, threads_per_worker=1, timeout=60)
            client = cm.start()
            total = sum(client.gather(client.map(cube, range(n))))
            mode = cm.describe()["mode"]
            cm.close()
            print("TOTAL", total, mode)
        """)),
    ]
    src, out = tmp_path / "cluster.ipynb", tmp_path / "cluster.out.ipynb"
    nbformat.write(nb, src)
    papermill.execute_notebook(str(src), str(out), parameters={"n": 4}, kernel_name="python3",
                               cwd=str(tmp_path), progress_bar=False, execution_timeout=120)
    executed = nbformat.read(out, as_version=4)
    text = "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code"
                   for o in c.get("outputs", []))
    assert "TOTAL 36 local" in text  # 0 + 1 + 8 + 27 with the injected n = 4
    assert "dashboard: http://127.0.0.1:" in text


def test_dropped_manager_closes_its_cluster():
    import gc

    cm = ClusterManager("threads", n_workers=1, dashboard_address=None, verbose=False)
    client = cm.start()
    cluster = cm._cluster
    del cm
    gc.collect()
    assert client.status == "closed"
    assert cluster.status.name == "closed"


@pytest.fixture
def fake_dask_cuda(monkeypatch):
    """dask_cuda stand-in whose LocalCUDACluster records its arguments and starts a threads
    cluster, so that the cuda plumbing (auto resolution, arguments, errors) runs on CPU."""
    import types

    from distributed import LocalCluster

    calls = []

    def local_cuda_cluster(**kwargs):
        calls.append(kwargs)
        return LocalCluster(n_workers=1, processes=False, threads_per_worker=1,
                            dashboard_address=kwargs["dashboard_address"])

    module = types.ModuleType("dask_cuda")
    module.LocalCUDACluster = local_cuda_cluster
    monkeypatch.setitem(sys.modules, "dask_cuda", module)
    return calls


def test_cuda_mode_plumbing_with_a_stand_in_dask_cuda(fake_dask_cuda, monkeypatch):
    import qilin.backend

    monkeypatch.setattr(qilin.backend, "gpu_count", lambda: 0)
    assert resolve_mode("auto") == "local"  # dask-cuda alone is not enough
    with pytest.raises(ClusterError, match="needs at least one visible CUDA GPU"):
        ClusterManager("cuda", verbose=False).start()
    assert fake_dask_cuda == []

    monkeypatch.setattr(qilin.backend, "gpu_count", lambda: 2)
    assert resolve_mode("auto") == "cuda"
    cm = ClusterManager("auto", memory_limit="2GiB", verbose=False)
    with cm as client:
        assert cm.resolved_mode == "cuda"
        assert client.submit(sum, [1, 2]).result() == 3
    (kwargs,) = fake_dask_cuda
    assert kwargs["n_workers"] is None  # dask-cuda: one worker per GPU
    assert kwargs["threads_per_worker"] == 1 and kwargs["memory_limit"] == "2GiB"
    assert kwargs["host"] == "127.0.0.1" and kwargs["dashboard_address"] == "127.0.0.1:0"


# -- waits with deadlines (qilin.cluster_tasks) ----------------------------------------------


def test_gather_within_without_workers_raises_cluster_error_within_the_deadline():
    from distributed import Client, LocalCluster

    from qilin.cluster_tasks import gather_within, hold

    with LocalCluster(n_workers=0, processes=False, dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster) as client:
        futures = client.map(abs, [-1, -2])
        t0 = time.monotonic()
        with pytest.raises(ClusterError, match=r"test run: 2 of 2 task\(s\) made no progress "
                                               r"for 1 s \(cluster.task_timeout_s\)"):
            gather_within(client, futures, timeout_s=1.0, what="test run")
        assert time.monotonic() - t0 < 1.0 + 2.0
        cluster.scale(1)
        # a task's own exception comes back unchanged; held data feeds tasks like a scatter
        data = hold(client, [3, -4])
        assert gather_within(client, [client.submit(sum, data)], timeout_s=30) == [-1]
        with pytest.raises(ZeroDivisionError):
            gather_within(client, [client.submit(lambda: 1 / 0)], timeout_s=30)


def test_task_timeout_comes_from_config(monkeypatch):
    from qilin.cluster_tasks import task_timeout_s

    assert task_timeout_s() == ClusterConfig().task_timeout_s == 3600.0
    monkeypatch.setenv("QILIN_CLUSTER__TASK_TIMEOUT_S", "7.5")
    assert task_timeout_s() == 7.5
    with pytest.raises(ClusterError, match="must be positive"):
        task_timeout_s(0)
