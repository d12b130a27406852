"""Strategy templates: named, parameterised signal rules for single runs and fused sweeps.

A template turns parameters into boolean ``entries`` / ``exits`` (dates x symbols) for
:func:`qilin.backtest.engine.run_signals`, and describes the same rule to the fused sweep
kernels as indicator *series keys* plus four *sides* (see
:mod:`qilin.backtest.sweep_kernels_cpu`): entry when ``side0 > side1``, exit when
``side2 > side3``. Both paths compute indicators with the same kernels, on the back-adjusted
close (``close * adj_factor`` when the Panel has ``adj_factor``), skipping missing bars.

=================  ==============================  =========================================
template           parameters                      rule
=================  ==============================  =========================================
``ma_cross``       fast, slow, ma (sma|ema)        long while MA(fast) > MA(slow), flat when <
``rsi``            window, lower, upper            enter RSI < lower, exit RSI > upper
``bollinger``      window, k, mode                 reversion: enter close < mid - k*std,
                                                   exit close > mid; breakout: enter close >
                                                   mid + k*std, exit close < mid
``momentum_topk``  lookback, k, rebalance          every ``rebalance`` days hold the ``k``
                                                   highest ``lookback``-day returns, equal
                                                   weight (portfolio mode)
=================  ==============================  =========================================

Examples
--------
>>> from qilin.data.synthetic import synthetic_market
>>> s = get_strategy("ma_cross")
>>> s.param_names
('fast', 'slow', 'ma')
>>> entries, exits = s.signals(synthetic_market(4, 80, seed=1), fast=5, slow=20)
>>> entries.shape, bool((entries & exits).any())
((80, 4), False)
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from qilin.backend import to_host
from qilin.backtest import sweep_kernels_cpu as kcpu
from qilin.data.panel import Panel
from qilin.errors import BacktestError

#: A series key: ``("close", 0)`` or ``(indicator, window)``.
SeriesKey = tuple[str, int]
#: One side: ``(base key or None, scaled key or None, coef, const)``.
Side = tuple[SeriesKey | None, SeriesKey | None, float, float]
CLOSE: SeriesKey = ("close", 0)


def signal_close(panel: Panel) -> np.ndarray:
    """Back-adjusted close as a host ``(dates, symbols)`` array (the price signals read)."""
    close = to_host(panel["close"]).astype(np.float64)
    if "adj_factor" in panel:
        close = close * to_host(panel["adj_factor"]).astype(np.float64)
    return close


def compute_series(key: SeriesKey, px: np.ndarray, out: np.ndarray | None = None
                   ) -> np.ndarray:
    """Indicator ``key`` of ``px`` (``(symbols, dates)`` host array), same layout.

    With ``out`` (a float64 array of ``px``'s shape) the result is written there and
    ``out`` is returned; :func:`compute_stack` computes many series without temporaries.

    Examples
    --------
    >>> px = np.array([[1.0, 2.0, 3.0, 4.0]])
    >>> compute_series(("sma", 2), px).tolist()
    [[nan, 1.5, 2.5, 3.5]]
    """
    kind, w = key
    px = np.ascontiguousarray(px, dtype=np.float64)
    if out is not None:
        out[...] = compute_series(key, px)
        return out
    if kind == "close":
        return px
    if kind == "sma":
        return kcpu.rolling_mean_nb(px, w)
    if kind == "ema":
        return kcpu.ema_nb(px, w)
    if kind == "std":
        return kcpu.rolling_std_nb(px, w)
    if kind == "rsi":
        return kcpu.rsi_nb(px, w)
    if kind == "mom":
        return kcpu.momentum_nb(px, w)
    raise BacktestError(f"unknown indicator series {kind!r} (known: close sma ema std rsi mom)")


def compute_stack(keys: list[SeriesKey], px: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Every series of ``keys`` into ``out[k]`` (``out``: C-contiguous float64
    ``(len(keys) or more, symbols, dates)``); same values as :func:`compute_series`.

    Moving averages of all windows come from one parallel pass per kind, which gathers each
    row's valid bars once.

    Examples
    --------
    >>> px = np.array([[1.0, 2.0, 3.0, 4.0]])
    >>> compute_stack([("sma", 2), ("close", 0)], px, np.empty((2, 1, 4))).tolist()
    [[[nan, 1.5, 2.5, 3.5]], [[1.0, 2.0, 3.0, 4.0]]]
    """
    px = np.ascontiguousarray(px, dtype=np.float64)
    for kind, kernel in _BATCHED.items():
        slots = [k for k, key in enumerate(keys) if key[0] == kind]
        if slots:
            kernel(px, np.array([keys[k][1] for k in slots], dtype=np.int64),
                   np.array(slots, dtype=np.int64), out)
    for k, key in enumerate(keys):
        if key[0] not in _BATCHED:
            compute_series(key, px, out=out[k])
    return out


#: Indicators computed for many windows in one pass: kind -> kernel(x, windows, slots, out).
_BATCHED = {"sma": kcpu.rolling_means_into_nb, "ema": kcpu.emas_into_nb}


class InvalidCombination(BacktestError):
    """Parameters that are each valid but do not go together (e.g. ``fast >= slow``):
    a grid drops such combinations, while any other error in a grid is raised."""


def _positive_int(name: str, value: Any, template: str) -> int:
    ok = (not isinstance(value, bool | str) and isinstance(value, int | float | np.number)
          and np.isfinite(value) and int(value) == value and int(value) >= 1)
    if not ok:
        raise BacktestError(f"{template}: parameter {name}={value!r} must be a positive integer")
    return int(value)


def _finite_number(name: str, value: Any, template: str) -> float:
    ok = (not isinstance(value, bool | str) and isinstance(value, int | float | np.number)
          and np.isfinite(value))
    if not ok:
        raise BacktestError(f"{template}: parameter {name}={value!r} must be a finite number")
    return float(value)


def did_you_mean(name: str, options: Any) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``options`` (difflib), else ``""``.

    Examples
    --------
    >>> did_you_mean("slwo", ["fast", "slow", "ma"])
    " (did you mean 'slow'?)"
    >>> did_you_mean("zzz", ["fast", "slow"])
    ''
    """
    close = difflib.get_close_matches(str(name), [str(o) for o in options], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_parameters_error(template: Any, unknown: list[str]) -> BacktestError:
    """The error for parameters ``template`` does not take: valid names and a suggestion."""
    hints = "".join(did_you_mean(n, template.param_names) for n in unknown[:1])
    return BacktestError(
        f"{template.name}: unknown parameter(s) {', '.join(unknown)}{hints}; valid "
        f"parameters: {', '.join(template.param_names)}")


@dataclass(frozen=True)
class StrategyTemplate:
    """Base of the signal templates. Subclasses define :meth:`sides` and :meth:`check`."""

    name: ClassVar[str] = ""
    param_names: ClassVar[tuple[str, ...]] = ()
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def check(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Validated, complete parameters (raises BacktestError on bad values)."""
        raise NotImplementedError

    def is_valid(self, params: Mapping[str, Any]) -> bool:
        """False for combinations a grid should drop (e.g. ``fast >= slow``); a bad value
        (a word for a window, an unknown parameter) raises BacktestError."""
        try:
            self.check(params)
        except InvalidCombination:
            return False
        return True

    def sides(self, params: Mapping[str, Any]) -> tuple[Side, Side, Side, Side]:
        """The four sides of the rule (entry lhs, entry rhs, exit lhs, exit rhs)."""
        raise NotImplementedError

    def series_keys(self, params: Mapping[str, Any]) -> list[SeriesKey]:
        """Indicator series the rule reads."""
        keys: list[SeriesKey] = []
        for base, scaled, _, _ in self.sides(self.check(params)):
            keys += [k for k in (base, scaled) if k is not None and k not in keys]
        return keys

    def signals(self, panel: Panel, **params: Any) -> tuple[np.ndarray, np.ndarray]:
        """Boolean ``(entries, exits)`` host arrays (dates x symbols) for ``run_signals``."""
        p = self.check(params)
        px = np.ascontiguousarray(signal_close(panel).T)
        cache = {k: compute_series(k, px) for k in self.series_keys(p)}

        def value(side: Side) -> np.ndarray:
            base, scaled, coef, const = side
            v = np.full(px.shape, const)
            if base is not None:
                v = v + cache[base]
            if scaled is not None:
                v = v + coef * cache[scaled]
            return v

        s = [value(side) for side in self.sides(p)]
        with np.errstate(invalid="ignore"):
            entries = s[0] > s[1]
            exits = s[2] > s[3]
        both = entries & exits
        return (entries & ~both).T.copy(), (exits & ~both).T.copy()


@dataclass(frozen=True)
class MACrossover(StrategyTemplate):
    """Long while the fast moving average is above the slow one (``sma`` or TA-Lib ``ema``)."""

    name: ClassVar[str] = "ma_cross"
    param_names: ClassVar[tuple[str, ...]] = ("fast", "slow", "ma")
    defaults: Mapping[str, Any] = field(default_factory=lambda: {"ma": "sma"})

    def check(self, params: Mapping[str, Any]) -> dict[str, Any]:
        p = {**self.defaults, **params}
        _require(self, p)
        fast = _positive_int("fast", p["fast"], self.name)
        slow = _positive_int("slow", p["slow"], self.name)
        if fast >= slow:
            raise InvalidCombination(f"ma_cross: fast={fast} must be below slow={slow}")
        if p["ma"] not in ("sma", "ema"):
            raise BacktestError(f"ma_cross: ma={p['ma']!r} must be 'sma' or 'ema'")
        return {"fast": fast, "slow": slow, "ma": p["ma"]}

    def sides(self, params: Mapping[str, Any]) -> tuple[Side, Side, Side, Side]:
        f, s = (params["ma"], params["fast"]), (params["ma"], params["slow"])
        return (f, None, 0.0, 0.0), (s, None, 0.0, 0.0), (s, None, 0.0, 0.0), (f, None, 0.0, 0.0)


@dataclass(frozen=True)
class RSIThreshold(StrategyTemplate):
    """Buy when RSI(window) drops below ``lower``, sell when it rises above ``upper``."""

    name: ClassVar[str] = "rsi"
    param_names: ClassVar[tuple[str, ...]] = ("window", "lower", "upper")
    defaults: Mapping[str, Any] = field(
        default_factory=lambda: {"window": 14, "lower": 30.0, "upper": 70.0})

    def check(self, params: Mapping[str, Any]) -> dict[str, Any]:
        p = {**self.defaults, **params}
        _require(self, p)
        w = _positive_int("window", p["window"], self.name)
        lo = _finite_number("lower", p["lower"], self.name)
        up = _finite_number("upper", p["upper"], self.name)
        for name, v in (("lower", lo), ("upper", up)):
            if not 0.0 <= v <= 100.0:
                raise BacktestError(f"rsi: parameter {name}={v} must lie in [0, 100]")
        if not lo < up:
            raise InvalidCombination(f"rsi: need lower < upper, got lower={lo} upper={up}")
        return {"window": w, "lower": lo, "upper": up}

    def sides(self, params: Mapping[str, Any]) -> tuple[Side, Side, Side, Side]:
        r = ("rsi", params["window"])
        return ((None, None, 0.0, params["lower"]), (r, None, 0.0, 0.0),
                (r, None, 0.0, 0.0), (None, None, 0.0, params["upper"]))


@dataclass(frozen=True)
class BollingerBands(StrategyTemplate):
    """Bollinger mean reversion (buy below the lower band) or breakout (buy above the upper)."""

    name: ClassVar[str] = "bollinger"
    param_names: ClassVar[tuple[str, ...]] = ("window", "k", "mode")
    defaults: Mapping[str, Any] = field(
        default_factory=lambda: {"window": 20, "k": 2.0, "mode": "reversion"})

    def check(self, params: Mapping[str, Any]) -> dict[str, Any]:
        p = {**self.defaults, **params}
        _require(self, p)
        w = _positive_int("window", p["window"], self.name)
        k = _finite_number("k", p["k"], self.name)
        if not k > 0:
            raise BacktestError(f"bollinger: k={k} must be positive")
        if p["mode"] not in ("reversion", "breakout"):
            raise BacktestError(f"bollinger: mode={p['mode']!r} must be 'reversion' or 'breakout'")
        return {"window": w, "k": k, "mode": p["mode"]}

    def sides(self, params: Mapping[str, Any]) -> tuple[Side, Side, Side, Side]:
        mid, sd, k = ("sma", params["window"]), ("std", params["window"]), params["k"]
        if params["mode"] == "reversion":
            return ((mid, sd, -k, 0.0), (CLOSE, None, 0.0, 0.0),
                    (CLOSE, None, 0.0, 0.0), (mid, None, 0.0, 0.0))
        return ((CLOSE, None, 0.0, 0.0), (mid, sd, k, 0.0),
                (mid, None, 0.0, 0.0), (CLOSE, None, 0.0, 0.0))


@dataclass(frozen=True)
class MomentumTopK:
    """Cross-sectional momentum: hold the ``k`` best ``lookback``-day performers.

    Rebalanced at the close of every ``rebalance``-th date (the first date included), equal
    weight; missing or limit-locked names are not traded on a rebalance date.

    Examples
    --------
    >>> from qilin.data.synthetic import synthetic_market
    >>> w = MomentumTopK().targets(synthetic_market(6, 40, seed=2), lookback=5, k=2, rebalance=5)
    >>> w.shape, float(w[10].sum())
    ((40, 6), 1.0)
    """

    name: ClassVar[str] = "momentum_topk"
    param_names: ClassVar[tuple[str, ...]] = ("lookback", "k", "rebalance")
    defaults: Mapping[str, Any] = field(default_factory=lambda: {"rebalance": 20})

    def check(self, params: Mapping[str, Any]) -> dict[str, Any]:
        p = {**self.defaults, **params}
        _require(self, p)
        return {n: _positive_int(n, p[n], self.name) for n in self.param_names}

    def is_valid(self, params: Mapping[str, Any]) -> bool:
        """True: every combination of valid values is valid (bad values raise)."""
        self.check(params)
        return True

    def scores(self, panel: Panel, lookback: int) -> np.ndarray:
        """``lookback``-day return of the back-adjusted close (dates x symbols, host)."""
        lookback = _positive_int("lookback", lookback, self.name)
        px = np.ascontiguousarray(signal_close(panel).T)
        return kcpu.momentum_nb(px, lookback).T.copy()

    def targets(self, panel: Panel, **params: Any) -> np.ndarray:
        """Target weights (dates x symbols, rows sum to 1 once scores exist; NaN = keep).

        Rows between rebalance dates are NaN (hold the drifting weights), which is how the
        portfolio engine's ``target`` input expresses "no rebalance today".
        """
        p = self.check(params)
        sc = self.scores(panel, p["lookback"])
        valid = to_host(panel.valid)
        T, N = sc.shape
        out = np.full((T, N), np.nan)
        for t in range(0, T, p["rebalance"]):
            ok = valid[t] & np.isfinite(sc[t])
            if not ok.any():
                continue
            cand = np.flatnonzero(ok)
            top = cand[np.argsort(-sc[t, cand], kind="mergesort")[: p["k"]]]
            out[t] = 0.0
            out[t, top] = 1.0 / len(top)
        return out


def _require(template: Any, p: Mapping[str, Any]) -> None:
    unknown = [str(n) for n in p if n not in template.param_names]
    if unknown:  # first: a misspelled name is also a missing one
        raise unknown_parameters_error(template, unknown)
    missing = [n for n in template.param_names if n not in p]
    if missing:
        raise BacktestError(
            f"{template.name}: missing parameter(s) {', '.join(missing)} "
            f"(parameters: {', '.join(template.param_names)})"
        )


STRATEGIES: dict[str, type] = {
    cls.name: cls for cls in (MACrossover, RSIThreshold, BollingerBands, MomentumTopK)
}


def get_strategy(name: str | Any) -> Any:
    """The template called ``name`` (``ma_cross``, ``rsi``, ``bollinger``, ``momentum_topk``).

    A template object passes through unchanged.

    Raises
    ------
    BacktestError
        For an unknown name.

    Examples
    --------
    >>> get_strategy("rsi").param_names
    ('window', 'lower', 'upper')
    >>> try:
    ...     get_strategy("macd")
    ... except BacktestError as exc:
    ...     print(exc)
    unknown strategy 'macd' (known: ma_cross, rsi, bollinger, momentum_topk)
    >>> try:
    ...     get_strategy("ma_crss")
    ... except BacktestError as exc:
    ...     print(str(exc)[:53])
    unknown strategy 'ma_crss' (did you mean 'ma_cross'?)
    """
    if not isinstance(name, str):
        return name
    try:
        return STRATEGIES[name]()
    except KeyError:
        raise BacktestError(
            f"unknown strategy {name!r}{did_you_mean(name, STRATEGIES)} "
            f"(known: {', '.join(STRATEGIES)})"
        ) from None


def list_strategies() -> pd.DataFrame:
    """The strategy templates with their parameters, defaults, mode and rule.

    One row per template: ``name``, ``mode`` (``signals``: one account per symbol;
    ``portfolio``: one shared account), ``parameters`` (names in order, required ones
    without a default marked ``*``), ``defaults`` (a dict) and ``description``.
    ``qilin backtest strategies`` prints it.

    Examples
    --------
    >>> t = list_strategies()
    >>> t["name"].tolist()
    ['ma_cross', 'rsi', 'bollinger', 'momentum_topk']
    >>> t.set_index("name").loc["ma_cross", "parameters"], t.loc[0, "defaults"]
    ('fast*, slow*, ma', {'ma': 'sma'})
    """
    rows = []
    for name, cls in STRATEGIES.items():
        tpl = cls()
        defaults = dict(tpl.defaults)
        rows.append({
            "name": name,
            "mode": "signals" if hasattr(tpl, "signals") else "portfolio",
            "parameters": ", ".join(n if n in defaults else f"{n}*" for n in tpl.param_names),
            "defaults": defaults,
            "description": (cls.__doc__ or "").strip().splitlines()[0].replace("``", ""),
        })
    return pd.DataFrame(rows)
