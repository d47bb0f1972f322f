"""Fixed random shallow conv features and their Gram matrices (Ustyuzhaninov et al. 2016).

Pretrained VGG weights cannot be downloaded here; one layer of random filters of several sizes
followed by a ReLU already gives usable texture statistics ("Texture synthesis using shallow
convolutional networks with random filters"). The filters are drawn from a seeded generator, so
they are shipped as code: the same ``feature_seed`` and sizes give the same features anywhere.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from l2l_plugin.families import seeded_generator

# Keeps the filters' stream apart from the tasks' (which use the task seed first).
FILTER_STREAM = 0x4E41


@functools.lru_cache(maxsize=16)
def random_filters(seed: int, kernel_sizes: tuple[int, ...], channels: int) -> tuple[torch.Tensor, ...]:
    """One (channels, 3, k, k) bank per kernel size k, each filter of unit norm, on the CPU."""
    generator = seeded_generator(FILTER_STREAM, seed)
    banks = []
    for size in kernel_sizes:
        bank = torch.randn(channels, 3, size, size, generator=generator)
        # Unit norm: every size contributes features of the same scale.
        banks.append(bank / bank.flatten(1).norm(dim=1).view(-1, 1, 1, 1))
    return tuple(banks)


@functools.lru_cache(maxsize=16)
def _on(seed: int, kernel_sizes: tuple[int, ...], channels: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    return tuple(bank.to(device) for bank in random_filters(seed, kernel_sizes, channels))


def features(
    images: torch.Tensor, seed: int, kernel_sizes: tuple[int, ...], channels: int
) -> torch.Tensor:
    """(B, 3, H, W) images in [0, 1] → (B, channels × len(kernel_sizes), H, W) ReLU features."""
    banks = _on(seed, kernel_sizes, channels, images.device)
    centred = images - 0.5  # the ReLU then splits each filter's response around mid-grey
    return torch.cat(
        [F.relu(F.conv2d(centred, bank.to(images.dtype), padding=bank.shape[-1] // 2)) for bank in banks],
        dim=1,
    )


def gram(feature_maps: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) → (B, C, C) Gram matrices averaged over pixels (resolution-independent)."""
    flat = feature_maps.flatten(2)
    return flat @ flat.transpose(1, 2) / flat.shape[-1]
