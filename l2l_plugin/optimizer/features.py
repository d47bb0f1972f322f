"""What the network sees of a coordinate: the preprocessed gradient, the loss, running moments.

Every function maps per-coordinate rows to feature rows (feature-major, one row per feature over
all coordinates), so the LSTM's input is one contiguous block.
"""

from __future__ import annotations

import math

import torch

from l2l_plugin.optimizer.config import OptimizerNetConfig


def gradient_features(grad: torch.Tensor, config: OptimizerNetConfig) -> torch.Tensor:
    """(N,) gradient → (1 or 2, N) network input (paper appendix A when preprocess_p is set)."""
    if config.preprocess_p is None:
        return (grad * config.input_scale).unsqueeze(0)
    p = config.preprocess_p
    magnitude = grad.abs()
    large = magnitude >= math.exp(-p)
    log_part = torch.where(large, torch.log(magnitude.clamp_min(math.exp(-p))) / p, -torch.ones_like(grad))
    sign_part = torch.where(large, torch.sign(grad), grad * math.exp(p))
    return torch.stack((log_part, sign_part))


def loss_feature(loss: torch.Tensor, config: OptimizerNetConfig) -> torch.Tensor:
    """log(loss) / scale, the optional extra input (computed per optimizee, detached)."""
    return torch.log(loss.detach().clamp_min(1e-30)) / config.loss_input_scale


def update_moments(moments: torch.Tensor, grad: torch.Tensor, decays: torch.Tensor) -> torch.Tensor:
    """Running first moments at every decay and the second moment, after seeing ``grad``.

    ``decays`` (K + 1, 1): the first-moment decays, then the second moment's.
    """
    observed = torch.cat((grad.expand(decays.shape[0] - 1, -1), grad.square().unsqueeze(0)))
    return decays * moments + (1 - decays) * observed


def normalized_moments(
    moments: torch.Tensor, grad: torch.Tensor, steps: torch.Tensor, decays: torch.Tensor, epsilon: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bias-corrected m̂_k/(√v̂+ε) for every decay, g/(√v̂+ε), and √v̂+ε; ``steps`` counts this step."""
    corrections = 1 - decays ** steps.to(grad.dtype)
    denominator = (moments[-1] / corrections[-1]).sqrt() + epsilon
    return moments[:-1] / corrections[:-1] / denominator, grad / denominator, denominator
