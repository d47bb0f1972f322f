"""Disjoint seed streams: training, validation and held-out test tasks never share a seed."""

from __future__ import annotations

_TRAIN, _VALIDATION, _TEST = 0, 1, 2
_STREAMS = 3


def training_seed(run_seed: int, trajectory: int) -> int:
    # Different run seeds see different training tasks; splitmix-style mixing avoids overlaps
    # such as (seed 1, trajectory 0) == (seed 0, trajectory 1).
    mixed = (run_seed * 0x9E3779B97F4A7C15 + trajectory * 0xBF58476D1CE4E5B9 + 1) % (2**40)
    return _STREAMS * mixed + _TRAIN


def validation_seeds(count: int) -> list[int]:
    return [_STREAMS * k + _VALIDATION for k in range(count)]


def held_out_seeds(count: int) -> list[int]:
    return [_STREAMS * k + _TEST for k in range(count)]
