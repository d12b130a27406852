"""Models: fit/predict/importance, backends, xgboost.dask on a LocalCluster, end to end."""

from __future__ import annotations

import numpy as np
import pytest

from qilin.backend import gpu_available
from qilin.backtest.portfolio import run_portfolio
from qilin.errors import BackendError, DataError, ParameterError
from qilin.ml.dataset import Dataset
from qilin.ml.models import RandomForestModel, RidgeModel, XGBoostModel, make_model


@pytest.fixture(scope="module")
def split(small_market, small_factors):
    ds = Dataset(small_factors, small_market, horizon=1, label_norm="zscore")
    return ds, ds.split(train=(0, 150), valid=(152, 190), test=(192, 259))


def test_xgboost_early_stopping_on_valid(split):
    _, sp = split
    m = XGBoostModel(n_estimators=400, learning_rate=0.3, early_stopping_rounds=5, n_jobs=1)
    m.fit(sp.train, valid=sp.valid)
    assert m.best_iteration_ < m.booster_.num_boosted_rounds() <= 400
    assert "valid" in m.history_
    pred = m.predict(sp.test)
    assert pred.shape == (len(sp.test),) and np.isfinite(pred).all()
    imp = m.feature_importance()
    assert list(imp.index) == sp.features


@pytest.mark.parametrize("kind", ["ridge", "random_forest"])
def test_sklearn_models(split, kind):
    _, sp = split
    params = {"n_estimators": 10, "max_depth": 4, "n_jobs": 1} if kind == "random_forest" else {}
    m = make_model(kind, **params).fit(sp.train)
    assert m.predict(sp.test).shape == (len(sp.test),)
    assert list(m.feature_importance().index) == sp.features


def test_gpu_request_without_gpu_raises():
    if gpu_available():
        pytest.skip("a GPU is present")
    for cls in (XGBoostModel, RidgeModel, RandomForestModel):
        with pytest.raises(BackendError, match="no GPU"):
            cls(backend="gpu")
    assert XGBoostModel(backend="auto").device_ == "cpu"


@pytest.mark.gpu
def test_xgboost_on_gpu_matches_cpu_closely(gpu, split):
    _, sp = split
    cpu = XGBoostModel(n_estimators=30, early_stopping_rounds=None, seed=1).fit(sp.train)
    gpu_m = XGBoostModel(n_estimators=30, early_stopping_rounds=None, seed=1,
                         backend="gpu").fit(sp.train)
    assert gpu_m.xgb_params()["device"] == "cuda"
    c = np.corrcoef(cpu.predict(sp.test), gpu_m.predict(sp.test))[0, 1]
    assert c > 0.95


def test_errors_are_typed(split):
    _, sp = split
    with pytest.raises(ParameterError, match="not fitted"):
        XGBoostModel().predict(sp.test)
    with pytest.raises(ParameterError, match="unknown model"):
        make_model("svm")
    m = RidgeModel().fit(sp.train)
    with pytest.raises(DataError, match="feature columns"):
        m.predict(sp.test.X[:, :2])
    with pytest.raises(DataError, match="labels"):
        RidgeModel().fit(sp.train.X)


def test_xgboost_dask_trains_on_worker_partitions(split, local_client):
    ds, sp = split
    m = XGBoostModel(n_estimators=40, max_depth=3, early_stopping_rounds=10, n_jobs=1)
    m.fit(sp.train, valid=sp.valid, client=local_client, block_dates=40)
    pred_d = m.predict(sp.test, client=local_client, block_dates=30)
    pred_l = m.predict(sp.test)
    np.testing.assert_allclose(pred_d, pred_l, rtol=1e-5, atol=1e-6)
    assert m.best_iteration_ is not None
    _, metrics = ds.evaluate(sp.test, pred_d)
    assert np.isfinite(metrics["rank_ic"])


def test_end_to_end_factors_to_backtest(split, small_market):
    ds, sp = split
    m = XGBoostModel(n_estimators=60, max_depth=3, early_stopping_rounds=10, n_jobs=1)
    m.fit(sp.train, valid=sp.valid)
    scores, metrics = ds.evaluate(sp.test, m.predict(sp.test))
    assert scores.shape == (68, 40)
    assert set(metrics) >= {"ic", "rank_ic", "rank_ic_t", "n_dates"}
    assert metrics["n_dates"] == 67  # the last date has no forward return yet
    lo, hi = sp.test.rows
    panel = small_market.select(start=small_market.dates[lo], end=small_market.dates[hi])
    res = run_portfolio(panel, scores=scores["score"], top_k=5, market="cn")
    table = res.metrics()
    assert np.isfinite(np.asarray(table.to_numpy(), dtype=float)).any()
    assert res.trades is not None and len(res.trades) > 0


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["ridge", "random_forest"])
def test_cuml_models_on_gpu(gpu, split, kind):
    _, sp = split
    params = {"n_estimators": 10, "max_depth": 4} if kind == "random_forest" else {}
    cpu = make_model(kind, **params).fit(sp.train)
    on_gpu = make_model(kind, backend="gpu", **params).fit(sp.train)
    assert type(on_gpu.estimator_).__module__.startswith("cuml")
    pred = on_gpu.predict(sp.test)
    assert pred.shape == (len(sp.test),) and np.isfinite(pred).all()
    assert np.corrcoef(pred, cpu.predict(sp.test))[0, 1] > 0.8
