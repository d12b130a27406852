"""Atomic writes: results, reports and run folders appear whole or not at all.

Everything is first written under a temporary name in the destination's own folder (same
file system) and then moved into place with ``os.replace``; on any error the temporary file
or folder is removed and the destination is left as it was.

Temporary names never look like data: they are hidden and end without a data extension,
``.NAME.tmp-HOST-PID-RANDOM`` (see :func:`temp_name`), so a folder or glob load never picks
up a write in progress, and :func:`is_temp_name` tells readers what to skip. A writer that is
killed (``SIGKILL``, power loss) cannot remove its temporary file; the next atomic write to the
same folder removes the ones whose process is gone (same host, dead PID) and logs how many
(:func:`clean_stale_temps`). Files get the mode a plain ``open()`` would give them and folders
the mode ``mkdir`` would (both from the process umask), not ``mkstemp``'s 0600/0700.

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
>>> is_temp_name(temp_name("bars.csv")), temp_name("bars.csv").endswith(".csv")
(True, False)
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: Temporary names: ``.NAME.tmp-HOST-PID-RANDOM`` (HOST: lower-case letters and digits).
_TEMP_RE = re.compile(r"^\..+\.tmp-(?P<host>[0-9a-z]{1,16})-(?P<pid>\d+)-[0-9a-f]{8}$")
_HOST = re.sub(r"[^0-9a-z]", "", socket.gethostname().lower())[:16] or "host"
#: Seconds between two stale-temp scans of the same folder by one process.
CLEAN_INTERVAL_S = 60.0
_last_clean: dict[str, float] = {}


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux ``/proc``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    """``0o666`` minus the process umask: the mode ``open()`` would give a new file."""
    return 0o666 & ~current_umask()


def default_dir_mode() -> int:
    """``0o777`` minus the process umask: the mode ``mkdir`` would give a new folder."""
    return 0o777 & ~current_umask()


def temp_name(name: str) -> str:
    """A fresh temporary name for a write to ``name``: hidden, no data extension.

    Examples
    --------
    >>> t = temp_name("bars.parquet")
    >>> t.startswith(".bars.parquet.tmp-"), t.endswith(".parquet"), is_temp_name(t)
    (True, False, True)
    """
    return f".{name}.tmp-{_HOST}-{os.getpid()}-{secrets.token_hex(4)}"


def is_temp_name(name: str) -> bool:
    """True for a name made by :func:`temp_name` (a write in progress or a killed one).

    Examples
    --------
    >>> is_temp_name(".bars.csv.tmp-box1-42-0a1b2c3d"), is_temp_name("bars.csv")
    (True, False)
    """
    return _TEMP_RE.match(name) is not None


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def clean_stale_temps(folder: str | os.PathLike[str], force: bool = False) -> list[Path]:
    """Remove temporary files/folders in ``folder`` left by killed writers; return them.

    Only names made by :func:`temp_name` on this host whose process no longer exists are
    removed (a write in progress, here or on another host sharing the folder, is left
    alone). Each folder is scanned at most once per :data:`CLEAN_INTERVAL_S` per process
    unless ``force``. What is removed is logged as a warning.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / f".a.csv.tmp-{_HOST}-999999999-0123abcd").write_text("partial")
    >>> [p.name[:10] for p in clean_stale_temps(d, force=True)], list(d.iterdir())
    (['.a.csv.tmp'], [])
    >>> d.rmdir()
    """
    path = Path(folder)
    key = os.path.abspath(path)
    now = time.monotonic()
    if not force and now - _last_clean.get(key, -math.inf) < CLEAN_INTERVAL_S:
        return []
    _last_clean[key] = now
    removed: list[Path] = []
    try:
        entries = list(os.scandir(path))
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP_RE.match(entry.name)
        if m is None or m["host"] != _HOST or _pid_alive(int(m["pid"])):
            continue
        p = Path(entry.path)
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(p)
            else:
                p.unlink()
        except FileNotFoundError:
            continue  # another process cleaned it first
        except OSError as exc:
            log.warning("cannot remove stale temporary %s left by a killed writer: %s", p, exc)
            continue
        removed.append(p)
    if removed:
        log.warning("removed %d stale temporary file(s)/folder(s) left by killed writers in %s: "
                    "%s", len(removed), path, ", ".join(p.name for p in removed[:5]))
    return removed


def _prepare(target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(target.parent)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary file path next to ``path``; move it to ``path`` on success.

    The temporary name comes from :func:`temp_name` (hidden, no data extension: writers
    that infer a format from the name must be told the format). The file gets the mode a
    plain ``open()`` would give it (not ``mkstemp``'s 0600). Stale temporary files of killed
    writers in the same folder are removed first (:func:`clean_stale_temps`).
    """
    target = Path(path)
    _prepare(target)
    tmp = target.parent / temp_name(target.name)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; rename it to ``path`` on success.

    The folder (and the final one) gets the mode ``mkdir`` would give it under the process
    umask. Stale temporary folders of killed writers next to ``path`` are removed first.

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
    _prepare(target)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists")
    tmp = target.parent / temp_name(target.name)
    tmp.mkdir()
    try:
        os.chmod(tmp, default_dir_mode())
        yield tmp
        if target.exists():
            old = target.parent / temp_name(target.name)
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
