"""The optimizee network: a multi-layer perceptron on flattened images."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import nn

Activation = Literal["sigmoid", "relu", "tanh"]
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
    "tanh": torch.tanh,
}


class MLP(nn.Module):
    """in_features → hidden_sizes → num_classes, the activation after every hidden layer.

    Layers are named ``fc1`` … ``fcN`` (``fcN`` the output layer), so the parameters are
    ``fc1.weight``, ``fc1.bias``, … and an optimizer can group them by name.
    """

    def __init__(
        self, in_features: int, hidden_sizes: Sequence[int], num_classes: int, activation: Activation
    ) -> None:
        super().__init__()
        self.activation = ACTIVATIONS[activation]
        sizes = [in_features, *hidden_sizes, num_classes]
        self.layer_names = [f"fc{i}" for i in range(1, len(sizes))]
        for name, fan_in, fan_out in zip(self.layer_names, sizes[:-1], sizes[1:]):
            self.add_module(name, nn.Linear(fan_in, fan_out))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.flatten(1)
        *hidden, output = (self.get_submodule(name) for name in self.layer_names)
        for layer in hidden:
            x = self.activation(layer(x))
        return output(x)
