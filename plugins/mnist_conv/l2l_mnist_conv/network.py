"""The optimizee network: conv blocks (conv → batch norm → activation → 2×2 max-pool), then an MLP.

The block order is that of the paper's CIFAR-10 network in the official code. Batch norm
normalizes with the statistics of the batch at hand (track_running_stats=False): the network
has no buffers, so a functional call mutates nothing and the loss depends on the parameters
and the batch alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Activation = Literal["relu", "sigmoid", "tanh"]
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
}


def pooled_size(size: int, blocks: int) -> int:
    """Side of the feature map after ``blocks`` 2×2 poolings that keep a partial window."""
    for _ in range(blocks):
        size = -(-size // 2)
    return size


class ConvNet(nn.Module):
    """Parameter names: conv part ``convI.weight`` (kernels), ``convI.bias`` (without batch norm
    only), ``convI_bn.weight``/``convI_bn.bias``; MLP part ``fcJ.weight``, ``fcJ.bias``,
    ``fcJ_bn.*``, the last ``fcJ`` being the output layer. So ``^conv`` / ``^fc`` split the two
    parts, ``^conv\\d+\\.weight$`` selects the kernels and ``_bn\\.`` the batch-norm scales and shifts.
    """

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        conv_channels: Sequence[int],
        kernel_size: int,
        hidden_sizes: Sequence[int],
        num_classes: int,
        activation: Activation,
        batch_norm: bool,
    ) -> None:
        super().__init__()
        self.activation = ACTIVATIONS[activation]
        self.batch_norm = batch_norm
        # A bias right before batch norm is cancelled by the mean subtraction (its gradient is
        # zero), so layers followed by batch norm have none.
        self.conv_names = [f"conv{i}" for i in range(1, len(conv_channels) + 1)]
        for name, fan_in, fan_out in zip(self.conv_names, [in_channels, *conv_channels], conv_channels):
            self.add_module(
                name, nn.Conv2d(fan_in, fan_out, kernel_size, padding="same", bias=not batch_norm)
            )
            if batch_norm:
                self.add_module(f"{name}_bn", nn.BatchNorm2d(fan_out, track_running_stats=False))
        side = pooled_size(image_size, len(conv_channels))
        sizes = [conv_channels[-1] * side * side, *hidden_sizes, num_classes]
        self.fc_names = [f"fc{j}" for j in range(1, len(sizes))]
        for j, (name, fan_in, fan_out) in enumerate(zip(self.fc_names, sizes[:-1], sizes[1:])):
            is_output = j == len(sizes) - 2
            self.add_module(name, nn.Linear(fan_in, fan_out, bias=is_output or not batch_norm))
            if batch_norm and not is_output:
                self.add_module(f"{name}_bn", nn.BatchNorm1d(fan_out, track_running_stats=False))

    def _normalized(self, name: str, x: torch.Tensor) -> torch.Tensor:
        x = self.get_submodule(name)(x)
        return self.get_submodule(f"{name}_bn")(x) if self.batch_norm else x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images
        for name in self.conv_names:
            # Channels-last makes CPU pooling and batch norm several times faster (oneDNN); a
            # no-op after the first block, whose 1-channel input has an ambiguous layout.
            x = self._normalized(name, x).contiguous(memory_format=torch.channels_last)
            # ceil_mode keeps the last row/column of an odd-sized map, like TF's SAME pooling.
            x = F.max_pool2d(self.activation(x), 2, ceil_mode=True)
        x = x.flatten(1)
        *hidden, output = self.fc_names
        for name in hidden:
            x = self.activation(self._normalized(name, x))
        return self.get_submodule(output)(x)


def conv_net_params(network: nn.Module, scale: float, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Conv and linear weights and biases ~ N(0, scale²) as in the paper's code; batch-norm
    scales 1 and shifts 0, so the normalized activations start unscaled and centred."""
    params = {}
    for module_name, module in network.named_children():
        for name, param in module.named_parameters(recurse=False):
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                value = torch.ones(param.shape) if name == "weight" else torch.zeros(param.shape)
            else:
                value = torch.randn(param.shape, generator=generator) * scale
            params[f"{module_name}.{name}"] = value
    return params
