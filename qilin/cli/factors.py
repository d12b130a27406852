"""``qilin factors``: compute factor sets (``compute``; ``--out-dir`` streams a whole market
to a partitioned Parquet dataset, see docs/whole_market.md), list what expressions can use
(``list``) and evaluate factors (``evaluate``).

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
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from qilin.cli.common import add_data_arguments, cluster_client, load_data
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
    panel = load_data(args.data, args.validate, args.date_format)
    if args.adjust:
        panel = panel.adjusted()
    with cluster_client(args.cluster) as client, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        calc = FactorCalculator(factors, client=client, backend=args.backend, dtype=args.dtype,
                                cache_dir=args.cache_dir, block_symbols=args.block_symbols,
                                progress=not args.quiet, missing_fields=args.missing_fields,
                                derive_vwap=args.derive_vwap,
                                window_policy=args.window_policy)
        note = ""
        if calc.cache is not None:  # whole-panel entries: compute, then write
            result = calc.compute(panel)
            result.to_parquet(args.out)
            note = (f"; cache {args.cache_dir}: {result.cache_hits} read, {result.computed} "
                    f"computed, {result.cache_corrupt} unreadable "
                    f"entr{'y' if result.cache_corrupt == 1 else 'ies'} rewritten")
        else:
            calc.to_parquet(panel, args.out)
    for w in caught:  # one line each (the factor layer warns once per run)
        print(f"warning: {w.message}", file=sys.stderr)
    if args.derive_vwap and "vwap" not in panel.fields:
        note += "; vwap derived as (high + low + close) / 3"
    n = len(calc.names)
    print(f"wrote {n} factor{'s' * (n != 1)} for {panel.shape[1]} symbols x {panel.shape[0]} "
          f"dates to {args.out} in {time.perf_counter() - start:.1f}s "
          f"(backend {calc.backend.name}, {args.dtype}, {args.window_policy} windows){note}")
    return 0


def format_catalogue(cat: dict[str, Any]) -> str:
    """The text ``qilin factors list`` prints (operators, indicators, Alpha158 summary).

    Examples
    --------
    >>> from qilin.factors.catalogue import catalogue
    >>> text = format_catalogue(catalogue())
    >>> "ts_mean(x, window)" in text and "rsi(close, timeperiod=14)" in text
    True
    """
    lines = ["Variables: " + " ".join(cat["variables"])
             + " (and any other numeric field of the data; Qlib's $close spelling works)",
             "Infix: " + "  ".join(f"{sym} {op}" for sym, op in cat["infix"].items()), ""]
    kinds = {"ts": "Time-series operators (along each symbol's dates)",
             "cs": "Cross-sectional operators (across symbols per date)",
             "elementwise": "Element-wise operators"}
    for kind, title in kinds.items():
        lines.append(f"{title}:")
        for op in cat["operators"]:
            if op["kind"] == kind:
                extra = " ".join(op["infix"] + op["qlib"])
                lines.append(f"  {op['signature']:<38} {op['doc']}"
                             + (f"  [{extra}]" if extra else ""))
        lines.append("")
    lines.append("Indicators (TA-Lib definitions):")
    lines += [f"  {op['signature']:<38} {op['doc']}" for op in cat["indicators"]]
    groups = list(dict.fromkeys(f["group"] for f in cat["alpha158"]))
    lines += ["", f"Alpha158: {len(cat['alpha158'])} features in groups {' '.join(groups)} "
              "(qilin factors list --alpha158 for their formulas)",
              f"Window policies: {', '.join(cat['window_policies'])} (--window-policy)"]
    return "\n".join(lines)


def _list(args: argparse.Namespace) -> int:
    from qilin.factors.catalogue import alpha158_catalogue, catalogue

    if args.alpha158:
        features = alpha158_catalogue()
        if args.json:
            print(json.dumps(features, indent=1))
        else:
            width = max(len(f["name"]) for f in features)
            print("\n".join(f"{f['name']:<{width}}  {f['expression']}" for f in features))
        return 0
    cat = catalogue()
    print(json.dumps(cat, indent=1) if args.json else format_catalogue(cat))
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
            codec=args.codec, resume=not args.no_resume, progress=not args.quiet,
            extra=_calculator_options(args), partition_by=args.partition_by,
            direct_io=not args.buffered_write)
    by_year = ", split by year" if args.partition_by == "year" else ""
    print(f"wrote {res.blocks} partition{'s' * (res.blocks != 1)}{by_year} ({res.computed} "
          f"computed, {res.skipped} kept from an earlier run) with {res.rows} rows to "
          f"{args.out_dir} in "
          f"{res.seconds:.1f}s ({res.cells_per_second / 1e6:.1f} M feature-cells/s, "
          f"{res.block_symbols} symbols per block, {res.workers} worker"
          f"{'s' * (res.workers != 1)}, {args.dtype})")
    return 0


def _calculator_options(args: argparse.Namespace) -> dict[str, Any]:
    """The calculator settings that differ from the defaults (part of every block key)."""
    options = {"window_policy": args.window_policy, "missing_fields": args.missing_fields,
               "derive_vwap": args.derive_vwap}
    defaults = {"window_policy": "ours", "missing_fields": None, "derive_vwap": False}
    return {k: v for k, v in options.items() if v != defaults[k]}


def _workers_arg(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return n


def register(subparsers: Any) -> None:
    """Add ``qilin factors compute``, ``list`` and ``evaluate``."""
    factors = subparsers.add_parser("factors", help="compute and evaluate factor expressions")
    sub = factors.add_subparsers(dest="factors_command", required=True, metavar="ACTION")
    compute = sub.add_parser(
        "compute", help="compute a factor set over a data file and write long Parquet")
    add_data_arguments(compute)
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
                         help="cluster mode (local, threads, cuda, auto) or tcp:// address "
                              "(default: none, in-process)")
    compute.add_argument("--backend", default="auto", choices=["auto", "cpu", "gpu"],
                         help="array backend (default auto: the GPU when one is usable)")
    compute.add_argument("--dtype", default="float64", choices=["float64", "float32"],
                         help="dtype of the written factors; computation is float64 "
                              "(default float64)")
    compute.add_argument("--cache-dir", default=None,
                         help="reuse results cached here, rewrite unreadable entries "
                              "(default: no cache)")
    compute.add_argument("--block-symbols", type=int, default=None,
                         help="symbols per block, bounds memory (default: all in-process, "
                              "500 when streaming)")
    compute.add_argument("--adjust", action="store_true",
                         help="back-adjust prices with adj_factor before computing")
    compute.add_argument("--missing-fields", default=None, choices=["raise", "nan"],
                         help="a factor reading a field the data lacks: raise an error, or "
                              "leave it NaN with one warning (default: Alpha158 features "
                              "NaN, other factors raise)")
    compute.add_argument("--derive-vwap", action="store_true",
                         help="bars without vwap and amount: use vwap = (high + low + close) "
                              "/ 3 (default: off, VWAP0 is NaN)")
    compute.add_argument("--window-policy", default="ours", choices=["ours", "qlib"],
                         help="rolling windows: 'ours' = the last n traded days, NaN until "
                              "full; 'qlib' = Qlib's calendar windows with suspended days as "
                              "gaps and partial windows (min_periods=1) (default ours)")
    compute.add_argument("--memory-limit", default="4GiB",
                         help="--out-dir: memory budget of the job (e.g. 8GiB; on a cluster, "
                              "of one worker); sizes the symbol blocks (default 4GiB)")
    compute.add_argument("--workers", type=_workers_arg, default=None,
                         help="--out-dir: local worker processes (default: CPU count, 1 for jobs "
                              "under 3e8 feature-cells; 1 runs in-process with "
                              "read-ahead/write-behind threads)")
    compute.add_argument("--codec", default="lz4", choices=["lz4", "zstd", "snappy", "none"],
                         help="--out-dir: Parquet compression (default lz4; zstd, at level 1, "
                              "writes about 11%% smaller files more slowly)")
    compute.add_argument("--partition-by", default="block", choices=["block", "year"],
                         help="--out-dir: one file per symbol block (block, the default), or "
                              "per block and calendar year in hive folders "
                              "year=YYYY/part-NNNNN.parquet (year)")
    compute.add_argument("--buffered-write", action="store_true",
                         help="--out-dir: write partitions through the page cache (default: "
                              "O_DIRECT where the file system allows it)")
    compute.add_argument("--no-resume", action="store_true",
                         help="--out-dir: recompute every block even if finished")
    compute.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    compute.set_defaults(func=_compute)
    listing = sub.add_parser(
        "list", help="operators with signatures, indicators, Alpha158 names and formulas")
    listing.add_argument("--alpha158", action="store_true",
                         help="list the 158 Alpha158 features with their formulas")
    listing.add_argument("--json", action="store_true", help="print JSON instead of text")
    listing.set_defaults(func=_list)
    add_evaluate_parser(sub)
