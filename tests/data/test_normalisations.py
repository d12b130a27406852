"""Every normalisation between the file and the validated bars is recorded (issue 11).

Reproduces: time-zone-aware dates converted with ``changes: []``, non-midnight dates without
a finding, symbols stripped and ``vol`` renamed to ``volume`` without a record.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from qilin.cli import main
from qilin.data.loader import load_bars, load_panel
from qilin.data.validation import validate_bars
from qilin.errors import ValidationError


def _bars(dates: list, symbol: str = "A") -> pd.DataFrame:
    n = len(dates)
    return pd.DataFrame({"date": dates, "symbol": [symbol] * n, "open": [10.0] * n,
                         "high": [11.0] * n, "low": [9.0] * n, "close": [10.5] * n,
                         "volume": [100.0] * n})


def _changes(report, action: str) -> pd.DataFrame:
    return report.changes[report.changes["action"] == action]


def test_tz_aware_dates_keep_local_day_and_are_recorded(tmp_path: Path) -> None:
    dates = pd.to_datetime(["2013-02-08", "2013-02-11"]).tz_localize("Asia/Tokyo")
    path = tmp_path / "tokyo.parquet"
    _bars(list(dates)).to_parquet(path)
    panel, rep = load_panel(path, backend="cpu", return_report=True)
    assert list(panel.dates) == list(pd.to_datetime(["2013-02-08", "2013-02-11"]))
    tz = _changes(rep, "drop_timezone")
    assert len(tz) == 1 and tz["old"].iloc[0] == "Asia/Tokyo"
    # validate_bars on its own records it too
    _, rep2 = validate_bars(_bars(list(dates)))
    assert _changes(rep2, "drop_timezone")["old"].tolist() == ["Asia/Tokyo"]


def test_text_offsets_are_dropped_with_a_record(tmp_path: Path) -> None:
    path = tmp_path / "off.csv"
    _bars(["2013-02-08 00:00:00+09:00", "2013-02-11 00:00:00-05:00"]).to_csv(path, index=False)
    df = load_bars(path)
    assert df["date"].dt.strftime("%Y-%m-%d").tolist() == ["2013-02-08", "2013-02-11"]
    _, rep = validate_bars(df)
    tz = _changes(rep, "drop_timezone")
    assert len(tz) == 1 and "+09:00" in tz["old"].iloc[0] and "-05:00" in tz["old"].iloc[0]


def test_non_midnight_dates_are_a_finding() -> None:
    df = _bars([pd.Timestamp("2024-01-02 06:00"), pd.Timestamp("2024-01-03")])
    with pytest.raises(ValidationError, match="time_of_day"):
        validate_bars(df)
    out, rep = validate_bars(df, policy="repair")
    assert rep.counts()["time_of_day"] == 1
    fixed = _changes(rep, "set_value")
    assert fixed["column"].tolist() == ["date"]
    assert out["date"].tolist() == list(pd.to_datetime(["2024-01-02", "2024-01-03"]))
    out, rep = validate_bars(df, policy="drop")
    assert len(out) == 1 and _changes(rep, "drop_row")["reason"].tolist() == ["time_of_day"]


def test_stripped_symbols_are_recorded() -> None:
    df = pd.concat([_bars(["2024-01-02", "2024-01-03"], " AAPL "),
                    _bars(["2024-01-02"], "MSFT")], ignore_index=True)
    out, rep = validate_bars(df)
    assert set(out["symbol"]) == {"AAPL", "MSFT"}
    sym = _changes(rep, "set_value")
    assert sym["old"].tolist() == [" AAPL ", " AAPL "] and set(sym["new"]) == {"AAPL"}
    assert set(sym["column"]) == {"symbol"}


def test_column_renames_are_in_the_cli_report(tmp_path: Path) -> None:
    path = tmp_path / "b.csv"
    _bars(["2024-01-02", "2024-01-03"]).rename(columns={"volume": "vol"}).to_csv(
        path, index=False)
    out = tmp_path / "report.json"
    assert main(["data", "validate", str(path), "--report", str(out)]) == 0
    changes = json.loads(out.read_text())["changes"]
    assert {"action": "rename_column", "old": "vol", "new": "volume"}.items() <= \
        next(c for c in changes if c["action"] == "rename_column").items()
    _, rep = load_panel(path, backend="cpu", return_report=True)
    assert _changes(rep, "rename_column")["old"].tolist() == ["vol"]
