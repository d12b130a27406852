"""Honesty check on the real A-share 500 set: XGBoost on Alpha158 features vs shuffled labels.

A model that learned something real must beat the same model trained on labels shuffled
across rows (which destroys any feature-label link) by a clear margin out of sample. Both
Rank ICs and their t-stats are printed (run with ``-s`` to see them). Measured when written
(134 symbols, 2016-2019, 29 features): real Rank IC 0.086 (t 13.2), shuffled 0.02-0.03.
The shuffled control is not exactly 0: its t-stat is inflated by the persistence of the
factor returns it happens to load on, which is why the bar is a margin, not "t < 2".
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
from realdata import load_subset

from qilin.factors.alpha158 import alpha158_features
from qilin.factors.calculator import FactorCalculator
from qilin.ml import Dataset, XGBoostModel

FAMILIES = ["ROC", "STD", "MA", "MAX", "MIN", "RSV", "CORR", "VSTD"]


def _model():
    return XGBoostModel(n_estimators=200, max_depth=4, learning_rate=0.05,
                        early_stopping_rounds=20, n_jobs=1, seed=0)


@pytest.mark.slow
def test_real_model_beats_shuffled_labels(ashare_path):
    symbols = sorted(pd.read_parquet(ashare_path, columns=["symbol"])["symbol"].unique())
    panel = load_subset(ashare_path, symbols[::3][:160], "2016-01-01", "2019-12-31")
    feats = dict(alpha158_features(windows=(5, 20), include=FAMILIES))
    f = FactorCalculator(feats, backend="cpu", progress=False).compute(panel.adjusted())
    ds = Dataset(f, panel, horizon=1, label_norm="zscore")
    n = len(ds.dates)
    sp = ds.split(train=(0, 499), valid=(501, 620), test=(622, n - 1))
    real = _model().fit(sp.train, valid=sp.valid)
    _, m_real = ds.evaluate(sp.test, real.predict(sp.test))
    shuffled = []
    for seed in range(3):
        train = copy.copy(sp.train)
        train.y = np.random.default_rng(seed).permutation(sp.train.y)
        m = _model().fit(train, valid=sp.valid)
        shuffled.append(ds.evaluate(sp.test, m.predict(sp.test))[1])
    print(f"\nreal:     Rank IC {m_real['rank_ic']:.4f} (t {m_real['rank_ic_t']:.2f}), "
          f"IC {m_real['ic']:.4f} (t {m_real['ic_t']:.2f}), {m_real['n_dates']} test dates")
    for i, s in enumerate(shuffled):
        print(f"shuffled {i}: Rank IC {s['rank_ic']:.4f} (t {s['rank_ic_t']:.2f}), "
              f"IC {s['ic']:.4f} (t {s['ic_t']:.2f})")
    best_control = max(s["rank_ic"] for s in shuffled)
    assert m_real["rank_ic"] > best_control + 0.03
    assert m_real["rank_ic_t"] > 2 * max(abs(s["rank_ic_t"]) for s in shuffled)
    assert m_real["rank_ic_t"] > 5
