"""Property/fuzz test of the expression language (issue 11).

Thousands of generated inputs (random text, grammar-built expressions with random arguments,
mutated Alpha158 formulas) go through ``parse`` and, when they parse, through ``evaluate`` on
a small real-shaped panel. Every outcome must be a result of the panel's shape or a typed
:class:`~qilin.errors.QilinError`, within a time bound; a few of the largest generated inputs
are also checked for a memory bound. Any other exception (RecursionError, OverflowError,
KeyError, TypeError, a numba TypingError, ...) or a RuntimeWarning fails the test.

Budget: about 20-30 s on a loaded 2-core machine (``max_examples`` below); no example
database is written (``database=None``).
"""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from qilin.data.panel import Panel
from qilin.errors import QilinError
from qilin.factors.alpha158 import alpha158_features
from qilin.factors.expr import MAX_EXPRESSION_LENGTH, evaluate, parse
from qilin.factors.qlib_window import qlib_registry
from qilin.factors.registry import active_registry

# operators promise not to warn (docs/operators.md): a RuntimeWarning fails an example
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

N_DATES, N_SYMBOLS = 40, 3
TIME_BOUND_S = 5.0  # per input, parse + evaluate, generous for a loaded CI machine
FUZZ = settings(deadline=None, database=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _panel() -> Panel:
    rng = np.random.default_rng(7)
    close = 10 + np.cumsum(rng.normal(0, 0.2, size=(N_DATES, N_SYMBOLS)), axis=0)
    close[3, 1] = np.nan  # a suspension
    close[:5, 2] = np.nan  # a late listing
    fields = {"close": close, "open": close * 0.99, "high": close * 1.01, "low": close * 0.98,
              "volume": rng.integers(0, 1000, size=close.shape).astype(float)}
    fields["volume"][7, 0] = 0.0
    return Panel.from_arrays(fields, pd.date_range("2024-01-01", periods=N_DATES),
                             list("ABC"))


PANEL = _panel()
REGISTRY = active_registry()
QLIB = qlib_registry(REGISTRY)
SPECS = [REGISTRY.get(n) for n in REGISTRY.names()]
VARIABLES = ["close", "open", "high", "low", "volume", "$close", "vwap", "nosuch"]


@pytest.fixture(scope="module", autouse=True)
def _warm_kernels() -> None:
    """Load every operator's compiled kernels once, outside the timed examples."""
    for spec in SPECS:
        args = ", ".join("close" if p.kind == "series" else "3" for p in spec.params
                         if p.default is None)
        for registry in (REGISTRY, QLIB):
            try:
                evaluate(f"{spec.name}({args})", PANEL, registry)
            except QilinError:
                pass


def _check(text: str, registry=REGISTRY) -> None:
    """The property: a result of the panel's shape or a typed error, within the bound."""
    start = time.perf_counter()
    try:
        node = parse(text, registry, variables=PANEL.fields)
    except QilinError:
        node = None
        event("parse: typed error")
    if node is not None:
        try:
            out = evaluate(node, PANEL, registry)
        except QilinError as exc:
            event(f"evaluate: {type(exc).__name__}")
        else:
            event("evaluate: result")
            assert tuple(out.shape) == PANEL.shape, (text, out.shape)
            assert out.dtype == np.float64, (text, out.dtype)
    elapsed = time.perf_counter() - start
    assert elapsed < TIME_BOUND_S, f"{text[:200]!r} took {elapsed:.1f}s"


# ------------------------------------------------------------------ random text
_ALPHABET = st.sampled_from([*"()+-*/^<>=!&|,. _$0123456789eE'\"[]:;@#~\\\t\n",
                             "close", "volume", "ts_mean", "cs_rank", "rsi", "**", "1e308",
                             "9223372036854775807", "৪", "٥", "５", "é", "\x00", "\u200b",
                             "__import__", "lambda", "Mean(", "$"])


@settings(FUZZ, max_examples=2000)
@given(st.lists(_ALPHABET, max_size=60).map("".join))
def test_random_text_parses_or_raises_a_typed_error(text):
    _check(text)


# --------------------------------------------------------- grammar-built expressions
def _number() -> st.SearchStrategy[str]:
    return st.one_of(
        st.integers(-5, 50).map(str),
        st.sampled_from(["0", "0.5", "1e-12", "2.5", "1e308", "1e309", "-0", "40", "41",
                         "1000000", "1000001", "9223372036854775807", "99999999999999999999"]),
        st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr),
    )


def _call(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    def build(spec_index: int, draw_args: list[str], numbers: list[str], extra: bool) -> str:
        spec = SPECS[spec_index % len(SPECS)]
        args = []
        for i, p in enumerate(spec.params):
            if p.kind == "series":
                args.append(draw_args[i % len(draw_args)])
            elif p.default is None or i % 2 == 0:
                args.append(numbers[i % len(numbers)])
        if extra:
            args.append(draw_args[0])
        return f"{spec.name}({', '.join(args)})"

    return st.builds(build, st.integers(0, 10_000), st.lists(children, min_size=1, max_size=3),
                     st.lists(_number(), min_size=1, max_size=3), st.booleans())


def _expressions() -> st.SearchStrategy[str]:
    leaves = st.one_of(st.sampled_from(VARIABLES), _number())
    ops = st.sampled_from(["+", "-", "*", "/", "**", "^", "<", "<=", ">", ">=", "==", "!=",
                           "&", "|"])

    def extend(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            st.tuples(children, ops, children).map(lambda t: f"{t[0]} {t[1]} {t[2]}"),
            children.map(lambda c: f"({c})"),
            children.map(lambda c: f"-{c}"),
            _call(children),
        )

    return st.recursive(leaves, extend, max_leaves=12)


@settings(FUZZ, max_examples=1200)
@given(_expressions())
def test_generated_expressions_evaluate_or_raise_a_typed_error(text):
    _check(text)


@settings(FUZZ, max_examples=600)
@given(_expressions())
def test_generated_expressions_under_the_qlib_window_policy(text):
    _check(text, QLIB)


# ------------------------------------------------------------ mutated Alpha158 formulas
_ALPHA = [expr for _, expr in alpha158_features(windows=(5, 10, 60))]


_PIECES = st.sampled_from([*"()+-*/,.0123456789 ", "close", "৪", "1e999", "ts_mean("])


@settings(FUZZ, max_examples=1500)
@given(st.sampled_from(_ALPHA),
       st.lists(st.tuples(st.integers(0, 400), st.integers(0, 3),
                           _PIECES),
                max_size=4))
def test_mutated_alpha158_formulas_evaluate_or_raise_a_typed_error(base, edits):
    text = base
    for pos, kind, piece in edits:
        pos %= len(text) + 1
        if kind == 0:  # insert
            text = text[:pos] + piece + text[pos:]
        elif kind == 1:  # delete one character
            text = text[:pos] + text[pos + 1:]
        elif kind == 2:  # replace one character
            text = text[:pos] + piece + text[pos + 1:]
        else:  # duplicate a slice (grows nesting)
            text = text[:pos] + text[pos:pos + 20] + text[pos:]
    _check(text)


# --------------------------------------------------------------- big inputs: memory
@settings(FUZZ, max_examples=8)
@given(st.sampled_from(["+", "*", "-", "**"]), st.sampled_from(["close", "(close)",
                                                                "abs(close)", "-close"]),
       st.integers(1_000, 10 * MAX_EXPRESSION_LENGTH))
def test_big_inputs_stay_within_time_and_memory_bounds(op, term, length):
    text = (term + op) * (length // (len(term) + len(op))) + term
    tracemalloc.start()
    try:
        _check(text)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20, f"{len(text)} characters used {peak / 2**20:.1f} MiB"
