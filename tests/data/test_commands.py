"""``qilin data validate`` and ``qilin data synth`` through qilin.cli.main and a subprocess."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from qilin.cli import main
from qilin.data.loader import load_bars, save_bars
from qilin.data.synthetic import synthetic_bars

REPO = Path(__file__).resolve().parents[2]


def test_synth_writes_parquet_and_csv_deterministically(tmp_path, capsys) -> None:
    out = tmp_path / "s.parquet"
    assert main(["data", "synth", "--symbols", "15", "--days", "60", "--seed", "9",
                 "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "written to" in captured.out
    assert "simulating days" in captured.err  # progress goes to stderr
    got = load_bars(out)
    pd.testing.assert_frame_equal(got, synthetic_bars(15, 60, seed=9), check_dtype=False)
    mode = stat.S_IMODE(os.stat(out).st_mode)
    assert mode & 0o044, "readable by others like any file the user writes"
    csv = tmp_path / "s.csv"
    assert main(["data", "synth", "--symbols", "15", "--days", "60", "--seed", "9",
                 "--out", str(csv), "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    pd.testing.assert_frame_equal(load_bars(csv), got, check_dtype=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.csv", "s.parquet"]


def test_validate_exits_1_only_when_the_policy_fails(tmp_path, capsys) -> None:
    bars = synthetic_bars(10, 50, seed=2)
    clean = save_bars(bars, tmp_path / "clean.parquet")
    assert main(["data", "validate", str(clean), "--market", "cn"]) == 0
    assert "no findings" in capsys.readouterr().out

    dirty = bars.copy()
    dirty.loc[3, "close"] = dirty.loc[3, "high"] + 1.0
    dirty.loc[7, "volume"] = 0.0
    path = save_bars(dirty, tmp_path / "dirty.csv")
    report = tmp_path / "rep" / "report.json"
    out = tmp_path / "fixed.parquet"
    code = main(["data", "validate", str(path), "--policy", "repair", "--report", str(report),
                 "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0  # repaired and written: the policy succeeded
    assert "[error] close_outside_range: 1" in printed and "[warning] zero_volume: 1" in printed
    data = json.loads(report.read_text())
    assert data["counts"] == {"close_outside_range": 1, "zero_volume": 1}
    assert data["findings"][0]["symbol"] == dirty.loc[3, "symbol"]
    fixed = load_bars(out)
    assert np.isclose(fixed.loc[3, "high"], dirty.loc[3, "close"])

    assert main(["data", "validate", str(path), "--policy", "raise"]) == 1
    assert main(["data", "validate", str(path)]) == 0  # auto: reported, loads as is
    capsys.readouterr()

    # warnings only: exit 0
    warn = save_bars(bars.assign(volume=bars["volume"].where(bars.index != 7, 0.0)),
                     tmp_path / "warn.parquet")
    assert main(["data", "validate", str(warn)]) == 0
    capsys.readouterr()

    # raise policy with errors: the report is printed, --out is refused, exit 1
    assert main(["data", "validate", str(path), "--policy", "raise", "--out",
                 str(tmp_path / "no.parquet")]) == 1
    assert "not writing" in capsys.readouterr().err
    assert not (tmp_path / "no.parquet").exists()


def test_validate_missing_file_is_a_one_line_error(tmp_path, capsys) -> None:
    assert main(["data", "validate", str(tmp_path / "nope.parquet")]) == 2
    assert "bars file not found" in capsys.readouterr().err


def test_validate_missing_column_exits_1(tmp_path, capsys) -> None:
    bars = synthetic_bars(4, 10, seed=1).drop(columns=["volume"])
    path = save_bars(bars, tmp_path / "novol.parquet")
    assert main(["data", "validate", str(path)]) == 1
    assert "missing_column" in capsys.readouterr().out


def test_real_subprocess(tmp_path) -> None:
    exe = Path(sys.executable).parent / "qilin"
    out = tmp_path / "sub.parquet"
    proc = subprocess.run(
        [str(exe), "data", "synth", "--symbols", "8", "--days", "30", "--seed", "3",
         "--out", str(out)], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    want = synthetic_bars(8, 30, seed=3)
    assert f"{len(want)} bars (8 symbols x 30 days, seed 3) written to {out}" in proc.stdout
    assert "simulating days" in proc.stderr
    pd.testing.assert_frame_equal(load_bars(out), want, check_dtype=False)
