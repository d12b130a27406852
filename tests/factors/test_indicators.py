"""Indicators against the ta-lib package on real data, NaN gaps and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

talib = pytest.importorskip("talib")

from qilin.errors import DataError, ParameterError  # noqa: E402
from qilin.factors import indicators as ind  # noqa: E402

FIELDS = ["high", "low", "close", "volume"]

# name -> (ours(h, l, c, v), talib(h, l, c, v) on one 1-D series)
PAIRS = {
    "sma": (lambda h, l, c, v: ind.sma(c), lambda h, l, c, v: talib.SMA(c)),
    "ema": (lambda h, l, c, v: ind.ema(c), lambda h, l, c, v: talib.EMA(c)),
    "wma": (lambda h, l, c, v: ind.wma(c), lambda h, l, c, v: talib.WMA(c)),
    "dema": (lambda h, l, c, v: ind.dema(c), lambda h, l, c, v: talib.DEMA(c)),
    "tema": (lambda h, l, c, v: ind.tema(c), lambda h, l, c, v: talib.TEMA(c)),
    "macd": (lambda h, l, c, v: ind.macd(c), lambda h, l, c, v: talib.MACD(c)[0]),
    "macd_signal": (lambda h, l, c, v: ind.macd_signal(c), lambda h, l, c, v: talib.MACD(c)[1]),
    "macd_hist": (lambda h, l, c, v: ind.macd_hist(c), lambda h, l, c, v: talib.MACD(c)[2]),
    "rsi": (lambda h, l, c, v: ind.rsi(c), lambda h, l, c, v: talib.RSI(c)),
    "bbands_upper": (lambda h, l, c, v: ind.bbands_upper(c),
                     lambda h, l, c, v: talib.BBANDS(c)[0]),
    "bbands_middle": (lambda h, l, c, v: ind.bbands_middle(c),
                      lambda h, l, c, v: talib.BBANDS(c)[1]),
    "bbands_lower": (lambda h, l, c, v: ind.bbands_lower(c),
                     lambda h, l, c, v: talib.BBANDS(c)[2]),
    "atr": (lambda h, l, c, v: ind.atr(h, l, c), lambda h, l, c, v: talib.ATR(h, l, c)),
    "natr": (lambda h, l, c, v: ind.natr(h, l, c), lambda h, l, c, v: talib.NATR(h, l, c)),
    "cci": (lambda h, l, c, v: ind.cci(h, l, c), lambda h, l, c, v: talib.CCI(h, l, c)),
    "willr": (lambda h, l, c, v: ind.willr(h, l, c), lambda h, l, c, v: talib.WILLR(h, l, c)),
    "mfi": (lambda h, l, c, v: ind.mfi(h, l, c, v), lambda h, l, c, v: talib.MFI(h, l, c, v)),
    "obv": (lambda h, l, c, v: ind.obv(c, v), lambda h, l, c, v: talib.OBV(c, v)),
    "roc": (lambda h, l, c, v: ind.roc(c), lambda h, l, c, v: talib.ROC(c)),
    "stoch_k": (lambda h, l, c, v: ind.stoch_k(h, l, c),
                lambda h, l, c, v: talib.STOCH(h, l, c)[0]),
    "stoch_d": (lambda h, l, c, v: ind.stoch_d(h, l, c),
                lambda h, l, c, v: talib.STOCH(h, l, c)[1]),
    "adx": (lambda h, l, c, v: ind.adx(h, l, c), lambda h, l, c, v: talib.ADX(h, l, c)),
}


USES = {  # which of (high, low, close, volume) an indicator reads: its NaN mask
    **{name: (2,) for name in PAIRS},
    **{name: (0, 1, 2) for name in ("atr", "natr", "cci", "willr", "stoch_k", "stoch_d", "adx")},
    "mfi": (0, 1, 2, 3),
    "obv": (2, 3),
}


def _wide(df: pd.DataFrame) -> tuple[list[str], list[np.ndarray]]:
    wide = df.pivot(index="date", columns="symbol")
    symbols = list(wide["close"].columns)
    return symbols, [wide[f].to_numpy(dtype=float, copy=True) for f in FIELDS]


@pytest.fixture(scope="module")
def sp500(sp500_path) -> list[np.ndarray]:
    df = pd.read_parquet(sp500_path, columns=["date", "symbol", *FIELDS])
    n_dates = df["date"].nunique()
    complete = df.dropna().groupby("symbol").size()
    symbols = sorted(complete[complete == n_dates].index)[:: 20][:20]
    assert len(symbols) == 20
    return _wide(df[df["symbol"].isin(symbols)])[1]


@pytest.fixture(scope="module")
def ashare(ashare_path) -> tuple[list[str], list[np.ndarray]]:
    symbols = ["000001.SZ", "000002.SZ", "600519.SH", "000035.SZ"]
    df = pd.read_parquet(ashare_path, columns=["date", "symbol", *FIELDS, "adj_factor"],
                         filters=[("symbol", "in", symbols)])
    for f in ("high", "low", "close"):
        df[f] = df[f] * df["adj_factor"]  # back-adjusted prices
    return _wide(df)


def _compare_per_column(name: str, arrays: list[np.ndarray]) -> None:
    ours, reference = PAIRS[name]
    got = ours(*arrays)
    assert got.shape == arrays[2].shape and got.dtype == np.float64
    for j in range(got.shape[1]):
        ok = np.all([np.isfinite(arrays[k][:, j]) for k in USES[name]], axis=0)
        want = reference(*(np.ascontiguousarray(a[ok, j]) for a in arrays))
        col = got[ok, j]
        assert np.isnan(got[~ok, j]).all()
        np.testing.assert_array_equal(np.isnan(col), np.isnan(want), err_msg=f"{name} col {j}")
        np.testing.assert_allclose(col, want, rtol=1e-6, atol=1e-9, equal_nan=True,
                                   err_msg=f"{name} column {j}")


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_matches_talib_on_sp500(name: str, sp500: list[np.ndarray]) -> None:
    _compare_per_column(name, sp500)


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_matches_talib_on_back_adjusted_ashares_with_suspensions(name: str, ashare) -> None:
    _symbols, arrays = ashare
    close = arrays[2]
    assert np.isnan(close).any(axis=0).sum() >= 2  # suspended days are NaN rows in the panel
    _compare_per_column(name, arrays)


def test_synthetic_gaps_in_single_inputs_follow_the_policy() -> None:
    rng = np.random.default_rng(5)
    close = 50 + rng.normal(size=(400, 5)).cumsum(axis=0)
    high = close + rng.random((400, 5))
    low = close - rng.random((400, 5))
    volume = rng.integers(100, 1000, size=(400, 5)).astype(float)
    high[rng.random((400, 5)) < 0.05] = np.nan
    close[rng.random((400, 5)) < 0.05] = np.nan
    volume[3, 1] = np.inf
    arrays = [high, low, close, volume]
    for name in ("atr", "adx", "mfi", "stoch_d", "cci", "obv"):
        _compare_per_column(name, arrays)


def test_vwap_is_rolling_volume_weighted_typical_price() -> None:
    rng = np.random.default_rng(9)
    h, l, c = (10 + rng.random((60, 3)) for _ in range(3))
    v = rng.integers(0, 50, size=(60, 3)).astype(float)
    v[10:15, 0] = 0.0
    c[20, 2] = np.nan
    got = ind.vwap(h, l, c, v, 5)
    for j in range(3):
        ok = np.isfinite(c[:, j])
        tp = pd.Series((h[ok, j] + l[ok, j] + c[ok, j]) / 3)
        vol = pd.Series(v[ok, j])
        want = ((tp * vol).rolling(5).sum() / vol.rolling(5).sum()).to_numpy(copy=True)
        want[vol.rolling(5).sum().to_numpy() == 0] = np.nan
        np.testing.assert_allclose(got[ok, j], want, rtol=1e-12, equal_nan=True)
    assert np.isnan(got[14, 0])  # window of zero volume


def test_hand_cases() -> None:
    c = np.array([10.0, 11.0, 11.0, 9.0])
    v = np.array([100.0, 10.0, 20.0, 5.0])
    assert ind.obv(c, v).tolist() == [100.0, 110.0, 110.0, 105.0]
    assert ind.roc(c, 1)[1:].tolist() == pytest.approx([10.0, 0.0, -100 * 2 / 11])
    flat = np.full(6, 3.0)
    assert ind.willr(flat, flat, flat, 3)[2:].tolist() == [0.0] * 4  # TA-Lib: 0 when flat
    assert ind.cci(flat, flat, flat, 3)[2:].tolist() == [0.0] * 4
    assert ind.rsi(flat, 3)[3:].tolist() == [0.0] * 3
    # TA-Lib's MACD alignment: the first value sits at slow + signal - 2
    out = ind.macd(np.arange(40.0), 3, 5, 4)
    assert np.isnan(out[:7]).all() and np.isfinite(out[7:]).all()
    # swapped fast/slow are reordered like TA-Lib
    np.testing.assert_array_equal(ind.macd(np.arange(40.0) ** 1.5, 5, 3, 4),
                                  ind.macd(np.arange(40.0) ** 1.5, 3, 5, 4))


def test_parameter_and_shape_errors() -> None:
    x = np.ones((30, 2))
    with pytest.raises(ParameterError, match="timeperiod"):
        ind.rsi(x, 0)
    with pytest.raises(ParameterError, match="slowperiod"):
        ind.macd(x, 12, 1)
    with pytest.raises(ParameterError, match="fastk_period"):
        ind.stoch_k(x, x, x, fastk_period=0)
    with pytest.raises(ParameterError, match="nbdevup"):
        ind.bbands_upper(x, nbdevup="wide")
    with pytest.raises(DataError, match=r"low has shape \(29, 2\)"):
        ind.atr(x, np.ones((29, 2)), x)


def test_one_dimensional_series() -> None:
    c = np.linspace(1, 2, 50)
    out = ind.ema(c, 10)
    assert out.shape == (50,)
    np.testing.assert_allclose(out, talib.EMA(c, 10), equal_nan=True)
