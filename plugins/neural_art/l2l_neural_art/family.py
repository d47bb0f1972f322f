"""The neural_art family: optimise an image towards a content image and a style's Gram statistics.

The paper's fourth experiment (Andrychowicz et al. 2016, section 3.4) trains on 64×64 images and
tests at 128×128 and on unseen styles; here both are knobs: ``resolution`` and ``styles``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import torch
from pydantic import Field, field_validator, model_validator

from l2l_neural_art.features import features, gram
from l2l_neural_art.images import TRAINING_STYLES, StyleName, content_image, style_image
from l2l_plugin.families import Params, Task, TaskCost, TaskFamily, TaskStack, seeded_generator

# Streams of a task's seed: what is drawn for the style, the content and the starting image.
STYLE_STREAM, CONTENT_STREAM, START_STREAM = 1, 2, 3


@dataclass(frozen=True)
class Objective:
    """The loss's fixed parts: which features, and how content and style are weighed."""

    feature_seed: int
    kernel_sizes: tuple[int, ...]
    channels: int
    content_weight: float
    style_weight: float

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return features(images, self.feature_seed, self.kernel_sizes, self.channels)


class _Problems:
    """B style-transfer problems side by side: their images (CPU) and targets (per device)."""

    def __init__(self, objective: Objective, content: torch.Tensor, style: torch.Tensor, start: torch.Tensor) -> None:
        self.objective, self.content, self.style, self.start = objective, content, style, start
        # Targets are computed once per device, lazily: sampling stays cheap, and a task that
        # runs on CUDA does not copy its targets there every step.
        self._targets: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def targets(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._targets:
            with torch.no_grad():
                content = self.objective.features(self.content.to(device))
                style = gram(self.objective.features(self.style.to(device)))
            self._targets[device] = (content, style)
        content, style = self._targets[device]
        return content.to(dtype), style.to(dtype)

    def losses(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → (B,): the content and style energies summed over pixels.

        Per pixel: the mean squared feature difference to the content, plus the mean squared
        difference of the (pixel-averaged) Gram matrices to the style's. Summing over pixels,
        as Gatys et al. do, keeps each pixel's gradient the same size at any resolution, so a
        learning rate tuned at 64×64 means the same at 128×128; the loss itself grows with the
        number of pixels.
        """
        content, style = self.targets(images.device, images.dtype)
        maps = self.objective.features(images)
        pixels = maps.shape[-2] * maps.shape[-1]
        content_loss = (maps - content).square().mean(dim=1).flatten(1).sum(dim=1)
        style_loss = (gram(maps) - style).square().flatten(1).mean(dim=1) * pixels
        return self.objective.content_weight * content_loss + self.objective.style_weight * style_loss


class NeuralArtTask(Task):
    """One image to optimise (parameter ``image``, shape (3, H, W)) from a noisy grey start."""

    def __init__(self, objective: Objective, content: torch.Tensor, style: torch.Tensor, start: torch.Tensor) -> None:
        self.content, self.style, self.start = content, style, start
        self.problems = _Problems(objective, content[None], style[None], start[None])

    def init_params(self, device: torch.device | str = "cpu") -> Params:
        return {"image": self.start.clone().to(device)}

    def loss(self, params: Mapping[str, torch.Tensor], step: int = 0) -> torch.Tensor:
        return self.problems.losses(params["image"].unsqueeze(0))[0]


class NeuralArtStack(TaskStack):
    """Many tasks in one batched convolution (the features are shared, the targets per task)."""

    def __init__(self, objective: Objective, tasks: Sequence[NeuralArtTask]) -> None:
        self.size = len(tasks)
        self.problems = _Problems(
            objective,
            torch.stack([task.content for task in tasks]),
            torch.stack([task.style for task in tasks]),
            torch.stack([task.start for task in tasks]),
        )

    def init_params(self, device: torch.device | str = "cpu") -> Params:
        return {"image": self.problems.start.clone().to(device)}

    def losses(self, params: Mapping[str, torch.Tensor], step: int = 0) -> torch.Tensor:
        return self.problems.losses(params["image"])


OddKernel = Annotated[int, Field(ge=1, le=15)]


class NeuralArtFamily(TaskFamily):
    """Style transfer on procedural images under fixed random conv features (the paper's neural art).

    A task optimises one RGB image (parameter ``image``, 3 × resolution × resolution) to match a
    content image's features and a style image's Gram matrices, both under one layer of random
    filters (Ustyuzhaninov et al. 2016) fixed by ``feature_seed``. Content images are seeded
    scenes of soft shapes; the style is one of ``styles``, drawn per task, with its own random
    palette, scale and orientation. Generalisation as in the paper: train at 64, evaluate with
    ``resolution=128``, or with ``styles`` set to the held-out ``plaid``, ``rings``, ``cells``.
    """

    resolution: int = Field(
        64, ge=8, le=512, description="Side of the square images in pixels (64 in the paper's training, 128 at test)."
    )
    styles: tuple[StyleName, ...] = Field(
        TRAINING_STYLES,
        min_length=1,
        description="Styles a task draws from (uniformly, by its seed). The default five are the "
        "training styles; plaid, rings and cells are held out for generalisation tests.",
    )
    # Content 0.01 and style 1e4 (measured at 32×32, benchmarks/neural_art.py): tuned Adam's
    # loss after 100 steps is still 1.5× its loss after 400, so a faster optimizer has room. With content
    # weight 1 the two terms' conflict leaves a floor that tuned Adam is within 4% of after 100
    # steps (a 20-minute meta-training never beat it); with style 10 every tuned baseline
    # reaches the floor within 30 steps.
    content_weight: float = Field(
        0.01, ge=0.0, le=1e6, description="Weight of the content energy (squared feature differences to the content image)."
    )
    style_weight: float = Field(
        1e4, ge=0.0, le=1e8, description="Weight of the style energy (squared Gram-matrix differences to the style image)."
    )
    kernel_sizes: tuple[OddKernel, ...] = Field(
        (3, 5, 7), min_length=1, max_length=6, description="Sizes of the random filter banks (odd; 'same' padding)."
    )
    channels: int = Field(8, ge=1, le=256, description="Random filters per kernel size (features = channels × sizes).")
    feature_seed: int = Field(0, ge=0, lt=2**31, description="Seed of the random filters (shared by every task).")
    init_noise: float = Field(
        0.1, ge=0.0, le=1.0, description="The starting image is mid-grey plus N(0, init_noise²) per pixel."
    )

    @field_validator("kernel_sizes")
    @classmethod
    def _odd(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if even := [size for size in value if size % 2 == 0]:
            raise ValueError(f"kernel sizes must be odd (same-size output), got {even}")
        return value

    @model_validator(mode="after")
    def _something_to_match(self) -> NeuralArtFamily:
        if self.content_weight == 0 and self.style_weight == 0:
            raise ValueError("content_weight and style_weight are both 0: the loss would be constant")
        return self

    # The l2l recipe with Adam as the nominal step (the usual optimizer for image synthesis;
    # fixed rather than chosen, which saves a second tuning). A full-horizon unroll keeps about
    # 1.6 KB of graph per coordinate and step: 64×64 RGB × 2 tasks × 100 steps ≈ 4 GB, hence
    # the small meta-batch. A 20-minute budget; on a CPU that is few meta-iterations at 64×64
    # (BENCHMARKS.md trains at 32×32).
    meta_train_defaults: ClassVar[dict[str, Any]] = {
        "preset": "l2l",
        "network": {"nominal": "adam"},
        "warm_start": "tuned_nominal_lr",
        "meta_batch_size": 2,
        "meta_iterations": 2000,
        "validation_every": 10,
        "validation_tasks": 8,
        "max_seconds": 1200,
        "evaluation": {"test_tasks": 50, "tuning_tasks": 8, "lr_min": 1e-3, "lr_max": 1.0, "lr_points_per_decade": 2},
    }

    def objective(self) -> Objective:
        return Objective(self.feature_seed, self.kernel_sizes, self.channels, self.content_weight, self.style_weight)

    def cost(self) -> TaskCost:
        pixels = self.resolution**2
        feature_maps = self.channels * len(self.kernel_sizes)
        coordinates = 3 * pixels
        # The image, its content and style images, the feature maps of a target and of the image,
        # and two Gram matrices.
        memory = 3 * coordinates + 2 * feature_maps * pixels + 2 * feature_maps**2
        convolution = sum(size * size * 3 * self.channels for size in self.kernel_sizes) * pixels
        gram = feature_maps**2 * pixels
        return TaskCost(coordinates=coordinates, memory_floats=memory, step_work=3 * (convolution + gram))

    def sample(self, seed: int) -> NeuralArtTask:
        style_generator = seeded_generator(seed, STYLE_STREAM)
        name = self.styles[int(torch.randint(len(self.styles), (), generator=style_generator))]
        side = self.resolution
        content = content_image(side, seeded_generator(seed, CONTENT_STREAM))
        start = 0.5 + self.init_noise * torch.randn(3, side, side, generator=seeded_generator(seed, START_STREAM))
        return NeuralArtTask(self.objective(), content, style_image(name, side, style_generator), start)

    def sample_stack(self, seeds: Sequence[int]) -> NeuralArtStack:
        return NeuralArtStack(self.objective(), [self.sample(seed) for seed in seeds])
