"""Malformed grids and unknown or misspelled strategy parameters are typed one-line errors.

Through the Python API (``parse_grid``, ``ParameterGrid``, ``StrategyTemplate.check``,
``get_strategy``) and through ``qilin.cli.main`` (exit status 2, one line on stderr, no
traceback), before any data is loaded.
"""

from __future__ import annotations

import json

import pytest

from qilin.backtest.strategies import get_strategy, list_strategies
from qilin.backtest.sweeps import GRID_SYNTAX, ParameterGrid, parse_grid, run_sweep
from qilin.cli import main
from qilin.data.synthetic import synthetic_market
from qilin.errors import BacktestError, QilinError

BAD_GRIDS = {
    "fast=5-50 slow=100": "is not a value",
    "fast= slow=100": "no values after",
    "=5 slow=100": "name is missing",
    "fast=a:b slow=100": "three numbers",
    "fast=a:b:1 slow=100": "must be numbers",
    "fast=1:10:0 slow=100": "step must be positive",
    "fast=50:5:5 slow=100": "reversed",
    "fast=1:10 slow=100": "three numbers",
    "fast=1:10:2:3 slow=100": "three numbers",
    "fast=5,,10 slow=100": "empty value",
    "fast=5, slow=100": "empty value",
    "fast=nan slow=100": "finite",
    "fast=5 fast=6 slow=100": "twice",
    "fast slow=100": "name=values",
    "fa-st=5 slow=100": "not a parameter name",
    "fast=1:100000000:1 slow=100": "at most",
    "": "empty parameter grid",
}


@pytest.mark.parametrize("grid, problem", list(BAD_GRIDS.items()))
def test_malformed_grids_are_typed_errors_naming_the_syntax(grid, problem):
    with pytest.raises(BacktestError, match=problem) as err:
        parse_grid(grid)
    assert GRID_SYNTAX in str(err.value)
    assert "\n" not in str(err.value)


def test_grids_that_parse_but_do_not_fit_the_strategy():
    ma = get_strategy("ma_cross")
    with pytest.raises(BacktestError, match=r"did you mean 'slow'\?.*fast, slow, ma"):
        ParameterGrid("fast=5 slwo=200").combinations(ma)
    with pytest.raises(BacktestError, match="positive integer"):  # not silently dropped
        ParameterGrid("fast=5,abc slow=200").combinations(ma)
    with pytest.raises(BacktestError, match="finite number"):
        ParameterGrid("window=14 lower=low upper=70").combinations(get_strategy("rsi"))
    with pytest.raises(BacktestError, match="combinations"):
        ParameterGrid("fast=1:4000:1 slow=1:4000:1").combinations(ma)
    # fast >= slow combinations are dropped, the rest kept
    assert len(ParameterGrid("fast=5,50 slow=20").combinations(ma)) == 1
    panel = synthetic_market(3, 40, seed=1)
    with pytest.raises(BacktestError, match="no valid combination"):
        run_sweep(panel, "ma_cross", "fast=50 slow=20", backend="cpu")


def test_unknown_parameters_and_strategies_get_suggestions():
    with pytest.raises(BacktestError, match=r"unknown parameter\(s\) slwo \(did you mean "
                                            r"'slow'\?\); valid parameters: fast, slow, ma"):
        get_strategy("ma_cross").check({"fast": 5, "slwo": 200})
    with pytest.raises(BacktestError, match=r"did you mean 'lookback'"):
        get_strategy("momentum_topk").check({"lokback": 5, "k": 2})
    with pytest.raises(BacktestError, match=r"did you mean 'bollinger'"):
        get_strategy("bolinger")
    with pytest.raises(BacktestError, match="known: ma_cross, rsi, bollinger, momentum_topk"):
        get_strategy("macd")
    with pytest.raises(BacktestError, match="positive integer"):
        get_strategy("ma_cross").check({"fast": float("nan"), "slow": 20})
    with pytest.raises(BacktestError, match="positive integer"):
        get_strategy("ma_cross").check({"fast": "5-50", "slow": 20})


def test_list_strategies_names_parameters_and_defaults():
    t = list_strategies().set_index("name")
    assert list(t.index) == ["ma_cross", "rsi", "bollinger", "momentum_topk"]
    assert t.loc["rsi", "defaults"] == {"window": 14, "lower": 30.0, "upper": 70.0}
    assert t.loc["momentum_topk", "mode"] == "portfolio"
    assert t.loc["bollinger", "parameters"] == "window, k, mode"
    for name, row in t.iterrows():  # every default is accepted by the template
        tpl = get_strategy(name)
        assert set(row["defaults"]) <= set(tpl.param_names)


CLI_CASES = [
    (["sweep", "--strategy", "ma_cross", "--grid", "fast=5-50 slow=100"], "start:stop:step"),
    (["sweep", "--strategy", "ma_cross", "--grid", "fast="], "no values after"),
    (["sweep", "--strategy", "ma_cross", "--grid", "=5"], "name is missing"),
    (["sweep", "--strategy", "ma_cross", "--grid", "fast=a:b slow=9"], "three numbers"),
    (["sweep", "--strategy", "ma_cross", "--grid", "fast=1:9:0 slow=20"], "step must be"),
    (["sweep", "--strategy", "ma_cross", "--grid", "fast=9:1:1 slow=20"], "reversed"),
    (["sweep", "--strategy", "ma_cross", "--grid", "fast=5 slwo=200"], "did you mean 'slow'"),
    (["sweep", "--strategy", "ma_cross", "--grid", "fast=50 slow=20"], "no valid combination"),
    (["sweep", "--strategy", "ma_crss", "--grid", "fast=5 slow=20"], "did you mean 'ma_cross'"),
    (["run", "--strategy", "ma_cross", "--params", "fast=5,slwo=200"], "did you mean 'slow'"),
    (["run", "--strategy", "ma_cross", "--params", "fast=5 slow=20"], "separate items"),
    (["run", "--strategy", "ma_cross", "--params", "fast=a,slow=20"], "positive integer"),
    (["run", "--strategy", "rsi", "--params", "window=14,lower=x"], "finite number"),
    (["run", "--strategy", "ma_cross", "--params", "fast"], "not name=value"),
]


@pytest.mark.parametrize("args, message", CLI_CASES)
def test_cli_bad_grid_or_parameters_exit_2_with_one_line(tmp_path, capsys, args, message):
    # the data file does not exist: the mistake is reported before anything is loaded
    argv = ["backtest", args[0], "--data", str(tmp_path / "missing.parquet"), *args[1:],
            "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("qilin: error: ") and message in lines[0], lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert not (tmp_path / "out").exists()


def test_cli_strategies_lists_templates(capsys):
    assert main(["backtest", "strategies"]) == 0
    text = capsys.readouterr().out
    assert "ma_cross (signals)" in text and "fast*, slow*, ma" in text and "ma=sma" in text
    assert main(["backtest", "strategies", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in records] == ["ma_cross", "rsi", "bollinger", "momentum_topk"]
    assert records[1]["defaults"]["window"] == 14


def test_errors_are_qilin_errors():
    assert issubclass(BacktestError, QilinError)
