"""The family API and the first-party families found through their entry points."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import pytest
import torch
from pydantic import ValidationError

from l2l_plugin import (
    FamilyLoadError,
    TaskFamily,
    UnknownFamilyError,
    check_family,
    discover_families,
    get_family,
    make_family,
)
from l2l_plugin.cli import main as cli_main
from l2l_plugin.families import FamilyContractError, Task, TaskCost

FIRST_PARTY = ["quadratic"]


def test_first_party_families_are_discovered_through_entry_points():
    families = discover_families()
    for name in FIRST_PARTY:
        assert name in families, f"{name} not discovered: {sorted(families)}"
        entry = families[name]
        assert entry.error is None
        assert issubclass(entry.family, TaskFamily)
        assert entry.distribution and entry.distribution.startswith("l2l-")
        assert entry.schema()["type"] == "object"


def test_unknown_family_lists_the_available_ones():
    with pytest.raises(UnknownFamilyError) as info:
        get_family("no_such_family")
    message = str(info.value)
    assert "no_such_family" in message
    for name in FIRST_PARTY:
        assert name in message


def test_invalid_values_give_field_level_errors():
    with pytest.raises(ValidationError) as info:
        make_family("quadratic", {"dim": 0, "distribution": "cauchy"})
    locations = {error["loc"] for error in info.value.errors()}
    assert locations == {("dim",), ("distribution",)}


def test_unknown_fields_are_rejected():
    with pytest.raises(ValidationError) as info:
        make_family("quadratic", {"dimension": 3})
    assert info.value.errors()[0]["type"] == "extra_forbidden"
    assert info.value.errors()[0]["loc"] == ("dimension",)


def test_same_seed_same_task_different_seed_different_task():
    family = make_family("quadratic", {"dim": 5})
    a, b, c = family.sample(3), family.sample(3), family.sample(4)
    pa, pb, pc = a.init_params(), b.init_params(), c.init_params()
    assert torch.equal(pa["theta"], pb["theta"])
    assert torch.equal(a.loss(pa), b.loss(pb))
    assert not torch.equal(a.weights, c.weights)
    assert not torch.equal(a.loss(pa), c.loss(pc))


@pytest.mark.parametrize("distribution", ["gaussian", "uniform"])
def test_adam_lowers_a_quadratic(distribution):
    task = make_family("quadratic", {"distribution": distribution}).sample(0)
    params = {k: v.requires_grad_(True) for k, v in task.init_params().items()}
    optimizer = torch.optim.Adam(params.values(), lr=0.1)
    start = task.loss(params).item()
    for step in range(100):
        optimizer.zero_grad()
        task.loss(params, step).backward()
        optimizer.step()
    assert task.loss(params).item() < 0.5 * start


def test_uniform_and_gaussian_distributions_differ_in_sign():
    uniform = make_family("quadratic", {"distribution": "uniform"}).sample(0)
    gaussian = make_family("quadratic", {"distribution": "gaussian"}).sample(0)
    assert bool((uniform.weights >= 0).all()) and bool((uniform.weights < 1).all())
    assert bool((gaussian.weights < 0).any())


class _NonDeterministicTask(Task):
    def init_params(self, device="cpu"):
        return {"x": torch.randn(3, device=device)}

    def loss(self, params, step=0):
        return params["x"].square().sum()


class _NonDeterministicFamily(TaskFamily):
    """Samples ignore the seed (broken on purpose)."""

    def sample(self, seed: int) -> Task:
        return _NonDeterministicTask()


def test_contract_catches_a_non_deterministic_family():
    with pytest.raises(FamilyContractError, match="different initial parameters"):
        check_family(_NonDeterministicFamily())


class _DetachedTask(Task):
    def init_params(self, device="cpu"):
        return {"x": torch.ones(2, device=device), "unused": torch.ones(1, device=device)}

    def loss(self, params, step=0):
        return params["x"].square().sum()


class _DetachedFamily(TaskFamily):
    """One parameter never reaches the loss (broken on purpose)."""

    def sample(self, seed: int) -> Task:
        return _DetachedTask()


def test_contract_catches_a_parameter_without_gradient():
    with pytest.raises(FamilyContractError, match="no gradient reaches parameter 'unused'"):
        check_family(_DetachedFamily())


def test_cli_families_json_lists_every_first_party_family(capsys):
    assert cli_main(["families", "--json"]) == 0
    listing = {item["name"]: item for item in json.loads(capsys.readouterr().out)}
    for name in FIRST_PARTY:
        assert listing[name]["error"] is None
        assert listing[name]["schema"]["properties"]


def test_cli_families_table_and_show(capsys):
    assert cli_main(["families"]) == 0
    table = capsys.readouterr().out
    assert "quadratic" in table and "l2l-quadratic" in table
    assert cli_main(["families", "show", "quadratic"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["defaults"]["dim"] == 10
    assert shown["schema"]["properties"]["dim"]["minimum"] == 1


def test_cli_unknown_family_is_a_clear_error(capsys):
    assert cli_main(["families", "show", "nope"]) == 2
    assert "available families" in capsys.readouterr().err


def test_broken_family_raises_load_error(monkeypatch):
    from l2l_plugin.families import discovery

    broken = discovery.FamilyEntry("broken", "x:Y", "dist 1", None, "failed to load x:Y: boom")
    monkeypatch.setattr(discovery, "discover_families", lambda: {"broken": broken})
    with pytest.raises(FamilyLoadError, match="boom"):
        get_family("broken")


class _ListFamily(TaskFamily):
    """A list-valued field makes the frozen config unhashable (broken on purpose)."""

    sizes: list[int] = [1, 2]

    def sample(self, seed: int) -> Task:
        return _DetachedTask()


def test_contract_catches_an_unhashable_config():
    with pytest.raises(FamilyContractError, match="not hashable"):
        check_family(_ListFamily())


class _BadDefaultsFamily(TaskFamily):
    """Ships meta-training defaults that no run accepts (broken on purpose)."""

    meta_train_defaults: ClassVar[dict[str, Any]] = {"meta_batch_size": 0, "unroll_legnth": 5}

    def sample(self, seed: int) -> Task:
        return make_family("quadratic", {"dim": 3}).sample(seed)


def test_contract_validates_the_meta_train_defaults_with_field_errors():
    with pytest.raises(FamilyContractError, match="meta_train_defaults") as info:
        check_family(_BadDefaultsFamily())
    assert "meta_batch_size" in str(info.value) and "unroll_legnth" in str(info.value)


class _MiscountedFamily(TaskFamily):
    """Declares fewer coordinates than its tasks have (broken on purpose)."""

    def sample(self, seed: int) -> Task:
        return make_family("quadratic", {"dim": 3}).sample(seed)

    def cost(self) -> TaskCost:
        return TaskCost(coordinates=2, memory_floats=100, step_work=10)


def test_contract_checks_a_declared_cost_against_a_task():
    with pytest.raises(FamilyContractError, match=r"cost\(\).coordinates is 2, but a sampled task has 3"):
        check_family(_MiscountedFamily())
