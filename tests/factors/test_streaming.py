"""Streaming a factor set over a Parquet market to a partitioned dataset (qilin.factors.streaming).

Real files, real spawned worker processes, a real ``qilin`` subprocess killed mid-run; peak
memory measured with psutil over the process tree.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pyarrow.parquet as pq
import pytest

from qilin.cli import main
from qilin.data.blocks import ParquetSource, read_block, scan_axes
from qilin.data.loader import load_bars, load_panel, save_bars
from qilin.data.synthetic import synthetic_bars
from qilin.errors import DataError, ExpressionError, ParameterError
from qilin.factors.alpha158 import alpha158_features
from qilin.factors.calculator import FactorCalculator
from qilin.factors.streaming import block_symbols_for_budget, parse_memory, stream_factors

REPO = Path(__file__).resolve().parents[2]
SMALL = dict(alpha158_features(windows=(5, 20), include=["ROC", "MA", "STD", "CORR", "RSV"]))
SMALL.update(dict(alpha158_features()[:13]))  # K-bar and price features


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("src")
    return save_bars(synthetic_bars(n_symbols=40, n_days=260, seed=11),
                     folder / "bars.parquet")


def _dataset(folder: Path) -> pd.DataFrame:
    return pd.read_parquet(folder).reset_index(drop=True)


def _same_partitions(a: Path, b: Path, pattern: str = "part-*.parquet") -> None:
    names = sorted(p.relative_to(a).as_posix() for p in a.glob(pattern))
    assert names == sorted(p.relative_to(b).as_posix() for p in b.glob(pattern)) and names
    for name in names:
        ta, tb = pq.read_table(a / name), pq.read_table(b / name)
        assert ta.schema.equals(tb.schema) and ta.num_rows == tb.num_rows, name
        for col in ta.column_names:  # Arrow's equals() has NaN != NaN: compare bits
            x, y = ta[col].to_numpy(), tb[col].to_numpy()
            if x.dtype.kind == "f":
                x, y = x.view(f"u{x.itemsize}"), y.view(f"u{y.itemsize}")
            assert np.array_equal(x, y), (name, col)


def test_read_block_matches_the_whole_panel(source):
    src = ParquetSource.open(source)
    dates, symbols = scan_axes(src)
    panel = load_panel(source, backend="cpu", validate=None).adjusted()
    block = read_block(src, symbols[5], symbols[14], dates, ["close", "vwap", "volume"],
                       adjust=True)
    assert list(block.symbols) == list(symbols[5:15])
    want = panel.select(symbols=symbols[5:15])
    for name in ("close", "vwap", "volume"):
        np.testing.assert_array_equal(block[name], want[name])
        assert block[name].flags.f_contiguous
    np.testing.assert_array_equal(block.valid, want.valid)


def test_stream_equals_in_memory_compute_and_is_readable(source, tmp_path):
    out = tmp_path / "out"
    res = stream_factors(source, out, SMALL, dtype="float32", adjust=True, block_symbols=15,
                         workers=1, progress=False)
    assert (res.blocks, res.computed, res.skipped) == (3, 3, 0)
    got = _dataset(out)
    panel = load_panel(source, backend="cpu", validate=None).adjusted()
    want = FactorCalculator(SMALL, backend="cpu", dtype="float32", progress=False) \
        .compute(panel).to_long().sort_values(["symbol", "date"]).reset_index(drop=True)
    assert res.rows == len(want) == len(got)
    assert list(got.columns) == ["date", "symbol", *SMALL]
    assert (got["symbol"].astype(str).to_numpy() == want["symbol"].to_numpy()).all()
    assert (got["date"].to_numpy() == want["date"].to_numpy()).all()
    for name in SMALL:
        assert got[name].dtype == np.float32
        np.testing.assert_array_equal(got[name].to_numpy(), want[name].to_numpy())
    schema = pq.read_schema(out / "part-00000.parquet")
    assert str(schema.field("MA5").type) == "float"
    assert pq.ParquetFile(out / "part-00000.parquet").metadata.row_group(0).column(2) \
        .compression == "LZ4"
    import dask.dataframe as dd

    assert len(dd.read_parquet(str(out)).compute()) == len(want)
    assert len(load_bars(out)) == len(want)
    meta = json.loads((out / "_qilin" / "dataset.json").read_text())
    assert meta["dtype"] == "float32" and len(meta["blocks"]) == 3


def test_process_pool_writes_the_same_dataset(source, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    stream_factors(source, one, SMALL, adjust=True, block_symbols=10, workers=1,
                   progress=False)
    res = stream_factors(source, two, SMALL, adjust=True, block_symbols=10, workers=2,
                         progress=False)
    assert res.computed == 4 and res.workers == 2
    _same_partitions(one, two)


def test_resume_keeps_matching_blocks_and_recomputes_changed_ones(source, tmp_path):
    out = tmp_path / "out"
    first = stream_factors(source, out, SMALL, block_symbols=15, progress=False)
    assert first.workers == 1  # a small job runs in-process by default (no process starts)
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
    again = stream_factors(source, out, SMALL, block_symbols=15, workers=1, progress=False)
    assert (again.computed, again.skipped) == (0, 3)
    assert mtimes == {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
    # the source touched but unchanged: blocks are read and fingerprinted, then kept
    os.utime(source)
    assert stream_factors(source, out, SMALL, block_symbols=15, workers=1,
                          progress=False).skipped == 3
    # a lost marker (crash between the partition and its marker): that block is redone
    (out / "_qilin" / "blocks" / "part-00001.json").unlink()
    res = stream_factors(source, out, SMALL, block_symbols=15, workers=1, progress=False)
    assert (res.computed, res.skipped) == (1, 2)
    # another dtype changes every key; another block layout removes the stale partitions
    assert stream_factors(source, out, SMALL, dtype="float64", block_symbols=15, workers=1,
                          progress=False).computed == 3
    res = stream_factors(source, out, SMALL, block_symbols=25, workers=1, progress=False)
    assert res.blocks == 2 and sorted(p.name for p in out.glob("part-*.parquet")) == [
        "part-00000.parquet", "part-00001.parquet"]
    assert len(_dataset(out)) == res.rows


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "qilin.cli", "factors", "compute", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def test_killed_run_resumes_to_the_same_output(tmp_path):
    src = save_bars(synthetic_bars(n_symbols=32, n_days=300, seed=3), tmp_path / "b.parquet")
    inline = "; ".join(f"{k}={v}" for k, v in SMALL.items())
    common = ["--data", str(src), "--factors", inline, "--adjust", "--dtype", "float32",
              "--validate", "none", "--block-symbols", "2", "--workers", "1", "-q"]
    ref = tmp_path / "ref"  # the uninterrupted run (same code, in this process)
    stream_factors(src, ref, SMALL, adjust=True, block_symbols=2, workers=1,
                   progress=False)
    out = tmp_path / "out"
    markers = out / "_qilin" / "blocks"
    proc = subprocess.Popen(_cli(*common, "--out-dir", str(out)), env=_env(),
                            start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if markers.exists() and len(list(markers.glob("*.json"))) >= 2:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    done = len(list(markers.glob("*.json")))
    assert 2 <= done < 16
    (out / ".part-00015.parquet.abc123.tmp").write_bytes(b"partial")  # as a kill leaves it
    rerun = subprocess.run(_cli(*common, "--out-dir", str(out)), env=_env(), timeout=300,
                           capture_output=True, text=True, check=True)
    kept = int(rerun.stdout.split(" computed, ")[1].split(" kept")[0])
    assert kept >= done - 1  # a block killed after its marker was being replaced is redone
    assert not list(out.glob(".*"))  # no temp file left that looks like data, or at all
    _same_partitions(ref, out)


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


@pytest.fixture(scope="module")
def market_1500(tmp_path_factory) -> Path:
    return save_bars(synthetic_bars(n_symbols=120, n_days=1500, seed=4),
                     tmp_path_factory.mktemp("m1500") / "b.parquet")


@pytest.mark.parametrize("workers, budget", [(1, "700MiB"), (2, "1600MiB")])
def test_peak_memory_stays_within_the_budget(market_1500, tmp_path, workers, budget):
    # open high low close volume vwap (from amount and volume) and adj_factor
    bsym = block_symbols_for_budget(parse_memory(budget), 1500, 8, 158, 4, workers=workers,
                                    in_flight=2 if workers == 1 else 1)
    assert bsym < 60  # the budget forces several blocks
    cmd = _cli("--data", str(market_1500), "--factors", "alpha158", "--adjust", "--dtype",
               "float32", "--validate", "none", "--memory-limit", budget, "--workers",
               str(workers), "-q", "--out-dir", str(tmp_path / "out"))
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    ps = psutil.Process(proc.pid)
    peak = 0
    try:
        while proc.poll() is None:
            peak = max(peak, _tree_rss(ps))  # the CLI process and its worker processes
            time.sleep(0.01)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert f"{min(bsym, 30)} symbols per block" in out  # and at least 4 blocks
    assert f"{workers} worker" in out
    assert 0 < peak <= parse_memory(budget), f"peak RSS {peak / 2**20:.0f} MiB"


def test_bad_input_is_one_typed_line(source, tmp_path, capsys):
    with pytest.raises(ExpressionError, match="cross-sectional"):
        stream_factors(source, tmp_path / "x", {"r": "cs_rank(close)"}, progress=False)
    with pytest.raises(ParameterError, match="not a size"):
        stream_factors(source, tmp_path / "x", SMALL, memory_limit="lots", progress=False)
    with pytest.raises(ParameterError, match="cannot hold one symbol"):
        stream_factors(source, tmp_path / "x", SMALL, memory_limit="10MiB", progress=False)
    with pytest.raises(DataError, match="adj_factor"):
        stream_factors(_no_adj(source, tmp_path), tmp_path / "x", SMALL, adjust=True,
                       progress=False)
    code = main(["factors", "compute", "--data", str(source), "--factors", "alpha158",
                 "--out-dir", str(tmp_path / "y"), "--memory-limit", "1MiB", "-q"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if "first run" not in ln]
    assert code == 2 and len(err) == 1 and "memory limit" in err[0]


def _no_adj(source: Path, tmp_path: Path) -> Path:
    df = pd.read_parquet(source).drop(columns=["adj_factor"])
    return save_bars(df, tmp_path / "noadj.parquet")


def test_dataset_evaluation_equals_the_in_memory_ic(source, tmp_path):
    from qilin.factors.evaluation import forward_returns, information_coefficient
    from qilin.factors.streaming_eval import evaluate_dataset

    out = tmp_path / "out"
    stream_factors(source, out, SMALL, adjust=True, block_symbols=15, workers=1,
                   progress=False)
    ev = evaluate_dataset(out, factors=["MA5", "CORR20", "KMID"], horizons=(1, 5),
                          memory_limit=None, progress=False)
    assert list(ev.summary.index) == ["MA5", "CORR20", "KMID"]
    panel = load_panel(source, backend="cpu", validate=None).adjusted()
    res = FactorCalculator(SMALL, backend="cpu", dtype="float32", progress=False).compute(panel)
    fwd = forward_returns(panel, (1, 5))
    for name in ("MA5", "CORR20", "KMID"):
        x = res[name].astype(np.float64)
        for h in (1, 5):
            np.testing.assert_allclose(ev.ic[name][f"ic_{h}"],
                                       information_coefficient(x, fwd[h], "pearson"),
                                       rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(ev.ic[name][f"rank_ic_{h}"],
                                       information_coefficient(x, fwd[h], "spearman"),
                                       rtol=1e-12, atol=1e-12)
    with pytest.raises(DataError, match="no factor 'NOPE'"):
        evaluate_dataset(out, factors=["NOPE"], progress=False)
    (out / "part-00001.parquet").unlink()
    with pytest.raises(DataError, match="missing"):
        evaluate_dataset(out, progress=False)


def _year_files(out: Path) -> list[str]:
    return sorted(f"{p.parent.name}/{p.name}" for p in out.glob("year=*/part-*.parquet"))


def test_year_partitions_hold_the_block_layout_rows_and_filter_by_year(source, tmp_path):
    import dask.dataframe as dd

    from qilin.factors.streaming import dataset_files
    from qilin.factors.streaming_eval import evaluate_dataset

    blocks, years = tmp_path / "blocks", tmp_path / "years"
    stream_factors(source, blocks, SMALL, adjust=True, block_symbols=15, workers=1,
                   progress=False)
    res = stream_factors(source, years, SMALL, adjust=True, block_symbols=15, workers=1,
                         partition_by="year", progress=False)
    assert (res.blocks, res.computed) == (3, 3)
    assert not list(years.glob("part-*.parquet"))
    assert _year_files(years) == [f"year={y}/part-0000{b}.parquet" for y in (2016, 2017)
                                  for b in range(3)]
    meta = json.loads((years / "_qilin" / "dataset.json").read_text())
    assert meta["partition_by"] == "year"
    # the same rows and bits: a block's year files hold its block-layout file's rows
    for b in range(3):
        want = pq.read_table(blocks / f"part-0000{b}.parquet")
        parts = [pq.read_table(years / f"year={y}/part-0000{b}.parquet") for y in (2016, 2017)]
        assert all(t.schema.equals(want.schema) for t in parts)
        got = pd.concat([t.to_pandas() for t in parts]).sort_values(
            ["symbol", "date"], kind="stable")
        assert len(got) == want.num_rows
        for col in want.column_names:
            x, y = got[col].to_numpy(), want[col].to_numpy()
            if x.dtype.kind == "f":
                x, y = x.view(f"u{x.itemsize}"), y.view(f"u{y.itemsize}")
            assert np.array_equal(x, y), (b, col)
    # pandas and dask read the hive layout, add `year` and prune folders by it
    whole = pd.read_parquet(years)
    assert list(whole.columns) == ["date", "symbol", *SMALL, "year"] and len(whole) == res.rows
    late = pd.read_parquet(years, filters=[("year", ">=", 2017)])
    assert len(late) == int((whole["date"].dt.year == 2017).sum()) > 0
    assert (late["date"].dt.year == 2017).all()
    lazy = dd.read_parquet(str(years), filters=[("year", "==", 2016)])
    assert lazy.npartitions == 3 and len(lazy.compute()) == len(whole) - len(late)
    # qilin's loader reads the files as data (no year column), its date range filters them
    bars = load_bars(years, columns=["date", "symbol", "MA5"], start="2017-01-01",
                     aliases=False)  # factor names as written (no lower-casing)
    assert len(bars) == len(late)
    assert [p.parent.name for p in dataset_files(years)] == ["year=2016", "year=2017"] * 3
    ev_b = evaluate_dataset(blocks, factors=["MA5", "KMID"], horizons=(1,), progress=False)
    ev_y = evaluate_dataset(years, factors=["MA5", "KMID"], horizons=(1,), progress=False)
    pd.testing.assert_frame_equal(ev_b.summary, ev_y.summary, rtol=0, atol=0)
    (years / "year=2017" / "part-00002.parquet").unlink()
    with pytest.raises(DataError, match=r"part-00002\.parquet is missing"):
        evaluate_dataset(years, progress=False)


def test_year_layout_resumes_per_block_and_switches_layouts(source, tmp_path):
    out = tmp_path / "out"
    kw = dict(block_symbols=15, workers=1, progress=False)
    first = stream_factors(source, out, SMALL, partition_by="year", **kw)
    files = _year_files(out)
    mtimes = {f: (out / f).stat().st_mtime_ns for f in files}
    again = stream_factors(source, out, SMALL, partition_by="year", **kw)
    assert (again.computed, again.skipped, again.rows) == (0, 3, first.rows)
    assert mtimes == {f: (out / f).stat().st_mtime_ns for f in files}
    # a lost year file (of a block whose marker was written): only that block is redone
    (out / "year=2016" / "part-00001.parquet").unlink()
    res = stream_factors(source, out, SMALL, partition_by="year", **kw)
    assert (res.computed, res.skipped) == (1, 2) and _year_files(out) == files
    assert {f: (out / f).stat().st_mtime_ns for f in files if "00001" not in f} == \
        {f: t for f, t in mtimes.items() if "00001" not in f}
    # the process pool writes the same files
    pool = tmp_path / "pool"
    stream_factors(source, pool, SMALL, partition_by="year", block_symbols=15, workers=2,
                   progress=False)
    _same_partitions(out, pool, "year=*/part-*.parquet")
    # the block layout in the same folder: every block is rewritten, the year folders go
    res = stream_factors(source, out, SMALL, **kw)
    assert res.computed == 3 and not list(out.glob("year=*"))
    assert sorted(p.name for p in out.glob("part-*.parquet")) == [
        f"part-0000{b}.parquet" for b in range(3)]
    # and back, with another block size: no file of either earlier layout is left
    res = stream_factors(source, out, SMALL, partition_by="year", block_symbols=25,
                         workers=1, progress=False)
    assert res.computed == 2 and not list(out.glob("part-*.parquet"))
    assert _year_files(out) == [f"year={y}/part-0000{b}.parquet" for y in (2016, 2017)
                                for b in range(2)]
    assert len(pd.read_parquet(out)) == res.rows == first.rows
    assert stream_factors(source, out, SMALL, partition_by="year", block_symbols=25,
                          workers=1, resume=False, progress=False).computed == 2
    with pytest.raises(ParameterError, match="partition_by"):
        stream_factors(source, out, SMALL, partition_by="month", progress=False)


def test_cli_partition_by_year(source, tmp_path, capsys):
    out = tmp_path / "cli"
    inline = "; ".join(f"{k}={v}" for k, v in list(SMALL.items())[:3])
    code = main(["factors", "compute", "--data", str(source), "--factors", inline,
                 "--out-dir", str(out), "--partition-by", "year", "--block-symbols", "20",
                 "--workers", "1", "-q"])
    assert code == 0
    assert "wrote 2 partitions, split by year (2 computed" in capsys.readouterr().out
    assert _year_files(out) == [f"year={y}/part-0000{b}.parquet" for y in (2016, 2017)
                                for b in range(2)]


def test_direct_and_buffered_writes_give_the_same_bytes(source, tmp_path, capsys):
    direct, buffered = tmp_path / "direct", tmp_path / "buffered"
    inline = "; ".join(f"{k}={v}" for k, v in SMALL.items())
    for out, flags in ((direct, []), (buffered, ["--buffered-write"])):
        assert main(["factors", "compute", "--data", str(source), "--factors", inline,
                     "--out-dir", str(out), "--block-symbols", "15", "--workers", "1",
                     "-q", *flags]) == 0
        assert "wrote 3 partitions" in capsys.readouterr().out
    assert json.loads((direct / "_qilin" / "dataset.json").read_text())["direct_io"] is True
    assert json.loads((buffered / "_qilin" / "dataset.json").read_text())["direct_io"] is False
    names = sorted(p.name for p in direct.glob("part-*.parquet"))
    assert names == sorted(p.name for p in buffered.glob("part-*.parquet")) and len(names) == 3
    for name in names:
        assert (direct / name).read_bytes() == (buffered / name).read_bytes(), name
    assert not list(direct.glob(".*")) and not list(buffered.glob(".*"))  # no temp files
    # values are NaN where undefined, never null: the columns are required
    schema = pq.read_schema(direct / names[0])
    assert not any(f.nullable for f in schema)


def test_blocks_sized_from_the_budget_end_with_smaller_ones(source, tmp_path):
    from qilin.factors.streaming import plan_stream

    sizes = [t.n_symbols for t in plan_stream(source, tmp_path / "a", SMALL,
                                              memory_limit="8GiB", workers=2).tasks]
    # 40 symbols, at least 2 blocks per worker: 10 per block, the last 20 in 4 blocks of 5
    assert sizes == [10, 10, 5, 5, 5, 5]
    given = [t.n_symbols for t in plan_stream(source, tmp_path / "b", SMALL, block_symbols=15,
                                              workers=2).tasks]
    assert given == [15, 15, 10]  # a block size the user gave is kept
    one = [t.n_symbols for t in plan_stream(source, tmp_path / "c", SMALL,
                                            memory_limit="8GiB", workers=1).tasks]
    assert one == [10, 10, 10, 10]  # in-process: reads, computes and writes overlap anyway
