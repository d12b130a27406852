"""Atomic writes: results, reports and run folders appear whole or not at all.

Everything is first written under a temporary name in the destination's own folder (same
file system) and then moved into place with ``os.replace``; on any error the temporary file
or folder is removed and the destination is left as it was.

Examples
--------
>>> import tempfile, json
>>> from pathlib import Path
>>> with tempfile.TemporaryDirectory() as d:
...     p = write_json_atomic(Path(d) / "out" / "a.json", {"x": 1.5})
...     json.loads(p.read_text()), sorted(q.name for q in p.parent.iterdir())
({'x': 1.5}, ['a.json'])
>>> with tempfile.TemporaryDirectory() as d:
...     with atomic_path(Path(d) / "b.txt") as tmp:
...         _ = tmp.write_text("hello")
...     (Path(d) / "b.txt").read_text()
'hello'
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


def default_file_mode() -> int:
    """``0o666`` minus the process umask: the mode ``open()`` would give a new file."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temporary file path next to ``path``; move it to ``path`` on success.

    The file gets the mode a plain ``open()`` would give it (not ``mkstemp``'s 0600).
    ``keep_suffix`` ends the temporary name with ``path``'s extensions, for writers that
    infer the format from the name.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(target.suffixes) if keep_suffix and target.suffixes else ".tmp"
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; rename it to ``path`` on success.

    Parameters
    ----------
    path : path
        The folder to create.
    overwrite : bool
        Replace an existing folder (it is removed only after the new one is complete).

    Raises
    ------
    FileExistsError
        When ``path`` exists and ``overwrite`` is False.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists")
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        yield tmp
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def json_safe(obj: Any) -> Any:
    """Convert NumPy/pandas scalars and containers to plain JSON types; NaN/inf become None."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [json_safe(v) for v in obj.tolist()]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    return obj


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as strict JSON (NaN → null) to ``path`` atomically."""
    return write_text_atomic(path, json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n")
