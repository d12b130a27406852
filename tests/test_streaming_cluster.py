"""The streamed factor job on a real ``dask scheduler`` + two ``dask worker`` processes.

Each task reads its own symbol block from the Parquet source in a shared temp folder and
writes its own partition; the client only sends task descriptions and gets small summaries.
One worker is SIGKILLed mid-run: its blocks are recomputed by the other, and the dataset is
identical to the single-machine run.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import cloudpickle
import numpy as np
import pyarrow.parquet as pq
import pytest
from test_cluster_remote import processes, start_cluster

from qilin.data.loader import save_bars
from qilin.data.synthetic import synthetic_bars
from qilin.factors.alpha158 import alpha158_features
from qilin.factors.streaming import plan_stream, stream_factors

REPO = Path(__file__).resolve().parents[1]
FACTORS = dict(alpha158_features(windows=(5, 20), include=["MA", "STD", "CORR", "RSV"]))


def _identical(a: Path, b: Path, pattern: str = "part-*.parquet") -> None:
    names = sorted(p.relative_to(a).as_posix() for p in a.glob(pattern))
    assert names and names == sorted(p.relative_to(b).as_posix() for p in b.glob(pattern))
    for name in names:
        ta, tb = pq.read_table(a / name), pq.read_table(b / name)
        assert ta.schema.equals(tb.schema) and ta.num_rows == tb.num_rows, name
        for col in ta.column_names:
            x, y = ta[col].to_numpy(), tb[col].to_numpy()
            if x.dtype.kind == "f":
                x, y = x.view(f"u{x.itemsize}"), y.view(f"u{y.itemsize}")
            assert np.array_equal(x, y), (name, col)


def _pids(markers: Path) -> set[int]:
    out = set()
    for p in markers.glob("*.json") if markers.exists() else ():
        try:
            out.add(json.loads(p.read_text())["pid"])
        except (OSError, ValueError, KeyError):
            pass
    return out


def test_cluster_run_survives_a_killed_worker_and_matches_one_machine(tmp_path, monkeypatch):
    from distributed import Client

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p))
    shared = tmp_path / "shared"  # stands in for NFS / an object store mount
    src = save_bars(synthetic_bars(n_symbols=36, n_days=300, seed=21), shared / "bars.parquet")
    ref = shared / "one-machine"
    stream_factors(src, ref, FACTORS, adjust=True, block_symbols=2, workers=1, progress=False)

    plan = plan_stream(src, shared / "x", FACTORS, adjust=True, block_symbols=2)
    assert len(cloudpickle.dumps(plan.tasks[0])) < 4096  # a task is a description, not data

    out = shared / "cluster"
    markers = out / "_qilin" / "blocks"
    with processes() as procs:
        address, _ = start_cluster(procs, tmp_path, ("w1", "w2"))
        victim = procs[1]  # the first worker
        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=60)
            results: dict = {}

            def run() -> None:
                try:
                    results["res"] = stream_factors(src, out, FACTORS, adjust=True,
                                                    block_symbols=2, client=client,
                                                    progress=False)
                except BaseException as exc:  # reported below
                    results["error"] = exc

            job = threading.Thread(target=run)
            job.start()
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline and job.is_alive():
                if _pids(markers) == {victim.pid, procs[2].pid}:
                    break  # both workers have finished blocks: kill one while it computes
                time.sleep(0.01)
            assert job.is_alive(), "the job finished before a worker could be killed"
            os.kill(victim.pid, signal.SIGKILL)
            job.join(timeout=60)
            assert not job.is_alive(), "the job did not finish after the worker was lost"
    if "error" in results:
        raise results["error"]
    res = results["res"]
    assert res.blocks == 18 and res.computed + res.skipped == 18
    # every partition was written by a worker (none by the client); blocks whose result was
    # lost with the victim were rerun on the survivor, which keeps a partition the victim
    # had finished (its marker matches) and computes the others
    assert _pids(markers) == {victim.pid, procs[2].pid}
    assert {s["pid"] for s in res.summaries if not s["skipped"]} <= {victim.pid, procs[2].pid}
    assert all(len(cloudpickle.dumps(s)) < 1024 for s in res.summaries)
    _identical(ref, out)
    # the keys do not depend on where a block ran: a local rerun keeps every partition
    assert stream_factors(src, out, FACTORS, adjust=True, block_symbols=2, workers=1,
                          progress=False).skipped == 18



def test_no_worker_left_is_a_cluster_error_within_its_bound(tmp_path, monkeypatch):
    from distributed import Client

    import qilin.factors.streaming as streaming
    from qilin.errors import ClusterError

    monkeypatch.setattr(streaming, "NO_WORKERS_S", 1.0)
    src = save_bars(synthetic_bars(n_symbols=4, n_days=60, seed=1), tmp_path / "b.parquet")
    with processes() as procs:
        address, _ = start_cluster(procs, tmp_path, ())  # a scheduler, no worker
        with Client(address, timeout="30s") as client:
            start = time.monotonic()
            with pytest.raises(ClusterError, match="no worker connected"):
                stream_factors(src, tmp_path / "out", FACTORS, block_symbols=2, client=client,
                               progress=False)
            assert time.monotonic() - start < 20


def test_year_layout_on_a_process_cluster_equals_one_machine(tmp_path):
    from distributed import Client, LocalCluster

    src = save_bars(synthetic_bars(n_symbols=12, n_days=400, seed=5), tmp_path / "b.parquet")
    kw = dict(adjust=True, block_symbols=4, partition_by="year", progress=False)
    ref, out = tmp_path / "one-machine", tmp_path / "cluster"
    stream_factors(src, ref, FACTORS, workers=1, **kw)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        res = stream_factors(src, out, FACTORS, client=client, **kw)
        workers = set(client.run(os.getpid).values())
    assert (res.blocks, res.computed) == (3, 3)
    assert _pids(out / "_qilin" / "blocks") <= workers and os.getpid() not in workers
    _identical(ref, out, "year=*/part-*.parquet")
    assert sorted(p.parent.name for p in out.glob("year=*/part-00000.parquet")) == [
        "year=2016", "year=2017"]
    assert stream_factors(src, out, FACTORS, workers=1, **kw).skipped == 3
