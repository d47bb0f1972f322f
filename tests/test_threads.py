"""cpu_threads 'auto': the thread count follows the problem size, within the cores and the caps."""

from __future__ import annotations

import os

import pytest
import torch

from l2l_plugin import make_family
from l2l_plugin.training import MetaTrainCallback, MetaTrainProgress, meta_train
from l2l_plugin.training.threads import COORDINATES_PER_THREAD, auto_threads, available_cores, cpu_threads

from helpers import tiny_config

CORES = len(os.sched_getaffinity(0))


def test_auto_picks_one_thread_for_small_or_unknown_problems_and_the_cores_for_large_ones(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.delenv("L2L_MAX_CPU_THREADS", raising=False)
    assert auto_threads(None) == 1
    assert auto_threads(COORDINATES_PER_THREAD - 1) == 1
    assert auto_threads(10**12) == CORES == available_cores()
    assert auto_threads(2 * COORDINATES_PER_THREAD) == min(2, CORES)


def test_auto_shares_the_cores_among_local_ranks_and_obeys_the_service_cap(monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(CORES))
    assert available_cores() == 1 and auto_threads(10**12) == 1
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    monkeypatch.setenv("L2L_MAX_CPU_THREADS", "1")
    assert auto_threads(10**12) == 1


def test_cpu_threads_sets_the_count_for_the_block_and_restores_it():
    before = torch.get_num_threads()
    with cpu_threads(1):
        assert torch.get_num_threads() == 1
    with cpu_threads("auto", coordinates=10):
        assert torch.get_num_threads() == 1
    with cpu_threads(None):
        assert torch.get_num_threads() == before
    assert torch.get_num_threads() == before


class _ThreadsSeen(MetaTrainCallback):
    def __init__(self) -> None:
        self.seen: set[int] = set()

    def on_iteration(self, progress: MetaTrainProgress) -> None:
        self.seen.add(torch.get_num_threads())


@pytest.mark.parametrize(("setting", "expected"), [("auto", 1), (1, 1)])
def test_meta_training_runs_with_the_chosen_thread_count(setting, expected):
    seen = _ThreadsSeen()
    meta_train(make_family("quadratic", {"dim": 5}), tiny_config(cpu_threads=setting), callbacks=[seen])
    assert seen.seen == {expected}  # 8 tasks × 5 coordinates: far below one thread's share
