"""Factor cache: an empty (0-byte) or truncated entry is a miss that is counted and rewritten.

Reproduces issue 11: a 0-byte ``.npy`` left by a crashed writer made every later run with that
``--cache-dir`` crash with ``EOFError``.
"""

from __future__ import annotations

import numpy as np
import pytest

from qilin.data.synthetic import synthetic_market
from qilin.factors.cache import FactorCache
from qilin.factors.calculator import FactorCalculator

FACTORS = {"mom": "close / ts_delay(close, 5) - 1", "ma": "ts_mean(close, 10) / close",
           "rk": "cs_rank(volume)"}


@pytest.fixture(scope="module")
def panel():
    return synthetic_market(n_symbols=8, n_days=60, seed=4)


def _calc(tmp_path):
    return FactorCalculator(FACTORS, backend="cpu", progress=False, cache_dir=tmp_path)


def test_empty_and_truncated_entries_are_counted_misses_and_rewritten(panel, tmp_path):
    first = _calc(tmp_path).compute(panel)
    assert (first.cache_hits, first.computed, first.cache_corrupt) == (0, 3, 0)
    files = sorted(tmp_path.glob("*.npy"))
    assert len(files) == 3
    sizes = {f: f.stat().st_size for f in files}
    files[0].write_bytes(b"")                                  # a crashed writer's 0-byte file
    files[1].write_bytes(files[1].read_bytes()[: sizes[files[1]] // 2])   # truncated
    calc = _calc(tmp_path)
    second = calc.compute(panel)
    assert (second.cache_hits, second.computed, second.cache_corrupt) == (1, 2, 2)
    assert calc.cache.corrupt == 2
    for name in FACTORS:
        np.testing.assert_array_equal(second[name], first[name])
    assert {f: f.stat().st_size for f in files} == sizes       # rewritten whole
    third = _calc(tmp_path).compute(panel)
    assert (third.cache_hits, third.computed, third.cache_corrupt) == (3, 0, 0)


@pytest.mark.parametrize("content", [
    b"",
    b"\x93NUMPY",                                               # header cut short
    b"not a numpy file at all",
])
def test_unreadable_files_are_misses(tmp_path, content):
    cache = FactorCache(tmp_path)
    cache.path("k").write_bytes(content)
    assert cache.get("k") is None
    assert cache.corrupt == 1
    cache.put("k", np.ones((2, 2)))
    np.testing.assert_array_equal(cache.get("k"), np.ones((2, 2)))
    assert cache.corrupt == 1


def test_trailing_bytes_and_absent_entries(tmp_path):
    cache = FactorCache(tmp_path)
    assert cache.get("absent") is None and cache.corrupt == 0   # plain miss, not counted
    cache.put("k", np.arange(4.0))
    with open(cache.path("k"), "ab") as fh:
        fh.write(b"junk")
    assert cache.get("k") is None and cache.corrupt == 1


def test_cli_survives_an_empty_entry_and_reports_it(tmp_path, capsys):
    from qilin.cli import main
    from qilin.data.synthetic import synthetic_bars

    bars = tmp_path / "bars.parquet"
    synthetic_bars(n_symbols=6, n_days=40, seed=2).to_parquet(bars)
    cache = tmp_path / "cache"
    args = ["factors", "compute", "--data", str(bars), "--factors",
            "a = ts_mean(close, 5); b = cs_rank(volume)", "--out", str(tmp_path / "f.parquet"),
            "--backend", "cpu", "-q", "--validate", "none", "--cache-dir", str(cache)]
    assert main(args) == 0
    assert "0 read, 2 computed, 0 unreadable entries rewritten" in capsys.readouterr().out
    entry = sorted(cache.glob("*.npy"))[0]
    entry.write_bytes(b"")
    assert main(args) == 0
    assert "1 read, 1 computed, 1 unreadable entry rewritten" in capsys.readouterr().out
    assert entry.stat().st_size > 0
