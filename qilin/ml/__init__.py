"""Models on factors: leak-free datasets, estimators, walk-forward, registry and drift.

See ``docs/ml.md``. One import path per public name::

    from qilin.ml import Dataset, XGBoostModel, walk_forward, ModelRegistry
"""

from qilin.ml.dataset import Dataset, DatasetSplit, SegmentData, default_label
from qilin.ml.drift import DriftMetrics, DriftMonitor, DriftReport, DriftThresholds, psi
from qilin.ml.models import (
    Model,
    RandomForestModel,
    RidgeModel,
    XGBoostModel,
    make_model,
)
from qilin.ml.processors import (
    CSZScore,
    DropConstant,
    FillNaN,
    Processor,
    ProcessorChain,
    RobustZScore,
    Winsorize,
    default_processors,
)
from qilin.ml.registry import ModelRegistry, ModelVersion, RegistryError
from qilin.ml.scores import prediction_metrics
from qilin.ml.walk_forward import WalkForwardResult, walk_forward
from qilin.ml.windows import Window, walk_forward_windows

__all__ = [
    "CSZScore",
    "Dataset",
    "DatasetSplit",
    "DriftMetrics",
    "DriftMonitor",
    "DriftReport",
    "DriftThresholds",
    "DropConstant",
    "FillNaN",
    "Model",
    "ModelRegistry",
    "ModelVersion",
    "Processor",
    "ProcessorChain",
    "RandomForestModel",
    "RegistryError",
    "RidgeModel",
    "RobustZScore",
    "SegmentData",
    "WalkForwardResult",
    "Window",
    "Winsorize",
    "XGBoostModel",
    "default_label",
    "default_processors",
    "make_model",
    "prediction_metrics",
    "psi",
    "walk_forward",
    "walk_forward_windows",
]
