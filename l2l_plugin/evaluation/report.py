"""What an evaluation measured, per optimizer, as written to ``evaluation.json``."""

from __future__ import annotations

import math
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict

from l2l_plugin.loss_stats import beats, geometric_mean

__all__ = ["LEARNED", "EvaluationReport", "OptimizerResult", "beats", "geometric_mean"]

LEARNED = "learned"


class OptimizerResult(BaseModel):
    """One optimizer on the held-out instances (losses are the training loss at the last step)."""

    model_config = ConfigDict(ser_json_inf_nan="constants")

    final_loss_mean: float
    final_loss_median: float
    final_loss_geomean: float
    loss_sum_mean: float
    curve: list[float]  # mean loss over instances at steps 0..steps
    final_losses: list[float]  # per instance, in held-out seed order
    eval_loss_mean: float | None = None  # the family's held-out loss (e.g. test set), if it has one
    lr: float | None = None  # tuned learning rate (baselines)
    lr_grid: list[float] | None = None
    lr_at_grid_edge: bool | None = None
    diverged: int = 0  # instances whose final loss is not finite

    def beats(self, other: OptimizerResult) -> bool:
        """:func:`beats` on the final losses: lower mean and lower geometric mean than ``other``."""
        return beats(self.final_loss_mean, self.final_loss_geomean, other.final_loss_mean, other.final_loss_geomean)

    @classmethod
    def from_curves(cls, curves: torch.Tensor, eval_losses: torch.Tensor | None, **extra: Any) -> OptimizerResult:
        """``curves``: (instances, steps + 1)."""
        curves = curves.double()
        final = curves[:, -1]
        finite = torch.isfinite(final)
        safe_final = torch.where(finite, final, torch.full_like(final, math.inf))
        return cls(
            final_loss_mean=float(safe_final.mean()),
            final_loss_median=float(safe_final.median()),
            final_loss_geomean=geometric_mean(safe_final),
            loss_sum_mean=float(torch.nan_to_num(curves, nan=math.inf).sum(dim=1).mean()),
            curve=[float(v) for v in torch.nan_to_num(curves, nan=math.inf).mean(dim=0)],
            final_losses=[float(v) for v in safe_final],
            eval_loss_mean=None if eval_losses is None else float(eval_losses.double().mean()),
            diverged=int((~finite).sum()),
            **extra,
        )


class EvaluationReport(BaseModel):
    """The learned optimizer against tuned baselines on the same held-out instances."""

    model_config = ConfigDict(ser_json_inf_nan="constants")

    family: str
    family_config: dict[str, Any]
    steps: int
    test_seeds: list[int]
    tuning_seeds: list[int]
    optimizers: dict[str, OptimizerResult]
    best_baseline: str
    win_rate_vs_best_baseline: float
    beats_every_baseline: bool

    @classmethod
    def build(
        cls,
        family: str,
        family_config: dict[str, Any],
        steps: int,
        test_seeds: list[int],
        tuning_seeds: list[int],
        optimizers: dict[str, OptimizerResult],
    ) -> EvaluationReport:
        learned = optimizers[LEARNED]
        baselines = {name: result for name, result in optimizers.items() if name != LEARNED}
        best = min(baselines, key=lambda name: baselines[name].final_loss_mean)
        wins = [a < b for a, b in zip(learned.final_losses, baselines[best].final_losses)]
        beats_all = all(learned.beats(other) for other in baselines.values())
        return cls(
            family=family,
            family_config=family_config,
            steps=steps,
            test_seeds=test_seeds,
            tuning_seeds=tuning_seeds,
            optimizers=optimizers,
            best_baseline=best,
            win_rate_vs_best_baseline=sum(wins) / len(wins),
            beats_every_baseline=beats_all,
        )

    def summary(self) -> dict[str, float | str | bool]:
        """Flat figures for tags and metrics (no curves or per-instance losses)."""
        out: dict[str, float | str | bool] = {
            "best_baseline": self.best_baseline,
            "win_rate_vs_best_baseline": self.win_rate_vs_best_baseline,
            "beats_every_baseline": self.beats_every_baseline,
        }
        for name, result in self.optimizers.items():
            for key in ("final_loss_mean", "final_loss_median", "final_loss_geomean", "loss_sum_mean"):
                out[f"{name}.{key}"] = getattr(result, key)
            if result.lr is not None:
                out[f"{name}.lr"] = result.lr
        return out

    def ratio_to_best_baseline(self, key: str = "final_loss_mean") -> float:
        best = getattr(self.optimizers[self.best_baseline], key)
        return getattr(self.optimizers[LEARNED], key) / best if best else math.inf
