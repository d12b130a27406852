"""The Panel on hand-built long data: pivot, masks, selection, adjustment, returns, hashing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from qilin.data.panel import Panel
from qilin.errors import DataError

nan = np.nan


@pytest.fixture
def long() -> pd.DataFrame:
    """3 dates x 3 symbols; 600001.SH is suspended on day 2, 300001.SZ lists on day 2."""
    d = pd.to_datetime(["2024-01-02", "2024-01-03", "2024-01-04"])
    rows = [
        (d[0], "600000.SH", 10.0, 1000.0, 10100.0, 1.0, "Pufa"),
        (d[1], "600000.SH", 11.0, 1000.0, 11000.0, 1.0, "Pufa"),
        (d[2], "600000.SH", 6.0, 2000.0, 12000.0, 2.0, "Pufa"),  # 2-for-1 bonus on day 3
        (d[0], "600001.SH", 5.0, 100.0, 500.0, 1.0, "ST Hang"),
        (d[2], "600001.SH", 5.5, 100.0, 550.0, 1.0, "Hang"),
        (d[1], "300001.SZ", 20.0, 50.0, 1000.0, 1.0, "Tewei"),
        (d[2], "300001.SZ", 21.0, 50.0, 1050.0, 1.0, "Tewei"),
    ]
    df = pd.DataFrame(rows, columns=["date", "symbol", "close", "volume", "amount",
                                     "adj_factor", "name"])
    for c in ("open", "high", "low"):
        df[c] = df["close"]
    df["industry"] = ["Banks"] * 3 + ["Retail"] * 2 + ["Power"] * 2
    return df


def test_from_long_masks_and_info(long: pd.DataFrame) -> None:
    p = Panel.from_long(long)
    assert p.shape == (3, 3)
    assert list(p.symbols) == ["300001.SZ", "600000.SH", "600001.SH"]
    np.testing.assert_array_equal(p["close"], [[nan, 10, 5], [20, 11, nan], [21, 6, 5.5]])
    assert p.valid.tolist() == [[False, True, True], [True, True, False], [True, True, True]]
    # before listing is not a suspension; the gap inside 600001.SH's life is
    assert p.suspended.tolist() == [[False] * 3, [False, False, True], [False] * 3]
    assert p.st.tolist() == [[False, False, True], [False] * 3, [False] * 3]
    assert p.info.loc["600001.SH", "name"] == "Hang"  # the last observed name
    assert p.info["board"].tolist() == ["chinext", "main", "main"]
    assert p.info.loc["300001.SZ", "industry"] == "Power"
    np.testing.assert_allclose(p["vwap"][0, 1:], [10.1, 5.0])


def test_to_long_round_trip(long: pd.DataFrame) -> None:
    p = Panel.from_long(long)
    back = p.to_long(["close", "volume"])
    want = long.sort_values(["date", "symbol"])[["date", "symbol", "close", "volume"]]
    pd.testing.assert_frame_equal(back, want.reset_index(drop=True), check_dtype=False)
    assert len(p.to_long(["close"], dropna=False)) == 9


def test_returns_nan_after_gaps_and_adjusted(long: pd.DataFrame) -> None:
    p = Panel.from_long(long)
    r = p.returns()
    np.testing.assert_allclose(r[1:, 1], [0.1, 6 / 11 - 1])
    assert np.isnan(r[0]).all() and np.isnan(r[2, 2]) and np.isnan(r[1, 0])
    a = p.adjusted()
    np.testing.assert_allclose(a["close"][:, 1], [10, 11, 12])
    np.testing.assert_allclose(a["volume"][:, 1], [1000, 1000, 1000])
    np.testing.assert_allclose(a.returns()[2, 1], 12 / 11 - 1)
    np.testing.assert_array_equal(a["adj_factor"][:, 1], [1, 1, 1])
    assert np.isnan(a["adj_factor"][0, 0])
    no_factor = Panel.from_long(long.drop(columns="adj_factor"))
    assert no_factor.adjusted() is no_factor


def test_select_blocks_and_errors(long: pd.DataFrame) -> None:
    p = Panel.from_long(long)
    s = p.select(symbols=["600001.SH", "600000.SH"], start="2024-01-03", fields=["close"])
    assert list(s.symbols) == ["600001.SH", "600000.SH"] and s.shape == (2, 2)
    np.testing.assert_array_equal(s["close"], [[nan, 11], [5.5, 6]])
    assert s.suspended.tolist() == [[True, False], [False, False]]
    assert list(s.info.index) == ["600001.SH", "600000.SH"]
    blocks = list(p.symbol_blocks(2))
    assert [list(b.symbols) for b in blocks] == [["300001.SZ", "600000.SH"], ["600001.SH"]]
    with pytest.raises(DataError, match="AAA"):
        p.select(symbols=["AAA"])
    with pytest.raises(DataError, match="'turnover'"):
        p.select(fields=["turnover"])
    with pytest.raises(KeyError, match="no field 'turnover'"):
        p["turnover"]
    dup = pd.concat([long, long.iloc[:1]])
    with pytest.raises(DataError, match=r"600000\.SH on 2024-01-02"):
        Panel.from_long(dup)
    with pytest.raises(DataError, match="shape"):
        Panel.from_arrays({"close": np.ones((2, 2))}, pd.bdate_range("2024-01-01", periods=3),
                          ["A", "B"])


def test_fingerprint_and_with_fields(long: pd.DataFrame) -> None:
    p = Panel.from_long(long)
    q = Panel.from_long(long.sample(frac=1.0, random_state=1))  # row order does not matter
    assert p.fingerprint() == q.fingerprint()
    changed = p.with_fields(close=p["close"] * 2)
    assert changed.fingerprint() != p.fingerprint()
    assert changed["volume"] is p["volume"]
    assert "returns" in p and "close" in p and "nope" not in p
    assert "3 dates x 3 symbols" in repr(p)


def test_to_gpu_and_back(long: pd.DataFrame, gpu: None) -> None:
    p = Panel.from_long(long)
    g = p.to("gpu")
    assert g.backend.name == "gpu"
    np.testing.assert_array_equal(g.backend.to_host(g.returns()), p.returns())
    assert g.to("cpu").fingerprint() == p.fingerprint()
