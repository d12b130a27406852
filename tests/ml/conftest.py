"""Small shared inputs for the model tests (synthetic market with a planted alpha)."""

from __future__ import annotations

import pytest

from qilin.data.synthetic import synthetic_market
from qilin.factors.calculator import FactorCalculator

FACTORS = {
    "mom5": "close / ts_delay(close, 5) - 1",
    "rev1": "close / ts_delay(close, 1) - 1",
    "vol10": "ts_std(close / ts_delay(close, 1) - 1, 10)",
    "vratio": "volume / ts_mean(volume, 10)",
}


@pytest.fixture(scope="session")
def small_market():
    return synthetic_market(n_symbols=40, n_days=260, seed=5)


@pytest.fixture(scope="session")
def small_factors(small_market):
    return FactorCalculator(FACTORS, backend="cpu", progress=False).compute(small_market)


@pytest.fixture(scope="session")
def local_client():
    """A real 2-worker, 1-thread LocalCluster (processes)."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        yield client
