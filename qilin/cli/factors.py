"""``qilin factors``: compute factor sets (``compute``; ``--out-dir`` streams a whole market
to a partitioned Parquet dataset, see docs/whole_market.md) and evaluate them (``evaluate``).

Examples
--------
>>> import argparse
>>> parser = argparse.ArgumentParser()
>>> register(parser.add_subparsers(dest="command"))
>>> args = parser.parse_args(["factors", "compute", "--data", "bars.parquet",
...                           "--factors", "mom=close/ts_delay(close, 5)", "--out", "f.parquet"])
>>> args.factors_command, args.dtype
('compute', 'float64')
>>> parse_factor_arg("a = close / open; b = ts_mean(close, 5)")
[('a', 'close / open'), ('b', 'ts_mean(close, 5)')]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from qilin.cli.common import cluster_client, load_data
from qilin.cli.factors_evaluate import add_evaluate_parser
from qilin.errors import DataError, ExpressionError


def parse_factor_arg(value: str) -> list[tuple[str, str]] | str:
    """``alpha158``, a YAML file of ``name: expression``, or ``"name=expr; name=expr"``.

    Raises
    ------
    ExpressionError
        For an inline item without ``name=``, or a YAML file that is not a mapping/list.
    """
    text = value.strip()
    if text.lower() == "alpha158":
        return "alpha158"
    if text.endswith((".yaml", ".yml")):
        return _factors_from_yaml(Path(text))
    out = []
    for item in filter(None, (p.strip() for p in text.split(";"))):
        name, sep, expr = item.partition("=")
        if not sep or not name.strip() or not expr.strip() or expr.startswith("="):
            raise ExpressionError(f"factor {item!r} must be written name=expression", item, 0)
        out.append((name.strip(), expr.strip()))
    if not out:
        raise ExpressionError("no factors given", value, 0)
    return out


def _factors_from_yaml(path: Path) -> list[tuple[str, str]]:
    import yaml

    if not path.exists():
        raise DataError(f"factor file {path} does not exist")
    with path.open() as fh:
        data = yaml.safe_load(fh)
    if isinstance(data, dict) and "factors" in data:
        data = data["factors"]
    if isinstance(data, dict):
        return [(str(k), str(v)) for k, v in data.items()]
    if isinstance(data, list) and all(isinstance(d, dict) and {"name", "expr"} <= set(d)
                                      for d in data):
        return [(str(d["name"]), str(d["expr"])) for d in data]
    raise ExpressionError(f"{path}: expected a mapping name: expression (optionally under "
                          "'factors:') or a list of {name, expr}")






def _compute(args: argparse.Namespace) -> int:
    from qilin.factors.calculator import FactorCalculator

    factors = parse_factor_arg(args.factors)
    if args.out_dir is not None:
        return _compute_streamed(args, factors)
    start = time.perf_counter()
    panel = load_data(args.data, args.validate)
    if args.adjust:
        panel = panel.adjusted()
    with cluster_client(args.cluster) as client:
        calc = FactorCalculator(factors, client=client, backend=args.backend, dtype=args.dtype,
                                cache_dir=args.cache_dir, block_symbols=args.block_symbols,
                                progress=not args.quiet)
        calc.to_parquet(panel, args.out)
    n = len(calc.names)
    print(f"wrote {n} factor{'s' * (n != 1)} for {panel.shape[1]} symbols x {panel.shape[0]} "
          f"dates to {args.out} in {time.perf_counter() - start:.1f}s "
          f"(backend {calc.backend.name}, {args.dtype})")
    return 0


def _compute_streamed(args: argparse.Namespace, factors: Any) -> int:
    """``--out-dir``: stream symbol blocks from the Parquet source to a partitioned dataset."""
    from qilin.factors.streaming import stream_factors

    if args.cache_dir is not None:
        raise DataError("--cache-dir does not apply to --out-dir: the dataset's own block "
                        "markers make a rerun resume; drop --cache-dir")
    if args.backend == "gpu":
        raise DataError("--out-dir streams on the CPU; drop --backend gpu")
    validate = None if args.validate == "none" else args.validate
    with cluster_client(args.cluster) as client:
        res = stream_factors(
            args.data, args.out_dir, factors, dtype=args.dtype, adjust=args.adjust,
            validate=validate, memory_limit=args.memory_limit,
            block_symbols=args.block_symbols, workers=args.workers, client=client,
            codec=args.codec, resume=not args.no_resume, progress=not args.quiet)
    print(f"wrote {res.blocks} partition{'s' * (res.blocks != 1)} ({res.computed} computed, "
          f"{res.skipped} kept from an earlier run) with {res.rows} rows to {args.out_dir} in "
          f"{res.seconds:.1f}s ({res.cells_per_second / 1e6:.1f} M feature-cells/s, "
          f"{res.block_symbols} symbols per block, {res.workers} worker"
          f"{'s' * (res.workers != 1)}, {args.dtype})")
    return 0


def _workers_arg(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return n


def register(subparsers: Any) -> None:
    """Add ``qilin factors compute`` (and ``evaluate`` when that module is present)."""
    factors = subparsers.add_parser("factors", help="compute and evaluate factor expressions")
    sub = factors.add_subparsers(dest="factors_command", required=True, metavar="ACTION")
    compute = sub.add_parser(
        "compute", help="compute a factor set over a data file and write long Parquet")
    compute.add_argument("--data", required=True, help="long Parquet bars (date, symbol, ...)")
    compute.add_argument(
        "--factors", required=True,
        help='"alpha158", a YAML file (name: expression) or "name=expr; name=expr"')
    target = compute.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", help="output Parquet path (one file, computed in memory)")
    target.add_argument(
        "--out-dir", default=None,
        help="stream to a partitioned Parquet dataset in this folder, one file per symbol "
             "block within --memory-limit; an existing dataset is resumed (finished blocks "
             "are kept)")
    compute.add_argument("--cluster", default=None,
                         help="cluster mode (local, threads, cuda, auto) or tcp:// address")
    compute.add_argument("--backend", default="auto", choices=["auto", "cpu", "gpu"])
    compute.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    compute.add_argument("--cache-dir", default=None, help="reuse results cached here")
    compute.add_argument("--block-symbols", type=int, default=None,
                         help="symbols per block (bounds memory)")
    compute.add_argument("--validate", default="raise",
                         choices=["raise", "drop", "repair", "none"],
                         help="validation policy for the bars (default raise)")
    compute.add_argument("--adjust", action="store_true",
                         help="back-adjust prices with adj_factor before computing")
    compute.add_argument("--memory-limit", default="4GiB",
                         help="--out-dir: memory budget of the job (e.g. 8GiB; on a cluster, "
                              "of one worker); sizes the symbol blocks (default 4GiB)")
    compute.add_argument("--workers", type=_workers_arg, default=None,
                         help="--out-dir: local worker processes (default: CPU count, 1 for jobs "
                              "under 3e8 feature-cells; 1 runs in-process with "
                              "read-ahead/write-behind threads)")
    compute.add_argument("--codec", default="zstd", choices=["zstd", "lz4", "snappy", "none"],
                         help="--out-dir: Parquet compression (default zstd, level 1)")
    compute.add_argument("--no-resume", action="store_true",
                         help="--out-dir: recompute every block even if finished")
    compute.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    compute.set_defaults(func=_compute)
    add_evaluate_parser(sub)
