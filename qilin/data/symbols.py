"""Numeric exchange codes written in more than one form (``1``, ``000001``, ``000001.SZ``).

A-share codes are six digits with an exchange suffix (``000001.SZ``). Files that went through
a spreadsheet or an integer column lose the zeros (``1``) or the suffix (``000001``); mixed
with the full form, one stock becomes two symbols and the universe silently doubles.
:func:`mixed_forms` finds, among the symbols of a file, every code written in a short form
(no suffix, or not zero-padded to six digits) while another form of the same number is also
present. Distinct suffixes of the same digits (``000001.SZ``, ``000001.SH``) are distinct
instruments and are not reported among themselves.

Validation reports each such row as a ``mixed_symbol_forms`` error naming both forms.
``repair`` rewrites a short form to the full one when exactly one full form of that number is
present (recorded), and drops the rows otherwise; the qilin symbol is never guessed from the
digits alone (``000001`` could be ``.SZ`` or ``.SH``).

Examples
--------
>>> mixed_forms(["1", "000001.SZ", "600519.SH", "AAPL"])
{'1': ['000001.SZ']}
>>> mixed_forms(["000001.SZ", "000001.SH", "600519"])
{}
>>> full_form_of({"1": ["000001.SZ"], "000001": ["000001.SZ", "000001.SH"]})
{'1': '000001.SZ'}
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_CODE = re.compile(r"^(\d{1,6})(?:\.([A-Za-z]{2}))?$")


def _is_full(symbol: str, digits: str, suffix: str | None) -> bool:
    return len(digits) == 6 and suffix is not None


def mixed_forms(symbols: Iterable[str]) -> dict[str, list[str]]:
    """Short-form codes that also appear in another form -> the other forms (sorted).

    Parameters
    ----------
    symbols : iterable of str
        Distinct symbols (repeats are fine).

    Returns
    -------
    dict
        ``{short_form: [other forms of the same number]}``; empty when every code is written
        one way.
    """
    groups: dict[int, set[str]] = {}
    parsed: dict[str, tuple[str, str | None]] = {}
    for s in set(symbols):
        m = _CODE.match(str(s))
        if m is None:
            continue
        parsed[s] = (m[1], m[2].upper() if m[2] else None)
        groups.setdefault(int(m[1]), set()).add(s)
    out: dict[str, list[str]] = {}
    for members in groups.values():
        if len(members) < 2:
            continue
        for s in members:
            digits, suffix = parsed[s]
            if _is_full(s, digits, suffix):
                continue
            others = [o for o in members if o != s and (
                suffix is None or parsed[o][1] in (None, suffix))]
            if others:
                out[s] = sorted(others)
    return dict(sorted(out.items()))


def full_form_of(forms: dict[str, list[str]]) -> dict[str, str]:
    """For each short form, its full form when exactly one is present (else left out)."""
    out = {}
    for short, others in forms.items():
        full = [o for o in others if (m := _CODE.match(o)) and len(m[1]) == 6 and m[2]]
        if len(full) == 1:
            out[short] = full[0]
    return out
