"""What several ``qilin`` commands share: reading a bars file and connecting a cluster.

Examples
--------
>>> with cluster_client(None) as client:
...     client is None
True
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


def load_data(path: str, validate: str | None = "raise") -> Any:
    """The Panel of the bars file or folder ``path`` (``validate="none"`` skips validation)."""
    from qilin.data.loader import load_panel

    policy = None if validate in (None, "none") else validate
    return load_panel(path, backend="cpu", validate=policy)


@contextlib.contextmanager
def cluster_client(cluster: str | None) -> Iterator[Any]:
    """A Dask client for ``cluster`` (a mode, ``tcp://`` address), or ``None`` for no cluster."""
    if not cluster:
        yield None
        return
    from qilin.cluster import ClusterManager

    manager = (ClusterManager("remote", address=cluster) if "://" in cluster
               else ClusterManager(cluster))  # type: ignore[arg-type]
    with manager as client:
        yield client
