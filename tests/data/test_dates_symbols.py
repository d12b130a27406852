"""Dates, symbols and empty files (issue 10): refused or parsed explicitly, never guessed."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from qilin.cli import main
from qilin.data.loader import load_bars, load_panel
from qilin.data.symbols import mixed_forms
from qilin.data.validation import validate_bars
from qilin.errors import DataError, ValidationError

HEADER = "date,symbol,open,high,low,close,volume\n"


def _csv(path: Path, dates: list[str], symbols: list[str] | None = None) -> Path:
    symbols = symbols or ["A"] * len(dates)
    rows = "".join(f"{d},{s},10,11,9,10.5,100\n" for d, s in zip(dates, symbols, strict=True))
    path.write_text(HEADER + rows)
    return path


def test_ambiguous_day_month_dates_are_refused(tmp_path: Path, capsys) -> None:
    path = _csv(tmp_path / "b.csv", ["03/04/2016", "04/04/2016", "05/04/2016"])
    with pytest.raises(DataError, match=r"ambiguous day/month order.*--date-format"):
        load_bars(path)
    with pytest.raises(DataError, match="ambiguous"):
        load_panel(path, backend="cpu")
    assert main(["data", "validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "%d/%m/%Y" in err[0] and "%m/%d/%Y" in err[0]
    df = load_bars(path, date_format="%d/%m/%Y")
    assert df["date"].dt.strftime("%Y-%m-%d").tolist() == ["2016-04-03", "2016-04-04",
                                                           "2016-04-05"]
    panel = load_panel(path, backend="cpu", date_format="%m/%d/%Y")
    assert [str(d.date()) for d in panel.dates] == ["2016-03-04", "2016-04-04", "2016-05-04"]
    assert main(["data", "validate", str(path), "--date-format", "%d/%m/%Y"]) == 0


def test_day_first_dates_are_read_day_first_and_recorded(tmp_path: Path) -> None:
    """The reported defect: dd/mm/yyyy read month-first where the day was <= 12."""
    path = _csv(tmp_path / "b.csv", ["11/03/2016", "14/03/2016", "15/03/2016"])
    df = load_bars(path)
    assert df["date"].dt.strftime("%Y-%m-%d").tolist() == ["2016-03-11", "2016-03-14",
                                                           "2016-03-15"]
    _, rep = validate_bars(df)
    reasons = rep.changes[rep.changes["column"] == "date"]["reason"].tolist()
    assert any("day-first" in r for r in reasons)


def test_dates_mixing_both_orders_are_refused(tmp_path: Path) -> None:
    path = _csv(tmp_path / "b.csv", ["25/03/2016", "03/26/2016"])
    with pytest.raises(DataError, match="mix day/month order"):
        load_bars(path)


def test_mixed_symbol_forms_are_an_error_naming_both(tmp_path: Path) -> None:
    """The reported defect: ``1`` and ``000001.SZ`` silently became two symbols."""
    path = _csv(tmp_path / "b.csv", ["2016-01-04", "2016-01-05", "2016-01-06", "2016-01-07"],
                ["000001.SZ", "000001.SZ", "1", "1"])
    with pytest.raises(ValidationError, match=r"'1' and '000001.SZ'.*--validate"):
        load_panel(path, backend="cpu")
    panel, rep = load_panel(path, backend="cpu", validate="repair", return_report=True)
    assert list(panel.symbols) == ["000001.SZ"] and panel.shape == (4, 1)
    fixed = rep.changes[(rep.changes["action"] == "set_value")
                        & (rep.changes["column"] == "symbol")]
    assert fixed["old"].tolist() == ["1", "1"] and set(fixed["new"]) == {"000001.SZ"}
    out, _ = validate_bars(load_bars(path), policy="drop")
    assert set(out["symbol"]) == {"000001.SZ"} and len(out) == 2


def test_symbol_forms_rules() -> None:
    assert mixed_forms(["000001", "000001.SZ", "600519.SH"]) == {"000001": ["000001.SZ"]}
    assert mixed_forms(["1.SZ", "000001.SZ"]) == {"1.SZ": ["000001.SZ"]}
    assert mixed_forms(["000001.SZ", "000001.SH"]) == {}  # two instruments
    assert mixed_forms(["1", "000001.SZ", "000001.SH"]) == {"1": ["000001.SH", "000001.SZ"]}
    assert mixed_forms(["AAPL", "MSFT", "600519"]) == {}


def test_ambiguous_short_form_is_dropped_by_repair() -> None:
    df = pd.DataFrame({"date": pd.to_datetime(["2016-01-04"] * 3), "symbol": ["1", "000001.SZ",
                       "000001.SH"], "open": 10.0, "high": 11.0, "low": 9.0, "close": 10.5,
                       "volume": 100.0})
    out, rep = validate_bars(df, policy="repair")
    assert sorted(out["symbol"]) == ["000001.SH", "000001.SZ"]
    assert rep.changes[rep.changes["action"] == "drop_row"]["reason"].tolist() == [
        "mixed_symbol_forms"]


@pytest.mark.parametrize("content", ["", HEADER], ids=["empty", "header_only"])
def test_empty_and_header_only_files_fail_at_load(tmp_path: Path, content: str,
                                                   capsys) -> None:
    path = tmp_path / "b.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=r"b\.csv: (empty file|no rows)"):
        load_bars(path)
    with pytest.raises(DataError):
        load_panel(path, backend="cpu")
    assert main(["data", "validate", str(path)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
