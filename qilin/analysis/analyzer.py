"""DistributedStockAnalyzer: per-symbol analysis, backtests and parameter search on Dask.

From a Panel, the data is shipped to the cluster once, in symbol blocks: each block is sent
to one worker as a task result that the scheduler recomputes if that worker dies (never the
whole dataset to every task). From a Parquet path (or a
:class:`~qilin.data.blocks.ParquetSource`) nothing but task descriptions and small results
passes through the client: a worker scans the date and symbol columns, and every task reads
its own block's symbols and columns from the files (which every worker must reach at the
same path). Backtests sum the blocks' equity on the workers in block order, so a path and the
Panel loaded from it give identical results; ``momentum_topk`` ranks every symbol of a date,
so its market is read whole by one worker (:mod:`qilin.backtest.market_blocks`).

Per-symbol user functions that raise are reported (symbol, error, traceback) in ``.errors``
and do not sink the run. Every wait is bounded by ``cluster.task_timeout_s``
(:func:`qilin.cluster_tasks.gather_within`): a lost worker gives the same result, a lost
scheduler a :class:`~qilin.errors.ClusterError`.

Examples
--------
>>> from distributed import Client, LocalCluster
>>> from qilin.data.synthetic import synthetic_market
>>> with LocalCluster(n_workers=1, processes=False,
...                   dashboard_address="127.0.0.1:0") as cluster, \\
...         Client(cluster) as client:
...     an = DistributedStockAnalyzer(client, synthetic_market(4, 30, seed=1))
...     out = an.analyze_stocks_parallel(lambda f: {"n": len(f)}, block_size=2)
>>> out["n"].tolist(), len(out.errors)
([19, 30, 30, 30], 0)
"""

from __future__ import annotations

import math
import os
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from qilin.backend import task_numba_threads
from qilin.backtest.market_blocks import market_axes, open_source, read_trading_block
from qilin.backtest.result import equity_returns
from qilin.backtest.strategies import MomentumTopK, get_strategy
from qilin.backtest.sweeps import ParameterGrid, SweepResult, run_sweep
from qilin.config import MarketConfig, load_market
from qilin.data.blocks import ParquetSource, read_frame
from qilin.data.panel import Panel
from qilin.errors import BacktestError, DataError

ERROR_COLUMNS = ("symbol", "error", "message", "traceback")


class AnalysisFrame(pd.DataFrame):
    """A DataFrame of per-symbol results (index ``symbol``) with an ``errors`` table."""

    _metadata = ["errors"]  # noqa: RUF012 - pandas reads this class attribute

    @property
    def _constructor(self) -> type:
        return AnalysisFrame


def _frame_rows(frame: pd.DataFrame, symbols: Sequence[str],
                func: Callable[[pd.DataFrame], Any]) -> tuple[list[dict], list[dict]]:
    rows: list[dict] = []
    errors: list[dict] = []
    groups = {s: g for s, g in frame.groupby("symbol", sort=False)}
    for sym in symbols:
        bars = groups.get(sym)
        bars = (frame.iloc[0:0] if bars is None else bars).sort_values("date")
        try:
            out = func(bars.reset_index(drop=True))
            if isinstance(out, pd.Series):
                out = out.to_dict()
            elif not isinstance(out, Mapping):
                out = {"value": out}
            rows.append({"symbol": sym, **out})
        except Exception as exc:  # a user function may raise anything; report and go on
            errors.append({"symbol": sym, "error": type(exc).__name__, "message": str(exc),
                           "traceback": traceback.format_exc()})
    return rows, errors


def _analyze_frame_block(frame: pd.DataFrame, symbols: Sequence[str],
                         func: Callable[[pd.DataFrame], Any]) -> tuple[list[dict], list[dict]]:
    return _frame_rows(frame, symbols, func)


def _analyze_source_block(source: ParquetSource, symbols: Sequence[str],
                          columns: Sequence[str] | None,
                          func: Callable[[pd.DataFrame], Any]) -> tuple[list[dict], list[dict]]:
    return _frame_rows(read_frame(source, symbols, columns), symbols, func)


def _signal_block_returns(block: Panel, strategies: Sequence[tuple[str, dict]],
                          market: MarketConfig, lag: int, init_cash: float) -> dict:
    """Engine runs of every signal strategy on one symbol block: the block's summed equity."""
    from qilin.backtest.engine import run_signals

    out = {}
    with task_numba_threads():
        for i, (name, params) in enumerate(strategies):
            entries, exits = get_strategy(name).signals(block, **params)
            res = run_signals(block, entries=entries, exits=exits, market=market, lag=lag,
                              init_cash=init_cash)
            filled = int((res.trades["status"] == "filled").sum()) if len(res.trades) else 0
            out[i] = (res.equity.sum(axis=1), filled, res.turnover.sum(), res.exposure.sum())
    return out


def _signal_source_block(source: ParquetSource, first: str, last: str, dates: pd.DatetimeIndex,
                         strategies: Sequence[tuple[str, dict]], market: MarketConfig, lag: int,
                         init_cash: float) -> dict:
    """:func:`_signal_block_returns` of the block ``first..last`` read from ``source``."""
    return _signal_block_returns(read_trading_block(source, first, last, dates), strategies,
                                 market, lag, init_cash)


def _add_block_returns(a: dict, b: dict) -> dict:
    """Two blocks' summed equity and counters together (the fold over blocks, in order)."""
    return {i: tuple(x + y for x, y in zip(a[i], b[i], strict=True)) for i in a}


def _portfolio_run(panel: Panel, name: str, params: dict, market: MarketConfig, lag: int,
                   init_cash: float) -> tuple[np.ndarray, int, float, float]:
    from qilin.backtest.engine import run_portfolio

    tpl = MomentumTopK()
    p = tpl.check(params)
    with task_numba_threads():
        res = run_portfolio(panel, scores=tpl.scores(panel, p["lookback"]), top_k=p["k"],
                            rebalance=p["rebalance"], market=market, lag=lag,
                            init_cash=init_cash)
    filled = int((res.trades["status"] == "filled").sum()) if len(res.trades) else 0
    return res.returns[:, 0], filled, float(res.turnover.mean()), float(res.exposure.mean())


@dataclass
class OptimizationResult:
    """Full sweep table plus the best combination by the objective."""

    sweep: SweepResult
    objective: str
    best_params: dict[str, Any]
    best: pd.Series

    @property
    def table(self) -> pd.DataFrame:
        return self.sweep.table


class DistributedStockAnalyzer:
    """Analyse, backtest and optimise over a Dask cluster.

    Parameters
    ----------
    client : distributed.Client
        From :class:`qilin.cluster.ClusterManager` or ``distributed.Client`` directly.
    data : Panel, Parquet path (file, folder or glob) of long bars, or ParquetSource
        A path is read by the workers, block by block (it must be reachable from them at
        the same path: NFS, a mounted bucket); the client reads only the files' footers.
    block_size : int
        Default number of symbols per task.
    """

    def __init__(self, client: Any, data: Panel | str | os.PathLike[str] | ParquetSource,
                 block_size: int = 50) -> None:
        self.client = client
        self.block_size = int(block_size)
        self.source: ParquetSource | None = None
        if isinstance(data, Panel):
            self.panel: Panel | None = data
            self.dates = data.dates
            self.symbols = list(map(str, data.symbols))
        else:
            self.panel = None
            self.source = open_source(data)
            self.dates, symbols = market_axes(self.source, client)
            self.symbols = list(symbols)

    # -------------------------------------------------------------------- helpers
    def _blocks(self, symbols: Iterable[str] | None, block_size: int | None
                ) -> list[list[str]]:
        chosen = self.symbols if symbols is None else [str(s) for s in symbols]
        known = set(self.symbols)
        missing = [s for s in chosen if s not in known]
        if missing:
            raise DataError(f"symbols not in the data: {missing[:10]}")
        size = max(1, int(block_size or self.block_size))
        return [chosen[i:i + size] for i in range(0, len(chosen), size)]

    def _gather(self, futures: list, progress: bool, desc: str) -> list:
        """Results in order within ``cluster.task_timeout_s`` (lost workers are survived)."""
        from qilin.cluster_tasks import gather_within

        return gather_within(self.client, futures, what=f"analyzer {desc}",
                             progress=desc if progress else None)

    def _hold(self, objs: list) -> list:
        """Blocks on the cluster as recomputable task results (a lost worker loses nothing)."""
        from qilin.cluster_tasks import hold

        return [hold(self.client, obj) for obj in objs]

    def load_panel(self) -> Panel:
        """The whole data as a Panel (read here, in the client, when built from a path)."""
        if self.panel is None:
            assert self.source is not None
            self.panel = Panel.from_long(read_frame(self.source, self.symbols))
        return self.panel

    def _dates_on_cluster(self) -> Any:
        from qilin.cluster_tasks import hold

        return hold(self.client, self.dates)

    # ------------------------------------------------------------------- analyze
    def analyze_stocks_parallel(
        self,
        symbols: Iterable[str] | Callable[[pd.DataFrame], Any] | None = None,
        func: Callable[[pd.DataFrame], Mapping[str, Any] | pd.Series | Any] | None = None,
        block_size: int | None = None,
        columns: Sequence[str] | None = None,
        progress: bool = False,
    ) -> AnalysisFrame:
        """Run ``func(bars_of_one_symbol) -> dict | Series | scalar`` for every symbol.

        Parameters
        ----------
        symbols : iterable of str, optional
            Defaults to every symbol of the data. A callable given here (with ``func``
            omitted) is taken as ``func``: ``analyze_stocks_parallel(func)`` analyses all.
        func : callable
            Receives that symbol's bars (long DataFrame sorted by date, missing bars
            dropped); a scalar result becomes a ``value`` column.
        block_size : int, optional
            Symbols per task.
        columns : sequence of str, optional
            Columns to read (path data) or keep (Panel data); ``date``/``symbol`` always.
        progress : bool
            tqdm bar over completed tasks.

        Returns
        -------
        AnalysisFrame
            One row per successful symbol (index ``symbol``), in the requested order;
            ``.errors`` lists failures with their tracebacks.
        """
        if callable(symbols) and func is None:
            symbols, func = None, symbols
        if not callable(func):
            raise DataError("analyze_stocks_parallel needs a per-symbol function func(bars)")
        blocks = self._blocks(symbols, block_size)
        cols = None if columns is None else ["date", "symbol",
                                             *[c for c in columns if c not in ("date", "symbol")]]
        if self.panel is not None:
            frames = [self.panel.select(symbols=b).to_long(
                None if cols is None else cols[2:]) for b in blocks]
            held = self._hold(frames)
            futures = [self.client.submit(_analyze_frame_block, f, b, func, pure=False)
                       for f, b in zip(held, blocks, strict=True)]
        else:
            futures = [self.client.submit(_analyze_source_block, self.source, b, cols, func,
                                          pure=False) for b in blocks]
        parts = self._gather(futures, progress, "analyze")
        rows = [r for part in parts for r in part[0]]
        errors = [e for part in parts for e in part[1]]
        table = AnalysisFrame(pd.DataFrame(rows).set_index("symbol") if rows
                              else pd.DataFrame(index=pd.Index([], name="symbol")))
        table.errors = pd.DataFrame(errors, columns=list(ERROR_COLUMNS))
        return table

    # ------------------------------------------------------------------ backtest
    def backtest_parallel(
        self,
        strategies: Sequence[tuple[str, Mapping[str, Any]]],
        market: str | MarketConfig = "cn",
        block_size: int | None = None,
        lag: int = 0,
        init_cash: float = 1e6,
        progress: bool = False,
    ) -> pd.DataFrame:
        """Backtest ``(strategy name, params)`` pairs through the engine, tiled over workers.

        Signal templates run :func:`~qilin.backtest.engine.run_signals` per symbol block
        (each block sent once, or read by its task from a path; every strategy run on it in
        the same task); the result of a strategy is its per-symbol accounts taken together
        (the sum of their equity, added on the workers in block order), as in
        :mod:`qilin.backtest.sweeps` and ``qilin backtest run``. ``momentum_topk`` runs
        :func:`~qilin.backtest.engine.run_portfolio` on the whole market, one task each
        (from a path, one worker reads the market's trading fields whole for them).
        Only the summed equity per strategy comes back to the client.

        Returns
        -------
        DataFrame
            One row per strategy: ``strategy``, ``params`` and metrics (``n_trades``,
            ``turnover``, ``exposure`` and the empyrical set).
        """
        from qilin.backtest import metrics as M

        mc = load_market(market) if isinstance(market, str) else market
        checked = [(name, get_strategy(name).check(dict(params))) for name, params in
                   strategies]
        signal_idx = [i for i, (n, _) in enumerate(checked) if n != MomentumTopK.name]
        portfolio_idx = [i for i, (n, _) in enumerate(checked) if n == MomentumTopK.name]
        T, N = len(self.dates), len(self.symbols)
        submit = self.client.submit
        dates = None if self.panel is not None else self._dates_on_cluster()
        futures = []
        if signal_idx:
            blocks = self._blocks(None, block_size)
            sig = [checked[i] for i in signal_idx]
            if self.panel is not None:
                held = self._hold([self.panel.select(symbols=b) for b in blocks])
                parts = [submit(_signal_block_returns, f, sig, mc, lag, init_cash, pure=False)
                         for f in held]
            else:
                parts = [submit(_signal_source_block, self.source, b[0], b[-1], dates, sig, mc,
                                lag, init_cash, pure=False) for b in blocks]
            total = parts[0]
            for part in parts[1:]:
                total = submit(_add_block_returns, total, part, pure=False)
            futures.append(total)
        n_sig_tasks = len(futures)
        if portfolio_idx:
            if self.panel is not None:
                [whole] = self._hold([self.panel])
            else:
                whole = submit(read_trading_block, self.source, self.symbols[0],
                               self.symbols[-1], dates, pure=False)
            futures += [submit(_portfolio_run, whole, *checked[i], mc, lag, init_cash,
                               pure=False) for i in portfolio_idx]
        parts = self._gather(futures, progress, "backtest")
        summed = parts[0] if n_sig_tasks else {}
        rows = []
        for i, (name, params) in enumerate(checked):
            if i in signal_idx:
                equity, n, to, ex = summed[signal_idx.index(i)]
                r = equity_returns(equity)
                to, ex = to / (N * T), ex / (N * T)
            else:
                r, n, to, ex = parts[n_sig_tasks + portfolio_idx.index(i)]
            m = M.summary(r, periods_per_year=mc.periods_per_year).iloc[0]
            rows.append({"strategy": name, "params": params,
                         **{k: float(m[k]) for k in ("total_return", "annual_return",
                                                     "annual_volatility", "sharpe_ratio",
                                                     "sortino_ratio", "max_drawdown",
                                                     "calmar_ratio")},
                         "n_trades": n, "turnover": to, "exposure": ex})
        return pd.DataFrame(rows)

    # ------------------------------------------------------------------ optimize
    def optimize_parameters_parallel(
        self,
        param_grid: ParameterGrid | Mapping[str, Any] | str,
        strategy: str = "ma_cross",
        objective: str = "sharpe_ratio",
        market: str | MarketConfig = "cn",
        tile_size: int | None = None,
        backend: str = "auto",
        memory_budget: int | None = None,
        lag: int = 0,
        progress: bool = False,
    ) -> OptimizationResult:
        """Sweep ``param_grid`` over the cluster (fused kernels, parameter tiles per task).

        Each tile resolves ``backend`` on its worker, so ``"auto"`` uses a worker's GPU on
        CUDA clusters. Returns the full table and the best parameters by ``objective``.
        """
        data = self.panel if self.panel is not None else self.source
        res = run_sweep(data, strategy, param_grid, market=market,
                        backend=backend, client=self.client, tile_size=tile_size,
                        memory_budget=memory_budget, lag=lag, progress=progress,
                        block_symbols=None if self.panel is not None else self.block_size)
        if objective not in res.table.columns:
            raise BacktestError(f"objective {objective!r} is not a metric of the sweep "
                             f"({', '.join(c for c in res.table.columns)})")
        best = res.best(objective, 1).iloc[0]
        return OptimizationResult(res, objective, res.best_params(objective), best)


def default_block_size(n_symbols: int, n_workers: int, tasks_per_worker: int = 4) -> int:
    """Symbols per task giving about ``tasks_per_worker`` tasks per worker.

    Examples
    --------
    >>> default_block_size(500, 2)
    63
    """
    return max(1, math.ceil(n_symbols / max(1, n_workers * tasks_per_worker)))
