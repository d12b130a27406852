"""PriceMonitor: hand-computed rules, run-time rule edits, A-share limits, stream == batch."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pandas as pd
import pytest

from qilin.errors import MonitoringError
from qilin.monitoring.price_monitor import PriceMonitor, PriceRule


def test_thresholds_and_moves_by_hand():
    mon = PriceMonitor(["A", "B", "C"], rules=[PriceRule("A", above=11.0, below=9.0),
                                               PriceRule("C", move_pct=0.02)],
                       default_move_pct=0.10)
    assert not mon.limits                                    # not A-share codes
    s0 = mon.update([10.0, 20.0, 30.0])
    assert all(not m.any() for m in s0.fired.values())       # no previous close yet
    s1 = mon.update([11.5, 22.5, 30.5])
    assert s1.fired["price_above"].tolist() == [True, False, False]
    assert s1.fired["price_below"].tolist() == [False, False, False]
    np.testing.assert_allclose(s1.values["pct_move"], [0.15, 0.125, 0.5 / 30])
    assert s1.fired["pct_move"].tolist() == [True, True, False]   # C: 1.67% < 2%
    s2 = mon.update([8.0, np.nan, 31.5])                     # B missing
    assert s2.fired["price_below"].tolist() == [True, False, False]
    assert s2.fired["pct_move"].tolist() == [True, False, True]   # C: 3.3% > 2%
    s3 = mon.update([8.0, 22.5, 31.5])                       # B vs its last close 22.5
    assert s3.values["pct_move"][1] == 0.0
    assert s3.thresholds["pct_move"].tolist() == [0.10, 0.10, 0.02]


def test_rules_added_and_removed_at_run_time():
    mon = PriceMonitor(["A", "B"], limits=False)
    mon.update([10.0, 10.0])
    assert not mon.update([12.0, 10.0]).fired["price_above"].any()
    mon.add_rule(PriceRule("A", above=11.0))
    mon.add_rule(PriceRule("A", below=5.0))                  # keeps the 'above' rule
    assert mon.rules == [PriceRule("A", above=11.0, below=5.0)]
    before = mon.update([12.0, 10.0])
    assert before.fired["price_above"].tolist() == [True, False]
    mon.remove_rule("A", "above")
    assert before.thresholds["price_above"][0] == 11.0     # earlier results keep theirs
    assert not mon.update([12.0, 10.0]).fired["price_above"].any()
    mon.remove_rule("A")
    assert mon.rules == []
    with pytest.raises(MonitoringError, match="unknown symbol 'Z'"):
        mon.add_rule(PriceRule("Z", above=1.0))
    with pytest.raises(MonitoringError, match="unknown price rule kind"):
        mon.remove_rule("A", "sideways")
    with pytest.raises(MonitoringError, match="move_pct must be > 0"):
        PriceRule("A", move_pct=-0.1)
    with pytest.raises(MonitoringError, match="expected 2 prices"):
        mon.update([1.0])


def test_ashare_limits_by_hand():
    syms = ["600000.SH", "300001.SZ", "688001.SH", "830001.BJ", "000002.SZ"]
    mon = PriceMonitor(syms)
    assert mon.limits
    pre = np.array([10.00, 10.00, 10.00, 10.00, 10.00])
    # main +10% (limit), ChiNext +10% before the 2020-08-24 reform (limit), STAR +20% (limit),
    # Beijing +29% (not the 30% limit), an ST main-board name down 5% (its limit).
    px = np.array([11.00, 11.00, 12.00, 12.90, 9.50])
    st = np.array([False, False, False, False, True])
    s = mon.update(px, date="2020-08-21", prev_close=pre, st=st)
    assert s.fired["limit_up"].tolist() == [True, True, True, False, False]
    assert s.fired["limit_down"].tolist() == [False, False, False, False, True]
    np.testing.assert_allclose(s.thresholds["limit_up"], [11.0, 11.0, 12.0, 13.0, 10.5])
    after = mon.update(px, date="2020-08-24", prev_close=pre, st=st)
    assert after.fired["limit_up"].tolist() == [True, False, True, False, False]  # ChiNext 20%
    batch = mon.detect(np.vstack([px, px]), dates=pd.to_datetime(["2020-08-21", "2020-08-24"]),
                       prev_close=np.vstack([pre, pre]), st=np.vstack([st, st]))
    assert batch.fired["limit_up"].tolist() == [s.fired["limit_up"].tolist(),
                                                after.fired["limit_up"].tolist()]
    with pytest.raises(MonitoringError, match="needs the date"):
        mon.update(px)


def _limit_up(preclose: float, pct: str) -> float:
    """Exchange rule in exact decimal arithmetic: preclose * (1 + pct), half-up to the cent."""
    exact = Decimal(str(float(preclose))) * (1 + Decimal(pct))
    return float(exact.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def test_real_ashare_limit_days_match_exchange_rule(ashare_panel):
    p = ashare_panel
    batch = PriceMonitor(p.symbols).detect(p)
    up, down = batch.fired["limit_up"], batch.fired["limit_down"]
    assert up.sum() > 50 and down.sum() > 10
    close, pre, st = p["close"], p["preclose"], p.st
    main = np.array([s[:3] in ("600", "601", "603", "605", "000", "001", "002")
                     for s in p.symbols])
    # Independent check on main-board names: a close equal to preclose * 1.1 (or 0.95 for ST)
    # rounded half-up to the cent is a limit-up day, and vice versa.
    checked = 0
    for t, j in zip(*np.nonzero(np.isfinite(close) & np.isfinite(pre) & main[None, :]),
                    strict=True):
        at_limit = close[t, j] >= _limit_up(pre[t, j], "0.05" if st[t, j] else "0.10") - 1e-9
        assert up[t, j] == at_limit, (p.dates[t], p.symbols[j])
        checked += 1
    assert checked > 5000
    # ChiNext names after 2020-08-24 need +20%: no limit-up there below +19.9%.
    chinext = np.array([s.startswith("300") for s in p.symbols])
    after = np.asarray(p.dates >= pd.Timestamp("2020-08-24"))
    with np.errstate(invalid="ignore"):
        move = close / pre - 1
    assert not (up & (move < 0.199) & chinext[None, :] & after[:, None]).any()
    assert (up & chinext[None, :] & after[:, None]).any()


def test_streaming_equals_batch_on_real_ashare(ashare_panel):
    p = ashare_panel
    rules = [PriceRule(str(p.symbols[0]), above=float(np.nanmedian(p["close"][:, 0])))]
    batch = PriceMonitor(p.symbols, rules, default_move_pct=0.05).detect(p)
    stream = PriceMonitor(p.symbols, rules, default_move_pct=0.05)
    for t in range(p.shape[0]):
        s = stream.update(p["close"][t], date=p.dates[t], prev_close=p["preclose"][t],
                          st=p.st[t])
        for rule in s.fired:
            np.testing.assert_array_equal(s.fired[rule], batch.fired[rule][t], err_msg=rule)
            np.testing.assert_allclose(s.values[rule], batch.values[rule][t], equal_nan=True)
    assert batch.fired["price_above"].any() and batch.fired["pct_move"].any()
    ev = batch.events(p.dates, p.symbols)
    assert set(ev["rule"]) >= {"limit_up", "limit_down", "pct_move", "price_above"}
    assert len(ev) == batch.n_fired()


def test_streaming_equals_batch_without_preclose_on_sp500(sp500_panel):
    p = sp500_panel
    assert (~p.valid).any()                                  # real missing bars
    batch = PriceMonitor(p.symbols, default_move_pct=0.04).detect(p)
    assert "limit_up" not in batch.fired
    stream = PriceMonitor(p.symbols, default_move_pct=0.04)
    for t in range(p.shape[0]):
        s = stream.update(p["close"][t])
        np.testing.assert_array_equal(s.fired["pct_move"], batch.fired["pct_move"][t])
    # the reference close is the last valid close, carried over missing bars
    close = pd.DataFrame(p["close"])
    ref = close.ffill().shift(1)
    expect = (close / ref - 1).abs() > 0.04
    np.testing.assert_array_equal(batch.fired["pct_move"], expect.to_numpy())
