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
