"""The contract every task family passes; plugin authors call it from their own test suite.

    from l2l_plugin import check_family
    def test_my_family_conforms():
        check_family(MyFamily())

Like optax's shared optimizer tests: one set of checks that every implementation meets.
Failures raise ``FamilyContractError`` (an AssertionError) naming the broken rule. Besides the
tasks it samples, a family's class-level declarations are checked: its ``meta_train_defaults``
must make a valid ``MetaTrainConfig``, and a declared ``cost()`` must count a task's parameters.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import torch
from pydantic import ValidationError

from l2l_plugin.families.base import Params, Task, TaskCost, TaskFamily


class FamilyContractError(AssertionError):
    """A family broke a rule of the plugin contract."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise FamilyContractError(message)


def _same_params(a: Params, b: Params) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _check_params(task: Task, device: torch.device) -> Params:
    params = task.init_params(device)
    _require(isinstance(params, dict) and len(params) > 0, "init_params must return a non-empty dict")
    for name, value in params.items():
        _require(isinstance(name, str), f"parameter name {name!r} is not a string")
        _require(isinstance(value, torch.Tensor), f"parameter {name!r} is not a tensor")
        _require(value.is_floating_point(), f"parameter {name!r} has non-float dtype {value.dtype}")
        _require(value.device.type == device.type, f"parameter {name!r} is on {value.device}, not {device}")
        _require(bool(torch.isfinite(value).all()), f"initial parameter {name!r} is not finite")
    return params


def _check_loss_and_gradients(task: Task, params: Params) -> torch.Tensor:
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    loss = task.loss(leaves, 0)
    _require(isinstance(loss, torch.Tensor) and loss.dim() == 0, "loss must be a scalar tensor")
    _require(bool(torch.isfinite(loss)), f"loss at the initial parameters is not finite: {loss}")
    grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    for name, grad in zip(leaves, grads):
        _require(grad is not None, f"no gradient reaches parameter {name!r}")
        _require(bool(torch.isfinite(grad).all()), f"gradient of {name!r} is not finite")
    _require(
        any(bool(g.abs().sum() > 0) for g in grads if g is not None),
        "every gradient is exactly zero at the initial parameters",
    )
    return loss.detach()


def _check_stack(
    family: TaskFamily, seeds: list[int], params: list[Params], losses: list[torch.Tensor], device: torch.device
) -> None:
    """``sample_stack`` must agree with ``sample`` task by task (vectorized overrides included)."""
    stack = family.sample_stack(seeds)
    _require(stack.size == len(seeds), f"sample_stack(seeds).size is {stack.size}, expected {len(seeds)}")
    stacked = stack.init_params(device)
    _require(stacked.keys() == params[0].keys(), "sample_stack parameters are named differently from sample's")
    for name in stacked:
        expected = torch.stack([p[name] for p in params])
        _require(torch.equal(stacked[name], expected), f"sample_stack parameter {name!r} differs from sample's")
    stacked_losses = stack.losses(stacked, 0)
    _require(stacked_losses.shape == (len(seeds),), f"losses() has shape {tuple(stacked_losses.shape)}")
    _require(
        torch.allclose(stacked_losses.detach(), torch.stack(losses), rtol=1e-4, atol=1e-6),
        f"sample_stack losses {stacked_losses.tolist()} differ from sample's {[float(loss) for loss in losses]}",
    )


def _check_meta_train_defaults(family: TaskFamily) -> None:
    """The family's ``meta_train_defaults`` on its preset, validated as every run validates them."""
    # Imported here: l2l_plugin.training imports the families package.
    from l2l_plugin.training.config import resolve_meta_train_config

    cls = type(family)
    _require(isinstance(cls.meta_train_defaults, Mapping), f"{cls.__qualname__}.meta_train_defaults is not a dict")
    try:
        resolve_meta_train_config(family)
    except ValidationError as exc:
        raise FamilyContractError(
            f"{cls.__qualname__}.meta_train_defaults do not make a valid MetaTrainConfig: {exc}"
        ) from exc


def _check_cost(family: TaskFamily, params: Params) -> None:
    """A declared cost must be what a task holds: services cap configs by it before sampling."""
    cost = family.cost()
    if cost is None:
        return
    _require(isinstance(cost, TaskCost), f"cost() returned {type(cost)!r}, not a TaskCost or None")
    for name in ("coordinates", "memory_floats", "step_work"):
        value = getattr(cost, name)
        _require(isinstance(value, int) and value > 0, f"cost().{name} is {value!r}, not a positive int")
    coordinates = sum(value.numel() for value in params.values())
    _require(
        cost.coordinates == coordinates,
        f"cost().coordinates is {cost.coordinates}, but a sampled task has {coordinates} parameters",
    )
    _require(
        cost.memory_floats >= coordinates,
        f"cost().memory_floats ({cost.memory_floats}) is fewer than the task's {coordinates} parameters",
    )


def check_family(family: TaskFamily, seeds: Sequence[int] = (0, 1), device: str = "cpu") -> None:
    """Run the contract checks against ``family``; raises FamilyContractError on a violation."""
    _require(isinstance(family, TaskFamily), f"{family!r} is not a TaskFamily instance")
    _require(len(seeds) >= 2 and len(set(seeds)) == len(seeds), "give at least two distinct seeds")
    torch_device = torch.device(device)

    # Config and schema round-trip: what the registry stores must rebuild the same family.
    cls = type(family)
    _require(cls.model_validate(family.model_dump()) == family, "model_dump does not round-trip")
    _require(cls.model_validate_json(family.model_dump_json()) == family, "JSON does not round-trip")
    schema = cls.model_json_schema()
    _require(json.loads(json.dumps(schema)) == schema, "JSON Schema is not plain JSON")
    _require(bool(cls.description()), f"{cls.__qualname__} needs a docstring (its description)")
    try:
        hash(family)  # configs key caches and job records: use tuples, not lists, for sequences
    except TypeError as exc:
        raise FamilyContractError(f"family config is not hashable ({exc}); use tuples for sequence fields") from None
    _check_meta_train_defaults(family)

    first_losses = []
    first_params = []
    for seed in seeds:
        task_a, task_b = family.sample(seed), family.sample(seed)
        _require(isinstance(task_a, Task), f"sample({seed}) returned {type(task_a)!r}, not a Task")
        params_a = _check_params(task_a, torch_device)
        params_b = _check_params(task_b, torch_device)
        _require(_same_params(params_a, params_b), f"sample({seed}) gives different initial parameters")
        loss_a = _check_loss_and_gradients(task_a, params_a)
        loss_b = _check_loss_and_gradients(task_b, params_b)
        _require(torch.equal(loss_a, loss_b), f"sample({seed}) gives different losses: {loss_a} vs {loss_b}")
        for step in (1, 7):
            _require(
                torch.equal(task_a.loss(params_a, step), task_b.loss(params_b, step)),
                f"sample({seed}).loss(params, step={step}) is not reproducible",
            )
        held_out = task_a.eval_loss(params_a)
        if held_out is not None:
            _require(
                isinstance(held_out, torch.Tensor) and held_out.dim() == 0 and bool(torch.isfinite(held_out)),
                "eval_loss must return a finite scalar tensor or None",
            )
        first_params.append(params_a)
        first_losses.append(loss_a)

    _check_stack(family, list(seeds), first_params, first_losses, torch_device)
    _check_cost(family, first_params[0])

    distinct = any(
        not (_same_params(first_params[0], p) and torch.equal(first_losses[0], loss))
        for p, loss in zip(first_params[1:], first_losses[1:])
    )
    _require(distinct, f"seeds {list(seeds)} all give the same task")
