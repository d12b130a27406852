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
from pathlib import Path
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


def read_long_table(path: str | Path, what: str) -> Any:
    """A long Parquet or CSV (``.csv``, ``.csv.gz``, ``.txt``) table keyed by date and symbol.

    ``date`` becomes datetime, ``symbol`` text; a repeated (date, symbol) pair is an error.
    ``what`` names the input in messages (``"--signals"``, ``"factors"``).

    Raises
    ------
    DataError
        Missing or unreadable file, no ``date``/``symbol`` column, repeated keys.

    Examples
    --------
    >>> import pandas as pd, tempfile, os
    >>> f = os.path.join(tempfile.mkdtemp(), "s.csv")
    >>> pd.DataFrame({"date": ["2024-01-02"], "symbol": [1], "x": [0.5]}).to_csv(f, index=False)
    >>> read_long_table(f, "--signals")["symbol"].tolist()
    ['1']
    """
    import pandas as pd

    from qilin.errors import DataError

    p = Path(path)
    if not p.exists():
        raise DataError(f"{what} file {p} does not exist")
    name = p.name.lower()
    try:
        if name.endswith((".csv", ".csv.gz", ".txt")):
            df = pd.read_csv(p)
        else:
            df = pd.read_parquet(p)
    except Exception as exc:  # pandas/pyarrow raise many types for an unreadable file
        raise DataError(f"{what} file {p}: cannot read it: {exc}") from exc
    missing = [c for c in ("date", "symbol") if c not in df.columns]
    if missing:
        raise DataError(f"{what} file {p} has no {missing[0]!r} column; columns: "
                        f"{list(df.columns)}")
    try:
        df["date"] = pd.to_datetime(df["date"])
    except (ValueError, TypeError) as exc:
        raise DataError(f"{what} file {p}: column 'date' is not dates: {exc}") from exc
    df["symbol"] = df["symbol"].astype(str)
    repeated = df.duplicated(["date", "symbol"])
    if repeated.any():
        first = df[repeated].iloc[0]
        raise DataError(f"{what} file {p}: (date, symbol) repeats, first "
                        f"{first['symbol']} on {first['date'].date()}")
    return df
