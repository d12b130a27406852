"""qilin: quantitative equity research at scale on CPU, GPU and Dask clusters.

Where things are (each package's ``__all__`` is its public API):

- ``qilin.data``: ``load_panel``/``load_bars`` (Parquet, CSV, folders, Qlib data folders),
  ``validate_bars``, ``Panel``, ``synthetic_market``.
- ``qilin.factors``: ``FactorCalculator`` (expressions such as ``ts_mean(close, 5) / close``,
  on a Dask cluster or in process), ``alpha158_features``, ``evaluate_factor`` (IC, Rank IC,
  quantile returns).
- ``qilin.backtest``: ``run_signals``, ``run_portfolio``, ``run_sweep``, ``get_strategy``,
  costs, market rules and metrics.
- ``qilin.analysis``: ``DistributedStockAnalyzer`` (analyze / backtest / optimize in parallel).
- ``qilin.monitoring``: alerts, price monitor, anomaly detector, system metrics, Prometheus.
- ``qilin.cluster.ClusterManager``: local, threads, cuda or remote Dask clusters.
- ``qilin.backend``: NumPy or CuPy arrays (``get_backend``).
- The ``qilin`` command (``qilin --help``) lives in ``qilin.cli``.

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
from qilin.warmup import drop_stale_kernel_caches

drop_stale_kernel_caches()

__all__ = ["Backend", "QilinError", "__version__", "get_backend", "synthetic_market"]


def synthetic_market(*args, **kwargs):
    """Generate the embedded synthetic market as a :class:`~qilin.data.Panel`.

    See :func:`qilin.data.synthetic.synthetic_market` for the parameters.
    """
    from qilin.data.synthetic import synthetic_market as _synthetic_market

    return _synthetic_market(*args, **kwargs)
