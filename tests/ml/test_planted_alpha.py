"""The synthetic market plants a known alpha; the model step recovers it (and finds ~0 without).

Tolerance: the model's out-of-sample Rank IC must lie within 35% of the planted IC (0.08):
the planted signal itself realises a Rank IC about 10% below its Pearson target (tick
rounding, price limits, jumps), and the model sees it among noisy features.
"""

from __future__ import annotations

import numpy as np
import pytest

from qilin.data.synthetic import PlantedAlpha, synthetic_bars, synthetic_market
from qilin.factors.calculator import FactorCalculator
from qilin.factors.evaluation import forward_returns, information_coefficient
from qilin.ml.dataset import Dataset
from qilin.ml.models import XGBoostModel

IC = 0.08
FACTORS = {"mom5": "close / ts_delay(close, 5) - 1",
           "rev1": "close / ts_delay(close, 1) - 1",
           "vol10": "ts_std(close / ts_delay(close, 1) - 1, 10)"}


def test_default_market_unchanged_and_alpha_exposed():
    plain = synthetic_market(30, 80, seed=9)
    assert plain.fingerprint() == synthetic_market(30, 80, seed=9, alpha=None).fingerprint()
    assert "alpha" not in plain.fields
    planted = synthetic_market(30, 80, seed=9, alpha=0.05)
    assert "alpha" in planted.fields
    # the signal only moves returns: everything before the first affected day is identical
    np.testing.assert_array_equal(planted["close"][0], plain["close"][0])
    assert "alpha" in synthetic_bars(5, 20, seed=1, alpha=0.05).columns
    assert "alpha" not in synthetic_bars(5, 20, seed=1).columns


def test_planted_ic_and_decay():
    pa = PlantedAlpha(ic=IC, half_life=3)
    p = synthetic_market(300, 400, seed=11, alpha=pa)
    a, close = p["alpha"], p.adjusted()["close"]
    r1 = forward_returns(close, (1,))[1]
    ic1 = np.nanmean(information_coefficient(a, r1, "spearman"))
    ic4 = np.nanmean(information_coefficient(a[:-3], r1[3:], "spearman"))
    assert 0.8 * IC < ic1 < 1.05 * IC
    assert ic4 == pytest.approx(0.9 * pa.expected_ic(4), abs=0.015)


def _oos_rank_ic(alpha):
    bars = synthetic_market(200, 500, seed=21, alpha=alpha)
    factors = dict(FACTORS)
    if alpha is not None:
        factors["alpha"] = "alpha"
    f = FactorCalculator(factors, backend="cpu", progress=False).compute(bars)
    ds = Dataset(f, bars, horizon=1, label_norm="zscore")
    sp = ds.split(train=(0, 279), valid=(281, 339), test=(341, 499))
    m = XGBoostModel(n_estimators=200, max_depth=3, learning_rate=0.05, early_stopping_rounds=20,
                     n_jobs=1, seed=0).fit(sp.train, valid=sp.valid)
    _, met = ds.evaluate(sp.test, m.predict(sp.test))
    return met


def test_model_recovers_planted_alpha():
    met = _oos_rank_ic(PlantedAlpha(ic=IC, half_life=5))
    assert abs(met["rank_ic"] - IC) < 0.35 * IC, met
    assert met["rank_ic_t"] > 5


def test_model_finds_nothing_when_nothing_planted():
    met = _oos_rank_ic(None)
    assert abs(met["rank_ic"]) < 0.02, met
    assert abs(met["rank_ic_t"]) < 3
