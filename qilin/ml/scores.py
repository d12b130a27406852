"""Predictions as score Panels, judged with the factor evaluation's IC and Rank IC.

Examples
--------
>>> import numpy as np
>>> score = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
>>> fwd = np.array([[0.1, 0.2, 0.3], [0.1, 0.2, 0.3]])
>>> m = prediction_metrics(score, fwd)
>>> round(m["rank_ic"], 6), m["n_dates"]
(0.0, 2)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from qilin.data.panel import Panel
from qilin.factors.evaluation import ic_statistics, information_coefficient


def score_grid(scores: Panel | np.ndarray, field: str = "score") -> np.ndarray:
    """The dates x symbols array of a score Panel (or the array itself)."""
    if isinstance(scores, Panel):
        return np.asarray(scores.backend.to_host(scores[field]), dtype=np.float64)
    return np.asarray(scores, dtype=np.float64)


def prediction_metrics(scores: Panel | np.ndarray, forward: np.ndarray) -> dict[str, Any]:
    """IC (Pearson) and Rank IC (Spearman) per date of scores vs forward returns, summarised.

    Returns ``ic``, ``ic_ir``, ``ic_t``, ``rank_ic``, ``rank_ic_ir``, ``rank_ic_t``,
    ``n_dates`` and the per-date ``rank_ic_series`` (an array).
    """
    s = score_grid(scores)
    f = np.asarray(forward, dtype=np.float64)
    ic = information_coefficient(s, f, "pearson")
    ric = information_coefficient(s, f, "spearman")
    a, b = ic_statistics(ic), ic_statistics(ric)
    return {"ic": a["mean"], "ic_ir": a["ir"], "ic_t": a["t"],
            "rank_ic": b["mean"], "rank_ic_ir": b["ir"], "rank_ic_t": b["t"],
            "n_dates": b["n"], "rank_ic_series": ric}


def summary(metrics: dict[str, Any]) -> dict[str, float]:
    """The scalar entries of :func:`prediction_metrics` (JSON-friendly)."""
    return {k: (float(v) if v is not None and math.isfinite(float(v)) else math.nan)
            for k, v in metrics.items() if np.ndim(v) == 0}
