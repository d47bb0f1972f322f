"""The meta-training loop's parts: the truncation, the best weights, callbacks' begin and end,
and what a run leaves of its caller's state (the global RNG)."""

from __future__ import annotations

import math

import pytest
import torch

from l2l_plugin import make_family
from l2l_plugin.families import Task, TaskFamily
from l2l_plugin.optimizer import LSTMOptimizerNet
from l2l_plugin.optimizer.rollout import OptimizeeBatch
from l2l_plugin.training import (
    MetaTrainCallback,
    MetaTrainingCancelled,
    MetaTrainProgress,
    MetaTrainResult,
    MetaTrainStart,
    meta_train,
)
from l2l_plugin.training.best_weights import BestWeights
from l2l_plugin.training.unroll import truncation_meta_loss

from helpers import TwoKindFamily, tiny_config

QUADRATIC_NET = {"preprocess_p": None, "loss_input": True, "output_scale": 0.1}


class _ZeroLossTask(Task):
    """Already at its minimum: every loss is exactly 0.0 (and every gradient 0)."""

    def init_params(self, device="cpu"):
        return {"w": torch.ones(3, device=device)}

    def loss(self, params, step=0):
        return (params["w"] * 0.0).sum()


class _ZeroLossFamily(TaskFamily):
    """Tasks whose loss is exactly zero."""

    def sample(self, seed: int) -> Task:
        return _ZeroLossTask()


def test_a_meta_loss_of_exactly_zero_is_recorded_as_zero_not_nan():
    seen: list[float | None] = []

    class _MetaLosses(MetaTrainCallback):
        def on_iteration(self, progress: MetaTrainProgress) -> None:
            seen.append(progress.meta_loss)

    result = meta_train(_ZeroLossFamily(), tiny_config(meta_iterations=4), callbacks=[_MetaLosses()])
    recorded = [h["meta_loss"] for h in result.history if "meta_loss" in h]
    assert recorded == [0.0] * 4 and seen == [0.0] * 4
    assert result.skipped_nonfinite == 0


def test_meta_training_leaves_the_callers_rng_as_it_was_and_reproduces_from_its_seed():
    family = make_family("quadratic", {"dim": 3})
    config = tiny_config(network=QUADRATIC_NET, meta_iterations=2)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = meta_train(family, config)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(456)  # another caller state: the same run
    second = meta_train(family, config)
    for name, value in first.net.state_dict().items():
        assert torch.equal(value, second.net.state_dict()[name]), name


@pytest.mark.cuda
def test_meta_training_on_cuda_leaves_the_callers_cuda_rng_as_it_was():
    torch.cuda.manual_seed(7)
    before = torch.cuda.get_rng_state()
    config = tiny_config(network=QUADRATIC_NET, meta_iterations=2, device="cuda")
    result = meta_train(make_family("quadratic", {"dim": 3}), config)
    assert result.device.startswith("cuda")
    assert torch.equal(torch.cuda.get_rng_state(), before)


class _Recorder(MetaTrainCallback):
    def __init__(self, events: list[str], end_error: Exception | None = None) -> None:
        self.events = events
        self.end_error = end_error
        self.outcome: MetaTrainResult | BaseException | None = None

    def on_begin(self, start: MetaTrainStart) -> None:
        self.events.append(f"begin {start.total}")

    def on_iteration(self, progress: MetaTrainProgress) -> None:
        self.events.append("iteration")

    def on_end(self, outcome: MetaTrainResult | BaseException) -> None:
        self.events.append("end")
        self.outcome = outcome
        if self.end_error is not None:
            raise self.end_error


def test_callbacks_hear_begin_first_and_end_last_with_the_result():
    events: list[str] = []
    recorder = _Recorder(events)
    result = meta_train(make_family("quadratic", {"dim": 3}), tiny_config(network=QUADRATIC_NET, meta_iterations=3),
                        callbacks=[recorder])
    assert events == ["begin 3", "iteration", "iteration", "iteration", "end"]
    assert recorder.outcome is result


def test_a_failed_run_ends_every_callback_with_its_own_error():
    class _Cancel(MetaTrainCallback):
        def should_stop(self) -> bool:
            return True

    events: list[str] = []
    failing, ended = _Recorder(events, end_error=OSError("metrics server gone")), _Recorder(events)
    with pytest.raises(MetaTrainingCancelled) as raised:  # not the OSError of the first on_end
        meta_train(make_family("quadratic", {"dim": 3}), tiny_config(network=QUADRATIC_NET),
                   callbacks=[failing, _Cancel(), ended])
    assert failing.outcome is raised.value and ended.outcome is raised.value
    assert events.count("end") == 2


def test_an_end_hook_that_fails_after_a_finished_run_is_raised_after_every_end_hook():
    events: list[str] = []
    ended = _Recorder(events)
    with pytest.raises(OSError, match="flush failed"):
        meta_train(make_family("quadratic", {"dim": 3}), tiny_config(network=QUADRATIC_NET, meta_iterations=1),
                   callbacks=[_Recorder(events, end_error=OSError("flush failed")), ended])
    assert isinstance(ended.outcome, MetaTrainResult)


def test_the_best_weights_keep_the_lowest_finite_score():
    torch.manual_seed(0)
    net = LSTMOptimizerNet(tiny_config().network)
    best = BestWeights(net)
    assert best.measured_score is None
    assert best.offer(2.0, 3, net)
    kept = {name: value.clone() for name, value in net.state_dict().items()}
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.add_(1.0)
    assert not best.offer(math.nan, 4, net) and not best.offer(2.5, 5, net)
    assert (best.score, best.iteration) == (2.0, 3)
    best.load_into(net)
    assert all(torch.equal(value, kept[name]) for name, value in net.state_dict().items())


def test_a_truncation_without_weight_steps_the_tasks_without_a_meta_loss():
    torch.manual_seed(0)
    net = LSTMOptimizerNet(tiny_config().network)
    untracked, tracked = (OptimizeeBatch(net, TwoKindFamily().sample_stack([0, 1]), torch.device("cpu")) for _ in "ab")
    assert truncation_meta_loss(untracked, 0, 3, (0.0,) * 6, 0.0) is None
    meta_loss = truncation_meta_loss(tracked, 0, 3, (0.0, 0.0, 1.0, 0.0, 0.0, 0.0), 0.0)
    assert meta_loss is not None and meta_loss.requires_grad
    assert untracked.steps == tracked.steps == 3
    # Only the third step has weight: the meta-loss is its loss, averaged over the 3 steps.
    assert float(meta_loss.detach()) == pytest.approx(float(tracked.losses(3).detach().mean()) / 3, rel=1e-6)
    for name, value in untracked.params.items():
        assert torch.allclose(value, tracked.params[name])


def test_the_progress_bar_closes_itself_when_the_run_ends():
    import io

    from l2l_plugin.training import TqdmProgress

    bar = TqdmProgress(2, file=io.StringIO(), mininterval=0)
    meta_train(make_family("quadratic", {"dim": 3}), tiny_config(network=QUADRATIC_NET, meta_iterations=2),
               callbacks=[bar])
    assert bar.bar.n == 2 and bar.bar.disable  # tqdm disables a closed bar
