"""load_bars / load_panel / save_bars on files the tests write (Parquet, CSV, directories)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest

from qilin.data.loader import load_bars, load_panel, normalize_columns, save_bars
from qilin.data.panel import Panel
from qilin.data.synthetic import synthetic_bars, synthetic_market
from qilin.data.validation import ValidationReport
from qilin.errors import BackendError, DataError, ValidationError


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return synthetic_bars(n_symbols=12, n_days=40, seed=4)


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True),
                                  check_dtype=False, check_exact=False, rtol=1e-12)


@pytest.mark.parametrize("name", ["bars.parquet", "bars.csv", "bars.csv.gz"])
def test_roundtrip_each_format(tmp_path, bars, name) -> None:
    path = save_bars(bars, tmp_path / name)
    assert [p.name for p in tmp_path.iterdir()] == [name], "no temp file left behind"
    got = load_bars(path)
    assert pd.api.types.is_datetime64_dtype(got["date"])
    _same(got, bars)
    assert got.attrs["source"] == str(path)


def test_directory_and_glob_concatenate_files(tmp_path, bars) -> None:
    syms = sorted(bars["symbol"].unique())
    for i, chunk in enumerate((syms[:5], syms[5:])):
        save_bars(bars[bars["symbol"].isin(chunk)], tmp_path / "parts" / f"p{i}.parquet")
    (tmp_path / "parts" / "README.txt").write_text("not data")
    _same(load_bars(tmp_path / "parts"), bars)
    _same(load_bars(str(tmp_path / "parts" / "p*.parquet")), bars)
    _same(load_bars([tmp_path / "parts" / "p0.parquet", tmp_path / "parts" / "p1.parquet"]),
          bars)


def test_columns_symbols_and_dates_filter(tmp_path, bars) -> None:
    path = save_bars(bars, tmp_path / "b.parquet")
    syms = sorted(bars["symbol"].unique())[:3]
    got = load_bars(path, columns=["date", "symbol", "close"], symbols=syms,
                    start="2016-01-15", end="2016-02-05")
    want = bars[bars["symbol"].isin(syms) & (bars["date"] >= "2016-01-15")
                & (bars["date"] <= "2016-02-05")][["date", "symbol", "close"]]
    assert len(want) > 0
    _same(got, want)
    csv = save_bars(bars, tmp_path / "b.csv")
    _same(load_bars(csv, columns=["date", "symbol", "close"], symbols=syms,
                    start="2016-01-15", end="2016-02-05"), want)


def test_errors_name_the_file_and_column(tmp_path, bars) -> None:
    path = save_bars(bars, tmp_path / "b.parquet")
    with pytest.raises(DataError, match=r"b\.parquet: no column 'turnover'"):
        load_bars(path, columns=["date", "turnover"])
    with pytest.raises(DataError, match="not found"):
        load_bars(tmp_path / "missing.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"this is not parquet")
    with pytest.raises(DataError, match=r"junk\.parquet"):
        load_bars(tmp_path / "junk.parquet")
    (tmp_path / "x.xlsx").write_bytes(b"")
    with pytest.raises(DataError, match="unsupported"):
        load_bars(tmp_path / "x.xlsx")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no Parquet or CSV"):
        load_bars(tmp_path / "empty")
    with pytest.raises(DataError, match="engine"):
        load_bars(path, engine="polars")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="unsupported output"):
        save_bars(bars, tmp_path / "out.json")


def test_tushare_style_columns_are_renamed_and_reported(tmp_path) -> None:
    raw = pd.DataFrame({
        "ts_code": ["600000.SH", "600000.SH", "000001.SZ"],
        "trade_date": [20240103, 20240102, 20240102],
        "Open": [10.0, 9.9, 8.0], "HIGH": [10.2, 10.0, 8.1], "low": [9.8, 9.8, 7.9],
        "close": [10.1, 10.0, 8.0], "vol": [1200.0, 1000.0, 500.0],
        "pre_close": [10.0, 9.9, 8.0]})
    raw.to_csv(tmp_path / "daily.csv", index=False)
    got = load_bars(tmp_path / "daily.csv")
    assert list(got.columns) == ["symbol", "date", "open", "high", "low", "close", "volume",
                                 "preclose"]
    assert got.attrs["renamed_columns"] == {
        "ts_code": "symbol", "trade_date": "date", "Open": "open", "HIGH": "high",
        "vol": "volume", "pre_close": "preclose"}
    assert got["date"].tolist() == list(pd.to_datetime(["2024-01-03", "2024-01-02",
                                                        "2024-01-02"]))
    assert "ts_code" in load_bars(tmp_path / "daily.csv", aliases=False).columns
    bare = raw.assign(ts_code=["600000", "600000", "000001"])
    bare.to_csv(tmp_path / "bare.csv", index=False)
    assert load_bars(tmp_path / "bare.csv")["symbol"].tolist() == ["600000", "600000", "000001"]
    got_dask = load_bars(tmp_path / "bare.csv", engine="dask").compute()
    assert sorted(got_dask["symbol"]) == ["000001", "600000", "600000"]
    panel, rep = load_panel(tmp_path / "daily.csv", backend="cpu", return_report=True)
    assert panel.shape == (2, 2)
    renames = rep.changes[rep.changes["action"] == "rename_column"]
    assert dict(zip(renames["old"], renames["new"], strict=True))["vol"] == "volume"
    assert "sort" in set(rep.changes["action"])  # rows came newest first
    with pytest.raises(DataError, match="'vol' and 'volume' both map to 'volume'"):
        normalize_columns(["vol", "volume"])
    assert normalize_columns(["Px_Last"], aliases={"px_last": "close"}) == {"Px_Last": "close"}


@pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.reset_index")  # dask's
def test_dask_engine_is_lazy_and_matches_pandas(tmp_path, bars) -> None:
    import dask.dataframe as dd

    syms = sorted(bars["symbol"].unique())
    for i, chunk in enumerate((syms[:6], syms[6:])):
        save_bars(bars[bars["symbol"].isin(chunk)], tmp_path / f"p{i}.parquet")
    lazy = load_bars(str(tmp_path / "*.parquet"), engine="dask", symbols=syms[4:8],
                     start="2016-01-20")
    assert isinstance(lazy, dd.DataFrame)
    got = lazy.compute().sort_values(["symbol", "date"])
    want = bars[bars["symbol"].isin(syms[4:8]) & (bars["date"] >= "2016-01-20")]
    _same(got, want)
    save_bars(bars, tmp_path / "all.csv")
    got_csv = load_bars(tmp_path / "all.csv", engine="dask").compute()
    _same(got_csv, bars)
    panel = load_panel(str(tmp_path / "p*.parquet"), engine="dask", backend="cpu")
    ref = synthetic_market(n_symbols=12, n_days=40, seed=4)
    np.testing.assert_array_equal(panel["close"], ref["close"])


@pytest.mark.skipif(importlib.util.find_spec("dask_cudf") is not None,
                    reason="dask-cudf is installed here")
def test_dask_cudf_without_the_package_is_a_typed_error(tmp_path, bars) -> None:
    path = save_bars(bars, tmp_path / "b.parquet")
    with pytest.raises(BackendError, match="dask-cudf"):
        load_bars(path, engine="dask_cudf")


def test_load_panel_policies(tmp_path, bars) -> None:
    dirty = bars.copy()
    i = dirty.index[5]
    dirty.loc[i, "close"] = dirty.loc[i, "high"] * 1.05
    j = dirty.index[30]
    dirty.loc[j, "open"] = np.nan
    path = save_bars(dirty, tmp_path / "dirty.parquet")
    with pytest.raises(ValidationError) as info:
        load_panel(path, backend="cpu", validate="raise")
    assert "dirty.parquet" in str(info.value)
    # the default (auto) passes a NaN open and a close above high as they are, reported
    panel, rep = load_panel(path, backend="cpu", return_report=True)
    assert rep.policy == "auto" and rep.counts().to_dict() == {
        "nan_price": 1, "close_outside_range": 1}
    assert panel.shape[0] * panel.shape[1] >= rep.n_rows_out == len(dirty)
    panel, rep = load_panel(path, backend="cpu", validate="drop", return_report=True)
    assert isinstance(panel, Panel) and isinstance(rep, ValidationReport)
    assert rep.n_rows_in - rep.n_rows_out == 2
    sym, date = dirty.loc[i, "symbol"], dirty.loc[i, "date"]
    r, c = panel.dates.get_loc(date), panel.symbols.get_loc(sym)
    assert not panel.valid[r, c] and np.isnan(panel["close"][r, c])
    repaired = load_panel(path, backend="cpu", validate="repair", market="cn")
    assert repaired["high"][r, c] == dirty.loc[i, "close"]
    fields = load_panel(path, backend="cpu", validate="drop", fields=["close", "volume"],
                        dtype=np.float32)
    assert sorted(fields.fields) == ["close", "volume"]
    assert fields["close"].dtype == np.float32
    dup = pd.concat([bars, bars.iloc[:1]])
    path2 = save_bars(dup, tmp_path / "dup.parquet")
    with pytest.raises(DataError, match="repeat"):
        load_panel(path2, backend="cpu", validate=None)


def test_load_panel_on_gpu(tmp_path, bars, gpu) -> None:
    path = save_bars(bars, tmp_path / "b.parquet")
    panel = load_panel(path, backend="gpu")
    assert panel.backend.name == "gpu"
    ref = load_panel(path, backend="cpu")
    np.testing.assert_array_equal(panel.backend.to_host(panel["close"]), ref["close"])
