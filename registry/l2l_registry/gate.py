"""The promotion gate: may a newly meta-trained optimizer become the family's champion?

Rule (both must hold):

1. it beats every tuned baseline on the held-out instances — ``EvaluationReport.beats_every_baseline``;
2. it beats the current champion on the same instances: the champion's optimizer is run again
   on the new report's family config, held-out seeds and step count.

"Beats" is :func:`l2l_plugin.loss_stats.beats` in both: a strictly lower mean AND a
strictly lower geometric mean of the final loss.

With no champion yet, rule 1 alone decides. A champion that cannot be loaded or run blocks
promotion (a human can still force it with ``l2l promote``).
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from l2l_plugin import TrainedOptimizer, make_family
from l2l_plugin.errors import L2LError
from l2l_plugin.evaluation import EvaluationReport
from l2l_plugin.evaluation.report import LEARNED, OptimizerResult
from l2l_plugin.loss_stats import beats
from l2l_plugin.optimizer.rollout import run_learned
from l2l_plugin.paths import user_cache_dir
from l2l_plugin.training import cpu_threads
from l2l_registry.redaction import redact
from l2l_registry.store import Store

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
        return beats(self.challenger_mean, self.challenger_geomean, self.champion_mean, self.champion_geomean)

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
    """``trained`` on exactly the instances (family config, seeds, steps) of ``report``, on the
    CPU; ``trained.net`` itself stays where it is (a copy runs when it is elsewhere)."""
    family = make_family(report.family, report.family_config)
    net = trained.net
    if any(tensor.device != _CPU for tensor in (*net.parameters(), *net.buffers())):
        net = copy.deepcopy(net).to(_CPU)
    with cpu_threads(threads):
        curves, eval_losses = run_learned(net, family.sample_stack(report.test_seeds), report.steps, _CPU)
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
    beaten_by = [name for name, other in report.optimizers.items() if name != LEARNED and not learned.beats(other)]
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
        return GateDecision(False, redact(f"the current champion could not be evaluated: {champion_error}"), None)
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


# -- the champion lock ----------------------------------------------------------------------------
#
# MLflow has no compare-and-set on an alias: two publishers of one family could both read the
# champion, both win against it, and the later alias write would silently discard the earlier
# comparison. Every publisher therefore reads the champion, compares, registers and moves the
# alias while holding this lock. The default is an advisory file lock (filelock: fcntl/msvcrt)
# in a folder every publisher on the machine shares; a service whose workers share a database
# installs a lock in it (l2l_api: a PostgreSQL advisory lock, or a file lock beside SQLite) with
# set_champion_lock. Other publishers (a notebook, `l2l meta-train --register`) on another
# machine must take the same lock: point L2L_LOCK_DIR at a shared folder, or go through the
# service.

LOCK_DIR_ENV = "L2L_LOCK_DIR"
LOCK_TIMEOUT_SECONDS = 900.0  # a publish holding it evaluates the champion: minutes at most

ChampionLock = Callable[[str], AbstractContextManager[None]]
_installed_lock: ChampionLock | None = None


class ChampionLockTimeout(L2LError, TimeoutError):
    """Another publisher held the champion lock for too long."""


def set_champion_lock(lock: ChampionLock | None) -> None:
    """Use ``lock(model_name)`` for every champion decision in this process (None: the file lock)."""
    global _installed_lock
    _installed_lock = lock


def lock_dir(store: Store | None = None) -> Path:
    """``$L2L_LOCK_DIR``, else beside the embedded store, else the user's cache folder."""
    if explicit := os.environ.get(LOCK_DIR_ENV):
        return Path(explicit).expanduser()
    if store is not None and store.artifact_root is not None:
        return store.artifact_root.parent / "locks"
    return user_cache_dir() / "locks"


@contextmanager
def file_lock(path: Path, timeout: float = LOCK_TIMEOUT_SECONDS) -> Iterator[None]:
    from filelock import FileLock, Timeout

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(path), timeout=timeout):
            yield
    except Timeout:
        raise ChampionLockTimeout(f"{path} stayed locked for {timeout:g} s (another publisher?)") from None


def champion_lock(model: str, store: Store | None = None) -> AbstractContextManager[None]:
    """Held while ``model``'s champion is read, compared with and moved (see above)."""
    if _installed_lock is not None:
        return _installed_lock(model)
    return file_lock(lock_dir(store) / f"{model}.champion.lock")
