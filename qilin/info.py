"""What ``qilin info`` reports: versions, array backend, GPUs, config and cluster profile.

Examples
--------
>>> info = collect_info(cluster="threads")
>>> info["cluster"]["mode"], info["cluster"]["n_workers"]
('threads', 1)
>>> sorted(info["packages"])[:3]
['cudf', 'cuml', 'cupy']
"""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

#: Always reported; ``cupy``, ``dask_cuda``, ``cudf`` and ``cuml`` only come with qilin[gpu].
PACKAGES: tuple[str, ...] = (
    "numpy", "pandas", "dask", "distributed", "numba", "pyarrow", "xgboost",
    "cupy", "dask_cuda", "cudf", "cuml",
)

#: Import names whose distribution is published under another name.
_DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "cupy": ("cupy", "cupy-cuda12x", "cupy-cuda11x"),
    "dask_cuda": ("dask-cuda",),
    "cudf": ("cudf", "cudf-cu12", "cudf-cu11"),
    "cuml": ("cuml", "cuml-cu12", "cuml-cu11"),
}

NOT_INSTALLED = "not installed"


def package_version(name: str) -> str:
    """Installed version of ``name`` read from package metadata (nothing is imported).

    Examples
    --------
    >>> package_version("numpy") == __import__("numpy").__version__
    True
    >>> package_version("surely-not-a-package")
    'not installed'
    """
    for dist in _DISTRIBUTIONS.get(name, (name,)):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return NOT_INSTALLED


def git_commit(cwd: Path | None = None) -> str | None:
    """The current git commit of the source checkout (None outside a checkout)."""
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=cwd or Path(__file__).resolve().parent, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.strip() or None if res.returncode == 0 else None


def collect_info(cluster: str | None = None) -> dict[str, Any]:
    """Everything ``qilin info`` prints, as a JSON-serialisable dict.

    Parameters
    ----------
    cluster : str, optional
        Cluster profile to describe (``local``, ``threads``, ``cuda``, ``remote``); default:
        the configured ``cluster.mode`` (``QILIN_CLUSTER__MODE`` or ``configs/default.yaml``).

    Returns
    -------
    dict
        ``qilin``, ``python``, ``platform``, ``packages`` (name -> version or
        ``"not installed"``), ``backend``, ``gpus`` (``count``, ``names``), ``config_dir``,
        ``cluster`` (the resolved profile), ``market`` (profile name).

    Raises
    ------
    ConfigError
        When the configuration or the named profile is invalid.
    """
    import qilin
    from qilin.backend import get_backend, gpu_count, gpu_names
    from qilin.config import config_dir, load_config

    cfg = load_config(cluster=cluster)
    cluster_profile = dict(vars(cfg.cluster))
    cluster_profile["tls"] = "enabled" if cfg.cluster.tls.enabled else "disabled"
    return {
        "qilin": qilin.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {name: package_version(name) for name in PACKAGES},
        "backend": get_backend("auto").describe(),
        "configured_backend": cfg.backend,
        "gpus": {"count": gpu_count(), "names": gpu_names()},
        "config_dir": str(config_dir()),
        "cluster": cluster_profile,
        "market": cfg.market.name,
    }
