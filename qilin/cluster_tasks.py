"""Cluster data and results that survive worker loss, and waits that always end.

Two helpers used by every qilin computation on a ``distributed.Client`` (factor blocks,
sweep tiles, analyzer blocks):

:func:`hold`
    Puts an object on the cluster as the result of a task that returns it, instead of
    ``client.scatter``. Scattered data lives only on the workers that received it: when they
    die the key is gone and every task that needs it is cancelled (``FutureCancelledError``),
    and a scatter whose receiving worker dies mid-transfer can hang. A held object is part of
    the task graph the scheduler keeps, so a lost copy is recomputed on a surviving worker
    like any other lost result.
:func:`gather_within`
    Waits for futures and returns their results in order, within a deadline
    (``cluster.task_timeout_s``: the longest a run may go without any of its tasks
    finishing). Lost workers are survived (dask reruns their tasks); what cannot be survived
    (the scheduler is gone, a task killed its workers ``distributed.scheduler.allowed-failures``
    times, the deadline passes) becomes a one-line :class:`~qilin.errors.ClusterError`. An
    exception raised by the task's own code is re-raised unchanged.

Examples
--------
>>> from distributed import Client, LocalCluster
>>> with LocalCluster(n_workers=1, processes=False, dashboard_address="127.0.0.1:0") as cluster, \\
...         Client(cluster) as client:
...     data = hold(client, [1, 2, 3])
...     gather_within(client, [client.submit(sum, data), client.submit(len, data)],
...                   timeout_s=30)
[6, 3]
"""

from __future__ import annotations

import time
import uuid
import warnings
from collections.abc import Sequence
from concurrent.futures import CancelledError
from typing import Any

from qilin.errors import ClusterError

#: How often a wait looks at the client's connection while tasks run.
POLL_S = 0.5


def _held(obj: Any) -> Any:
    """The task behind :func:`hold`: returns its argument."""
    return obj


def hold(client: Any, obj: Any) -> Any:
    """Put ``obj`` on the cluster so that a lost copy is recreated, not lost.

    The object travels in the task graph (the scheduler keeps it until the future is
    released), so it costs one more copy than ``client.scatter`` while the run lasts; in
    exchange no worker's death loses it.

    Parameters
    ----------
    client : distributed.Client
    obj : any
        Data that tasks will take as an argument (a symbol block, the market arrays).

    Returns
    -------
    distributed.Future
        Key ``qilin-held-<hex>``; pass it to ``client.submit``/``map`` or ``dask.delayed`` in
        place of ``obj``.

    Examples
    --------
    >>> from distributed import Client, LocalCluster
    >>> with LocalCluster(n_workers=1, processes=False, dashboard_address="127.0.0.1:0") as c, \\
    ...         Client(c) as client:
    ...     client.submit(len, hold(client, "abc")).result(timeout=30)
    3
    """
    with warnings.catch_warnings():
        # carrying the data in the graph is the point: the scheduler can then recompute it
        warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
        return client.submit(_held, obj, key=f"qilin-held-{uuid.uuid4().hex}")


def task_timeout_s(value: float | None = None) -> float:
    """``value``, else ``cluster.task_timeout_s`` from the configuration.

    Examples
    --------
    >>> task_timeout_s(12)
    12.0
    >>> task_timeout_s() > 0
    True
    """
    if value is None:
        from qilin.config import load_config

        value = load_config().cluster.task_timeout_s
    if not value > 0:
        raise ClusterError(f"cluster.task_timeout_s must be positive seconds, got {value!r}")
    return float(value)


def _lost(what: str, detail: str) -> ClusterError:
    return ClusterError(f"{what}: {detail}")


def _cancelled(what: str, exc: CancelledError, n: int) -> ClusterError:
    """One line for dask's (multi-line) cancellation errors."""
    groups = getattr(exc, "error_groups", None)
    if groups:
        reasons = sorted({str(g.reason) for g in groups})
    else:
        reasons = [str(getattr(exc, "reason", "") or "cancelled")]
    return _lost(what, f"{n} task(s) cancelled ({', '.join(reasons)}): the scheduler was "
                       "lost or the client disconnected; re-run on a healthy cluster")


def _result(fut: Any, left: float, what: str) -> Any:
    """One finished future's result; infrastructure failures become ClusterError."""
    from distributed.scheduler import KilledWorker

    try:
        return fut.result(timeout=max(left, 0.1))
    except KilledWorker as exc:
        allowed = exc.args[2] if len(exc.args) > 2 else "?"
        raise _lost(what, f"task {fut.key!r} was running on a worker that died, more often "
                          f"than distributed.scheduler.allowed-failures ({allowed}) allows; "
                          "it is not retried again") from None
    except CancelledError as exc:
        raise _cancelled(what, exc, 1) from None
    except TimeoutError:
        if fut.status == "error":
            raise
        raise _lost(what, f"the result of task {fut.key!r} could not be fetched "
                          "within the deadline (cluster.task_timeout_s)") from None
    except OSError as exc:
        if fut.status == "error":  # raised by the task's own code
            raise
        raise _lost(what, f"connection to the cluster failed: {exc}") from None


def gather_within(
    client: Any,
    futures: Sequence[Any],
    timeout_s: float | None = None,
    what: str = "cluster run",
    progress: str | None = None,
) -> list[Any]:
    """Results of ``futures`` in order, waiting at most ``timeout_s`` without progress.

    Parameters
    ----------
    client : distributed.Client
    futures : sequence of distributed.Future
    timeout_s : float, optional
        The longest the wait may go without any future finishing; default
        ``cluster.task_timeout_s``.
    what : str
        Names the run in error messages (``"factor computation"``, ``"sweep ma_cross"``).
    progress : str, optional
        Show a tqdm bar with this description.

    Raises
    ------
    ClusterError
        The deadline passed, the scheduler was lost, or a task kept killing its workers.

    Examples
    --------
    >>> from distributed import Client, LocalCluster
    >>> with LocalCluster(n_workers=1, processes=False, dashboard_address="127.0.0.1:0") as c, \\
    ...         Client(c) as client:
    ...     gather_within(client, client.map(abs, [-1, -2]), timeout_s=30)
    [1, 2]
    """
    from distributed import wait

    limit = task_timeout_s(timeout_s)
    out: list[Any] = [None] * len(futures)
    pending = dict(enumerate(futures))
    bar: Any = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(futures), desc=progress, unit="task")
    deadline = time.monotonic() + limit
    try:
        while pending:
            now = time.monotonic()
            if now >= deadline:
                raise _lost(what, f"{len(pending)} of {len(futures)} task(s) made no progress "
                                  f"for {limit:g} s (cluster.task_timeout_s); are workers "
                                  "alive? (raise cluster.task_timeout_s for longer tasks)")
            if client.status in ("closing", "closed"):
                raise _lost(what, f"the client is {client.status}: the scheduler was lost "
                                  f"with {len(pending)} task(s) unfinished")
            try:
                wait(list(pending.values()), timeout=min(POLL_S, deadline - now),
                     return_when="FIRST_COMPLETED")
            except TimeoutError:
                continue
            except CancelledError as exc:
                raise _cancelled(what, exc, len(pending)) from None
            finished = [i for i, f in pending.items() if f.done()]
            for i in finished:
                out[i] = _result(pending.pop(i), deadline - time.monotonic(), what)
                if bar is not None:
                    bar.update(1)
            if finished:
                deadline = time.monotonic() + limit
    finally:
        if bar is not None:
            bar.close()
    return out
