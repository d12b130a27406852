"""What the price monitor and the anomaly detector return: per-rule values and fired masks.

A :class:`Signals` holds, for each rule, the observed value and whether the rule fired,
either for one tick (1-D arrays over symbols) or for a whole panel (2-D dates x symbols).
It turns the fired cells into :class:`~qilin.monitoring.alerts.Alert` objects or a long
DataFrame of events. Streaming and batch results are compared cell for cell through it.

Examples
--------
>>> import numpy as np
>>> s = Signals(values={"price_above": np.array([10.0, 12.0])},
...             fired={"price_above": np.array([False, True])},
...             thresholds={"price_above": np.array([11.0, 11.0])})
>>> [a.subject for a in s.alerts(["A", "B"], datetime(2024, 1, 2))]
['B']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from qilin.monitoring.alerts import Alert, Severity

#: Severity of each built-in rule.
RULE_SEVERITY: dict[str, Severity] = {
    "price_above": "warning",
    "price_below": "warning",
    "pct_move": "warning",
    "limit_up": "info",
    "limit_down": "warning",
    "return_zscore": "warning",
    "price_zscore": "info",
    "volatility_spike": "warning",
    "volume_spike": "info",
}

_DESCRIBE: dict[str, str] = {
    "price_above": "price {v:.4g} above {t:.4g}",
    "price_below": "price {v:.4g} below {t:.4g}",
    "pct_move": "moved {v:+.2%} against the previous close (threshold {t:.2%})",
    "limit_up": "closed at the up limit {t:.4g} (price {v:.4g})",
    "limit_down": "closed at the down limit {t:.4g} (price {v:.4g})",
    "return_zscore": "return z-score {v:+.2f} beyond {t:.2f}",
    "price_zscore": "price z-score {v:+.2f} beyond {t:.2f}",
    "volatility_spike": "short/long realised volatility ratio {v:.2f} above {t:.2f}",
    "volume_spike": "volume {v:.2f}x its recent mean (threshold {t:.2f}x)",
}


@dataclass
class Signals:
    """Per-rule values, fired masks and thresholds for one tick or a whole panel."""

    values: dict[str, np.ndarray]
    fired: dict[str, np.ndarray]
    thresholds: dict[str, Any] = field(default_factory=dict)

    @property
    def rules(self) -> list[str]:
        return list(self.fired)

    def n_fired(self) -> int:
        """Total number of fired cells over all rules."""
        return int(sum(int(np.count_nonzero(m)) for m in self.fired.values()))

    def merge(self, other: Signals) -> Signals:
        """Rules of both (``other`` wins on a name clash)."""
        return Signals({**self.values, **other.values}, {**self.fired, **other.fired},
                       {**self.thresholds, **other.thresholds})

    def _threshold_at(self, rule: str, idx: Any) -> float:
        t = self.thresholds.get(rule, np.nan)
        if np.ndim(t) == 0:
            return float(t)
        return float(np.asarray(t)[idx])

    def alerts(self, symbols: Sequence[str], time: datetime | Any,
               severity: Mapping[str, Severity] | None = None) -> list[Alert]:
        """Alerts for the fired cells of a one-tick result (1-D masks)."""
        sev = {**RULE_SEVERITY, **(severity or {})}
        out = []
        for rule, mask in self.fired.items():
            for j in np.flatnonzero(mask):
                v = float(self.values[rule][j])
                t = self._threshold_at(rule, j)
                sym = str(symbols[j])
                text = _DESCRIBE.get(rule, "{v} vs {t}").format(v=v, t=t)
                out.append(Alert(rule, sev.get(rule, "warning"), sym, f"{sym} {text}", v, t,
                                 time))
        return out

    def events(self, dates: Sequence[Any], symbols: Sequence[str]) -> pd.DataFrame:
        """Long DataFrame ``date, symbol, rule, value, threshold`` of a batch result."""
        frames = []
        for rule, mask in self.fired.items():
            r, c = np.nonzero(mask)
            t = self.thresholds.get(rule, np.nan)
            thr = (np.full(len(r), float(t)) if np.ndim(t) == 0
                   else np.broadcast_to(np.asarray(t, dtype=float), mask.shape)[r, c])
            frames.append(pd.DataFrame({
                "date": pd.DatetimeIndex(dates)[r], "symbol": pd.Index(symbols)[c],
                "rule": rule, "value": self.values[rule][r, c], "threshold": thr,
            }))
        if not frames:
            return pd.DataFrame(columns=["date", "symbol", "rule", "value", "threshold"])
        out = pd.concat(frames, ignore_index=True)
        return out.sort_values(["date", "symbol", "rule"], kind="stable").reset_index(drop=True)
