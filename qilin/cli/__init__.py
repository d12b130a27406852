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
import os
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NoReturn

from qilin.errors import QilinError

#: Modules providing ``register(subparsers)``; each owns one top-level command.
COMMAND_MODULES = (
    "qilin.cli.data",
    "qilin.cli.factors",
    "qilin.cli.backtest",
    "qilin.cli.monitor",
    "qilin.cli.model",
    "qilin.cli.pipeline",
    "qilin.cli.warmup",
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


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Help that ends each option with its default, unless the text already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("default" in text or default in (None, False, argparse.SUPPRESS)
                or action.option_strings == [] or "%(default)" in text):
            return text
        return f"{text} (default: %(default)s)"


class QilinArgumentParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (then exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every area's sub-commands.

    Every parser shows each option's default in ``--help`` and accepts ``-v`` anywhere.
    """
    from qilin import __version__

    parser = QilinArgumentParser(
        prog="qilin", description="Quantitative equity research at scale (CPU, GPU, Dask).",
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"qilin {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log at INFO level and show full tracebacks of internal errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    info = sub.add_parser("info", help="versions, backend, GPUs and cluster profile")
    info.add_argument("--cluster", default=None, help="cluster profile to describe")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=_info)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    for child in iter_parsers(parser):
        child.formatter_class = DefaultsHelpFormatter
        if child is not parser:
            child.add_argument("-v", "--verbose", action="store_true",
                               default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def iter_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """``parser`` and every sub-command parser below it, depth first."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                yield from iter_parsers(child)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``qilin`` console script; returns the exit code."""
    return run(build_parser(), argv)


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` with ``parser`` and run the chosen command's ``func``.

    A mistake in the input (a :class:`~qilin.errors.QilinError`, a missing or unreadable
    file) prints one line and gives exit status 2. Any other exception is a bug: one line
    says where its full traceback was written (``-v`` prints it instead), exit status 1.
    """
    args = parser.parse_args(argv)
    verbose = bool(getattr(args, "verbose", False))
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # dask sets its own loggers to INFO; without -v the command line shows warnings only
    logging.getLogger("distributed").setLevel(level)
    warnings.formatwarning = _one_line_warning
    if args.command not in _NO_KERNELS:
        _announce_first_compile()
    try:
        return int(args.func(args) or 0)
    except QilinError as exc:
        text = str(exc) if verbose else str(exc).splitlines()[0]
        print(f"qilin: error: {text}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `qilin factors list | head`: the reader has gone, stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except OSError as exc:
        print(f"qilin: error: {_os_error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qilin: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: say where the traceback is, keep the terminal clean
        if verbose:
            traceback.print_exc()
            return 1
        where = _write_traceback()
        first = (str(exc).splitlines() or [""])[0]
        print(f"qilin: internal error: {type(exc).__name__}: {first} (full traceback in "
              f"{where}; rerun with -v to print it)", file=sys.stderr)
        return 1


#: Commands that never run a numba kernel.
_NO_KERNELS = frozenset({"info", "warmup", "data"})


def _announce_first_compile() -> None:
    from qilin.warmup import FIRST_COMPILE_NOTE, kernels_cached

    if not kernels_cached():
        print(f"qilin: first run: numba kernels are compiled as they are needed "
              f"({FIRST_COMPILE_NOTE}); 'qilin warmup' does it up front", file=sys.stderr)


def _os_error_line(exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    return f"{exc.filename}: {reason}" if exc.filename else reason


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str,
                      lineno: int, line: str | None = None) -> str:
    return f"qilin: warning: {str(message).splitlines()[0]}\n"


def _write_traceback() -> Path:
    """Write the exception being handled to a fresh file under the temp folder."""
    folder = Path(tempfile.gettempdir()) / "qilin-errors"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = folder / f"qilin-{stamp}-{os.getpid()}.log"
    path.write_text(f"qilin {' '.join(sys.argv[1:])}\n\n{traceback.format_exc()}")
    return path


if __name__ == "__main__":
    sys.exit(main())
