"""Qlib's Alpha158 feature set, written in qilin's expression language.

The 158 features and their names follow Qlib's ``Alpha158DL.get_feature_config()``
(``qlib/contrib/data/loader.py``, default config): 9 K-bar features, 4 price features
(``OPEN0 HIGH0 LOW0 VWAP0``) and 29 rolling families over windows 5, 10, 20, 30 and 60, in
Qlib's order. Qlib operator ↔ qilin operator: ``Ref`` ts_delay, ``Mean`` ts_mean, ``Std``
ts_std (ddof=1), ``Sum`` ts_sum, ``Max``/``Min`` ts_max/ts_min, ``Slope``/``Rsquare``/``Resi``
ts_slope/ts_rsquare/ts_resi, ``Quantile`` ts_quantile, ``Rank`` ts_rank, ``IdxMax``/``IdxMin``
ts_argmax/ts_argmin (1-based from the window start), ``Corr`` ts_corr, ``Greater``/``Less``
greater/less, ``Log``/``Abs`` log/abs.

Deliberate differences from Qlib (see ``docs/factors.md``):

* Rolling features are NaN until the window holds ``d`` observations; Qlib uses
  ``min_periods=1`` and gives values from a symbol's first bar.
* A window is the last ``d`` bars the symbol traded (suspended days are skipped, not
  counted), like Qlib run on a symbol's own trading days.
* Both are qilin's default window policy; ``FactorCalculator(..., window_policy="qlib")``
  (``--window-policy qlib``) uses Qlib's calendar windows and comparisons instead
  (:mod:`qilin.factors.qlib_window`), to reproduce Qlib's numbers on suspended stocks.
* Comparisons (``CNTP``/``CNTN``) are NaN when either side is NaN (Qlib counts them as False),
  which only changes the first bar of each symbol.
* ``Corr`` is NaN only where a side has zero variance; Qlib also blanks windows whose
  rolling std is within 2e-5 of zero.
* ``vwap`` is the Panel field (``amount / volume`` when the data has no vwap column). On
  plain OHLCV bars (no vwap, no amount) ``FactorCalculator`` leaves VWAP0 NaN with one
  warning, or derives ``vwap = (high + low + close) / 3`` when asked (``derive_vwap``).

Examples
--------
>>> features = alpha158_features()
>>> len(features), features[0]
(158, ('KMID', '(close - open) / open'))
>>> dict(features)["ROC5"]
'ts_delay(close, 5) / close'
>>> len(alpha158_features(windows=(5,), include=["MA", "STD"]))
15
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from qilin.errors import ExpressionError

DEFAULT_WINDOWS = (5, 10, 20, 30, 60)

KBAR_FEATURES: tuple[tuple[str, str], ...] = (
    ("KMID", "(close - open) / open"),
    ("KLEN", "(high - low) / open"),
    ("KMID2", "(close - open) / (high - low + 1e-12)"),
    ("KUP", "(high - greater(open, close)) / open"),
    ("KUP2", "(high - greater(open, close)) / (high - low + 1e-12)"),
    ("KLOW", "(less(open, close) - low) / open"),
    ("KLOW2", "(less(open, close) - low) / (high - low + 1e-12)"),
    ("KSFT", "(2 * close - high - low) / open"),
    ("KSFT2", "(2 * close - high - low) / (high - low + 1e-12)"),
)

PRICE_FEATURES: tuple[tuple[str, str], ...] = (
    ("OPEN0", "open / close"),
    ("HIGH0", "high / close"),
    ("LOW0", "low / close"),
    ("VWAP0", "vwap / close"),
)

_DELTA = "(close - ts_delay(close, 1))"
_NEG_DELTA = "(ts_delay(close, 1) - close)"
_VDELTA = "(volume - ts_delay(volume, 1))"
_NEG_VDELTA = "(ts_delay(volume, 1) - volume)"
_WV = "abs(close / ts_delay(close, 1) - 1) * volume"

#: Rolling families in Qlib's order; ``{d}`` is the window.
ROLLING_FAMILIES: tuple[tuple[str, str], ...] = (
    ("ROC", "ts_delay(close, {d}) / close"),
    ("MA", "ts_mean(close, {d}) / close"),
    ("STD", "ts_std(close, {d}) / close"),
    ("BETA", "ts_slope(close, {d}) / close"),
    ("RSQR", "ts_rsquare(close, {d})"),
    ("RESI", "ts_resi(close, {d}) / close"),
    ("MAX", "ts_max(high, {d}) / close"),
    ("MIN", "ts_min(low, {d}) / close"),
    ("QTLU", "ts_quantile(close, {d}, 0.8) / close"),
    ("QTLD", "ts_quantile(close, {d}, 0.2) / close"),
    ("RANK", "ts_rank(close, {d})"),
    ("RSV", "(close - ts_min(low, {d})) / (ts_max(high, {d}) - ts_min(low, {d}) + 1e-12)"),
    ("IMAX", "ts_argmax(high, {d}) / {d}"),
    ("IMIN", "ts_argmin(low, {d}) / {d}"),
    ("IMXD", "(ts_argmax(high, {d}) - ts_argmin(low, {d})) / {d}"),
    ("CORR", "ts_corr(close, log(volume + 1), {d})"),
    ("CORD", "ts_corr(close / ts_delay(close, 1), log(volume / ts_delay(volume, 1) + 1), {d})"),
    ("CNTP", "ts_mean(close > ts_delay(close, 1), {d})"),
    ("CNTN", "ts_mean(close < ts_delay(close, 1), {d})"),
    ("CNTD", "ts_mean(close > ts_delay(close, 1), {d}) - ts_mean(close < ts_delay(close, 1), {d})"),
    ("SUMP", f"ts_sum(greater({_DELTA}, 0), {{d}}) / (ts_sum(abs({_DELTA}), {{d}}) + 1e-12)"),
    ("SUMN", f"ts_sum(greater({_NEG_DELTA}, 0), {{d}}) / (ts_sum(abs({_DELTA}), {{d}}) + 1e-12)"),
    ("SUMD", f"(ts_sum(greater({_DELTA}, 0), {{d}}) - ts_sum(greater({_NEG_DELTA}, 0), {{d}}))"
             f" / (ts_sum(abs({_DELTA}), {{d}}) + 1e-12)"),
    ("VMA", "ts_mean(volume, {d}) / (volume + 1e-12)"),
    ("VSTD", "ts_std(volume, {d}) / (volume + 1e-12)"),
    ("WVMA", f"ts_std({_WV}, {{d}}) / (ts_mean({_WV}, {{d}}) + 1e-12)"),
    ("VSUMP", f"ts_sum(greater({_VDELTA}, 0), {{d}}) / (ts_sum(abs({_VDELTA}), {{d}}) + 1e-12)"),
    ("VSUMN", f"ts_sum(greater({_NEG_VDELTA}, 0), {{d}})"
              f" / (ts_sum(abs({_VDELTA}), {{d}}) + 1e-12)"),
    ("VSUMD", f"(ts_sum(greater({_VDELTA}, 0), {{d}}) - ts_sum(greater({_NEG_VDELTA}, 0), {{d}}))"
              f" / (ts_sum(abs({_VDELTA}), {{d}}) + 1e-12)"),
)

FAMILY_NAMES = tuple(name for name, _ in ROLLING_FAMILIES)


def alpha158_features(
    windows: Sequence[int] = DEFAULT_WINDOWS,
    include: Iterable[str] | None = None,
    exclude: Iterable[str] = (),
    kbar: bool = True,
    price: bool = True,
) -> list[tuple[str, str]]:
    """Alpha158 as ``[(name, expression), ...]`` in Qlib's order.

    Parameters
    ----------
    windows : sequence of int
        Rolling windows (Qlib's default ``5, 10, 20, 30, 60``).
    include, exclude : iterable of str, optional
        Rolling families to keep or drop (e.g. ``exclude=["RANK"]``), as in Qlib's config.
    kbar, price : bool
        Whether to add the 9 K-bar and 4 price features.

    Raises
    ------
    ExpressionError
        For an unknown family name or a window that is not a positive integer.
    """
    include = None if include is None else list(include)
    exclude = list(exclude)
    for name in (include or []) + exclude:
        if name not in FAMILY_NAMES:
            raise ExpressionError(f"unknown Alpha158 family {name!r}; families: "
                                  f"{', '.join(FAMILY_NAMES)}")
    for d in windows:
        if not isinstance(d, int) or isinstance(d, bool) or d <= 0:
            raise ExpressionError(f"Alpha158 window must be a positive integer, got {d!r}")
    out: list[tuple[str, str]] = []
    if kbar:
        out += KBAR_FEATURES
    if price:
        out += PRICE_FEATURES
    for family, template in ROLLING_FAMILIES:
        if family in exclude or (include is not None and family not in include):
            continue
        out += [(f"{family}{d}", template.format(d=d)) for d in windows]
    return out
