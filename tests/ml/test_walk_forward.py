"""walk_forward: one task per window on a real LocalCluster, stitched, deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from qilin.errors import LeakageError, ParameterError
from qilin.ml.dataset import Dataset
from qilin.ml.models import XGBoostModel
from qilin.ml.walk_forward import walk_forward
from qilin.ml.windows import Window, walk_forward_windows


@pytest.fixture(scope="module")
def ds(small_market, small_factors):
    return Dataset(small_factors, small_market, horizon=2, label_norm="rank")


def _model():
    return XGBoostModel(n_estimators=30, max_depth=3, subsample=0.7, early_stopping_rounds=5,
                        n_jobs=1)


def test_walk_forward_cluster_matches_local_and_is_deterministic(ds, local_client):
    wins = walk_forward_windows(260, train=100, valid=20, test=25, purge=2)
    assert len(wins) == 5
    a = walk_forward(_model(), ds, wins, client=local_client, seed=3)
    b = walk_forward(_model(), ds, wins, client=local_client, seed=3)
    c = walk_forward(_model(), ds, wins, seed=3)
    np.testing.assert_array_equal(a.scores["score"], b.scores["score"])
    np.testing.assert_array_equal(a.scores["score"], c.scores["score"])
    d = walk_forward(_model(), ds, wins, seed=4)
    assert not np.array_equal(np.nan_to_num(a.scores["score"]), np.nan_to_num(d.scores["score"]))
    # both workers took windows; the test windows tile the stitched range
    assert a.windows["worker"].nunique() == 2
    assert a.scores.shape[0] == wins[-1].test[1] - wins[0].test[0] + 1
    filled = np.isfinite(a.scores["score"]).any(axis=1)
    assert filled.all()
    assert set(a.windows.columns) >= {"rank_ic", "ic", "best_iteration", "rows_train"}
    assert np.isfinite(a.metrics["rank_ic"])


def test_walk_forward_refuses_leaky_windows(ds):
    short = [Window(0, (0, 99), None, (101, 120))]  # gap 1 < label span 2
    with pytest.raises(LeakageError, match="label span"):
        walk_forward(_model(), ds, short)
    overlap = [Window(0, (0, 99), None, (102, 130)), Window(1, (10, 109), None, (120, 150))]
    with pytest.raises(LeakageError, match="overlap"):
        walk_forward(_model(), ds, overlap)
    with pytest.raises(ParameterError):
        walk_forward("xgb", ds, short)


def test_keep_models(ds):
    wins = walk_forward_windows(260, train=120, test=60, purge=2)
    res = walk_forward(_model(), ds, wins, keep_models=True)
    assert len(res.models) == len(wins)
    assert all(m.booster_ is not None for m in res.models)
