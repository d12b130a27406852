"""The operator registry: which functions an expression may call, and how to check the call.

Every name an expression can call is an :class:`OperatorSpec`: the function, its kind
(``"ts"`` time-series along dates, ``"cs"`` cross-sectional along symbols, or
``"elementwise"``) and one :class:`Param` per argument saying whether it is an array
(``series``), a positive integer window (``window``), a non-negative integer (``int``) or a
number constant (``number``). The expression checker uses the params to reject
``ts_mean(close, -3)`` before anything runs; the calculator uses the kind to partition work
(symbol blocks for ``ts``, date blocks for ``cs``).

Built-in operators come from :mod:`qilin.factors.ops` and :mod:`qilin.factors.indicators`
(bound by their signatures) plus the arithmetic/comparison operators the parser produces.

Examples
--------
>>> import numpy as np
>>> reg = default_registry().copy()
>>> spec = reg.register("double_it", lambda x: 2 * x, kind="elementwise", params=["series"])
>>> reg.get("double_it").arity
(1, 1)
>>> reg.get("double_it").func(np.array([1.0, 2.0])).tolist()
[2.0, 4.0]
>>> "ts_mean" in reg
True
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from qilin.backend import array_module
from qilin.errors import ExpressionError

log = logging.getLogger(__name__)

OperatorKind = Literal["ts", "cs", "elementwise"]
ParamKind = Literal["series", "window", "int", "number"]
_KINDS = ("ts", "cs", "elementwise")
_PARAM_KINDS = ("series", "window", "int", "number")

#: Argument names that are read as positive integer windows when binding by signature.
WINDOW_NAMES = frozenset({
    "window", "w", "d", "n", "period", "periods", "timeperiod", "span", "lookback",
    "fast", "slow", "signal", "fastperiod", "slowperiod", "signalperiod",
})
#: Argument names read as non-negative integers.
INT_NAMES = frozenset({"ddof", "lag", "delay", "shift"})
#: Largest literal accepted for a ``window`` or ``int`` argument (about 4,000 years of daily
#: bars); larger values are refused before any kernel sees them (no overflow, no recompile).
MAX_INTEGER_ARGUMENT = 1_000_000


@dataclass(frozen=True)
class Param:
    """One argument of an operator.

    Parameters
    ----------
    name : str
        Argument name (for messages).
    kind : {"series", "window", "int", "number"}
        ``series`` takes any expression; the others take a literal constant: ``window`` a
        positive integer, ``int`` a non-negative integer, ``number`` any finite number.
    default : float, optional
        Value used when the argument is omitted (only trailing params may have one).
    """

    name: str
    kind: ParamKind
    default: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in _PARAM_KINDS:
            raise ValueError(f"param {self.name!r}: kind {self.kind!r} is not one of "
                             f"{', '.join(_PARAM_KINDS)}")


@dataclass(frozen=True)
class OperatorSpec:
    """A callable operator and the shape of its arguments.

    ``func`` is called with the evaluated series (arrays) and constants positionally, in the
    order of ``params``, and returns one array of the panel's shape.
    """

    name: str
    func: Callable[..., Any]
    kind: OperatorKind
    params: tuple[Param, ...]
    commutative: bool = False
    doc: str = field(default="", compare=False)

    @property
    def arity(self) -> tuple[int, int]:
        """``(minimum, maximum)`` number of arguments."""
        required = sum(1 for p in self.params if p.default is None)
        return required, len(self.params)

    def signature(self) -> str:
        """``name(x, window)`` style text for messages and docs."""
        parts = [p.name if p.default is None else f"{p.name}={p.default:g}" for p in self.params]
        return f"{self.name}({', '.join(parts)})"


def _as_params(params: Sequence[Param | str | tuple[str, str]] | None,
               func: Callable[..., Any]) -> tuple[Param, ...]:
    if params is None:
        return _params_from_signature(func)
    out = []
    for i, p in enumerate(params):
        if isinstance(p, Param):
            out.append(p)
        elif isinstance(p, tuple):
            out.append(Param(p[0], p[1]))  # type: ignore[arg-type]
        elif isinstance(p, str) and ":" in p:
            name, kind = p.split(":", 1)
            out.append(Param(name.strip(), kind.strip()))  # type: ignore[arg-type]
        elif isinstance(p, str):
            out.append(Param(f"arg{i}", p))  # type: ignore[arg-type]
        else:
            raise TypeError(f"param {i}: expected Param, 'kind' or 'name:kind', got {p!r}")
    return tuple(out)


def _params_from_signature(func: Callable[..., Any]) -> tuple[Param, ...]:
    """Read params from a function signature: window-like names are windows, ``q`` numbers."""
    params = []
    for p in inspect.signature(func).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.KEYWORD_ONLY):
            break
        if p.default is None or (p.default is not inspect.Parameter.empty
                                 and not isinstance(p.default, int | float)):
            break  # an optional non-numeric option ends the expression arguments
        default = None if p.default is inspect.Parameter.empty else p.default
        if p.name in WINDOW_NAMES or p.name.endswith("period"):
            kind: ParamKind = "window"
        elif p.name in INT_NAMES:
            kind = "int"
        elif default is not None or p.name in ("q", "quantile", "alpha", "k", "value"):
            kind = "number"
        else:
            kind = "series"
        params.append(Param(p.name, kind, None if default is None else float(default)))
    return tuple(params)


class OperatorRegistry:
    """A name -> :class:`OperatorSpec` table (copy it to add operators without side effects)."""

    def __init__(self, specs: Iterable[OperatorSpec] = ()) -> None:
        self._specs: dict[str, OperatorSpec] = {}
        self._aliases: dict[str, str] = {}
        for spec in specs:
            self._specs[spec.name] = spec

    def register(
        self,
        name: str,
        func: Callable[..., Any],
        kind: OperatorKind = "elementwise",
        params: Sequence[Param | str | tuple[str, str]] | None = None,
        *,
        commutative: bool = False,
        replace: bool = False,
        doc: str = "",
    ) -> OperatorSpec:
        """Add an operator.

        Parameters
        ----------
        name : str
            Name used in expressions; a plain identifier, not a dunder name.
        func : callable
            Called with evaluated arguments in ``params`` order; returns an array.
        kind : {"ts", "cs", "elementwise"}
            ``ts`` works down each symbol's history, ``cs`` across symbols per date.
        params : sequence, optional
            ``Param`` objects, kinds (``["series", "window"]``) or ``"name:kind"`` strings.
            Read from ``func``'s signature when omitted.
        replace : bool
            Allow replacing an existing operator of the same name.
        """
        if not name.isidentifier() or name.startswith("__"):
            raise ValueError(f"operator name {name!r} must be a plain identifier")
        if kind not in _KINDS:
            raise ValueError(f"operator {name!r}: kind {kind!r} is not one of {', '.join(_KINDS)}")
        if not callable(func):
            raise TypeError(f"operator {name!r}: func must be callable")
        if name in self._specs and not replace:
            raise ValueError(f"operator {name!r} is already registered (pass replace=True)")
        spec = OperatorSpec(name, func, kind, _as_params(params, func), commutative,
                            doc or (inspect.getdoc(func) or "").split("\n")[0])
        seen_default = False
        for p in spec.params:
            if p.default is not None:
                seen_default = True
            elif seen_default:
                raise ValueError(f"operator {name!r}: required param {p.name!r} follows one "
                                 "with a default")
        if not any(p.kind == "series" for p in spec.params):
            raise ValueError(f"operator {name!r} needs at least one series argument")
        self._specs[name] = spec
        return spec

    def alias(self, alias: str, target: str) -> None:
        """Make ``alias`` (e.g. Qlib's ``Mean``) resolve to the registered ``target``."""
        if target not in self._specs:
            raise KeyError(f"cannot alias {alias!r}: operator {target!r} is not registered")
        self._aliases[alias] = target

    def resolve(self, name: str) -> str | None:
        """The registered name for ``name`` (following aliases), or None."""
        if name in self._specs:
            return name
        return self._aliases.get(name)

    def get(self, name: str) -> OperatorSpec:
        """The spec of ``name`` (or of the operator it aliases); KeyError when unknown."""
        resolved = self.resolve(name)
        if resolved is None:
            raise KeyError(f"unknown operator {name!r}")
        return self._specs[resolved]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.resolve(name) is not None

    def __iter__(self) -> Iterator[OperatorSpec]:
        return iter(self._specs.values())

    def names(self) -> list[str]:
        """Sorted registered names (without aliases)."""
        return sorted(self._specs)

    def copy(self) -> OperatorRegistry:
        """An independent registry with the same operators and aliases."""
        new = OperatorRegistry(self._specs.values())
        new._aliases = dict(self._aliases)
        return new


# ------------------------------------------------------------------ elementwise built-ins
def _logical(kind: str) -> Callable[[Any, Any], Any]:
    """``&``/``|`` on truth values (non-zero is true): 1.0/0.0, NaN where an input is NaN,
    the NaN policy of the comparison operators in :mod:`qilin.factors.ops`."""
    def op(a: Any, b: Any) -> Any:
        xp = array_module(*[v for v in (a, b) if hasattr(v, "shape")])
        a, b = xp.asarray(a, dtype=np.float64), xp.asarray(b, dtype=np.float64)
        fn = xp.logical_and if kind == "and" else xp.logical_or
        res = fn(a != 0, b != 0).astype(np.float64)
        return xp.where(xp.isnan(a) | xp.isnan(b), xp.nan, res)
    op.__name__ = f"logical_{kind}"
    return op


def _elementwise_table() -> tuple[tuple[str, Callable[..., Any], tuple[Param, ...], bool], ...]:
    from qilin.factors import ops

    def neg(x: Any) -> Any:
        return ops.mul(-1.0, x)

    s, t = Param("x", "series"), Param("y", "series")
    return (
        ("add", ops.add, (s, t), True),
        ("sub", ops.sub, (s, t), False),
        ("mul", ops.mul, (s, t), True),
        ("div", ops.div, (s, t), False),
        ("pow", ops.power, (s, t), False),
        ("neg", neg, (s,), False),
        ("lt", ops.lt, (s, t), False),
        ("le", ops.le, (s, t), False),
        ("gt", ops.gt, (s, t), False),
        ("ge", ops.ge, (s, t), False),
        ("eq", ops.eq, (s, t), True),
        ("ne", ops.ne, (s, t), True),
        ("and_", _logical("and"), (s, t), True),
        ("or_", _logical("or"), (s, t), True),
        ("abs", ops.abs_, (s,), False),
        ("log", ops.log, (s,), False),
        ("sign", ops.sign, (s,), False),
        ("greater", ops.max_, (s, t), True),
        ("less", ops.min_, (s, t), True),
        ("max", ops.max_, (s, t), True),
        ("min", ops.min_, (s, t), True),
        ("where", ops.where, (Param("cond", "series"), s, t), False),
    )


#: Operators the parser emits for ``+ - * / ** < <= > >= == != & |`` and unary ``-``.
BINARY_OPERATORS = {
    "+": "add", "-": "sub", "*": "mul", "/": "div", "**": "pow", "^": "pow",
    "<": "lt", "<=": "le", ">": "gt", ">=": "ge", "==": "eq", "!=": "ne",
    "&": "and_", "|": "or_",
}

#: Qlib expression names and the qilin operator each one means.
QLIB_ALIASES = {
    "Ref": "ts_delay", "Mean": "ts_mean", "Std": "ts_std", "Var": "ts_var", "Sum": "ts_sum",
    "Max": "ts_max", "Min": "ts_min", "Med": "ts_median", "Mad": "ts_mad",
    "Skew": "ts_skew", "Kurt": "ts_kurt", "Slope": "ts_slope", "Rsquare": "ts_rsquare",
    "Resi": "ts_resi", "Quantile": "ts_quantile", "Rank": "ts_rank", "IdxMax": "ts_argmax",
    "IdxMin": "ts_argmin", "Corr": "ts_corr", "Cov": "ts_cov", "Delta": "ts_delta",
    "WMA": "ts_wma", "EMA": "ts_ema", "Count": "ts_count", "Log": "log", "Abs": "abs",
    "Sign": "sign", "Greater": "greater", "Less": "less", "If": "where", "Power": "pow",
}


def _bind_module(reg: OperatorRegistry, module_name: str, kind_of: Callable[[str], str | None]
                 ) -> None:
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # a broken optional module must not take the language down
        log.warning("operators of %s are unavailable: %s: %s", module_name,
                    type(exc).__name__, exc)
        return
    exported = getattr(module, "__all__", None)
    for name, func in vars(module).items():
        if name.startswith("_") or not inspect.isfunction(func) or name.endswith("_nb"):
            continue
        if getattr(func, "__module__", None) != module.__name__:
            continue
        if exported is not None and name not in exported:
            continue
        kind = kind_of(name)
        if kind is None or name in reg:
            continue
        try:
            reg.register(name, func, kind=kind)  # type: ignore[arg-type]
        except (ValueError, TypeError):
            continue  # not expressible (e.g. no series argument); not an expression operator


def _ops_kind(name: str) -> str | None:
    if name.startswith("ts_"):
        return "ts"
    if name.startswith("cs_"):
        return "cs"
    return None


@functools.cache
def _builtin() -> OperatorRegistry:
    reg = OperatorRegistry()
    for name, func, params, commutative in _elementwise_table():
        reg.register(name, func, kind="elementwise", params=params, commutative=commutative)
    _bind_module(reg, "qilin.factors.ops", _ops_kind)
    _bind_module(reg, "qilin.factors.indicators", lambda name: "ts")
    for alias, target in QLIB_ALIASES.items():
        if target in reg:
            reg.alias(alias, target)
    return reg


def default_registry() -> OperatorRegistry:
    """The built-in operators (shared; call ``.copy()`` before registering your own)."""
    return _builtin()


_USER = OperatorRegistry()


def register_operator(
    name: str,
    func: Callable[..., Any],
    kind: OperatorKind = "elementwise",
    params: Sequence[Param | str | tuple[str, str]] | None = None,
    *,
    replace: bool = False,
) -> OperatorSpec:
    """Register a user operator for every expression parsed with the default registry.

    Parameters are those of :meth:`OperatorRegistry.register`. For a registry scoped to one
    calculation, use ``default_registry().copy().register(...)`` instead.

    Examples
    --------
    >>> import numpy as np
    >>> spec = register_operator("clip01", lambda x: np.clip(x, 0.0, 1.0), params=["x:series"],
    ...                          replace=True)
    >>> spec.kind, spec.arity
    ('elementwise', (1, 1))
    """
    if name in _builtin() and not replace:
        raise ValueError(f"operator {name!r} is built in; pass replace=True to shadow it")
    spec = _USER.register(name, func, kind, params, replace=replace)
    return spec


def active_registry() -> OperatorRegistry:
    """Built-in operators plus those added with :func:`register_operator`."""
    reg = _builtin().copy()
    for spec in _USER:
        reg._specs[spec.name] = spec
    return reg


def check_constant(spec: OperatorSpec, param: Param, value: float, expression: str,
                   position: int) -> float | int:
    """Validate a literal argument against its param kind; return it typed.

    Raises
    ------
    ExpressionError
        For a non-integer, non-positive or non-finite value where the param forbids it.
    """
    where = f"{param.name!r} of {spec.name}"
    if not np.isfinite(value):
        raise ExpressionError(f"{where} must be finite, got {value}", expression, position)
    if param.kind in ("window", "int"):
        if float(value) != int(value):
            raise ExpressionError(f"{where} must be an integer, got {value:g}", expression,
                                  position)
        if param.kind == "window" and value <= 0:
            raise ExpressionError(f"{where} must be a positive integer, got {value:g}",
                                  expression, position)
        if param.kind == "int" and value < 0:
            raise ExpressionError(f"{where} must be a non-negative integer, got {value:g}",
                                  expression, position)
        if value > MAX_INTEGER_ARGUMENT:
            raise ExpressionError(f"{where} is {value:g}, above the limit of "
                                  f"{MAX_INTEGER_ARGUMENT:,}", expression, position)
        return int(value)
    return float(value)
