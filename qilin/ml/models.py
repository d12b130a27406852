"""scikit-learn-style estimators on dataset segments: XGBoost, ridge and a random forest.

Parameters live in ``__init__``; ``fit(X, y=None, valid=None, client=None)`` takes a
:class:`~qilin.ml.dataset.SegmentData` (or arrays), ``predict`` returns one score per row and
``feature_importance`` a Series by feature name. ``backend`` picks the device: ``"cpu"``,
``"gpu"`` (XGBoost with ``device="cuda"``, cuML's Ridge / RandomForestRegressor) or ``"auto"``
(GPU when one is usable). Asking for ``"gpu"`` without one raises
:class:`~qilin.errors.BackendError`: never XGBoost's silent fallback to the CPU.

With a Dask ``client``, :class:`XGBoostModel` trains through ``xgboost.dask``: the segment's
date blocks are scattered to the workers (:meth:`SegmentData.to_dask`), wrapped in a
``DaskQuantileDMatrix`` and trained with ``xgboost.dask.train``; prediction uses
``xgboost.dask.inplace_predict`` on the same kind of partitions.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(400, 3)).astype("float32")
>>> y = X[:, 0] + 0.1 * rng.normal(size=400)
>>> m = XGBoostModel(n_estimators=20, max_depth=3, early_stopping_rounds=None).fit(X, y)
>>> float(np.corrcoef(m.predict(X), y)[0, 1]) > 0.9
True
>>> m.feature_importance().index.tolist()
['f0', 'f1', 'f2']
>>> XGBoostModel(backend="tpu")
Traceback (most recent call last):
...
qilin.errors.ParameterError: backend must be 'cpu', 'gpu' or 'auto', got 'tpu'
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd

from qilin.backend import get_backend, gpu_available
from qilin.errors import DataError, ParameterError
from qilin.ml.dataset import SegmentData, feature_difference


def resolve_device(backend: str) -> str:
    """``"cpu"`` or ``"gpu"`` for a backend request; ``"gpu"`` without a GPU raises.

    Examples
    --------
    >>> resolve_device("cpu")
    'cpu'
    """
    if backend not in ("cpu", "gpu", "auto"):
        raise ParameterError(f"backend must be 'cpu', 'gpu' or 'auto', got {backend!r}")
    if backend == "cpu":
        return "cpu"
    if backend == "gpu":
        get_backend("gpu")  # raises BackendError with the reason
        return "gpu"
    return "gpu" if gpu_available() else "cpu"


def _xy(X: Any, y: Any) -> tuple[Any, Any, list[str] | None]:
    if isinstance(X, SegmentData):
        return X.X, X.y, list(X.features)
    if isinstance(X, pd.DataFrame):
        return X.to_numpy(np.float32), (None if y is None else np.asarray(y)), list(X.columns)
    return X, y, None


def _check_rows(X: Any, y: Any, what: str) -> None:
    if y is None:
        raise DataError(f"{what} has no labels: pass y or a SegmentData")
    if X.shape[0] == 0:
        raise DataError(f"{what} has no rows")
    if X.shape[0] != y.shape[0]:
        raise DataError(f"{what}: {X.shape[0]} feature rows but {y.shape[0]} labels")


class Model:
    """Base class: parameter handling, device resolution and feature bookkeeping."""

    kind: ClassVar[str] = "model"
    _param_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, backend: str = "cpu", seed: int = 0) -> None:
        self.backend = backend
        self.seed = seed
        self.device_ = resolve_device(backend)
        self.features_: list[str] | None = None

    def get_params(self) -> dict[str, Any]:
        """Constructor parameters (as scikit-learn's ``get_params``)."""
        return {k: getattr(self, k) for k in (*self._param_names, "backend", "seed")}

    def clone(self, **overrides: Any) -> Model:
        """An unfitted copy with the same parameters (some overridden)."""
        params = {**self.get_params(), **overrides}
        return type(self)(**params)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def _set_features(self, names: list[str] | None, n: int) -> None:
        self.features_ = names if names is not None else [f"f{i}" for i in range(n)]

    def _check_predict(self, X: Any) -> Any:
        if self.features_ is None:
            raise ParameterError(f"{type(self).__name__} is not fitted: call fit first")
        Xa, _, names = _xy(X, None)
        if names is not None and names != self.features_:
            diff = feature_difference(self.features_, names)
            raise DataError(f"features differ from the model's: {diff}")
        if Xa.shape[1] != len(self.features_):
            raise DataError(f"{Xa.shape[1]} feature columns, the model has "
                            f"{len(self.features_)}")
        return Xa

    def feature_importance(self) -> pd.Series:  # pragma: no cover - overridden
        raise NotImplementedError


class XGBoostModel(Model):
    """Gradient-boosted trees (``tree_method="hist"``), early stopping on the valid segment.

    Parameters
    ----------
    n_estimators : int
        Maximum boosting rounds.
    max_depth, learning_rate, subsample, colsample_bytree, min_child_weight, reg_lambda :
        XGBoost's parameters of the same names.
    early_stopping_rounds : int or None
        Stop when the valid RMSE has not improved for this many rounds (needs ``valid``).
    n_jobs : int or None
        CPU threads (None: XGBoost's default).
    backend : {"cpu", "gpu", "auto"}
    seed : int

    Examples
    --------
    >>> import numpy as np
    >>> X = np.arange(200, dtype="float32").reshape(100, 2)
    >>> m = XGBoostModel(n_estimators=5, early_stopping_rounds=None).fit(X, X[:, 0])
    >>> m.predict(X).shape
    (100,)
    """

    kind = "xgboost"
    _param_names = ("n_estimators", "max_depth", "learning_rate", "subsample",
                    "colsample_bytree", "min_child_weight", "reg_lambda",
                    "early_stopping_rounds", "n_jobs")

    def __init__(self, n_estimators: int = 300, max_depth: int = 6, learning_rate: float = 0.05,
                 subsample: float = 0.8, colsample_bytree: float = 0.8,
                 min_child_weight: float = 1.0, reg_lambda: float = 1.0,
                 early_stopping_rounds: int | None = 30, n_jobs: int | None = None,
                 backend: str = "cpu", seed: int = 0) -> None:
        super().__init__(backend, seed)
        if int(n_estimators) != n_estimators or n_estimators < 1:
            raise ParameterError(f"n_estimators must be a positive integer, got {n_estimators!r}")
        self.n_estimators, self.max_depth, self.learning_rate = n_estimators, max_depth, \
            learning_rate
        self.subsample, self.colsample_bytree = subsample, colsample_bytree
        self.min_child_weight, self.reg_lambda = min_child_weight, reg_lambda
        self.early_stopping_rounds, self.n_jobs = early_stopping_rounds, n_jobs
        self.booster_: Any = None
        self.best_iteration_: int | None = None
        self.history_: dict[str, Any] = {}

    def xgb_params(self) -> dict[str, Any]:
        """The parameter dict passed to ``xgboost.train``."""
        p: dict[str, Any] = {
            "objective": "reg:squarederror", "tree_method": "hist",
            "device": "cuda" if self.device_ == "gpu" else "cpu",
            "max_depth": self.max_depth, "eta": self.learning_rate,
            "subsample": self.subsample, "colsample_bytree": self.colsample_bytree,
            "min_child_weight": self.min_child_weight, "lambda": self.reg_lambda,
            "seed": self.seed, "eval_metric": "rmse",
        }
        if self.n_jobs is not None:
            p["nthread"] = int(self.n_jobs)
        return p

    def fit(self, X: Any, y: Any = None, valid: Any = None, client: Any = None,
            block_dates: int = 20) -> XGBoostModel:
        """Train on ``X``/``y`` (or a SegmentData), early-stopping on ``valid``.

        ``valid`` is a SegmentData or an ``(X, y)`` pair. With ``client`` (and SegmentData
        inputs) training runs through ``xgboost.dask`` on date-block partitions.
        """
        import xgboost as xgb

        Xa, ya, names = _xy(X, y)
        _check_rows(Xa, ya, "training data")
        self._set_features(names, Xa.shape[1])
        es = self.early_stopping_rounds if valid is not None else None
        if client is not None:
            return self._fit_dask(client, X, Xa, ya, valid, es, block_dates)
        dtrain = xgb.QuantileDMatrix(Xa, ya, feature_names=self.features_)
        evals = []
        if valid is not None:
            Xv, yv, _ = _xy(*valid) if isinstance(valid, tuple) else _xy(valid, None)
            _check_rows(Xv, yv, "valid data")
            evals = [(xgb.DMatrix(Xv, yv, feature_names=self.features_), "valid")]
        hist: dict[str, Any] = {}
        self.booster_ = xgb.train(self.xgb_params(), dtrain, int(self.n_estimators),
                                  evals=evals, early_stopping_rounds=es, evals_result=hist,
                                  verbose_eval=False)
        self.history_ = hist
        self._set_best(es)
        return self

    def _set_best(self, es: int | None) -> None:
        rounds = self.booster_.num_boosted_rounds()
        best = getattr(self.booster_, "best_iteration", None) if es else None
        self.best_iteration_ = int(best) if best is not None else rounds - 1

    def _fit_dask(self, client: Any, X: Any, Xa: Any, ya: Any, valid: Any, es: int | None,
                  block_dates: int) -> XGBoostModel:
        from xgboost import dask as dxgb

        if isinstance(X, SegmentData):
            dX, dy = X.to_dask(client, block_dates)
        else:
            import dask.array as da

            dX, dy = da.from_array(Xa, chunks=(max(1, len(Xa) // 4), -1)), da.from_array(ya)
        dtrain = dxgb.DaskQuantileDMatrix(client, dX, dy, feature_names=self.features_)
        evals = []
        if valid is not None:
            if not isinstance(valid, SegmentData):
                raise ParameterError("with a client, valid must be a SegmentData")
            vX, vy = valid.to_dask(client, block_dates)
            evals = [(dxgb.DaskDMatrix(client, vX, vy, feature_names=self.features_), "valid")]
        out = dxgb.train(client, self.xgb_params(), dtrain, num_boost_round=int(self.n_estimators),
                         evals=evals, early_stopping_rounds=es, verbose_eval=False)
        self.booster_, self.history_ = out["booster"], out["history"]
        self._set_best(es)
        return self

    def predict(self, X: Any, client: Any = None, block_dates: int = 20) -> np.ndarray:
        """One score per row (float64). With ``client``, ``xgboost.dask.inplace_predict``."""
        if self.booster_ is None:
            raise ParameterError("XGBoostModel is not fitted: call fit first")
        Xa = self._check_predict(X)
        rng = (0, int(self.best_iteration_) + 1)
        if client is not None and isinstance(X, SegmentData) and len(X):
            from xgboost import dask as dxgb

            dX, _ = X.to_dask(client, block_dates)
            pred = dxgb.inplace_predict(client, self.booster_, dX, iteration_range=rng)
            return np.asarray(pred.compute(), dtype=np.float64)
        if Xa.shape[0] == 0:
            return np.zeros(0)
        return np.asarray(self.booster_.inplace_predict(Xa, iteration_range=rng),
                          dtype=np.float64)

    def feature_importance(self, importance_type: str = "gain") -> pd.Series:
        """Total gain (or ``weight``/``cover``...) per feature; 0 for unused features."""
        if self.booster_ is None:
            raise ParameterError("XGBoostModel is not fitted: call fit first")
        score = self.booster_.get_score(importance_type=importance_type)
        return pd.Series({f: float(score.get(f, 0.0)) for f in self.features_ or []},
                         name=importance_type)


class _SklearnModel(Model):
    """A scikit-learn (CPU) or cuML (GPU) regressor behind the same interface."""

    estimator_: Any = None

    def _make(self) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def fit(self, X: Any, y: Any = None, valid: Any = None, client: Any = None
            ) -> _SklearnModel:
        """Train on ``X``/``y`` or a SegmentData (``valid``/``client`` are not used)."""
        Xa, ya, names = _xy(X, y)
        _check_rows(Xa, ya, "training data")
        self._set_features(names, Xa.shape[1])
        self.estimator_ = self._make()
        self.estimator_.fit(np.asarray(Xa, dtype=np.float32), np.asarray(ya, dtype=np.float32))
        return self

    def predict(self, X: Any, client: Any = None) -> np.ndarray:
        """One score per row (float64)."""
        if self.estimator_ is None:
            raise ParameterError(f"{type(self).__name__} is not fitted: call fit first")
        Xa = self._check_predict(X)
        if Xa.shape[0] == 0:
            return np.zeros(0)
        out = self.estimator_.predict(np.asarray(Xa, dtype=np.float32))
        return np.asarray(out.get() if hasattr(out, "get") else out, dtype=np.float64).ravel()


class RidgeModel(_SklearnModel):
    """Ridge regression (scikit-learn; cuML on GPU).

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(1).normal(size=(50, 2))
    >>> m = RidgeModel(alpha=0.1).fit(X, 2 * X[:, 1])
    >>> m.feature_importance().round(1).tolist()
    [0.0, 2.0]
    """

    kind = "ridge"
    _param_names = ("alpha",)

    def __init__(self, alpha: float = 1.0, backend: str = "cpu", seed: int = 0) -> None:
        super().__init__(backend, seed)
        if not alpha >= 0:
            raise ParameterError(f"alpha must be >= 0, got {alpha!r}")
        self.alpha = alpha

    def _make(self) -> Any:
        if self.device_ == "gpu":
            from cuml.linear_model import Ridge as CuRidge  # pragma: no cover - GPU only

            return CuRidge(alpha=self.alpha)
        from sklearn.linear_model import Ridge

        return Ridge(alpha=self.alpha, random_state=self.seed)

    def feature_importance(self) -> pd.Series:
        """Absolute coefficients per feature."""
        if self.estimator_ is None:
            raise ParameterError("RidgeModel is not fitted: call fit first")
        coef = self.estimator_.coef_
        coef = np.abs(np.asarray(coef.get() if hasattr(coef, "get") else coef)).ravel()
        return pd.Series(coef, index=self.features_, name="abs_coef")


class RandomForestModel(_SklearnModel):
    """Random forest regressor (scikit-learn; cuML on GPU).

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(2).normal(size=(200, 2))
    >>> m = RandomForestModel(n_estimators=10, max_depth=3).fit(X, X[:, 0])
    >>> bool(m.feature_importance()["f0"] > 0.5)
    True
    """

    kind = "random_forest"
    _param_names = ("n_estimators", "max_depth", "min_samples_leaf", "max_features", "n_jobs")

    def __init__(self, n_estimators: int = 100, max_depth: int | None = 8,
                 min_samples_leaf: int = 20, max_features: float = 0.5,
                 n_jobs: int | None = None, backend: str = "cpu", seed: int = 0) -> None:
        super().__init__(backend, seed)
        if int(n_estimators) != n_estimators or n_estimators < 1:
            raise ParameterError(f"n_estimators must be a positive integer, got {n_estimators!r}")
        self.n_estimators, self.max_depth = n_estimators, max_depth
        self.min_samples_leaf, self.max_features, self.n_jobs = min_samples_leaf, \
            max_features, n_jobs

    def _make(self) -> Any:
        if self.device_ == "gpu":  # pragma: no cover - GPU only
            from cuml.ensemble import RandomForestRegressor as CuRF

            return CuRF(n_estimators=self.n_estimators, max_depth=self.max_depth or 16,
                        min_samples_leaf=self.min_samples_leaf,
                        max_features=self.max_features, random_state=self.seed)
        from sklearn.ensemble import RandomForestRegressor

        return RandomForestRegressor(
            n_estimators=self.n_estimators, max_depth=self.max_depth,
            min_samples_leaf=self.min_samples_leaf, max_features=self.max_features,
            n_jobs=self.n_jobs, random_state=self.seed)

    def feature_importance(self) -> pd.Series:
        """Impurity-based importances (NaN on cuML, which does not compute them)."""
        if self.estimator_ is None:
            raise ParameterError("RandomForestModel is not fitted: call fit first")
        imp = getattr(self.estimator_, "feature_importances_", None)
        vals = np.full(len(self.features_ or []), np.nan) if imp is None else np.asarray(imp)
        return pd.Series(vals, index=self.features_, name="importance")


MODELS: dict[str, type[Model]] = {"xgboost": XGBoostModel, "ridge": RidgeModel,
                                  "random_forest": RandomForestModel}


def make_model(kind: str, **params: Any) -> Model:
    """A model by name (``xgboost``, ``ridge``, ``random_forest``) with parameters.

    Examples
    --------
    >>> make_model("ridge", alpha=2.0)
    RidgeModel(alpha=2.0, backend='cpu', seed=0)
    """
    if kind not in MODELS:
        raise ParameterError(f"unknown model {kind!r}; models: {', '.join(MODELS)}")
    try:
        return MODELS[kind](**params)
    except TypeError as exc:
        raise ParameterError(f"bad parameters for model {kind!r}: {exc}") from None


__all__ = ["MODELS", "Model", "RandomForestModel", "RidgeModel",
           "XGBoostModel", "make_model", "resolve_device"]
