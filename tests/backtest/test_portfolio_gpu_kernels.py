"""The portfolio engine's account and the momentum top-k sweep on the GPU, from the CPU's source.

Without a GPU the kernels run in numba-cuda's simulator (tests/conftest.py); every output is
compared with the CPU kernel bit for bit. ``run_portfolio`` and the sweep's ``_topk_port``
reach the GPU wrappers through ``qilin.backend.DeviceKernel``, which dispatches on CuPy
arrays; here a backend named ``gpu`` whose namespace is NumPy, with the dispatchers pointed
at the GPU wrappers, takes the same route without CuPy. The PTX of each kernel is compiled
by tests/kernels/test_targets.py.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from realdata import load_subset

from qilin.backend import Backend, DeviceKernel, gpu_available
from qilin.backtest import portfolio as P
from qilin.backtest import sweep_kernels_cpu as K
from qilin.backtest import sweeps
from qilin.backtest.result import (
    REJECT_CASH,
    REJECT_LIMIT_DOWN,
    REJECT_LIMIT_UP,
    REJECT_NO_VOLUME,
    REJECT_SUSPENDED,
    STATUS_FILLED,
)
from qilin.backtest.signal import NO_VOLUME_PRICE, execution_inputs, resolve_market
from qilin.backtest.strategies import MomentumTopK
from qilin.backtest.sweeps import ParameterGrid, prepare_market
from qilin.data.synthetic import synthetic_market
from qilin.errors import BackendError
from qilin.kernels.targets import simulated

pytestmark = pytest.mark.skipif(
    not simulated() and os.environ.get("QILIN_TEST_CUDA") != "device",
    reason="GPU kernels run under the simulator (CI) or on a real GPU (QILIN_TEST_CUDA=device)")

ASHARE_SYMBOLS = ["000001.SZ", "600519.SH", "300014.SZ", "688005.SH", "600289.SH",
                  "000410.SZ", "002540.SZ", "603988.SH", "000607.SZ", "600000.SH",
                  "000002.SZ", "600036.SH", "300750.SZ", "000609.SZ", "000725.SZ"]
SP_SYMBOLS = ["AAPL", "MSFT", "XOM", "GE", "LNT", "DISCA", "DISCK", "AMZN", "JPM", "KO",
              "PFE", "WMT", "NFLX", "GOOGL", "T"]
GPU = Backend("gpu", np)  # the GPU route with NumPy as the device namespace


def assert_bits_equal(cpu: dict, gpu: dict) -> None:
    assert cpu.keys() == gpu.keys()
    for name in cpu:
        a, b = np.asarray(cpu[name]), np.asarray(gpu[name])
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert np.array_equal(np.ascontiguousarray(a).view(np.uint8),
                              np.ascontiguousarray(b).view(np.uint8)), name


@pytest.fixture(scope="module")
def ashare(ashare_path):
    return load_subset(ashare_path, ASHARE_SYMBOLS, "2020-01-01", "2020-06-30")


@pytest.fixture(scope="module")
def sp500(sp500_path):
    # 120 dates around DISCA/DISCK's unadjusted 2:1 stock dividend (2014-08-07)
    return load_subset(sp500_path, SP_SYMBOLS, "2014-05-01", "2014-10-20")


# ------------------------------------------------------------------------ the account
def synthetic_case(seed: int, init_cash: float, shorts: bool):
    """Execution inputs with limit hits, suspensions, zero volume and corporate actions."""
    panel = synthetic_market(15, 120, seed=seed)
    _, cm, rules = resolve_market("cn", None, None)
    inp = execution_inputs(panel, rules, "close")
    rng = np.random.default_rng(seed)
    T, N = panel.shape
    px = inp["exec_price"].copy()
    no_volume = rng.random((T, N)) < 0.03
    px[no_volume] = NO_VOLUME_PRICE
    missing = rng.random((T, N)) < 0.03
    px[missing] = np.nan
    buy, sell = inp["buy_reject"].copy(), inp["sell_reject"].copy()
    buy[rng.random((T, N)) < 0.06] = REJECT_LIMIT_UP
    sell[rng.random((T, N)) < 0.06] = REJECT_LIMIT_DOWN
    for closed, code in ((no_volume, REJECT_NO_VOLUME), (missing, REJECT_SUSPENDED)):
        buy[closed] = sell[closed] = code
    ratio = inp["adj_ratio"].copy()
    ratio[rng.random((T, N)) < 0.01] = 1.5  # bonus shares
    w = rng.random((T, N)) * (rng.random((T, N)) < 0.4)
    if shorts:
        w[:, ::3] *= -1.0
    w /= np.maximum(np.abs(w).sum(axis=1, keepdims=True), 1.0)
    w[rng.random((T, N)) < 0.05] = np.nan
    rebalance = rng.random(T) < 0.3
    return (w, rebalance, px, inp["close"], ratio, buy, sell, init_cash, cm.commission_rate,
            cm.min_commission, cm.slippage, cm.stamp_duty_rate, 100.0)


def test_account_kernel_matches_the_cpu_on_synthetic_edge_cases():
    seen: set[int] = set()
    for seed, init_cash, shorts in [(0, 1e6, False), (1, 30_000.0, False), (2, 1e6, True)]:
        args = synthetic_case(seed, init_cash, shorts)
        cpu = P.simulate_portfolio(*args)
        gpu = P.simulate_portfolio_gpu(*args)
        assert_bits_equal(cpu, gpu)
        seen |= set(np.unique(cpu["rec_status"]).tolist())
    assert {STATUS_FILLED, REJECT_SUSPENDED, REJECT_NO_VOLUME, REJECT_LIMIT_UP,
            REJECT_LIMIT_DOWN, REJECT_CASH} <= seen


def momentum(panel, lookback: int = 20) -> np.ndarray:
    close = pd.DataFrame(np.asarray(panel["close"], dtype=float)).ffill()
    return (close / close.shift(lookback) - 1.0).to_numpy()


def cpu_and_gpu_runs(monkeypatch, panel, **kw):
    cpu = P.run_portfolio(panel, **kw, backend="cpu")
    monkeypatch.setattr(P, "_simulate_portfolio",
                        DeviceKernel("simulate_portfolio", cpu=P.simulate_portfolio_gpu))
    gpu = P.run_portfolio(panel, **kw, backend=GPU)
    assert (cpu.backend, gpu.backend) == ("cpu", "gpu")
    assert_bits_equal({k: getattr(cpu, k) for k in ("equity", "positions", "value", "costs",
                                                    "traded")},
                      {k: getattr(gpu, k) for k in ("equity", "positions", "value", "costs",
                                                    "traded")})
    pd.testing.assert_frame_equal(cpu.trades, gpu.trades)
    assert (cpu.trades["status"] == "filled").sum() > 10
    return cpu


@pytest.mark.parametrize("price", ["close", "open"])
def test_run_portfolio_on_the_gpu_route_matches_the_cpu_on_ashares(ashare, monkeypatch, price):
    assert ashare.shape == (117, 15)
    cpu = cpu_and_gpu_runs(monkeypatch, ashare, scores=momentum(ashare), top_k=5, rebalance=5,
                           lag=1, market="cn", price=price, init_cash=500_000.0)
    assert {"limit_up", "limit_down", "suspended"} & set(cpu.trades["reason"])


def test_run_portfolio_on_the_gpu_route_matches_the_cpu_on_sp500_long_short(sp500,
                                                                            monkeypatch):
    assert sp500.shape[1] == 15 and 115 <= sp500.shape[0] <= 125
    cpu = cpu_and_gpu_runs(monkeypatch, sp500, scores=momentum(sp500, 10), top_k=4, short_k=3,
                           rebalance=3, market="us", price="open", init_cash=200_000.0)
    assert (cpu.positions < 0).any()


def test_asking_for_the_gpu_without_one_is_an_error_not_a_fallback():
    if gpu_available():
        pytest.skip("a GPU is usable here")
    panel = synthetic_market(3, 30, seed=1)
    with pytest.raises(BackendError, match="no GPU is usable"):
        P.run_portfolio(panel, scores=np.ones(panel.shape), top_k=1, backend="gpu")


# ------------------------------------------------------------------------ top-k
def test_ranking_kernel_matches_the_sort_with_ties_nan_inf_and_untradable_names():
    nan, inf = np.nan, np.inf
    row = [1.0, 3.0, nan, 3.0, -inf, inf, 0.0, -0.0, 3.0, 1.0, nan, -2.0]
    rng = np.random.default_rng(5)
    L, T, N = 2, 6, len(row)
    scores = np.empty((L, T, N))
    scores[0] = row
    scores[1] = rng.integers(-2, 3, size=(T, N)).astype(float)
    scores[1][rng.random((T, N)) < 0.2] = nan
    tradable = rng.random((T, N)) < 0.8
    tradable[0] = True
    needed = np.array([True, True, False, True, True, True])
    for depth in (3, N + 2):
        out = {}
        for name, fn in (("cpu", K.topk_candidates_nb), ("gpu", K.topk_candidates_gpu)):
            ranked = np.full((L, T, depth), -1, dtype=np.int64)
            n_candidates = np.full((L, T), -1, dtype=np.int64)
            fn(scores, tradable, needed, ranked, n_candidates)
            out[name] = {"ranked": ranked, "n_candidates": n_candidates}
        assert_bits_equal(out["cpu"], out["gpu"])
    assert out["cpu"]["n_candidates"][0, 0] == 10 and out["cpu"]["n_candidates"][0, 2] == 0
    assert out["cpu"]["ranked"][0, 0, :10].tolist() == [5, 1, 3, 8, 0, 9, 6, 7, 11, 4]


def route_sweep_to_gpu(monkeypatch) -> None:
    monkeypatch.setattr(K, "topk_candidates",
                        DeviceKernel("topk_candidates", cpu=K.topk_candidates_gpu))
    monkeypatch.setattr(K, "topk_portfolio_sweep",
                        DeviceKernel("topk_portfolio_sweep", cpu=K.topk_portfolio_sweep_gpu))


def cpu_and_gpu_sweeps(monkeypatch, m, grid: str, lag: int):
    combos = ParameterGrid(grid).combinations(MomentumTopK())
    cpu = sweeps._topk_port(m, combos, lag, 1e6)
    route_sweep_to_gpu(monkeypatch)
    gpu = sweeps._topk_port(m, combos, lag, 1e6, backend=GPU)
    assert_bits_equal({"port": cpu[0], "counters": cpu[1]}, {"port": gpu[0], "counters": gpu[1]})
    return combos, cpu


def test_topk_sweep_kernel_matches_the_cpu_over_two_blocks_of_threads(monkeypatch):
    # the simulator runs a thread at a time: a short market keeps this under a minute
    m = prepare_market(synthetic_market(10, 40, seed=4), "cn", portfolio=True)
    combos, (port, counters) = cpu_and_gpu_sweeps(
        monkeypatch, m, "lookback=3,5,10 k=1:8:1 rebalance=1:6:1", lag=1)
    assert len(combos) == 144  # more than one block of 128 threads, the last one partial
    assert (counters[:, 0] > 0).all() and np.abs(port).sum() > 0


@pytest.mark.parametrize("lag", [0, 2])
def test_topk_sweep_kernel_matches_the_cpu_on_ashares(ashare, monkeypatch, lag):
    m = prepare_market(ashare, "cn", portfolio=True)
    _, (_, counters) = cpu_and_gpu_sweeps(
        monkeypatch, m, "lookback=5,20 k=2,5,20 rebalance=1,5", lag)
    assert (counters[:, 0] > 0).all()
