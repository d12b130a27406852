"""Fused sweep kernels against a per-bar Python reference, empyrical and TA-Lib."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sweep_reference import reference_portfolio

from qilin.backtest import sweep_kernels_cpu as kcpu
from qilin.backtest.strategies import compute_series, compute_stack, get_strategy, signal_close
from qilin.backtest.sweeps import (
    ParameterGrid,
    SweepResult,
    combination_returns,
    parse_grid,
    run_sweep,
)
from qilin.config import load_market
from qilin.data.panel import Panel
from qilin.data.synthetic import synthetic_market
from qilin.errors import BacktestError

CN = load_market("cn")
US = load_market("us")


@pytest.fixture(scope="module")
def ashare_panel(ashare_path) -> Panel:
    syms = ["000001.SZ", "000036.SZ", "300014.SZ", "300015.SZ", "600000.SH", "600519.SH",
            "688005.SH", "688017.SH", "430489.BJ", "000501.SZ"]
    df = pd.read_parquet(ashare_path, filters=[("symbol", "in", syms)])
    df = df[(df["date"] >= "2019-01-01") & (df["date"] <= "2021-06-30")]
    return Panel.from_long(df)


@pytest.fixture(scope="module")
def sp500_panel(sp500_path) -> Panel:
    syms = ["AAPL", "MSFT", "XOM", "GE", "JPM", "NFLX", "LNT", "DISCA"]
    df = pd.read_parquet(sp500_path, filters=[("symbol", "in", syms)])
    return Panel.from_long(df[df["date"] >= "2015-01-01"])


def _empyrical(returns: np.ndarray, ppy: int) -> dict[str, float]:
    import empyrical as ep

    return {
        "total_return": ep.cum_returns_final(returns),
        "annual_return": ep.annual_return(returns, annualization=ppy),
        "annual_volatility": ep.annual_volatility(returns, annualization=ppy),
        "sharpe_ratio": ep.sharpe_ratio(returns, annualization=ppy),
        "sortino_ratio": ep.sortino_ratio(returns, annualization=ppy),
        "max_drawdown": ep.max_drawdown(returns),
        "calmar_ratio": ep.calmar_ratio(returns, annualization=ppy),
    }


def _check_against_reference(panel, strategy, combos, market, lag=0):
    template = get_strategy(strategy)
    res = run_sweep(panel, strategy, ParameterGrid({k: [c[k] for c in combos]
                                                    for k in combos[0]}, kind="zip"),
                    market=market, backend="cpu", lag=lag, memory_budget=200_000)
    assert len(res.table) == len(combos)
    for i, params in enumerate(combos):
        entries, exits = template.signals(panel, **params)
        ref = reference_portfolio(panel, entries, exits, market, lag)
        got = combination_returns(panel, strategy, params, market=market, lag=lag)
        np.testing.assert_allclose(got.to_numpy(), ref["returns"], rtol=1e-9, atol=1e-12)
        row = res.table.iloc[i]
        assert row["n_trades"] == ref["n_trades"]
        assert ref["n_trades"] > 0
        if ref["closed"]:
            assert row["win_rate"] == pytest.approx(ref["wins"] / ref["closed"])
        for name, value in _empyrical(ref["returns"], market.periods_per_year).items():
            assert row[name] == pytest.approx(value, rel=1e-7, abs=1e-10, nan_ok=True), name


def test_ma_cross_matches_reference_on_ashares_with_cn_rules(ashare_panel):
    combos = [{"fast": 5, "slow": 20, "ma": "sma"}, {"fast": 3, "slow": 30, "ma": "ema"},
              {"fast": 10, "slow": 60, "ma": "sma"}]
    _check_against_reference(ashare_panel, "ma_cross", combos, CN)


def test_rsi_and_bollinger_match_reference_on_ashares_with_lag(ashare_panel):
    _check_against_reference(ashare_panel, "rsi",
                             [{"window": 14, "lower": 30.0, "upper": 70.0},
                              {"window": 6, "lower": 20.0, "upper": 60.0}], CN, lag=1)
    _check_against_reference(ashare_panel, "bollinger",
                             [{"window": 20, "k": 2.0, "mode": "reversion"},
                              {"window": 10, "k": 1.0, "mode": "breakout"}], CN)


def test_ma_cross_matches_reference_on_sp500_with_us_rules(sp500_panel):
    combos = [{"fast": 5, "slow": 50, "ma": "sma"}, {"fast": 12, "slow": 26, "ma": "ema"}]
    _check_against_reference(sp500_panel, "ma_cross", combos, US)


def test_cn_rules_are_exercised_on_synthetic_market():
    """Synthetic A-shares have limit days, suspensions and corporate actions."""
    panel = synthetic_market(12, 300, seed=11)
    assert (~np.asarray(panel.valid)).any()
    af = np.asarray(panel["adj_factor"])
    assert np.nanmax(af) > np.nanmin(af)
    _check_against_reference(panel, "ma_cross", [{"fast": 2, "slow": 5, "ma": "sma"},
                                                 {"fast": 3, "slow": 10, "ma": "ema"}], CN)
    _check_against_reference(panel, "rsi", [{"window": 3, "lower": 40.0, "upper": 55.0}], CN)


def test_symbol_blocks_and_tiles_do_not_change_results():
    panel = synthetic_market(9, 200, seed=5)
    grid = "fast=2:8:3 slow=10,20 ma=sma,ema"
    a = run_sweep(panel, "ma_cross", grid, backend="cpu")
    b = run_sweep(panel, "ma_cross", grid, backend="cpu", tile_size=5, memory_budget=50_000)
    pd.testing.assert_frame_equal(a.table, b.table, rtol=1e-12)
    assert len(a.table) == 12


@pytest.mark.parametrize("strategy, grid, lag", [
    ("ma_cross", "fast=2:15:1 slow=16:60:4", 0),  # mirrored sides
    ("bollinger", "window=3:30:1 k=0.5,1.0,2.0 mode=reversion,breakout", 1),  # scaled sides
])
def test_every_combination_equals_its_own_run_across_groups_and_bar_tiles(strategy, grid,
                                                                          lag):
    # more combinations than one kernel group and more bars than one signal-code tile
    panel = synthetic_market(5, kcpu.CODE_TILE + 190, seed=3)
    res = run_sweep(panel, strategy, grid, backend="cpu", lag=lag)
    assert len(res.table) > kcpu.COMBO_GROUP
    assert (res.table["n_trades"] > 0).sum() > kcpu.COMBO_GROUP // 2
    for i in [*range(0, len(res.table), 9), len(res.table) - 1]:
        row = res.table.iloc[i]
        params = {k: row[k] for k in get_strategy(strategy).param_names}
        params = {k: (int(v) if isinstance(v, (np.integer, int)) else v)
                  for k, v in params.items()}
        one = run_sweep(panel, strategy, ParameterGrid({k: [v] for k, v in params.items()}),
                        backend="cpu", lag=lag).table.iloc[0]
        for name in (*kcpu.METRIC_NAMES, "n_trades", "exposure", "turnover"):
            assert one[name] == pytest.approx(row[name], rel=1e-12, abs=1e-15,
                                              nan_ok=True), (params, name)


@pytest.mark.parametrize("a0, a1, mirrored, scaled", [
    (0.0, 0.0, True, False),  # MA cross: the comparison without constants
    (0.5, -0.25, True, False),
    (0.5, -0.25, False, False),
    (0.5, -0.25, False, True),
])
def test_signal_bits_match_the_comparisons(a0, a1, mirrored, scaled):
    rng = np.random.default_rng(4)
    n = 200  # three full 64-bar words and a partial one
    rows = rng.normal(size=(8, n)).round(1)  # rounding makes ties
    rows[rng.random((8, n)) < 0.05] = np.nan
    if not scaled:  # the kernel passes the all-zero series for absent scaled operands
        rows[1::2] = 0.0
    b0, k0, b1, k1, b2, k2, b3, k3 = rows
    m0, m1, m2, m3 = (0.7, -1.3, 2.0, 0.4) if scaled else (0.0,) * 4
    a2, a3 = (a1, a0) if mirrored else (0.1, -0.3)
    if mirrored:
        b2, b3 = b1, b0
    entry_words = np.zeros(4, dtype=np.uint64)
    exit_words = np.zeros(4, dtype=np.uint64)
    kcpu._signal_bits_nb(b0, k0, m0, a0, b1, k1, m1, a1, b2, k2, m2, a2, b3, k3, m3, a3,
                         scaled, mirrored, n, entry_words, exit_words)
    with np.errstate(invalid="ignore"):
        entry = b0 + m0 * k0 + a0 > b1 + m1 * k1 + a1
        exit_ = b2 + m2 * k2 + a2 > b3 + m3 * k3 + a3

    def unpack(words):
        return np.unpackbits(words.view(np.uint8), bitorder="little")[:n].astype(bool)

    np.testing.assert_array_equal(unpack(entry_words), entry & ~exit_)
    np.testing.assert_array_equal(unpack(exit_words), exit_ & ~entry)
    assert unpack(entry_words).any() and unpack(exit_words).any()


def test_indicators_match_talib():
    import talib

    rng = np.random.default_rng(0)
    x = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, 300)))
    row = x[None, :]
    np.testing.assert_allclose(kcpu.rolling_mean_nb(row, 10)[0], talib.SMA(x, 10),
                               rtol=1e-10, equal_nan=True)
    np.testing.assert_allclose(kcpu.ema_nb(row, 12)[0], talib.EMA(x, 12),
                               rtol=1e-10, equal_nan=True)
    np.testing.assert_allclose(kcpu.rsi_nb(row, 14)[0], talib.RSI(x, 14),
                               rtol=1e-9, equal_nan=True)
    _, mid, lower = talib.BBANDS(x, 20, 2.0, 2.0)
    std = kcpu.rolling_std_nb(row, 20)[0]
    np.testing.assert_allclose(mid - 2 * std, lower, rtol=1e-9, equal_nan=True)


def test_indicators_skip_missing_bars():
    x = np.array([[1.0, 2.0, np.nan, 4.0, np.nan, 6.0]])
    assert np.allclose(kcpu.rolling_mean_nb(x, 2)[0], [np.nan, 1.5, np.nan, 3.0, np.nan, 5.0],
                       equal_nan=True)
    assert np.allclose(kcpu.momentum_nb(x, 2)[0], [np.nan, np.nan, np.nan, 3.0, np.nan, 2.0],
                       equal_nan=True)


def test_moving_average_is_exact_to_a_few_ulp_over_long_series():
    # long, large-valued series with gaps: a plain running sum would drift by many ulp
    rng = np.random.default_rng(7)
    x = 2000.0 * np.exp(np.cumsum(rng.normal(0, 0.02, 6000)))
    x[rng.random(6000) < 0.05] = np.nan
    valid = x[~np.isnan(x)]
    for w in (2, 5, 250):
        got = kcpu.rolling_mean_nb(x[None, :], w)[0]
        assert np.isnan(got[np.isnan(x)]).all() and np.isnan(got[~np.isnan(x)][:w - 1]).all()
        sums = np.array([math.fsum(valid[k - w + 1:k + 1]) for k in range(w - 1, len(valid))])
        rel = np.abs(got[~np.isnan(x)][w - 1:] - sums / w) / (sums / w)
        assert rel.max() < 4 * np.finfo(float).eps, (w, rel.max())


def test_indicator_stack_equals_series_one_by_one():
    panel = synthetic_market(7, 150, seed=2)
    px = np.ascontiguousarray(signal_close(panel).T)
    keys = [("sma", 3), ("ema", 4), ("close", 0), ("sma", 20), ("std", 5), ("ema", 200),
            ("rsi", 6), ("mom", 2)]
    stack = compute_stack(keys, px, np.full((len(keys) + 1, *px.shape), -1.0))
    for k, key in enumerate(keys):
        np.testing.assert_array_equal(stack[k], compute_series(key, px), err_msg=str(key))
    assert (stack[-1] == -1.0).all()  # rows past the keys are left alone


def test_returns_metrics_match_empyrical():
    rng = np.random.default_rng(1)
    port = rng.normal(0.0005, 0.01, (5, 400))
    port[2] = np.abs(port[2])  # no drawdown: calmar NaN, sortino inf like empyrical
    got = kcpu.returns_metrics_nb(port, 242.0)
    for c in range(5):
        exp = _empyrical(port[c], 242)
        for i, name in enumerate(kcpu.METRIC_NAMES):
            assert got[c, i] == pytest.approx(exp[name], rel=1e-9, nan_ok=True), name


def test_hand_computed_single_trade():
    """One symbol, US costs zeroed except slippage: buy at close 1, sell at close 3."""
    dates = pd.bdate_range("2024-01-01", periods=5)
    close = np.array([[10.0], [10.0], [11.0], [12.0], [12.0]])
    panel = Panel.from_arrays({"close": close}, dates, ["X"])
    market = load_market("us")
    market.slippage_bps = 10.0
    # fast=1 (the close) above slow=2 from day 2 on; day 3 also up; falls below never -> hold
    r = combination_returns(panel, "ma_cross", {"fast": 1, "slow": 2}, market=market)
    qty = np.floor(1e6 / (11.0 * 1.001))
    cash = 1e6 - qty * 11.0 * 1.001
    eq2 = cash + qty * 11.0
    eq3 = cash + qty * 12.0
    np.testing.assert_allclose(r.to_numpy(), [0, 0, eq2 / 1e6 - 1, eq3 / eq2 - 1, 0],
                               atol=1e-15)


def test_parse_grid_and_parameter_grid():
    assert parse_grid("fast=5:50:5")["fast"] == list(range(5, 55, 5))
    assert parse_grid("slow=60:250:100")["slow"] == [60, 160]
    assert parse_grid("ma=sma,ema k=0.5:1.0:0.25") == {"ma": ["sma", "ema"],
                                                        "k": [0.5, 0.75, 1.0]}
    with pytest.raises(BacktestError, match="start:stop:step"):
        parse_grid("fast=1:2")
    with pytest.raises(BacktestError, match="name=values"):
        parse_grid("fast")
    g = ParameterGrid({"fast": [5, 10, 20], "slow": [10]}, kind="zip")
    assert g.combinations() == [{"fast": 5, "slow": 10}, {"fast": 10, "slow": 10},
                                {"fast": 20, "slow": 10}]
    assert len(g.combinations(get_strategy("ma_cross"))) == 1
    r1 = ParameterGrid("fast=1:30:1 slow=31:60:1", kind="random", n=20, seed=3).combinations()
    r2 = ParameterGrid("fast=1:30:1 slow=31:60:1", kind="random", n=20, seed=3).combinations()
    assert r1 == r2 and len({tuple(c.values()) for c in r1}) == 20
    with pytest.raises(BacktestError, match="unknown parameter"):
        ParameterGrid({"fats": [1]}).combinations(get_strategy("ma_cross"))
    with pytest.raises(BacktestError, match="one length"):
        ParameterGrid({"a": [1, 2], "b": [1, 2, 3]}, kind="zip")


def test_sweep_result_outputs(tmp_path):
    panel = synthetic_market(6, 150, seed=2)
    res = run_sweep(panel, "ma_cross", "fast=2:6:2 slow=10:30:10 ma=sma,ema", backend="cpu")
    assert isinstance(res, SweepResult)
    best = res.best("sharpe_ratio", n=3)
    assert list(best["sharpe_ratio"]) == sorted(res.table["sharpe_ratio"], reverse=True)[:3]
    assert res.best_params()["fast"] in (2, 4, 6)
    pivot = res.heatmap("fast", "slow", "sharpe_ratio", path=tmp_path / "h.png")
    assert pivot.shape == (3, 3)
    assert pivot.loc[10, 2] == res.table.query("fast == 2 and slow == 10")["sharpe_ratio"].max()
    assert (tmp_path / "h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = res.to_parquet(tmp_path / "t.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(out), res.table)
    assert "best by sharpe_ratio" in res.summary()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    with pytest.raises(BacktestError, match="unknown metric"):
        res.best("sharp")


def test_sweep_errors():
    panel = synthetic_market(3, 50, seed=2)
    with pytest.raises(BacktestError, match="no valid combination"):
        run_sweep(panel, "ma_cross", "fast=50 slow=10", backend="cpu")
    with pytest.raises(BacktestError, match="lag"):
        run_sweep(panel, "ma_cross", "fast=5 slow=10", backend="cpu", lag=-1)


@pytest.mark.parametrize("strategy, params, market, lag", [
    ("ma_cross", {"fast": 2, "slow": 5, "ma": "sma"}, "cn", 0),
    ("rsi", {"window": 3, "lower": 40.0, "upper": 55.0}, "cn", 1),
    ("bollinger", {"window": 5, "k": 1.0, "mode": "breakout"}, "us", 2),
])
def test_sweep_reproduces_engine_run_signals(strategy, params, market, lag):
    from qilin.backtest import metrics as M
    from qilin.backtest.engine import run_signals

    panel = synthetic_market(12, 300, seed=11)
    entries, exits = get_strategy(strategy).signals(panel, **params)
    res = run_signals(panel, entries=entries, exits=exits, market=market, lag=lag)
    got = combination_returns(panel, strategy, params, market=market, lag=lag)
    total = res.equity.sum(axis=1)  # the combined account, as `backtest run` reports it
    combined = np.r_[0.0, total[1:] / total[:-1] - 1.0]
    np.testing.assert_allclose(got.to_numpy(), combined, rtol=0, atol=1e-12)
    row = run_sweep(panel, strategy, ParameterGrid({k: [v] for k, v in params.items()}),
                    market=market, backend="cpu", lag=lag).table.iloc[0]
    assert row["n_trades"] == (res.trades["status"] == "filled").sum()
    assert row["turnover"] == pytest.approx(res.turnover.mean(), rel=1e-10)
    assert row["exposure"] == pytest.approx(res.exposure.mean(), rel=1e-10)
    expected = M.summary(combined, periods_per_year=res.periods_per_year)
    for name in kcpu.METRIC_NAMES:
        assert row[name] == pytest.approx(expected.loc[0, name], rel=1e-9, nan_ok=True), name
