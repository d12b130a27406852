"""Walk-forward retraining: one task per window, out-of-sample predictions stitched together.

Each window (:func:`qilin.ml.windows.walk_forward_windows`) fits its own processors on its
training rows, trains a fresh copy of the model (seed ``seed + window.index``), early-stops on
its valid segment when it has one and predicts its test segment. With a Dask ``client`` the
dataset's arrays are scattered to the workers once and every window is its own task, so the
windows run side by side (Qlib's rolling retraining runs them one after another). Test
ranges do not overlap, so the stitched score Panel has one out-of-sample score per
(date, symbol). The result is the same with or without a cluster, for a given seed.

Examples
--------
>>> from qilin.data.synthetic import synthetic_market
>>> from qilin.factors.calculator import FactorCalculator
>>> from qilin.ml.dataset import Dataset
>>> from qilin.ml.models import RidgeModel
>>> from qilin.ml.windows import walk_forward_windows
>>> bars = synthetic_market(n_symbols=10, n_days=120, seed=2)
>>> f = FactorCalculator({"mom": "close / ts_delay(close, 5) - 1"}, backend="cpu",
...                      progress=False).compute(bars)
>>> ds = Dataset(f, bars, horizon=1)
>>> res = walk_forward(RidgeModel(), ds, walk_forward_windows(120, train=60, test=20, purge=1))
>>> len(res.windows), res.scores.shape
(2, (40, 10))
"""

from __future__ import annotations

import copy
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from qilin.data.panel import Panel
from qilin.errors import ClusterError, LeakageError, ParameterError
from qilin.ml.dataset import Dataset
from qilin.ml.models import Model
from qilin.ml.scores import prediction_metrics, summary
from qilin.ml.windows import Window

log = logging.getLogger(__name__)


@dataclass
class WalkForwardResult:
    """Stitched out-of-sample scores and per-window figures.

    Attributes
    ----------
    scores : Panel
        Field ``score`` over the dates from the first to the last test date.
    windows : DataFrame
        One row per window: dates, rows, best iteration, IC / Rank IC, seconds, worker.
    metrics : dict
        IC / Rank IC of the stitched scores (with t-stats).
    models : list of Model
        The fitted model of each window (when ``keep_models``).
    processors : list of dict
        The fitted processors of each window (``ProcessorChain.to_dict``; with ``keep_models``).
    """

    scores: Panel
    windows: pd.DataFrame
    metrics: dict[str, Any]
    models: list[Model] = field(default_factory=list)
    processors: list[dict[str, Any]] = field(default_factory=list)


def _core(dataset: Dataset) -> Dataset:
    """A shallow copy without the bars: what a window task needs to build its split."""
    core = copy.copy(dataset)
    core.bars = None  # type: ignore[assignment]
    return core


def _run_window(ds: Dataset, model: Model, window: Window, seed: int, keep_model: bool
                ) -> dict[str, Any]:
    from distributed import get_worker

    t0 = time.perf_counter()
    try:
        worker = get_worker().address
    except ValueError:
        worker = "local"
    split = ds.split(**window.segments())
    m = model.clone(seed=seed)
    m.fit(split.train, valid=split.valid)
    test = split.test
    assert test is not None
    pred = m.predict(test)
    lo, hi = test.rows
    fwd = ds.forward_return[lo:hi + 1]
    met = summary(prediction_metrics(test.to_grid(pred), fwd))
    return {
        "index": window.index, "date_idx": test.date_idx, "sym_idx": test.sym_idx,
        "pred": pred, "metrics": met, "rows_train": len(split.train),
        "rows_test": len(test), "best_iteration": getattr(m, "best_iteration_", None),
        "dropped": split.processors.dropped, "seconds": time.perf_counter() - t0,
        "worker": worker, "model": m if keep_model else None,
        "processors": split.processors.to_dict() if keep_model else None,
    }


def walk_forward(
    model: Model,
    dataset: Dataset,
    windows: list[Window],
    client: Any = None,
    seed: int = 0,
    keep_models: bool = False,
    timeout: float | None = 3600.0,
) -> WalkForwardResult:
    """Train and test ``model`` on every window; stitch the out-of-sample scores.

    Parameters
    ----------
    model : Model
        Template; each window trains a fresh copy (``model.clone(seed=seed + i)``).
    dataset : Dataset
    windows : list of Window
        From :func:`~qilin.ml.windows.walk_forward_windows`; their purge must cover the
        dataset's label span (checked by each split).
    client : distributed.Client, optional
        Run one task per window on the cluster.
    seed : int
    keep_models : bool
        Return the fitted model of every window.
    timeout : float or None
        Seconds to wait for the cluster's results before a :class:`ClusterError`.

    Raises
    ------
    LeakageError
        When test windows overlap or a window's gaps are shorter than the label span.
    ClusterError
        When the cluster does not deliver in time.
    """
    if not isinstance(model, Model):
        raise ParameterError(f"model must be a qilin.ml Model, got {type(model).__name__}")
    if not windows:
        raise ParameterError("no walk-forward windows given")
    ordered = sorted(windows, key=lambda w: w.test[0])
    for a, b in itertools.pairwise(ordered):
        if b.test[0] <= a.test[1]:
            raise LeakageError(f"test windows {a.index} {a.test} and {b.index} {b.test} overlap")
    for w in windows:  # fail fast, before any task starts
        segs = list(w.segments().items())
        order = sorted(segs, key=lambda kv: kv[1][0])
        for (_, (_, e0)), (_, (s1, _)) in itertools.pairwise(order):
            if s1 - e0 - 1 < dataset.shift:
                raise LeakageError(
                    f"window {w.index}: only {s1 - e0 - 1} date(s) between segments; the label "
                    f"span is {dataset.shift} dates (use purge >= {dataset.shift})")
    core = _core(dataset)
    if client is None:
        outs = [_run_window(core, model, w, seed + w.index, keep_models) for w in windows]
    else:
        outs = _run_on_cluster(client, core, model, windows, seed, keep_models, timeout)
    return _stitch(dataset, outs, windows)


def _run_on_cluster(client: Any, core: Dataset, model: Model, windows: list[Window], seed: int,
                    keep_models: bool, timeout: float | None) -> list[dict[str, Any]]:
    from distributed import wait

    [ds_future] = client.scatter([core], broadcast=True, hash=False)
    futures = [client.submit(_run_window, ds_future, model, w, seed + w.index, keep_models,
                             pure=False, key=f"walk-forward-window-{w.index}-{time.time_ns()}")
               for w in windows]
    try:
        done = wait(futures, timeout=timeout)
        if done.not_done:
            raise ClusterError(f"walk-forward: {len(done.not_done)} window(s) unfinished after "
                               f"{timeout}s; check the cluster's workers")
        bad = [f for f in futures if f.status == "error"]
        if bad:
            bad[0].result()  # re-raise the window's own (typed) error
        return client.gather(futures)
    finally:
        for f in futures:
            f.release()
        ds_future.release()


def _stitch(dataset: Dataset, outs: list[dict[str, Any]], windows: list[Window]
            ) -> WalkForwardResult:
    lo = min(w.test[0] for w in windows)
    hi = max(w.test[1] for w in windows)
    grid = np.full((hi - lo + 1, len(dataset.symbols)), np.nan)
    rows = []
    by_index = {w.index: w for w in windows}
    for o in sorted(outs, key=lambda o: o["index"]):
        grid[o["date_idx"] - lo, o["sym_idx"]] = o["pred"]
        w = by_index[o["index"]]
        d = dataset.dates
        rows.append({
            "window": o["index"], "train_start": d[w.train[0]], "train_end": d[w.train[1]],
            "test_start": d[w.test[0]], "test_end": d[w.test[1]],
            "rows_train": o["rows_train"], "rows_test": o["rows_test"],
            "best_iteration": o["best_iteration"], "ic": o["metrics"]["ic"],
            "rank_ic": o["metrics"]["rank_ic"], "rank_ic_t": o["metrics"]["rank_ic_t"],
            "seconds": o["seconds"], "worker": o["worker"],
            "dropped": ",".join(sorted(o["dropped"])),
        })
    scores = Panel(dataset.dates[lo:hi + 1], dataset.symbols, {"score": grid},
                   valid=np.isfinite(grid))
    metrics = summary(prediction_metrics(grid, dataset.forward_return[lo:hi + 1]))
    ordered = sorted(outs, key=lambda o: o["index"])
    models = [o["model"] for o in ordered if o["model"] is not None]
    procs = [o["processors"] for o in ordered if o["processors"] is not None]
    return WalkForwardResult(scores, pd.DataFrame(rows).set_index("window"), metrics, models,
                             procs)
