"""Chaos: kill a worker process (or the scheduler) in the middle of real cluster runs.

A worker plugin kills its own worker process with SIGKILL, once (a marker file remembers),
at a chosen point of a sweep, a factor computation and an analyzer run:

``hold``
    the worker that has just received the data every task needs (the market arrays of a
    sweep, a symbol block of factor fields or analyzer bars) dies holding it;
``compute``
    a worker dies as it starts a compute task;
``gather``
    a worker dies as a finished result is fetched from it.

Each disturbed run must give exactly the undisturbed run's result (lost data and tasks are
recomputed) within a bound. A task that keeps killing its workers, and killing the
scheduler, must raise ``ClusterError`` within a bound. All processes run on 127.0.0.1 and
are stopped by the fixtures.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import cloudpickle
import numpy as np
import pandas as pd
import pytest

from qilin.analysis.analyzer import DistributedStockAnalyzer
from qilin.backtest.sweeps import run_sweep
from qilin.data.synthetic import synthetic_market
from qilin.errors import ClusterError
from qilin.factors.calculator import FactorCalculator

# the scheduler and worker processes cannot import this module: ship its code by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])

#: Bound on a disturbed run (the undisturbed ones take about a second here).
BOUND_S = 45.0
FACTORS = [("MA5", "ts_mean(close, 5)"), ("R", "cs_rank(ts_delta(close, 3))"),
           ("V", "ts_std(volume, 10) / ts_mean(volume, 10)")]


from distributed import WorkerPlugin  # noqa: E402


class KillOnce(WorkerPlugin):
    """Worker plugin: SIGKILL this worker process the first time ``point`` is reached for a
    task whose name starts with ``prefix`` (once per ``marker`` file, across restarts)."""

    def __init__(self, point: str, prefix: str, marker: str) -> None:
        self.point, self.prefix, self.marker = point, prefix, marker
        self.name = f"kill-once-{Path(marker).name}"

    def _matches(self, key) -> bool:
        name = key[0] if isinstance(key, tuple) else key
        return str(name).startswith(self.prefix)

    def _die(self) -> None:
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)

    def setup(self, worker) -> None:
        if self.point != "gather":
            return
        serve = worker.handlers["get_data"]
        self._restore = (worker, serve)
        plugin = self

        async def get_data(comm, keys=(), who=None, **kwargs):
            if any(plugin._matches(k) for k in keys):
                plugin._die()
            return await serve(comm, keys=keys, who=who, **kwargs)

        worker.handlers["get_data"] = get_data

    def transition(self, key, start, finish, **kwargs) -> None:
        if not self._matches(key):
            return
        if (self.point == "hold" and finish == "memory") or (
                self.point == "compute" and finish == "executing"):
            self._die()

    def teardown(self, worker) -> None:
        restore = getattr(self, "_restore", None)
        if restore is not None:
            restore[0].handlers["get_data"] = restore[1]


@pytest.fixture(scope="module")
def cluster_client():
    """Two single-threaded worker processes under nannies (a killed worker is restarted).

    LocalCluster gives up on a lost worker that has not re-registered within
    ``distributed.deploy.lost-worker-timeout`` (15 s), too short for a restart on a busy
    2-core CI machine: raise it so the nanny's restart is always kept."""
    import dask
    from distributed import Client, LocalCluster

    with dask.config.set({"distributed.deploy.lost-worker-timeout": "600s"}), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                         dashboard_address="127.0.0.1:0", memory_limit="1GiB") as cluster, \
            Client(cluster) as client:
        yield client


@pytest.fixture(scope="module")
def panel():
    return synthetic_market(12, 120, seed=5)


@pytest.fixture(autouse=True)
def short_deadline(monkeypatch):
    monkeypatch.setenv("QILIN_CLUSTER__TASK_TIMEOUT_S", "60")


def _sweep(client, panel):
    return run_sweep(panel, "ma_cross", "fast=3,5 slow=10,20", market="cn", backend="cpu",
                     client=client, tile_size=1).table


def _factors(client, panel):
    res = FactorCalculator(FACTORS, client=client, backend="cpu", progress=False,
                           block_symbols=6, block_dates=60).compute(panel)
    return {name: res[name] for name, _ in FACTORS}


def _analyze(client, panel):
    an = DistributedStockAnalyzer(client, panel, block_size=4)
    return an.analyze_stocks_parallel(
        lambda bars: {"n": len(bars), "last": float(bars["close"].iloc[-1])})


RUNS = {
    # run, task-name prefix of its compute tasks, prefix of the tasks whose results it gathers
    "sweep": (_sweep, "run_tile", "run_tile"),
    "factors": (_factors, "qilin-factor-stage", "finalize"),
    "analyzer": (_analyze, "_analyze_frame_block", "_analyze_frame_block"),
}


def _same(a, b) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    else:
        pd.testing.assert_frame_equal(a, b)


def _wait_for_workers(client, n: int) -> None:
    client.wait_for_workers(n, timeout=120)  # a killed worker's restart, on a busy machine


@pytest.mark.parametrize("run", list(RUNS))
def test_worker_killed_at_each_point_gives_the_same_result(cluster_client, panel, tmp_path,
                                                           run):
    client = cluster_client
    fn, compute_prefix, gather_prefix = RUNS[run]
    _wait_for_workers(client, 2)
    reference = fn(client, panel)
    points = {"hold": "qilin-held-", "compute": compute_prefix, "gather": gather_prefix}
    for point, prefix in points.items():
        _wait_for_workers(client, 2)
        pids_before = set(client.run(os.getpid).values())
        marker = tmp_path / f"{run}-{point}"
        plugin = KillOnce(point, prefix, str(marker))
        client.register_plugin(plugin)
        try:
            t0 = time.monotonic()
            got = fn(client, panel)
            elapsed = time.monotonic() - t0
        finally:
            client.unregister_worker_plugin(plugin.name)
        assert marker.exists(), f"{run}: no worker reached the {point!r} point"
        assert int(marker.read_text()) in pids_before      # a worker really died
        assert elapsed < BOUND_S, f"{run} with a worker killed at {point}: {elapsed:.1f} s"
        _same(got, reference)


def test_task_that_keeps_killing_its_workers_is_a_cluster_error(cluster_client):
    """dask gives up on a task after ``allowed-failures`` worker deaths (KilledWorker): that
    is a one-line ClusterError naming the task, not a raw dask exception."""
    from qilin.cluster_tasks import gather_within

    client = cluster_client
    _wait_for_workers(client, 2)

    def set_allowed_failures(dask_scheduler, n: int) -> int:
        old, dask_scheduler.allowed_failures = dask_scheduler.allowed_failures, n
        return old

    def suicide() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    old = client.run_on_scheduler(set_allowed_failures, n=0)
    try:
        t0 = time.monotonic()
        with pytest.raises(ClusterError, match=r"chaos: task 'suicide-.*' was running on a "
                                               r"worker that died, more often than "
                                               r"distributed.scheduler.allowed-failures \(0\)"):
            gather_within(client, [client.submit(suicide, pure=False)], what="chaos")
        assert time.monotonic() - t0 < BOUND_S
    finally:
        client.run_on_scheduler(set_allowed_failures, n=old)


def test_scheduler_killed_mid_run_raises_cluster_error_within_bound(tmp_path, panel):
    """A real `dask scheduler` process dies while a sweep runs: ClusterError, no hang."""
    from test_cluster_remote import processes, start_cluster

    from qilin.cluster import ClusterManager

    with processes() as procs:
        _, sched_file = start_cluster(procs, tmp_path, ("w1",))
        scheduler = procs[0]
        marker = tmp_path / "scheduler-killed"
        pid, flag = scheduler.pid, str(marker)
        with ClusterManager("remote", scheduler_file=sched_file, timeout=5,
                            check_versions=False, verbose=False) as client:
            client.wait_for_workers(1, timeout=60)

            def kill_scheduler_once(dask_worker) -> None:
                # runs on the worker: kills the scheduler as soon as a task executes there
                import threading

                def watch() -> None:
                    while not dask_worker.state.executing:
                        time.sleep(0.005)
                    if not os.path.exists(flag):
                        Path(flag).touch()
                        os.kill(pid, signal.SIGKILL)

                threading.Thread(target=watch, daemon=True).start()

            client.run(kill_scheduler_once)
            t0 = time.monotonic()
            with pytest.raises(ClusterError, match=r"sweep ma_cross: .*(cancelled|scheduler)"):
                _sweep(client, panel)
            elapsed = time.monotonic() - t0
        assert marker.exists()
        assert scheduler.wait(timeout=10) == -signal.SIGKILL
    assert elapsed < 30, elapsed
