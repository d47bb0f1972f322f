"""Meta-training the LSTM optimizer on a task family."""

from l2l_plugin.training.callbacks import MetaTrainCallback, MetaTrainProgress, MetaTrainStart, TqdmProgress
from l2l_plugin.training.config import EvaluationConfig, MetaTrainConfig
from l2l_plugin.training.meta_train import (
    CheckpointMismatch,
    MetaTrainingCancelled,
    MetaTrainingDiverged,
    meta_train,
    resolve_device,
)
from l2l_plugin.training.result import MetaTrainResult
from l2l_plugin.training.threads import cpu_threads

__all__ = [
    "CheckpointMismatch",
    "EvaluationConfig",
    "MetaTrainCallback",
    "MetaTrainConfig",
    "MetaTrainProgress",
    "MetaTrainResult",
    "MetaTrainStart",
    "MetaTrainingCancelled",
    "MetaTrainingDiverged",
    "TqdmProgress",
    "cpu_threads",
    "meta_train",
    "resolve_device",
]
