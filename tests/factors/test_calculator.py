"""FactorCalculator: staging, blocks, a real Dask cluster, caching, dtypes and Parquet output."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from realdata import CI

from qilin.data.synthetic import synthetic_market
from qilin.errors import DataError, ExpressionError
from qilin.factors import ops
from qilin.factors.alpha158 import alpha158_features
from qilin.factors.calculator import DATES, SYMBOLS, FactorCalculator, plan_stages
from qilin.factors.expr import parse
from qilin.factors.registry import default_registry

MIXED = {
    "mom": "close / ts_delay(close, 5) - 1",
    "rank_mom": "cs_rank(close / ts_delay(close, 5))",
    "smooth_rank": "ts_mean(cs_rank(close / ts_delay(close, 5)), 3)",
    "z_vol": "cs_zscore(log(volume + 1)) + ts_std(returns, 10)",
    "mixed": "ts_corr(cs_rank(close), cs_rank(volume), 10) * close / ts_max(high, 20)",
    "const": "2",
    "raw": "close",
}


@pytest.fixture(scope="module")
def panel():
    return synthetic_market(n_symbols=40, n_days=150, seed=11)


@pytest.fixture(scope="module")
def reference(panel):
    return FactorCalculator(MIXED, backend="cpu", progress=False).compute(panel)


def test_results_equal_the_operators_called_directly(panel, reference):
    c = panel["close"]
    mom = ops.sub(ops.div(c, ops.ts_delay(c, 5)), 1.0)
    np.testing.assert_array_equal(reference["mom"], mom)
    ratio = ops.div(c, ops.ts_delay(c, 5))
    np.testing.assert_array_equal(reference["rank_mom"], ops.cs_rank(ratio))
    np.testing.assert_array_equal(reference["smooth_rank"], ops.ts_mean(
        ops.cs_rank(ops.div(c, ops.ts_delay(c, 5))), 3))
    np.testing.assert_array_equal(reference["const"], np.full(panel.shape, 2.0))
    np.testing.assert_array_equal(reference["raw"], c)


def test_stage_plan_alternates_layouts_only_where_needed():
    stages = plan_stages([parse(MIXED["smooth_rank"])])
    assert [s.layout for s in stages] == [SYMBOLS, DATES, SYMBOLS]
    assert stages[0].outputs == ["div(close,ts_delay(close,5))"]
    assert stages[1].outputs == ["cs_rank(div(close,ts_delay(close,5)))"]
    ts_only = plan_stages([parse(e) for _, e in alpha158_features()])
    assert [s.layout for s in ts_only] == [SYMBOLS]


@pytest.mark.parametrize("block_symbols, block_dates", [(7, None), (13, 17), (1, 1)])
def test_blocked_in_process_equals_whole_panel(panel, reference, block_symbols, block_dates):
    got = FactorCalculator(MIXED, backend="cpu", progress=False, block_symbols=block_symbols,
                           block_dates=block_dates).compute(panel)
    for name in MIXED:
        np.testing.assert_array_equal(got[name], reference[name], err_msg=name)


def test_cluster_equals_in_process_exactly(panel, reference):
    from distributed import Client, LocalCluster

    alpha = alpha158_features(windows=(5,) if CI else (5, 20))
    local_alpha = FactorCalculator(alpha, backend="cpu", progress=False).compute(panel)
    cluster = LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                           dashboard_address=None, host="127.0.0.1")
    with cluster, Client(cluster) as client:
        mixed = FactorCalculator(MIXED, client=client, backend="cpu", progress=False,
                                 block_symbols=9, block_dates=40).compute(panel)
        on_cluster = FactorCalculator(alpha, client=client, backend="cpu",
                                      progress=False).compute(panel)
        streamed = list(FactorCalculator(alpha[:20], client=client, backend="cpu",
                                         progress=False, block_symbols=15).iter_blocks(panel))
    for name in MIXED:
        np.testing.assert_array_equal(mixed[name], reference[name], err_msg=name)
    for name, _ in alpha:
        np.testing.assert_array_equal(on_cluster[name], local_alpha[name], err_msg=name)
    assert [len(r.symbols) for r in streamed] == [15, 15, 10]
    np.testing.assert_array_equal(np.concatenate([r["ROC5"] for r in streamed], axis=1),
                                  local_alpha["ROC5"])


def _counting_registry(calls: list[int]):
    reg = default_registry().copy()

    def counted(x, w):
        calls.append(w)
        return ops.ts_mean(x, w)

    reg.register("ts_counted", counted, kind="ts", params=["series", "window"])
    return reg


def test_cache_hit_skips_the_operators_and_changes_miss(panel, tmp_path):
    calls: list[int] = []
    reg = _counting_registry(calls)
    factors = {"a": "ts_counted(close, 5) / close", "b": "cs_rank(ts_counted(volume, 3))"}

    def run(data, f=factors, dtype="float64"):
        return FactorCalculator(f, backend="cpu", cache_dir=tmp_path, progress=False,
                                registry=reg, dtype=dtype).compute(data)

    first = run(panel)
    assert sorted(calls) == [3, 5] and first.computed == 2 and first.cache_hits == 0
    second = run(panel)
    assert sorted(calls) == [3, 5], "a cached rerun must not call the operators"
    assert second.cache_hits == 2 and second.computed == 0
    for name in factors:
        np.testing.assert_array_equal(second[name], first[name])

    changed = panel.with_fields(close=panel["close"] * 1.01)
    third = run(changed)  # "a" reads close: miss; "b" reads only volume: hit
    assert third.computed == 1 and third.cache_hits == 1 and sorted(calls) == [3, 5, 5]
    run(panel, {"a": "ts_counted(close, 6) / close", "b": factors["b"]})
    assert sorted(calls) == [3, 5, 5, 6]
    run(panel, dtype="float32")
    assert len(calls) == 6  # another dtype is another entry
    assert not list(tmp_path.glob(".tmp-*")), "no temp files left behind"


@pytest.mark.parametrize("block_symbols", [None, 7])
def test_float32_output_is_the_float64_result_cast(panel, reference, block_symbols):
    # results are cast as soon as they are final, but every value read by another node or
    # a later stage stays float64 until then
    got = FactorCalculator(MIXED, backend="cpu", dtype="float32", progress=False,
                           block_symbols=block_symbols).compute(panel)
    for name in MIXED:
        assert got[name].dtype == np.float32
        np.testing.assert_array_equal(got[name], reference[name].astype(np.float32))


def test_result_long_panel_and_parquet(panel, reference, tmp_path):
    long = reference.to_long()
    assert list(long.columns) == ["date", "symbol", *MIXED]
    assert len(long) == int(np.asarray(panel.valid).sum())
    row = long.iloc[len(long) // 2]
    i = panel.dates.get_loc(row["date"])
    j = panel.symbols.get_loc(row["symbol"])
    assert row["mom"] == reference["mom"][i, j] or np.isnan(reference["mom"][i, j])
    np.testing.assert_array_equal(reference.panel["mom"], reference["mom"])
    path = reference.to_parquet(tmp_path / "out" / "f.parquet")
    back = pd.read_parquet(path)
    pd.testing.assert_frame_equal(back, long)
    assert [p.name for p in path.parent.iterdir()] == ["f.parquet"]


def test_streaming_parquet_equals_compute(panel, tmp_path):
    alpha = alpha158_features(windows=(5,))
    calc = FactorCalculator(alpha, backend="cpu", progress=False, block_symbols=11,
                            dtype="float32")
    path = calc.to_parquet(panel, tmp_path / "alpha.parquet")
    streamed = pd.read_parquet(path).sort_values(["date", "symbol"]).reset_index(drop=True)
    whole = calc.compute(panel).to_long()
    pd.testing.assert_frame_equal(streamed, whole)
    mixed = FactorCalculator(MIXED, backend="cpu", progress=False, block_symbols=11)
    with pytest.raises(ExpressionError, match="cross-sectional"):
        next(mixed.iter_blocks(panel))
    out = mixed.to_parquet(panel, tmp_path / "mixed.parquet")  # falls back to compute()
    assert len(pd.read_parquet(out)) == int(np.asarray(panel.valid).sum())


def test_progress_bar_can_be_shown_and_silenced(panel, capsys):
    FactorCalculator({"m": "ts_mean(close, 5)"}, backend="cpu", progress=True).compute(panel)
    assert "factor blocks" in capsys.readouterr().err
    FactorCalculator({"m": "ts_mean(close, 5)"}, backend="cpu", progress=False).compute(panel)
    assert capsys.readouterr().err == ""


def test_bad_arguments_are_typed_errors(panel):
    with pytest.raises(ExpressionError, match="unknown factor set 'alpha999'"):
        FactorCalculator("alpha999")
    with pytest.raises(ExpressionError, match="empty"):
        FactorCalculator({})
    with pytest.raises(DataError, match="dtype"):
        FactorCalculator({"a": "close"}, dtype="float16")
    with pytest.raises(DataError, match="block_symbols"):
        FactorCalculator({"a": "close"}, block_symbols=0)
    with pytest.raises(ExpressionError, match="factor 'a': unknown variable 'foo'"):
        FactorCalculator({"a": "foo + 1"}, backend="cpu").compute(panel)


def test_panel_fields_beyond_ohlcv_are_usable(panel):
    got = FactorCalculator({"size": "cs_rank(log(float_mcap))"}, backend="cpu",
                           progress=False).compute(panel)
    np.testing.assert_array_equal(got["size"], ops.cs_rank(ops.log(panel["float_mcap"])))


def test_gpu_backend_matches_cpu(gpu, panel, reference):
    got = FactorCalculator(MIXED, backend="gpu", progress=False).compute(panel)
    assert got.backend == "gpu"
    for name in MIXED:
        np.testing.assert_allclose(got[name], reference[name], rtol=1e-9, atol=1e-12,
                                   equal_nan=True, err_msg=name)


def test_kernel_threads_change_nothing_but_speed(panel, reference):
    import numba

    from qilin.backend import numba_threads

    before = numba.get_num_threads()
    got = FactorCalculator(MIXED, backend="cpu", progress=False, block_symbols=8,
                           kernel_threads=1).compute(panel)
    for name in MIXED:
        np.testing.assert_array_equal(got[name], reference[name], err_msg=name)
    with numba_threads(1):
        assert numba.get_num_threads() == 1
    assert numba.get_num_threads() == before
    with pytest.raises(DataError, match="kernel_threads"):
        FactorCalculator(MIXED, kernel_threads=0)
