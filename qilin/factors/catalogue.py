"""What an expression can use: variables, operators with signatures, indicators, Alpha158.

:func:`catalogue` returns it as plain data (JSON-ready); ``qilin factors list`` prints it.

Examples
--------
>>> cat = catalogue()
>>> sorted(cat)
['alpha158', 'indicators', 'infix', 'operators', 'variables', 'window_policies']
>>> mean = next(op for op in cat["operators"] if op["name"] == "ts_mean")
>>> mean["signature"], mean["kind"], mean["qlib"]
('ts_mean(x, window)', 'ts', ['Mean'])
>>> cat["alpha158"][0]
{'name': 'KMID', 'expression': '(close - open) / open', 'group': 'kbar'}
>>> len(cat["alpha158"])
158
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qilin.factors.alpha158 import (
    DEFAULT_WINDOWS,
    FAMILY_NAMES,
    KBAR_FEATURES,
    PRICE_FEATURES,
    alpha158_features,
)
from qilin.factors.expr import STANDARD_VARIABLES
from qilin.factors.qlib_window import WINDOW_POLICIES
from qilin.factors.registry import (
    BINARY_OPERATORS,
    QLIB_ALIASES,
    OperatorRegistry,
    active_registry,
)

_INDICATOR_MODULE = "qilin.factors.indicators"
_PARSER_DOCS = {
    "and_": "``a & b``: 1.0 where both are non-zero, 0.0 otherwise, NaN where either is NaN.",
    "or_": "``a | b``: 1.0 where either is non-zero, 0.0 otherwise, NaN where either is NaN.",
    "neg": "``-x``.",
}


def _group(name: str) -> str:
    if name in dict(KBAR_FEATURES):
        return "kbar"
    if name in dict(PRICE_FEATURES):
        return "price"
    return name.rstrip("0123456789") if name.rstrip("0123456789") in FAMILY_NAMES else "other"


def alpha158_catalogue(windows: Sequence[int] = DEFAULT_WINDOWS) -> list[dict[str, str]]:
    """Alpha158 features as ``{"name", "expression", "group"}`` in Qlib's order.

    Examples
    --------
    >>> alpha158_catalogue(windows=(5,))[13]
    {'name': 'ROC5', 'expression': 'ts_delay(close, 5) / close', 'group': 'ROC'}
    """
    return [{"name": n, "expression": e, "group": _group(n)}
            for n, e in alpha158_features(windows=windows)]


def catalogue(registry: OperatorRegistry | None = None,
              alpha158_windows: Sequence[int] = DEFAULT_WINDOWS) -> dict[str, Any]:
    """Everything an expression may use, as JSON-ready data.

    Parameters
    ----------
    registry : OperatorRegistry, optional
        Operators to list (built-ins plus registered ones by default).
    alpha158_windows : sequence of int
        Windows of the Alpha158 list.

    Returns
    -------
    dict
        ``variables`` (standard field names), ``infix`` (symbol -> operator name),
        ``operators`` and ``indicators`` (each ``{"name", "kind", "signature", "params",
        "doc", "qlib", "infix"}``, ``qlib`` being the Qlib names that alias it and ``infix``
        the symbols the parser turns into it), ``alpha158``
        (``{"name", "expression", "group"}``) and ``window_policies``.
    """
    reg = registry if registry is not None else active_registry()
    aliases: dict[str, list[str]] = {}
    for alias in QLIB_ALIASES:
        if alias in reg:
            aliases.setdefault(reg.get(alias).name, []).append(alias)
    operators, indicators = [], []
    for spec in sorted(reg, key=lambda s: s.name):
        entry = {
            "name": spec.name,
            "kind": spec.kind,
            "signature": spec.signature(),
            "params": [{"name": p.name, "kind": p.kind, "default": p.default}
                       for p in spec.params],
            "doc": spec.doc or _PARSER_DOCS.get(spec.name, ""),
            "qlib": sorted(aliases.get(spec.name, [])),
            "infix": sorted(sym for sym, op in BINARY_OPERATORS.items() if op == spec.name),
        }
        module = getattr(spec.func, "__module__", "")
        (indicators if module == _INDICATOR_MODULE else operators).append(entry)
    return {
        "variables": sorted(STANDARD_VARIABLES),
        "infix": dict(BINARY_OPERATORS),
        "operators": operators,
        "indicators": indicators,
        "alpha158": alpha158_catalogue(alpha158_windows),
        "window_policies": list(WINDOW_POLICIES),
    }
