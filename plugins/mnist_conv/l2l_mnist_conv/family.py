"""The mnist_conv family: a small conv net with batch norm, on MNIST or on a local CIFAR-10."""

from __future__ import annotations

import functools
from typing import Annotated, Any, ClassVar, Literal

import torch
from pydantic import Field, ValidationInfo, field_validator

from l2l_mnist_conv.cifar10 import cifar10_image_set, find_cifar10_dir, load_cifar10
from l2l_mnist_conv.network import Activation, ConvNet, conv_net_params, pooled_size
from l2l_mnist_data import ClassificationTask, load_mnist, mnist_image_set, resolve_root
from l2l_plugin.families import TaskCost, TaskFamily

Dataset = Literal["mnist", "cifar10"]
# (channels, side) of each data set's images.
IMAGE_GEOMETRY: dict[str, tuple[int, int]] = {"mnist": (1, 28), "cifar10": (3, 32)}
CLASSES = 10
# Held-out images per forward pass. With batch statistics the held-out loss depends on how
# the images are grouped, so the grouping is fixed: near-equal consecutive chunks of at most
# this many. 200 keeps the default net's activations in cache: 2.5× faster than 1000 on CPU.
EVAL_CHUNK = 200


def _network(
    dataset: Dataset,
    conv_channels: tuple[int, ...],
    kernel_size: int,
    hidden_sizes: tuple[int, ...],
    activation: Activation,
    batch_norm: bool,
) -> ConvNet:
    channels, side = IMAGE_GEOMETRY[dataset]
    # On the meta device: the module only supplies structure, the task's params its values.
    # One per task, not cached: functional_call swaps the params into the module during a
    # call, so two threads sharing a module would race.
    with torch.device("meta"):
        return ConvNet(
            channels, side, conv_channels, kernel_size, hidden_sizes, CLASSES, activation, batch_norm
        )


class MnistConvFamily(TaskFamily):
    """A small conv net with batch norm on MNIST (or a local CIFAR-10), as the paper's CIFAR-10 experiment.

    Conv blocks (conv → batch norm → activation → 2×2 max-pool) then an MLP, cross-entropy on
    seeded minibatches; the held-out loss is on the test images. Parameter names: ``convI.*``
    and ``convI_bn.*`` for the conv part, ``fcJ.*`` and ``fcJ_bn.*`` for the MLP (the last
    ``fcJ`` is the output layer); ``^conv\\d+\\.weight$`` selects the convolution kernels.
    """

    dataset: Dataset = Field("mnist", description="Images: 'mnist' (packaged) or 'cifar10' (needs data_dir).")
    data_dir: str | None = Field(
        None,
        min_length=1,
        validate_default=True,
        description="mnist: a folder of MNIST IDX files (null: $L2L_MNIST_DIR, else the packaged copy). "
        "cifar10 (required): the extracted cifar-10-batches-py folder, or the folder holding it.",
    )
    conv_channels: tuple[Annotated[int, Field(ge=1, le=512)], ...] = Field(
        (16, 16, 16), min_length=1, max_length=6, description="Output channels of each conv block."
    )
    kernel_size: int = Field(
        5, ge=1, le=11, description="Side of the square kernels ('same' padding, stride 1)."
    )
    hidden_sizes: tuple[Annotated[int, Field(ge=1, le=4096)], ...] = Field(
        (32,), max_length=4, description="Units of each hidden layer of the MLP after the conv blocks."
    )
    activation: Activation = Field("relu", description="Activation of every conv block and hidden layer.")
    batch_norm: bool = Field(
        True,
        description="Batch norm (batch statistics, no running averages) after each conv and hidden layer.",
    )
    batch_size: int = Field(
        128, ge=1, le=60000, description="Training images per step, drawn with replacement."
    )
    init_scale: float = Field(
        0.01,
        ge=0.0,
        le=10.0,
        description="Conv and linear weights and biases ~ N(0, init_scale²) (0.01 in the paper's code); "
        "batch-norm scales start at 1 and shifts at 0.",
    )
    train_size: int | None = Field(
        None, ge=1, description="Train on the first N training images only; null uses them all."
    )
    eval_size: int | None = Field(
        2000,
        ge=2,
        description="Held-out loss over the first N test images (null: all of them); the default net "
        "takes roughly 0.2 s per 1,000 images on a 2-core CPU.",
    )

    @field_validator("data_dir")
    @classmethod
    def _cifar10_needs_a_folder(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("dataset") == "cifar10":
            raise ValueError(
                "cifar10 is not packaged: give the folder of the extracted CIFAR-10 python batches"
            )
        return value

    @field_validator("batch_size")
    @classmethod
    def _batch_norm_needs_two(cls, value: int, info: ValidationInfo) -> int:
        if value < 2 and info.data.get("batch_norm", True):
            raise ValueError("batch norm needs at least 2 images per batch")
        return value

    # The library's recipe (l2l preset: a nominal Nesterov step warm-started at its tuned rate,
    # full unrolls with the meta-loss on the last 20 steps) with the paper's CIFAR-10 split
    # ("LSTM-sub"): one LSTM for the conv part, another for the MLP. One meta-iteration costs
    # many seconds on a CPU core, hence the budget and the small evaluation. The paper's
    # recipe with this split: --meta preset=paper --meta 'network.groups=[...]'.
    meta_train_defaults: ClassVar[dict[str, Any]] = {
        "preset": "l2l",
        "network": {"groups": [{"name": "conv", "pattern": "^conv"}]},
        "meta_iterations": 1000,
        "validation_every": 10,
        "validation_tasks": 4,
        "max_seconds": 1500,
        "evaluation": {"test_tasks": 20, "tuning_tasks": 4, "lr_min": 1e-3, "lr_max": 10.0, "lr_points_per_decade": 2},
    }

    def cost(self) -> TaskCost:
        network = _network(
            self.dataset, self.conv_channels, self.kernel_size, self.hidden_sizes, self.activation, self.batch_norm
        )  # on the meta device: counted, not allocated
        coordinates = sum(param.numel() for param in network.parameters())
        channels, side = IMAGE_GEOMETRY[self.dataset]
        activations, work = channels * side * side, 0
        for block, out_channels in enumerate(self.conv_channels):
            area = pooled_size(side, block) ** 2  # 'same' convolution on the block's input size
            work += self.kernel_size**2 * channels * out_channels * area
            activations += out_channels * area
            channels = out_channels
        work += sum(module.weight.numel() for module in network.modules() if isinstance(module, torch.nn.Linear))
        return TaskCost(
            coordinates=coordinates,
            memory_floats=coordinates + self.batch_size * activations,
            step_work=3 * self.batch_size * work,  # forward and backward
        )

    def sample(self, seed: int) -> ClassificationTask:
        # Read (and cache) the data now, so a bad data_dir fails here rather than mid-trajectory.
        if self.dataset == "mnist":
            root = resolve_root(self.data_dir)
            load_mnist("train", root)
            load_mnist("test", root)
            train = functools.partial(mnist_image_set, "train", root)
            held_out = functools.partial(mnist_image_set, "test", root)
        else:
            assert self.data_dir is not None  # the validator guarantees it
            folder = find_cifar10_dir(self.data_dir)
            load_cifar10("train", folder)
            load_cifar10("test", folder)
            train = functools.partial(cifar10_image_set, "train", folder)
            held_out = functools.partial(cifar10_image_set, "test", folder)
        network = _network(
            self.dataset,
            self.conv_channels,
            self.kernel_size,
            self.hidden_sizes,
            self.activation,
            self.batch_norm,
        )
        return ClassificationTask(
            seed=seed,
            network=network,
            initial_params=functools.partial(conv_net_params, network, self.init_scale),
            train=lambda device: train(device).head(self.train_size),
            held_out=lambda device: held_out(device).head(self.eval_size),
            batch_size=self.batch_size,
            eval_chunk=EVAL_CHUNK,
        )
