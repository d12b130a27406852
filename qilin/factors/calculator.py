"""FactorCalculator: a factor set over a Panel, in-process or on a Dask cluster.

The factor set is parsed once into one graph of distinct nodes (common subexpressions are
computed once). The graph is cut into *stages* by the layout its operators need: time-series
(``ts``) operators need each symbol's whole history, so they run on **symbol blocks**;
cross-sectional (``cs``) operators need every symbol of a date, so they run on **date
blocks**; elementwise operators run in whichever layout their inputs are in. Stage 0 is the
symbol-block stage holding everything under no ``cs`` operator; only values consumed by a
later stage change layout. In-process the blocks are slices of the Panel's arrays; with a
``distributed.Client`` each symbol block's fields are sent once to the cluster as a task
result that is recomputed if its worker dies (:func:`qilin.cluster_tasks.hold`), every
stage is a ``dask.array`` ``map_blocks`` over the blocks, and values change layout with a
dask ``rechunk`` (on CUDA clusters the chunks are CuPy arrays). The gather is bounded by
``cluster.task_timeout_s``; losing the scheduler raises :class:`~qilin.errors.ClusterError`.

Results can be cached on disk (:mod:`qilin.factors.cache`) and streamed to Parquet one symbol
block at a time (:meth:`FactorCalculator.to_parquet`) to bound memory.

Examples
--------
>>> from qilin.data.synthetic import synthetic_market
>>> panel = synthetic_market(n_symbols=6, n_days=40, seed=1)
>>> calc = FactorCalculator({"mom": "close / ts_delay(close, 5) - 1",
...                          "rank_mom": "cs_rank(close / ts_delay(close, 5))"},
...                         backend="cpu", progress=False)
>>> result = calc.compute(panel)
>>> result.names
['mom', 'rank_mom']
>>> result["mom"].shape
(40, 6)
>>> list(result.to_long().columns)
['date', 'symbol', 'mom', 'rank_mom']
"""

from __future__ import annotations

import functools
import logging
import os
import time
import uuid
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qilin.atomic import atomic_path
from qilin.backend import Backend, BackendName, get_backend, numba_threads, to_host
from qilin.data.panel import Panel
from qilin.errors import DataError, ExpressionError
from qilin.factors.cache import FactorCache, data_fingerprint, field_fingerprints
from qilin.factors.expr import (
    Call,
    Const,
    Node,
    Var,
    check_windows,
    evaluate_nodes,
    parse_factor_set,
    unique_nodes,
    variables_of,
)
from qilin.factors.inputs import absent_factors, derive_vwap, missing_warning
from qilin.factors.qlib_window import registry_for
from qilin.factors.registry import OperatorRegistry

log = logging.getLogger(__name__)

FactorSpec = Mapping[str, str] | Iterable[tuple[str, str]] | str
_DTYPES = {"float64": np.float64, "float32": np.float32}
SYMBOLS, DATES = "symbols", "dates"


# ------------------------------------------------------------------------ the stage plan
@dataclass
class Stage:
    """Nodes computed together in one layout, and the values it hands to later stages."""

    index: int
    layout: str  # SYMBOLS or DATES
    nodes: list[Node]
    inputs: list[str]  # keys from earlier stages (not fields)
    fields: list[str]  # Panel fields read directly
    outputs: list[str]  # keys kept after the stage


def plan_stages(roots: list[Node]) -> list[Stage]:
    """Cut the graph under ``roots`` into alternating symbol-/date-layout stages.

    Examples
    --------
    >>> from qilin.factors.expr import parse
    >>> stages = plan_stages([parse("close * 2")])
    >>> [(s.layout, len(s.nodes)) for s in stages]
    [('symbols', 2)]
    """
    nodes = unique_nodes(roots)
    stage_of: dict[str, int] = {}
    for node in nodes:
        base = max((stage_of[c.key] for c in node.children()), default=0)
        if isinstance(node, Call) and node.kind == "ts":
            base += base % 2
        elif isinstance(node, Call) and node.kind == "cs":
            base += 1 - base % 2
        stage_of[node.key] = base
    root_keys = {r.key for r in roots if not isinstance(r, Const)}
    last = max(stage_of.values(), default=0)
    stages = []
    for s in range(last + 1):
        members = [n for n in nodes if stage_of[n.key] == s and not isinstance(n, Var)]
        if s == 0:
            members = [n for n in nodes if stage_of[n.key] == 0]
        member_keys = {n.key for n in members}
        inputs, fields = [], []
        for n in members:
            for c in n.children():
                if isinstance(c, Var):
                    if c.name not in fields:
                        fields.append(c.name)
                elif c.key not in member_keys and c.key not in inputs:
                    inputs.append(c.key)
            if isinstance(n, Var) and n.name not in fields:
                fields.append(n.name)
        later = {c.key for n in nodes if stage_of[n.key] > s for c in n.children()
                 if not isinstance(c, Var)}
        outputs = [n.key for n in members if n.key in root_keys or n.key in later]
        if members and (outputs or s > 0):
            stages.append(Stage(s, SYMBOLS if s % 2 == 0 else DATES, members, inputs,
                                fields, outputs))
    return stages


def _eval_stage(
    stage_nodes: list[Node], outputs: list[str], registry: OperatorRegistry,
    backend: Backend, names: list[str], arrays: list[Any], layout: str = SYMBOLS,
    cast: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate one stage on one block; returns the output arrays by key.

    ``cast`` maps output keys to the dtype they are cast to as soon as they are computed
    (final results that no later stage reads: their float64 arrays are freed at once).
    """
    inputs = {name: _in_layout(backend, a, layout)
              for name, a in zip(names, arrays, strict=True)}

    def finish(key: str, value: Any) -> Any:
        if key in cast and hasattr(value, "astype"):
            return value.astype(cast[key], copy=False)
        return value

    values = evaluate_nodes(stage_nodes, inputs, outputs, registry,
                            finish=finish if cast else None)
    shape = next(iter(inputs.values())).shape
    return {k: _full_on(backend, values[k], shape) for k in outputs}


def _in_layout(backend: Backend, a: Any, layout: str) -> Any:
    """A float64 block in the memory order its stage walks (CPU: symbol stages by column).

    Time-series kernels run along each symbol's series, so on the CPU a symbol stage works
    on Fortran-ordered arrays (elementwise operators keep that order); date stages and GPU
    arrays are C-ordered.
    """
    a = backend.asarray(a, dtype=np.float64)
    if backend.xp is np and layout == SYMBOLS:
        return np.asfortranarray(a)
    return backend.xp.ascontiguousarray(a)


def _eval_stage_block(
    stage_nodes: list[Node], outputs: list[str], registry: OperatorRegistry,
    backend: Backend, names: list[str], layout: str, *arrays: Any,
) -> Any:
    """:func:`_eval_stage` stacked as one ``(len(outputs), rows, cols)`` array (dask blocks).

    Runs compiled kernels single-threaded: the cluster already runs one task per core.
    """
    with numba_threads(1):
        values = _eval_stage(stage_nodes, outputs, registry, backend, names, list(arrays),
                             layout)
    return backend.xp.stack([values[k] for k in outputs])


def _full_on(backend: Backend, value: Any, shape: tuple[int, ...]) -> Any:
    if hasattr(value, "shape") and tuple(value.shape) == tuple(shape):
        return value
    xp = backend.xp
    return xp.broadcast_to(xp.asarray(value, dtype=np.float64), shape).copy()


# ------------------------------------------------------------------------------ result
@dataclass
class FactorResult:
    """Computed factors: one dates x symbols array per factor name (on the host).

    Attributes
    ----------
    cache_hits, computed : int
        Factors read from the cache and factors computed in this run.
    cache_corrupt : int
        Cache entries found unreadable (empty or truncated files) in this run; each was
        recomputed and rewritten.
    absent : dict
        ``{factor: [fields]}``: factors left NaN because the data lacks fields they read.
    derived : dict
        ``{field: formula}``: fields derived because they were asked for (``derive_vwap``).
    seconds : float
        Wall time of the run.
    """

    names: list[str]
    dates: pd.DatetimeIndex
    symbols: pd.Index
    values: dict[str, np.ndarray]
    valid: np.ndarray
    backend: str = "cpu"
    cache_hits: int = 0
    computed: int = 0
    seconds: float = 0.0
    expressions: dict[str, str] = field(default_factory=dict)
    cache_corrupt: int = 0
    absent: dict[str, list[str]] = field(default_factory=dict)
    derived: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.values[name]

    @property
    def panel(self) -> Panel:
        """The factors as a Panel (fields = factor names, ``valid`` from the input data)."""
        return Panel(self.dates, self.symbols, dict(self.values), get_backend("cpu"),
                     valid=self.valid)

    def to_long(self, dropna: bool = True) -> pd.DataFrame:
        """Long DataFrame ``date, symbol, <factor columns>`` sorted by date then symbol.

        Rows of bars that do not exist in the input data are dropped when ``dropna``.
        """
        return self.panel.to_long(self.names, dropna=dropna)

    def to_parquet(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_long` to Parquet atomically; returns the path."""
        path = Path(path)
        table = _arrow_table(self.to_long())
        _atomic_parquet(path, [table])
        return path


def _arrow_table(df: pd.DataFrame) -> Any:
    import pyarrow as pa

    return pa.Table.from_pandas(df, preserve_index=False)


def _atomic_parquet(path: Path, tables: Iterable[Any]) -> None:
    """Stream Arrow tables into one zstd Parquet file that appears only when complete."""
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        writer = None
        try:
            for table in tables:
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema, compression="zstd")
                writer.write_table(table)
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            raise DataError(f"nothing to write to {path}")


# -------------------------------------------------------------------------- calculator
class FactorCalculator:
    """Compute a set of factor expressions over a Panel.

    Parameters
    ----------
    factors : dict, list of (name, expression) or "alpha158"
        The factor set. ``"alpha158"`` is :func:`qilin.factors.alpha158.alpha158_features`.
    client : distributed.Client, optional
        Run on this Dask cluster; in-process when None.
    backend : {"auto", "cpu", "gpu"}
        Array backend of the computation (``gpu`` runs operators on CuPy arrays).
    dtype : {"float64", "float32"}
        Dtype of the results. Computation is always in float64; float32 halves the output.
    cache_dir : path, optional
        Folder of the on-disk result cache; no caching when None.
    block_symbols : int, optional
        Symbols per block for time-series stages (default: all symbols in-process, about
        ``n_symbols / (2 * n_workers)`` on a cluster).
    block_dates : int, optional
        Dates per block for cross-sectional stages on a cluster (default: about 4 blocks
        per worker).
    progress : bool
        Show a progress bar (tqdm in-process, dask's progress on a cluster).
    registry : OperatorRegistry, optional
        Operators available to the expressions (built-ins plus registered ones by default).
    kernel_threads : int, optional
        Threads of numba ``parallel`` kernels in-process (default: numba's setting). Tasks on
        a cluster always run kernels single-threaded.
    missing_fields : {"raise", "nan"}, optional
        A factor reading a field the data lacks: ``raise`` an ExpressionError listing the
        fields present, or leave it ``nan`` (one warning names the fields and factors). By
        default Alpha158's features (e.g. VWAP0 on bars without vwap/amount) are NaN and any
        other factor raises.
    derive_vwap : bool
        Bars with neither ``vwap`` nor ``amount`` get ``vwap = (high + low + close) / 3``
        (recorded in ``FactorResult.derived``). Off by default: nothing is derived unasked.
    window_policy : {"ours", "qlib"}
        ``ours``: a window is the last n traded days, NaN until full. ``qlib``: Qlib's
        calendar windows with suspended days as gaps and ``min_periods=1`` partial windows
        (:mod:`qilin.factors.qlib_window`), to reproduce Qlib's numbers.

    Raises
    ------
    ExpressionError
        When an expression is invalid (raised by :meth:`compute` once the data's fields
        are known, or here for syntax problems).
    """

    def __init__(
        self,
        factors: FactorSpec,
        client: Any = None,
        backend: BackendName | Backend = "auto",
        dtype: str = "float64",
        cache_dir: str | os.PathLike[str] | None = None,
        block_symbols: int | None = None,
        block_dates: int | None = None,
        progress: bool = True,
        registry: OperatorRegistry | None = None,
        kernel_threads: int | None = None,
        missing_fields: str | None = None,
        derive_vwap: bool = False,
        window_policy: str = "ours",
    ) -> None:
        if isinstance(factors, str):
            if factors.lower() != "alpha158":
                raise ExpressionError(f"unknown factor set {factors!r}: pass 'alpha158', a dict "
                                      "or a list of (name, expression) pairs")
            from qilin.factors.alpha158 import alpha158_features

            factors = alpha158_features()
        items = list(factors.items()) if isinstance(factors, Mapping) else list(factors)
        if not items:
            raise ExpressionError("the factor set is empty")
        if dtype not in _DTYPES:
            raise DataError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
        for name, value in (("block_symbols", block_symbols), ("block_dates", block_dates),
                            ("kernel_threads", kernel_threads)):
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise DataError(f"{name} must be a positive integer, got {value!r}")
        self.factors: list[tuple[str, str]] = [(str(n), str(e)) for n, e in items]
        self.client = client
        self.backend = get_backend(backend)
        self.dtype = dtype
        self.cache = FactorCache(cache_dir) if cache_dir is not None else None
        self.block_symbols = block_symbols
        self.block_dates = block_dates
        self.progress = progress
        self.window_policy = window_policy
        self.registry = registry_for(window_policy, registry)
        self.kernel_threads = kernel_threads
        if missing_fields not in (None, "raise", "nan"):
            raise DataError(f"missing_fields must be 'raise' or 'nan', got {missing_fields!r}")
        self.missing_fields = missing_fields
        self.derive_vwap = bool(derive_vwap)
        self._warn_absent = True  # off in the per-block calculators of iter_blocks

    # ------------------------------------------------------------------------ helpers
    @property
    def names(self) -> list[str]:
        """Factor names in order."""
        return [n for n, _ in self.factors]

    def parse(self, fields: Iterable[str] = ()) -> dict[str, Node]:
        """Parse the factor set (with the data's field names as variables)."""
        return parse_factor_set(self.factors, self.registry, fields)

    def _inputs(self, panel: Panel, roots: dict[str, Node]
                ) -> tuple[Panel, dict[str, list[str]], dict[str, str]]:
        """Derive asked-for fields; find the factors to leave NaN (warning once) or raise."""
        derived: dict[str, str] = {}
        if self.derive_vwap:
            panel, derived = derive_vwap(panel)
        if self.missing_fields is None:
            from qilin.factors.alpha158 import alpha158_features

            alpha = set(alpha158_features())
            optional = {n for n, e in self.factors if (n, e) in alpha}
        else:
            optional = set()
        absent = absent_factors(roots, panel, dict(self.factors),
                                self.missing_fields or "raise", optional)
        if absent and self._warn_absent:
            warnings.warn(missing_warning(absent, panel), UserWarning, stacklevel=3)
        return panel, absent, derived

    def _n_workers(self) -> int:
        if self.client is None:
            return 1
        return max(1, len(self.client.scheduler_info().get("workers", {})))

    def _symbol_chunks(self, n_symbols: int) -> tuple[int, ...]:
        if self.block_symbols is not None:
            size = self.block_symbols
        elif self.client is None:
            size = n_symbols
        else:
            size = max(1, -(-n_symbols // (2 * self._n_workers())))
        return _chunks(n_symbols, size)

    def _date_chunks(self, n_dates: int) -> tuple[int, ...]:
        if self.block_dates is not None:
            size = self.block_dates
        elif self.client is None:
            size = n_dates
        else:
            size = max(1, -(-n_dates // (4 * self._n_workers())))
        return _chunks(n_dates, size)

    # ------------------------------------------------------------------------ compute
    def compute(self, panel: Panel) -> FactorResult:
        """Compute every factor over ``panel``.

        Returns
        -------
        FactorResult
            Arrays on the host in the requested dtype, NaN where undefined.
        """
        start = time.perf_counter()
        roots = self.parse(panel.fields)
        panel, absent, derived = self._inputs(panel, roots)
        roots = {n: r for n, r in roots.items() if n not in absent}
        check_windows(roots, panel.shape[0], dict(self.factors), self.registry)
        out_dtype = _DTYPES[self.dtype]
        values: dict[str, np.ndarray] = {}
        missing: dict[str, Node] = {}
        keys: dict[str, str] = {}
        corrupt_before = self.cache.corrupt if self.cache is not None else 0
        if self.cache is not None:
            prints = field_fingerprints(panel, variables_of(roots.values()))
            for name, node in roots.items():
                fp = data_fingerprint(prints, variables_of([node]))
                keys[name] = self.cache.key(node.key, fp, self.dtype,
                                            "" if self.window_policy == "ours" else "qlib")
                hit = self.cache.get(keys[name])
                if hit is not None and hit.shape == panel.shape:
                    values[name] = hit.astype(out_dtype, copy=False)
                else:
                    missing[name] = node
        else:
            missing = dict(roots)
        hits = len(values)
        values.update({n: np.full(panel.shape, np.nan, dtype=out_dtype) for n in absent})
        if missing:
            distinct = list({n.key: n for n in missing.values()}.values())
            if self.client is None:
                by_key = self._compute_local(panel, distinct)
            else:
                by_key = self._compute_cluster(panel, distinct)
            for name, node in missing.items():
                value = node.value if isinstance(node, Const) else by_key[node.key]
                arr = _full(value, panel.shape).astype(out_dtype, copy=False)
                values[name] = arr
                if self.cache is not None:
                    self.cache.put(keys[name], arr)
        corrupt = self.cache.corrupt - corrupt_before if self.cache is not None else 0
        log.info("factors: %d computed, %d from cache (%d unreadable entries rewritten), "
                 "%.2fs on %s", len(missing), hits, corrupt, time.perf_counter() - start,
                 self.backend.name)
        return FactorResult(
            self.names, panel.dates, panel.symbols, {n: values[n] for n in self.names},
            to_host(panel.valid), self.backend.name, hits, len(missing),
            time.perf_counter() - start, dict(self.factors), corrupt, absent, derived,
        )

    def _compute_local(self, panel: Panel, roots: list[Node]) -> dict[str, np.ndarray]:
        stages = plan_stages(roots)
        root_keys = {r.key for r in roots}
        T, N = panel.shape
        plan = [(st, list(_slices(self._symbol_chunks(N) if st.layout == SYMBOLS
                                  else self._date_chunks(T)))) for st in stages]
        bar = _progress_bar(sum(len(sl) for _, sl in plan), self.progress, "factor blocks")
        held: dict[str, Any] = {}
        try:
            with numba_threads(self.kernel_threads):
                self._run_local_stages(panel, plan, held, bar, root_keys)
        finally:
            bar.close()
        return {k: to_host(v) for k, v in held.items() if k in root_keys}

    def _run_local_stages(self, panel: Panel, plan: list[tuple[Stage, list[slice]]],
                          held: dict[str, Any], bar: Any, root_keys: set[str]) -> None:
        T, N = panel.shape
        be = self.backend
        fields: dict[str, Any] = {}
        read_later = {k for stage, _ in plan for k in stage.inputs}
        out_dtype = _DTYPES[self.dtype]
        for stage, slices in plan:
            cast = {k: out_dtype for k in stage.outputs
                    if k in root_keys and k not in read_later}
            for name in stage.fields:
                if name not in fields:
                    fields[name] = be.asarray(panel[name], dtype=np.float64)
            names = stage.fields + stage.inputs
            if len(slices) == 1:  # the whole panel in one block: no copies
                arrays = [fields[f] for f in stage.fields] + [held[k] for k in stage.inputs]
                held.update(_eval_stage(stage.nodes, stage.outputs, self.registry, be,
                                        names, arrays, stage.layout, cast))
                bar.update(1)
                continue
            order = "F" if stage.layout == SYMBOLS else "C"
            results = {k: be.xp.empty((T, N), dtype=cast.get(k, np.float64), order=order)
                       for k in stage.outputs}
            for sl in slices:
                index = (slice(None), sl) if stage.layout == SYMBOLS else (sl, slice(None))
                arrays = [fields[f][index] for f in stage.fields]
                arrays += [held[k][index] for k in stage.inputs]
                block = _eval_stage(stage.nodes, stage.outputs, self.registry, be, names,
                                    arrays, stage.layout, cast)
                for key, value in block.items():
                    results[key][index] = value
                bar.update(1)
            held.update(results)

    def _compute_cluster(self, panel: Panel, roots: list[Node]) -> dict[str, np.ndarray]:
        import dask.array as da

        stages = plan_stages(roots)
        T, N = panel.shape
        sym_chunks = self._symbol_chunks(N)
        date_chunks = self._date_chunks(T)
        needed = sorted({f for st in stages for f in st.fields})
        leaves = self._scatter_fields(panel, needed, sym_chunks)
        arrays: dict[str, Any] = dict(leaves)
        root_keys = {r.key for r in roots if not isinstance(r, Const | Var)}
        finals: list[tuple[list[str], Any]] = []
        for stage in stages:
            layout = ((T,), sym_chunks) if stage.layout == SYMBOLS else (date_chunks, (N,))
            names = stage.fields + stage.inputs
            inputs = [arrays[k].rechunk(layout) for k in names]
            # a partial keeps dask from traversing (and rebuilding) the node dataclasses
            task = functools.partial(_eval_stage_block, stage.nodes, stage.outputs,
                                     self.registry, self.backend, names, stage.layout)
            stacked = da.map_blocks(
                task, *inputs, new_axis=0, chunks=((len(stage.outputs),), *layout),
                name=f"qilin-factor-stage{stage.index}-{uuid.uuid4().hex}",
                dtype=np.float64, meta=np.empty((0, 0, 0), dtype=np.float64),
            )
            for i, key in enumerate(stage.outputs):
                arrays[key] = stacked[i]
            wanted = [i for i, k in enumerate(stage.outputs) if k in root_keys]
            if wanted:
                part = stacked if len(wanted) == len(stage.outputs) else stacked[wanted]
                out_dtype = _DTYPES[self.dtype]
                finals.append(([stage.outputs[i] for i in wanted], part.map_blocks(
                    functools.partial(_host_as, dtype=out_dtype), dtype=out_dtype,
                    meta=np.empty((0, 0, 0), dtype=out_dtype))))
        from qilin.cluster_tasks import gather_within

        futures = self.client.compute([f for _, f in finals])
        results = gather_within(self.client, futures, what="factor computation",
                                progress="factor stages" if self.progress else None)
        out: dict[str, np.ndarray] = {}
        for (keys, _), block in zip(finals, results, strict=True):
            for i, key in enumerate(keys):
                out[key] = block[i]
        for r in roots:
            if isinstance(r, Var):
                out[r.key] = to_host(panel[r.name])
        return out

    def _scatter_fields(self, panel: Panel, names: list[str], sym_chunks: tuple[int, ...]
                        ) -> dict[str, Any]:
        """Send each symbol block's fields to the cluster once; dask arrays over them.

        Each block is held as a task result (:func:`qilin.cluster_tasks.hold`), not scattered:
        when the worker holding it dies the scheduler recreates it on another worker.
        """
        import operator

        import dask.array as da
        from dask import delayed

        from qilin.cluster_tasks import hold

        T = panel.shape[0]
        per_field: dict[str, list[Any]] = {n: [] for n in names}
        host = {n: to_host(panel[n]) for n in names}
        for sl in _slices(sym_chunks):
            block = {n: np.ascontiguousarray(host[n][:, sl], dtype=np.float64) for n in names}
            future = hold(self.client, block)  # one future per block, recomputable
            for n in names:
                item = delayed(operator.getitem)(future, n)
                per_field[n].append(da.from_delayed(item, shape=(T, sl.stop - sl.start),
                                                    dtype=np.float64))
        return {n: da.concatenate(parts, axis=1) for n, parts in per_field.items()}

    # ---------------------------------------------------------------------- streaming
    def iter_blocks(self, panel: Panel) -> Iterator[FactorResult]:
        """Compute symbol block after symbol block (time-series-only factor sets).

        Memory stays bounded by one block's fields, intermediates and results.

        Raises
        ------
        ExpressionError
            When a factor uses a cross-sectional operator (it needs every symbol at once:
            use :meth:`compute`).
        """
        roots = self.parse(panel.fields)
        self._inputs(panel, roots)  # raises, or warns once for the whole run
        stages = plan_stages(list(roots.values()))
        if any(st.layout == DATES for st in stages):
            cs = [n for n, r in roots.items()
                  if any(isinstance(x, Call) and x.kind == "cs" for x in r.walk())]
            raise ExpressionError(f"factors {cs[:5]} use cross-sectional operators; they need "
                                  "every symbol at once (use compute())")
        sub = FactorCalculator(self.factors, None, self.backend, self.dtype, None, None, None,
                               False, self.registry,
                               1 if self.client is not None else self.kernel_threads,
                               self.missing_fields, self.derive_vwap)
        sub._warn_absent = False
        chunks = self._symbol_chunks(panel.shape[1]) if self.block_symbols else _chunks(
            panel.shape[1], 500)
        slices = list(_slices(chunks))
        bar = _progress_bar(len(slices), self.progress, "symbol blocks")
        try:
            if self.client is None:
                for sl in slices:
                    yield sub.compute(panel.select(symbols=panel.symbols[sl]))
                    bar.update(1)
            else:
                from qilin.cluster_tasks import gather_within

                for future in [self.client.submit(sub.compute, panel.select(
                        symbols=panel.symbols[sl]), pure=False) for sl in slices]:
                    yield gather_within(self.client, [future], what="factor block")[0]
                    bar.update(1)
        finally:
            bar.close()

    def to_parquet(self, panel: Panel, path: str | os.PathLike[str]) -> Path:
        """Write long Parquet (``date, symbol, <factors>``), streaming per symbol block.

        Rows are ordered by symbol block, then date and symbol. Factor sets with
        cross-sectional operators, and calculators with a cache (whose entries hold whole
        panels), are computed whole (:meth:`compute`) and then written. The file appears
        atomically when complete.
        """
        path = Path(path)
        roots = self.parse(panel.fields)
        if self.cache is not None or any(
                st.layout == DATES for st in plan_stages(list(roots.values()))):
            return self.compute(panel).to_parquet(path)
        _atomic_parquet(path, (_arrow_table(r.to_long()) for r in self.iter_blocks(panel)))
        return path


# ---------------------------------------------------------------------------- helpers
def _chunks(n: int, size: int) -> tuple[int, ...]:
    if n == 0:
        return (0,)
    size = max(1, min(size, n))
    full, rest = divmod(n, size)
    return (size,) * full + ((rest,) if rest else ())


def _slices(chunks: tuple[int, ...]) -> Iterator[slice]:
    start = 0
    for c in chunks:
        yield slice(start, start + c)
        start += c


def _host_as(block: Any, dtype: Any) -> np.ndarray:
    """A block on the host in the output dtype (cast on the worker: less to gather)."""
    return to_host(block).astype(dtype, copy=False)


def _full(value: Any, shape: tuple[int, int]) -> np.ndarray:
    arr = to_host(value)
    if arr.shape != shape:
        arr = np.broadcast_to(np.asarray(arr, dtype=np.float64), shape).copy()
    return arr


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, enabled: bool, desc: str) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False)
