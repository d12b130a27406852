"""Default validation policy on the real files (issue 10): real files load, corruption stops.

The shared S&P 500 file has 27 NaN open/high/low values and a few inconsistent OHLC rows;
the default policy (``auto``) treats them as missing data / reports them and loads the
file. A decimal shift or a repeated row with different values stops with one line naming
``--validate repair|drop|none`` and what each would change.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qilin.data.loader import load_bars, load_panel
from qilin.errors import ValidationError


@pytest.mark.parametrize("which", ["sp500_path", "ashare_path"])
def test_real_files_load_with_defaults(request, which: str) -> None:
    path = request.getfixturevalue(which)
    panel, rep = load_panel(path, return_report=True)
    assert rep.policy == "auto" and rep.n_rows_out == rep.n_rows_in
    assert int(np.asarray(panel.valid).sum()) == rep.n_rows_in
    if which == "sp500_path":
        assert rep.counts()["nan_price"] == 27  # kept as missing data, reported
        assert panel.shape == (1259, 505)
        r = panel.dates.get_loc(pd.Timestamp("2017-07-26"))
        c = panel.symbols.get_loc("BHF")
        assert np.isnan(panel["open"][r, c]) and np.isfinite(panel["close"][r, c])


def _subset(path: Path, n_symbols: int = 30) -> pd.DataFrame:
    df = load_bars(path)
    keep = sorted(df["symbol"].unique())[:n_symbols]
    return df[df["symbol"].isin(keep)].reset_index(drop=True)


def _decimal_shift(df: pd.DataFrame) -> pd.DataFrame:
    sym = df["symbol"].iloc[0]
    dates = df.loc[df["symbol"] == sym, "date"].iloc[200:203]
    m = (df["symbol"] == sym) & df["date"].isin(dates)
    out = df.copy()
    out.loc[m, ["open", "high", "low", "close"]] *= 10
    return out


def _conflicting_duplicate(df: pd.DataFrame) -> pd.DataFrame:
    row = df.iloc[[100]].copy()
    row["close"] *= 1.03
    row["high"] = np.maximum(row["high"], row["close"])
    return pd.concat([df, row], ignore_index=True)


@pytest.mark.parametrize("which", ["sp500_path", "ashare_path"])
@pytest.mark.parametrize("corrupt, what", [(_decimal_shift, "decimal shift"),
                                           (_conflicting_duplicate, "different values")])
def test_corrupted_copies_stop_naming_the_flag(request, tmp_path, which, corrupt, what) -> None:
    df = _subset(request.getfixturevalue(which))
    path = tmp_path / "copy.parquet"
    corrupt(df).to_parquet(path, index=False)
    with pytest.raises(ValidationError) as info:
        load_panel(path, backend="cpu")
    msg = str(info.value)
    assert "\n" not in msg and what in msg and "copy.parquet" in msg
    for choice in ("--validate", "'repair'", "'drop'", "'none'"):
        assert choice in msg
    # each named choice does what the message says
    _, rep = load_panel(path, backend="cpu", validate="repair", return_report=True)
    assert rep.n_rows_out < rep.n_rows_in
    _, rep = load_panel(path, backend="cpu", validate="drop", return_report=True)
    assert rep.n_rows_out < rep.n_rows_in
    # the clean subset loads under the default
    df.to_parquet(path, index=False)
    assert load_panel(path, backend="cpu").shape[1] == df["symbol"].nunique()


def test_identical_duplicates_pass_and_are_recorded(sp500_path, tmp_path) -> None:
    df = _subset(sp500_path, 5)
    path = tmp_path / "dup.parquet"
    pd.concat([df, df.iloc[[7]]], ignore_index=True).to_parquet(path, index=False)
    _, rep = load_panel(path, backend="cpu", return_report=True)
    assert rep.n_rows_out == len(df)
    assert set(rep.changes["action"]) >= {"drop_row", "dedupe"}
