"""Honest evaluation: held-out instances, baselines with tuned learning rates, one report."""

from l2l_plugin.evaluation.evaluate import evaluate, learning_rate_grid, tune_learning_rate
from l2l_plugin.evaluation.plot import plot_loss_curves
from l2l_plugin.evaluation.report import LEARNED, EvaluationReport, OptimizerResult

__all__ = [
    "LEARNED",
    "EvaluationReport",
    "OptimizerResult",
    "evaluate",
    "learning_rate_grid",
    "plot_loss_curves",
    "tune_learning_rate",
]
