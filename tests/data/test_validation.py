"""validate_bars: every check on hand-built bars, the three policies, and the report."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qilin.data.synthetic import synthetic_bars
from qilin.data.validation import CHECKS, ValidationReport, validate_bars
from qilin.errors import DataError, ValidationError


def bars_for(symbol: str, closes: list[float], start: str = "2024-01-02",
             **extra: list[float]) -> pd.DataFrame:
    """Consistent bars around the given closes (open = close, high/low +-1%)."""
    c = np.asarray(closes, dtype=float)
    df = pd.DataFrame({
        "date": pd.bdate_range(start, periods=len(c)), "symbol": symbol,
        "open": c, "high": c * 1.01, "low": c * 0.99, "close": c,
        "volume": np.full(len(c), 1000.0)})
    for k, v in extra.items():
        df[k] = v
    return df


def at(df: pd.DataFrame, symbol: str, i: int) -> int:
    """Row label of the i-th bar of a symbol."""
    return df.index[df["symbol"] == symbol][i]


def test_clean_synthetic_bars_pass_untouched() -> None:
    bars = synthetic_bars(n_symbols=40, n_days=120, seed=3)
    out, rep = validate_bars(bars, policy="raise", market="cn")
    assert rep.ok and not rep.has_errors, rep.summary()
    assert rep.changes.empty
    pd.testing.assert_frame_equal(out, bars, check_dtype=False)
    assert "no findings" in rep.summary()


def test_each_value_check_is_found_where_it_is() -> None:
    df = pd.concat([bars_for("A", [10, 10, 10, 10]), bars_for("B", [20, 20, 20, 20])],
                   ignore_index=True)
    df.loc[at(df, "A", 1), "open"] = np.nan
    df.loc[at(df, "A", 2), "low"] = -1.0
    df.loc[at(df, "A", 3), "volume"] = np.inf
    df.loc[at(df, "B", 0), "volume"] = -5.0
    df.loc[at(df, "B", 1), "volume"] = 0.0
    df.loc[at(df, "B", 2), ["high", "low"]] = [19.0, 21.0]
    df.loc[at(df, "B", 3), "close"] = 25.0
    _, rep = validate_bars(df, policy="drop")
    f = rep.findings.set_index("check")
    expect = {
        "nan_price": ("A", "2024-01-03", "open"),
        "nonpositive_price": ("A", "2024-01-04", "low"),
        "nan_volume": ("A", "2024-01-05", "volume"),
        "negative_volume": ("B", "2024-01-02", "volume"),
        "zero_volume": ("B", "2024-01-03", "volume"),
        "high_below_low": ("B", "2024-01-04", "high"),
        "close_outside_range": ("B", "2024-01-05", "close"),
    }
    for check, (sym, date, column) in expect.items():
        row = f.loc[check]
        assert (row["symbol"], row["date"], row["column"]) == (sym, pd.Timestamp(date), column), \
            check
        assert row["severity"] == CHECKS[check][0]
    assert f.loc["close_outside_range", "detail"] == "close 25 > high 20.2"
    # B's high<low row is not also reported as open/close outside its (empty) range
    assert rep.counts()["high_below_low"] == 1
    # drop removes exactly the rows with errors; the zero-volume warning row stays
    assert rep.n_rows_out == 8 - 6
    assert set(rep.changes["action"]) == {"drop_row"}
    dropped = rep.changes.set_index("row")["reason"]
    assert dropped[at(df, "B", 2)] == "high_below_low"


def test_bad_dates_symbols_and_values_are_reported_by_row() -> None:
    df = bars_for("A", [10, 10, 10, 10])
    df["date"] = ["2024-01-02", "2024-13-45", "2024-01-04", "2024-01-05"]
    df["close"] = df["close"].astype(object)
    df.loc[2, "close"] = "abc"
    df.loc[3, "symbol"] = None
    out, rep = validate_bars(df, policy="drop", source="t.csv")
    c = rep.counts()
    assert c["bad_date"] == 1 and c["bad_value"] == 1 and c["missing_symbol"] == 1
    f = rep.findings.set_index("check")
    assert f.loc["bad_date", "value"] == "2024-13-45" and f.loc["bad_date", "row"] == 1
    assert f.loc["bad_value", "detail"] == "close 'abc' is not a number"
    assert f.loc["bad_value", "row"] == 2
    assert len(out) == 1 and out["date"].iloc[0] == pd.Timestamp("2024-01-02")
    conv = rep.changes[rep.changes["action"] == "convert_dtype"]
    assert set(conv["column"]) == {"date", "close"}


def test_missing_column_raises_under_every_policy() -> None:
    df = bars_for("A", [1, 2]).drop(columns=["volume"])
    for policy in ("raise", "drop", "repair"):
        with pytest.raises(ValidationError, match="volume") as info:
            validate_bars(df, policy=policy, source="x.parquet")
        rep = info.value.report
        assert isinstance(rep, ValidationReport)
        assert rep.counts().to_dict() == {"missing_column": 1}
        assert "x.parquet" in str(info.value)


def test_raise_policy_names_check_symbol_and_date() -> None:
    df = bars_for("AAA", [10, 10, 10])
    df.loc[1, "close"] = 11.0
    with pytest.raises(ValidationError) as info:
        validate_bars(df, policy="raise", source="bars.csv")
    msg = str(info.value)
    assert "bars.csv" in msg and "close_outside_range" in msg and "AAA 2024-01-03" in msg
    assert info.value.report.counts().to_dict() == {"close_outside_range": 1}
    # warnings alone do not raise
    df2 = bars_for("AAA", [10, 10, 10])
    df2.loc[1, "volume"] = 0.0
    out, rep = validate_bars(df2, policy="raise")
    assert not rep.ok and not rep.has_errors and len(out) == 3


def test_duplicates_keep_last_and_unsorted_is_sorted_and_recorded() -> None:
    df = pd.concat([bars_for("B", [5, 5]), bars_for("A", [10, 10, 10])], ignore_index=True)
    dup = df.iloc[[3]].copy()
    dup[["close", "high"]] = [10.05, 10.1]
    df = pd.concat([df, dup], ignore_index=True)  # A 2024-01-03 twice, the later wins
    out, rep = validate_bars(df, policy="repair")
    assert rep.counts().to_dict() == {"duplicate_row": 1, "unsorted": 1}
    f = rep.findings.set_index("check")
    assert f.loc["duplicate_row", "row"] == 3
    assert list(out["symbol"]) == ["A", "A", "A", "B", "B"]
    assert out.loc[1, "close"] == 10.05
    acts = rep.changes["action"].value_counts().to_dict()
    assert acts == {"sort": 1, "drop_row": 1, "dedupe": 1}
    with pytest.raises(ValidationError, match="duplicate_row"):
        validate_bars(df, policy="raise")


def test_repair_widens_or_clips_and_records_each_cell() -> None:
    df = bars_for("A", [10, 10, 10])
    df.loc[1, ["open", "high", "low", "close"]] = [10.0, 10.1, 9.9, 10.3]  # close > high
    df.loc[2, ["open", "high", "low", "close"]] = [10.0, 9.8, 10.2, 10.0]  # high < low
    out, rep = validate_bars(df, policy="repair")
    assert out.loc[1, "high"] == 10.3 and out.loc[1, "close"] == 10.3
    assert (out.loc[2, "high"], out.loc[2, "low"]) == (10.2, 9.8)
    sv = rep.changes[rep.changes["action"] == "set_value"]
    assert len(sv) == 3
    assert sv.set_index(["row", "column"]).loc[(1, "high"), ["old", "new"]].tolist() == [10.1, 10.3]

    out, rep = validate_bars(df, policy="repair", ohlc_fix="clip")
    assert out.loc[1, "close"] == 10.1 and out.loc[1, "high"] == 10.1
    assert (out.loc[2, "high"], out.loc[2, "low"]) == (10.2, 9.8)
    sv = rep.changes[rep.changes["action"] == "set_value"]
    assert set(zip(sv["row"], sv["column"], strict=True)) == {(1, "close"), (2, "high"),
                                                             (2, "low")}
    assert ((out["low"] <= out["close"]) & (out["close"] <= out["high"])).all()


def test_repair_drops_what_it_cannot_fix() -> None:
    df = bars_for("A", [10, 10, 10])
    df.loc[1, "close"] = np.nan
    out, rep = validate_bars(df, policy="repair")
    assert len(out) == 2
    ch = rep.changes
    assert ch["action"].tolist() == ["drop_row"] and ch["reason"].tolist() == ["nan_price"]


def test_decimal_shift_reversal_is_an_error_and_dropped() -> None:
    closes = [10.0, 10.1, 1.01, 10.2, 10.3, 10.2]
    df = bars_for("A", closes)
    out, rep = validate_bars(df, policy="drop")
    f = rep.findings
    assert f["check"].tolist() == ["jump_reversal"]
    assert f["date"].iloc[0] == df["date"].iloc[2]
    assert 1.01 not in out["close"].to_numpy() and len(out) == 5
    # a level shift that lasts two bars, then returns, flags both bars
    df2 = bars_for("A", [30.0, 30.0, 12.0, 12.1, 30.2, 30.0])
    _, rep2 = validate_bars(df2, policy="drop")
    assert rep2.findings["date"].tolist() == list(df2["date"].iloc[2:4])


def test_split_like_jump_and_adj_factor() -> None:
    df = bars_for("A", [20.0, 20.2, 10.1, 10.2])
    _, rep = validate_bars(df, policy="raise")
    assert rep.counts().to_dict() == {"split_jump": 1}
    assert rep.findings["value"].iloc[0] == pytest.approx(0.5)
    # with the split in adj_factor, the adjusted series is smooth: nothing to report
    df["adj_factor"] = [1.0, 1.0, 2.0, 2.0]
    _, rep = validate_bars(df, policy="raise")
    assert rep.ok
    # a big move that is not a split ratio and does not reverse is a large_jump warning
    _, rep = validate_bars(bars_for("A", [10.0, 10.0, 16.0, 16.2]), policy="raise")
    assert rep.counts().to_dict() == {"large_jump": 1}
    _, rep = validate_bars(bars_for("A", [10.0, 10.0, 16.0, 16.2]), jump_threshold=0.5)
    assert rep.ok


def test_cn_limit_breach_and_preclose_mismatch() -> None:
    n = 8
    closes = [10.0] * n
    main = bars_for("600000.SH", closes, preclose=[10.0] * n, adj_factor=[1.0] * n,
                    name=["Pufa Bank"] * n)
    main.loc[6, ["close", "high"]] = [11.5, 11.5]           # +15% on a 10% board
    main.loc[7, ["preclose", "open", "high", "low", "close"]] = [11.5, 11.5, 11.6, 11.4, 11.5]
    st = bars_for("600001.SH", closes, preclose=[10.0] * n, adj_factor=[1.0] * n,
                  name=["ST Hanshang"] * n)
    st.loc[6, ["close", "high"]] = [10.6, 10.6]             # +6% on a 5% ST limit
    st.loc[7, ["preclose", "open", "high", "low", "close"]] = [10.6, 10.6, 10.7, 10.5, 10.6]
    cy = bars_for("300001.SZ", closes, start="2020-08-12", preclose=[10.0] * n,
                  adj_factor=[1.0] * n, name=["Tewei"] * n)
    cy.loc[6, ["close", "high"]] = [11.5, 11.5]             # 2020-08-20: still 10%
    cy.loc[7, ["preclose", "close", "high"]] = [11.5, 13.5, 13.5]  # 2020-08-21: +17% breach
    late = bars_for("300002.SZ", closes, start="2020-09-01", preclose=[10.0] * n,
                    adj_factor=[1.0] * n, name=["Shenzhou"] * n)
    late.loc[6, ["close", "high"]] = [11.9, 11.9]           # +19% after the reform: fine
    late.loc[7, "preclose"] = 11.0                          # mismatch with 11.9
    early = bars_for("688001.SH", closes, preclose=[10.0] * n, adj_factor=[1.0] * n,
                     name=["Huaxing"] * n)
    early.loc[1, ["close", "high"]] = [13.0, 13.0]          # IPO days: no limit
    early.loc[2, "preclose"] = 13.0
    df = pd.concat([main, st, cy, late, early], ignore_index=True)
    _, rep = validate_bars(df, policy="raise", market="cn")
    lb = rep.findings[rep.findings["check"] == "limit_breach"]
    got = set(zip(lb["symbol"], lb["date"].dt.strftime("%Y-%m-%d"), strict=True))
    assert got == {("600000.SH", "2024-01-10"), ("600001.SH", "2024-01-10"),
                   ("300001.SZ", "2020-08-20"), ("300001.SZ", "2020-08-21")}, got
    pm = rep.findings[rep.findings["check"] == "preclose_mismatch"]
    assert pm[["symbol", "value"]].values.tolist() == [["300002.SZ", 11.0]]
    # the US profile has no such checks
    _, rep_us = validate_bars(df, policy="raise", market="us")
    assert "limit_breach" not in rep_us.counts()


def test_report_dict_json_and_summary(tmp_path) -> None:
    df = bars_for("A", [10, 10, 10])
    df.loc[1, "volume"] = 0
    df.loc[2, "close"] = 10.5
    _, rep = validate_bars(df, policy="repair", source="demo.parquet")
    d = rep.to_dict()
    assert d["counts"] == {"close_outside_range": 1, "zero_volume": 1}
    assert d["n_rows_in"] == 3 and d["n_rows_out"] == 3 and d["has_errors"] is True
    assert d["findings"][0]["date"] == "2024-01-04"
    path = tmp_path / "sub" / "report.json"
    rep.to_json(path)
    loaded = json.loads(path.read_text())
    assert loaded == json.loads(rep.to_json())
    assert [p.name for p in path.parent.iterdir()] == ["report.json"]
    text = rep.summary()
    assert "demo.parquet" in text and "[error] close_outside_range: 1" in text
    assert "A 2024-01-04: close 10.5 > high 10.1" in text
    assert len(rep.for_symbol("A")) == 2


def test_bad_parameters() -> None:
    df = bars_for("A", [1, 2])
    with pytest.raises(DataError, match="policy"):
        validate_bars(df, policy="fix")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="market"):
        validate_bars(df, market="jp")
    with pytest.raises(DataError, match="ohlc_fix"):
        validate_bars(df, ohlc_fix="nudge")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="DataFrame"):
        validate_bars([1, 2])  # type: ignore[arg-type]


@settings(max_examples=25, deadline=None)
@given(
    data=st.lists(
        st.tuples(st.floats(0.5, 50), st.floats(0.5, 50), st.floats(0.5, 50),
                  st.floats(0.5, 50), st.sampled_from([0.0, 10.0, 500.0])),
        min_size=1, max_size=25),
    how=st.sampled_from(["widen", "clip"]),
)
def test_repair_always_yields_consistent_bars_and_records_every_cell(data, how) -> None:
    o, h, l, c, v = (np.array(x) for x in zip(*data, strict=True))
    df = pd.DataFrame({"date": pd.bdate_range("2024-01-01", periods=len(o)), "symbol": "X",
                       "open": o, "high": h, "low": l, "close": c, "volume": v})
    out, rep = validate_bars(df, policy="repair", ohlc_fix=how, jump_threshold=10.0)
    assert ((out["low"] <= out["open"]) & (out["open"] <= out["high"])).all()
    assert ((out["low"] <= out["close"]) & (out["close"] <= out["high"])).all()
    # every cell that differs from the input is in report.changes, with old and new values
    merged = out.merge(df, on=["date", "symbol"], suffixes=("", "_in"))
    recorded = {(r.date, r.column): (r.old, r.new) for r in
                rep.changes[rep.changes["action"] == "set_value"].itertuples()}
    for col in ("open", "high", "low", "close"):
        diff = merged[merged[col] != merged[f"{col}_in"]]
        for r in diff.itertuples():
            assert recorded[(r.date, col)] == (getattr(r, f"{col}_in"), getattr(r, col))
    assert len(recorded) == sum((merged[c] != merged[f"{c}_in"]).sum()
                                for c in ("open", "high", "low", "close"))
    # drop keeps exactly the rows without error findings
    kept, rep_drop = validate_bars(df, policy="drop", jump_threshold=10.0)
    bad_rows = set(rep_drop.errors["row"])
    assert len(kept) == len(df) - len(bad_rows)
