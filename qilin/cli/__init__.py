"""The ``qilin`` command.

Each area registers its own sub-commands (``qilin data``, ``qilin factors``,
``qilin backtest``, ``qilin monitor``) from a ``commands`` module with a
``register(subparsers)`` function; this module only assembles them and runs the chosen one.
Errors qilin raises on purpose print one line and exit 2.

Examples
--------
>>> parser = build_parser()
>>> parser.parse_args(["info"]).command
'info'
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Sequence

from qilin.errors import QilinError

#: Modules providing ``register(subparsers)``; each owns one top-level command.
COMMAND_MODULES = (
    "qilin.cli.data",
    "qilin.cli.factors",
    "qilin.cli.backtest",
    "qilin.cli.monitor",
    "qilin.cli.model",
    "qilin.cli.pipeline",
)


def _info(args: argparse.Namespace) -> int:
    from qilin.info import collect_info

    info = collect_info(cluster=args.cluster)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        for key, value in info.items():
            if isinstance(value, dict):
                print(f"{key}:")
                for k, v in value.items():
                    print(f"  {k}: {v}")
            else:
                print(f"{key}: {value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every area's sub-commands."""
    parser = argparse.ArgumentParser(
        prog="qilin", description="Quantitative equity research at scale (CPU, GPU, Dask)."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    info = sub.add_parser("info", help="versions, backend, GPUs and cluster profile")
    info.add_argument("--cluster", default=None, help="cluster profile to describe")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=_info)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``qilin`` console script; returns the exit code."""
    return run(build_parser(), argv)


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` with ``parser`` and run the chosen command's ``func``.

    Errors qilin raises on purpose print one line and give exit code 2.
    """
    args = parser.parse_args(argv)
    level = logging.INFO if getattr(args, "verbose", False) else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # dask sets its own loggers to INFO; without -v the command line shows warnings only
    logging.getLogger("distributed").setLevel(level)
    try:
        return int(args.func(args) or 0)
    except QilinError as exc:
        print(f"qilin: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qilin: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
