"""Feature and prediction drift, and the live Rank IC of a deployed model.

Per feature, :class:`DriftMonitor` compares new data with the training (reference) data:

* **PSI** on bins cut at the reference's quantiles (``bins`` equal-mass bins; a small floor
  keeps empty bins finite): ``sum((cur - ref) * ln(cur / ref))``. Practice: below 0.1 stable,
  0.1-0.2 a moderate shift (``warn``), above 0.2 a significant one (``alert``).
* the two-sample **Kolmogorov-Smirnov** statistic and p-value (``scipy.stats.ks_2samp``).

A feature drifts when its PSI reaches ``psi_alert``; the dataset is flagged when the share of
drifting features reaches ``share_alert``. Predictions get the same PSI against the reference
predictions, and once labels are known, :func:`live_rank_ic` measures the latest predictions.
Results come as a table (:attr:`DriftReport.table`), as :class:`~qilin.monitoring.alerts.Alert`
objects for an ``AlertManager`` and as Prometheus gauges labelled by model only (bounded
cardinality: never one series per feature or symbol).

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> ref = rng.normal(size=(5000, 2))
>>> new = np.column_stack([rng.normal(size=5000), rng.normal(1.0, 1.0, 5000)])
>>> rep = DriftMonitor(ref, ["stable", "shifted"]).check(new)
>>> rep.table["status"].tolist()
['ok', 'alert']
>>> rep.flag, rep.drifted
('alert', ['shifted'])
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from qilin.errors import DataError, ParameterError
from qilin.ml.dataset import feature_difference

_FLOOR = 1e-4


@dataclass(frozen=True)
class DriftThresholds:
    """PSI warn/alert levels, KS p-value level and the share of drifting features that flags
    the whole dataset (warn / alert)."""

    psi_warn: float = 0.1
    psi_alert: float = 0.2
    ks_pvalue: float = 0.01
    share_warn: float = 0.1
    share_alert: float = 0.25

    def __post_init__(self) -> None:
        if not 0 < self.psi_warn <= self.psi_alert:
            raise ParameterError(f"need 0 < psi_warn <= psi_alert, got {self.psi_warn}, "
                                 f"{self.psi_alert}")
        if not 0 < self.share_warn <= self.share_alert <= 1:
            raise ParameterError(f"need 0 < share_warn <= share_alert <= 1, got "
                                 f"{self.share_warn}, {self.share_alert}")


def quantile_edges(reference: np.ndarray, bins: int = 10) -> np.ndarray:
    """Inner bin edges at the reference's quantiles (duplicates removed).

    Examples
    --------
    >>> quantile_edges(np.arange(100.0), 4).tolist()
    [24.75, 49.5, 74.25]
    """
    ref = np.asarray(reference, dtype=np.float64)
    ref = ref[np.isfinite(ref)]
    if ref.size == 0:
        return np.zeros(0)
    return np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))


def psi(reference: Any, current: Any, bins: int = 10, edges: np.ndarray | None = None
        ) -> float:
    """Population stability index of ``current`` against ``reference`` (NaN ignored).

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> a, b = rng.normal(size=20000), rng.normal(size=20000)
    >>> psi(a, b) < 0.01, psi(a, b + 1.0) > 0.2
    (True, True)
    """
    ref = np.asarray(reference, dtype=np.float64).ravel()
    cur = np.asarray(current, dtype=np.float64).ravel()
    ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
    if ref.size == 0 or cur.size == 0:
        return math.nan
    e = quantile_edges(ref, bins) if edges is None else edges
    p = np.bincount(np.searchsorted(e, ref, "right"), minlength=e.size + 1) / ref.size
    q = np.bincount(np.searchsorted(e, cur, "right"), minlength=e.size + 1) / cur.size
    p, q = np.maximum(p, _FLOOR), np.maximum(q, _FLOOR)
    return float(np.sum((q - p) * np.log(q / p)))


def live_rank_ic(scores: Any, forward: Any) -> dict[str, float]:
    """Mean Rank IC (and t-stat) of scores (dates x symbols) whose labels are now known."""
    from qilin.ml.scores import prediction_metrics

    m = prediction_metrics(scores, forward)
    return {"rank_ic": m["rank_ic"], "rank_ic_t": m["rank_ic_t"], "n_dates": m["n_dates"]}


@dataclass
class DriftReport:
    """Result of :meth:`DriftMonitor.check`."""

    model: str
    table: pd.DataFrame
    flag: str
    share: float
    prediction_psi: float = math.nan
    live_rank_ic: float = math.nan
    thresholds: DriftThresholds = field(default_factory=DriftThresholds)

    @property
    def drifted(self) -> list[str]:
        """Features whose PSI reaches the alert level."""
        return self.table.index[self.table["status"] == "alert"].tolist()

    @property
    def max_psi(self) -> float:
        """Largest feature PSI (NaN when none is finite)."""
        v = self.table["psi"].to_numpy(dtype=float)
        return float(np.nanmax(v)) if np.isfinite(v).any() else math.nan

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary with the table as records."""
        return {"model": self.model, "flag": self.flag, "share": self.share,
                "drifted": self.drifted, "max_psi": self.max_psi,
                "prediction_psi": self.prediction_psi, "live_rank_ic": self.live_rank_ic,
                "features": self.table.reset_index().to_dict("records")}

    def alerts(self) -> list[Any]:
        """Alerts for ``AlertManager.fire_many``: the dataset flag, each drifting feature
        (subject ``model/feature``) and prediction drift."""
        from qilin.monitoring.alerts import Alert

        t = self.thresholds
        out = []
        if self.flag != "ok":
            out.append(Alert("feature_drift", "critical" if self.flag == "alert" else "warning",
                             self.model, f"{self.model}: {self.share:.0%} of features drift "
                             f"(PSI >= {t.psi_alert}): {', '.join(self.drifted[:10])}",
                             self.share, t.share_alert if self.flag == "alert" else
                             t.share_warn))
        for feat in self.drifted:
            v = float(self.table.loc[feat, "psi"])
            out.append(Alert("feature_psi", "warning", f"{self.model}/{feat}",
                             f"{self.model}: feature {feat} PSI {v:.3f} >= {t.psi_alert}", v,
                             t.psi_alert))
        if math.isfinite(self.prediction_psi) and self.prediction_psi >= t.psi_warn:
            sev = "critical" if self.prediction_psi >= t.psi_alert else "warning"
            out.append(Alert("prediction_drift", sev, self.model,
                             f"{self.model}: prediction PSI {self.prediction_psi:.3f}",
                             self.prediction_psi, t.psi_warn))
        return out


class DriftMonitor:
    """Reference (training) distributions of a model's features and predictions.

    Parameters
    ----------
    reference : array (rows x features) or DataFrame
        Training features (processed as the model saw them, or raw: be consistent).
    features : list of str, optional
        Names (default: the DataFrame's columns or ``f0, f1, ...``).
    reference_predictions : array, optional
        The model's predictions on the reference rows.
    model : str
        The model name used in alerts and metric labels.
    bins : int
    thresholds : DriftThresholds
    """

    def __init__(self, reference: Any, features: list[str] | None = None,
                 reference_predictions: Any = None, model: str = "model", bins: int = 10,
                 thresholds: DriftThresholds | None = None) -> None:
        if isinstance(reference, pd.DataFrame):
            features = list(reference.columns) if features is None else features
            reference = reference.to_numpy(np.float64)
        ref = np.asarray(reference, dtype=np.float64)
        if ref.ndim != 2 or ref.shape[0] == 0:
            raise DataError(f"reference must be a non-empty rows x features array, got shape "
                            f"{ref.shape}")
        self.features = features or [f"f{i}" for i in range(ref.shape[1])]
        if len(self.features) != ref.shape[1]:
            raise DataError(f"{len(self.features)} names for {ref.shape[1]} feature columns")
        if int(bins) != bins or bins < 2:
            raise ParameterError(f"bins must be an integer >= 2, got {bins!r}")
        self.model, self.bins = model, int(bins)
        self.thresholds = thresholds or DriftThresholds()
        self.reference = ref
        self.edges = [quantile_edges(ref[:, j], self.bins) for j in range(ref.shape[1])]
        self.reference_predictions = (None if reference_predictions is None else
                                      np.asarray(reference_predictions, np.float64).ravel())

    def check(self, current: Any, predictions: Any = None, scores: Any = None,
              forward: Any = None) -> DriftReport:
        """Compare ``current`` features (and ``predictions``) with the reference.

        ``scores`` and ``forward`` (dates x symbols), when given, add the live Rank IC.
        """
        from scipy import stats

        if isinstance(current, pd.DataFrame):
            if list(current.columns) != self.features:
                raise DataError(f"new data's features differ from the reference: "
                                f"{feature_difference(self.features, list(current.columns))}")
            current = current.to_numpy(np.float64)
        cur = np.asarray(current, dtype=np.float64)
        if cur.ndim != 2 or cur.shape[1] != len(self.features):
            raise DataError(f"new data has shape {cur.shape}; expected rows x "
                            f"{len(self.features)} features")
        t = self.thresholds
        rows = []
        for j, name in enumerate(self.features):
            r, c = self.reference[:, j], cur[:, j]
            r, c = r[np.isfinite(r)], c[np.isfinite(c)]
            p = psi(r, c, edges=self.edges[j])
            if r.size and c.size:
                ks = stats.ks_2samp(r, c, method="asymp")
                ks_s, ks_p = float(ks.statistic), float(ks.pvalue)
            else:
                ks_s = ks_p = math.nan
            status = ("alert" if p >= t.psi_alert else "warn" if p >= t.psi_warn else "ok") \
                if math.isfinite(p) else "no data"
            rows.append({"feature": name, "psi": p, "ks_stat": ks_s, "ks_pvalue": ks_p,
                         "ks_drift": bool(ks_p < t.ks_pvalue) if math.isfinite(ks_p) else False,
                         "status": status, "n_ref": int(r.size), "n_new": int(c.size)})
        table = pd.DataFrame(rows).set_index("feature")
        share = float((table["status"] == "alert").mean()) if len(table) else 0.0
        flag = "alert" if share >= t.share_alert else "warn" if share >= t.share_warn else "ok"
        pred_psi = math.nan
        if predictions is not None and self.reference_predictions is not None:
            pred_psi = psi(self.reference_predictions, predictions, self.bins)
        ric = math.nan
        if scores is not None and forward is not None:
            ric = live_rank_ic(scores, forward)["rank_ic"]
        return DriftReport(self.model, table, flag, share, pred_psi, ric, t)


class DriftMetrics:
    """Prometheus gauges for drift, labelled by model only (at most ``max_models`` series
    each; further models share the label ``other``).

    Parameters
    ----------
    registry : CollectorRegistry, optional
        E.g. ``QilinMetrics().registry`` to serve them with the other qilin metrics.

    Examples
    --------
    >>> m = DriftMetrics()
    >>> m.prediction_latency("m1", 0.002)
    >>> m.registry.get_sample_value("qilin_model_prediction_duration_seconds_count",
    ...                             {"model": "m1"})
    1.0
    """

    def __init__(self, registry: Any = None, max_models: int = 20) -> None:
        from prometheus_client import CollectorRegistry, Gauge, Histogram

        from qilin.monitoring.prometheus import LATENCY_BUCKETS

        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.max_models = max_models
        self._models: set[str] = set()
        self.drifted = Gauge("qilin_model_drifted_features", "Features whose PSI is at the "
                             "alert level.", ["model"], registry=r)
        self.max_psi = Gauge("qilin_model_feature_psi_max", "Largest feature PSI.", ["model"],
                             registry=r)
        self.share = Gauge("qilin_model_drifted_feature_share", "Share of drifting features.",
                           ["model"], registry=r)
        self.flag = Gauge("qilin_model_drift_flag", "0 ok, 1 warn, 2 alert.", ["model"],
                          registry=r)
        self.pred_psi = Gauge("qilin_model_prediction_psi", "PSI of the predictions.",
                              ["model"], registry=r)
        self.rank_ic = Gauge("qilin_model_live_rank_ic", "Rank IC of the latest predictions "
                             "with known labels.", ["model"], registry=r)
        self.latency = Histogram("qilin_model_prediction_duration_seconds",
                                 "Wall time of one prediction call.", ["model"],
                                 buckets=LATENCY_BUCKETS, registry=r)

    def _label(self, model: str) -> str:
        if model in self._models or len(self._models) < self.max_models:
            self._models.add(model)
            return model
        return "other"

    def observe(self, report: DriftReport) -> None:
        """Set the gauges from a report."""
        m = self._label(report.model)
        self.drifted.labels(model=m).set(len(report.drifted))
        self.max_psi.labels(model=m).set(report.max_psi)
        self.share.labels(model=m).set(report.share)
        self.flag.labels(model=m).set({"ok": 0, "warn": 1, "alert": 2}[report.flag])
        self.pred_psi.labels(model=m).set(report.prediction_psi)
        self.rank_ic.labels(model=m).set(report.live_rank_ic)

    def prediction_latency(self, model: str, seconds: float) -> None:
        """Record the duration of one prediction call."""
        self.latency.labels(model=self._label(model)).observe(seconds)


def publish(report: DriftReport, alerts: Any = None, metrics: DriftMetrics | None = None
            ) -> int:
    """Send a report's alerts to an ``AlertManager`` and set ``metrics``; returns the number
    of alerts dispatched."""
    if metrics is not None:
        metrics.observe(report)
    if alerts is None:
        return 0
    return int(alerts.fire_many(report.alerts()))
