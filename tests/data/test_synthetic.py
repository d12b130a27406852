"""The synthetic market: determinism, market microstructure invariants, Panel/long agreement."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

import qilin
from qilin.data.boards import board_of, is_st_name, limit_pct_matrix, limit_prices
from qilin.data.panel import Panel
from qilin.data.synthetic import BAR_COLUMNS, synthetic_bars, synthetic_market, trading_calendar
from qilin.errors import DataError


@pytest.fixture(scope="module")
def panel() -> Panel:
    return synthetic_market(n_symbols=300, n_days=600, seed=11)


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return synthetic_bars(n_symbols=300, n_days=600, seed=11)


def test_shape_and_top_level_forwarder() -> None:
    p = qilin.synthetic_market(n_symbols=20, n_days=60, seed=7)
    assert p.shape == (60, 20)
    assert isinstance(p, Panel)


def test_same_seed_is_bit_identical_and_other_seed_differs() -> None:
    a = synthetic_market(n_symbols=40, n_days=80, seed=5)
    b = synthetic_market(n_symbols=40, n_days=80, seed=5)
    c = synthetic_market(n_symbols=40, n_days=80, seed=6)
    for name in a.fields:
        np.testing.assert_array_equal(a[name], b[name])
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    pd.testing.assert_frame_equal(synthetic_bars(40, 80, seed=5), synthetic_bars(40, 80, seed=5))


def test_bars_columns_order_and_sorting(bars: pd.DataFrame) -> None:
    assert tuple(bars.columns) == BAR_COLUMNS
    key = bars[["symbol", "date"]]
    assert key.equals(key.sort_values(["symbol", "date"]).reset_index(drop=True))
    assert not bars.duplicated(["date", "symbol"]).any()
    assert bars[["open", "high", "low", "close", "volume", "amount"]].notna().all().all()


def test_long_and_panel_agree(panel: Panel, bars: pd.DataFrame) -> None:
    from_long = Panel.from_long(bars)
    assert from_long.shape == panel.shape
    assert list(from_long.symbols) == list(panel.symbols)
    for name in ("open", "high", "low", "close", "volume", "amount", "vwap", "preclose",
                 "adj_factor", "float_mcap"):
        np.testing.assert_array_equal(from_long[name], panel[name], err_msg=name)
    np.testing.assert_array_equal(from_long.valid, panel.valid)
    np.testing.assert_array_equal(from_long.st, panel.st)
    np.testing.assert_array_equal(from_long.suspended, panel.suspended)
    pd.testing.assert_frame_equal(from_long.info[["name", "industry", "board"]],
                                  panel.info[["name", "industry", "board"]],
                                  check_names=False)


def test_ohlc_volume_amount_consistent(bars: pd.DataFrame) -> None:
    b = bars
    assert (b["low"] <= b[["open", "close"]].min(axis=1)).all()
    assert (b["high"] >= b[["open", "close"]].max(axis=1)).all()
    assert (b["low"] > 0).all()
    cents = b[["open", "high", "low", "close", "preclose"]].to_numpy() * 100
    np.testing.assert_allclose(cents, np.round(cents), atol=1e-6)
    assert (b["volume"] >= 100).all() and (b["volume"] % 100 == 0).all()
    vwap = b["amount"] / b["volume"]
    assert (vwap >= b["low"] - 1e-6).all() and (vwap <= b["high"] + 1e-6).all()


def test_price_limits_hold_and_bind(panel: Panel) -> None:
    pct = limit_pct_matrix(panel.symbols, panel.dates, is_st=panel.st)
    up, down = limit_prices(panel["preclose"], pct)
    v = panel.valid
    close, high, low = panel["close"][v], panel["high"][v], panel["low"][v]
    assert (high <= up[v] + 1e-9).all() and (low >= down[v] - 1e-9).all()
    assert (close == up[v]).sum() > 50, "some days must close exactly at limit up"
    assert (close == down[v]).sum() > 20, "some days must close exactly at limit down"
    # ST days on the main board are held to 5%
    main = np.array([board_of(s) == "main" for s in panel.symbols])
    st_main = panel.st & main[None, :] & v
    assert st_main.sum() > 0
    move = np.abs(panel["close"][st_main] / panel["preclose"][st_main] - 1)
    assert move.max() <= 0.05 + 0.01 / panel["preclose"][st_main].min()


def test_corporate_actions_and_adjustment(panel: Panel) -> None:
    close, pre, adj = panel["close"], panel["preclose"], panel["adj_factor"]
    v = panel.valid
    prev_close = pd.DataFrame(close).ffill().shift(1).to_numpy()
    prev_adj = pd.DataFrame(adj).ffill().shift(1).to_numpy()
    both = v & np.isfinite(prev_close)
    ex = both & (np.abs(pre - prev_close) > 1e-9)
    assert ex.sum() > 50
    # the factor changes exactly on ex-dates, by prev_close / preclose
    np.testing.assert_allclose(adj[ex] / prev_adj[ex], prev_close[ex] / pre[ex], rtol=1e-12)
    np.testing.assert_array_equal(adj[both & ~ex], prev_adj[both & ~ex])
    # back-adjusted close moves by close / preclose, so ex-dates leave no artificial gap
    adj_close = panel.adjusted()["close"]
    prev_adj_close = pd.DataFrame(adj_close).ffill().shift(1).to_numpy()
    np.testing.assert_allclose(adj_close[both] / prev_adj_close[both],
                               close[both] / pre[both], rtol=1e-10)
    first = np.argmax(v, axis=0)
    np.testing.assert_array_equal(adj[first, np.arange(panel.shape[1])], 1.0)


def test_listings_delistings_suspensions(panel: Panel, bars: pd.DataFrame) -> None:
    v = panel.valid
    assert (~v[0]).sum() > 0, "some symbols list late"
    assert (~v[-1]).sum() > 0, "some symbols delist early or are suspended at the end"
    assert panel.suspended.sum() > 0
    n_rows = bars.groupby("symbol").size().reindex(panel.symbols)
    np.testing.assert_array_equal(n_rows.to_numpy(), v.sum(axis=0))
    # every delisted symbol (no bar in the last 5 rows, never again) was *ST before going
    last = v.shape[0] - 1 - np.argmax(v[::-1], axis=0)
    gone = last < v.shape[0] - 30
    assert gone.any()
    for j in np.flatnonzero(gone):
        assert panel.st[last[j], j]


def test_codes_boards_names_and_st(panel: Panel, bars: pd.DataFrame) -> None:
    syms = pd.Series(panel.symbols)
    assert syms.str.fullmatch(r"\d{6}\.(SH|SZ|BJ)").all()
    boards = set(panel.info["board"])
    assert boards == {"main", "chinext", "star", "bj"}
    assert syms[syms.str.endswith(".BJ")].size >= 3
    st_rows = bars["name"].map(is_st_name)
    assert st_rows.any()
    np.testing.assert_array_equal(st_rows.to_numpy(),
                                  bars["name"].str.match(r"^\*?ST ").to_numpy())
    assert bars["industry"].nunique() > 5


def test_calendar_is_weekdays_without_holidays() -> None:
    cal = trading_calendar("2016-01-01", 300)
    assert len(cal) == 300 and cal.is_monotonic_increasing and cal.is_unique
    assert (cal.day_of_week < 5).all()
    assert pd.Timestamp("2016-01-01") not in cal
    assert not ((cal.month == 10) & (cal.day <= 7)).any()
    assert not ((cal.month == 5) & (cal.day <= 3)).any()
    assert cal[0] == pd.Timestamp("2016-01-04")


def test_returns_have_fat_tails_and_common_factor(panel: Panel) -> None:
    r = np.log(panel.adjusted()["close"])
    d = np.diff(r, axis=0)
    flat = d[np.isfinite(d)]
    assert 0.01 < flat.std() < 0.05
    kurt = ((flat - flat.mean()) ** 4).mean() / flat.var() ** 2
    assert kurt > 4.0, kurt
    df = pd.DataFrame(d)
    corr = df.iloc[:, :40].corr().to_numpy()
    off = corr[~np.eye(40, dtype=bool)]
    assert np.nanmean(off) > 0.1, "the market factor makes returns co-move"


def test_float32_and_bad_arguments() -> None:
    p = synthetic_market(n_symbols=10, n_days=20, seed=1, dtype=np.float32)
    assert p["close"].dtype == np.float32
    with pytest.raises(DataError, match="dtype"):
        synthetic_market(n_symbols=10, n_days=20, dtype=np.int64)
    with pytest.raises(DataError, match="n_symbols"):
        synthetic_market(n_symbols=0, n_days=20)


def test_default_size_is_fast() -> None:
    synthetic_market(n_symbols=50, n_days=50)  # warm up imports
    t0 = time.process_time()  # CPU time: robust to other jobs sharing the machine
    p = synthetic_market()
    elapsed = time.process_time() - t0
    assert p.shape == (1500, 500)
    assert elapsed < 4.0, f"500 x 1500 took {elapsed:.2f}s of CPU"


def test_gpu_backend_matches_cpu(gpu: None) -> None:
    cpu = synthetic_market(n_symbols=30, n_days=40, seed=2)
    dev = synthetic_market(n_symbols=30, n_days=40, seed=2, backend="gpu")
    assert dev.backend.name == "gpu"
    np.testing.assert_array_equal(dev.backend.to_host(dev["close"]), cpu["close"])
