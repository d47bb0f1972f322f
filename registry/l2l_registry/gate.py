"""The promotion gate: may a newly meta-trained optimizer become the family's champion?

Rule (both must hold):

1. it beats every tuned baseline on the held-out instances — ``EvaluationReport.beats_every_baseline``:
   a lower mean AND a lower geometric mean of the final loss than each baseline;
2. it beats the current champion on the same instances: the champion's optimizer is run again
   on the new report's family config, held-out seeds and step count, and the newcomer needs a
   strictly lower mean AND geometric mean of the final loss. (Mean alone rewards one lucky
   outlier; geomean alone ignores blow-ups; the losses are heavy-tailed, so both.)

With no champion yet, rule 1 alone decides. A champion that cannot be loaded or run blocks
promotion (a human can still force it with ``l2l promote``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from l2l_plugin import TrainedOptimizer, make_family
from l2l_plugin.evaluation import EvaluationReport
from l2l_plugin.evaluation.report import LEARNED, OptimizerResult
from l2l_plugin.optimizer.rollout import run_learned
from l2l_plugin.training import cpu_threads

_CPU = torch.device("cpu")


@dataclass(frozen=True)
class ChampionComparison:
    champion_version: str
    champion_mean: float
    champion_geomean: float
    challenger_mean: float
    challenger_geomean: float
    instances: int

    @property
    def challenger_wins(self) -> bool:
        return self.challenger_mean < self.champion_mean and self.challenger_geomean < self.champion_geomean

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    comparison: ChampionComparison | None = None


def evaluate_on_report_instances(
    trained: TrainedOptimizer, report: EvaluationReport, threads: int | None = 1
) -> OptimizerResult:
    """``trained`` on exactly the instances (family config, seeds, steps) of ``report``."""
    family = make_family(report.family, report.family_config)
    with cpu_threads(threads):
        curves, eval_losses = run_learned(
            trained.net.cpu(), family.sample_stack(report.test_seeds), report.steps, _CPU
        )
    return OptimizerResult.from_curves(curves, eval_losses)


def compare_with_champion(
    report: EvaluationReport, champion: TrainedOptimizer, champion_version: str, threads: int | None = 1
) -> ChampionComparison:
    result = evaluate_on_report_instances(champion, report, threads)
    learned = report.optimizers[LEARNED]
    return ChampionComparison(
        champion_version=champion_version,
        champion_mean=result.final_loss_mean,
        champion_geomean=result.final_loss_geomean,
        challenger_mean=learned.final_loss_mean,
        challenger_geomean=learned.final_loss_geomean,
        instances=len(report.test_seeds),
    )


def _fmt(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else str(value)


def _baseline_reason(report: EvaluationReport) -> str:
    learned = report.optimizers[LEARNED]
    beaten_by = [
        name
        for name, other in report.optimizers.items()
        if name != LEARNED
        and not (
            learned.final_loss_mean < other.final_loss_mean
            and learned.final_loss_geomean < other.final_loss_geomean
        )
    ]
    best = report.optimizers[report.best_baseline]
    return (
        f"does not beat every tuned baseline on {len(report.test_seeds)} held-out instances "
        f"(not better than: {', '.join(beaten_by)}; learned mean {_fmt(learned.final_loss_mean)} / geomean "
        f"{_fmt(learned.final_loss_geomean)} vs {report.best_baseline} {_fmt(best.final_loss_mean)} / "
        f"{_fmt(best.final_loss_geomean)})"
    )


def decide(
    report: EvaluationReport, comparison: ChampionComparison | None, champion_error: str | None = None
) -> GateDecision:
    """Apply the rule in this module's docstring."""
    if not report.beats_every_baseline:
        return GateDecision(False, _baseline_reason(report), comparison)
    if champion_error is not None:
        return GateDecision(False, f"the current champion could not be evaluated: {champion_error}", None)
    if comparison is None:
        return GateDecision(True, "beats every tuned baseline; no champion yet")
    verdict = (
        f"version {comparison.champion_version} on the same {comparison.instances} instances: mean "
        f"{_fmt(comparison.challenger_mean)} vs {_fmt(comparison.champion_mean)}, geomean "
        f"{_fmt(comparison.challenger_geomean)} vs {_fmt(comparison.champion_geomean)}"
    )
    if comparison.challenger_wins:
        return GateDecision(True, f"beats every tuned baseline and the champion, {verdict}", comparison)
    return GateDecision(False, f"beats every tuned baseline but not the champion, {verdict}", comparison)
