"""Factor evaluation: hand-computed cases, scipy/pandas definitions and alphalens on real data."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from realdata import CI
from scipy import stats

from qilin.backend import get_backend
from qilin.data.boards import board_of
from qilin.data.panel import Panel
from qilin.errors import BackendError, DataError, ParameterError
from qilin.factors.evaluation import (
    FactorEvaluation,
    evaluate_factor,
    evaluate_factors,
    factor_matrix,
    forward_returns,
    ic_statistics,
    information_coefficient,
    quantile_turnover,
    quantize_factor,
    rank_rows,
    rank_rows_grouped,
    summary_table,
)

DATES = pd.date_range("2024-01-01", periods=3, freq="B")


def _panel(close: np.ndarray, symbols: list[str] | None = None) -> Panel:
    symbols = symbols or [f"S{i}" for i in range(close.shape[1])]
    dates = pd.date_range("2024-01-01", periods=close.shape[0], freq="B")
    return Panel.from_arrays({"close": close}, dates, symbols)


# ----------------------------------------------------------------- hand-computed
def _tiny() -> tuple[Panel, np.ndarray]:
    """3 dates x 4 symbols; returns chosen so IC and Rank IC (with a tie) are easy by hand."""
    r0 = np.array([0.01, 0.02, 0.02, 0.04])  # date 0 -> 1, a tie between S1 and S2
    r1 = np.array([-0.01, 0.0, 0.01, 0.02])  # date 1 -> 2
    c0 = np.full(4, 100.0)
    c1 = c0 * (1 + r0)
    c2 = c1 * (1 + r1)
    factor = np.array([[1.0, 2.0, 3.0, 4.0],
                       [np.nan, 3.0, 2.0, 1.0],
                       [1.0, 2.0, 3.0, 4.0]])
    return _panel(np.vstack([c0, c1, c2])), factor


def test_forward_returns_by_hand_with_gap():
    close = np.array([[10.0, 1.0], [11.0, np.nan], [12.1, 2.0], [13.31, 3.0]])
    fwd = forward_returns(close, horizons=(2, 1))
    assert sorted(fwd) == [1, 2]
    np.testing.assert_allclose(fwd[1][:, 0], [0.1, 0.1, 0.1, np.nan], rtol=1e-12)
    np.testing.assert_allclose(fwd[2][:, 0], [0.21, 0.21, np.nan, np.nan], rtol=1e-12)
    np.testing.assert_array_equal(np.isnan(fwd[1][:, 1]), [True, True, False, True])
    np.testing.assert_allclose(fwd[2][:, 1], [1.0, np.nan, np.nan, np.nan])


def test_forward_returns_accepts_panel_and_rejects_1d():
    panel, _ = _tiny()
    np.testing.assert_array_equal(forward_returns(panel, (1,))[1],
                                  forward_returns(panel["close"], (1,))[1])
    with pytest.raises(DataError, match="2-D"):
        forward_returns(np.ones(5), (1,))
    with pytest.raises(ParameterError, match="positive"):
        forward_returns(np.ones((5, 2)), (0, 1))


def test_ic_and_rank_ic_by_hand():
    panel, factor = _tiny()
    fwd = forward_returns(panel, (1,))[1]
    ic = information_coefficient(factor, fwd, "pearson")
    ric = information_coefficient(factor, fwd, "spearman")
    # date 0: factor deviations [-1.5,-.5,.5,1.5], return deviations
    # [-.0125,-.0025,-.0025,.0175] -> sxy=.045, sxx=5, syy=.000475
    assert ic[0] == pytest.approx(0.045 / math.sqrt(5 * 0.000475), abs=1e-12)
    # ranks of returns with the tie: [1, 2.5, 2.5, 4] -> sxy=4.5, sxx=5, syy=4.5
    assert ric[0] == pytest.approx(4.5 / math.sqrt(5 * 4.5), abs=1e-12)
    # date 1: S0 has no factor; the remaining three are perfectly reversed
    assert ic[1] == pytest.approx(-1.0, abs=1e-12)
    assert ric[1] == pytest.approx(-1.0, abs=1e-12)
    assert np.isnan(ic[2]) and np.isnan(ric[2])  # no forward return on the last date


def test_evaluate_factor_tiny_summary_by_hand():
    panel, factor = _tiny()
    ev = evaluate_factor(factor, panel, horizons=(1,), quantiles=2)
    ric = np.array([4.5 / math.sqrt(22.5), -1.0])
    s = ev.summary.loc[1]
    assert s["rank_ic_mean"] == pytest.approx(ric.mean(), abs=1e-12)
    assert s["rank_ic_std"] == pytest.approx(ric.std(ddof=1), abs=1e-12)
    assert s["rank_ic_ir"] == pytest.approx(ric.mean() / ric.std(ddof=1), abs=1e-12)
    assert s["rank_ic_t"] == pytest.approx(ric.mean() / (ric.std(ddof=1) / math.sqrt(2)),
                                           abs=1e-12)
    assert s["rank_ic_n"] == 2
    # quantiles (q=2): date 0 [1,1,2,2]; date 1 over S1..S3 with values [3,2,1]: edges
    # [1, 2, 3] -> S2, S3 in bucket 1 (returns .01, .02), S1 in bucket 2 (return 0)
    # top-minus-bottom: date 0 (.02+.04)/2-(.01+.02)/2 = .015; date 1 0-(.01+.02)/2 = -.015
    np.testing.assert_allclose(ev.long_short[1].iloc[:2], [0.015, -0.015], atol=1e-15)
    assert np.isnan(ev.long_short[1].iloc[2])
    np.testing.assert_allclose(ev.cumulative_long_short.to_numpy(),
                               [0.015, 1.015 * 0.985 - 1], atol=1e-15)
    # bucket 1: (.015 + .015) / 2; bucket 2: (.03 + 0) / 2; demeaned: minus the date means
    # (.0225 and .01)
    np.testing.assert_allclose(ev.quantile_returns[1].to_numpy(), [0.015, 0.015], atol=1e-15)
    np.testing.assert_allclose(ev.quantile_returns_demeaned[1].to_numpy(),
                               [((0.015 - 0.0225) + (0.015 - 0.01)) / 2,
                                ((0.03 - 0.0225) + (0.0 - 0.01)) / 2], atol=1e-15)
    # turnover of the top quantile at lag 1: date 1 top = {S1}, was {S2, S3} -> 1.0
    assert ev.turnover[(1, 2)].iloc[1] == 1.0
    assert ev.coverage.tolist() == [4, 3, 0]


def test_quantize_by_hand_ties_and_too_few_names():
    x = np.array([
        [1.0, 2.0, 3.0, 4.0, 5.0],
        [1.0, 1.0, 1.0, 1.0, 2.0],      # edges repeat -> pandas refuses, no labels
        [5.0, np.nan, 1.0, 3.0, 3.0],   # the tie at the middle edge goes to the lower bucket
        [np.nan, np.nan, np.nan, 7.0, np.nan],  # one name: all edges equal
    ])
    labels = quantize_factor(x, 2)
    assert labels.tolist() == [[1, 1, 1, 2, 2], [0, 0, 0, 0, 0], [2, 0, 1, 1, 1],
                               [0, 0, 0, 0, 0]]
    assert quantize_factor(x, 1).tolist()[3] == [0, 0, 0, 1, 0]


def test_quantize_matches_pandas_qcut_on_random_rows_with_ties():
    rng = np.random.default_rng(3)
    for q in (3, 5, 10):
        x = rng.integers(0, 25, size=(300, 40)).astype(float)
        x[rng.random(x.shape) < 0.2] = np.nan
        x[:50] = rng.standard_normal((50, 40))
        labels = quantize_factor(x, q)
        for t in range(x.shape[0]):
            row = pd.Series(x[t]).dropna()
            try:
                expected = (pd.qcut(row, q, labels=False) + 1).to_numpy()
            except ValueError:
                expected = np.zeros(len(row), dtype=int)
            np.testing.assert_array_equal(labels[t][row.index.to_numpy()], expected,
                                          err_msg=f"q={q}, row {t}")


def test_rank_rows_matches_scipy_average_ranks():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 6, size=(50, 13)).astype(float)
    x[rng.random(x.shape) < 0.25] = np.nan
    r = rank_rows(x)
    for t in range(x.shape[0]):
        ok = ~np.isnan(x[t])
        np.testing.assert_array_equal(r[t][ok], stats.rankdata(x[t][ok]))
        assert np.isnan(r[t][~ok]).all()


def test_pearson_rows_match_numpy_corrcoef_per_row():
    from qilin.factors.evaluation import _pearson_rows

    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((40, 30)), rng.standard_normal((40, 30))
    y[:, :10] += 3 * x[:, :10]
    mask = rng.random(x.shape) < 0.7
    mask[0] = False
    mask[1, 1:] = False
    x[2] = 4.0  # a constant cross-section
    got = _pearson_rows(x, y, mask)
    assert np.isnan(got[:3]).all()
    for t in range(3, 40):
        m = mask[t]
        assert got[t] == pytest.approx(np.corrcoef(x[t][m], y[t][m])[0, 1], abs=1e-14)
    # cells outside the mask do not matter, even NaN or inf ones
    x2 = np.where(mask, x, np.nan)
    x2[~mask & (rng.random(x.shape) < 0.5)] = np.inf
    np.testing.assert_array_equal(_pearson_rows(x2, y, mask), got)


def test_rank_rows_edge_rows():
    x = np.array([[np.nan, 4.0, np.nan], [np.nan] * 3, [np.inf, 1.0, -np.inf]])
    r = rank_rows(x)
    assert r[0].tolist()[1] == 1.0 and np.isnan(r[0][[0, 2]]).all()  # one name: rank 1
    assert np.isnan(r[1]).all()
    assert np.isnan(r[2][[0, 2]]).all() and r[2][1] == 1.0  # +-inf count as missing
    assert rank_rows(np.empty((0, 4))).shape == (0, 4)
    assert rank_rows(np.empty((3, 0))).shape == (3, 0)
    # integer, float32 and Fortran-ordered input: the same ranks
    f = np.asfortranarray(np.array([[3, 1, 3], [2, 2, 5]]))
    assert rank_rows(f).tolist() == rank_rows(f.astype(np.float32)).tolist() == \
        [[2.5, 1.0, 2.5], [1.5, 1.5, 3.0]]


def test_grouped_ranks_match_pandas_groupby_rank():
    rng = np.random.default_rng(8)
    x = rng.integers(0, 5, size=(30, 17)).astype(float)
    x[rng.random(x.shape) < 0.2] = np.nan
    codes = rng.integers(-1, 4, size=x.shape)  # -1: no group
    ranks = rank_rows_grouped(x, codes, 4)
    long = pd.DataFrame({"row": np.repeat(np.arange(30), 17), "g": codes.ravel(),
                         "x": x.ravel()})
    long = long[long["g"] >= 0]
    expected = np.full(x.size, np.nan)
    expected[long.index] = long.groupby(["row", "g"])["x"].rank().to_numpy()
    np.testing.assert_array_equal(ranks.ravel(), expected)


def test_ic_statistics_match_scipy_ttest():
    ic = np.random.default_rng(1).normal(0.03, 0.1, 60)
    ic[[3, 9]] = np.nan
    s = ic_statistics(ic)
    tt = stats.ttest_1samp(ic[np.isfinite(ic)], 0.0)
    assert s["n"] == 58
    assert s["t"] == pytest.approx(tt.statistic, rel=1e-12)
    assert s["p"] == pytest.approx(tt.pvalue, rel=1e-10)
    assert s["ir"] == pytest.approx(np.nanmean(ic) / np.nanstd(ic, ddof=1), rel=1e-12)
    assert math.isnan(ic_statistics([0.1])["t"])


def test_turnover_by_hand():
    labels = np.array([[1, 2, 2, 0], [2, 1, 2, 0], [0, 0, 0, 0], [2, 1, 2, 2]])
    np.testing.assert_array_equal(quantile_turnover(labels, 2, 1), [np.nan, 0.5, np.nan, np.nan])
    np.testing.assert_allclose(quantile_turnover(labels, 2, 2), [np.nan, np.nan, np.nan, 1 / 3])


# ----------------------------------------------------------------- inputs and options
def test_factor_input_forms_agree():
    panel, factor = _tiny()
    wide = pd.DataFrame(factor, index=panel.dates, columns=panel.symbols)
    series = wide.stack().rename_axis(["date", "symbol"])
    long = series.rename("f").reset_index()
    for form in (wide, series, long):
        np.testing.assert_array_equal(factor_matrix(form, panel), factor)
    two = long.assign(g=1.0)
    np.testing.assert_array_equal(factor_matrix(two, panel, name="f"), factor)
    with pytest.raises(DataError, match="several value columns"):
        factor_matrix(two, panel, name="zzz")


def test_factor_input_errors_name_what_is_wrong():
    panel, factor = _tiny()
    with pytest.raises(DataError, match=r"shape \(2, 4\)"):
        evaluate_factor(factor[:2], panel)
    bad = pd.DataFrame({"date": [DATES[0]], "symbol": ["NOPE"], "f": [1.0]})
    with pytest.raises(DataError, match="NOPE"):
        factor_matrix(bad, panel)
    bad = pd.DataFrame({"date": [pd.Timestamp("1999-01-01")], "symbol": ["S0"], "f": [1.0]})
    with pytest.raises(DataError, match="1999-01-01"):
        factor_matrix(bad, panel)
    with pytest.raises(ParameterError, match="quantiles"):
        evaluate_factor(factor, panel, quantiles=0)
    with pytest.raises(ParameterError, match="dropna"):
        evaluate_factor(factor, panel, dropna="some")
    with pytest.raises(ParameterError, match="industry"):
        evaluate_factor(factor, panel, groups="industry")
    with pytest.raises(ParameterError, match="groups has shape"):
        evaluate_factor(factor, panel, groups=["a", "b"])


def test_dropna_each_keeps_short_horizons_at_the_end():
    rng = np.random.default_rng(5)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (30, 12)), axis=0))
    factor = rng.standard_normal((30, 12))
    panel = _panel(close)
    all_ = evaluate_factor(factor, panel, horizons=(1, 5), quantiles=3)
    each = evaluate_factor(factor, panel, horizons=(1, 5), quantiles=3, dropna="each")
    assert all_.rank_ic[1].notna().sum() == 25  # alphalens: rows need every horizon
    assert each.rank_ic[1].notna().sum() == 29
    assert each.rank_ic[5].notna().sum() == 25
    pd.testing.assert_series_equal(all_.rank_ic[5], each.rank_ic[5])


def test_gpu_request_without_gpu_is_an_error():
    from qilin.backend import gpu_available

    if gpu_available():
        pytest.skip("a GPU is present")
    panel, factor = _tiny()
    with pytest.raises(BackendError):
        evaluate_factor(factor, panel, horizons=(1,), quantiles=2, backend="gpu")


def test_gpu_matches_cpu(gpu):
    rng = np.random.default_rng(11)
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.02, (80, 60)), axis=0))
    close[rng.random(close.shape) < 0.03] = np.nan
    factor = np.round(rng.standard_normal((80, 60)), 1)  # ties
    groups = np.array(["a", "b", "c"] * 20)
    panel = _panel(close)
    cpu = evaluate_factor(factor, panel, horizons=(1, 5), quantiles=5, groups=groups)
    gpu_ev = evaluate_factor(factor, panel, horizons=(1, 5), quantiles=5, groups=groups,
                             backend="gpu")
    assert gpu_ev.backend == "gpu"
    for attr in ("ic", "rank_ic", "summary", "quantile_returns", "quantile_returns_demeaned",
                 "long_short", "turnover", "rank_autocorrelation", "group_ic"):
        pd.testing.assert_frame_equal(getattr(cpu, attr), getattr(gpu_ev, attr),
                                      check_exact=False, rtol=1e-9, atol=1e-12)
    pd.testing.assert_series_equal(cpu.cumulative_long_short, gpu_ev.cumulative_long_short,
                                   check_exact=False, rtol=1e-9)


# ----------------------------------------------------------------- outputs
def test_to_json_is_strict_json_and_atomic(tmp_path):
    panel, factor = _tiny()
    ev = evaluate_factor(factor, panel, horizons=(1,), quantiles=2, name="tiny")
    path = ev.to_json(tmp_path / "sub" / "report.json")
    data = json.loads(path.read_text())  # NaN would have been written as invalid JSON
    assert data["name"] == "tiny"
    assert data["summary"]["1"]["rank_ic_n"] == 2
    assert data["ic"]["2024-01-03"]["1"] is None
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["report.json"]


def test_plots_are_written_and_non_empty(tmp_path):
    rng = np.random.default_rng(2)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (40, 20)), axis=0))
    ev = evaluate_factor(rng.standard_normal((40, 20)), _panel(close), horizons=(1, 5),
                         quantiles=5, name="noise/1")
    paths = ev.plot(tmp_path / "plots")
    assert [p.name for p in paths] == ["noise_1_ic.png", "noise_1_quantile_returns.png",
                                       "noise_1_cumulative_long_short.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000


def test_evaluate_factors_and_summary_table_on_synthetic_market():
    from qilin.data.synthetic import synthetic_market

    panel = synthetic_market(n_symbols=40, n_days=120, seed=4).adjusted()
    close = panel["close"]
    mom = np.full(close.shape, np.nan)
    mom[10:] = close[10:] / close[:-10] - 1
    long = pd.DataFrame({
        "date": np.repeat(panel.dates, 40), "symbol": np.tile(panel.symbols, 120),
        "mom10": mom.ravel(), "rev10": -mom.ravel()})
    evs = evaluate_factors(long, panel, horizons=(1, 5), quantiles=5, groups="industry")
    assert set(evs) == {"mom10", "rev10"}
    assert isinstance(evs["mom10"], FactorEvaluation)
    # a sign flip flips IC and Rank IC (quantiles are not an exact mirror: qcut bins are
    # right-closed, so a name sitting exactly on an edge changes side)
    pd.testing.assert_frame_equal(evs["rev10"].rank_ic, -evs["mom10"].rank_ic)
    pd.testing.assert_frame_equal(evs["rev10"].ic, -evs["mom10"].ic)
    table = summary_table(evs)
    assert table.index.tolist() == [("mom10", 1), ("mom10", 5), ("rev10", 1), ("rev10", 5)]
    assert table.loc[("rev10", 5), "rank_ic_mean"] == pytest.approx(
        -table.loc[("mom10", 5), "rank_ic_mean"], abs=1e-15)
    gic = evs["mom10"].group_ic
    assert gic.index.names == ["date", "group"]
    assert set(gic.index.get_level_values("group")) <= set(panel.info["industry"])


def test_evaluate_factors_accepts_factor_panels_and_calculator_results():
    from qilin.data.synthetic import synthetic_market
    from qilin.factors.calculator import FactorCalculator

    panel = synthetic_market(n_symbols=25, n_days=80, seed=9).adjusted()
    result = FactorCalculator([("rev5", "close / ts_delay(close, 5)")], backend="cpu",
                              progress=False).compute(panel)
    direct = evaluate_factor(result["rev5"], panel, horizons=(1, 5), name="rev5")
    assert direct.rank_ic[1].notna().sum() > 60
    via_result = evaluate_factors(result, panel, horizons=(1, 5))["rev5"]
    pd.testing.assert_frame_equal(via_result.rank_ic, direct.rank_ic, atol=1e-12)
    # a factor Panel on fewer dates is aligned by date and symbol
    sub = result.panel.select(start=panel.dates[10])
    via_sub = evaluate_factors(sub, panel, horizons=(1, 5))["rev5"]
    assert via_sub.rank_ic.index.equals(panel.dates)
    pd.testing.assert_frame_equal(via_sub.rank_ic.iloc[10:], direct.rank_ic.iloc[10:],
                                  atol=1e-12)


# ----------------------------------------------------------------- alphalens on real data
@pytest.fixture(scope="module")
def sp500_case(sp500_path):
    n_dates, n_symbols = (160, 60) if CI else (250, 100)
    bars = pd.read_parquet(sp500_path, columns=["date", "symbol", "close"])
    wide = bars.pivot(index="date", columns="symbol", values="close").iloc[200:200 + n_dates]
    # alphalens forward-fills missing prices and we do not: use names with every bar
    wide = wide[wide.columns[wide.notna().all()][:n_symbols]]
    momentum = wide / wide.shift(20) - 1
    panel = Panel.from_long(bars[bars.symbol.isin(wide.columns) & bars.date.isin(wide.index)])
    assert list(panel.symbols) == list(wide.columns)
    ev = evaluate_factor(momentum.to_numpy(), panel, horizons=(1, 5, 10), quantiles=5,
                         name="mom20")
    import alphalens as al

    factor = momentum.stack().rename("factor").rename_axis(["date", "asset"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = al.utils.get_clean_factor_and_forward_returns(
            factor, wide, quantiles=5, periods=(1, 5, 10), max_loss=1.0, filter_zscore=None)
    return ev, data, momentum, wide


def _horizon_columns(df: pd.DataFrame) -> pd.DataFrame:
    return df.rename(columns={"1D": 1, "5D": 5, "10D": 10})


def test_rank_ic_matches_alphalens(sp500_case):
    import alphalens as al

    ev, data, _, _ = sp500_case
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = _horizon_columns(al.performance.factor_information_coefficient(data))
    ours = ev.rank_ic.dropna(how="all")
    assert ours.index.equals(expected.index)
    np.testing.assert_allclose(ours[[1, 5, 10]].to_numpy(), expected.to_numpy(), atol=1e-10,
                               rtol=0)
    mean = _horizon_columns(al.performance.mean_information_coefficient(data).to_frame().T)
    np.testing.assert_allclose(ev.summary["rank_ic_mean"].to_numpy(), mean.to_numpy()[0],
                               atol=1e-10)


def test_pearson_ic_matches_scipy_on_alphalens_rows(sp500_case):
    ev, data, _, _ = sp500_case
    for date in data.index.get_level_values("date").unique()[::17]:
        rows = data.loc[date]
        for h, col in ((1, "1D"), (10, "10D")):
            expected = stats.pearsonr(rows["factor"], rows[col])[0]
            assert ev.ic.loc[date, h] == pytest.approx(expected, abs=1e-10)


def test_quantiles_and_quantile_returns_match_alphalens(sp500_case):
    import alphalens as al

    ev, data, momentum, _ = sp500_case
    # labels: rebuild ours on alphalens' rows and compare name by name
    ours = quantize_factor(momentum.to_numpy(), 5, mask=np.isfinite(ev.ic[10].to_numpy())[:, None]
                           & np.isfinite(momentum.to_numpy()))
    ours = pd.DataFrame(ours, index=momentum.index, columns=momentum.columns).stack()
    expected = data["factor_quantile"]
    np.testing.assert_array_equal(ours.loc[expected.index].to_numpy(), expected.to_numpy())
    for demeaned, table in ((False, ev.quantile_returns), (True, ev.quantile_returns_demeaned)):
        mean, std_err = al.performance.mean_return_by_quantile(data, demeaned=demeaned)
        np.testing.assert_allclose(table.to_numpy(), _horizon_columns(mean).to_numpy(),
                                   atol=1e-12, rtol=0)
        if not demeaned:
            np.testing.assert_allclose(ev.quantile_std_error.to_numpy(),
                                       _horizon_columns(std_err).to_numpy(), atol=1e-12)
    by_date, _ = al.performance.mean_return_by_quantile(data, by_date=True, demeaned=False)
    spread, _ = al.performance.compute_mean_returns_spread(by_date, 5, 1)
    spread = _horizon_columns(spread)
    # alphalens >= 0.5 halves the spread (100% gross); ours is the plain top - bottom
    np.testing.assert_allclose(ev.long_short.loc[spread.index, [1, 5, 10]].to_numpy(),
                               2 * spread.to_numpy(), atol=1e-12, rtol=0)
    daily = ev.quantile_daily_returns[5].loc[by_date.xs(3, level="factor_quantile").index, 3]
    np.testing.assert_allclose(daily.to_numpy(),
                               by_date.xs(3, level="factor_quantile")["5D"].to_numpy(), atol=1e-14)


def test_turnover_and_rank_autocorrelation_match_alphalens(sp500_case):
    import alphalens as al

    ev, data, _, _ = sp500_case
    dates = data.index.get_level_values("date").unique()
    for period in (1, 5, 10):
        for q in (1, 3, 5):
            expected = al.performance.quantile_turnover(data["factor_quantile"], q, period)
            ours = ev.turnover[(period, q)].loc[dates]
            np.testing.assert_array_equal(ours.isna().to_numpy(), expected.isna().to_numpy())
            np.testing.assert_allclose(ours.to_numpy(), expected.to_numpy(), atol=1e-14)
        expected = al.performance.factor_rank_autocorrelation(data, period)
        ours = ev.rank_autocorrelation[period].loc[dates]
        np.testing.assert_array_equal(ours.isna().to_numpy(), expected.isna().to_numpy())
        np.testing.assert_allclose(ours.to_numpy(), expected.to_numpy(), atol=1e-10)


def test_group_rank_ic_matches_alphalens_on_ashares(ashare_path):
    import alphalens as al

    n_dates, n_symbols = (100, 60) if CI else (150, 90)
    bars = pd.read_parquet(ashare_path, columns=["date", "symbol", "close", "adj_factor"],
                           filters=[("date", ">=", pd.Timestamp("2020-01-01"))])
    wide = (bars["close"] * bars["adj_factor"]).set_axis(
        pd.MultiIndex.from_frame(bars[["date", "symbol"]])).unstack().iloc[:n_dates]
    # no suspensions in the window (alphalens would forward-fill them); a mix of boards
    complete = wide.columns[wide.notna().all()]
    chosen = list(complete[:: max(1, len(complete) // n_symbols)][:n_symbols])
    wide = wide[chosen]
    # deterministic grouping: board plus exchange, e.g. 'main.SH', 'chinext.SZ'
    group_of = {s: f"{board_of(s)}.{s.split('.')[1]}" for s in chosen}
    assert len(set(group_of.values())) >= 3
    reversal = -(wide / wide.shift(5) - 1)
    sub = bars[bars.symbol.isin(chosen) & bars.date.isin(wide.index)]
    panel = Panel.from_long(sub).adjusted()
    ev = evaluate_factor(reversal.to_numpy(), panel, horizons=(1, 5), quantiles=5,
                         groups=group_of)
    factor = reversal.stack().rename("factor").rename_axis(["date", "asset"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = al.utils.get_clean_factor_and_forward_returns(
            factor, wide, groupby=group_of, quantiles=5, periods=(1, 5), max_loss=1.0,
            filter_zscore=None)
        expected = al.performance.factor_information_coefficient(data, by_group=True)
    expected = _horizon_columns(expected).rename_axis(["date", "group"])
    ours = ev.group_ic.loc[expected.index]
    np.testing.assert_array_equal(ours.isna().to_numpy(), expected.isna().to_numpy())
    np.testing.assert_allclose(ours.to_numpy(), expected.to_numpy(), atol=1e-10)
    assert len(ev.group_ic) == len(expected)
    mean_by_group = al.performance.mean_information_coefficient(data, by_group=True)
    np.testing.assert_allclose(ev.group_ic_summary.to_numpy(),
                               _horizon_columns(mean_by_group).to_numpy(), atol=1e-10)


def test_backend_object_is_accepted():
    panel, factor = _tiny()
    ev = evaluate_factor(factor, panel, horizons=(1,), quantiles=2, backend=get_backend("cpu"))
    assert ev.backend == "cpu"
