"""The real data sets in ../shared/data load, validate and become Panels (skipped when absent)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from qilin.data.boards import limit_pct_matrix, limit_prices
from qilin.data.loader import load_bars, load_panel
from qilin.data.validation import ValidationReport, validate_bars
from qilin.errors import ValidationError


def _where(rep: ValidationReport, check: str) -> set[tuple[str, str]]:
    f = rep.findings[rep.findings["check"] == check]
    return set(zip(f["symbol"], f["date"].dt.strftime("%Y-%m-%d"), strict=True))


@pytest.fixture(scope="module")
def sp500(sp500_path):
    return load_panel(sp500_path, backend="cpu", validate="drop", market="us",
                      return_report=True)


def test_sp500_shape_and_known_issues_by_name(sp500) -> None:
    panel, rep = sp500
    assert panel.shape == (1259, 505)
    assert rep.n_rows_in == 619_040
    counts = rep.counts()
    assert counts["nan_price"] == 27, "the README's 27 null open/high/low values"
    assert _where(rep, "zero_volume") == {("DHR", "2016-01-12"), ("FTV", "2016-07-01"),
                                          ("O", "2016-01-12"), ("UA", "2016-04-07")}
    assert ("LNT", "2016-05-19") in _where(rep, "close_outside_range")
    assert ("LNT", "2016-05-19") in _where(rep, "jump_reversal")
    assert {("DISCA", "2014-08-07"), ("DISCK", "2014-08-07")} <= _where(rep, "split_jump")
    # the bad LNT tick is gone from the Panel; its neighbours are still there
    r, c = panel.dates.get_loc(pd.Timestamp("2016-05-19")), panel.symbols.get_loc("LNT")
    assert not panel.valid[r, c] and panel.valid[r - 1, c] and panel.valid[r + 1, c]
    # spin-offs (EBAY/PYPL 2015-07-20) are large moves, not data errors
    assert ("EBAY", "2015-07-20") in _where(rep, "large_jump")


def test_sp500_raise_policy_raises_with_the_report(sp500_path) -> None:
    with pytest.raises(ValidationError) as info:
        load_panel(sp500_path, backend="cpu", validate="raise")
    assert info.value.report.counts()["nan_price"] == 27
    assert "us_sp500_2013_2018.parquet" in str(info.value)


def test_sp500_dirty_findings_not_a_crash(sp500_dirty_path) -> None:
    bars = load_bars(sp500_dirty_path)
    out, rep = validate_bars(bars, policy="repair", market="us", source=str(sp500_dirty_path))
    counts = rep.counts()
    assert counts["nan_price"] > 100 and counts["nan_volume"] > 100
    assert counts["high_below_low"] >= 1
    assert counts["open_outside_range"] + counts["close_outside_range"] > 20
    jumps = rep.findings[rep.findings["check"].isin(["jump_reversal", "split_jump",
                                                     "large_jump"])]
    assert {"HPQ", "HLT"} <= set(jumps["symbol"])
    assert len(jumps[(jumps["symbol"] == "HLT") & (jumps["check"] == "jump_reversal")]) >= 4
    assert len(jumps[(jumps["symbol"] == "HPQ") & (jumps["check"] == "jump_reversal")]) >= 2
    assert ("HLT", "2016-12-13") in _where(rep, "high_below_low")
    # the repaired bars are OHLC-consistent and become a Panel
    assert ((out["low"] <= out[["open", "close"]].min(axis=1))
            & (out["high"] >= out[["open", "close"]].max(axis=1))).all()
    from qilin.data.panel import Panel

    panel = Panel.from_long(out)
    assert panel.shape[1] == 503


def test_ashare_loads_clean_with_limits_and_adjusts(ashare_path) -> None:
    panel, rep = load_panel(ashare_path, backend="cpu", validate="raise", market="cn",
                            return_report=True)
    assert panel.shape == (1461, 506)
    assert not rep.has_errors
    assert "limit_breach" not in rep.counts() and "preclose_mismatch" not in rep.counts()
    assert set(panel.info["board"]) == {"main", "chinext", "star", "bj"}
    assert panel.st.sum() > 1000 and panel.suspended.sum() > 1000
    # the daily limit from preclose holds on every bar after the first days of listing
    pct = limit_pct_matrix(panel.symbols, panel.dates, is_st=panel.st)
    up, down = limit_prices(panel["preclose"], pct)
    seq = np.cumsum(panel.valid, axis=0)
    check = panel.valid & (seq > 5)
    assert (panel["close"][check] <= up[check] + 1e-9).all()
    assert (panel["close"][check] >= down[check] - 1e-9).all()
    assert (panel["close"][check] == up[check]).sum() > 1000, "limit-up closes exist"
    # back-adjusted via adj_factor: adjusted close moves exactly by close / preclose
    adj = panel.adjusted()
    both = panel.valid[1:] & panel.valid[:-1]
    ratio_adj = adj["close"][1:] / adj["close"][:-1]
    ratio_raw = panel["close"][1:] / panel["preclose"][1:]
    np.testing.assert_allclose(ratio_adj[both], ratio_raw[both], rtol=1e-9)
    j = panel.symbols.get_loc("600519.SH")
    assert adj["close"][-1, j] > panel["close"][-1, j]  # dividends accumulate in the factor


def test_sse_index_single_series(sse_index_path) -> None:
    panel = load_panel(sse_index_path, backend="cpu", validate="raise")
    assert panel.shape == (3332, 1) and list(panel.symbols) == ["000001.SH"]
