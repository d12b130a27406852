"""What several ``qilin`` commands share: the data options, reading bars and a cluster.

Every command that reads bars takes the same options, added by :func:`add_data_arguments`:
``--data`` (a Parquet/CSV file, a folder or glob of them, or a Qlib data folder),
``--date-format`` (``strptime`` format of text dates; ambiguous day/month dates are refused
without it) and ``--validate auto|raise|drop|repair|none`` (default ``auto``: stop only on
findings that would corrupt results, see ``docs/data.md``). :func:`load_data` reads them.

Examples
--------
>>> import argparse
>>> p = argparse.ArgumentParser()
>>> add_data_arguments(p)
>>> a = p.parse_args(["--data", "b.csv", "--date-format", "%d/%m/%Y"])
>>> a.data, a.date_format, a.validate
('b.csv', '%d/%m/%Y', 'auto')
>>> with cluster_client(None) as client:
...     client is None
True
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from typing import Any

#: ``--validate`` choices; ``none`` skips validation.
VALIDATE_CHOICES = ("auto", "raise", "drop", "repair", "none")


def add_data_arguments(parser: argparse.ArgumentParser, positional: bool = False,
                       required: bool = True, validate: bool = True) -> None:
    """Add the bars options (``--data``, ``--date-format``, ``--validate``) to ``parser``.

    Parameters
    ----------
    parser : ArgumentParser
    positional : bool
        Take the bars as a positional ``path`` instead of ``--data``.
    required : bool
        Whether ``--data`` is required (ignored when ``positional``).
    validate : bool
        Add ``--validate`` (commands with their own policy option pass False).
    """
    what = "bars: Parquet/CSV file, folder or glob of them, or a Qlib data folder"
    if positional:
        parser.add_argument("path", help=what)
    else:
        parser.add_argument("--data", required=required, default=None if required else "",
                            help=what)
    parser.add_argument("--date-format", default=None, metavar="FMT",
                        help="strptime format of text dates, e.g. %%d/%%m/%%Y (default: "
                             "ISO or YYYYMMDD; ambiguous day/month dates are refused)")
    if validate:
        parser.add_argument(
            "--validate", default="auto", choices=VALIDATE_CHOICES,
            help="validation policy (default auto: stop only on findings that would corrupt "
                 "results, report the rest; raise: stop on any error; drop/repair: remove or "
                 "fix bad rows; none: no checks)")


def load_data(path: str, validate: str | None = "auto", date_format: str | None = None,
              market: Any = None, return_report: bool = False) -> Any:
    """The Panel of the bars at ``path`` (``validate="none"`` skips validation).

    With ``return_report`` returns ``(panel, report)`` (the report is None under ``none``),
    so a command can keep the validation findings in its run report.
    """
    from qilin.data.loader import load_panel

    policy = None if validate in (None, "none") else validate
    return load_panel(path, backend="cpu", validate=policy, date_format=date_format,
                      market=market, return_report=return_report)


def validation_counts(report: Any) -> dict[str, int]:
    """Findings and changes per check of a validation report (empty without one)."""
    if report is None:
        return {}
    return {str(k): int(v) for k, v in report.counts().items()}


@contextlib.contextmanager
def cluster_client(cluster: str | None) -> Iterator[Any]:
    """A Dask client for ``cluster`` (a mode, ``tcp://`` address), or ``None`` for no cluster."""
    if not cluster:
        yield None
        return
    from qilin.cluster import ClusterManager

    manager = (ClusterManager("remote", address=cluster) if "://" in cluster
               else ClusterManager(cluster))  # type: ignore[arg-type]
    with manager as client:
        yield client
