"""The research steps' cluster helper gives the in-process result."""

from __future__ import annotations

import numpy as np
from distributed import Client, LocalCluster

from qilin.data.synthetic import synthetic_market
from qilin.research import evaluate_on_cluster


def test_evaluate_on_cluster_equals_in_process() -> None:
    panel = synthetic_market(12, 120, seed=4)
    close = panel["close"]
    values = {"mom5": close / np.roll(close, 5, axis=0) - 1, "neg": -close}
    local = evaluate_on_cluster(values, panel, None, horizons=(1,))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        remote = evaluate_on_cluster(values, panel, client, batch=1, horizons=(1,))
    assert list(remote) == ["mom5", "neg"]
    for name in values:
        assert remote[name].summary.equals(local[name].summary)
