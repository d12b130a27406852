"""Feature processors: fitted on the training segment only, applied unchanged afterwards.

Every processor works on a ``(dates, symbols, features)`` float array (NaN = missing) and
has ``fit(x) -> self``, ``transform(x) -> array`` and ``report() -> dict`` (what it learned,
for the model's ``meta.json``). Cross-sectional processors (:class:`CSZScore`) learn nothing
and use only the symbols of the same date; the others learn per-feature statistics from the
training rows and reuse them verbatim on the valid and test segments, so no statistic of a
later segment ever reaches an earlier one.

Examples
--------
>>> import numpy as np
>>> x = np.array([[[1.0, 5.0], [3.0, 5.0]], [[np.nan, 5.0], [5.0, 5.0]]])
>>> chain = ProcessorChain([DropConstant(), FillNaN(), RobustZScore()])
>>> out = chain.fit_transform(x, ["a", "b"])
>>> chain.features
['a']
>>> chain.dropped
{'b': 'constant in training'}
>>> out.shape
(2, 2, 1)
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from qilin.errors import ParameterError

_MAD_SCALE = 1.4826  # MAD of a standard normal


class Processor:
    """Base class: a named, fit-on-train transform of a ``(dates, symbols, features)`` array."""

    name = "processor"

    def fit(self, x: np.ndarray) -> Processor:
        """Learn statistics from the training array ``x``; returns ``self``."""
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    def select(self, keep: np.ndarray) -> None:
        """Keep the learned statistics of the features in the boolean mask ``keep``."""

    def report(self) -> dict[str, Any]:
        """JSON-safe description of the processor and its parameters."""
        return {"name": self.name}

    #: Learned attributes saved by :meth:`state` (arrays, one value per feature).
    _learned: tuple[str, ...] = ()

    def state(self) -> dict[str, Any]:
        """Parameters and learned statistics as JSON-safe lists (for the model registry)."""
        out = self.report()
        for k in self._learned:
            v = getattr(self, k)
            out[k] = None if v is None else [_json_num(x) for x in np.asarray(v).tolist()]
        return out

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Processor:
        """Rebuild a fitted processor from :meth:`state`."""
        params = {k: v for k, v in state.items() if k != "name" and k not in cls._learned}
        p = cls(**params)
        for k in cls._learned:
            v = state.get(k)
            if v is not None:
                arr = np.array([np.nan if x is None else float(x) for x in v])
                setattr(p, k, arr.astype(bool) if k == "keep_" else arr.astype(np.float64))
        return p


def _json_num(x: Any) -> Any:
    if isinstance(x, bool):
        return x
    x = float(x)
    if np.isnan(x):
        return None
    return x if np.isfinite(x) else ("inf" if x > 0 else "-inf")


class FillNaN(Processor):
    """Replace NaN by a constant or by each feature's training median.

    Parameters
    ----------
    value : float or "median"
        The fill value; ``"median"`` uses the per-feature median of the training rows.

    Examples
    --------
    >>> import numpy as np
    >>> FillNaN().fit(np.ones((1, 2, 1))).transform(np.array([[[np.nan], [2.0]]])).ravel()
    array([0., 2.])
    """

    name = "fillna"
    _learned = ("fill_",)

    def __init__(self, value: float | str = 0.0) -> None:
        if not (value == "median" or isinstance(value, int | float)):
            raise ParameterError(f"FillNaN value must be a number or 'median', got {value!r}")
        self.value = value
        self.fill_: np.ndarray | None = None

    def fit(self, x: np.ndarray) -> FillNaN:
        if self.value == "median":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                med = np.nanmedian(x.reshape(-1, x.shape[-1]), axis=0)
            self.fill_ = np.where(np.isfinite(med), med, 0.0)
        else:
            self.fill_ = np.full(x.shape[-1], float(self.value))  # type: ignore[arg-type]
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        assert self.fill_ is not None, "fit first"
        return np.where(np.isfinite(x), x, self.fill_.astype(x.dtype))

    def select(self, keep: np.ndarray) -> None:
        if self.fill_ is not None:
            self.fill_ = self.fill_[keep]

    def report(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value}


class CSZScore(Processor):
    """Cross-sectional z-score per date and feature (Qlib's CSZScoreNorm); learns nothing.

    Examples
    --------
    >>> import numpy as np
    >>> CSZScore().transform(np.array([[[1.0], [3.0]]])).ravel()
    array([-1.,  1.])
    """

    name = "cs_zscore"

    def transform(self, x: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(x, axis=1, keepdims=True)
            std = np.nanstd(x, axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(std > 0, (x - mean) / std, 0.0 * x).astype(x.dtype, copy=False)


class RobustZScore(Processor):
    """``(x - median) / (1.4826 MAD)`` with the median and MAD of the training rows, clipped.

    Parameters
    ----------
    clip : float or None
        Clip the result to ``[-clip, clip]`` (Qlib's RobustZScoreNorm uses 3).

    Examples
    --------
    >>> import numpy as np
    >>> p = RobustZScore(clip=None).fit(np.array([[[1.0], [2.0], [3.0]]]))
    >>> p.transform(np.array([[[2.0], [4.0]]])).ravel().round(4)
    array([0.   , 1.349])
    """

    name = "robust_zscore"
    _learned = ("median_", "scale_")

    def __init__(self, clip: float | None = 3.0) -> None:
        self.clip = clip
        self.median_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None

    def fit(self, x: np.ndarray) -> RobustZScore:
        flat = x.reshape(-1, x.shape[-1])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nanmedian(flat, axis=0)
            mad = np.nanmedian(np.abs(flat - med), axis=0) * _MAD_SCALE
        self.median_ = np.where(np.isfinite(med), med, 0.0)
        self.scale_ = np.where(np.isfinite(mad) & (mad > 0), mad, 1.0)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        assert self.median_ is not None and self.scale_ is not None, "fit first"
        out = (x - self.median_.astype(x.dtype)) / self.scale_.astype(x.dtype)
        if self.clip is not None:
            out = np.clip(out, -self.clip, self.clip)
        return out

    def select(self, keep: np.ndarray) -> None:
        if self.median_ is not None and self.scale_ is not None:
            self.median_, self.scale_ = self.median_[keep], self.scale_[keep]

    def report(self) -> dict[str, Any]:
        return {"name": self.name, "clip": self.clip}


class Winsorize(Processor):
    """Clip each feature to its training ``[lower, upper]`` quantiles.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(101.0).reshape(1, 101, 1)
    >>> Winsorize(0.05, 0.95).fit(x).transform(np.array([[[-10.0], [500.0]]])).ravel()
    array([ 5., 95.])
    """

    name = "winsorize"
    _learned = ("lo_", "hi_")

    def __init__(self, lower: float = 0.01, upper: float = 0.99) -> None:
        if not 0.0 <= lower < upper <= 1.0:
            raise ParameterError(f"Winsorize needs 0 <= lower < upper <= 1, got {lower}, {upper}")
        self.lower, self.upper = lower, upper
        self.lo_: np.ndarray | None = None
        self.hi_: np.ndarray | None = None

    def fit(self, x: np.ndarray) -> Winsorize:
        flat = x.reshape(-1, x.shape[-1])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            q = np.nanquantile(flat, [self.lower, self.upper], axis=0)
        self.lo_ = np.where(np.isfinite(q[0]), q[0], -np.inf)
        self.hi_ = np.where(np.isfinite(q[1]), q[1], np.inf)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        assert self.lo_ is not None and self.hi_ is not None, "fit first"
        return np.clip(x, self.lo_.astype(x.dtype), self.hi_.astype(x.dtype))

    def select(self, keep: np.ndarray) -> None:
        if self.lo_ is not None and self.hi_ is not None:
            self.lo_, self.hi_ = self.lo_[keep], self.hi_[keep]

    def report(self) -> dict[str, Any]:
        return {"name": self.name, "lower": self.lower, "upper": self.upper}


class DropConstant(Processor):
    """Drop features that are all-NaN or constant in training (listed in the report).

    Must come first in a chain: later processors only see the kept features.
    """

    name = "drop_constant"
    _learned = ("keep_",)

    def __init__(self) -> None:
        self.keep_: np.ndarray | None = None
        self.reasons_: list[str | None] = []

    def fit(self, x: np.ndarray) -> DropConstant:
        flat = x.reshape(-1, x.shape[-1])
        finite = np.isfinite(flat)
        any_finite = finite.any(axis=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            lo = np.nanmin(np.where(finite, flat, np.nan), axis=0)
            hi = np.nanmax(np.where(finite, flat, np.nan), axis=0)
        constant = any_finite & (lo == hi)
        self.keep_ = any_finite & ~constant
        self.reasons_ = [None if k else ("all NaN in training" if not a else
                                         "constant in training")
                         for k, a in zip(self.keep_, any_finite, strict=True)]
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        assert self.keep_ is not None, "fit first"
        return x[..., self.keep_]


def default_processors() -> list[Processor]:
    """Drop constant/all-NaN features, robust z-score (clip 3), fill NaN with 0.

    Examples
    --------
    >>> [p.name for p in default_processors()]
    ['drop_constant', 'robust_zscore', 'fillna']
    """
    return [DropConstant(), RobustZScore(clip=3.0), FillNaN(0.0)]


class ProcessorChain:
    """Processors applied in order; fitted once on training data, then frozen.

    Parameters
    ----------
    processors : sequence of Processor
        ``DropConstant`` may appear anywhere; features it drops disappear for the rest.
    """

    def __init__(self, processors: Sequence[Processor]) -> None:
        for p in processors:
            if not isinstance(p, Processor):
                raise ParameterError(f"processors must be qilin.ml Processors, got {p!r}")
        self.processors = list(processors)
        self.features: list[str] = []
        self.input_features: list[str] = []
        self.dropped: dict[str, str] = {}
        self.fitted = False

    def fit_transform(self, x: np.ndarray, features: Sequence[str]) -> np.ndarray:
        """Fit every processor on ``x`` (training rows only) and return the transformed array."""
        names = list(features)
        self.input_features = list(names)
        self.dropped = {}
        for p in self.processors:
            p.fit(x)
            if isinstance(p, DropConstant):
                assert p.keep_ is not None
                for n, r in zip(names, p.reasons_, strict=True):
                    if r is not None:
                        self.dropped[n] = r
                names = [n for n, k in zip(names, p.keep_, strict=True) if k]
            x = p.transform(x)
        self.features = names
        self.fitted = True
        return x

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Apply the fitted processors unchanged."""
        if not self.fitted:
            raise ParameterError("the processors are not fitted: fit them on a training segment")
        for p in self.processors:
            x = p.transform(x)
        return x

    def report(self) -> dict[str, Any]:
        """Processors in order, kept features and dropped features with reasons."""
        return {"processors": [p.report() for p in self.processors],
                "features": list(self.features), "dropped": dict(self.dropped)}

    def to_dict(self) -> dict[str, Any]:
        """The fitted chain as JSON-safe data: :meth:`from_dict` rebuilds it exactly."""
        if not self.fitted:
            raise ParameterError("the processors are not fitted: fit them on a training segment")
        return {"input_features": list(self.input_features), "features": list(self.features),
                "dropped": dict(self.dropped),
                "processors": [p.state() for p in self.processors]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProcessorChain:
        """Rebuild a fitted chain saved with :meth:`to_dict`.

        Examples
        --------
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(size=(4, 5, 2))
        >>> chain = ProcessorChain(default_processors())
        >>> y = chain.fit_transform(x, ["a", "b"])
        >>> again = ProcessorChain.from_dict(chain.to_dict())
        >>> bool(np.array_equal(again.transform(x), y)), again.features
        (True, ['a', 'b'])
        """
        kinds = {c.name: c for c in (FillNaN, CSZScore, RobustZScore, Winsorize, DropConstant)}
        procs = []
        for st in data.get("processors", []):
            if st.get("name") not in kinds:
                raise ParameterError(f"unknown processor {st.get('name')!r} in saved state")
            procs.append(kinds[st["name"]].from_state(st))
        chain = cls(procs)
        chain.input_features = list(data["input_features"])
        chain.features = list(data["features"])
        chain.dropped = dict(data.get("dropped", {}))
        chain.fitted = True
        return chain
