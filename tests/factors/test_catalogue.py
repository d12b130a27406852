"""Discoverability (issue 10): the catalogue, ``qilin factors list``, evaluate's progress."""

from __future__ import annotations

import json

import pytest

from qilin.cli import main
from qilin.data.synthetic import synthetic_bars
from qilin.factors.alpha158 import alpha158_features
from qilin.factors.catalogue import catalogue
from qilin.factors.expr import parse
from qilin.factors.registry import QLIB_ALIASES, active_registry


def test_catalogue_lists_every_operator_once_with_its_signature():
    cat = catalogue()
    json.dumps(cat)  # plain data
    listed = [op["name"] for op in cat["operators"] + cat["indicators"]]
    assert sorted(listed) == active_registry().names()
    ops = {op["name"]: op for op in cat["operators"]}
    inds = {op["name"]: op for op in cat["indicators"]}
    assert ops["ts_std"]["signature"] == "ts_std(x, window, ddof=1)"
    assert ops["cs_rank"]["kind"] == "cs" and ops["add"]["infix"] == ["+"]
    assert inds["rsi"]["signature"] == "rsi(close, timeperiod=14)" and "rsi" not in ops
    aliased = {a for op in cat["operators"] for a in op["qlib"]}
    assert aliased == set(QLIB_ALIASES)
    assert all(op["doc"] for op in cat["operators"] + cat["indicators"])


def test_catalogue_alpha158_names_and_formulas_parse():
    features = catalogue()["alpha158"]
    assert [(f["name"], f["expression"]) for f in features] == alpha158_features()
    for f in features:
        parse(f["expression"])
    groups = {f["group"] for f in features}
    assert {"kbar", "price", "ROC", "VSUMD"} <= groups and "other" not in groups


def test_cli_factors_list(capsys):
    assert main(["factors", "list"]) == 0
    text = capsys.readouterr().out
    for piece in ("ts_mean(x, window)", "[Mean]", "cs_zscore(x, ddof=0)",
                  "macd(close, fastperiod=12, slowperiod=26, signalperiod=9)",
                  "Alpha158: 158 features", "Window policies: ours, qlib"):
        assert piece in text

    assert main(["factors", "list", "--alpha158"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 158
    assert lines[0].split(None, 1) == ["KMID", "(close - open) / open"]

    assert main(["factors", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(catalogue()))
    assert main(["factors", "list", "--alpha158", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 158


@pytest.fixture(scope="module")
def evaluated_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    bars = root / "bars.parquet"
    synthetic_bars(n_symbols=20, n_days=80, seed=9).to_parquet(bars)
    factors = root / "f.parquet"
    assert main(["factors", "compute", "--data", str(bars), "--factors",
                 "a = close / ts_delay(close, 5); b = ts_std(close, 10); c = cs_rank(volume)",
                 "--out", str(factors), "--backend", "cpu", "-q", "--validate", "none"]) == 0
    return root, bars, factors


def test_evaluate_shows_progress_and_plots_only_when_asked(evaluated_files, capsys):
    root, bars, factors = evaluated_files
    capsys.readouterr()
    base = ["factors", "evaluate", "--factors", str(factors), "--data", str(bars),
            "--horizons", "1,5", "--validate", "none"]
    assert main([*base, "--out", str(root / "r1.json")]) == 0
    captured = capsys.readouterr()
    assert "evaluating factors" in captured.err  # the progress bar, on stderr
    assert "evaluated 3 factors" in captured.out
    assert not list(root.rglob("*.png"))        # no plots unless asked

    assert main([*base, "--out", str(root / "r2.json"), "-q"]) == 0
    assert "evaluating factors" not in capsys.readouterr().err

    plots = root / "plots"
    assert main([*base, "--out", str(root / "r3.json"), "-q", "--plots", str(plots)]) == 0
    assert "plots in" in capsys.readouterr().out
    assert {p.name.split("_")[0] for p in plots.glob("*.png")} >= {"a", "b", "c"}
