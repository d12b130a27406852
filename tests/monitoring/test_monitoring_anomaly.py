"""AnomalyDetector: batch against pandas rolling, streaming == batch on real data, drift."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from qilin.errors import MonitoringError
from qilin.monitoring.anomaly import AnomalyConfig, AnomalyDetector

CFG = AnomalyConfig(return_window=20, return_z=3.0, price_window=15, price_z=3.0,
                    vol_short=5, vol_long=40, vol_ratio=2.0, volume_window=10,
                    volume_ratio=3.0)


def _pandas_reference(close: np.ndarray, volume: np.ndarray, c: AnomalyConfig) -> dict:
    px = pd.DataFrame(close)
    vol = pd.DataFrame(volume)
    ret = px / px.shift(1) - 1
    rm = ret.rolling(c.return_window).mean().shift(1)
    rs = ret.rolling(c.return_window).std().shift(1)
    pm = px.rolling(c.price_window).mean().shift(1)
    ps = px.rolling(c.price_window).std().shift(1)
    return {
        "return_zscore": ((ret - rm) / rs).to_numpy(),
        "price_zscore": ((px - pm) / ps).to_numpy(),
        "volatility_spike": (ret.rolling(c.vol_short).std()
                             / ret.rolling(c.vol_long).std()).to_numpy(),
        "volume_spike": (vol / vol.rolling(c.volume_window).mean().shift(1)).to_numpy(),
    }


def test_hand_computed_zscore_and_ratios():
    close = np.array([[10.0], [11.0], [10.0], [11.0], [14.0]])
    volume = np.array([[100.0], [300.0], [200.0], [100.0], [900.0]])
    cfg = AnomalyConfig(return_window=2, return_z=1.0, price_window=3, price_z=1.0,
                        vol_short=2, vol_long=3, vol_ratio=1.0, volume_window=2,
                        volume_ratio=2.0)
    s = AnomalyDetector(cfg).detect(close, volume)
    r = [np.nan, 0.1, -1 / 11, 0.1, 3 / 11]
    # price z at t=4 against the previous 3 prices [11, 10, 11]: mean 32/3, sample std
    m, sd = 32 / 3, np.std([11.0, 10.0, 11.0], ddof=1)
    assert s.values["price_zscore"][4, 0] == pytest.approx((14 - m) / sd)
    # return z at t=4 against [r2, r3]
    m2, sd2 = np.mean(r[2:4]), np.std(r[2:4], ddof=1)
    assert s.values["return_zscore"][4, 0] == pytest.approx((r[4] - m2) / sd2)
    assert np.isnan(s.values["return_zscore"][2, 0])         # window [nan, r1] not full
    assert s.values["volume_spike"][4, 0] == pytest.approx(900 / 150)
    assert s.fired["volume_spike"][:, 0].tolist() == [False, False, False, False, True]
    assert s.values["volatility_spike"][4, 0] == pytest.approx(
        np.std(r[3:5], ddof=1) / np.std(r[2:5], ddof=1))


def test_batch_matches_pandas_rolling(sp500_panel):
    p = sp500_panel
    s = AnomalyDetector(CFG).detect(p)
    ref = _pandas_reference(p["close"], p["volume"], CFG)
    for rule, expect in ref.items():
        got = s.values[rule]
        np.testing.assert_allclose(got, expect, rtol=1e-6, atol=1e-9, equal_nan=True,
                                   err_msg=rule)
        assert s.fired[rule].sum() > 0, rule


def _assert_stream_equals_batch(close, volume, cfg, skip_first: int = 0) -> int:
    batch = AnomalyDetector(cfg).detect(close, volume)
    det = AnomalyDetector(cfg, n_symbols=close.shape[1])
    fired = 0
    for t in range(close.shape[0]):
        s = det.update(close[t], None if volume is None else volume[t])
        if t < skip_first:
            continue
        for rule in s.fired:
            np.testing.assert_allclose(s.values[rule], batch.values[rule][t], rtol=1e-9,
                                       atol=1e-12, equal_nan=True, err_msg=f"{rule} t={t}")
            np.testing.assert_array_equal(s.fired[rule], batch.fired[rule][t],
                                          err_msg=f"{rule} t={t}")
            fired += int(s.fired[rule].sum())
    return fired


def test_streaming_equals_batch_on_sp500(sp500_panel):
    p = sp500_panel
    assert _assert_stream_equals_batch(p["close"], p["volume"], CFG) > 100


def test_streaming_equals_batch_on_ashare_with_suspensions(ashare_panel):
    p = ashare_panel
    assert p.suspended.any()                                 # real suspended days (gaps)
    assert _assert_stream_equals_batch(p["close"], p["volume"], CFG) > 100


def test_long_stream_does_not_drift():
    rng = np.random.default_rng(7)
    T, N = 6000, 8
    close = 5000 * np.exp(np.cumsum(0.01 * rng.standard_normal((T, N)), axis=0))
    close[3000:3100, 2] = 4321.0                             # a flat stretch (zero spread)
    close[4000, 3] = np.nan                                  # a missing bar
    volume = rng.lognormal(10, 1, (T, N))
    cfg = AnomalyConfig(return_window=7, price_window=9, vol_short=3, vol_long=11,
                        volume_window=5)
    det = AnomalyDetector(cfg, n_symbols=N)
    nbytes = det.state_nbytes()
    batch = AnomalyDetector(cfg).detect(close, volume)
    for t in range(T):
        s = det.update(close[t], volume[t])
    assert det.state_nbytes() == nbytes                      # O(1) state per symbol
    for rule in s.fired:
        np.testing.assert_allclose(s.values[rule], batch.values[rule][-1], rtol=1e-9,
                                   equal_nan=True)
    assert np.isnan(batch.values["price_zscore"][3050, 2])   # flat window: no z-score
    assert np.isnan(batch.values["return_zscore"][4000:4009, 3]).all()


def test_tick_mode_skips_missing_symbols():
    rng = np.random.default_rng(3)
    T = 200
    a = 100 * np.exp(np.cumsum(0.01 * rng.standard_normal(T)))
    b = 50 * np.exp(np.cumsum(0.02 * rng.standard_normal(T)))
    b_present = rng.random(T) < 0.6
    ticks = np.column_stack([a, np.where(b_present, b, np.nan)])
    cfg = AnomalyConfig(return_window=5, price_window=5, vol_short=3, vol_long=8,
                        volume_window=4)
    det = AnomalyDetector(cfg, n_symbols=2, skip_missing=True)
    rows = [det.update(ticks[t]) for t in range(T)]
    # symbol B seen alone, without the gaps, must give the same values as its ticks
    compact = AnomalyDetector(cfg).detect(b[b_present][:, None])
    got = np.array([r.values["return_zscore"][1] for r, ok in zip(rows, b_present,
                                                                    strict=True) if ok])
    np.testing.assert_allclose(got, compact.values["return_zscore"][:, 0], rtol=1e-9,
                               equal_nan=True)
    assert np.isnan([r.values["return_zscore"][1] for r, ok in zip(rows, b_present,
                                                                     strict=True)
                     if not ok]).all()


def test_config_and_input_errors():
    with pytest.raises(MonitoringError, match="return_window must be an integer >= 2"):
        AnomalyConfig(return_window=1)
    with pytest.raises(MonitoringError, match=r"vol_short .* shorter"):
        AnomalyConfig(vol_short=10, vol_long=10)
    with pytest.raises(MonitoringError, match="unknown anomaly settings"):
        AnomalyConfig.from_dict({"zscore": 3})
    with pytest.raises(MonitoringError, match="reset"):
        AnomalyDetector().update(np.ones(3))
    with pytest.raises(MonitoringError, match="expected 3 prices"):
        AnomalyDetector(n_symbols=3).update(np.ones(2))
    with pytest.raises(MonitoringError, match="2-D"):
        AnomalyDetector().detect(np.ones(5))
