"""Anomaly detection on prices, returns and volume: batch over a Panel or streaming per tick.

Four rules, each with its own window and threshold (:class:`AnomalyConfig`):

``return_zscore``
    ``(r_t - mean) / std`` of the close-to-close return against the previous
    ``return_window`` returns (the current one excluded, sample std, ddof=1).
``price_zscore``
    The same for the price against the previous ``price_window`` prices.
``volatility_spike``
    ``std(r, last vol_short) / std(r, last vol_long)`` (both windows end at the current
    return) above ``vol_ratio``.
``volume_spike``
    ``v_t / mean(v, previous volume_window)`` above ``volume_ratio``.

A window must be full and hold no NaN (a missing bar) to give a value, as in
``pandas.rolling(w)``. A window whose spread is zero (``var <= 1e-12 * mean(x**2)``, e.g. a
price locked at its limit) gives no z-score.

:meth:`AnomalyDetector.detect` computes all rules over a whole Panel (NumPy, vectorised over
dates and symbols, exact two-pass window statistics). :meth:`AnomalyDetector.update` takes one
tick (a vector over all symbols) and updates O(1) state per symbol — ring buffers and running
sums in NumPy arrays, advanced for every symbol by one compiled kernel call — and returns the
same values as the batch method would for that row.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> close = 100 * np.cumprod(1 + 0.01 * rng.standard_normal((40, 3)), axis=0)
>>> close[-1, 1] *= 1.3                                  # a 30% jump on the last bar
>>> det = AnomalyDetector(AnomalyConfig(return_window=20, return_z=4.0))
>>> batch = det.detect(close)
>>> bool(batch.fired["return_zscore"][-1, 1]), bool(batch.fired["return_zscore"][-1, 0])
(True, False)
>>> stream = AnomalyDetector(det.config, n_symbols=3)
>>> rows = [stream.update(close[t]) for t in range(40)]
>>> bool(np.allclose(rows[-1].values["return_zscore"], batch.values["return_zscore"][-1],
...                  equal_nan=True))
True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numba
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from qilin.errors import MonitoringError
from qilin.monitoring.signals import Signals

RULES = ("return_zscore", "price_zscore", "volatility_spike", "volume_spike")
# Rolling slots of the streaming state: what is pushed into each and which window it uses.
_S_RET_Z, _S_VOL_SHORT, _S_VOL_LONG, _S_PRICE, _S_VOLUME = range(5)
_ZERO_VAR_REL = 1e-12


@dataclass
class AnomalyConfig:
    """Windows (in bars or ticks) and thresholds of the anomaly rules.

    A threshold of ``inf`` switches its rule off.
    """

    return_window: int = 20
    return_z: float = 4.0
    price_window: int = 20
    price_z: float = 4.0
    vol_short: int = 5
    vol_long: int = 60
    vol_ratio: float = 2.5
    volume_window: int = 20
    volume_ratio: float = 5.0

    def __post_init__(self) -> None:
        for name in ("return_window", "price_window", "vol_short", "vol_long",
                     "volume_window"):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or value < 2:
                raise MonitoringError(f"AnomalyConfig.{name} must be an integer >= 2, "
                                      f"got {value!r}")
        if self.vol_short >= self.vol_long:
            raise MonitoringError(f"AnomalyConfig: vol_short ({self.vol_short}) must be "
                                  f"shorter than vol_long ({self.vol_long})")
        for name in ("return_z", "price_z", "vol_ratio", "volume_ratio"):
            if not getattr(self, name) > 0:
                raise MonitoringError(f"AnomalyConfig.{name} must be > 0, got "
                                      f"{getattr(self, name)!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AnomalyConfig:
        """Build from a mapping, rejecting unknown keys by name."""
        known = set(asdict(cls()))
        unknown = sorted(set(d) - known)
        if unknown:
            raise MonitoringError(f"unknown anomaly settings {unknown}; known: {sorted(known)}")
        return cls(**d)

    def windows(self) -> np.ndarray:
        return np.array([self.return_window, self.vol_short, self.vol_long,
                         self.price_window, self.volume_window], dtype=np.int64)

    def thresholds(self) -> dict[str, float]:
        return {"return_zscore": self.return_z, "price_zscore": self.price_z,
                "volatility_spike": self.vol_ratio, "volume_spike": self.volume_ratio}


# ------------------------------------------------------------------------------- batch
def rolling_mean_std(x: np.ndarray, window: int, chunk: int = 256
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, sample std and mean of squares over the trailing ``window`` rows (row included).

    NaN until the window is full and wherever it holds a NaN. Computed exactly (two-pass)
    on chunks of rows so memory stays ``chunk x symbols x window``.
    """
    T = x.shape[0]
    mean = np.full(x.shape, np.nan)
    std = np.full(x.shape, np.nan)
    msq = np.full(x.shape, np.nan)
    for start in range(window - 1, T, chunk):
        stop = min(T, start + chunk)
        win = sliding_window_view(x[start - window + 1:stop], window, axis=0)
        mean[start:stop] = win.mean(axis=-1)
        std[start:stop] = win.std(axis=-1, ddof=1)
        msq[start:stop] = (win * win).mean(axis=-1)
    return mean, std, msq


def _shift_down(a: np.ndarray) -> np.ndarray:
    out = np.full(a.shape, np.nan)
    out[1:] = a[:-1]
    return out


def _zscore(x: np.ndarray, mean: np.ndarray, std: np.ndarray, msq: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        ok = std * std > _ZERO_VAR_REL * msq
        return np.where(ok, (x - mean) / np.where(ok, std, 1.0), np.nan)


def _fired(values: np.ndarray, threshold: float, two_sided: bool) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return (np.abs(values) if two_sided else values) > threshold


# --------------------------------------------------------------------------- streaming
@numba.njit(cache=True, inline="always", error_model="numpy")
def _stats_nb(ring: np.ndarray, off: np.ndarray, s1: np.ndarray, s2: np.ndarray, nnan: np.ndarray,
              anchor: np.ndarray, slot: int, i: int, w: int, n: int) -> tuple:
    """Mean, std, mean of squares of slot ``slot`` for symbol ``i`` (NaN when not ready)."""
    if n < w or nnan[i, slot] > 0:
        return np.nan, np.nan, np.nan
    a = s1[i, slot]
    b = s2[i, slot]
    k = anchor[i, slot]
    mean = k + a / w
    var = (b - a * a / w) / (w - 1)
    if var < 0.0:
        var = 0.0
    msq = (b + 2.0 * k * a) / w + k * k
    return mean, np.sqrt(var), msq


@numba.njit(cache=True, inline="always", error_model="numpy")
def _push_nb(ring: np.ndarray, off: np.ndarray, head: np.ndarray, s1: np.ndarray,
             s2: np.ndarray, nnan: np.ndarray, anchor: np.ndarray, slot: int, i: int, w: int,
             n: int, x: float) -> None:
    """Append ``x`` as the ``n``-th value (0-based) of slot ``slot`` for symbol ``i``;
    ``head[i, slot]`` is ``n % w``, kept as a counter to avoid an integer division."""
    pos = head[i, slot]
    k = anchor[i, slot]
    if n >= w:
        old = ring[i, off[slot] + pos]
        if np.isnan(old):
            nnan[i, slot] -= 1
        else:
            d = old - k
            s1[i, slot] -= d
            s2[i, slot] -= d * d
    ring[i, off[slot] + pos] = x
    if np.isnan(x):
        nnan[i, slot] += 1
    else:
        d = x - k
        s1[i, slot] += d
        s2[i, slot] += d * d
    if pos < w - 1:
        head[i, slot] = pos + 1
    else:
        head[i, slot] = 0
        # Once per window, rebuild the sums from the ring around a fresh anchor so that
        # rounding from the add/remove updates cannot accumulate over a long stream.
        k = np.nan
        for j in range(w):
            if not np.isnan(ring[i, off[slot] + j]):
                k = ring[i, off[slot] + j]
        if np.isnan(k):
            k = 0.0
        a = 0.0
        b = 0.0
        m = 0
        for j in range(w):
            v = ring[i, off[slot] + j]
            if np.isnan(v):
                m += 1
            else:
                a += v - k
                b += (v - k) * (v - k)
        anchor[i, slot] = k
        s1[i, slot] = a
        s2[i, slot] = b
        nnan[i, slot] = m


@numba.njit(cache=True, inline="always", error_model="numpy")
def _z_nb(x: float, mean: float, std: float, msq: float) -> float:
    if std * std > 1e-12 * msq:
        return (x - mean) / std
    return np.nan


@numba.njit(cache=True, error_model="numpy")
def anomaly_update_nb(price: np.ndarray, volume: np.ndarray, skip_missing: bool,
                      wins: np.ndarray, off: np.ndarray, head: np.ndarray, thr: np.ndarray,
                      last_price: np.ndarray,
                      count: np.ndarray, ring: np.ndarray, s1: np.ndarray, s2: np.ndarray,
                      nnan: np.ndarray, anchor: np.ndarray, out: np.ndarray,
                      fired: np.ndarray) -> None:
    """Advance every symbol by one tick.

    Slot ``k`` (returns for the z-score, short and long volatility; prices; volumes) keeps
    its ring in ``ring[:, off[k]:off[k] + wins[k]]``. Writes the rule values to ``out``
    (5 x N: returns, return z, price z, volatility ratio, volume ratio) and whether each
    rule fired to ``fired`` (4 x N, in the order of ``RULES``).
    """
    n_sym = price.shape[0]
    for i in range(n_sym):
        p = price[i]
        if skip_missing and np.isnan(p):
            for r in range(5):
                out[r, i] = np.nan
            for r in range(4):
                fired[r, i] = False
            continue
        n = count[i]
        r_t = p / last_price[i] - 1.0
        last_price[i] = p
        v = volume[i]
        m0, sd0, q0 = _stats_nb(ring, off, s1, s2, nnan, anchor, _S_RET_Z, i, wins[0], n)
        m3, sd3, q3 = _stats_nb(ring, off, s1, s2, nnan, anchor, _S_PRICE, i, wins[3], n)
        m4, _sd4, _q4 = _stats_nb(ring, off, s1, s2, nnan, anchor, _S_VOLUME, i, wins[4], n)
        z_ret = _z_nb(r_t, m0, sd0, q0)
        z_px = _z_nb(p, m3, sd3, q3)
        v_ratio = v / m4 if m4 > 0.0 else np.nan
        _push_nb(ring, off, head, s1, s2, nnan, anchor, _S_RET_Z, i, wins[0], n, r_t)
        _push_nb(ring, off, head, s1, s2, nnan, anchor, _S_VOL_SHORT, i, wins[1], n, r_t)
        _push_nb(ring, off, head, s1, s2, nnan, anchor, _S_VOL_LONG, i, wins[2], n, r_t)
        _push_nb(ring, off, head, s1, s2, nnan, anchor, _S_PRICE, i, wins[3], n, p)
        _push_nb(ring, off, head, s1, s2, nnan, anchor, _S_VOLUME, i, wins[4], n, v)
        count[i] = n + 1
        _m1, sd1, _q1 = _stats_nb(ring, off, s1, s2, nnan, anchor, _S_VOL_SHORT, i, wins[1], n + 1)
        _m2, sd2, q2 = _stats_nb(ring, off, s1, s2, nnan, anchor, _S_VOL_LONG, i, wins[2], n + 1)
        vol_ratio = sd1 / sd2 if sd2 * sd2 > 1e-12 * q2 else np.nan
        out[0, i] = r_t
        out[1, i] = z_ret
        out[2, i] = z_px
        out[3, i] = vol_ratio
        out[4, i] = v_ratio
        fired[0, i] = abs(z_ret) > thr[0]
        fired[1, i] = abs(z_px) > thr[1]
        fired[2, i] = vol_ratio > thr[2]
        fired[3, i] = v_ratio > thr[3]


def warm_up() -> None:
    """Load (or compile) the streaming kernel now rather than on the first tick."""
    AnomalyDetector(n_symbols=1).update(np.ones(1))


class AnomalyDetector:
    """Rolling z-scores, volatility and volume spikes, in batch or streaming mode.

    Parameters
    ----------
    config : AnomalyConfig, optional
    n_symbols : int, optional
        Number of symbols for streaming (:meth:`update`); not needed for :meth:`detect`.
    skip_missing : bool
        Streaming only. False (bars): a NaN price is a missing bar, pushed as NaN like a gap
        in a Panel. True (ticks): a NaN price means "no tick for this symbol now" and leaves
        its state untouched.
    """

    def __init__(self, config: AnomalyConfig | None = None, n_symbols: int | None = None,
                 skip_missing: bool = False) -> None:
        self.config = config or AnomalyConfig()
        self.skip_missing = skip_missing
        self.n_symbols = 0
        if n_symbols is not None:
            self.reset(n_symbols)

    # ---------------------------------------------------------------- batch
    def detect(self, close: Any, volume: Any = None) -> Signals:
        """All rules over a whole history.

        Parameters
        ----------
        close : Panel or array (dates x symbols)
            A Panel (its ``close`` and ``volume`` are used) or a 2-D price array.
        volume : array (dates x symbols), optional
        """
        if hasattr(close, "fields"):
            panel = close
            close = panel["close"]
            if volume is None and "volume" in panel:
                volume = panel["volume"]
        from qilin.backend import to_host

        px = np.asarray(to_host(close), dtype=np.float64)
        if px.ndim != 2:
            raise MonitoringError(f"detect: prices must be 2-D (dates x symbols), got shape "
                                  f"{px.shape}")
        vol = (np.full(px.shape, np.nan) if volume is None
               else np.asarray(to_host(volume), dtype=np.float64))
        if vol.shape != px.shape:
            raise MonitoringError(f"detect: volume shape {vol.shape} != prices {px.shape}")
        c = self.config
        ret = np.full(px.shape, np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            ret[1:] = px[1:] / px[:-1] - 1.0
        m, s, q = (_shift_down(a) for a in rolling_mean_std(ret, c.return_window))
        z_ret = _zscore(ret, m, s, q)
        m, s, q = (_shift_down(a) for a in rolling_mean_std(px, c.price_window))
        z_px = _zscore(px, m, s, q)
        _, s_short, _ = rolling_mean_std(ret, c.vol_short)
        _, s_long, q_long = rolling_mean_std(ret, c.vol_long)
        with np.errstate(invalid="ignore", divide="ignore"):
            ok = s_long * s_long > _ZERO_VAR_REL * q_long
            vol_ratio = np.where(ok, s_short / np.where(ok, s_long, 1.0), np.nan)
            v_mean = _shift_down(rolling_mean_std(vol, c.volume_window)[0])
            v_ratio = np.where(v_mean > 0, vol / np.where(v_mean > 0, v_mean, 1.0), np.nan)
        values = {"return_zscore": z_ret, "price_zscore": z_px,
                  "volatility_spike": vol_ratio, "volume_spike": v_ratio}
        return self._signals(values, ret)

    def _signals(self, values: dict[str, np.ndarray], ret: np.ndarray,
                 masks: np.ndarray | None = None) -> Signals:
        thr = self.config.thresholds()
        if masks is None:
            fired = {r: _fired(values[r], thr[r], r.endswith("zscore")) for r in RULES}
        else:
            fired = {r: masks[k] for k, r in enumerate(RULES)}
        return Signals({**values, "returns": ret}, fired, dict(thr))

    # ------------------------------------------------------------ streaming
    def reset(self, n_symbols: int) -> None:
        """Allocate fresh streaming state for ``n_symbols`` symbols."""
        if n_symbols < 1:
            raise MonitoringError(f"AnomalyDetector: n_symbols must be >= 1, got {n_symbols}")
        wins = self.config.windows()
        self.n_symbols = int(n_symbols)
        self._wins = wins
        t = self.config.thresholds()
        self._thr = np.array([t[r] for r in RULES], dtype=np.float64)
        self._last = np.full(n_symbols, np.nan)
        self._count = np.zeros(n_symbols, dtype=np.int64)
        # symbol-major: one symbol's rings and sums are adjacent in memory
        self._off = np.concatenate([[0], np.cumsum(wins)[:-1]]).astype(np.int64)
        self._ring = np.full((n_symbols, int(wins.sum())), np.nan)
        self._head = np.zeros((n_symbols, 5), dtype=np.int64)
        self._s1 = np.zeros((n_symbols, 5))
        self._s2 = np.zeros((n_symbols, 5))
        self._nnan = np.zeros((n_symbols, 5), dtype=np.int64)
        self._anchor = np.zeros((n_symbols, 5))
        self._nan_volume = np.full(n_symbols, np.nan)

    def state_nbytes(self) -> int:
        """Bytes held by the streaming state (constant for a given number of symbols)."""
        return sum(a.nbytes for a in (self._last, self._count, self._ring, self._head, self._s1,
                                      self._s2, self._nnan, self._anchor, self._nan_volume))

    def update(self, price: Any, volume: Any = None) -> Signals:
        """Advance by one tick: ``price`` (and ``volume``) are vectors over all symbols."""
        if not self.n_symbols:
            raise MonitoringError("AnomalyDetector.update: call reset(n_symbols) first or "
                                  "pass n_symbols to the constructor")
        p = np.asarray(price, dtype=np.float64)
        if p.shape != (self.n_symbols,):
            raise MonitoringError(f"AnomalyDetector.update: expected {self.n_symbols} prices, "
                                  f"got shape {p.shape}")
        v = self._nan_volume if volume is None else np.asarray(volume, dtype=np.float64)
        if v.shape != p.shape:
            raise MonitoringError(f"AnomalyDetector.update: volume shape {v.shape} != "
                                  f"prices {p.shape}")
        out = np.empty((5, self.n_symbols))
        masks = np.empty((4, self.n_symbols), dtype=np.bool_)
        anomaly_update_nb(p, v, self.skip_missing, self._wins, self._off, self._head, self._thr,
                          self._last,
                          self._count, self._ring, self._s1, self._s2, self._nnan,
                          self._anchor, out, masks)
        values = {"return_zscore": out[1], "price_zscore": out[2],
                  "volatility_spike": out[3], "volume_spike": out[4]}
        return self._signals(values, out[0], masks)
