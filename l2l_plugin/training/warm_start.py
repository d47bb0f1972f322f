"""Start meta-training from the tuned hand-designed optimizer (update 'nominal').

The nominal term's learning rate is tuned exactly as a baseline's is (same tuning tasks, same
grid and grid extension), so before any meta-step the learned optimizer already matches the
tuned nominal optimizer, and meta-training only has to improve on it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from l2l_plugin.families import TaskFamily
from l2l_plugin.optimizer.config import OptimizerNetConfig
from l2l_plugin.optimizer.network import LSTMOptimizerNet
from l2l_plugin.training.config import MetaTrainConfig

if TYPE_CHECKING:
    from l2l_plugin.evaluation.evaluate import TunedRate


def nominal_factory(network: OptimizerNetConfig):
    """The ``torch.optim`` optimizer that the untrained nominal update equals."""
    mu = network.momentum_decays[0]
    if network.nominal == "adam":
        return lambda groups: torch.optim.Adam(groups, betas=(mu, network.rms_decay), eps=network.epsilon)
    return lambda groups: torch.optim.SGD(groups, momentum=mu, nesterov=True)


def tuned_nominal_lr(family: TaskFamily, config: MetaTrainConfig, device: torch.device) -> TunedRate:
    # Imported here: evaluation imports the training package, which imports this module.
    from l2l_plugin.evaluation.evaluate import tune_rate

    return tune_rate(nominal_factory(config.network), family, config.evaluation, config.validation_steps, device)


def choose_nominal(
    family: TaskFamily, config: MetaTrainConfig, device: torch.device
) -> tuple[MetaTrainConfig, TunedRate | None]:
    """For warm_start 'tuned_nominal': the config whose nominal direction tunes to the lower loss.

    Both directions are tuned on the tuning tasks exactly as the baselines are; the winner's
    validation score decides, so a family where tuned Adam beats tuned NAG starts from Adam.
    Returns the winner's tuned rate too, so the warm start does not tune it again.
    """
    if config.warm_start != "tuned_nominal":
        return config, None
    scored = []
    for direction in ("nesterov", "adam"):
        candidate = config.model_copy(update={"network": config.network.model_copy(update={"nominal": direction})})
        scored.append((tuned_nominal_lr(family, candidate, device), candidate))
    tuned, best = min(scored, key=lambda pair: pair[0].score)
    return best, tuned


def warm_start(
    net: LSTMOptimizerNet,
    family: TaskFamily,
    config: MetaTrainConfig,
    device: torch.device,
    tuned: TunedRate | None = None,
) -> float | None:
    """Apply ``config.warm_start`` to ``net`` in place; returns the tuned rate when one was set.

    ``tuned`` is the nominal rate already tuned for ``config`` (by :func:`choose_nominal`).
    """
    if config.warm_start == "none":
        return None
    tuned = tuned or tuned_nominal_lr(family, config, device)
    with torch.no_grad():
        for sub in net.nets.values():
            sub.log_lr.fill_(math.log(tuned.lr))
    return tuned.lr
