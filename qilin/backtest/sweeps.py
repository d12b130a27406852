"""Mass parameter sweeps: grids, batched fused simulation on CPU/GPU/Dask, tidy results.

A sweep runs every parameter combination of a strategy template over every symbol of a
Panel in one batched computation. Indicators are computed once per distinct window; the
fused kernel (:mod:`~qilin.backtest.sweep_kernels_cpu`; on a GPU the same column cores compiled
by numba-cuda, :mod:`~qilin.backtest.sweep_kernels_gpu`) walks each (combination, symbol)
column through time under the pinned signal-mode semantics of
:func:`qilin.backtest.engine.run_signals` (costs, lots, T+1, price limits, suspensions,
zero-volume bars, corporate actions) and only writes, per combination, the daily change of
its combined equity plus trade counters; metrics follow from those.

**A combination's result** is the combined account of its per-symbol strategies: each
symbol is a sub-account with ``init_cash``, and the combination's equity is their sum, as
``qilin backtest run`` aggregates a ``run_signals`` result (``equity.sum(axis=1)``; daily
return ``equity_t / equity_{t-1} - 1``, 0 on the first day). A sweep row therefore equals
``backtest run`` with the same strategy, parameters, market and data. Metrics (empyrical
definitions, as :mod:`qilin.backtest.metrics`): ``total_return annual_return
annual_volatility sharpe_ratio sortino_ratio max_drawdown calmar_ratio`` of that return
series, plus ``n_trades`` (orders filled, all symbols), ``win_rate`` (share of round
trips, flat to flat, whose net sale proceeds beat their total buy cost: unlike
``BacktestResult.metrics`` it counts trades, not days), ``turnover`` (mean over symbols and
days of traded notional / previous day's equity) and ``exposure`` (mean over symbols and
days of position value / equity), the last two as in ``BacktestResult.metrics``.

``momentum_topk`` combinations run through the portfolio engine's state machine
(:func:`~qilin.backtest.sweep_kernels_cpu.topk_portfolio_sweep_nb`): a row equals
``run_portfolio(panel, weights=MomentumTopK().targets(panel, ...), rebalance=1)``, which
is what ``backtest run --strategy momentum_topk`` runs; ``turnover`` and ``exposure`` are
that account's daily means, ``win_rate`` is not computed (NaN).

Work is tiled: combinations in parameter tiles (one Dask task each with ``client``), symbols
in blocks sized so the indicator stack of a tile fits ``memory_budget``.

Examples
--------
>>> parse_grid("fast=5:20:5 slow=30,60 ma=sma")
{'fast': [5, 10, 15, 20], 'slow': [30, 60], 'ma': ['sma']}
>>> from qilin.data.synthetic import synthetic_market
>>> res = run_sweep(synthetic_market(6, 120, seed=3), "ma_cross",
...                 "fast=5,10 slow=20,40", market="cn", backend="cpu")
>>> len(res.table), list(res.table.columns[:3])
(4, ['fast', 'slow', 'ma'])
"""

from __future__ import annotations

import itertools
import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from qilin.atomic import atomic_path
from qilin.backend import (
    Backend,
    BackendName,
    DeviceKernel,
    get_backend,
    task_numba_threads,
    to_host,
)
from qilin.backtest import sweep_kernels_cpu as kcpu
from qilin.backtest import sweep_kernels_gpu as kgpu
from qilin.backtest.rules import MarketRules, trading_arrays
from qilin.backtest.signal import check_not_empty, execution_inputs
from qilin.backtest.strategies import (
    MomentumTopK,
    StrategyTemplate,
    compute_stack,
    get_strategy,
    signal_close,
    unknown_parameters_error,
)
from qilin.config import MarketConfig, load_market
from qilin.data.panel import Panel
from qilin.errors import BacktestError

if TYPE_CHECKING:
    from qilin.data.blocks import ParquetSource

METRICS = (*kcpu.METRIC_NAMES, "n_trades", "win_rate", "turnover", "exposure")
#: Metrics where smaller is better (``best`` sorts them ascending).
LOWER_IS_BETTER = frozenset({"annual_volatility", "turnover"})
DEFAULT_MEMORY_BUDGET = 1 << 28


# ------------------------------------------------------------------------------- grids
#: How a grid is written, quoted by every grid error.
GRID_SYNTAX = ('write name=start:stop:step or name=v1,v2,... separated by spaces, e.g. '
               '"fast=5:50:5 slow=60,120 ma=sma,ema"')
#: Most values one range may expand to, and most combinations a grid may have.
MAX_GRID_VALUES = 1_000_000
MAX_COMBINATIONS = 10_000_000
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_DASH_RANGE = re.compile(r"[+-]?\d+(\.\d*)?\s*-\s*[+-]?\d+(\.\d*)?\Z")


def _grid_error(token: str, problem: str) -> BacktestError:
    return BacktestError(f"grid {token!r}: {problem}; {GRID_SYNTAX}")


def _parse_value(text: str, token: str = "") -> int | float | str:
    for cast in (int, float):
        try:
            value = cast(text)
        except ValueError:
            continue
        if not math.isfinite(value):
            raise _grid_error(token or text, f"value {text!r} is not a finite number")
        return value
    if _DASH_RANGE.match(text):
        raise _grid_error(token or text, f"{text!r} is not a value (a range uses colons, "
                                         "start:stop:step)")
    return text


def _parse_range(name: str, spec: str) -> list[int | float]:
    token = f"{name}={spec}"
    parts = spec.split(":")
    if len(parts) != 3 or any(p == "" for p in parts):
        raise _grid_error(token, "a range is start:stop:step (three numbers)")
    vals = [_parse_value(p, token) for p in parts]
    if any(isinstance(v, str) for v in vals):
        raise _grid_error(token, "range bounds and step must be numbers")
    start, stop, step = vals
    if step <= 0:
        raise _grid_error(token, f"the step must be positive, got {step}")
    if stop < start:
        raise _grid_error(token, f"the range is reversed (stop {stop} < start {start})")
    n = math.floor((stop - start) / step + 1e-9) + 1
    if n > MAX_GRID_VALUES:
        raise _grid_error(token, f"the range has {n:,} values (at most {MAX_GRID_VALUES:,})")
    if all(isinstance(v, int) for v in vals):
        return [int(start + i * step) for i in range(n)]
    return [round(start + i * step, 12) for i in range(n)]


def parse_grid(text: str) -> dict[str, list[Any]]:
    """Parse ``"fast=5:50:5 slow=60:250:10 ma=sma,ema"`` into lists of values.

    ``start:stop:step`` includes ``stop`` when it lands on it; ``a,b,c`` lists values;
    integers, floats and words are recognised per value.

    Raises
    ------
    BacktestError
        On any malformed token (no ``=``, an empty name or value, a repeated name, a range
        that is not three numbers, a step <= 0, a reversed range, ``5-50``, NaN/inf, more
        than :data:`MAX_GRID_VALUES` values); the message quotes :data:`GRID_SYNTAX`.

    Examples
    --------
    >>> parse_grid("k=1.5:2.5:0.5 mode=reversion")
    {'k': [1.5, 2.0, 2.5], 'mode': ['reversion']}
    >>> parse_grid("fast=5:12:5")
    {'fast': [5, 10]}
    >>> try:
    ...     parse_grid("fast=5-50")
    ... except BacktestError as exc:
    ...     print(str(exc).split(";")[0])
    grid 'fast=5-50': '5-50' is not a value (a range uses colons, start:stop:step)
    """
    if not isinstance(text, str):
        raise BacktestError(f"the grid must be a string, got {type(text).__name__}; "
                            f"{GRID_SYNTAX}")
    out: dict[str, list[Any]] = {}
    for token in text.split():
        name, eq, spec = token.partition("=")
        if not eq:
            raise _grid_error(token, "expected name=values")
        if not name:
            raise _grid_error(token, "the parameter name is missing before '='")
        if not spec:
            raise _grid_error(token, f"no values after '{name}='")
        if not _NAME.match(name):
            raise _grid_error(token, f"{name!r} is not a parameter name")
        if name in out:
            raise _grid_error(token, f"parameter {name!r} is given twice")
        if ":" in spec:
            out[name] = _parse_range(name, spec)
        else:
            items = spec.split(",")
            if any(v == "" for v in items):
                raise _grid_error(token, "an empty value in the list (stray comma)")
            out[name] = [_parse_value(v, token) for v in items]
    if not out:
        raise BacktestError(f"empty parameter grid; {GRID_SYNTAX}")
    return out


@dataclass
class ParameterGrid:
    """Parameter values and how to combine them.

    Parameters
    ----------
    params : mapping of name to list of values, or a grid string for :func:`parse_grid`
    kind : {"product", "zip", "random"}
        ``product``: every combination; ``zip``: the i-th values together (lists of equal
        length, or length 1 broadcast); ``random``: ``n`` distinct combinations of the
        product drawn with ``seed``.

    Examples
    --------
    >>> g = ParameterGrid({"fast": [5, 10], "slow": [10, 20]})
    >>> [tuple(c.values()) for c in g.combinations()]
    [(5, 10), (5, 20), (10, 10), (10, 20)]
    >>> [tuple(c.values()) for c in g.combinations(get_strategy("ma_cross"))]
    [(5, 10, 'sma'), (5, 20, 'sma'), (10, 20, 'sma')]
    >>> len(ParameterGrid("fast=1:10:1 slow=11:20:1", kind="random", n=7, seed=0))
    7
    """

    params: Mapping[str, Sequence[Any]] | str
    kind: Literal["product", "zip", "random"] = "product"
    n: int | None = None
    seed: int | None = None
    values: dict[str, list[Any]] = field(init=False)

    def __post_init__(self) -> None:
        raw = parse_grid(self.params) if isinstance(self.params, str) else self.params
        self.values = {k: list(v) if isinstance(v, list | tuple | np.ndarray | range) else [v]
                       for k, v in raw.items()}
        if self.kind not in ("product", "zip", "random"):
            raise BacktestError(f"grid kind={self.kind!r} must be product, zip or random")
        for k, v in self.values.items():
            if not v:
                raise BacktestError(f"grid parameter {k!r} has no values")
        if self.kind == "zip":
            lengths = {len(v) for v in self.values.values() if len(v) != 1}
            if len(lengths) > 1:
                raise BacktestError(
                    "zip grid needs lists of one length: "
                    + ", ".join(f"{k}={len(v)}" for k, v in self.values.items()))
        if self.kind == "random" and (self.n is None or self.n < 1):
            raise BacktestError("random grid needs n >= 1")

    def _raw(self) -> list[dict[str, Any]]:
        names = list(self.values)
        total = math.prod(len(v) for v in self.values.values())
        if self.kind != "zip" and total > MAX_COMBINATIONS:
            raise BacktestError(f"the grid has {total:,} combinations (at most "
                                f"{MAX_COMBINATIONS:,}): use coarser steps or fewer values")
        if self.kind == "zip":
            n = max(len(v) for v in self.values.values())
            return [{k: (v[i] if len(v) > 1 else v[0]) for k, v in self.values.items()}
                    for i in range(n)]
        combos = [dict(zip(names, vals, strict=True))
                  for vals in itertools.product(*self.values.values())]
        if self.kind == "random":
            rng = np.random.default_rng(self.seed)
            pick = rng.choice(len(combos), size=min(self.n or 0, len(combos)), replace=False)
            combos = [combos[i] for i in sorted(pick)]
        return combos

    def combinations(self, template: Any = None) -> list[dict[str, Any]]:
        """The combinations as dicts; with a template, completed and invalid ones dropped."""
        combos = self._raw()
        if template is None:
            return combos
        unknown = [str(k) for k in self.values if k not in template.param_names]
        if unknown:
            raise unknown_parameters_error(template, unknown)
        return [template.check(c) for c in combos if template.is_valid(c)]

    def __len__(self) -> int:
        return len(self._raw())


# ------------------------------------------------------------------------ market arrays
@dataclass
class SweepMarket:
    """Host arrays a sweep tile needs, shipped once per worker (``(symbols, dates)``)."""

    dates: pd.DatetimeIndex
    symbols: pd.Index
    #: Raw close, the price orders fill at and positions are marked at; NaN where the bar is
    #: missing or suspended.
    close: np.ndarray
    #: int8 rejection codes of :func:`~qilin.backtest.rules.trading_arrays` (0: allowed).
    buy_reject: np.ndarray
    sell_reject: np.ndarray
    adj_ratio: np.ndarray
    signal_px: np.ndarray
    market: MarketConfig
    #: Portfolio-engine inputs (``dates x symbols``: exec_price, close, adj_ratio,
    #: buy_reject, sell_reject, valid) for portfolio sweeps (``momentum_topk``); None for
    #: signal sweeps.
    portfolio: dict[str, np.ndarray] | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.close.shape


def _resolve_market(market: str | MarketConfig) -> MarketConfig:
    return load_market(market) if isinstance(market, str) else market


def prepare_market(panel: Panel, market: str | MarketConfig = "cn",
                   portfolio: bool = False) -> SweepMarket:
    """Trading arrays of ``panel`` under ``market`` rules (see module docstring).

    With ``portfolio`` the portfolio engine's execution inputs are added (for
    ``momentum_topk``).

    Examples
    --------
    >>> from qilin.data.synthetic import synthetic_market
    >>> m = prepare_market(synthetic_market(3, 30, seed=1), "cn")
    >>> m.shape
    (3, 30)
    """
    check_not_empty(panel)
    mc = _resolve_market(market)
    rules = MarketRules.from_market(mc)
    arrays = trading_arrays(panel, rules, "close")
    engine = None
    if portfolio:
        engine = execution_inputs(panel, rules, "close")
        engine["valid"] = np.ascontiguousarray(to_host(panel.valid))

    def by_symbol(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a.T)

    return SweepMarket(
        panel.dates, panel.symbols, by_symbol(arrays.price), by_symbol(arrays.buy_reject),
        by_symbol(arrays.sell_reject), by_symbol(arrays.adj_ratio),
        by_symbol(signal_close(panel)), mc, engine,
    )


# ------------------------------------------------------------------------- tile runners
def _rule_arrays(template: StrategyTemplate, combos: list[dict[str, Any]]
                 ) -> tuple[list[tuple[str, int]], np.ndarray, np.ndarray]:
    keys: list[tuple[str, int]] = []
    pos: dict[tuple[str, int], int] = {}
    idx = np.full((len(combos), 4, 2), -1, dtype=np.int64)
    coef = np.zeros((len(combos), 4, 2))
    for c, params in enumerate(combos):
        for s, (base, scaled, k, const) in enumerate(template.sides(params)):
            for slot, key in ((0, base), (1, scaled)):
                if key is None:
                    continue
                if key not in pos:
                    pos[key] = len(keys)
                    keys.append(key)
                idx[c, s, slot] = pos[key]
            coef[c, s] = (k, const)
    return keys, idx, coef


def symbol_block_size(n_series: int, n_symbols: int, n_dates: int,
                      memory_budget: int | None) -> int:
    """Symbols per block so that the indicator stack plus trading arrays fit the budget.

    Examples
    --------
    >>> symbol_block_size(10, 500, 1000, 10 * 8 * 1000 * 100)
    69
    """
    budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else int(memory_budget)
    per_symbol = (n_series + 1) * n_dates * 8 + n_dates * 27
    return int(max(1, min(n_symbols, budget // per_symbol)))


def _simulate_block_cpu(S: np.ndarray, idx: np.ndarray, coef: np.ndarray, close: np.ndarray,
                        buy_reject: np.ndarray, sell_reject: np.ndarray, adj_ratio: np.ndarray,
                        args: tuple, port: np.ndarray, counters: np.ndarray, group: int,
                        order: np.ndarray) -> None:
    kcpu.simulate_signals_nb(S, idx, coef, close, buy_reject, sell_reject, adj_ratio, *args,
                             port, counters, group, order)


#: The fused signal-sweep kernel on one symbol block, for NumPy (numba, CPU) or CuPy (GPU)
#: arrays: :func:`~qilin.backtest.sweep_kernels_cpu.simulate_signals_nb` or
#: :func:`~qilin.backtest.sweep_kernels_gpu.simulate_block`, the same column cores.
simulate_block = DeviceKernel("simulate_block", cpu=_simulate_block_cpu,
                              gpu=kgpu.simulate_block)


def _signal_port(m: SweepMarket, template: StrategyTemplate, combos: list[dict[str, Any]],
                 backend: str, memory_budget: int | None, lag: int, init_cash: float
                 ) -> tuple[np.ndarray, np.ndarray, str]:
    """Daily returns (C, T) of each combination's combined account, and counters (C, 5)."""
    pnl, counters, used = signal_pnl(m, template, combos, backend, memory_budget, lag,
                                     init_cash)
    return kcpu.pnl_returns(pnl, m.shape[0] * float(init_cash)), counters, used


def signal_pnl(m: SweepMarket, template: StrategyTemplate, combos: list[dict[str, Any]],
               backend: str, memory_budget: int | None, lag: int, init_cash: float
               ) -> tuple[np.ndarray, np.ndarray, str]:
    """Daily equity changes (C, T) of each combination's combined account (summed over
    ``m``'s symbols), counters (C, 5) and the backend the kernel ran on.

    Equity changes add across symbol blocks, so a market processed block by block sums
    them (:mod:`qilin.backtest.market_blocks`).
    """
    be = get_backend(backend)
    keys, idx, coef = _rule_arrays(template, combos)
    N, T = m.shape
    mc = m.market
    args = (lag, float(init_cash), float(mc.lot_size), float(mc.commission_rate),
            float(mc.min_commission), float(mc.slippage_bps) / 1e4, float(mc.stamp_duty_rate),
            bool(mc.t_plus_one))
    block = symbol_block_size(len(keys), N, T, memory_budget)
    block = -(-N // -(-N // block))  # equal blocks
    group = kcpu.combo_group(len(combos))
    order = kcpu.deal_groups(kcpu.combo_order(idx), group)
    idx_d, coef_d, order_d = (be.asarray(a) for a in (idx, coef, order))
    port = be.xp.zeros((len(combos), T))
    counters = be.xp.zeros((len(combos), len(kcpu.COUNTER_NAMES)))
    memory = np.empty((len(keys) + 1) * block * T)  # reused by every symbol block
    for lo in range(0, N, block):
        sl = slice(lo, min(N, lo + block))
        S = memory[:(len(keys) + 1) * (sl.stop - lo) * T].reshape(len(keys) + 1, -1, T)
        compute_stack(keys, m.signal_px[sl], S)
        S[-1] = 0.0
        simulate_block(be.asarray(S), idx_d, coef_d,
                       *(be.asarray(a[sl]) for a in (m.close, m.buy_reject, m.sell_reject,
                                                     m.adj_ratio)),
                       args, port, counters, group, order_d)
    return to_host(port), to_host(counters), be.name


def _metrics_table(combos: list[dict[str, Any]], port: np.ndarray, counters: np.ndarray | None,
                   n_cells: int, periods_per_year: float) -> pd.DataFrame:
    met = kcpu.returns_metrics_nb(np.ascontiguousarray(port), float(periods_per_year))
    table = pd.DataFrame(combos)
    for i, name in enumerate(kcpu.METRIC_NAMES):
        table[name] = met[:, i]
    if counters is None:
        for name in ("n_trades", "win_rate", "exposure"):
            table[name] = np.nan
        return table
    with np.errstate(invalid="ignore", divide="ignore"):
        table["n_trades"] = counters[:, 0].astype(np.int64)
        table["win_rate"] = np.where(counters[:, 2] > 0, counters[:, 1] / counters[:, 2], np.nan)
    table["turnover"] = counters[:, 3] / n_cells
    table["exposure"] = counters[:, 4] / n_cells
    return table


def _topk_port(m: SweepMarket, combos: list[dict[str, Any]], lag: int, init_cash: float,
               backend: str | Backend = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Daily returns (C, T) and counters (C, 3) of momentum top-k combinations, each run
    through the portfolio engine (:func:`~qilin.backtest.sweep_kernels_cpu
    .topk_portfolio_sweep_nb`).

    On a GPU ``backend`` the rankings and the combinations run in the GPU kernels compiled
    from the same cores (one thread per ranking, one per combination); the momentum scores
    are computed on the host and the results come back to it.
    """
    if m.portfolio is None:
        raise BacktestError("momentum_topk sweeps need prepare_market(..., portfolio=True)")
    be = get_backend(backend)
    mc = m.market
    e = m.portfolio
    lookbacks = sorted({c["lookback"] for c in combos})
    scores = np.stack([kcpu.momentum_nb(m.signal_px, lb).T for lb in lookbacks])
    table = np.array([(lookbacks.index(c["lookback"]), c["k"], c["rebalance"])
                      for c in combos], dtype=np.int64).reshape(-1, 3)
    T = m.shape[1]
    needed = np.zeros(T, dtype=np.bool_)
    for r in set(table[:, 2].tolist()):
        needed[::r] = True
    arrays = (scores, e["valid"], needed, table, e["exec_price"], e["close"], e["adj_ratio"],
              e["buy_reject"], e["sell_reject"])
    scores, valid, needed, table, exec_price, close, ratio, buy_reject, sell_reject = (
        be.asarray(a) for a in arrays)
    xp = be.xp
    ranked = xp.zeros((len(lookbacks), T, int(max(c["k"] for c in combos))), dtype=np.int64)
    n_candidates = xp.zeros((len(lookbacks), T), dtype=np.int64)
    kcpu.topk_candidates(scores, valid, needed, ranked, n_candidates)
    port = xp.zeros((len(combos), T))
    counters = xp.zeros((len(combos), len(kcpu.TOPK_COUNTER_NAMES)))
    kcpu.topk_portfolio_sweep(
        ranked, n_candidates, table, int(lag), exec_price, close, ratio, buy_reject, sell_reject,
        float(init_cash), float(mc.commission_rate), float(mc.min_commission),
        float(mc.slippage_bps) / 1e4, float(mc.stamp_duty_rate), float(mc.lot_size), port,
        counters)
    return to_host(port), to_host(counters)


def run_tile(m: SweepMarket, strategy: str | Any, combos: list[dict[str, Any]],
             backend: str = "auto", memory_budget: int | None = None, lag: int = 0,
             init_cash: float = 1e6) -> pd.DataFrame:
    """Metrics table of one parameter tile (the unit of work of a distributed sweep).

    The ``backend`` is resolved where the tile runs, so ``"auto"`` uses a worker's GPU. On a
    Dask worker the CPU kernels run single-threaded (the cluster runs one tile per thread).
    """
    with task_numba_threads():
        return _run_tile(m, strategy, combos, backend, memory_budget, lag, init_cash)


def _run_tile(m: SweepMarket, strategy: str | Any, combos: list[dict[str, Any]], backend: str,
              memory_budget: int | None, lag: int, init_cash: float) -> pd.DataFrame:
    template = get_strategy(strategy)
    N, T = m.shape
    if isinstance(template, MomentumTopK):
        port, counters = _topk_port(m, combos, lag, init_cash, backend)
        table = _metrics_table(combos, port, None, T, m.market.periods_per_year)
        table["n_trades"] = counters[:, 0].astype(np.int64)
        table["turnover"] = counters[:, 1] / T
        table["exposure"] = counters[:, 2] / T
        table["backend"] = get_backend(backend).name
        return table
    port, counters, used = _signal_port(m, template, combos, backend, memory_budget, lag,
                                        init_cash)
    table = _metrics_table(combos, port, counters, N * T, m.market.periods_per_year)
    table["backend"] = used
    return table


# ------------------------------------------------------------------------------ results
@dataclass
class SweepResult:
    """A sweep's tidy table (one row per combination: parameters then metrics).

    Attributes
    ----------
    table : DataFrame
    strategy : str
    param_names : tuple of str
    backend : str
        Where the kernels ran (``cpu``, ``gpu``, or ``cpu,gpu`` on a mixed cluster).
    elapsed_s : float
    shape : (dates, symbols)
    """

    table: pd.DataFrame
    strategy: str
    param_names: tuple[str, ...]
    backend: str
    elapsed_s: float
    shape: tuple[int, int]

    @property
    def cell_steps(self) -> int:
        """``dates x symbols x combinations`` simulated."""
        return self.shape[0] * self.shape[1] * len(self.table)

    def _check_metric(self, metric: str) -> None:
        if metric not in self.table.columns:
            raise BacktestError(f"unknown metric {metric!r} (columns: {list(self.table.columns)})")

    def best(self, metric: str = "sharpe_ratio", n: int = 10,
             ascending: bool | None = None) -> pd.DataFrame:
        """The ``n`` best combinations by ``metric`` (NaN last)."""
        self._check_metric(metric)
        asc = metric in LOWER_IS_BETTER if ascending is None else ascending
        return self.table.sort_values(metric, ascending=asc, na_position="last",
                                      kind="mergesort").head(n)

    def best_params(self, metric: str = "sharpe_ratio") -> dict[str, Any]:
        """Parameters of the best combination by ``metric``."""
        row = self.best(metric, 1)
        if row.empty:
            raise BacktestError("the sweep has no combinations")
        return {k: _py(row[k].iloc[0]) for k in self.param_names}

    def summary(self, metric: str = "sharpe_ratio") -> str:
        """One line: combinations run, speed and the best parameters with their metrics."""
        row = self.best(metric, 1).iloc[0]
        params = ", ".join(f"{k}={v}" for k, v in self.best_params(metric).items())
        figures = ", ".join(f"{k}={row[k]:.4g}" for k in
                            ("sharpe_ratio", "annual_return", "max_drawdown") if k in row)
        rate = self.cell_steps / self.elapsed_s if self.elapsed_s > 0 else float("nan")
        return (f"{self.strategy}: {len(self.table)} combinations x {self.shape[1]} symbols x "
                f"{self.shape[0]} dates on {self.backend} in {self.elapsed_s:.2f}s "
                f"({rate:.3g} cell-steps/s); best by {metric}: {params} ({figures})")

    def heatmap(self, x: str, y: str, metric: str = "sharpe_ratio",
                path: str | Path | None = None, agg: str = "max") -> pd.DataFrame:
        """Pivot ``metric`` over parameters ``x`` (columns) and ``y`` (rows); save a PNG.

        Other parameters are aggregated with ``agg`` (best value by default). Returns the
        pivot table; the PNG is written atomically when ``path`` is given.
        """
        self._check_metric(metric)
        for p in (x, y):
            if p not in self.param_names:
                raise BacktestError(f"heatmap axis {p!r} is not a parameter {self.param_names}")
        pivot = self.table.pivot_table(index=y, columns=x, values=metric, aggfunc=agg)
        if path is not None:
            from matplotlib.figure import Figure  # no pyplot: leaves the session's backend alone

            fig = Figure(figsize=(max(4, 0.4 * pivot.shape[1] + 2),
                                  max(3, 0.3 * pivot.shape[0] + 2)))
            ax = fig.subplots()
            im = ax.imshow(pivot.to_numpy(dtype=float), aspect="auto", origin="lower",
                           cmap="viridis")
            ax.set_xticks(range(pivot.shape[1]), [str(v) for v in pivot.columns], rotation=90)
            ax.set_yticks(range(pivot.shape[0]), [str(v) for v in pivot.index])
            ax.set_xlabel(x)
            ax.set_ylabel(y)
            ax.set_title(f"{self.strategy}: {metric}\n({agg} over other parameters)")
            fig.colorbar(im, ax=ax, label=metric)
            fig.tight_layout()
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
        return pivot

    def to_parquet(self, path: str | Path) -> Path:
        """Write the table to Parquet atomically; returns the path."""
        with atomic_path(path) as tmp:
            self.table.to_parquet(tmp, index=False)
        return Path(path)


def _py(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


# -------------------------------------------------------------------------------- entry
def _as_grid(grid: ParameterGrid | Mapping[str, Any] | str) -> ParameterGrid:
    if isinstance(grid, ParameterGrid):
        return grid
    return ParameterGrid(grid)


def _tiles(combos: list[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    return [combos[i:i + size] for i in range(0, len(combos), size)]


#: Fewest cell-steps a cluster tile gets when there are more than enough for every thread
#: (about half a second of one core): smaller tiles cost more in per-tile work (the indicator
#: stack, scheduling) than they gain in balance.
TILE_CELLS = 10**9


def cluster_tile_size(n_combos: int, shape: tuple[int, int], client: Any) -> int:
    """Combinations per tile on ``client``'s cluster: one tile per worker thread, up to four
    per thread while every tile keeps at least :data:`TILE_CELLS` cell-steps.

    Examples
    --------
    >>> class FakeClient:
    ...     def scheduler_info(self):
    ...         return {"workers": {"a": {"nthreads": 1}, "b": {"nthreads": 1}}}
    >>> cluster_tile_size(260, (2520, 500), FakeClient())  # 3.3e8 cell-steps: one tile each
    130
    >>> cluster_tile_size(10_000, (2520, 500), FakeClient())  # 1.3e10: four tiles each
    1250
    """
    workers = client.scheduler_info().get("workers", {})
    threads = max(1, sum(int(w.get("nthreads", 1)) for w in workers.values()))
    cells = n_combos * shape[0] * shape[1]
    n_tiles = int(min(4 * threads, max(threads, cells // TILE_CELLS)))
    return max(1, math.ceil(n_combos / n_tiles))


def run_sweep(
    panel: Panel | str | os.PathLike[str] | ParquetSource,
    strategy: str | Any,
    grid: ParameterGrid | Mapping[str, Any] | str,
    market: str | MarketConfig = "cn",
    backend: BackendName = "auto",
    client: Any = None,
    tile_size: int | None = None,
    memory_budget: int | None = None,
    lag: int = 0,
    init_cash: float = 1e6,
    progress: bool = False,
    block_symbols: int | None = None,
) -> SweepResult:
    """Run every combination of ``grid`` for ``strategy`` over ``panel``.

    Parameters
    ----------
    panel : Panel, or a Parquet path (file, folder, glob) or ParquetSource of long bars
        A path is read one symbol block at a time, by the tasks themselves on a cluster, so
        the market never passes through the client
        (:mod:`qilin.backtest.market_blocks`): signal sweeps run per (block, tile) and add
        the blocks' equities on the workers (metrics equal the Panel's to rounding);
        ``momentum_topk`` needs every symbol of a date, so its market is read whole by one
        worker (equal bit for bit).
    strategy : str or template
        ``ma_cross``, ``rsi``, ``bollinger`` (signal mode, fused kernel) or
        ``momentum_topk`` (portfolio sweep kernel, CPU).
    grid : ParameterGrid, mapping or grid string
        Invalid combinations (e.g. ``fast >= slow``) are dropped.
    market : "cn", "us" or MarketConfig
    backend : {"auto", "cpu", "gpu"}
        Where the fused kernel runs; with ``client`` it is resolved on each worker.
    client : distributed.Client, optional
        Spread parameter tiles over the cluster (market arrays are sent once, as a task
        result that is recomputed if its worker dies; the wait is bounded by
        ``cluster.task_timeout_s``).
    tile_size : int, optional
        Combinations per tile (default: all locally; on a cluster see
        :func:`cluster_tile_size`).
    memory_budget : int, optional
        Bytes for a tile's indicator stack (default 256 MiB); sets the symbol block size.
    lag : int
        Execution lag in bars (signal at close t, trade at close t+lag).
    init_cash : float
        Capital of each (combination, symbol) sub-account.
    progress : bool
        Show a tqdm bar over completed tiles.
    block_symbols : int, optional
        With a path: symbols per block (default: from ``memory_budget``,
        :func:`~qilin.backtest.market_blocks.sweep_block_symbols`).

    Raises
    ------
    BacktestError
        No valid combination, unknown parameters, negative lag.
    DataError
        With a path: unreadable files, or no ``close`` column.
    ClusterError
        With ``client``: the scheduler was lost or no tile finished within
        ``cluster.task_timeout_s`` (lost workers are survived: their tiles are rerun).
    """
    if lag < 0:
        raise BacktestError(f"lag={lag} must be >= 0")
    template = get_strategy(strategy)
    combos = _as_grid(grid).combinations(template)
    if not combos:
        raise BacktestError(f"the grid has no valid combination for strategy {template.name!r}")
    if not isinstance(panel, Panel):
        from qilin.backtest.market_blocks import sweep_source

        return sweep_source(panel, template, combos, _resolve_market(market), backend, client,
                            tile_size, memory_budget, lag, init_cash, progress, block_symbols)
    t0 = time.perf_counter()
    m = prepare_market(panel, market, portfolio=isinstance(template, MomentumTopK))
    if client is None:
        size = tile_size or len(combos)
        if not tile_size:  # keep the (combinations x dates) accumulator within budget
            budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else memory_budget
            size = max(1, min(len(combos), int(budget // 4 // (8 * m.shape[1] + 1))))
        tiles = _tiles(combos, size)
        iterator: Any = tiles
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(tiles, desc=f"sweep {template.name}", unit="tile")
        parts = [run_tile(m, template.name, t, backend, memory_budget, lag, init_cash)
                 for t in iterator]
    else:
        from qilin.cluster_tasks import gather_within, hold

        size = tile_size or cluster_tile_size(len(combos), m.shape, client)
        tiles = _tiles(combos, size)
        # held, not scattered: a worker lost with the market arrays gets them recomputed
        m_future = hold(client, m)
        futures = client.map(run_tile, [m_future] * len(tiles), [template.name] * len(tiles),
                             tiles, backend=backend, memory_budget=memory_budget, lag=lag,
                             init_cash=init_cash, pure=False)
        parts = gather_within(client, futures, what=f"sweep {template.name}",
                              progress=f"sweep {template.name}" if progress else None)
    table = pd.concat(parts, ignore_index=True)
    used = ",".join(sorted(set(table.pop("backend"))))
    return SweepResult(table, template.name, template.param_names, used,
                       time.perf_counter() - t0, panel.shape)


def combination_returns(panel: Panel, strategy: str | Any, params: Mapping[str, Any],
                        market: str | MarketConfig = "cn", lag: int = 0,
                        init_cash: float = 1e6, backend: BackendName = "cpu") -> pd.Series:
    """Daily returns of one combination's combined account (the equity curve's source).

    Equal to the returns of the summed equity of ``run_signals`` on the template's signals
    (``run_portfolio`` on its targets for ``momentum_topk``).
    """
    template = get_strategy(strategy)
    m = prepare_market(panel, market, portfolio=isinstance(template, MomentumTopK))
    if isinstance(template, MomentumTopK):
        port, _ = _topk_port(m, [template.check(params)], lag, init_cash, backend)
    else:
        port, _, _ = _signal_port(m, template, [template.check(params)], backend, None, lag,
                                  init_cash)
    return pd.Series(to_host(port[0]), index=panel.dates, name="returns")
