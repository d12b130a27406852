"""The embedded synthetic A-share market: deterministic, vectorised, realistic enough to test on.

The model, per trading day ``t`` and symbol ``i`` (log returns):

``r[t, i] = mu[i] + beta[i] * m[t] + gamma[i] * s[t, k(i)] + e[t, i] + jump[t, i]``

where the market ``m``, the sector (industry) factors ``s`` and the idiosyncratic terms ``e``
each have a stochastic volatility (an AR(1) in log volatility), and jumps are rare normal
shocks. Raw (unadjusted) prices move from the previous close (``preclose``) by that return,
rounded to the 0.01 CNY tick and clipped to the board's daily price limit
(:func:`qilin.data.boards.limit_pct_matrix` / :func:`~qilin.data.boards.limit_prices`), so some
days close exactly at limit up or down. On top of that:

* a business-day calendar (weekdays minus New Year, an approximate Spring Festival week,
  Labour Day and National Day holidays);
* A-share codes on every board: ``600xxx.SH``/``000xxx.SZ`` main board, ``300xxx.SZ``
  ChiNext, ``688xxx.SH`` STAR and a few ``8xxxxx.BJ``;
* listings (symbols starting late) and delistings (ending early, after a spell as ``*ST``);
* occasional special treatment (``name`` starts with ``"ST"``/``"*ST"``; 5% limit);
* suspensions (no row / ``valid`` False);
* corporate actions (cash dividends and bonus shares): on an ex-date ``preclose`` differs
  from the previous close and the cumulative back-adjustment factor ``adj_factor`` grows, so
  ``close * adj_factor`` is the back-adjusted price;
* volumes in whole lots from a turnover model (higher on big moves, low when locked at a
  limit), ``vwap`` inside ``[low, high]`` and ``amount = vwap * volume``.

Everything is drawn from one ``numpy.random.default_rng(seed)``: the same arguments give
bit-identical output.

Examples
--------
>>> p = synthetic_market(n_symbols=20, n_days=60, seed=7)
>>> p.shape
(60, 20)
>>> bars = synthetic_bars(n_symbols=5, n_days=10, seed=1)
>>> list(bars.columns[:7])
['date', 'symbol', 'open', 'high', 'low', 'close', 'volume']
>>> bool((bars["low"] <= bars["close"]).all() and (bars["close"] <= bars["high"]).all())
True
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from qilin.backend import BackendName, get_backend
from qilin.data.boards import board_of, limit_pct_matrix, limit_prices
from qilin.data.panel import Panel
from qilin.errors import DataError

#: Columns of :func:`synthetic_bars`, in order.
BAR_COLUMNS = (
    "date", "symbol", "open", "high", "low", "close", "volume", "amount", "preclose",
    "adj_factor", "name", "industry", "float_mcap",
)
INDUSTRIES = (
    "Banks", "Non-bank Finance", "Real Estate", "Pharmaceuticals", "Electronics", "Computers",
    "Food & Beverage", "Machinery", "Chemicals", "Automobiles", "Utilities", "Media",
    "Nonferrous Metals", "Power Equipment", "Household Appliances", "Transportation",
)
# Syllables for company names; none ends in "s", so no name reads "ST..." by accident.
_SYLLABLES = (
    "Hua", "Xin", "Zhong", "Guo", "Tai", "Kang", "Long", "Feng", "Da", "Jin", "Hai", "Tian",
    "Yu", "Hong", "Rui", "Bao", "Heng", "Ming", "Dong", "Nan", "Bei", "Xing", "Fu", "An",
)
_SUFFIXES = ("Holdings", "Technology", "Industry", "Group", "Pharma", "Energy", "Electric")
# Board mix (share of symbols): SH main, SZ main, ChiNext, STAR, BJ.
_BOARD_MIX = (("SH", 0.42), ("SZ", 0.30), ("CY", 0.16), ("KC", 0.08), ("BJ", 0.04))
_CODE_RANGES = {
    "SH": (600000, 606000, "SH"), "SZ": (1, 3000, "SZ"), "CY": (300001, 301600, "SZ"),
    "KC": (688001, 689000, "SH"), "BJ": (830000, 840000, "BJ"),
}
_HOLIDAYS = {(1, 1), (5, 1), (5, 2), (5, 3), *((2, d) for d in range(8, 13)),
             *((10, d) for d in range(1, 8))}
_TICK = 0.01


def trading_calendar(start: str | pd.Timestamp, n_days: int) -> pd.DatetimeIndex:
    """``n_days`` weekdays from ``start`` (inclusive), skipping the fixed synthetic holidays.

    Examples
    --------
    >>> [d.strftime("%m-%d") for d in trading_calendar("2020-12-30", 3)]
    ['12-30', '12-31', '01-04']
    """
    if n_days < 0:
        raise DataError(f"n_days must be >= 0, got {n_days}")
    out: list[pd.Timestamp] = []
    begin = pd.Timestamp(start)
    while len(out) < n_days:
        days = pd.bdate_range(begin, periods=int((n_days - len(out)) * 1.1) + 20)
        keep = [d for d in days if (d.month, d.day) not in _HOLIDAYS]
        out.extend(keep[: n_days - len(out)])
        begin = days[-1] + pd.Timedelta(days=1)
    return pd.DatetimeIndex(out, name="date")


@dataclass
class _Market:
    """Raw generated arrays (dates x symbols, float64, NaN where no bar)."""

    dates: pd.DatetimeIndex
    symbols: np.ndarray
    fields: dict[str, np.ndarray]
    valid: np.ndarray
    st_kind: np.ndarray  # int8: 0 normal, 1 "ST", 2 "*ST"
    base_names: np.ndarray
    industries: np.ndarray
    alpha: np.ndarray | None = None


@dataclass(frozen=True)
class PlantedAlpha:
    """A known alpha planted in the synthetic returns.

    A signal ``s[t, i]`` (standard normal, an AR(1) in time with persistence
    ``rho = 0.5 ** (1 / half_life)``) is published at the close of ``t`` as the field
    ``alpha``, and the next day's log return gets ``c * sd[t+1] * s[t, i]`` where ``sd[t+1]`` is
    the cross-sectional (robust) dispersion of the other return terms that day and
    ``c = ic / sqrt(1 - ic**2)``. So the Pearson IC of ``alpha`` on next-day returns is ``ic``
    (before tick rounding, price limits and jumps, which lower it slightly; Rank IC is about
    ``0.95 ic`` under normality), and the IC on the return of day ``t + k`` decays as
    ``ic * rho ** (k - 1)``. The signal has its own random stream, so the rest of the market
    is drawn exactly as without it.

    Examples
    --------
    >>> round(PlantedAlpha(ic=0.05, half_life=5).rho, 4)
    0.8706
    """

    ic: float = 0.05
    half_life: float = 5.0

    def __post_init__(self) -> None:
        if not -0.9 <= self.ic <= 0.9:
            raise DataError(f"planted alpha ic must lie in [-0.9, 0.9], got {self.ic}")
        if not self.half_life > 0:
            raise DataError(f"planted alpha half_life must be > 0, got {self.half_life}")

    @property
    def rho(self) -> float:
        """Day-to-day persistence of the signal."""
        return float(0.5 ** (1.0 / self.half_life))

    def expected_ic(self, horizon: int = 1) -> float:
        """Planted IC on the return of day ``t + horizon`` (one day), ``ic * rho**(h-1)``."""
        return float(self.ic * self.rho ** (horizon - 1))


def _as_planted(alpha: PlantedAlpha | float | None) -> PlantedAlpha | None:
    if alpha is None or isinstance(alpha, PlantedAlpha):
        return alpha
    if isinstance(alpha, bool) or not isinstance(alpha, int | float):
        raise DataError(f"alpha must be a PlantedAlpha, an IC (float) or None, got {alpha!r}")
    return PlantedAlpha(ic=float(alpha)) if alpha else None


def _plant(ret: np.ndarray, listed: np.ndarray, planted: PlantedAlpha, seed: int) -> np.ndarray:
    """Add the planted component to ``ret`` in place; return the signal (dates x symbols)."""
    rng = np.random.default_rng([seed, 0x51A1])  # its own stream: the market stays the same
    T, N = ret.shape
    eps = rng.standard_normal((T, N))
    rho = planted.rho
    sig = np.empty((T, N))
    sig[0] = eps[0]
    scale = np.sqrt(1.0 - rho * rho)
    for t in range(1, T):
        sig[t] = rho * sig[t - 1] + scale * eps[t]
    c = planted.ic / np.sqrt(1.0 - planted.ic ** 2)
    base = np.where(listed, ret, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(base, axis=1, keepdims=True)
        sd = 1.4826 * np.nanmedian(np.abs(base - med), axis=1)
    sd = np.where(np.isfinite(sd), sd, 0.0)
    ret[1:] += c * sd[1:, None] * sig[:-1]
    return sig


def _symbols(rng: np.random.Generator, n: int) -> np.ndarray:
    counts = [int(np.floor(n * share)) for _, share in _BOARD_MIX]
    counts[0] += n - sum(counts)
    out: list[str] = []
    for (board, _), count in zip(_BOARD_MIX, counts, strict=True):
        lo, hi, exchange = _CODE_RANGES[board]
        codes = rng.choice(np.arange(lo, hi), size=count, replace=False)
        out.extend(f"{c:06d}.{exchange}" for c in codes)
    return np.array(sorted(out), dtype=object)


def _names(rng: np.random.Generator, n: int) -> np.ndarray:
    a = rng.integers(0, len(_SYLLABLES), n)
    b = rng.integers(0, len(_SYLLABLES), n)
    s = rng.integers(0, len(_SUFFIXES), n)
    return np.array(
        [f"{_SYLLABLES[i]}{_SYLLABLES[j].lower()} {_SUFFIXES[k]}" for i, j, k in zip(a, b, s,
                                                                                     strict=True)],
        dtype=object,
    )


def _ar1_log_vol(rng: np.random.Generator, shape: tuple[int, ...], level: np.ndarray | float,
                 phi: float, eta: float) -> np.ndarray:
    """Stochastic volatility paths: ``exp`` of a stationary AR(1) around ``log(level)``."""
    from scipy.signal import lfilter

    shocks = rng.standard_normal(shape) * eta
    shocks[0] /= np.sqrt(1 - phi * phi)  # start from the stationary distribution
    x = lfilter([1.0], [1.0, -phi], shocks, axis=0)
    return np.asarray(level) * np.exp(x - 0.5 * eta * eta / (1 - phi * phi))


def _generate(n_symbols: int, n_days: int, seed: int, start: str | pd.Timestamp,
              progress: Callable[[int], None] | None = None,
              planted: PlantedAlpha | None = None) -> _Market:
    if n_symbols < 1 or n_days < 1:
        raise DataError(f"need n_symbols >= 1 and n_days >= 1, got {n_symbols}, {n_days}")
    rng = np.random.default_rng(seed)
    T, N = n_days, n_symbols
    dates = trading_calendar(start, T)
    symbols = _symbols(rng, N)
    names = _names(rng, N)
    n_ind = min(len(INDUSTRIES), max(1, N // 8))
    industry_of = rng.integers(0, n_ind, N)
    industries = np.array(INDUSTRIES, dtype=object)[industry_of]

    # ---- listing windows: [first, last] row indexes of each symbol's life
    first = np.zeros(N, dtype=np.int64)
    last = np.full(N, T - 1, dtype=np.int64)
    late = rng.random(N) < 0.12
    first[late] = rng.integers(1, max(2, int(T * 0.8)), late.sum())
    early = (rng.random(N) < 0.05) & (first + 40 < T - 1)
    last[early] = first[early] + 40 + (rng.random(early.sum()) * (T - 2 - first[early] - 40))
    rows = np.arange(T)[:, None]
    listed = (rows >= first) & (rows <= last)

    # ---- special treatment: a few spells, and every delisting is preceded by *ST
    st_kind = np.zeros((T, N), dtype=np.int8)
    has_st = rng.random(N) < 0.05
    st_a = rng.integers(0, T, N)
    st_b = st_a + rng.integers(20, 250, N)
    st_kind[(rows >= st_a) & (rows < st_b) & has_st] = 1
    st_kind[(rows > last - 60) & early] = 2
    st_kind[~listed] = 0

    # ---- suspensions: spells starting with small probability, geometric lengths
    starts = (rng.random((T, N)) < 0.0008) & listed
    lengths = np.zeros((T, N), dtype=np.int64)
    lengths[starts] = rng.geometric(0.25, int(starts.sum()))
    suspended = np.zeros((T, N), dtype=bool)
    remaining = np.zeros(N, dtype=np.int64)
    for t in range(T):
        remaining = np.where(starts[t], np.maximum(remaining, lengths[t]), remaining)
        suspended[t] = remaining > 0
        remaining = np.maximum(remaining - 1, 0)
    suspended[first, np.arange(N)] = False  # the listing day always trades
    trades = listed & ~suspended

    # ---- returns: market + sector + idiosyncratic with stochastic volatility, and jumps
    mkt = _ar1_log_vol(rng, (T,), 0.012, 0.97, 0.15) * rng.standard_normal(T)
    sec = _ar1_log_vol(rng, (T, n_ind), 0.008, 0.96, 0.15) * rng.standard_normal((T, n_ind))
    idio_level = rng.uniform(0.010, 0.028, N)
    idio = _ar1_log_vol(rng, (T, N), idio_level, 0.95, 0.20) * rng.standard_normal((T, N))
    beta = rng.normal(1.0, 0.25, N)
    gamma = rng.normal(1.0, 0.30, N)
    mu = rng.normal(0.0002, 0.0003, N)
    ret = mu + beta * mkt[:, None] + gamma * sec[:, industry_of] + idio
    del idio
    jumps = rng.random((T, N)) < 0.002
    ret[jumps] += rng.normal(0.0, 0.07, int(jumps.sum()))
    signal = None if planted is None else _plant(ret, trades, planted, seed)
    gap_noise = rng.standard_normal((T, N)) * 0.004
    wick = np.abs(rng.standard_normal((2, T, N))) * 0.5 * idio_level
    vwap_u = rng.random((T, N))
    turnover = rng.lognormal(np.log(0.01), 0.6, N) * np.exp(rng.normal(0, 0.35, (T, N)))

    # ---- corporate actions: cash dividends and bonus shares on rare ex-dates
    actions = (rng.random((T, N)) < 1 / 480) & trades
    actions[first, np.arange(N)] = False
    n_actions = int(actions.sum())
    is_bonus = rng.random(n_actions) < 0.3
    ratio = np.ones((T, N))
    ratio[actions] = np.where(is_bonus, rng.choice([1.2, 1.3, 1.5, 2.0], n_actions), 1.0)
    div_yield = np.zeros((T, N))
    div_yield[actions] = np.where(is_bonus, 0.0, rng.uniform(0.005, 0.03, n_actions))

    price0 = np.round(np.exp(rng.normal(np.log(12.0), 0.7, N)), 2).clip(2.0, 300.0)
    float_shares = np.round(rng.lognormal(np.log(6e9), 0.9, N) / price0, -2)
    pct = limit_pct_matrix(pd.Index(symbols), dates, is_st=st_kind > 0)

    shape = (T, N)
    out = {k: np.empty(shape) for k in
           ("open", "high", "low", "close", "volume", "amount", "preclose", "adj_factor",
            "float_mcap")}
    last_close = price0.copy()
    adj = np.ones(N)
    shares = float_shares.copy()
    for t in range(T):
        if progress is not None and t % 50 == 49:
            progress(50)
        live = trades[t]
        if not live.any():
            continue
        pre = np.round((last_close * (1 - div_yield[t])) / ratio[t], 2).clip(_TICK)
        adj = np.where(live & (pre != last_close), adj * (last_close / pre), adj)
        shares = np.where(live, shares * ratio[t], shares)
        up, down = limit_prices(pre, pct[t])
        down = np.maximum(down, _TICK)
        close = np.clip(np.round(pre * np.exp(ret[t]), 2), down, up)
        opn = np.clip(np.round(pre * np.exp(0.3 * ret[t] + gap_noise[t]), 2), down, up)
        hi = np.maximum(np.maximum(opn, close),
                        np.round(np.maximum(opn, close) * np.exp(wick[0, t]), 2)).clip(max=up)
        lo = np.minimum(np.minimum(opn, close),
                        np.round(np.minimum(opn, close) * np.exp(-wick[1, t]), 2)).clip(min=down)
        locked = (hi == lo) & ((close == up) | (close == down))
        turn = turnover[t] * np.exp(8.0 * np.abs(ret[t])) * np.where(locked, 0.1, 1.0)
        vol = np.maximum(np.round(shares * np.minimum(turn, 0.5) / 100.0), 1.0) * 100.0
        vwap = 0.5 * (lo + vwap_u[t] * (hi - lo)) + 0.25 * (opn + close)
        for name, value in (("open", opn), ("high", hi), ("low", lo), ("close", close),
                            ("volume", vol), ("amount", np.round(vwap * vol, 2)),
                            ("preclose", pre), ("adj_factor", adj),
                            ("float_mcap", close * shares)):
            out[name][t] = value  # rows without a bar are blanked below, in one pass
        last_close = np.where(live, close, last_close)
    if progress is not None and T % 50:
        progress(T % 50)
    for arr in out.values():
        arr[~trades] = np.nan
    if signal is not None:
        signal[~trades] = np.nan
    return _Market(dates, symbols, out, trades, np.where(trades, st_kind, 0).astype(np.int8),
                   names, industries, signal)


def _name_matrix(m: _Market) -> np.ndarray:
    """Daily names (dates x symbols, object): ``"ST "``/``"*ST "`` prefixes on ST days."""
    table = np.concatenate([m.base_names, "ST " + m.base_names, "*ST " + m.base_names])
    n = len(m.symbols)
    return table[m.st_kind.astype(np.int64) * n + np.arange(n)]


def _check_dtype(dtype: Any) -> np.dtype:
    dt = np.dtype(dtype)
    if dt.kind != "f":
        raise DataError(f"dtype must be a float dtype (float32/float64), got {dt}")
    return dt


def synthetic_market(
    n_symbols: int = 500,
    n_days: int = 1500,
    seed: int = 42,
    start: str | pd.Timestamp = "2016-01-04",
    backend: BackendName = "cpu",
    dtype: Any = np.float64,
    alpha: PlantedAlpha | float | None = None,
) -> Panel:
    """Generate the synthetic A-share market as a :class:`~qilin.data.panel.Panel`.

    Parameters
    ----------
    n_symbols, n_days : int
        Universe size and number of trading days.
    seed : int
        Seed of the single random generator; equal arguments give bit-identical output.
    start : str or Timestamp
        First calendar day (the first trading day is the first weekday on or after it).
    backend : {"cpu", "gpu", "auto"}
        Where the Panel's arrays live (generation itself runs on the CPU).
    dtype : float dtype
        dtype of the price and volume fields.
    alpha : PlantedAlpha, float or None
        Plant a known alpha (a float is its IC): adds the field ``alpha`` (the signal known at
        each close) and its effect on the next days' returns. ``None`` (default): nothing is
        planted and the output is bit-identical to earlier versions.

    Returns
    -------
    Panel
        Fields ``open high low close volume amount vwap preclose adj_factor float_mcap``
        (raw, unadjusted prices; ``panel.adjusted()`` back-adjusts them), ``valid`` False
        where there is no bar (not yet listed, delisted, suspended), ``st`` True on ST days,
        ``info`` with ``name`` (last name), ``industry`` and ``board``.

    Examples
    --------
    >>> p = synthetic_market(n_symbols=30, n_days=50, seed=3)
    >>> p.shape, sorted(p.info.columns)
    ((50, 30), ['board', 'industry', 'name'])
    >>> p.fingerprint() == synthetic_market(n_symbols=30, n_days=50, seed=3).fingerprint()
    True
    """
    dt = _check_dtype(dtype)
    m = _generate(n_symbols, n_days, seed, start, planted=_as_planted(alpha))
    fields = {k: v.astype(dt, copy=False) for k, v in m.fields.items()}
    if m.alpha is not None:
        fields["alpha"] = m.alpha.astype(dt, copy=False)
    with np.errstate(divide="ignore", invalid="ignore"):
        fields["vwap"] = (m.fields["amount"] / m.fields["volume"]).astype(dt, copy=False)
    names = _name_matrix(m)
    last_row = np.where(m.valid.any(axis=0), m.valid.shape[0] - 1 - np.argmax(m.valid[::-1], 0), 0)
    info = pd.DataFrame(
        {"name": names[last_row, np.arange(len(m.symbols))], "industry": m.industries,
         "board": [board_of(s) for s in m.symbols]},
        index=pd.Index(m.symbols, name="symbol"),
    )
    return Panel(m.dates, pd.Index(m.symbols, name="symbol"), fields, get_backend(backend),
                 valid=m.valid, info=info, st=m.st_kind > 0)


def synthetic_bars(
    n_symbols: int = 500,
    n_days: int = 1500,
    seed: int = 42,
    start: str | pd.Timestamp = "2016-01-04",
    backend: BackendName = "cpu",
    dtype: Any = np.float64,
    progress: Callable[[int], None] | None = None,
    alpha: PlantedAlpha | float | None = None,
) -> pd.DataFrame:
    """The same synthetic market as long-format daily bars (one row per existing bar).

    Parameters are those of :func:`synthetic_market` (``backend`` is accepted for symmetry;
    the DataFrame is always a pandas one); ``progress``, when given, is called with the
    number of trading days simulated since its last call. Rows are sorted by symbol then
    date; columns are :data:`BAR_COLUMNS` (plus ``alpha``, the signal, when one is planted).
    Suspended and unlisted days have no row.

    Examples
    --------
    >>> bars = synthetic_bars(n_symbols=4, n_days=5, seed=0)
    >>> bars.groupby("symbol").size().max() <= 5
    True
    >>> bool(bars["symbol"].is_monotonic_increasing)
    True
    """
    get_backend(backend)  # validate the name even though bars are host data
    dt = _check_dtype(dtype)
    m = _generate(n_symbols, n_days, seed, start, progress, planted=_as_planted(alpha))
    valid_t = m.valid.T  # symbols x dates, so the flattened order is symbol then date
    sym_idx, date_idx = np.nonzero(valid_t)
    data: dict[str, Any] = {
        "date": m.dates.values[date_idx],
        "symbol": m.symbols[sym_idx],
    }
    for col in BAR_COLUMNS[2:]:
        if col == "name":
            data[col] = _name_matrix(m)[date_idx, sym_idx]
        elif col == "industry":
            data[col] = m.industries[sym_idx]
        else:
            data[col] = m.fields[col][date_idx, sym_idx].astype(dt, copy=False)
    columns = list(BAR_COLUMNS)
    if m.alpha is not None:
        data["alpha"] = m.alpha[date_idx, sym_idx].astype(dt, copy=False)
        columns.append("alpha")
    return pd.DataFrame(data, columns=columns)
