"""qilin: quantitative equity research at scale on CPU, GPU and Dask clusters.

Examples
--------
>>> import qilin
>>> panel = qilin.synthetic_market(n_symbols=20, n_days=60, seed=7)
>>> panel.shape
(60, 20)
"""

from __future__ import annotations

__version__ = "0.1.0"

from qilin.backend import Backend, get_backend
from qilin.errors import QilinError

__all__ = ["Backend", "QilinError", "__version__", "get_backend", "synthetic_market"]


def synthetic_market(*args, **kwargs):
    """Generate the embedded synthetic market as a :class:`~qilin.data.Panel`.

    See :func:`qilin.data.synthetic.synthetic_market` for the parameters.
    """
    from qilin.data.synthetic import synthetic_market as _synthetic_market

    return _synthetic_market(*args, **kwargs)
