"""``qilin factors evaluate``: IC, Rank IC, quantile returns and turnover of computed factors.

``qilin factors evaluate --factors F.parquet --data BARS.parquet --out REPORT.json``
reads a long factor file (``date, symbol`` and one column per factor, as written by
``qilin factors compute``) and the bars it was computed from, evaluates every factor with
:func:`qilin.factors.evaluation.evaluate_factors`, prints a compact summary table and writes
a JSON report atomically (optionally PNG plots per factor).

Examples
--------
>>> import argparse
>>> parser = argparse.ArgumentParser()
>>> _ = add_evaluate_parser(parser.add_subparsers(dest="factors_command"))
>>> args = parser.parse_args(["evaluate", "--factors", "f.parquet", "--data", "b.parquet",
...                           "--out", "r.json", "--horizons", "1,5"])
>>> args.horizons, args.quantiles
((1, 5), 5)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import pandas as pd

from qilin.atomic import write_json_atomic
from qilin.cli.common import add_data_arguments, load_data, read_long_table
from qilin.errors import DataError, ParameterError
from qilin.factors.evaluation import (
    DEFAULT_HORIZONS,
    evaluate_factors,
    summary_table,
)


def parse_horizons(text: str) -> tuple[int, ...]:
    """``"1,5,10"`` -> ``(1, 5, 10)``.

    Examples
    --------
    >>> parse_horizons(" 20, 1,5 ")
    (1, 5, 20)
    """
    try:
        values = sorted({int(p) for p in text.split(",") if p.strip()})
    except ValueError:
        raise ParameterError(
            f"--horizons must be comma-separated whole days like 1,5,10,20, got {text!r}"
        ) from None
    if not values or values[0] < 1:
        raise ParameterError(f"--horizons needs positive days, got {text!r}")
    return tuple(values)


def _horizons_arg(text: str) -> tuple[int, ...]:
    try:
        return parse_horizons(text)
    except ParameterError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def load_factor_table(path: str | Path) -> pd.DataFrame:
    """A long factor frame (``date, symbol, <factor columns>``), checked.

    Raises
    ------
    DataError
        Missing file, no ``date``/``symbol`` column, repeated (date, symbol), no numeric
        factor column.
    """
    path = Path(path)
    df = read_long_table(path, "factors")
    names = [c for c in df.columns if c not in ("date", "symbol")]
    numeric = [c for c in names if pd.api.types.is_numeric_dtype(df[c])
               and not pd.api.types.is_bool_dtype(df[c])]
    if not numeric:
        raise DataError(f"factors file {path} has no numeric factor column besides date, symbol")
    dropped = sorted(set(names) - set(numeric))
    if dropped:
        raise DataError(f"factors file {path}: columns {dropped} are not numeric")
    return df[["date", "symbol", *numeric]]


def format_summary(table: pd.DataFrame) -> str:
    """The compact text table printed by the command."""
    view = table[["ic_mean", "ic_ir", "rank_ic_mean", "rank_ic_ir", "rank_ic_t",
                  "long_short_mean", "top_turnover", "rank_autocorr"]].copy()
    view.columns = ["IC", "ICIR", "RankIC", "RankICIR", "t", "LS mean", "TopTurn", "RankAC"]
    return view.to_string(float_format=lambda v: f"{v:.4f}")


def run_evaluate(args: argparse.Namespace) -> int:
    """Body of ``qilin factors evaluate``; returns the exit code."""
    start = time.perf_counter()
    factors = load_factor_table(args.factors)
    panel = load_data(args.data, args.validate, args.date_format)
    if args.adjust:
        panel = panel.adjusted()
    evaluations = evaluate_factors(
        factors, panel, horizons=args.horizons, quantiles=args.quantiles,
        groups=args.groups, backend=args.backend, dropna=args.dropna,
        progress=not args.quiet and factors.shape[1] > 3)
    table = summary_table(evaluations)
    report = {
        "factors_file": str(args.factors),
        "data_file": str(args.data),
        "horizons": list(args.horizons),
        "quantiles": args.quantiles,
        "adjusted": bool(args.adjust),
        "groups": args.groups,
        "dropna": args.dropna,
        "validate": args.validate,
        "panel": {"dates": panel.shape[0], "symbols": panel.shape[1],
                  "start": str(panel.dates[0].date()) if len(panel.dates) else None,
                  "end": str(panel.dates[-1].date()) if len(panel.dates) else None},
        "summary": json.loads(table.reset_index().to_json(orient="records")),
        "evaluations": {name: ev.to_dict(series=not args.no_series)
                        for name, ev in evaluations.items()},
    }
    out = Path(args.out)
    write_json_atomic(out, report)
    plots: list[Path] = []
    if args.plots:  # per-factor plots only when asked for
        from tqdm.auto import tqdm

        for ev in tqdm(list(evaluations.values()), desc="plotting", unit="factor",
                       leave=False, disable=args.quiet or len(evaluations) < 2):
            plots.extend(ev.plot(args.plots))
    if args.tear_sheet:
        from qilin.reports import factor_tear_sheet, factor_values

        factor_tear_sheet(evaluations, args.tear_sheet, values=factor_values(factors, panel))
    print(format_summary(table))
    backend = next(iter(evaluations.values())).backend if evaluations else "cpu"
    print(f"evaluated {len(evaluations)} factor{'s' * (len(evaluations) != 1)} on "
          f"{panel.shape[1]} symbols x {panel.shape[0]} dates in "
          f"{time.perf_counter() - start:.1f}s (backend {backend}); report: {out}"
          + (f"; {len(plots)} plots in {args.plots}" if args.plots else "")
          + (f"; tear sheet {args.tear_sheet}/factor_tear_sheet.html" if args.tear_sheet
             else ""))
    return 0


def add_evaluate_parser(factors_subparsers: Any) -> argparse.ArgumentParser:
    """Add ``evaluate`` to the ``qilin factors`` sub-commands; returns its parser."""
    p = factors_subparsers.add_parser(
        "evaluate", help="IC / Rank IC, quantile returns, turnover of a factor file")
    p.add_argument("--factors", required=True,
                   help="long factor file (Parquet or CSV): date, symbol, one column per factor")
    add_data_arguments(p)
    p.add_argument("--out", required=True, help="JSON report path (written atomically)")
    p.add_argument("--horizons", type=_horizons_arg, default=DEFAULT_HORIZONS,
                   help="forward-return horizons in trading days (default 1,5,10,20)")
    p.add_argument("--quantiles", type=int, default=5, help="quantile buckets (default 5)")
    p.add_argument("--plots", default=None,
                   help="folder for per-factor PNG plots (IC, quantiles, L/S); no plots are "
                        "drawn without it (default: none)")
    p.add_argument("--tear-sheet", default=None,
                   help="folder for the factor tear sheet (HTML + PNG; best 3 drawn in detail)")
    p.add_argument("--groups", default=None,
                   help="panel info column to group by for group IC (industry, board)")
    p.add_argument("--adjust", action="store_true",
                   help="back-adjust prices with adj_factor before computing returns")
    p.add_argument("--backend", default=None, choices=["auto", "cpu", "gpu"],
                   help="array backend (default: the data's, i.e. cpu)")
    p.add_argument("--dropna", default="all", choices=["all", "each"],
                   help="'all' (alphalens): same names for every horizon; 'each': per horizon")
    p.add_argument("--no-series", action="store_true",
                   help="leave the per-date series out of the report (tables only)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bar (shown on stderr when evaluating two or more factors)")
    p.set_defaults(func=run_evaluate)
    return p
