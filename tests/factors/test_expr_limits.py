"""Hostile expressions end in bounded time and memory with an ExpressionError at a position.

Each case reproduces a defect of issue 11: deep nesting raised a raw RecursionError, a
5,000-term sum did so at evaluation, long ``+`` chains used memory quadratically, huge windows
raised OverflowError (``rsi`` spent seconds compiling first), and non-ASCII digits were read
as numbers.
"""

from __future__ import annotations

import pickle
import time
import tracemalloc

import numpy as np
import pandas as pd
import pytest

from qilin.data.panel import Panel
from qilin.errors import ExpressionError
from qilin.factors.calculator import FactorCalculator
from qilin.factors.expr import MAX_DEPTH, MAX_EXPRESSION_LENGTH, evaluate, parse
from qilin.factors.registry import MAX_INTEGER_ARGUMENT


@pytest.fixture
def panel() -> Panel:
    rng = np.random.default_rng(3)
    close = 10 + np.cumsum(rng.normal(0, 0.2, size=(30, 3)), axis=0)
    return Panel.from_arrays({"close": close, "volume": close * 100},
                             pd.date_range("2024-01-01", periods=30), list("ABC"))


def _error(text: str) -> ExpressionError:
    start = time.perf_counter()
    with pytest.raises(ExpressionError) as info:
        parse(text)
    assert time.perf_counter() - start < 2.0, "rejection must be quick"
    return info.value


@pytest.mark.parametrize("text, position, reason", [
    ("(" * 500 + "close" + ")" * 500, MAX_DEPTH, "nested more than 100 levels"),
    ("abs(" * 330 + "close" + ")" * 330, 4 * MAX_DEPTH, "nested more than 100 levels"),
    ("-" * 400 + "close", MAX_DEPTH, "nested more than 100 levels"),
    ("close" + "**close" * 300, 7 * MAX_DEPTH, "nested more than 100 levels"),
])
def test_deep_nesting_is_a_typed_error_not_recursion(text, position, reason):
    err = _error(text)
    assert reason in str(err)
    assert err.position == position
    assert err.expression == text


def test_long_sums_are_refused_by_length_or_depth_not_at_evaluation():
    err = _error(" + ".join(["close"] * 5000))
    assert err.position == MAX_EXPRESSION_LENGTH and "characters long" in str(err)
    err = _error("+".join(["close"] * (MAX_DEPTH + 1)))
    assert "tree deeper than 100 levels" in str(err)
    assert err.position == 6 * MAX_DEPTH - 1  # the operator that went one level too deep


def test_the_deepest_accepted_sum_evaluates_and_pickles(panel):
    node = parse("+".join(["close"] * MAX_DEPTH))
    assert node.depth == MAX_DEPTH
    out = evaluate(node, panel)
    np.testing.assert_allclose(out, MAX_DEPTH * panel["close"], rtol=1e-12)
    assert pickle.loads(pickle.dumps(node)) == node  # what a cluster does with the nodes
    assert [n.key for n in node.walk()][-1] == node.key


def test_error_excerpt_stays_short_for_long_input():
    err = _error("close + " * 2000 + "(")
    excerpt = str(err).splitlines()[1]
    assert len(excerpt) < 100


def test_memory_is_linear_in_the_input():
    # the longest accepted inputs: a flat chain at the depth limit, and a balanced sum
    chain = "+".join(["close"] * MAX_DEPTH)
    terms = ["close", "volume", "open", "high"]
    balanced = terms[:]
    while len("+".join(f"({t})" for t in balanced)) < MAX_EXPRESSION_LENGTH // 2:
        balanced = [f"({a}+{b})" for a, b in zip(balanced[::2], balanced[1::2], strict=False)] \
            + balanced + balanced
    text = "+".join(f"({t})" for t in balanced)[: MAX_EXPRESSION_LENGTH]
    text = text[: text.rfind(")+") + 1] if text.count("(") != text.count(")") else text
    for expr in (chain, text, "close + " * 6000):  # the last: 48 KB, refused at once
        tracemalloc.start()
        try:
            try:
                parse(expr)
            except ExpressionError:
                pass
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 200 * max(len(expr), 1000) + 2_000_000, (len(expr), peak)


@pytest.mark.parametrize("text, position", [
    ("ts_mean(close, 9223372036854775808)", 15),
    ("ts_mean(close, 1e300)", 15),
    ("rsi(close, 9223372036854775807)", 11),
    ("ts_delay(close, 99999999999)", 16),
    ("ts_std(close, 5, 9223372036854775807)", 17),
])
def test_huge_windows_are_refused_quickly(text, position):
    err = _error(text)
    assert err.position == position
    assert f"above the limit of {MAX_INTEGER_ARGUMENT:,}" in str(err)


def test_window_longer_than_the_data_is_a_typed_error(panel):
    with pytest.raises(ExpressionError) as info:
        evaluate("ts_mean(close, 31)", panel)
    assert "longer than the data (30 dates)" in str(info.value)
    assert info.value.position == 15
    assert evaluate("ts_mean(close, 30)", panel).shape == (30, 3)
    calc = FactorCalculator({"ok": "close", "long": "close / ts_max(close, 200)"},
                            backend="cpu", progress=False)
    with pytest.raises(ExpressionError, match="factor 'long': window 200 of ts_max") as info:
        calc.compute(panel)
    assert info.value.position == 22


@pytest.mark.parametrize("text, position", [
    ("ts_mean(close, ৪)", 15),          # Bengali four
    ("ts_mean(close, ٥)", 15),          # Arabic-Indic five
    ("close * ５", 8),                  # full-width five
    ("ts_mean(close, 1٥)", 16),         # ASCII then non-ASCII digit
    ("close٥", 5),
])
def test_non_ascii_digits_are_refused(text, position):
    err = _error(text)
    assert err.position == position
    assert "non-ASCII digit" in str(err)
