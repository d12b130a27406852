"""``qilin data``: validate bar files and generate the synthetic market.

``qilin data validate PATH [--date-format FMT] [--market cn|us]
[--policy raise|auto|drop|repair] [--report OUT.json] [--out CLEAN.parquet]`` prints the
validation summary (every finding) and exits 1 when the bars fail the policy, 0 otherwise.
The default policy is ``auto``, the one every ``--data`` option loads with: it fails only on
findings that would corrupt results, so exit 0 means the other commands will read the file.
``--policy raise`` fails on any error-severity finding.
``qilin data synth --symbols N --days T --seed S --out PATH`` writes synthetic bars to
Parquet or CSV (by extension, atomically), with progress on stderr.

Examples
--------
>>> import argparse
>>> parser = argparse.ArgumentParser()
>>> register(parser.add_subparsers(dest="command"))
>>> args = parser.parse_args(["data", "synth", "--symbols", "5", "--out", "x.parquet"])
>>> args.data_command, args.symbols, args.days, args.seed
('synth', 5, 1500, 42)
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from qilin.cli.common import add_data_arguments
from qilin.errors import ValidationError


def register(subparsers: Any) -> None:
    """Add the ``data`` command and its sub-commands to the ``qilin`` parser."""
    data = subparsers.add_parser("data", help="validate bar files, generate synthetic bars")
    sub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")

    val = sub.add_parser("validate", help="check a bar file (Parquet/CSV, dir or glob)")
    add_data_arguments(val, positional=True, validate=False)
    val.add_argument("--market", choices=("cn", "us"), default=None,
                     help="market rules to check (cn: A-share price limits, preclose)")
    val.add_argument("--policy", choices=("raise", "auto", "drop", "repair"), default="auto",
                     help="what to do with bad rows (affects --out and the exit status; "
                          "default auto: fail only on findings that would corrupt results, as "
                          "every --data option does; raise: fail on any error finding)")
    val.add_argument("--report", metavar="OUT.json", default=None,
                     help="write the full report (every finding and change) as JSON")
    val.add_argument("--out", metavar="CLEAN", default=None,
                     help="write the bars after the policy (.parquet or .csv)")
    val.add_argument("--jump-threshold", type=float, default=0.4,
                     help="|log return| counted as a jump (default 0.4)")
    val.add_argument("--examples", type=int, default=3,
                     help="examples printed per check (default 3)")
    val.set_defaults(func=_validate)

    syn = sub.add_parser("synth", help="write the synthetic A-share market as long bars")
    syn.add_argument("--symbols", type=int, default=500, help="number of symbols (500)")
    syn.add_argument("--days", type=int, default=1500, help="number of trading days (1500)")
    syn.add_argument("--seed", type=int, default=42, help="random seed (42)")
    syn.add_argument("--start", default="2016-01-04", help="first calendar day")
    syn.add_argument("--out", required=True, help="output .parquet or .csv (.csv.gz)")
    syn.add_argument("--quiet", action="store_true", help="no progress bar")
    syn.set_defaults(func=_synth)


def _validate(args: argparse.Namespace) -> int:
    from qilin.data.loader import load_bars, save_bars
    from qilin.data.validation import validate_bars

    bars = load_bars(args.path, date_format=args.date_format)
    try:
        clean, report = validate_bars(bars, policy=args.policy, market=args.market,
                                      jump_threshold=args.jump_threshold, source=args.path,
                                      date_format=args.date_format)
    except ValidationError as exc:
        if exc.report is None:
            raise
        clean, report = None, exc.report
    print(report.summary(max_examples=args.examples))
    if args.report:
        report.to_json(args.report)
        print(f"report written to {args.report}")
    if args.out:
        if clean is None:
            print(f"not writing {args.out}: the bars failed under policy {args.policy!r} "
                  "(use --policy drop or repair)", file=sys.stderr)
        else:
            save_bars(clean, args.out)
            print(f"{len(clean)} rows written to {args.out}")
    return 1 if clean is None else 0


def _synth(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from qilin.data.loader import save_bars
    from qilin.data.synthetic import synthetic_bars

    with tqdm(total=args.days, desc="simulating days", unit="day", file=sys.stderr,
              disable=args.quiet) as bar:
        bars = synthetic_bars(n_symbols=args.symbols, n_days=args.days, seed=args.seed,
                              start=args.start, progress=bar.update)
    with tqdm(total=len(bars), desc=f"writing {args.out}", unit="row", unit_scale=True,
              file=sys.stderr, disable=args.quiet) as bar:
        path = save_bars(bars, args.out, progress=bar.update)
    print(f"{len(bars)} bars ({args.symbols} symbols x {args.days} days, seed {args.seed}) "
          f"written to {path}")
    return 0
