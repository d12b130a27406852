"""The factor expression language: parse ``ts_mean(close, 5) / close - 1`` into an operator tree.

Expressions are parsed by a small tokenizer and a Pratt parser (no ``eval``/``exec``, no
Python ``ast``): only numbers, variables (Panel fields such as ``open high low close volume
amount vwap returns``, optionally Qlib-style ``$close``), calls to registered operators
(:mod:`qilin.factors.registry`, Qlib names such as ``Mean`` or ``Ref`` included) and the
operators ``+ - * / ** ^ < <= > >= == != & |`` with parentheses are accepted. Anything else
(attribute access, strings, lambdas, imports, dunder names, unknown names, wrong arity, a
window that is not a positive integer) raises :class:`~qilin.errors.ExpressionError` with
the position of the problem.

Hostile input is bounded: an expression longer than :data:`MAX_EXPRESSION_LENGTH`
characters, nested (parentheses, calls, unary signs, ``**`` chains) or building a tree deeper
than :data:`MAX_DEPTH` levels (a chain of more than ``MAX_DEPTH`` ``+`` terms is that deep),
or with a window/integer argument above :data:`~qilin.factors.registry.MAX_INTEGER_ARGUMENT`
is an :class:`~qilin.errors.ExpressionError`, never a ``RecursionError``/``OverflowError``.
Parsing and tree traversal use bounded stack depth and memory linear in the input. Numbers
are ASCII digits only (``ts_mean(close, ৪)`` is rejected, not read as 4). A window longer
than the data is rejected at evaluation (:func:`check_windows`).

The result is a tree of immutable nodes. Each node has a canonical :attr:`Node.key` (after
alias resolution, constant folding and ordering the arguments of commutative operators), so
equal subexpressions are found and computed once across a whole factor set
(:func:`evaluate`).

Operator precedence, loosest first: ``|``, ``&``, comparisons, ``+ -``, ``* /``, unary
``-``, ``** ^`` (right-associative, so ``-x**2`` is ``-(x**2)``).

Examples
--------
>>> node = parse("ts_mean(close, 5) / close - 1")
>>> node.key
'sub(div(ts_mean(close,5),close),1)'
>>> parse("Mean($close, 5)/$close - 1").key == node.key
True
>>> try:
...     parse("ts_mean(close, -3)")
... except ExpressionError as err:
...     print(err.position, str(err).splitlines()[0])
15 'window' of ts_mean must be a positive integer, got -3 (at position 15)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from qilin.backend import array_module
from qilin.errors import ExpressionError
from qilin.factors.registry import (
    BINARY_OPERATORS,
    OperatorRegistry,
    OperatorSpec,
    active_registry,
    check_constant,
)

#: Longest expression accepted, in characters.
MAX_EXPRESSION_LENGTH = 10_000
#: Deepest nesting accepted: parser recursion (parentheses, calls, unary signs, ``**``) and
#: the depth of the resulting tree (so a sum of more than this many terms is refused too).
MAX_DEPTH = 100
_ASCII_DIGITS = frozenset("0123456789")

#: Variables every expression may use (any other Panel field is allowed when passed).
STANDARD_VARIABLES = frozenset(
    {"open", "high", "low", "close", "volume", "amount", "vwap", "returns"})
_FORBIDDEN_WORDS = {
    "lambda": "lambda expressions are not allowed",
    "import": "import is not allowed",
    "from": "import is not allowed",
    "def": "definitions are not allowed",
    "class": "definitions are not allowed",
    "exec": "exec is not allowed",
    "eval": "eval is not allowed",
}
_INFIX_PRECEDENCE = {
    "|": 1, "&": 2,
    "<": 3, "<=": 3, ">": 3, ">=": 3, "==": 3, "!=": 3,
    "+": 4, "-": 4,
    "*": 5, "/": 5,
    "**": 7, "^": 7,
}
_UNARY_PRECEDENCE = 6
_RIGHT_ASSOC = {"**", "^"}


# ------------------------------------------------------------------------------ nodes
@dataclass(frozen=True)
class Node:
    """Base of the expression tree; compare and hash by :attr:`key`."""

    pos: int = field(default=0, compare=False, repr=False)

    @property
    def key(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def children(self) -> tuple[Node, ...]:
        """Direct sub-expressions (empty for leaves)."""
        return ()

    @property
    def depth(self) -> int:
        """Levels of the tree under this node (a leaf is 1)."""
        return 1

    def walk(self) -> Iterator[Node]:
        """This node and every descendant, children before parents (post-order).

        Iterative: the Python stack does not grow with the depth of the tree.
        """
        stack: list[tuple[Node, int]] = [(self, 0)]
        while stack:
            node, i = stack[-1]
            kids = node.children()
            if i < len(kids):
                stack[-1] = (node, i + 1)
                stack.append((kids[i], 0))
            else:
                stack.pop()
                yield node

    def __str__(self) -> str:
        return self.key


@dataclass(frozen=True)
class Const(Node):
    """A number literal."""

    value: float = 0.0

    @property
    def key(self) -> str:
        v = float(self.value)
        return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)


@dataclass(frozen=True)
class Var(Node):
    """A Panel field such as ``close``."""

    name: str = ""

    @property
    def key(self) -> str:
        return self.name


@dataclass(frozen=True)
class Call(Node):
    """A call of a registered operator (binary operators are calls too: ``a+b`` is add)."""

    op: str = ""
    args: tuple[Node, ...] = ()
    kind: str = field(default="elementwise", compare=False)

    def __post_init__(self) -> None:
        # computed once, bottom-up, as the tree is built: no recursion on first use later
        _ = self.key, self.depth

    @cached_property
    def key(self) -> str:  # type: ignore[override]
        return f"{self.op}({','.join(a.key for a in self.args)})"

    @cached_property
    def depth(self) -> int:  # type: ignore[override]
        return 1 + max((a.depth for a in self.args), default=0)

    def children(self) -> tuple[Node, ...]:
        return tuple(a for a in self.args if not isinstance(a, Const))


# -------------------------------------------------------------------------- tokenizer
@dataclass(frozen=True)
class Token:
    kind: str  # "num", "name", "op", "(", ")", ",", "end"
    text: str
    pos: int


_OPERATOR_CHARS = ("**", "<=", ">=", "==", "!=", "+", "-", "*", "/", "^", "<", ">", "&", "|")


def tokenize(text: str) -> list[Token]:
    """Split an expression into tokens, rejecting anything outside the language."""
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
            continue
        if c.isdigit() and c not in _ASCII_DIGITS:
            raise ExpressionError(f"non-ASCII digit {c!r}: write numbers with 0-9", text, i)
        if c in _ASCII_DIGITS or (c == "." and i + 1 < n and text[i + 1] in _ASCII_DIGITS):
            j = i
            while j < n and (text[j] in _ASCII_DIGITS or text[j] == "."):
                j += 1
            if j < n and text[j] in "eE":
                k = j + 1
                if k < n and text[k] in "+-":
                    k += 1
                if k < n and text[k] in _ASCII_DIGITS:
                    j = k
                    while j < n and text[j] in _ASCII_DIGITS:
                        j += 1
            literal = text[i:j]
            try:
                float(literal)
            except ValueError:
                raise ExpressionError(f"malformed number {literal!r}", text, i) from None
            if j < n and text[j].isdigit():
                raise ExpressionError(f"non-ASCII digit {text[j]!r}: write numbers with 0-9",
                                      text, j)
            if j < n and (text[j].isalnum() or text[j] == "_"):
                raise ExpressionError(f"malformed number {text[i:j + 1]!r}", text, i)
            tokens.append(Token("num", literal, i))
            i = j
            continue
        if c.isalpha() or c in "_$":
            j = i + 1
            while j < n and (text[j].isalpha() or text[j] in _ASCII_DIGITS or text[j] == "_"):
                j += 1
            if j < n and text[j].isdigit():
                raise ExpressionError(f"non-ASCII digit {text[j]!r} in a name", text, j)
            name = text[i:j]
            if name == "$":
                raise ExpressionError("'$' must be followed by a field name", text, i)
            bare = name.lstrip("$")
            if "__" in bare:
                raise ExpressionError(f"dunder names such as {name!r} are not allowed", text, i)
            if bare in _FORBIDDEN_WORDS:
                raise ExpressionError(_FORBIDDEN_WORDS[bare], text, i)
            if j < n and text[j] == ".":
                raise ExpressionError(f"attribute access ({name}.…) is not allowed", text, j)
            tokens.append(Token("name", name, i))
            i = j
            continue
        if c in "(),":
            tokens.append(Token(c, c, i))
            i += 1
            continue
        op = next((o for o in _OPERATOR_CHARS if text.startswith(o, i)), None)
        if op is not None:
            tokens.append(Token("op", op, i))
            i += len(op)
            continue
        if c in "'\"":
            raise ExpressionError("string literals are not allowed", text, i)
        if c == "=":
            raise ExpressionError("assignment is not allowed (use == to compare)", text, i)
        if c == ".":
            raise ExpressionError("attribute access is not allowed", text, i)
        if c == ":":
            raise ExpressionError("':' is not allowed (no lambdas, slices or annotations)",
                                  text, i)
        raise ExpressionError(f"unexpected character {c!r}", text, i)
    tokens.append(Token("end", "", n))
    return tokens


# ----------------------------------------------------------------------------- parser
class _Parser:
    def __init__(self, text: str, registry: OperatorRegistry, variables: frozenset[str]):
        self.text = text
        self.registry = registry
        self.variables = variables
        self.tokens = tokenize(text)
        self.i = 0
        self.nesting = 0

    def error(self, message: str, pos: int) -> ExpressionError:
        return ExpressionError(message, self.text, pos)

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def advance(self) -> Token:
        t = self.tokens[self.i]
        self.i += 1
        return t

    def parse(self) -> Node:
        if self.tok.kind == "end":
            raise self.error("empty expression", 0)
        node = self.expression(0)
        if self.tok.kind != "end":
            raise self.error(f"unexpected {self.tok.text!r} after a complete expression",
                             self.tok.pos)
        return node

    def expression(self, min_prec: int) -> Node:
        self.nesting += 1
        if self.nesting > MAX_DEPTH:
            raise self.error(f"expression nested more than {MAX_DEPTH} levels deep; split it "
                             "into several factors", self.tok.pos)
        try:
            return self._expression(min_prec)
        finally:
            self.nesting -= 1

    def _expression(self, min_prec: int) -> Node:
        left = self.prefix()
        while True:
            t = self.tok
            if t.kind != "op":
                if t.kind in ("num", "name", "("):
                    raise self.error(f"expected an operator before {t.text!r}", t.pos)
                return left
            prec = _INFIX_PRECEDENCE[t.text]
            if prec < min_prec:
                return left
            self.advance()
            right = self.expression(prec if t.text in _RIGHT_ASSOC else prec + 1)
            left = self.make_call(BINARY_OPERATORS[t.text], [left, right], t.pos,
                                  [left.pos, right.pos])

    def prefix(self) -> Node:
        t = self.advance()
        if t.kind == "num":
            return Const(t.pos, float(t.text))
        if t.kind == "op" and t.text in ("-", "+"):
            operand = self.expression(_UNARY_PRECEDENCE)
            if t.text == "+":
                return operand
            if isinstance(operand, Const):
                return Const(t.pos, -operand.value)
            return self.make_call("neg", [operand], t.pos, [operand.pos])
        if t.kind == "(":
            inner = self.expression(0)
            if self.tok.kind != ")":
                raise self.error("missing ')'", self.tok.pos)
            self.advance()
            return inner
        if t.kind == "name":
            if self.tok.kind == "(":
                return self.call(t)
            return self.variable(t)
        if t.kind == "end":
            raise self.error("unexpected end of expression", t.pos)
        raise self.error(f"unexpected {t.text!r}", t.pos)

    def variable(self, t: Token) -> Var:
        name = t.text.lstrip("$")
        if name not in self.variables:
            if name in self.registry:
                raise self.error(f"operator {name!r} must be called with arguments", t.pos)
            known = ", ".join(sorted(self.variables))
            raise self.error(f"unknown variable {name!r} (known: {known})", t.pos)
        return Var(t.pos, name)

    def call(self, name_tok: Token) -> Node:
        name = name_tok.text
        if name.startswith("$"):
            raise self.error(f"field {name!r} cannot be called", name_tok.pos)
        if name not in self.registry:
            raise self.error(f"unknown operator {name!r}", name_tok.pos)
        self.advance()  # "("
        args: list[Node] = []
        positions: list[int] = []
        if self.tok.kind != ")":
            while True:
                positions.append(self.tok.pos)
                args.append(self.expression(0))
                if self.tok.kind == ",":
                    self.advance()
                    continue
                if self.tok.kind != ")":
                    raise self.error(f"expected ',' or ')' in the call of {name}",
                                     self.tok.pos)
                break
        self.advance()  # ")"
        return self.make_call(name, args, name_tok.pos, positions)

    def make_call(self, name: str, args: list[Node], pos: int, arg_pos: list[int]) -> Node:
        spec = self.registry.get(name)
        lo, hi = spec.arity
        if not lo <= len(args) <= hi:
            expected = str(lo) if lo == hi else f"{lo} to {hi}"
            raise self.error(f"{spec.signature()} takes {expected} arguments, got {len(args)}",
                             pos)
        checked: list[Node] = []
        for param, arg, apos in zip(spec.params, args, arg_pos, strict=False):
            if param.kind == "series":
                checked.append(arg)
                continue
            if not isinstance(arg, Const):
                raise self.error(f"argument {param.name!r} of {spec.name} must be a constant "
                                 f"number, not an expression", apos)
            value = check_constant(spec, param, arg.value, self.text, apos)
            checked.append(Const(arg.pos, float(value)))
        for param in spec.params[len(args):]:
            checked.append(Const(pos, float(param.default)))  # type: ignore[arg-type]
        node = _fold(spec, checked, pos)
        if node.depth > MAX_DEPTH:
            raise self.error(f"expression tree deeper than {MAX_DEPTH} levels (a chain of more "
                             f"than {MAX_DEPTH} operations); split it into several factors", pos)
        return node


def _fold(spec: OperatorSpec, args: list[Node], pos: int) -> Node:
    if spec.kind == "elementwise" and all(isinstance(a, Const) for a in args):
        with np.errstate(all="ignore"):
            value = float(np.asarray(spec.func(*[np.float64(a.value) for a in args])))  # type: ignore[attr-defined]
        return Const(pos, value)
    if spec.commutative:
        args = sorted(args, key=lambda a: a.key)
    return Call(pos, spec.name, tuple(args), spec.kind)


def parse(
    text: str,
    registry: OperatorRegistry | None = None,
    variables: Iterable[str] | None = None,
) -> Node:
    """Parse and check one expression.

    Parameters
    ----------
    text : str
        The expression, e.g. ``"cs_rank(ts_mean(close, 5) / close)"``.
    registry : OperatorRegistry, optional
        Callable operators; built-ins plus :func:`~qilin.factors.registry.register_operator`
        additions by default.
    variables : iterable of str, optional
        Field names allowed in addition to :data:`STANDARD_VARIABLES`.

    Raises
    ------
    ExpressionError
        With the position and reason of the first problem.

    Examples
    --------
    >>> parse("close > ts_delay(close, 1)").key
    'gt(close,ts_delay(close,1))'
    >>> parse("2 * 3 + close").key
    'add(6,close)'
    >>> parse("foo(close)")
    Traceback (most recent call last):
    ...
    qilin.errors.ExpressionError: unknown operator 'foo' (at position 0)
      foo(close)
      ^
    """
    if not isinstance(text, str):
        raise ExpressionError(f"an expression must be a string, got {type(text).__name__}")
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise ExpressionError(f"expression is {len(text):,} characters long (limit "
                              f"{MAX_EXPRESSION_LENGTH:,}); split it into several factors",
                              text, MAX_EXPRESSION_LENGTH)
    reg = registry if registry is not None else active_registry()
    allowed = STANDARD_VARIABLES | frozenset(variables or ())
    return _Parser(text, reg, allowed).parse()


def parse_factor_set(
    factors: Mapping[str, str] | Iterable[tuple[str, str]],
    registry: OperatorRegistry | None = None,
    variables: Iterable[str] | None = None,
) -> dict[str, Node]:
    """Parse ``{name: expression}`` (or ``[(name, expression), ...]``) keeping the order.

    Raises
    ------
    ExpressionError
        Naming the factor whose expression is wrong, or a repeated factor name.
    """
    reg = registry if registry is not None else active_registry()
    items = list(factors.items()) if isinstance(factors, Mapping) else list(factors)
    out: dict[str, Node] = {}
    for item in items:
        if not (isinstance(item, tuple | list) and len(item) == 2):
            raise ExpressionError(f"a factor must be a (name, expression) pair, got {item!r}")
        name, text = item
        if not isinstance(name, str) or not name:
            raise ExpressionError(f"factor name must be a non-empty string, got {name!r}")
        if name in out:
            raise ExpressionError(f"factor {name!r} is defined twice", str(text), 0)
        try:
            out[name] = parse(text, reg, variables)
        except ExpressionError as exc:
            raise ExpressionError(f"factor {name!r}: {exc.args[0].split(' (at position')[0]}",
                                  exc.expression, exc.position) from None
    return out


def check_windows(
    roots: Mapping[str, Node],
    n_dates: int,
    texts: Mapping[str, str] | None = None,
    registry: OperatorRegistry | None = None,
) -> None:
    """Refuse a window longer than the data (it could only ever give NaN).

    Parameters
    ----------
    roots : mapping of factor name to Node
        Parsed factors (:func:`parse_factor_set`).
    n_dates : int
        Dates of the data the factors will be computed on.
    texts : mapping of factor name to expression text, optional
        For the position in the message.

    Raises
    ------
    ExpressionError
        Naming the factor, the operator, the window and the number of dates.

    Examples
    --------
    >>> check_windows({"m": parse("ts_mean(close, 5)")}, 10)
    >>> try:
    ...     check_windows({"m": parse("ts_mean(close, 50)")}, 10, {"m": "ts_mean(close, 50)"})
    ... except ExpressionError as err:
    ...     print(err.position, str(err).split(";")[0])
    15 factor 'm': window 50 of ts_mean is longer than the data (10 dates)
    """
    reg = registry if registry is not None else active_registry()
    for name, root in roots.items():
        for node in root.walk():
            if not isinstance(node, Call) or node.kind != "ts" or node.op not in reg:
                continue
            for param, arg in zip(reg.get(node.op).params, node.args, strict=False):
                if param.kind == "window" and isinstance(arg, Const) and arg.value > n_dates:
                    raise ExpressionError(
                        f"factor {name!r}: window {arg.value:g} of {node.op} is longer than "
                        f"the data ({n_dates} dates); use at most {n_dates} or load more "
                        "history", (texts or {}).get(name, ""), arg.pos)


def available_fields(panel: Any) -> set[str]:
    """Variables a Panel can supply: its fields, plus ``returns`` when it has ``close``."""
    fields = set(panel.fields)
    return fields | {"returns"} if "close" in fields else fields


def missing_fields(roots: Mapping[str, Node], available: Iterable[str]
                   ) -> dict[str, list[Var]]:
    """``{factor name: [variables it reads that are not available]}`` (only factors with some)."""
    have = set(available)
    out: dict[str, list[Var]] = {}
    for name, root in roots.items():
        absent = [n for n in root.walk() if isinstance(n, Var) and n.name not in have]
        if absent:
            out[name] = absent
    return out


def check_fields(roots: Mapping[str, Node], available: Iterable[str],
                 texts: Mapping[str, str] | None = None) -> None:
    """Refuse a factor that reads a field the data does not have, listing those it has.

    Raises
    ------
    ExpressionError
        At the position of the first absent field of the first such factor.

    Examples
    --------
    >>> try:
    ...     check_fields({"v": parse("vwap / close")}, ["close", "open"], {"v": "vwap / close"})
    ... except ExpressionError as err:
    ...     print(err.position, str(err).splitlines()[0])
    0 factor 'v' reads field 'vwap', which the data does not have (fields present: close, open) (at position 0)
    """  # noqa: E501
    have = sorted(set(available))
    for name, absent in missing_fields(roots, have).items():
        var = absent[0]
        raise ExpressionError(
            f"factor {name!r} reads field {var.name!r}, which the data does not have (fields "
            f"present: {', '.join(have)})", (texts or {}).get(name, ""), var.pos)


# -------------------------------------------------------------------------- evaluation
def unique_nodes(roots: Iterable[Node]) -> list[Node]:
    """Every distinct non-constant node under ``roots``, children before parents."""
    seen: dict[str, Node] = {}
    for root in roots:
        for node in root.walk():
            if not isinstance(node, Const) and node.key not in seen:
                seen[node.key] = node
    return list(seen.values())


def variables_of(roots: Iterable[Node]) -> set[str]:
    """Names of the Panel fields the expressions read."""
    return {n.name for r in roots for n in r.walk() if isinstance(n, Var)}


def _as_full(value: Any, shape: tuple[int, int], xp: Any) -> Any:
    if hasattr(value, "shape") and tuple(value.shape) == shape:
        return value
    return xp.broadcast_to(xp.asarray(value, dtype=np.float64), shape).copy()


def evaluate_nodes(
    nodes: list[Node],
    inputs: Mapping[str, Any],
    keep: Iterable[str],
    registry: OperatorRegistry | None = None,
    on_call: Callable[[Call], None] | None = None,
    finish: Callable[[str, Any], Any] | None = None,
) -> dict[str, Any]:
    """Evaluate ``nodes`` (children first, as :func:`unique_nodes` orders them) once each.

    Parameters
    ----------
    nodes : list of Node
        Distinct nodes in dependency order; nodes whose key is already in ``inputs`` (fields
        or results computed elsewhere) are not recomputed.
    inputs : mapping of key to array
        Field arrays (by variable name) and precomputed node values (by node key).
    keep : iterable of str
        Keys whose values are returned; other intermediates are freed once no longer needed.
    on_call : callable, optional
        Called with each :class:`Call` before it runs (progress, instrumentation).
    finish : callable, optional
        ``finish(key, value)`` replaces a kept value as soon as no other node reads it (for
        example a cast to the output dtype, which frees the float64 array at once).

    Examples
    --------
    >>> import numpy as np
    >>> roots = [parse("close * 2"), parse("close * 2 + 1")]
    >>> out = evaluate_nodes(unique_nodes(roots), {"close": np.array([[1.0], [2.0]])},
    ...                      [r.key for r in roots])
    >>> out["add(1,mul(2,close))"].ravel().tolist()
    [3.0, 5.0]
    """
    reg = registry if registry is not None else active_registry()
    keep = set(keep)
    values: dict[str, Any] = dict(inputs)
    pending = [n for n in nodes if n.key not in values]
    uses: Counter[str] = Counter()
    for node in pending:
        for child in node.children():
            uses[child.key] += 1
    shape = None
    for v in values.values():
        if hasattr(v, "shape") and len(v.shape) == 2:
            shape = tuple(v.shape)
            break
    for node in pending:
        if isinstance(node, Var):
            if node.name not in values:
                present = sorted(k for k in values if "(" not in k)
                raise ExpressionError(f"the data has no field {node.name!r} (fields present: "
                                      f"{', '.join(present)})", node.name, 0)
            continue
        assert isinstance(node, Call)
        spec = reg.get(node.op)
        args = [a.value if isinstance(a, Const) else values[a.key] for a in node.args]
        if spec.kind != "elementwise" and shape is not None:
            xp = array_module(*[a for a in args if hasattr(a, "shape")])
            args = [_as_full(a, shape, xp) if p.kind == "series" else _typed(a, p.kind)
                    for a, p in zip(args, spec.params, strict=True)]
        else:
            args = [a if p.kind == "series" else _typed(a, p.kind)
                    for a, p in zip(args, spec.params, strict=True)]
        if on_call is not None:
            on_call(node)
        values[node.key] = spec.func(*args)
        if finish is not None and node.key in keep and uses[node.key] == 0:
            values[node.key] = finish(node.key, values[node.key])
        for child in node.children():
            uses[child.key] -= 1
            if uses[child.key] > 0 or child.key in inputs:
                continue
            if child.key not in keep:
                del values[child.key]
            elif finish is not None and isinstance(child, Call):
                values[child.key] = finish(child.key, values[child.key])
    return {k: values[k] if k in values else _const_of(k) for k in keep}


def _typed(value: float, kind: str) -> float | int:
    return int(value) if kind in ("window", "int") else float(value)


def _const_of(key: str) -> float:
    try:
        return float(key)
    except ValueError:
        raise KeyError(f"no value was computed for {key!r}") from None


def evaluate(expression: str | Node, panel: Any, registry: OperatorRegistry | None = None
             ) -> Any:
    """Evaluate one expression over a Panel and return a dates x symbols array.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from qilin.data.panel import Panel
    >>> p = Panel.from_arrays({"close": np.array([[1.0, 2.0], [3.0, 4.0]])},
    ...                       pd.date_range("2024-01-01", periods=2), ["A", "B"])
    >>> evaluate("close / 2 - 1", p).tolist()
    [[-0.5, 0.0], [0.5, 1.0]]
    """
    node = expression if isinstance(expression, Node) else parse(
        expression, registry, variables=list(panel.fields))
    texts = {"expression": expression if isinstance(expression, str) else ""}
    check_fields({"expression": node}, available_fields(panel), texts)
    check_windows({"expression": node}, panel.shape[0], texts, registry)
    fields = {name: panel[name] for name in variables_of([node])}
    out = evaluate_nodes(unique_nodes([node]), fields, [node.key], registry)[node.key]
    if not hasattr(out, "shape") or tuple(out.shape) != panel.shape:
        out = _as_full(out, panel.shape, panel.xp)
    return out

