"""Every ``qilin`` command fed every kind of bad input: one typed line, exit 2, no traceback.

The table crosses the commands that read a bars file with the mistakes a new user makes
(missing, empty, header-only, wrong types, ambiguous day/month dates, mixed symbol forms)
and the commands that take grids or parameters with malformed ones.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qilin.cli import main
from qilin.data.synthetic import synthetic_bars

GOOD_ROWS = synthetic_bars(n_symbols=4, n_days=40, seed=5)


def _good(path: Path) -> Path:
    GOOD_ROWS.to_csv(path, index=False)
    return path


def _missing(path: Path) -> Path:
    return path.with_name("does-not-exist.csv")


def _empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def _header_only(path: Path) -> Path:
    path.write_text(",".join(GOOD_ROWS.columns) + "\n")
    return path


def _wrong_types(path: Path) -> Path:
    bad = GOOD_ROWS.copy()
    bad["close"] = bad["close"].astype(str)
    bad.loc[bad.index[3], "close"] = "n/a-price"
    bad.to_csv(path, index=False)
    return path


def _ambiguous_dates(path: Path) -> Path:
    """dd/mm/yyyy with every day <= 12: each date reads both ways."""
    bad = GOOD_ROWS.copy()
    dates = pd.to_datetime(bad["date"])
    bad = bad[dates.dt.day <= 12]
    bad["date"] = pd.to_datetime(bad["date"]).dt.strftime("%d/%m/%Y")
    bad.to_csv(path, index=False)
    return path


def _mixed_symbols(path: Path) -> Path:
    bad = GOOD_ROWS.copy()
    first = bad["symbol"].iloc[0]
    code = first.split(".")[0].lstrip("0") or "0"
    rows = bad["symbol"] == first
    bad.loc[rows & (np.arange(len(bad)) % 2 == 0), "symbol"] = code
    bad.to_csv(path, index=False)
    return path


BAD_DATA: dict[str, Callable[[Path], Path]] = {
    "missing file": _missing,
    "empty file": _empty,
    "header only": _header_only,
    "wrong types": _wrong_types,
    "ambiguous dates": _ambiguous_dates,
    "mixed symbols": _mixed_symbols,
}


#: Mistakes ``qilin data validate`` reports as findings (exit 1) instead of refusing.
VALIDATE_FINDINGS = {"wrong types": "bad_value", "mixed symbols": "mixed_symbol_forms"}


def _commands(data: Path, tmp: Path) -> dict[str, list[str]]:
    factors = tmp / "factors.parquet"
    return {
        "data validate": ["data", "validate", str(data)],
        "factors compute": ["factors", "compute", "--data", str(data), "--factors",
                            "m=ts_mean(close, 5)", "--out", str(tmp / "f.parquet")],
        "factors evaluate": ["factors", "evaluate", "--factors", str(factors), "--data",
                             str(data), "--out", str(tmp / "e.json")],
        "backtest run": ["backtest", "run", "--data", str(data), "--strategy", "ma_cross",
                         "--params", "fast=3,slow=8", "--out", str(tmp / "bt")],
        "backtest sweep": ["backtest", "sweep", "--data", str(data), "--strategy", "ma_cross",
                           "--grid", "fast=3:5:1 slow=8:10:1", "--out", str(tmp / "s.parquet")],
        "monitor replay": ["monitor", "replay", "--data", str(data), "--alerts",
                           str(tmp / "a.jsonl")],
    }


def _assert_one_line_error(code: int, err: str, what: str) -> None:
    lines = [ln for ln in err.splitlines()
             if ln.strip() and not ln.startswith(("qilin: warning:", "qilin: first run:"))]
    assert code == 2, f"{what}: exit {code}\n{err[-2000:]}"
    assert "Traceback" not in err, f"{what}: traceback\n{err[-2000:]}"
    assert len(lines) == 1, f"{what}: expected one line, got\n{err[-2000:]}"
    assert lines[0].startswith("qilin"), lines[0]


@pytest.fixture(scope="module")
def factor_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("factors")
    good = _good(tmp / "good.csv")
    assert main(["factors", "compute", "--data", str(good), "--factors",
                 "m=ts_mean(close, 5)", "--out", str(tmp / "factors.parquet")]) == 0
    return tmp / "factors.parquet"


@pytest.mark.parametrize("mistake", list(BAD_DATA))
@pytest.mark.parametrize("command", list(_commands(Path("x"), Path("y"))))
def test_bad_bars_give_one_typed_line_and_exit_2(command: str, mistake: str, tmp_path: Path,
                                                factor_file: Path, capsys) -> None:
    data = BAD_DATA[mistake](tmp_path / "bars.csv")
    (tmp_path / "factors.parquet").write_bytes(factor_file.read_bytes())
    argv = _commands(data, tmp_path)[command]
    code = main(argv)
    out, err = capsys.readouterr()
    if command == "data validate" and mistake in VALIDATE_FINDINGS:
        # the validator's job: report the finding by name, exit 1 (its documented contract)
        assert code == 1 and VALIDATE_FINDINGS[mistake] in out, (code, out[-2000:], err)
        assert "Traceback" not in err
        return
    _assert_one_line_error(code, err, f"{command} / {mistake}")


BAD_ARGS = {
    "grid with a dash range": ["backtest", "sweep", "--strategy", "ma_cross",
                               "--grid", "fast=5-50 slow=60:80:10"],
    "grid without a value": ["backtest", "sweep", "--strategy", "ma_cross",
                             "--grid", "fast= slow=60"],
    "grid with a zero step": ["backtest", "sweep", "--strategy", "ma_cross",
                              "--grid", "fast=5:50:0 slow=60"],
    "grid with an unknown name": ["backtest", "sweep", "--strategy", "ma_cross",
                                  "--grid", "fast=5 slwo=60"],
    "misspelled parameter": ["backtest", "run", "--strategy", "ma_cross",
                             "--params", "fast=5,slwo=200"],
    "unknown strategy": ["backtest", "run", "--strategy", "ma_crosss", "--params", "fast=5"],
    "bad expression": ["factors", "compute", "--factors", "m=ts_mean(close, 5"],
    "unknown field": ["factors", "compute", "--factors", "m=ts_mean(closs, 5)"],
}


@pytest.mark.parametrize("mistake", list(BAD_ARGS))
def test_bad_arguments_give_one_typed_line_and_exit_2(mistake: str, tmp_path: Path,
                                                      capsys) -> None:
    data = _good(tmp_path / "bars.csv")
    argv = [*BAD_ARGS[mistake], "--data", str(data), "--out", str(tmp_path / "out")]
    if argv[0] == "backtest" and argv[1] == "sweep":
        argv[-1] = str(tmp_path / "out.parquet")
    code = main(argv)
    err = capsys.readouterr().err
    _assert_one_line_error(code, err, mistake)
    if "slwo" in " ".join(argv):
        assert "slow" in err, err


def test_usage_errors_are_one_line(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["backtest", "sweep", "--data", "x.csv"])
    assert exc.value.code == 2
    _assert_one_line_error(2, capsys.readouterr().err, "missing options")


def test_a_real_process_prints_no_traceback(tmp_path: Path) -> None:
    data = _ambiguous_dates(tmp_path / "bars.csv")
    res = subprocess.run([sys.executable, "-m", "qilin.cli", "backtest", "run", "--data",
                          str(data), "--strategy", "ma_cross", "--params", "fast=3,slow=8",
                          "--out", str(tmp_path / "bt")],
                         capture_output=True, text=True, timeout=300)
    _assert_one_line_error(res.returncode, res.stderr, "subprocess")
    assert not (tmp_path / "bt").exists()


def test_an_internal_error_names_its_traceback_file(monkeypatch, capsys) -> None:
    import qilin.cli.data as data_cli

    def boom(args):
        raise RuntimeError("a bug, not an input mistake")

    monkeypatch.setattr(data_cli, "_synth", boom)
    assert main(["data", "synth", "--out", "x.parquet"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    path = Path(err.split("full traceback in ")[1].split(";")[0])
    assert "RuntimeError: a bug" in path.read_text()
    assert main(["data", "synth", "--out", "x.parquet", "-v"]) == 1
    assert "Traceback" in capsys.readouterr().err
