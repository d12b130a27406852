"""Dataset: label timing, processors fitted on train only, purge, leaks, dask output."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from qilin.errors import DataError, LeakageError, ParameterError
from qilin.ml.dataset import Dataset
from qilin.ml.processors import CSZScore, DropConstant, FillNaN, RobustZScore, Winsorize
from qilin.ml.windows import walk_forward_windows


def test_default_label_is_forward_return_under_timing(small_market, small_factors):
    ds = Dataset(small_factors, small_market, horizon=3, leak_threshold=None)
    close = small_market.adjusted()["close"]
    t, j = 100, 7
    assert ds.raw_label[t, j] == pytest.approx(close[t + 3, j] / close[t, j] - 1)
    assert np.isnan(ds.raw_label[-3:]).all()
    lagged = Dataset(small_factors, small_market, horizon=3, lag=1, leak_threshold=None)
    assert lagged.raw_label[t, j] == pytest.approx(close[t + 4, j] / close[t + 1, j] - 1)
    assert lagged.shift == 4


def test_label_expression_and_cs_norms(small_market, small_factors):
    ds = Dataset(small_factors, small_market, label="ts_mean(close, 2) / close", horizon=2,
                 label_norm="rank", leak_threshold=None)
    row = ds.label[50][np.isfinite(ds.label[50])]
    assert row.min() == -0.5 and row.max() == 0.5
    z = Dataset(small_factors, small_market, label_norm="zscore", leak_threshold=None).label[50]
    assert np.nanmean(z) == pytest.approx(0, abs=1e-12)
    assert np.nanstd(z) == pytest.approx(1)
    with pytest.raises(Exception, match="unknown"):
        Dataset(small_factors, small_market, label="nope(close)")


def test_processors_fit_on_train_only(small_market, small_factors):
    ds = Dataset(small_factors, small_market, horizon=1,
                 processors=[DropConstant(), Winsorize(0.05, 0.95), RobustZScore(), FillNaN()])
    a = ds.split(train=(0, 119), test=(130, 259))
    x2 = ds.x.copy()
    x2[130:] *= 1000.0  # a later segment changes: the train statistics must not move
    ds.x = x2
    b = ds.split(train=(0, 119), test=(130, 259))
    np.testing.assert_array_equal(a.train.X, b.train.X)
    w = a.processors.processors[1]
    assert np.all(b.test.X <= 3.0) and np.all(np.isfinite(b.test.X))
    assert w.hi_ is not None


def test_constant_and_all_nan_features_dropped_and_reported(small_market, small_factors):
    long = small_factors.to_long()
    long["flat"] = 1.0
    long["empty"] = np.nan
    ds = Dataset(long, small_market)
    split = ds.split(train=(0, 119), valid=(121, 180), test=(182, 259))
    assert "flat" not in split.features and "empty" not in split.features
    rep = split.report()
    assert rep["dropped"] == {"flat": "constant in training", "empty": "all NaN in training"}
    assert split.train.X.shape[1] == 4


def test_rows_without_label_dropped_for_training_kept_for_prediction(small_market,
                                                                     small_factors):
    ds = Dataset(small_factors, small_market, horizon=5)
    split = ds.split(train=(0, 200), test=(206, 259))
    assert np.isfinite(split.train.y).all()
    assert np.isnan(split.test.y).sum() > 0  # the last 5 dates have no label yet
    assert split.test.date_idx.max() == 259


def test_overlap_and_short_purge_are_caught(small_market, small_factors):
    ds = Dataset(small_factors, small_market, horizon=5)
    with pytest.raises(LeakageError, match="overlaps"):
        ds.split(train=(0, 120), test=(100, 200))
    with pytest.raises(LeakageError, match="purge gap of at least 5"):
        ds.split(train=(0, 120), test=(124, 200))
    with pytest.raises(LeakageError, match="purge=2 is shorter"):
        ds.split(train=(0, 120), test=(130, 200), purge=2)
    d = small_market.dates
    split = ds.split(train=(d[0], d[120]), test=(d[126], d[200]))
    assert split.segments["test"][0] == str(d[126].date())


def test_feature_equal_to_future_label_is_caught(small_market, small_factors):
    ds0 = Dataset(small_factors, small_market, horizon=2, leak_threshold=None)
    long = small_factors.to_long()
    fut = pd.DataFrame(ds0.raw_label, index=small_market.dates, columns=small_market.symbols)
    stacked = fut.stack(future_stack=True).rename("peek").reset_index()
    stacked.columns = ["date", "symbol", "peek"]
    long = long.merge(stacked, on=["date", "symbol"], how="left")
    with pytest.raises(LeakageError, match="'peek'"):
        Dataset(long, small_market, horizon=2).split(train=(0, 150), test=(153, 250))


def test_bad_inputs_typed(small_market, small_factors, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        Dataset(tmp_path / "missing.parquet", small_market)
    with pytest.raises(ParameterError, match="horizon"):
        Dataset(small_factors, small_market, horizon=0)
    with pytest.raises(ParameterError, match="no date"):
        Dataset(small_factors, small_market).split(train=("2030-01-01", "2031-01-01"))


def test_cs_zscore_processor_per_date():
    x = np.random.default_rng(0).normal(size=(3, 50, 2))
    z = CSZScore().transform(x)
    np.testing.assert_allclose(z.mean(axis=1), 0, atol=1e-12)


def test_frames_and_parquet_roundtrip(small_market, small_factors, tmp_path):
    path = small_factors.to_parquet(tmp_path / "f.parquet")
    ds = Dataset(path, small_market)
    split = ds.split(train=(0, 150), test=(152, 259))
    df = split.train.to_frame()
    assert list(df.columns) == [*split.features, "label"]
    assert df.index.names == ["date", "symbol"]
    assert len(ds.to_frame(0, 10)) == int(small_market.valid[:11].sum())


def test_dask_arrays_partitioned_by_date_blocks(small_market, small_factors, local_client):
    split = Dataset(small_factors, small_market).split(train=(0, 150), test=(152, 259))
    X, y = split.train.to_dask(local_client, block_dates=50)
    assert X.numblocks[0] == 4 and len(X.chunks[0]) == 4
    # the blocks live on the workers: the client holds futures, not data
    who = local_client.who_has()
    assert len(who) >= 8
    np.testing.assert_array_equal(X.compute(), split.train.X)
    np.testing.assert_array_equal(y.compute(), split.train.y)


def test_walk_forward_windows_purged_and_tiled():
    ws = walk_forward_windows(300, train=100, valid=20, test=30, purge=5, embargo=2)
    assert len(ws) >= 4
    for w in ws:
        assert w.valid[0] - w.train[1] - 1 == 7 and w.test[0] - w.valid[1] - 1 == 7
    tests = [w.test for w in ws]
    assert all(b[0] == a[1] + 1 for a, b in itertools.pairwise(tests))
    exp = walk_forward_windows(300, train=100, test=30, purge=5, mode="expanding")
    assert all(w.train[0] == 0 for w in exp)
    with pytest.raises(LeakageError):
        walk_forward_windows(300, train=100, test=30, step=10)
    with pytest.raises(ParameterError, match="no walk-forward window"):
        walk_forward_windows(50, train=100, test=30)
