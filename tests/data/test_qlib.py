"""read_qlib on a small Qlib tree written here with numpy ``tofile`` (hand-checkable values)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qilin.data.qlib import read_feature, read_qlib
from qilin.errors import DataError

CAL = ["2020-01-02", "2020-01-03", "2020-01-06", "2020-01-07", "2020-01-08", "2020-01-09"]


def _bin(path: Path, start: int, values: list[float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.array([start, *values], dtype="<f4").tofile(path)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """SH600000 over the whole calendar; SZ000002 from index 2 and out of 'all' after day 4."""
    (tmp_path / "calendars").mkdir()
    (tmp_path / "calendars" / "day.txt").write_text("\n".join(CAL) + "\n")
    (tmp_path / "instruments").mkdir()
    (tmp_path / "instruments" / "all.txt").write_text(
        "SH600000\t2020-01-02\t2020-01-09\nSZ000002\t2020-01-06\t2020-01-08\n")
    (tmp_path / "instruments" / "csi2.txt").write_text(
        "SH600000\t2020-01-02\t2020-01-03\nSH600000\t2020-01-08\t2020-01-09\n")
    f = tmp_path / "features"
    # SH600000: factor 2 (so raw = half of Qlib's adjusted prices), volume adjusted = raw / 2
    _bin(f / "sh600000" / "close.day.bin", 0, [20, 22, 24, 26, 28, 30])
    _bin(f / "sh600000" / "open.day.bin", 0, [19, 21, 23, 25, 27, 29])
    _bin(f / "sh600000" / "high.day.bin", 0, [22, 24, 26, 28, 30, 32])
    _bin(f / "sh600000" / "low.day.bin", 0, [18, 20, 22, 24, 26, 28])
    _bin(f / "sh600000" / "volume.day.bin", 0, [50, 50, 60, 60, 70, 70])
    _bin(f / "sh600000" / "factor.day.bin", 0, [2, 2, 2, 2, 2, 2])
    # SZ000002 starts later in the calendar (index 2) and has a factor change on 2020-01-08
    _bin(f / "sz000002" / "close.day.bin", 2, [5, 6, 9, 10])
    _bin(f / "sz000002" / "open.day.bin", 2, [5, 5, 8, 9])
    _bin(f / "sz000002" / "high.day.bin", 2, [6, 7, 10, 11])
    _bin(f / "sz000002" / "low.day.bin", 2, [4, 4, 7, 8])
    _bin(f / "sz000002" / "volume.day.bin", 2, [100, 100, 50, 50])
    _bin(f / "sz000002" / "factor.day.bin", 2, [1, 1, 1.5, 1.5])
    return tmp_path


def test_raw_prices_and_factor(root: Path) -> None:
    p = read_qlib(root)
    assert list(p.symbols) == ["000002.SZ", "600000.SH"]
    assert list(p.dates) == list(pd.to_datetime(CAL))
    nan = np.nan
    np.testing.assert_array_equal(p["close"][:, 1], [10, 11, 12, 13, 14, 15])
    np.testing.assert_array_equal(p["volume"][:, 1], [100, 100, 120, 120, 140, 140])
    np.testing.assert_array_equal(p["high"][:, 1], [11, 12, 13, 14, 15, 16])
    np.testing.assert_array_equal(p["low"][2:5, 0], [4, 4, 7 / 1.5])
    np.testing.assert_array_equal(p["adj_factor"][:, 1], [2] * 6)
    # starts at index 2; masked after 2020-01-08 (its span in all.txt ends there)
    np.testing.assert_array_equal(p["close"][:, 0], [nan, nan, 5, 6, 6, nan])
    np.testing.assert_array_equal(p["volume"][:, 0], [nan, nan, 100, 100, 75, nan])
    assert p.valid[:, 0].tolist() == [False, False, True, True, True, False]
    assert p.info["board"].tolist() == ["main", "main"]
    # Panel.adjusted() gives Qlib's stored values back
    adj = p.adjusted()
    np.testing.assert_array_equal(adj["close"][:, 1], [20, 22, 24, 26, 28, 30])
    np.testing.assert_allclose(adj["close"][2:5, 0], [5, 6, 9])
    np.testing.assert_allclose(adj["volume"][2:5, 0], [100, 100, 50])


def test_adjusted_prices_are_kept_and_not_adjusted_twice(root: Path) -> None:
    p = read_qlib(root, prices="adjusted")
    np.testing.assert_array_equal(p["close"][:, 1], [20, 22, 24, 26, 28, 30])
    np.testing.assert_array_equal(p["adj_factor"][:, 1], [1] * 6)
    np.testing.assert_array_equal(p.adjusted()["close"][:, 1], p["close"][:, 1])


def test_market_file_list_dates_and_styles(root: Path) -> None:
    p = read_qlib(root, instruments="csi2", fields=("close", "factor"))
    assert list(p.symbols) == ["600000.SH"]
    np.testing.assert_array_equal(p["close"][:, 0], [10, 11, np.nan, np.nan, 14, 15])
    q = read_qlib(root, instruments=["sz000002"], fields=("close",), prices="adjusted",
                  start="2020-01-06", end="2020-01-09", symbol_style="qlib")
    assert list(q.symbols) == ["SZ000002"] and len(q.dates) == 4
    np.testing.assert_array_equal(q["close"][:, 0], [5, 6, 9, 10])  # no span mask for a list


def test_errors_name_the_path(root: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"not found.*available: \['all', 'csi2'\]"):
        read_qlib(root, instruments="csi300")
    with pytest.raises(DataError, match=r"'vwap' not found .*sh600000/vwap\.day\.bin"):
        read_qlib(root, fields=("close", "vwap", "factor"))
    with pytest.raises(DataError, match="needs the 'factor' field"):
        read_qlib(root, fields=("close",))
    with pytest.raises(DataError, match="calendar not found"):
        read_qlib(tmp_path / "nowhere")
    bad = root / "features" / "sh600000" / "vwap.day.bin"
    _bin(bad, 4, [1, 2, 3])
    with pytest.raises(DataError, match="run past the calendar"):
        read_feature(bad, len(CAL))
    _bin(bad, 9, [1.0])
    with pytest.raises(DataError, match=r"vwap\.day\.bin: start index 9\.0"):
        read_qlib(root, fields=("close", "vwap", "factor"))
    np.array([1.5, 1.0], dtype="<f4").tofile(bad)
    with pytest.raises(DataError, match=r"vwap\.day\.bin: start index 1\.5"):
        read_feature(bad, len(CAL))


def test_float32_and_gpu_absent_backend_choice(root: Path) -> None:
    p = read_qlib(root, dtype=np.float32)
    assert p["close"].dtype == np.float32
    assert p.backend.name == "cpu"


def test_gpu_backend(root: Path, gpu: None) -> None:
    p = read_qlib(root, backend="gpu")
    np.testing.assert_array_equal(p.backend.to_host(p["close"]), read_qlib(root)["close"])


def test_load_panel_reads_a_qlib_folder(root: Path) -> None:
    """A Qlib folder is accepted wherever a bars file is (issue 10), detected by layout."""
    from qilin.data.loader import load_bars, load_panel

    direct = read_qlib(root)
    panel, rep = load_panel(root, backend="cpu", return_report=True)
    assert list(panel.symbols) == list(direct.symbols)
    assert list(panel.dates) == list(direct.dates)
    for name in ("open", "high", "low", "close", "volume", "adj_factor"):
        np.testing.assert_array_equal(panel[name], direct[name])
    assert "qlib_import" in set(rep.changes["action"])
    bars = load_bars(root, symbols=["600000.SH"], columns=["date", "symbol", "close"],
                     start="2020-01-06")
    assert bars["close"].tolist() == [12, 13, 14, 15]
    lazy = load_bars(root, engine="dask").compute()
    assert len(lazy) == int(direct.valid.sum())


def test_qlib_folder_without_factor_or_instruments(root: Path) -> None:
    from qilin.data.loader import load_panel

    (root / "instruments" / "all.txt").unlink()
    for f in root.glob("features/*/factor.day.bin"):
        f.unlink()
    panel, rep = load_panel(root, backend="cpu", return_report=True)
    np.testing.assert_array_equal(panel["close"][:, 1], [20, 22, 24, 26, 28, 30])  # as stored
    assert any("no factor" in str(r) for r in rep.changes["reason"])


def test_cli_validates_a_qlib_folder(root: Path, tmp_path: Path, capsys) -> None:
    import json

    from qilin.cli import main

    out = tmp_path / "rep.json"
    assert main(["data", "validate", str(root), "--report", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["n_rows_in"] == 9 and doc["source"] == str(root)  # 6 + 3 bars in all.txt spans
    assert "unsorted" not in doc["counts"]
    assert "9 in" in capsys.readouterr().out


def test_every_data_command_takes_a_qlib_folder(root: Path, tmp_path: Path, capsys) -> None:
    from qilin.cli import main

    commands = [
        ["factors", "compute", "--data", str(root), "--factors", "m=ts_mean(close, 2)",
         "--out", str(tmp_path / "f.parquet")],
        ["backtest", "run", "--data", str(root), "--strategy", "ma_cross", "--params",
         "fast=2,slow=3", "--out", str(tmp_path / "bt")],
        ["backtest", "sweep", "--data", str(root), "--strategy", "ma_cross", "--grid",
         "fast=2 slow=3:4:1", "--out", str(tmp_path / "s.parquet")],
        ["monitor", "replay", "--data", str(root), "--alerts", str(tmp_path / "a.jsonl")],
    ]
    for argv in commands:
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 0, f"{argv[:2]}: {err[-1500:]}"
    assert main(["factors", "evaluate", "--factors", str(tmp_path / "f.parquet"), "--data",
                 str(root), "--out", str(tmp_path / "e.json"), "--horizons", "1"]) == 0
