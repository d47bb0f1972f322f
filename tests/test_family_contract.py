"""The plugin contract over every discovered family (as optax runs one suite over every optimizer).

``check_family`` covers the tasks (reproducible, differentiable, stackable), the config (round
trips, hashable), the ``meta_train_defaults`` (a valid MetaTrainConfig on the family's preset)
and a declared ``cost()``. Each family runs at a tiny config so the suite takes seconds; MNIST
families read the packaged offline copy.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from l2l_plugin import check_family, discover_families, make_family

#: Tiny configs of the first-party families; a family installed without one here runs at its
#: own defaults (still checked, only slower).
CONTRACT_CONFIGS: dict[str, dict[str, Any]] = {
    "quadratic": {},  # its defaults are tiny (10 coordinates)
    "mnist_mlp": {"hidden_sizes": [8], "batch_size": 16, "eval_size": 256},
    "mnist_conv": {"conv_channels": [4, 4], "kernel_size": 3, "hidden_sizes": [8], "batch_size": 8, "eval_size": 64},
    "neural_art": {"resolution": 16, "kernel_sizes": [3, 5], "channels": 4},
}

DISCOVERED = sorted(discover_families())


@pytest.fixture(autouse=True)
def _packaged_mnist_and_one_thread(monkeypatch):
    from l2l_mnist_data import ENV_VAR

    monkeypatch.delenv(ENV_VAR, raising=False)  # a developer's own MNIST folder must not change this
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions are many times slower on two busy threads
    yield
    torch.set_num_threads(threads)


def test_every_first_party_family_is_discovered_and_loads():
    families = discover_families()
    assert set(CONTRACT_CONFIGS) <= set(families), sorted(families)
    assert {name: entry.error for name, entry in families.items() if entry.error is not None} == {}


@pytest.mark.parametrize("name", DISCOVERED)
def test_the_family_meets_the_contract(name):
    check_family(make_family(name, CONTRACT_CONFIGS.get(name, {})))
