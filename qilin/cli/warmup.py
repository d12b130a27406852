"""``qilin warmup``: compile every numba kernel once (``make run``/``make test`` call it).

Examples
--------
>>> import argparse
>>> parser = argparse.ArgumentParser(prog="qilin")
>>> register(parser.add_subparsers(dest="command"))
>>> parser.parse_args(["warmup", "--if-needed"]).if_needed
True
"""

from __future__ import annotations

import argparse
from typing import Any


def _warmup(args: argparse.Namespace) -> int:
    from qilin.warmup import kernels_cached, warm_up

    if args.if_needed and kernels_cached():
        print("qilin: kernels already compiled (numba cache is current)")
        return 0
    seconds = warm_up()
    print(f"qilin: kernels compiled in {seconds:.0f} s; later runs load them from the cache")
    return 0


def register(subparsers: Any) -> None:
    """Add ``qilin warmup``."""
    p = subparsers.add_parser(
        "warmup", help="compile the numba kernels now (first run only) instead of on first use")
    p.add_argument("--if-needed", action="store_true",
                   help="do nothing when every kernel's cache is current")
    p.set_defaults(func=_warmup)
