"""``qilin factors compute`` end to end through the real CLI entry point."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from qilin.cli import main
from qilin.cli.common import load_data
from qilin.cli.factors import parse_factor_arg
from qilin.data.synthetic import synthetic_bars
from qilin.factors.alpha158 import alpha158_features
from qilin.factors.calculator import FactorCalculator


@pytest.fixture(scope="module")
def bars_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("bars") / "bars.parquet"
    synthetic_bars(n_symbols=12, n_days=90, seed=5).to_parquet(path)
    return path


def test_inline_factors(bars_path, tmp_path, capsys):
    out = tmp_path / "f.parquet"
    code = main(["factors", "compute", "--data", str(bars_path), "--factors",
                 "mom = close / ts_delay(close, 5) - 1; rk = cs_rank(volume)",
                 "--out", str(out), "--backend", "cpu", "-q"])
    assert code == 0
    assert "wrote 2 factors for 12 symbols x 90 dates" in capsys.readouterr().out
    got = pd.read_parquet(out)
    assert list(got.columns) == ["date", "symbol", "mom", "rk"]
    panel = load_data(str(bars_path))
    want = FactorCalculator({"mom": "close / ts_delay(close, 5) - 1", "rk": "cs_rank(volume)"},
                            backend="cpu", progress=False).compute(panel).to_long()
    pd.testing.assert_frame_equal(got, want)


def test_alpha158_float32_with_yaml_and_cache(bars_path, tmp_path):
    out = tmp_path / "alpha.parquet"
    code = main(["factors", "compute", "--data", str(bars_path), "--factors", "alpha158",
                 "--out", str(out), "--dtype", "float32", "--backend", "cpu", "-q",
                 "--block-symbols", "5"])
    assert code == 0
    got = pd.read_parquet(out)
    assert list(got.columns[2:]) == [n for n, _ in alpha158_features()]
    assert got["MA5"].dtype == np.float32

    spec = tmp_path / "f.yaml"
    spec.write_text("factors:\n  ma5: ts_mean(close, 5) / close\n  kmid: (close - open) / open\n")
    out2 = tmp_path / "yaml.parquet"
    cache = tmp_path / "cache"
    for _ in range(2):
        assert main(["factors", "compute", "--data", str(bars_path), "--factors", str(spec),
                     "--out", str(out2), "--backend", "cpu", "-q",
                     "--cache-dir", str(cache)]) == 0
    assert len(list(cache.glob("*.npy"))) == 2
    yaml_out = pd.read_parquet(out2).sort_values(["date", "symbol"]).reset_index(drop=True)
    alpha = got.sort_values(["date", "symbol"]).reset_index(drop=True)
    np.testing.assert_allclose(yaml_out["ma5"], alpha["MA5"], rtol=1e-6, equal_nan=True)


def test_on_a_threads_cluster(bars_path, tmp_path):
    out = tmp_path / "c.parquet"
    assert main(["factors", "compute", "--data", str(bars_path), "--factors",
                 "a = cs_zscore(ts_mean(returns, 5))", "--out", str(out),
                 "--cluster", "threads", "--backend", "cpu", "-q"]) == 0
    panel = load_data(str(bars_path))
    want = FactorCalculator({"a": "cs_zscore(ts_mean(returns, 5))"}, backend="cpu",
                            progress=False).compute(panel).to_long()
    pd.testing.assert_frame_equal(pd.read_parquet(out), want)


def test_errors_exit_2_with_one_line(bars_path, tmp_path, capsys):
    out = tmp_path / "bad.parquet"
    code = main(["factors", "compute", "--data", str(bars_path), "--factors",
                 "x = ts_mean(close, -3)", "--out", str(out), "-q"])
    err = capsys.readouterr().err
    assert code == 2
    assert "factor 'x': 'window' of ts_mean must be a positive integer, got -3" in err
    assert not out.exists()
    code = main(["factors", "compute", "--data", str(tmp_path / "missing.parquet"),
                 "--factors", "alpha158", "--out", str(out), "-q"])
    assert code == 2
    assert "missing.parquet" in capsys.readouterr().err


def test_factor_argument_forms(tmp_path):
    assert parse_factor_arg("ALPHA158") == "alpha158"
    assert parse_factor_arg("a=close; b = open / close ;") == [("a", "close"),
                                                                ("b", "open / close")]
    with pytest.raises(Exception, match="name=expression"):
        parse_factor_arg("close / open")
    listed = tmp_path / "l.yml"
    listed.write_text("- {name: a, expr: close}\n- {name: b, expr: open}\n")
    assert parse_factor_arg(str(listed)) == [("a", "close"), ("b", "open")]
    bad = tmp_path / "bad.yaml"
    bad.write_text("just a string\n")
    with pytest.raises(Exception, match="expected a mapping"):
        parse_factor_arg(str(bad))


def test_evaluate_subcommand_is_registered():
    from qilin.cli import build_parser

    args = build_parser().parse_args(["factors", "evaluate", "--factors", "f.parquet",
                                      "--data", "b.parquet", "--out", "r.json"])
    assert args.factors_command == "evaluate"


def test_on_a_remote_scheduler_address(bars_path, tmp_path):
    from distributed import LocalCluster

    out = tmp_path / "r.parquet"
    with LocalCluster(n_workers=1, processes=False, threads_per_worker=1, protocol="tcp",
                      host="127.0.0.1", dashboard_address=None) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tcp://127.0.0.1:")
        assert main(["factors", "compute", "--data", str(bars_path), "--factors",
                     "a = ts_rank(close, 10) - cs_rank(close)", "--out", str(out),
                     "--cluster", address, "--backend", "cpu", "-q"]) == 0
    panel = load_data(str(bars_path))
    want = FactorCalculator({"a": "ts_rank(close, 10) - cs_rank(close)"}, backend="cpu",
                            progress=False).compute(panel).to_long()
    pd.testing.assert_frame_equal(pd.read_parquet(out), want)
