"""``qilin.data`` exports a deliberate public API: ``__all__``, one import path per name."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import qilin.data as data

REPO = Path(__file__).resolve().parents[2]


def test_all_is_complete_and_unique() -> None:
    assert len(data.__all__) == len(set(data.__all__))
    assert data.__all__ == sorted(data.__all__, key=lambda n: (not n.isupper(), n))
    for name in data.__all__:
        assert hasattr(data, name), name
    public = {n for n, v in vars(data).items()
              if not n.startswith("_") and not inspect.ismodule(v)}
    assert public == set(data.__all__), "every public attribute is in __all__, nothing else"


def test_each_name_is_one_object_defined_in_the_data_layer() -> None:
    objects = [getattr(data, n) for n in data.__all__]
    ids = [id(o) for o in objects if callable(o)]
    assert len(ids) == len(set(ids)), "no object exported under two names"
    for name in data.__all__:
        obj = getattr(data, name)
        if callable(obj):
            assert obj.__module__.startswith("qilin.data."), (name, obj.__module__)


def test_every_public_name_is_documented_in_help() -> None:
    doc = data.__doc__ or ""
    for name in data.__all__:
        assert re.search(rf"\b{name}\b", doc), f"{name} missing from qilin.data's docstring"


def test_submodules_do_not_declare_other_public_apis() -> None:
    """The package is the one path: submodules export nothing through ``__all__``."""
    for info in pkgutil.iter_modules(data.__path__):
        mod = importlib.import_module(f"qilin.data.{info.name}")
        assert not hasattr(mod, "__all__"), f"qilin.data.{info.name} declares __all__"


def test_docs_import_from_the_package() -> None:
    text = (REPO / "docs" / "data.md").read_text()
    assert "from qilin.data import" in text
    assert not re.search(r"from qilin\.data\.\w+ import", text)
