"""Factors over data that lacks a field they read (issue 10), on the real S&P 500 file.

The S&P file is plain OHLCV (no ``amount``/``vwap``): ``qilin factors compute --factors
alpha158`` ended in ``KeyError: "Panel has no field 'vwap'"``. Now the other 157 features are
computed, VWAP0 is NaN with ONE warning naming the missing input (or vwap is derived when
asked), and any other expression reading an absent field is an ExpressionError listing the
fields present.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from qilin.cli import main
from qilin.cli.common import load_data
from qilin.errors import ExpressionError
from qilin.factors.alpha158 import alpha158_features
from qilin.factors.calculator import FactorCalculator

N_SYMBOLS = 24  # real rows of the first symbols: the file's columns, a fraction of its time


@pytest.fixture(scope="module")
def sp_bars(sp500_path, tmp_path_factory):
    df = pd.read_parquet(sp500_path)
    keep = sorted(df["symbol"].unique())[:N_SYMBOLS]
    path = tmp_path_factory.mktemp("sp") / "sp_subset.parquet"
    df[df["symbol"].isin(keep)].to_parquet(path)
    return path


@pytest.fixture(scope="module")
def sp_panel(sp_bars):
    panel = load_data(str(sp_bars), "none")
    assert not {"vwap", "amount"} & set(panel.fields)  # the file really is plain OHLCV
    return panel


def _compute(calc, panel):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = calc.compute(panel)
    return result, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


@pytest.fixture(scope="module")
def alpha(sp_panel):
    return _compute(FactorCalculator("alpha158", backend="cpu", progress=False), sp_panel)


def test_alpha158_without_vwap_computes_157_features_and_warns_once(alpha, sp_panel):
    result, messages = alpha
    assert len(messages) == 1
    assert "no field 'vwap'" in messages[0] and "VWAP0 is NaN" in messages[0]
    assert "fields present: close, high, low, open, returns, volume" in messages[0]
    assert result.absent == {"VWAP0": ["vwap"]}
    assert np.isnan(result["VWAP0"]).all()
    others = [n for n in result.names if n != "VWAP0"]
    assert len(others) == 157
    assert all(np.isfinite(result[n]).any() for n in others)
    # the 157 are the same numbers as a run that never asked for VWAP0
    subset = [(n, e) for n, e in alpha158_features() if n in ("MA5", "CORD20", "KMID", "RSV60")]
    want = FactorCalculator(subset, backend="cpu", progress=False).compute(sp_panel)
    for name, _ in subset:
        np.testing.assert_array_equal(result[name], want[name])


def test_derive_vwap_only_when_asked(alpha, sp_panel):
    calc = FactorCalculator([("VWAP0", "vwap / close"), ("MA5", "ts_mean(close, 5) / close")],
                            backend="cpu", progress=False, derive_vwap=True)
    result, messages = _compute(calc, sp_panel)
    assert messages == []
    assert result.derived == {"vwap": "(high + low + close) / 3"} and result.absent == {}
    h, lo, c = (sp_panel[f] for f in ("high", "low", "close"))
    with np.errstate(invalid="ignore"):
        np.testing.assert_allclose(result["VWAP0"], (h + lo + c) / 3 / c, rtol=1e-12)
    np.testing.assert_array_equal(result["MA5"], alpha[0]["MA5"])


def test_other_expressions_reading_an_absent_field_raise_with_the_fields_present(sp_panel):
    calc = FactorCalculator({"ok": "close / open", "turn": "ts_mean(amount, 5) / volume"},
                            backend="cpu", progress=False)
    with pytest.raises(ExpressionError) as info:
        calc.compute(sp_panel)
    msg = str(info.value)
    assert "factor 'turn' reads field 'amount', which the data does not have" in msg
    assert "(fields present: close, high, low, open, returns, volume)" in msg
    assert info.value.position == 8
    # asked to, it is NaN instead, with one warning
    calc = FactorCalculator({"ok": "close / open", "turn": "ts_mean(amount, 5) / volume"},
                            backend="cpu", progress=False, missing_fields="nan")
    result, messages = _compute(calc, sp_panel)
    assert len(messages) == 1 and "factor turn is NaN" in messages[0]
    assert np.isnan(result["turn"]).all() and np.isfinite(result["ok"]).any()


def test_streaming_blocks_warn_once(sp_panel, tmp_path):
    calc = FactorCalculator(alpha158_features(windows=(5,)), backend="cpu", progress=False,
                            block_symbols=5, missing_fields="nan")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        calc.to_parquet(sp_panel, tmp_path / "a.parquet")
    assert len([w for w in caught if "no field 'vwap'" in str(w.message)]) == 1
    got = pd.read_parquet(tmp_path / "a.parquet")
    assert got["VWAP0"].isna().all() and got["MA5"].notna().any()


def test_cli_alpha158_on_plain_ohlcv(sp_bars, tmp_path, capsys):
    out = tmp_path / "alpha.parquet"
    code = main(["factors", "compute", "--data", str(sp_bars), "--factors", "alpha158",
                 "--out", str(out), "--backend", "cpu", "-q", "--validate", "none",
                 "--dtype", "float32"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    warned = [line for line in captured.err.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1 and "no field 'vwap'" in warned[0]
    assert "Traceback" not in captured.err
    got = pd.read_parquet(out)
    assert list(got.columns[2:]) == [n for n, _ in alpha158_features()]
    assert got["VWAP0"].isna().all() and got["ROC60"].notna().any()

    code = main(["factors", "compute", "--data", str(sp_bars), "--factors", "VWAP0 = vwap/close",
                 "--out", str(tmp_path / "v.parquet"), "--backend", "cpu", "-q",
                 "--validate", "none", "--derive-vwap"])
    captured = capsys.readouterr()
    assert code == 0 and "warning:" not in captured.err
    assert "vwap derived as (high + low + close) / 3" in captured.out

    code = main(["factors", "compute", "--data", str(sp_bars), "--factors", "t = amount/volume",
                 "--out", str(tmp_path / "t.parquet"), "--backend", "cpu", "-q",
                 "--validate", "none"])
    captured = capsys.readouterr()
    assert code == 2
    assert "reads field 'amount'" in captured.err and "fields present: close" in captured.err
    assert "Traceback" not in captured.err


def test_bad_missing_fields_policy_is_refused_at_construction():
    from qilin.errors import DataError

    with pytest.raises(DataError, match="missing_fields must be 'raise' or 'nan'"):
        FactorCalculator({"a": "close"}, missing_fields="ignore")
