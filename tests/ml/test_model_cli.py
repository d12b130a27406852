"""``qilin model``: train -> list/show -> predict -> alias/rollback -> drift, and typed errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from qilin.backend import gpu_available
from qilin.cli import main
from qilin.data.loader import save_bars
from qilin.data.panel import Panel
from qilin.data.synthetic import synthetic_bars
from qilin.factors.calculator import FactorCalculator

FACTORS = {"mom5": "close / ts_delay(close, 5) - 1", "alpha": "alpha",
           "vol10": "ts_std(close / ts_delay(close, 1) - 1, 10)"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("model_cli")
    bars = synthetic_bars(n_symbols=60, n_days=300, seed=4, alpha=0.1)
    bars_path = save_bars(bars, d / "bars.parquet")
    panel = Panel.from_long(bars)
    f = FactorCalculator(FACTORS, backend="cpu", progress=False).compute(panel)
    fpath = f.to_parquet(d / "factors.parquet")
    # "new" data for drift: the same bars, factors with one feature shifted
    long = f.to_long()
    long["vol10"] = long["vol10"] * 3.0 + 0.05
    new_path = d / "factors_new.parquet"
    long.to_parquet(new_path, index=False)
    return d, str(bars_path), str(fpath), str(new_path)


def test_model_cli_full_cycle(files, capsys):
    d, bars, fac, new = files
    reg = str(d / "reg")
    base = ["--factors", fac, "--data", bars, "--registry", reg, "--name", "m"]
    assert main(["model", "train", *base, "--param", "n_estimators=80", "--param",
                 "max_depth=3", "--param", "n_jobs=1", "--alias", "champion",
                 "--scores-out", str(d / "oos.parquet")]) == 0
    out = capsys.readouterr().out
    assert "Rank IC" in out and "saved m v1" in out
    oos = pd.read_parquet(d / "oos.parquet")
    assert list(oos.columns) == ["date", "symbol", "score"] and len(oos) > 0
    assert main(["model", "train", *base, "--model", "ridge", "--walk-forward",
                 "train=120,test=40,valid=0"]) == 0
    out = capsys.readouterr().out
    assert "out-of-sample (stitched)" in out and "saved m v2" in out
    assert main(["model", "list", "--registry", reg]) == 0
    assert "champion=1" in capsys.readouterr().out
    assert main(["model", "show", "--registry", reg, "--name", "m", "--version", "champion",
                 "--json"]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["kind"] == "xgboost" and meta["features"] == ["mom5", "alpha", "vol10"]
    assert meta["metrics"]["test"]["rank_ic"] > 0.03
    assert main(["model", "predict", *base, "--version", "champion", "--start",
                 "2016-10-01", "--out", str(d / "s.parquet")]) == 0
    scores = pd.read_parquet(d / "s.parquet")
    assert scores["date"].min() >= pd.Timestamp("2016-10-01")
    assert np.isfinite(scores["score"]).all()
    assert main(["model", "alias", "--registry", reg, "--name", "m", "champion", "2"]) == 0
    assert main(["model", "rollback", "--registry", reg, "--name", "m", "champion"]) == 0
    assert "rolled back to v1" in capsys.readouterr().out
    assert main(["model", "drift", *base, "--version", "1", "--json"]) == 0
    same = json.loads(capsys.readouterr().out)
    assert same["flag"] == "ok"
    assert main(["model", "drift", "--factors", new, "--data", bars, "--registry", reg,
                 "--name", "m", "--version", "1", "--json"]) == 0
    moved = json.loads(capsys.readouterr().out)
    assert moved["drifted"] == ["vol10"] and moved["flag"] == "alert"


def test_model_cli_errors_exit_2(files, capsys):
    d, bars, fac, _ = files
    reg = str(d / "reg_err")
    base = ["--data", bars, "--registry", reg, "--name", "m"]
    assert main(["model", "train", "--factors", str(d / "nope.parquet"), *base]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["model", "train", "--factors", fac, *base, "--train",
                 "2016-01-04:2016-06-30", "--test", "2016-07-01:2016-12-31"]) == 2
    assert "purge" in capsys.readouterr().err
    if not gpu_available():
        assert main(["model", "train", "--factors", fac, *base, "--backend", "gpu"]) == 2
        assert "no GPU" in capsys.readouterr().err
    assert main(["model", "show", "--registry", reg, "--name", "ghost"]) == 2
    assert "no model named 'ghost'" in capsys.readouterr().err
    assert main(["model", "train", "--factors", fac, *base, "--walk-forward", "train=x"]) == 2
