"""The Optuna study behind a recipe search: each trial a short meta-training scored on the
validation tasks, reported at every validation so Optuna's pruner can stop it early.

Every trial is measured the same way: the default recipe's validation tasks, horizon and
evaluation settings are pinned, only the searched knobs change, and each trial runs under the
same cap. Trial 0 is the default recipe itself (preset ← family defaults ← the user's
overrides), so "nothing better than the defaults" is a measured answer, not a guess.

The study lives in Optuna's RDB storage: run the same search again (same storage and study
name) and it continues where it stopped; several processes can run trials of one study at once.
Heartbeats mark a trial whose process died as failed, and it is retried once.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import optuna
from optuna.trial import FrozenTrial, Trial, TrialState
from pydantic import ValidationError

from l2l_plugin.families import TaskFamily
from l2l_plugin.pipeline import PhaseHook, PhaseProgress
from l2l_plugin.training import (
    MetaTrainCallback,
    MetaTrainConfig,
    MetaTrainingCancelled,
    MetaTrainingDiverged,
    MetaTrainProgress,
    meta_train,
)
from l2l_plugin.training.presets import deep_merge, meta_train_recipe
from l2l_registry.search.outcome import SearchOutcome, TrialSummary
from l2l_registry.search.space import SearchSpace
from l2l_registry.search.spec import SearchSpec
from l2l_registry.search.storage import open_storage

logger = logging.getLogger("l2l_registry.search")

DEFAULTS_ATTR = "l2l.defaults"  # user attr of the trial that runs the default recipe
LABELS_ATTR = "l2l.labels"  # the knob labels a trial ran with (the defaults' trial has none)
INVALID_ATTR = "l2l.invalid"  # why a candidate's config did not validate
ERROR_ATTR = "l2l.error"  # why a candidate's meta-training crashed
MIN_TRIAL_SECONDS = 1.0  # less than this left in the budget: no new trial
PHASE_SEARCHING = "searching"  # the phase before meta-training (PhaseProgress: trials done / total)


class TrialObserver(Protocol):
    """Hears each trial (the registry's MLflow tracking: a nested run per trial)."""

    def trial_started(self, number: int, labels: Mapping[str, Any], config: MetaTrainConfig) -> MetaTrainCallback: ...

    def trial_finished(self, number: int, state: str, value: float | None) -> None: ...


class TrialFailed(RuntimeError):
    """A candidate's meta-training raised: the trial is FAIL (and counted), the search goes on."""


def finished_trials(study: optuna.Study) -> int:
    """Trials that count towards ``trials``: complete, pruned, or failed by their own error (an
    interrupted trial is not counted: a resumed search runs another in its place)."""
    return sum(
        t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        or (t.state == TrialState.FAIL and ERROR_ATTR in t.user_attrs)
        for t in study.get_trials(deepcopy=False)
    )


class SearchStopped(MetaTrainingCancelled):
    """The caller's ``should_stop`` asked the search to stop (cancelled job, lost worker); the
    running trial is left FAIL in the study, so a resumed search runs it again."""


def _pruner(spec: SearchSpec, validation_every: int) -> optuna.pruners.BasePruner:
    if spec.pruner == "none":
        return optuna.pruners.NopPruner()
    if spec.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=validation_every)
    # Step 0 is the untrained (warm-started) optimizer: never prune on it.
    return optuna.pruners.MedianPruner(n_startup_trials=spec.startup_trials, n_warmup_steps=1)


class _Reporter(MetaTrainCallback):
    """Validation losses → trial.report; a pruned trial (or a stopped search) ends meta-training."""

    def __init__(self, trial: Trial, should_stop: Callable[[], bool] | None) -> None:
        self.trial = trial
        self.pruned = False
        self.external_stop = should_stop
        self.stopped = False
        self.best: float | None = None

    def on_validation(self, progress: MetaTrainProgress) -> None:
        value = progress.best_validation_loss
        if value is None or not math.isfinite(value):
            return
        self.best = value
        self.trial.report(value, progress.iteration)
        if self.trial.should_prune():
            self.pruned = True

    def should_stop(self) -> bool:
        if self.external_stop is not None and self.external_stop():
            self.stopped = True
        return self.pruned or self.stopped


class RecipeSearch:
    """One search: the family, the user's overrides, the spec; :meth:`run` optimizes the study."""

    def __init__(
        self,
        family: TaskFamily,
        overrides: Mapping[str, Any] | None,
        spec: SearchSpec,
        *,
        storage: str,
        study_name: str,
        family_defaults: Mapping[str, Any] | None = None,
        hints: Mapping[str, Any] | None = None,
        observer: TrialObserver | None = None,
        should_stop: Callable[[], bool] | None = None,
        callbacks: Sequence[MetaTrainCallback] = (),
    ) -> None:
        """``should_stop`` is asked between meta-iterations (True: stop the whole search);
        ``callbacks`` hear every trial's meta-training (a service job's progress)."""
        self.family = family
        self.overrides = dict(overrides or {})
        self.spec = spec
        self.storage_url = storage
        self.study_name = study_name
        self.family_defaults = dict(type(family).meta_train_defaults if family_defaults is None else family_defaults)
        self.hints = dict(type(family).meta_train_search_hints if hints is None else hints)
        self.observer = observer
        self.should_stop = should_stop
        self.callbacks = list(callbacks)
        self.on_phase: PhaseHook | None = None  # hears PHASE_SEARCHING: trials done / trials
        self._warm_starts: dict[str, tuple[str, float]] = {}  # tuned once, reused by every trial
        self.base = self.config_for(self.overrides)  # the default recipe, validated
        # The default recipe's measuring stick, identical for every candidate and the final run.
        self.pinned: dict[str, Any] = {
            "horizon": self.base.longest_horizon,
            "meta_iterations": self.base.meta_iterations,
            "max_seconds": self.base.max_seconds,
            "validation_tasks": self.base.validation_tasks,
            "validation_horizon": self.base.validation_steps,
            "validation_metric": self.base.validation_metric,
            "validation_every": self.base.validation_every,
            "evaluation": {**self.base.evaluation.model_dump(mode="json"), "steps": self.base.evaluation_steps},
            "seed": self.base.seed,
            "cpu_threads": self.base.cpu_threads,
            "device": self.base.device,
        }
        self.space = SearchSpace.build(
            self.base.longest_horizon, [self.hints, spec.space], pinned=self.overrides
        )

    # -- recipes -----------------------------------------------------------------------------

    def config_for(self, overrides: Mapping[str, Any]) -> MetaTrainConfig:
        return MetaTrainConfig.model_validate(meta_train_recipe(self.family_defaults, overrides))

    @staticmethod
    def _warm_start_key(config: MetaTrainConfig) -> str:
        """What the tuned nominal rate depends on (not the candidate's LSTM)."""
        network = config.network
        return json.dumps(
            [config.warm_start, None if config.warm_start == "tuned_nominal" else network.nominal,
             network.momentum_decays[:1], network.rms_decay, network.epsilon,
             config.evaluation.model_dump(mode="json"), config.validation_steps, config.device],
            sort_keys=True,
        )

    def warm_started(self, config: MetaTrainConfig, tune: bool = True) -> MetaTrainConfig:
        """``config`` with its warm start done once per search instead of once per trial.

        The tuned nominal rate depends only on the family, the tuning settings and the nominal
        direction's decays, not on the candidate's LSTM: the trial starts from exactly the net
        the warm start would give it (log_lr initialised to the tuned rate), minutes sooner.
        ``tune`` False: only a rate this search tuned already is used (else ``config`` as is).
        """
        if config.warm_start == "none":
            return config
        from l2l_plugin.training import resolve_device
        from l2l_plugin.training.threads import cpu_threads, task_coordinates
        from l2l_plugin.training.warm_start import choose_nominal, tuned_nominal_lr

        network = config.network
        key = self._warm_start_key(config)
        if key not in self._warm_starts and not tune:
            return config
        if key not in self._warm_starts:
            device = resolve_device(config.device)
            with cpu_threads(config.cpu_threads, coordinates=config.meta_batch_size * task_coordinates(self.family)):
                if config.warm_start == "tuned_nominal":
                    chosen, tuned = choose_nominal(self.family, config, device)
                    assert tuned is not None
                    self._warm_starts[key] = (chosen.network.nominal, tuned.lr)
                else:
                    self._warm_starts[key] = (network.nominal, tuned_nominal_lr(self.family, config, device).lr)
        nominal, lr = self._warm_starts[key]
        return config.model_copy(
            update={"warm_start": "none", "network": network.model_copy(update={"nominal": nominal, "nominal_lr": lr})}
        )

    def final_config(self, outcome: SearchOutcome) -> MetaTrainConfig:
        """The config the winner (or the defaults) is fully trained with."""
        return self.config_for(outcome.train_overrides)

    def _train_overrides(self, recipe: dict[str, Any]) -> dict[str, Any]:
        """``recipe`` with the warm start the trials tuned already (the same net, no retuning)."""
        config = self.config_for(recipe)
        started = self.warm_started(config, tune=False)
        if started is config:
            return recipe
        network = {"nominal": started.network.nominal, "nominal_lr": started.network.nominal_lr}
        return deep_merge(recipe, {"warm_start": "none", "network": network})

    def recipe(self, labels: Mapping[str, Any]) -> dict[str, Any]:
        """The full-training overrides of a candidate: its knobs, the user's overrides, the pins."""
        if not labels:
            return dict(self.overrides)
        return deep_merge(deep_merge(self.space.overrides(labels), self.overrides), self.pinned)

    def trial_overrides(self, recipe: Mapping[str, Any], seconds: float) -> dict[str, Any]:
        """A candidate shortened to one trial and scored by the search's metric."""
        iterations = self.base.meta_iterations
        if self.spec.trial_iterations is not None:
            iterations = min(iterations, self.spec.trial_iterations)
        return deep_merge(
            recipe,
            {
                "max_seconds": seconds,
                "meta_iterations": iterations,
                "validation_metric": self.spec.metric,
                "validation_tasks": self.base.validation_tasks,
                "validation_horizon": self.base.validation_steps,
                "validation_every": self.base.validation_every,
                "horizon": self.base.longest_horizon,
            },
        )

    # -- the study ---------------------------------------------------------------------------

    def study(self) -> optuna.Study:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(
            storage=open_storage(self.storage_url),
            study_name=self.study_name,
            load_if_exists=True,
            direction="minimize",
            sampler=optuna.samplers.TPESampler(seed=self.spec.seed, n_startup_trials=max(self.spec.startup_trials, 1)),
            pruner=_pruner(self.spec, self.base.validation_every),
        )
        if not study.trials:  # a new study: the defaults go first (a resumed one has them already)
            study.enqueue_trial({}, user_attrs={DEFAULTS_ATTR: True})
        return study

    def run(self) -> SearchOutcome:
        started = time.monotonic()
        deadline = started + self.spec.budget
        study = self.study()

        def objective(trial: Trial) -> float:
            remaining = deadline - time.monotonic()
            if self.should_stop is not None and self.should_stop():
                raise SearchStopped("the search was stopped")
            defaults = bool(trial.user_attrs.get(DEFAULTS_ATTR))
            labels = {} if defaults else self.space.suggest(trial)
            trial.set_user_attr(LABELS_ATTR, labels)
            seconds = max(min(self.spec.seconds_per_trial, remaining), MIN_TRIAL_SECONDS)
            try:
                config = self.config_for(self.trial_overrides(self.recipe(labels), seconds))
            except ValidationError as exc:
                # A combination the config rejects (e.g. an unroll that does not divide a family's
                # curriculum): a bad candidate, so pruned and counted, not a crashed search.
                trial.set_user_attr(INVALID_ATTR, str(exc)[:2000])
                raise optuna.TrialPruned("invalid recipe") from None
            config = self.warm_started(config)
            callbacks: list[MetaTrainCallback] = list(self.callbacks)
            if self.observer is not None:
                callbacks.append(self.observer.trial_started(trial.number, labels, config))
            reporter = _Reporter(trial, self.should_stop)
            state, value = "FAIL", None
            try:
                try:
                    result = meta_train(self.family, config, callbacks=[reporter, *callbacks])
                except MetaTrainingCancelled:
                    if reporter.stopped or not reporter.pruned:  # the caller's stop, not the pruner's
                        raise SearchStopped("the search was stopped") from None
                    state, value = "PRUNED", reporter.best
                    raise optuna.TrialPruned(f"pruned at validation {reporter.best}") from None
                except MetaTrainingDiverged as exc:
                    state = "PRUNED"
                    raise optuna.TrialPruned(f"diverged: {exc}") from None  # a bad recipe, not a bug
                except Exception as exc:  # noqa: BLE001 - one candidate's crash must not end the search
                    logger.exception("trial %d failed", trial.number)
                    trial.set_user_attr(ERROR_ATTR, f"{type(exc).__name__}: {exc}"[:2000])
                    raise TrialFailed(str(exc)) from exc
                value = result.best_validation_loss
                if not math.isfinite(value):
                    state = "PRUNED"
                    raise optuna.TrialPruned("no finite validation loss")
                state = "COMPLETE"
                return value
            finally:
                if self.observer is not None:
                    self.observer.trial_finished(trial.number, state, value)

        def progress(study: optuna.Study, _trial: FrozenTrial | None = None) -> None:
            if self.on_phase is not None:
                done = finished_trials(study)
                self.on_phase(PhaseProgress(PHASE_SEARCHING, min(done, self.spec.trials), self.spec.trials))

        def enough(study: optuna.Study, _trial: FrozenTrial) -> None:
            # Counted over the whole study: every worker sharing it stops at the same total.
            if finished_trials(study) >= self.spec.trials or deadline - time.monotonic() < MIN_TRIAL_SECONDS:
                study.stop()

        progress(study)
        if finished_trials(study) < self.spec.trials:
            study.optimize(
                objective, timeout=self.spec.budget, callbacks=[enough, progress], catch=(TrialFailed,)
            )
        return self.outcome(study, time.monotonic() - started)

    def outcome(self, study: optuna.Study, seconds: float) -> SearchOutcome:
        trials = [
            TrialSummary(
                t.number,
                t.state.name,
                t.value if t.state == TrialState.COMPLETE else None,
                bool(t.user_attrs.get(DEFAULTS_ATTR)),
                dict(t.user_attrs.get(LABELS_ATTR, {})),
            )
            for t in study.trials
        ]
        complete = [t for t in trials if t.state == "COMPLETE" and t.value is not None]
        defaults = next((t for t in complete if t.defaults), None)
        best = min(complete, key=lambda t: t.value, default=None)  # type: ignore[arg-type,return-value]
        improved = best is not None and not best.defaults and (defaults is None or best.value < defaults.value)  # type: ignore[operator]
        labels = best.labels if improved and best is not None else {}
        return SearchOutcome(
            study_name=self.study_name,
            overrides=self.recipe(labels),
            train_overrides=self._train_overrides(self.recipe(labels)),
            improved=improved,
            best_trial=best.number if best is not None else None,
            best_value=best.value if best is not None else None,
            default_value=defaults.value if defaults is not None else None,
            labels=labels,
            trials=trials,
            seconds=seconds,
        )
