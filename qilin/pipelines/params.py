"""A notebook's parameters cell, read without running it, and values checked against it.

The cell tagged ``parameters`` declares each parameter once, as ``name: type = default  #
help``. The annotation (``str``, ``int``, ``float``, ``bool``, ``list``, ``dict``, unions
with ``None``) is the type values are checked against; without one, the default's type is.
Values from the command line (``-p key=value``) are text: they are read as YAML unless the
parameter is a string.

Examples
--------
>>> src = 'top_k: int = 30  # names held\\nbenchmark: str = ""\\nhorizons: list | None = None'
>>> ps = parse_parameters(src, "nb.ipynb")
>>> ps["top_k"].types, ps["top_k"].default, ps["top_k"].help
(('int',), 30, 'names held')
>>> coerce(ps["top_k"], "50", "nb.ipynb"), coerce(ps["benchmark"], "123", "nb.ipynb")
(50, '123')
>>> coerce(ps["top_k"], "many", "nb.ipynb")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
qilin.errors.ParameterError: nb.ipynb: parameter top_k expects int, got str 'many'
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from qilin.errors import ParameterError

_PY_TYPES = {"str": str, "int": int, "float": float, "bool": bool, "list": list, "dict": dict,
             "None": type(None)}


@dataclass(frozen=True)
class NotebookParameter:
    """One declared parameter: name, allowed type names, default and help text."""

    name: str
    types: tuple[str, ...]
    default: Any
    help: str = ""


def _annotation_types(node: ast.expr, where: str) -> tuple[str, ...]:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _annotation_types(node.left, where) + _annotation_types(node.right, where)
    if isinstance(node, ast.Constant) and node.value is None:
        return ("None",)
    if isinstance(node, ast.Subscript):
        node = node.value
    if isinstance(node, ast.Name) and node.id in _PY_TYPES:
        return (node.id,)
    raise ParameterError(f"{where}: parameters cell: annotation {ast.unparse(node)!r} is not "
                         f"one of {sorted(_PY_TYPES)} (or a union of them)")


def parse_parameters(source: str, where: str) -> dict[str, NotebookParameter]:
    """Parameters declared by a parameters cell's source (assignments of literals)."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise ParameterError(f"{where}: parameters cell line {exc.lineno}: {exc.msg}") from None
    lines = source.splitlines()
    out: dict[str, NotebookParameter] = {}
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            name, value_node = node.target.id, node.value
            types = _annotation_types(node.annotation, where)
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and \
                isinstance(node.targets[0], ast.Name):
            name, value_node, types = node.targets[0].id, node.value, ()
        else:
            continue
        try:
            default = ast.literal_eval(value_node) if value_node is not None else None
        except ValueError:
            raise ParameterError(f"{where}: parameters cell: {name} must default to a literal, "
                                 f"got {ast.unparse(value_node)!r}") from None  # type: ignore
        if not types:
            types = (type(default).__name__ if default is not None else "None",)
        line = lines[node.lineno - 1]
        help_text = line.split("#", 1)[1].strip() if "#" in line else ""
        out[name] = NotebookParameter(name, types, default, help_text)
    return out


def notebook_parameters(path: str | Path) -> dict[str, NotebookParameter]:
    """The parameters of the notebook at ``path`` (its cell tagged ``parameters``)."""
    path = Path(path)
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParameterError(f"notebook {path} does not exist") from None
    except ValueError as exc:
        raise ParameterError(f"notebook {path} is not valid JSON: {exc}") from None
    for cell in nb.get("cells", []):
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            src = cell["source"]
            return parse_parameters("".join(src) if isinstance(src, list) else src, str(path))
    raise ParameterError(f"notebook {path} has no cell tagged 'parameters'")


def _matches(value: Any, types: tuple[str, ...]) -> bool:
    for t in types:
        if t == "float" and isinstance(value, int | float) and not isinstance(value, bool):
            return True
        if t == "int" and isinstance(value, int) and not isinstance(value, bool):
            return True
        if t not in ("int", "float") and isinstance(value, _PY_TYPES[t]):
            return True
    return False


def coerce(param: NotebookParameter, value: Any, where: str) -> Any:
    """``value`` checked against ``param``'s type; text is read as YAML for non-strings."""
    if isinstance(value, str) and "str" not in param.types:
        try:
            parsed = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            parsed = value
        value = parsed if parsed is not None or "None" in param.types else value
    if not _matches(value, param.types):
        raise ParameterError(f"{where}: parameter {param.name} expects "
                             f"{' | '.join(param.types)}, got {type(value).__name__} {value!r}")
    if "float" in param.types and isinstance(value, int) and "int" not in param.types:
        value = float(value)
    return value
