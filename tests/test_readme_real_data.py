"""The README's command lines on the shared real files, as a new user would type them.

Each command either succeeds or stops with one line naming the flag to pass; for these
files (plain OHLCV S&P 500 bars with a few NaN opens; unadjusted A-share bars) they succeed.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pandas as pd
import pytest
from test_readme import _blocks

from qilin.cli import main

REAL = {"us": "us_sp500_2013_2018.parquet", "cn": "cn_ashare_500_2016_2021.parquet"}


def _readme_commands() -> list[list[str]]:
    block = next(b for b in _blocks("") if b.lstrip().startswith("qilin info"))
    out = []
    for line in block.strip().splitlines():
        argv = shlex.split(line.split("#")[0])
        if argv[:2] in (["qilin", "data"], ["qilin", "factors"], ["qilin", "backtest"],
                        ["qilin", "monitor"]) and argv[2] != "synth":
            out.append(argv[1:])
    return out


@pytest.mark.parametrize("market", sorted(REAL))
def test_readme_commands_run_on_the_real_files(market: str, request, tmp_path: Path,
                                               monkeypatch, capsys) -> None:
    path = request.getfixturevalue("sp500_path" if market == "us" else "ashare_path")
    monkeypatch.chdir(tmp_path)
    ran = []
    for argv in _readme_commands():
        argv = [str(path) if a == "bars.parquet" else a for a in argv]
        if "--market" in argv:
            argv[argv.index("--market") + 1] = market
        elif argv[:2] in (["backtest", "run"], ["backtest", "sweep"]):
            argv += ["--market", market]
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 0, f"qilin {shlex.join(argv)} -> {code}\n{err[-3000:]}"
        assert "Traceback" not in err
        ran.append(argv[:2])
    assert ["factors", "compute"] in ran and ["backtest", "sweep"] in ran
    factors = pd.read_parquet(tmp_path / "factors.parquet")
    assert factors.shape[1] >= 158
    metrics = json.loads((tmp_path / "bt" / "metrics.json").read_text())
    assert metrics
