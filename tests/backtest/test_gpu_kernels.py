"""The backtest GPU kernels, run under numba-cuda's simulator, equal the CPU kernels.

The signal engine and the fused sweep each have one source: a column core compiled with
numba for the CPU (a ``prange`` over columns) and with numba-cuda for the GPU (one thread per
column). Without a GPU (CI) the GPU kernels run in numba-cuda's simulator: the cores execute
as Python on the CPU, thread by thread, so these tests check the GPU kernels' own code (the
thread-to-column mapping, launch geometry beyond one block, scratch passed in, atomic
accumulation, the GPU versions of the primitives) against the CPU kernels.

Why bit-identical for the engine: the simulator evaluates every float64 operation of the
core in Python, one IEEE-754 rounding per operation, as numba's CPU code does (numba asks
LLVM for no fused multiply-add without ``fastmath``); the cores use no library function
whose result could differ (``floor`` has an exact GPU version). On a real GPU numba-cuda's
NVVM would contract ``a * b + c`` into fused multiply-adds by default (``-fma=1``, whatever
``fastmath`` says); :mod:`qilin.kernels.targets` compiles the kernels with ``-fma=0`` so that
they round as here (checked on their PTX below). The sweep's sums across symbols are atomic
additions on the GPU, in another order than the CPU's, so its accumulators agree to 1e-12
relative.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from realdata import load_subset

from qilin.backtest import signal as S
from qilin.backtest.rules import MarketRules
from qilin.backtest.strategies import get_strategy
from qilin.data.panel import Panel
from qilin.data.synthetic import synthetic_market
from qilin.kernels import orders
from qilin.kernels.targets import device, simulated

pytestmark = pytest.mark.skipif(
    not simulated(), reason="compares the GPU kernels run in numba-cuda's simulator (no GPU); "
                            "on a GPU the CuPy paths are compared by the `gpu` tests")

ASHARE = ["000001.SZ", "600519.SH", "300014.SZ", "688005.SH", "600289.SH", "002540.SZ",
          "000410.SZ", "603988.SH", "000607.SZ", "430489.BJ"]
SP = ["AAPL", "MSFT", "XOM", "GE", "LNT", "DISCA", "AMZN", "JPM", "KO", "NFLX"]


@pytest.fixture(scope="module")
def ashare(ashare_path) -> Panel:  # 10 symbols x 120 dates: limits, suspensions, ST, ex-dates
    return load_subset(ashare_path, ASHARE, "2020-01-01", "2020-06-30")


@pytest.fixture(scope="module")
def sp500(sp500_path) -> Panel:
    return load_subset(sp500_path, SP, "2015-01-01", "2015-06-30")


def with_zero_volume(panel: Panel, seed: int = 0) -> Panel:
    """``panel`` with a few bars of volume 0 (priced, not tradable)."""
    rng = np.random.default_rng(seed)
    fields = dict(panel.fields)
    volume = np.array(fields["volume"], dtype=float)
    volume[rng.random(volume.shape) < 0.04] = 0.0
    fields["volume"] = volume
    return Panel(panel.dates, panel.symbols, fields, panel.backend, panel.valid,
                 panel.suspended, panel.info, panel.st)


@pytest.fixture(scope="module")
def synthetic() -> Panel:  # limit-locked days, suspensions, listings, ex-dates, ST spells
    return with_zero_volume(synthetic_market(14, 160, seed=5))


# --------------------------------------------------------------------- order primitives
def test_gpu_floor_equals_numpy_floor_everywhere():
    gpu_floor = orders._floor_gpu
    values = [0.0, -0.0, 0.5, -0.5, 1.0, -1.0, 2.5, -2.5, 1e-300, -1e-300, 4503599627370495.5,
              -4503599627370495.5, 2.0**52, 2.0**53 + 2, -(2.0**60), 1e308, np.inf, -np.inf,
              np.nan, 99.99999999999999, 100.00000000000001]
    rng = np.random.default_rng(1)
    values += list(rng.normal(0, 1e6, 500)) + list(rng.normal(0, 1, 500))
    for v in values:
        expected = np.floor(v)
        got = gpu_floor(float(v))
        assert (np.isnan(got) and np.isnan(expected)) or (
            got == expected and np.signbit(got) == np.signbit(expected)), v
        assert orders.floor_nb(v) == expected or np.isnan(expected)


def test_order_primitives_compile_as_device_functions():
    for fn in (orders.buy_nb, orders.sell_nb, orders.target_quantity_nb, orders.buy_step_nb,
               orders.sell_step_nb, orders.fill_buy_nb, orders.holding_after_nb,
               orders.record_rejection_nb, orders.record_fill_nb, orders.halted_nb):
        assert device(fn) is device(fn)  # compiled once, the simulator's device function


def test_buy_and_sell_primitives():
    filled, none, cash_short = orders.STATUS_FILLED, orders.STATUS_NONE, orders.REJECT_CASH
    # 1,000 shares wanted, 4 lots affordable after the 5.0 minimum commission
    status, qty, px, notional, cost = orders.buy_nb(0, 1000.0, 0.0, 10.0, 5000.0, 100.0,
                                                   0.001, 5.0, 0.0)
    assert (status, qty, px, notional, cost) == (filled, 400.0, 10.0, 4000.0, 5.0)
    assert orders.buy_nb(0, 1000.0, 0.0, 10.0, 10.0, 100.0, 0.001, 5.0, 0.0)[0] == cash_short
    assert orders.buy_nb(0, 1e18, 0.0, 10.0, 1e30, 1.0, 0.0, 0.0, 0.0)[0] == \
        orders.REJECT_PRECISION
    assert orders.buy_nb(0, 150.0, 100.0, 10.0, 1e6, 100.0, 0.0, 0.0, 0.0)[0] == none
    assert orders.buy_nb(orders.REJECT_LIMIT_UP, 100.0, 0.0, 10.0, 1e6, 100.0, 0.0, 0.0,
                         0.0)[0] == orders.REJECT_LIMIT_UP
    # a target of 0 sells everything, fractional shares included; stamp duty on top
    status, qty, px, notional, cost = orders.sell_nb(0, 0.0, 123.5, 10.0, 100.0, 0.001, 5.0,
                                                    0.5, 0.01)
    assert (status, qty, px) == (filled, 123.5, 5.0)
    assert cost == max(0.001 * notional, 5.0) + 0.01 * notional
    assert orders.sell_nb(0, 150.0, 200.0, 10.0, 100.0, 0.0, 0.0, 0.0, 0.0)[0] == none
    assert orders.holding_after_nb(100.0, -(100.0 - 1e-12)) == 0.0
    assert orders.holding_after_nb(-150.0, 350.0) == 200.0


def test_short_side_steps():
    # out of a long into a short sells the whole long (fractional shares too) plus the short;
    # covering a short buys the whole short plus the long
    assert orders.sell_step_nb(-200.0, 150.5, 100.0) == 350.5
    assert orders.sell_step_nb(-300.0, -100.0, 100.0) == 200.0  # a larger short: whole lots
    assert orders.buy_step_nb(200.0, -150.5, 100.0) == 350.5
    assert orders.buy_step_nb(-100.0, -350.0, 100.0) == 200.0  # a smaller short
    status, qty, _, notional, _ = orders.sell_nb(0, -200.0, 150.0, 10.0, 100.0, 0.0, 0.0,
                                                0.0, 0.0)
    assert (status, qty, notional) == (orders.STATUS_FILLED, 350.0, 3500.0)
    assert orders.sell_nb(0, -1e18, 0.0, 10.0, 1.0, 0.0, 0.0, 0.0, 0.0)[0] == \
        orders.REJECT_PRECISION
    # a buy scaled to 0 lots by the caller is short of cash, not "nothing to do"
    assert orders.fill_buy_nb(0.0, 10.0, 1e6, 100.0, 0.0, 0.0, 0.0)[0] == orders.REJECT_CASH


# ------------------------------------------------------------------ the signal engine
def _engine_inputs(panel, desired, market, lag, price):
    inputs = S.execution_inputs(panel, MarketRules.from_market(market), price)
    inputs["target"] = S.shift_rows(desired, S.execution_shift(lag, price))
    return [inputs[name] for name in S.KERNEL_INPUTS]


def _params(market, init_cash=1e6, threshold=0.0):
    _, cm, rules = S.resolve_market(market, None, None)
    return (init_cash, cm.commission_rate, cm.min_commission, cm.slippage, cm.stamp_duty_rate,
            float(rules.lot_size), threshold)


def _ma_targets(panel, fast=3, slow=12):
    adj = pd.DataFrame(np.asarray(panel.adjusted()["close"]))
    f, s = adj.rolling(fast).mean().to_numpy(), adj.rolling(slow).mean().to_numpy()
    with np.errstate(invalid="ignore"):
        return np.where(f > s, 0.8, np.where(f < s, 0.1, np.nan))


def assert_engine_gpu_equals_cpu(inputs, params):
    cpu = S._simulate_cpu(*inputs, params)
    gpu = S._simulate_gpu(*inputs, params)
    for name in S.KERNEL_OUTPUTS:
        assert type(gpu[name]) is np.ndarray  # allocated in the inputs' namespace
        np.testing.assert_array_equal(gpu[name], cpu[name], err_msg=name)
    return cpu


@pytest.mark.parametrize("market,lag,price,threshold", [
    ("cn", 0, "close", 0.0), ("cn", 1, "open", 0.0), ("us", 0, "close", 0.05)])
def test_engine_gpu_kernel_on_real_a_shares(ashare, market, lag, price, threshold):
    inputs = _engine_inputs(ashare, _ma_targets(ashare), market, lag, price)
    cpu = assert_engine_gpu_equals_cpu(inputs, _params(market, threshold=threshold))
    assert (cpu["rec_status"] == orders.STATUS_FILLED).sum() > 30


def test_engine_gpu_kernel_on_real_sp500(sp500):
    inputs = _engine_inputs(sp500, _ma_targets(sp500, 2, 8), "us", 0, "close")
    cpu = assert_engine_gpu_equals_cpu(inputs, _params("us", init_cash=2e4, threshold=0.02))
    assert (cpu["rec_status"] == orders.STATUS_FILLED).sum() > 30


@pytest.mark.parametrize("price,lag", [("close", 0), ("open", 1)])
def test_engine_gpu_kernel_on_synthetic_rules(synthetic, price, lag):
    rng = np.random.default_rng(1)
    desired = rng.choice([np.nan, np.nan, np.nan, 0.0, 0.3, 1.0], size=synthetic.shape)
    inputs = _engine_inputs(synthetic, desired, "cn", lag, price)
    cpu = assert_engine_gpu_equals_cpu(inputs, _params("cn", init_cash=3e4))
    reasons = set(np.unique(cpu["rec_status"]).tolist())
    assert {orders.STATUS_FILLED, orders.REJECT_SUSPENDED, orders.REJECT_NO_VOLUME} <= reasons
    if price == "close":  # the synthetic opens never sit at a limit
        assert {orders.REJECT_LIMIT_UP, orders.REJECT_LIMIT_DOWN} <= reasons, reasons
    assert (inputs[S.KERNEL_INPUTS.index("adj_ratio")] != 1.0).any()  # corporate actions


@pytest.mark.parametrize("market,init_cash", [("us", 1e6), ("cn", 1e18)])
def test_engine_gpu_kernel_on_extreme_inputs(market, init_cash):
    """Closed-form sizing near float limits, beyond-precision and no-volume rejections."""
    T = 60
    t = np.arange(T)[:, None]
    close = np.array([1e-10, 1e12, 10.0, 3e5]) * (1.0 + 0.05 * np.sin(t / 3.0 + np.arange(4)))
    volume = np.full(close.shape, 1e4)
    volume[10:25, 2:] = 0.0
    panel = Panel.from_arrays({"close": close, "open": close, "volume": volume},
                              pd.bdate_range("2021-01-04", periods=T),
                              ["600000.SH", "000001.SZ", "600519.SH", "300750.SZ"])
    desired = np.where(np.sin(t / 7.0 + np.arange(4)) > 0, 0.9, 0.0)
    cpu = assert_engine_gpu_equals_cpu(_engine_inputs(panel, desired, market, 0, "close"),
                                       _params(market, init_cash))
    statuses = set(np.unique(cpu["rec_status"]).tolist())
    assert {orders.STATUS_FILLED, orders.REJECT_NO_VOLUME} <= statuses
    assert statuses & {orders.REJECT_CASH, orders.REJECT_PRECISION}


def test_engine_gpu_kernel_beyond_one_block():
    """131 columns: two blocks of 128 threads, the second one mostly idle."""
    panel = synthetic_market(131, 40, seed=8)
    rng = np.random.default_rng(4)
    desired = rng.choice([np.nan, np.nan, 0.0, 0.5, 1.0], size=panel.shape)
    cpu = assert_engine_gpu_equals_cpu(_engine_inputs(panel, desired, "cn", 0, "close"),
                                       _params("cn", init_cash=5e4))
    assert (cpu["rec_status"][:, 128:] == orders.STATUS_FILLED).any()


def test_run_signals_through_the_gpu_kernel(monkeypatch, synthetic):
    """``run_signals`` end to end with the kernel dispatch sending NumPy arrays to the GPU
    kernel: the same result, trade records included, as on the CPU."""
    entries, exits = get_strategy("ma_cross").signals(synthetic, fast=3, slow=10)
    cpu = S.run_signals(synthetic, entries=entries, exits=exits, market="cn", backend="cpu")
    monkeypatch.setattr(S, "simulate_signals", S.DeviceKernel("gpu", cpu=S._simulate_gpu))
    gpu = S.run_signals(synthetic, entries=entries, exits=exits, market="cn", backend="cpu")
    for name in ("equity", "positions", "value", "costs", "traded"):
        np.testing.assert_array_equal(getattr(gpu, name), getattr(cpu, name), err_msg=name)
    pd.testing.assert_frame_equal(gpu.trades, cpu.trades, check_exact=True)


# --------------------------------------------------------------------- the fused sweep
def _sweep_case(panel, strategy, grid, market, lag, init_cash=1e6):
    from qilin.backtest.strategies import compute_series
    from qilin.backtest.sweeps import ParameterGrid, _rule_arrays, prepare_market

    m = prepare_market(panel, market)
    template = get_strategy(strategy)
    combos = ParameterGrid(grid).combinations(template)
    keys, idx, coef = _rule_arrays(template, combos)
    N, T = m.shape
    stack = np.stack([compute_series(k, m.signal_px) for k in keys] + [np.zeros((N, T))])
    mc = m.market
    args = (lag, init_cash, float(mc.lot_size), mc.commission_rate, mc.min_commission,
            mc.slippage_bps / 1e4, mc.stamp_duty_rate, mc.t_plus_one)
    return (stack, idx, coef, m.close, m.buy_reject, m.sell_reject, m.adj_ratio), args


def assert_sweep_gpu_equals_cpu(arrays, args, init_cash=1e6):
    from qilin.backtest import sweep_kernels_cpu as kc
    from qilin.backtest import sweep_kernels_gpu as kg

    C, T = arrays[1].shape[0], arrays[3].shape[1]
    port, counters = np.zeros((C, T)), np.zeros((C, 5))
    kc.simulate_signals_nb(*arrays, *args, port, counters, kc.combo_group(C))
    gpu_port, gpu_counters = np.zeros_like(port), np.zeros_like(counters)
    kg.simulate_block(*arrays, args, gpu_port, gpu_counters)
    # money: relative to the capital (a day's change can be ~0); counters relative
    np.testing.assert_allclose(gpu_port, port, rtol=1e-12, atol=1e-12 * init_cash)
    np.testing.assert_allclose(gpu_counters, counters, rtol=1e-12)
    assert counters[:, 0].sum() > 0
    return port, counters


@pytest.mark.parametrize("strategy,grid,market,lag", [
    ("ma_cross", "fast=2,3,4 slow=8,12,20 ma=sma,ema", "cn", 0),
    ("bollinger", "window=5,8,12 k=1.0,2.0 mode=reversion,breakout", "us", 1),
    ("rsi", "window=3,5,9 lower=25,30 upper=60,75", "cn", 2)])
def test_sweep_gpu_kernel_on_synthetic_rules(synthetic, strategy, grid, market, lag):
    arrays, args = _sweep_case(synthetic, strategy, grid, market, lag)
    assert arrays[1].shape[0] * synthetic.shape[1] > 128  # more columns than one block
    assert (arrays[4] == orders.REJECT_NO_VOLUME).any() and (arrays[6] != 1.0).any()
    assert_sweep_gpu_equals_cpu(arrays, args)


@pytest.mark.parametrize("market,lag", [("cn", 0), ("us", 1)])
def test_sweep_gpu_kernel_on_real_a_shares(ashare, market, lag):
    arrays, args = _sweep_case(ashare, "ma_cross", "fast=2,5 slow=10,30 ma=sma,ema", market,
                               lag)
    if market == "cn":
        assert (arrays[4] == orders.REJECT_LIMIT_UP).any()
    assert_sweep_gpu_equals_cpu(arrays, args)


def test_sweep_gpu_kernel_on_real_sp500(sp500):
    arrays, args = _sweep_case(sp500, "bollinger", "window=5,20 k=1.0 mode=reversion,breakout",
                               "us", 0)
    assert_sweep_gpu_equals_cpu(arrays, args)


@pytest.mark.parametrize("market,init_cash", [("cn", 1e6), ("us", 1e18)])
def test_sweep_gpu_kernel_on_extreme_inputs(market, init_cash):
    T = 90
    t = np.arange(T)[:, None]
    close = np.array([1e-10, 1e12, 10.0, 25.0]) * (1.0 + 0.05 * np.sin(t / 3.0 + np.arange(4)))
    volume = np.full(close.shape, 1e4)
    volume[20:50, 2:] = 0.0
    panel = Panel.from_arrays({"close": close, "volume": volume},
                              pd.bdate_range("2021-01-04", periods=T),
                              ["600000.SH", "000001.SZ", "600519.SH", "300750.SZ"])
    arrays, args = _sweep_case(panel, "ma_cross", "fast=2,3 slow=5,9", market, 0, init_cash)
    assert_sweep_gpu_equals_cpu(arrays, args, init_cash)


def test_sweep_gpu_kernel_in_scratch_chunks(monkeypatch, synthetic):
    """Combinations launched in several chunks when the scratch budget is small."""
    from qilin.backtest import sweep_kernels_gpu as kg

    arrays, args = _sweep_case(synthetic, "ma_cross", "fast=2,3,4 slow=8,12", "cn", 0)
    monkeypatch.setattr(kg, "SCRATCH_BYTES", 2 * 8 * 7 * synthetic.shape[1])  # 2 combos
    assert_sweep_gpu_equals_cpu(arrays, args)


def test_run_sweep_through_the_gpu_kernel(monkeypatch, synthetic):
    """``run_sweep`` end to end (several symbol blocks) with the block dispatch sending
    NumPy arrays to the GPU kernel: the same table as on the CPU."""
    from qilin.backtest import sweep_kernels_gpu as kg
    from qilin.backtest import sweeps

    grid = "fast=2,4 slow=8,20 ma=sma,ema"
    cpu = sweeps.run_sweep(synthetic, "ma_cross", grid, market="cn", backend="cpu",
                           memory_budget=60_000)
    monkeypatch.setattr(sweeps, "simulate_block", sweeps.DeviceKernel("gpu",
                                                                      cpu=kg.simulate_block))
    gpu = sweeps.run_sweep(synthetic, "ma_cross", grid, market="cn", backend="cpu",
                           memory_budget=60_000)
    pd.testing.assert_frame_equal(gpu.table, cpu.table, rtol=1e-9, atol=1e-12)


def test_backtest_kernels_compile_without_fused_multiply_adds():
    """The kernels' PTX (compiled without the simulator or a driver) has no fused
    multiply-add and only correctly rounded float64 arithmetic, so a real GPU rounds every
    operation as the CPU does."""
    import os
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(r"""
        import re
        import qilin.backtest.signal, qilin.backtest.sweep_kernels_gpu
        from qilin.kernels.targets import KERNELS
        for k in KERNELS:
            if k.name in ("simulate_signals_kernel", "symbol_bars_kernel",
                          "sweep_columns_kernel"):
                ptx = k.ptx()
                fma = len(re.findall(r"\sfma\.", ptx))
                loose = len(re.findall(r"\s(?:mul|add|sub|div)\.f64", ptx))  # no .rn
                print("ptx", k.name, fma, loose, len(ptx))
    """)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split() for line in done.stdout.splitlines() if line.startswith("ptx ")]
    assert sorted(r[1] for r in rows) == ["simulate_signals_kernel", "sweep_columns_kernel",
                                          "symbol_bars_kernel"]
    for _, name, fma, loose, _size in rows:
        assert (fma, loose) == ("0", "0"), (name, fma, loose)
