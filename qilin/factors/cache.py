"""On-disk cache of computed factor arrays, keyed by expression, data and dtype.

A rerun of an unchanged factor on unchanged data is a file read. The key of one factor is a
hash of its canonical expression key (:attr:`qilin.factors.expr.Node.key`), the fingerprint
of the data it reads (dates, symbols and the fields it uses) and the output dtype, so a
change to any of them misses. Arrays are stored as ``.npy`` files written atomically (a temp
file in the same folder, then ``os.replace``).

An entry that cannot be read back (a 0-byte file, a truncated or otherwise corrupt ``.npy``
left by a crash or a full disk) is a miss: it is counted in :attr:`FactorCache.corrupt`,
logged with its path, and rewritten by the next :meth:`FactorCache.put` of that key.

Examples
--------
>>> import tempfile, numpy as np
>>> cache = FactorCache(tempfile.mkdtemp())
>>> key = cache.key("ts_mean(close,5)", "abc123", "float32")
>>> cache.get(key) is None
True
>>> cache.put(key, np.ones((2, 3), dtype=np.float32))
>>> cache.get(key).shape
(2, 3)
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from qilin.atomic import atomic_path
from qilin.backend import to_host

log = logging.getLogger(__name__)

#: Bump when a change to operators or conventions invalidates cached results.
CACHE_VERSION = "1"


def field_fingerprints(panel: Any, fields: Iterable[str]) -> dict[str, str]:
    """Hash of each named field's contents, and of the axes and ``valid`` under ``""``."""
    h = hashlib.blake2b(digest_size=16)
    h.update(np.asarray(panel.dates.asi8).tobytes())
    h.update("\x1f".join(map(str, panel.symbols)).encode())
    h.update(np.ascontiguousarray(to_host(panel.valid)).tobytes())
    out = {"": h.hexdigest()}
    for name in sorted(set(fields)):
        h = hashlib.blake2b(digest_size=16)
        h.update(np.ascontiguousarray(to_host(panel[name]), dtype=np.float64).tobytes())
        out[name] = h.hexdigest()
    return out


def data_fingerprint(fingerprints: dict[str, str], fields: Iterable[str]) -> str:
    """Fingerprint of the data one factor reads: the axes plus the fields it uses."""
    parts = [fingerprints[""]] + [f"{n}={fingerprints[n]}" for n in sorted(set(fields))]
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16).hexdigest()


class FactorCache:
    """A folder of ``<key>.npy`` factor arrays.

    Parameters
    ----------
    directory : path
        Created when missing.

    Attributes
    ----------
    corrupt : int
        Entries found unreadable (empty, truncated, not a plain ``.npy``) since this object
        was created; each was treated as a miss.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.corrupt = 0

    @staticmethod
    def key(expression_key: str, fingerprint: str, dtype: str, extra: str = "") -> str:
        """The cache key of one factor."""
        text = "\x1f".join((CACHE_VERSION, expression_key, fingerprint, str(dtype), extra))
        return hashlib.blake2b(text.encode(), digest_size=20).hexdigest()

    def path(self, key: str) -> Path:
        """File holding ``key``."""
        return self.directory / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        """The cached array, or None when absent or unreadable (counted in :attr:`corrupt`).

        Examples
        --------
        >>> import tempfile
        >>> cache = FactorCache(tempfile.mkdtemp())
        >>> cache.path("k").write_bytes(b"")  # a crashed writer's empty file
        0
        >>> cache.get("k") is None, cache.corrupt
        (True, 1)
        """
        path = self.path(key)
        try:
            with open(path, "rb") as fh:
                array = np.load(fh, allow_pickle=False)
                if fh.read(1):
                    raise ValueError("trailing bytes after the array")
            return array
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EOFError) as exc:
            self.corrupt += 1
            log.warning("factor cache entry %s is unreadable (%s: %s); recomputing it",
                        path, type(exc).__name__, exc)
            return None

    def put(self, key: str, array: Any) -> None:
        """Store ``array`` under ``key`` atomically."""
        with atomic_path(self.path(key)) as tmp, open(tmp, "wb") as fh:
            np.save(fh, to_host(array), allow_pickle=False)
