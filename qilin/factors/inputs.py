"""Fields a factor set reads that the data lacks: refuse, or compute the rest with NaN.

Vendor files often carry plain OHLCV bars, without ``amount`` or ``vwap``. A factor that reads
an absent field is, by policy (:data:`MISSING_POLICIES`):

* ``"raise"``: an :class:`~qilin.errors.ExpressionError` at the field's position, listing the
  fields the data has;
* ``"nan"``: an all-NaN column, with ONE warning for the whole factor set naming the absent
  fields and the factors they blank.

:func:`derive_vwap` adds a ``vwap`` field to bars that have neither ``vwap`` nor ``amount``,
as the typical price ``(high + low + close) / 3`` (an approximation, used only when asked:
``FactorCalculator(derive_vwap=True)``, ``--derive-vwap``). With ``amount`` the Panel already
has ``vwap = amount / volume``.

Examples
--------
>>> import numpy as np, pandas as pd
>>> from qilin.data.panel import Panel
>>> from qilin.factors.expr import parse_factor_set
>>> p = Panel.from_arrays({"close": np.ones((3, 2)), "open": np.ones((3, 2))},
...                       pd.date_range("2024-01-01", periods=3), ["A", "B"])
>>> roots = parse_factor_set({"a": "close / open", "v": "vwap / close"})
>>> absent_factors(roots, p, policy="nan")
{'v': ['vwap']}
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import numpy as np

from qilin.errors import DataError
from qilin.factors.expr import Node, available_fields, check_fields, missing_fields

#: ``raise``: absent field is an error; ``nan``: that factor is NaN (one warning).
MISSING_POLICIES = ("raise", "nan")
#: What :func:`derive_vwap` computes.
DERIVED_VWAP = "(high + low + close) / 3"


def absent_factors(
    roots: Mapping[str, Node],
    panel: Any,
    texts: Mapping[str, str] | None = None,
    policy: str = "raise",
    optional: Collection[str] = (),
) -> dict[str, list[str]]:
    """``{factor: [absent fields]}`` for the factors to leave NaN; raise for the others.

    Parameters
    ----------
    roots : mapping of name to Node
        The parsed factor set.
    panel : Panel
        The data.
    texts : mapping of name to expression text, optional
        For positions in the error.
    policy : {"raise", "nan"}
        ``nan``: every factor with an absent field is NaN; ``raise``: only those named in
        ``optional`` are, the first other one is an error.
    optional : collection of str
        Factors that may be NaN under ``raise`` (e.g. Alpha158's VWAP0).

    Raises
    ------
    ExpressionError
        For a factor reading an absent field that may not be NaN; it lists the fields present.
    """
    if policy not in MISSING_POLICIES:
        raise DataError(f"missing_fields must be one of {', '.join(MISSING_POLICIES)}, got "
                        f"{policy!r}")
    have = available_fields(panel)
    absent = missing_fields(roots, have)
    required = {n: roots[n] for n in absent if policy == "raise" and n not in optional}
    check_fields(required, have, texts)
    return {n: sorted({v.name for v in vs}) for n, vs in absent.items()}


def missing_warning(absent: Mapping[str, list[str]], panel: Any) -> str:
    """The one-line warning for :func:`absent_factors`' result.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from qilin.data.panel import Panel
    >>> p = Panel.from_arrays({"close": np.ones((2, 1))}, pd.date_range("2024-01-01",
    ...                       periods=2), ["A"])
    >>> print(missing_warning({"VWAP0": ["vwap"]}, p).split(";")[0])
    the data has no field 'vwap' (fields present: close, returns): factor VWAP0 is NaN
    """
    fields = sorted({f for fs in absent.values() for f in fs})
    names = list(absent)
    shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
    text = (f"the data has no field{'s' * (len(fields) > 1)} "
            f"{', '.join(repr(f) for f in fields)} (fields present: "
            f"{', '.join(sorted(available_fields(panel)))}): "
            f"factor{'s' * (len(names) > 1)} {shown} {'are' if len(names) > 1 else 'is'} NaN")
    if "vwap" in fields:
        text += (f"; pass derive_vwap=True (--derive-vwap) for vwap = {DERIVED_VWAP}")
    return text


def derive_vwap(panel: Any) -> tuple[Any, dict[str, str]]:
    """``panel`` with ``vwap`` (typical price) when it has no ``vwap``; and what was derived.

    Returns the panel unchanged (and ``{}``) when it already has ``vwap`` or lacks one of
    ``high low close``.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from qilin.data.panel import Panel
    >>> p = Panel.from_arrays({"high": np.full((2, 1), 3.0), "low": np.ones((2, 1)),
    ...                        "close": np.full((2, 1), 2.0)},
    ...                       pd.date_range("2024-01-01", periods=2), ["A"])
    >>> q, derived = derive_vwap(p)
    >>> q["vwap"].ravel().tolist(), derived
    ([2.0, 2.0], {'vwap': '(high + low + close) / 3'})
    """
    if "vwap" in panel.fields or not {"high", "low", "close"} <= set(panel.fields):
        return panel, {}
    xp = panel.xp
    with np.errstate(invalid="ignore"):
        vwap = (xp.asarray(panel["high"], dtype=np.float64) + panel["low"] + panel["close"]) / 3
    return panel.with_fields(vwap=vwap), {"vwap": DERIVED_VWAP}
