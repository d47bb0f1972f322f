"""The pipeline's entry points given a family itself (one no plugin registers, as the
benchmarks' families) and without the family's meta-training defaults."""

from __future__ import annotations

import json

from l2l_plugin import make_family
from l2l_plugin.pipeline import evaluate_trained, meta_train_and_evaluate, resolve_meta_train_config

from helpers import TINY_META, TwoKindFamily

TINY = {**TINY_META, "meta_iterations": 2, "evaluation": {**TINY_META["evaluation"], "baselines": ["sgd"]}}


def test_an_unregistered_family_trains_evaluates_and_is_evaluated_again(tmp_path):
    outcome = meta_train_and_evaluate("two_kind", TwoKindFamily(), TINY, tmp_path)
    assert outcome.trained.manifest.family == "two_kind" and outcome.report.family == "two_kind"
    assert (tmp_path / "optimizer" / "optimizer.json").is_file() and (tmp_path / "evaluation.json").is_file()
    assert len(json.loads((tmp_path / "history.json").read_text())) > 0

    again = evaluate_trained(outcome.optimizer_dir, "two_kind", TwoKindFamily(nan_every=2), steps=4, device="cpu")
    assert again.steps == 4 and again.family_config == {"nan_every": 2}
    assert set(again.optimizers) == {"learned", "sgd"}


def test_without_family_defaults_a_run_gets_the_preset_alone(tmp_path):
    family = make_family("quadratic", {"dim": 3})
    assert resolve_meta_train_config(family).meta_loss_log_weight == 0.1  # the family's default
    outcome = meta_train_and_evaluate("quadratic", family, TINY, tmp_path, family_defaults=False)
    trained = outcome.trained.manifest.meta_training
    assert trained["meta_loss_log_weight"] == 0.0 and trained["preset"] == "l2l"
    assert trained == resolve_meta_train_config(family, TINY, family_defaults=False).model_dump(mode="json")
