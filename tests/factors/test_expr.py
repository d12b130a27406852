"""The expression language: parsing, checking with positions, canonical keys, evaluation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from qilin.data.panel import Panel
from qilin.errors import ExpressionError
from qilin.factors import ops
from qilin.factors.expr import (
    Call,
    Const,
    Var,
    evaluate,
    evaluate_nodes,
    parse,
    parse_factor_set,
    tokenize,
    unique_nodes,
)
from qilin.factors.registry import (
    OperatorRegistry,
    Param,
    active_registry,
    default_registry,
    register_operator,
)


@pytest.fixture
def panel() -> Panel:
    rng = np.random.default_rng(1)
    close = 10 + np.cumsum(rng.normal(0, 0.2, size=(30, 4)), axis=0)
    close[5, 1] = np.nan
    volume = rng.integers(100, 1000, size=(30, 4)).astype(float)
    return Panel.from_arrays({"close": close, "open": close * 0.99, "volume": volume,
                              "float_mcap": close * 1e6},
                             pd.date_range("2024-01-01", periods=30), list("ABCD"))


# --------------------------------------------------------------------------- parsing
@pytest.mark.parametrize("text, key", [
    ("ts_mean(close, 5) / close - 1", "sub(div(ts_mean(close,5),close),1)"),
    ("cs_rank(close)", "cs_rank(close)"),
    ("-close ** 2", "neg(pow(close,2))"),
    ("close ^ 2", "pow(close,2)"),
    ("2 ** 3 ** 2", "512"),  # right-associative, folded
    ("close - open - volume", "sub(sub(close,open),volume)"),
    ("close / open / volume", "div(div(close,open),volume)"),
    ("(close + open) * 2", "mul(2,add(close,open))"),
    ("close > 1 & close < 3 | open == 2", "or_(and_(gt(close,1),lt(close,3)),eq(2,open))"),
    ("close <= open", "le(close,open)"),
    ("close >= open", "ge(close,open)"),
    ("close != open", "ne(close,open)"),
    ("1e-12 + close", "add(1e-12,close)"),
    ("+close", "close"),
    (".5 * close", "mul(0.5,close)"),
    ("ts_std(close, 5)", "ts_std(close,5,1)"),  # default ddof filled in
])
def test_parse_gives_canonical_keys(text, key):
    assert parse(text).key == key


def test_commutative_operators_share_a_key():
    assert parse("close * open").key == parse("open * close").key
    assert parse("close + 1").key == parse("1 + close").key
    assert parse("close - open").key != parse("open - close").key


def test_qlib_aliases_resolve_to_qilin_operators():
    pairs = [
        ("Mean($close, 5)/$close", "ts_mean(close, 5) / close"),
        ("Ref($close, 1)", "ts_delay(close, 1)"),
        ("Std($volume, 20)", "ts_std(volume, 20)"),
        ("Corr($close, Log($volume+1), 10)", "ts_corr(close, log(volume + 1), 10)"),
        ("Greater($close-Ref($close,1), 0)", "greater(close - ts_delay(close, 1), 0)"),
        ("IdxMax($high, 5)", "ts_argmax(high, 5)"),
        ("Quantile($close, 5, 0.8)", "ts_quantile(close, 5, 0.8)"),
    ]
    for qlib, ours in pairs:
        assert parse(qlib).key == parse(ours).key, qlib


def test_nodes_are_immutable_and_hash_by_content():
    a, b = parse("ts_mean(close, 5)"), parse("  ts_mean( close,5 )")
    assert a == b and hash(a) == hash(b)
    assert isinstance(a, Call) and a.kind == "ts"
    assert a.args == (Var(name="close"), Const(value=5.0))
    with pytest.raises(AttributeError):
        a.op = "ts_sum"  # type: ignore[misc]


# ------------------------------------------------------------------------ rejections
@pytest.mark.parametrize("text, position, reason", [
    ("ts_mean(close, -3)", 15, "'window' of ts_mean must be a positive integer, got -3"),
    ("ts_mean(close, 0)", 15, "must be a positive integer, got 0"),
    ("ts_mean(close, 2.5)", 15, "must be an integer, got 2.5"),
    ("ts_mean(close)", 0, "ts_mean(x, window) takes 2 arguments, got 1"),
    ("ts_mean(close, 5, 6)", 0, "takes 2 arguments, got 3"),
    ("ts_mean(close, open)", 15, "must be a constant number, not an expression"),
    ("foo(close)", 0, "unknown operator 'foo'"),
    ("close + nosuchfield", 8, "unknown variable 'nosuchfield'"),
    ("close.__class__", 5, "attribute access"),
    ("__import__('os')", 0, "dunder names"),
    ("lambda: 1", 0, "lambda expressions are not allowed"),
    ("import os", 0, "import is not allowed"),
    ("close + 'a'", 8, "string literals are not allowed"),
    ("close = 1", 6, "assignment is not allowed"),
    ("close[0]", 5, "unexpected character '['"),
    ("(close", 6, "missing ')'"),
    ("close +", 7, "unexpected end of expression"),
    ("close open", 6, "expected an operator before 'open'"),
    ("", 0, "empty expression"),
    ("ts_mean", 0, "operator 'ts_mean' must be called with arguments"),
    ("1.2.3", 0, "malformed number"),
    ("ts_quantile(close, 5, close)", 22, "'q' of ts_quantile must be a constant"),
    ("ts_mean(close, 5,)", 17, "unexpected ')'"),
])
def test_errors_give_position_and_reason(text, position, reason):
    with pytest.raises(ExpressionError) as info:
        parse(text)
    err = info.value
    assert err.position == position, str(err)
    assert reason in str(err)
    assert err.expression == text


def test_error_message_points_at_the_problem():
    with pytest.raises(ExpressionError) as info:
        parse("ts_mean(close, -3)")
    lines = str(info.value).splitlines()
    assert lines[1].strip() == "ts_mean(close, -3)"
    assert lines[2].index("^") - lines[1].index("t") == 15


def test_tokenizer_never_evaluates_anything():
    tokens = tokenize("ts_mean($close, 5) >= 1e-3")
    assert [t.kind for t in tokens] == ["name", "(", "name", ",", "num", ")", "op", "num", "end"]
    assert tokens[2].text == "$close"


def test_extra_panel_fields_are_variables_when_allowed():
    with pytest.raises(ExpressionError, match="unknown variable 'float_mcap'"):
        parse("log(float_mcap)")
    assert parse("log(float_mcap)", variables=["float_mcap"]).key == "log(float_mcap)"


def test_factor_set_names_the_bad_factor():
    with pytest.raises(ExpressionError, match="factor 'b': unknown operator 'nope'"):
        parse_factor_set({"a": "close", "b": "nope(close)"})
    with pytest.raises(ExpressionError, match="defined twice"):
        parse_factor_set([("a", "close"), ("a", "open")])


# -------------------------------------------------------------------------- registry
def test_registered_operators_are_checked_like_builtins():
    reg = default_registry().copy()
    reg.register("ts_range", lambda x, w: ops.ts_max(x, w) - ops.ts_min(x, w), kind="ts",
                 params=["x:series", "w:window"])
    assert parse("ts_range(close, 5)", reg).kind == "ts"
    with pytest.raises(ExpressionError, match="'w' of ts_range must be a positive integer"):
        parse("ts_range(close, 0)", reg)
    with pytest.raises(ExpressionError, match="unknown operator 'ts_range'"):
        parse("ts_range(close, 5)")  # the default registry is untouched


def test_register_operator_reaches_the_default_registry(panel):
    register_operator("half_it", lambda x: x / 2, params=["series"], replace=True)
    out = evaluate("half_it(close)", panel)
    np.testing.assert_array_equal(out, panel["close"] / 2)
    with pytest.raises(ValueError, match="built in"):
        register_operator("ts_mean", lambda x, w: x, kind="ts")
    assert "half_it" in active_registry()


def test_registry_validates_definitions():
    reg = OperatorRegistry()
    with pytest.raises(ValueError, match="plain identifier"):
        reg.register("__evil__", lambda x: x)
    with pytest.raises(ValueError, match="kind"):
        reg.register("f", lambda x: x, kind="weird")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="series argument"):
        reg.register("g", lambda w: w, params=["window"])
    reg.register("h", lambda x, n=3: x, params=[Param("x", "series"), Param("n", "window", 3)])
    assert reg.get("h").arity == (1, 2)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("h", lambda x: x)


def test_operators_are_bound_from_ops_by_signature():
    reg = default_registry()
    assert reg.get("ts_mean").func is ops.ts_mean
    assert [p.kind for p in reg.get("ts_quantile").params] == ["series", "window", "number"]
    assert [p.kind for p in reg.get("ts_corr").params] == ["series", "series", "window"]
    assert reg.get("cs_rank").kind == "cs"
    assert reg.get("Mean") is reg.get("ts_mean")


# ------------------------------------------------------------------------ evaluation
def test_evaluate_matches_ops_directly(panel):
    c, o = panel["close"], panel["open"]
    got = evaluate("ts_mean(close, 5) / close - 1", panel)
    np.testing.assert_array_equal(got, ops.sub(ops.div(ops.ts_mean(c, 5), c), 1.0))
    got = evaluate("cs_rank(close - open)", panel)
    np.testing.assert_array_equal(got, ops.cs_rank(c - o))
    got = evaluate("close > ts_delay(close, 1)", panel)
    np.testing.assert_array_equal(got, ops.gt(c, ops.ts_delay(c, 1)))
    assert np.isnan(got[5, 1])  # NaN in, NaN out (not "False")


def test_logical_operators_follow_the_nan_policy(panel):
    got = evaluate("(close > 10) | (open < 0)", panel)
    want = ((panel["close"] > 10) | (panel["open"] < 0)).astype(float)
    want[np.isnan(panel["close"])] = np.nan
    np.testing.assert_array_equal(got, want)


def test_constant_expressions_fill_the_panel(panel):
    np.testing.assert_array_equal(evaluate("1 + 2", panel), np.full(panel.shape, 3.0))


def test_common_subexpressions_run_once(panel):
    calls = []
    reg = default_registry().copy()

    def counted_mean(x, w):
        calls.append(w)
        return ops.ts_mean(x, w)

    reg.register("cmean", counted_mean, kind="ts", params=["series", "window"])
    roots = [parse(t, reg) for t in ("cmean(close, 5) / close", "cmean(close, 5) - 1",
                                     "cs_rank(cmean(close, 5))", "cmean(close, 10)")]
    nodes = unique_nodes(roots)
    out = evaluate_nodes(nodes, {"close": panel["close"]}, [r.key for r in roots], reg)
    assert sorted(calls) == [5, 10]
    np.testing.assert_array_equal(out[roots[1].key], ops.ts_mean(panel["close"], 5) - 1)


def test_finish_runs_once_per_kept_value_after_its_last_reader(panel):
    roots = [parse(t) for t in ("ts_mean(close, 3)", "ts_mean(close, 3) * 2", "close")]
    keys = [r.key for r in roots]
    seen: list[tuple[str, np.dtype]] = []

    def finish(key, value):
        seen.append((key, value.dtype))
        return value.astype(np.float32)

    out = evaluate_nodes(unique_nodes(roots), {"close": panel["close"]}, keys, finish=finish)
    # each computed result once; the field passed in is not touched
    assert sorted(k for k, _ in seen) == sorted(keys[:2])
    assert all(dtype == np.float64 for _, dtype in seen)
    # the reader of ts_mean saw the float64 value, not the cast one
    np.testing.assert_array_equal(out[keys[1]], (ops.ts_mean(panel["close"], 3) * 2)
                                  .astype(np.float32))
    assert out[keys[0]].dtype == np.float32 and out[keys[2]].dtype == np.float64


def test_indicators_are_operators(panel):
    from qilin.factors import indicators

    np.testing.assert_array_equal(evaluate("rsi(close, 14)", panel),
                                  indicators.rsi(panel["close"], 14))
    spec = default_registry().get("stoch_k")
    assert [p.kind for p in spec.params] == ["series"] * 3 + ["window"] * 3
    with pytest.raises(ExpressionError, match="'timeperiod' of rsi must be a positive integer"):
        parse("rsi(close, 0)")
