"""A third-party plugin installed for real, next to a broken one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

GOOD_FAMILY = '''
import torch
from pydantic import Field
from l2l_plugin import Task, TaskFamily


class ShiftTask(Task):
    def __init__(self, target):
        self.target = target

    def init_params(self, device="cpu"):
        return {"x": torch.zeros(3, device=device)}

    def loss(self, params, step=0):
        return (params["x"] - self.target.to(params["x"].device)).square().sum()


class ShiftFamily(TaskFamily):
    """Distance to a random target point."""

    scale: float = Field(1.0, gt=0)

    def sample(self, seed):
        generator = torch.Generator().manual_seed(seed)
        return ShiftTask(torch.randn(3, generator=generator) * self.scale)


not_a_family = 42
'''


def _write_distribution(root: Path, name: str, module: str, source: str, entry_points: dict[str, str]) -> Path:
    root.mkdir()
    (root / f"{module}.py").write_text(source)
    points = "\n".join(f'{key} = "{value}"' for key, value in entry_points.items())
    (root / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""
            [build-system]
            requires = ["setuptools>=68"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "{name}"
            version = "1.0"

            [tool.setuptools]
            py-modules = ["{module}"]

            [project.entry-points."l2l_plugin.families"]
            """
        )
        + points
        + "\n"
    )
    return root


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("plugins")
    good = _write_distribution(
        base / "good", "good-family", "good_family", GOOD_FAMILY,
        {"shift": "good_family:ShiftFamily", "not_a_family": "good_family:not_a_family"},
    )
    broken = _write_distribution(
        base / "broken", "broken-family", "broken_family", "raise ImportError('needs a missing library')\n",
        {"broken": "broken_family:BrokenFamily"},
    )
    site = base / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(site), str(good), str(broken)],
        check=True,
    )
    return site


def _run(site: Path, code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_good_plugin_is_discovered_and_usable_beside_a_broken_one(plugin_site):
    result = _run(plugin_site, "from l2l_plugin.cli import main; main(['families', '--json'])")
    assert result.returncode == 0, result.stderr
    listing = {item["name"]: item for item in json.loads(result.stdout)}

    assert listing["shift"]["error"] is None
    assert listing["shift"]["distribution"] == "good-family 1.0"
    assert listing["shift"]["schema"]["properties"]["scale"]["exclusiveMinimum"] == 0
    assert "needs a missing library" in listing["broken"]["error"]
    assert listing["broken"]["schema"] is None
    assert "not a subclass of l2l_plugin.TaskFamily" in listing["not_a_family"]["error"]
    assert listing["quadratic"]["error"] is None  # first-party families still work
    assert "needs a missing library" in result.stderr  # the broken plugin warned


def test_good_plugin_trains_and_passes_the_contract(plugin_site):
    code = textwrap.dedent(
        """
        import warnings, torch
        warnings.simplefilter("ignore")
        from l2l_plugin import make_family, check_family
        family = make_family("shift", {"scale": 2.0})
        check_family(family)
        task = family.sample(5)
        params = {k: v.requires_grad_(True) for k, v in task.init_params().items()}
        opt = torch.optim.SGD(params.values(), lr=0.1)
        before = task.loss(params).item()
        for _ in range(50):
            opt.zero_grad(); task.loss(params).backward(); opt.step()
        print(before, task.loss(params).item())
        """
    )
    result = _run(plugin_site, code)
    assert result.returncode == 0, result.stderr
    before, after = map(float, result.stdout.split())
    assert after < 1e-3 * before


def test_broken_plugin_gives_a_clear_error_when_asked_for(plugin_site):
    code = "from l2l_plugin.cli import main; raise SystemExit(main(['families', 'show', 'broken']))"
    result = _run(plugin_site, code)
    assert result.returncode == 2
    assert "installed but broken" in result.stderr and "needs a missing library" in result.stderr
