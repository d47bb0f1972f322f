"""Meta-training the LSTM optimizer on a task family."""

from l2l_plugin.training.callbacks import MetaTrainCallback, MetaTrainProgress, TqdmProgress
from l2l_plugin.training.config import EvaluationConfig, MetaTrainConfig
from l2l_plugin.training.meta_train import (
    CheckpointMismatch,
    MetaTrainingCancelled,
    MetaTrainingDiverged,
    MetaTrainResult,
    cpu_threads,
    meta_train,
    resolve_device,
)

__all__ = [
    "CheckpointMismatch",
    "EvaluationConfig",
    "MetaTrainCallback",
    "MetaTrainConfig",
    "MetaTrainProgress",
    "MetaTrainResult",
    "MetaTrainingCancelled",
    "MetaTrainingDiverged",
    "TqdmProgress",
    "cpu_threads",
    "meta_train",
    "resolve_device",
]
