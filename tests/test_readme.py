"""The README's plugin example is real code: it runs and passes the contract checks."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from l2l_plugin import check_family

README = Path(__file__).resolve().parent.parent / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_plugin_example_is_a_conforming_family():
    source = next(block for block in _python_blocks() if "class RosenbrockFamily" in block)
    namespace: dict = {}
    exec(compile(source, "README.md", "exec"), namespace)
    family = namespace["RosenbrockFamily"]()
    check_family(family)
    task = family.sample(0)
    params = {k: v.requires_grad_(True) for k, v in task.init_params().items()}
    optimizer = torch.optim.Adam(params.values(), lr=0.05)
    start = task.loss(params).item()
    for _ in range(200):
        optimizer.zero_grad()
        task.loss(params).backward()
        optimizer.step()
    assert task.loss(params).item() < 0.1 * start


def test_the_example_is_about_twenty_lines():
    source = next(block for block in _python_blocks() if "class RosenbrockFamily" in block)
    code_lines = [line for line in source.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert len(code_lines) <= 25


def _regression_family():
    source = next(block for block in _python_blocks() if "class RegressionFamily" in block)
    namespace: dict = {}
    exec(compile(source, "README.md", "exec"), namespace)
    return namespace["RegressionFamily"]


def test_the_stochastic_example_conforms_and_draws_its_batches_from_seed_and_step():
    family = _regression_family()(dim=4, samples=64, batch_size=8)
    check_family(family)
    task, again = family.sample(3), family.sample(3)
    params = task.init_params()
    assert task.loss(params, 5) == again.loss(params, 5)  # same (seed, step): same minibatch
    assert task.loss(params, 5) == task.loss(params, 5)  # replayable: no generator kept between calls
    assert len({float(task.loss(params, step)) for step in range(6)}) > 1  # a new minibatch per step
    assert float(family.sample(4).loss(params, 5)) != float(task.loss(params, 5))  # per instance


def test_the_stochastic_example_meta_trains_with_its_defaults():
    """Its meta_train_defaults are valid settings (preset l2l beneath them), and a run works."""
    from l2l_plugin.evaluation import evaluate
    from l2l_plugin.training import MetaTrainConfig, meta_train
    from l2l_plugin.training.presets import deep_merge, meta_train_recipe

    from helpers import TINY_META

    family_class = _regression_family()
    resolved = MetaTrainConfig.model_validate(meta_train_recipe(family_class.meta_train_defaults, None))
    assert (resolved.preset, resolved.meta_batch_size, resolved.max_seconds) == ("l2l", 16, 600)
    assert resolved.network.update == "nominal"  # from the l2l preset beneath the family's values
    tiny = MetaTrainConfig.model_validate(
        meta_train_recipe(
            family_class.meta_train_defaults,
            deep_merge(TINY_META, {"unroll_length": 10, "final_loss_steps": 5, "evaluation": {"baselines": ["sgd"]}}),
        )
    )
    family = family_class(dim=4, samples=64, batch_size=8)
    result = meta_train(family, tiny)
    report = evaluate(result.net, family, "regression", tiny.evaluation, tiny.evaluation_steps)
    learned = report.optimizers["learned"]
    assert learned.final_loss_mean < learned.curve[0]  # it optimizes the minibatch loss
    assert learned.eval_loss_mean is not None  # eval_loss (the whole data set) reaches the report
