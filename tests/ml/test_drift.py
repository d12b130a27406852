"""Drift: PSI/KS per feature, dataset flag, prediction drift, live Rank IC, alerts, metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from qilin.errors import DataError, ParameterError
from qilin.ml.drift import DriftMetrics, DriftMonitor, DriftThresholds, live_rank_ic, psi, publish
from qilin.monitoring.alerts import AlertManager, CallbackHandler
from qilin.monitoring.prometheus import QilinMetrics

RNG = np.random.default_rng(3)
REF = pd.DataFrame(RNG.normal(size=(4000, 8)), columns=[f"x{i}" for i in range(8)])


def test_psi_levels_match_practice():
    a = RNG.normal(size=50000)
    assert psi(a, RNG.normal(size=50000)) < 0.01
    assert 0.1 <= psi(a, RNG.normal(0.35, 1, 50000)) < 0.2  # moderate shift: warn
    assert psi(a, RNG.normal(1.0, 1, 50000)) > 0.2
    assert np.isnan(psi([np.nan], [1.0]))


def test_feature_table_flag_and_configurable_share():
    new = REF.copy() + RNG.normal(0, 0.01, REF.shape)
    new["x0"] += 1.0
    new["x1"] *= 3.0
    rep = DriftMonitor(REF, model="m").check(new)
    assert rep.drifted == ["x0", "x1"]
    assert rep.table.loc["x0", "ks_pvalue"] < 1e-10 and rep.table.loc["x0", "ks_drift"]
    assert rep.table.loc["x5", "status"] == "ok"
    assert rep.share == pytest.approx(0.25) and rep.flag == "alert"
    lenient = DriftMonitor(REF, thresholds=DriftThresholds(share_warn=0.3, share_alert=0.5))
    assert lenient.check(new).flag == "ok"
    with pytest.raises(DataError, match="missing"):
        DriftMonitor(REF).check(new.drop(columns=["x3"]))
    with pytest.raises(ParameterError):
        DriftThresholds(psi_warn=0.3, psi_alert=0.2)


def test_prediction_drift_and_live_rank_ic():
    ref_pred = RNG.normal(size=4000)
    mon = DriftMonitor(REF, reference_predictions=ref_pred, model="m")
    fwd = RNG.normal(size=(30, 50))
    scores = fwd + RNG.normal(0, 3, fwd.shape)
    rep = mon.check(REF, predictions=ref_pred + 1.5, scores=scores, forward=fwd)
    assert rep.prediction_psi > 0.2
    assert rep.flag == "ok"
    assert rep.live_rank_ic == pytest.approx(live_rank_ic(scores, fwd)["rank_ic"])
    assert 0.15 < rep.live_rank_ic < 0.5


def test_alerts_through_alert_manager_and_bounded_metrics():
    new = REF.copy()
    for c in ("x0", "x1", "x2"):
        new[c] += 2.0
    got = []
    qm = QilinMetrics()
    mgr = AlertManager([CallbackHandler(got.append, name="cb")], cooldown_s=0, metrics=qm)
    metrics = DriftMetrics(qm.registry, max_models=2)
    rep = DriftMonitor(REF, model="alpha_xgb", reference_predictions=np.zeros(10)).check(new)
    try:
        n = publish(rep, mgr, metrics)
    finally:
        mgr.close()
    assert n == 4
    assert {a.rule for a in got} == {"feature_drift", "feature_psi"}
    assert next(a for a in got if a.rule == "feature_drift").severity == "critical"
    val = qm.registry.get_sample_value
    assert val("qilin_model_drifted_features", {"model": "alpha_xgb"}) == 3
    assert val("qilin_model_drift_flag", {"model": "alpha_xgb"}) == 2
    assert val("qilin_model_feature_psi_max", {"model": "alpha_xgb"}) > 1
    for name in ("a", "b", "c", "d"):
        metrics.prediction_latency(name, 0.01)
    labels = {s.labels["model"] for m in qm.registry.collect() for s in m.samples
              if s.name == "qilin_model_prediction_duration_seconds_count"}
    assert labels == {"a", "other"}  # two models max (alpha_xgb, a): the rest share "other"
    assert not any("x0" in str(s.labels) for m in qm.registry.collect() for s in m.samples)
