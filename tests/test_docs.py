"""docs/meta-training-knobs.md is generated from the config models and must match them."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from l2l_plugin.optimizer.config import OptimizerNetConfig
from l2l_plugin.training.config import EvaluationConfig, MetaTrainConfig
from l2l_plugin.training.presets import PRESETS

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _generator():
    spec = importlib.util.spec_from_file_location("generate_knobs", DOCS / "generate_knobs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(text: str) -> dict[str, str]:
    """knob name → its table row."""
    return {match[1]: match[0] for match in re.finditer(r"^\| `([^`]+)` \|.*$", text, flags=re.M)}


def test_the_knob_reference_is_in_sync_with_the_models() -> None:
    generated = _generator().render()
    written = (DOCS / "meta-training-knobs.md").read_text()
    assert written == generated, "docs/meta-training-knobs.md is stale: run .venv/bin/python docs/generate_knobs.py"


def test_every_knob_has_a_row_with_its_default_and_description() -> None:
    rows = _rows((DOCS / "meta-training-knobs.md").read_text())
    expected = {}
    for prefix, model in (("", MetaTrainConfig), ("network.", OptimizerNetConfig), ("evaluation.", EvaluationConfig)):
        for name, field in model.model_fields.items():
            if name in ("network", "evaluation") and prefix == "":
                continue
            expected[prefix + name] = field
    assert set(expected) <= set(rows), sorted(set(expected) - set(rows))
    for key, field in expected.items():
        if field.description:
            assert field.description.replace("|", "\\|").replace("\n", " ") in rows[key], key
    assert "`100`" in rows["horizon"] and "`20`" in rows["network.hidden_size"]
    # The l2l preset's value is in its own column, next to the paper default.
    assert '`"nominal"`' in rows["network.update"] and '`"linear"`' in rows["network.update"]
    assert PRESETS["l2l"]["unroll_length"] is None and "`null`" in rows["unroll_length"]


def test_a_changed_description_makes_the_reference_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    generator = _generator()
    field = MetaTrainConfig.model_fields["horizon"]
    monkeypatch.setattr(field, "description", "A description nobody wrote into the docs.")
    rendered = generator.render()
    assert "A description nobody wrote into the docs." in _rows(rendered)["horizon"]
    assert rendered != (DOCS / "meta-training-knobs.md").read_text()
    assert generator.main(["--check"]) == 1
