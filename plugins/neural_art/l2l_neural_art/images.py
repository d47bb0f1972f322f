"""Procedural content and style images, drawn from seeded generators (nothing is downloaded).

Every image is a function of continuous coordinates in [0, 1)², sampled at the pixel centres
of a ``side`` × ``side`` grid: the same seed at 64 and at 128 pixels is the same picture at two
resolutions (as a photograph resized), which is what the paper's 64 → 128 test needs. Images
are (3, side, side) float32 RGB in [0, 1].

Styles are named texture generators, each with its own random palette, scale and orientation
per seed. :data:`TRAINING_STYLES` are the family's default; :data:`HELD_OUT_STYLES` are never
used by default and exist to test generalisation to styles the optimizer was not trained on.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, get_args

import torch
import torch.nn.functional as F

StyleName = Literal["stripes", "checkers", "dots", "waves", "noise", "plaid", "rings", "cells"]
STYLES: tuple[str, ...] = get_args(StyleName)
TRAINING_STYLES: tuple[str, ...] = ("stripes", "checkers", "dots", "waves", "noise")
HELD_OUT_STYLES: tuple[str, ...] = tuple(name for name in STYLES if name not in TRAINING_STYLES)

Grid = tuple[torch.Tensor, torch.Tensor]  # (x, y), each (side, side), pixel centres in [0, 1)


def grid(side: int) -> Grid:
    centres = (torch.arange(side, dtype=torch.float32) + 0.5) / side
    y, x = torch.meshgrid(centres, centres, indexing="ij")
    return x, y


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _palette(generator: torch.Generator, colours: int) -> torch.Tensor:
    """(colours, 3) RGB colours, kept apart so every texture has contrast."""
    base = torch.rand(colours, 3, generator=generator)
    # Spread brightness: colour k sits in its own band of [0.1, 0.9].
    bands = torch.linspace(0.1, 0.9, colours + 1)
    brightness = bands[:-1] + (bands[1:] - bands[:-1]) * torch.rand(colours, generator=generator)
    order = torch.randperm(colours, generator=generator)
    return 0.5 * base + 0.5 * brightness[order].unsqueeze(1)


def _mix(palette: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Blend two colours by ``weight`` in [0, 1], (side, side) → (3, side, side)."""
    return palette[0].view(3, 1, 1) * (1 - weight) + palette[1].view(3, 1, 1) * weight


def _soft(value: torch.Tensor) -> torch.Tensor:
    # Edges 1/64 of the picture wide at any resolution: the picture, not the pixel grid, sets them.
    return torch.sigmoid(value * 64.0)


def _wrap(value: torch.Tensor) -> torch.Tensor:
    """The fractional part in [0, 1), also for negative values (torch.frac keeps the sign)."""
    return value - torch.floor(value)


def _rotated(xy: Grid, generator: torch.Generator) -> Grid:
    angle = _uniform(generator, 0.0, math.pi)
    x, y = xy[0] - 0.5, xy[1] - 0.5
    return x * math.cos(angle) + y * math.sin(angle), -x * math.sin(angle) + y * math.cos(angle)


def stripes(xy: Grid, generator: torch.Generator) -> torch.Tensor:
    u, _ = _rotated(xy, generator)
    frequency = _uniform(generator, 3.0, 9.0)
    duty = _uniform(generator, 0.3, 0.7)
    phase = _wrap(u * frequency + _uniform(generator, 0, 1))
    return _mix(_palette(generator, 2), _soft(duty - phase) * _soft(phase))


def checkers(xy: Grid, generator: torch.Generator) -> torch.Tensor:
    u, v = _rotated(xy, generator)
    frequency = _uniform(generator, 2.0, 6.0)
    wave = torch.sin(2 * math.pi * frequency * u) * torch.sin(2 * math.pi * frequency * v)
    return _mix(_palette(generator, 2), _soft(wave / frequency))


def dots(xy: Grid, generator: torch.Generator) -> torch.Tensor:
    u, v = _rotated(xy, generator)
    frequency = _uniform(generator, 3.0, 8.0)
    radius = _uniform(generator, 0.18, 0.38)
    du, dv = _wrap(u * frequency) - 0.5, _wrap(v * frequency) - 0.5
    inside = radius - torch.sqrt(du.square() + dv.square())
    return _mix(_palette(generator, 2), _soft(inside / frequency))


def waves(xy: Grid, generator: torch.Generator) -> torch.Tensor:
    u, v = _rotated(xy, generator)
    frequency = _uniform(generator, 3.0, 7.0)
    bend = _uniform(generator, 0.03, 0.1)
    bend_frequency = _uniform(generator, 1.0, 3.0)
    wave = torch.sin(2 * math.pi * frequency * (u + bend * torch.sin(2 * math.pi * bend_frequency * v)))
    palette = _palette(generator, 3)
    weight = 0.5 + 0.5 * wave  # smooth bands through three colours
    low, high = _mix(palette[:2], weight.clamp(0, 1)), palette[2].view(3, 1, 1)
    return low * (1 - weight.square()) + high * weight.square()


def noise(xy: Grid, generator: torch.Generator) -> torch.Tensor:
    """Smooth value noise over three octaves, coloured by a three-colour ramp."""
    x, y = xy
    total = torch.zeros_like(x)
    for octave, cells in enumerate((4, 8, 16)):
        lattice = torch.rand(1, 1, cells + 1, cells + 1, generator=generator)
        # Sample the lattice at the picture's coordinates (bilinear), so any resolution agrees.
        points = torch.stack([x * 2 - 1, y * 2 - 1], dim=-1).unsqueeze(0) * (cells / (cells + 1))
        total = total + F.grid_sample(lattice, points, mode="bilinear", align_corners=False)[0, 0] / 2**octave
    total = (total - total.min()) / (total.max() - total.min() + 1e-6)
    palette = _palette(generator, 3)
    first, second = (total * 2).clamp(0, 1), (total * 2 - 1).clamp(0, 1)
    return _mix(palette[:2], first) * (1 - second) + palette[2].view(3, 1, 1) * second


def plaid(xy: Grid, generator: torch.Generator) -> torch.Tensor:
    u, v = _rotated(xy, generator)
    palette = _palette(generator, 3)
    across = _soft(torch.sin(2 * math.pi * _uniform(generator, 2.0, 6.0) * u) - 0.3)
    along = _soft(torch.sin(2 * math.pi * _uniform(generator, 2.0, 6.0) * v) - 0.3)
    image = palette[0].view(3, 1, 1) * (1 - across) + palette[1].view(3, 1, 1) * across
    return 0.6 * image + 0.4 * (palette[2].view(3, 1, 1) * along + image * (1 - along))


def rings(xy: Grid, generator: torch.Generator) -> torch.Tensor:
    x, y = xy
    cx, cy = _uniform(generator, 0.2, 0.8), _uniform(generator, 0.2, 0.8)
    frequency = _uniform(generator, 4.0, 10.0)
    radius = torch.sqrt((x - cx).square() + (y - cy).square())
    return _mix(_palette(generator, 2), _soft(torch.sin(2 * math.pi * frequency * radius) / frequency))


def cells(xy: Grid, generator: torch.Generator) -> torch.Tensor:
    """Voronoi cells with dark borders: flat colours, sharp edges."""
    x, y = xy
    count = int(torch.randint(8, 24, (), generator=generator))
    centres = torch.rand(count, 2, generator=generator)
    colours = _palette(generator, 4)[torch.randint(4, (count,), generator=generator)]
    distance = torch.sqrt((x.unsqueeze(0) - centres[:, 0, None, None]).square() + (y.unsqueeze(0) - centres[:, 1, None, None]).square())
    nearest = distance.topk(2, dim=0, largest=False).values
    owner = distance.argmin(dim=0)
    image = colours[owner].permute(2, 0, 1)
    border = _soft(nearest[1] - nearest[0] - 0.02)
    return image * border


STYLE_GENERATORS: dict[str, Callable[[Grid, torch.Generator], torch.Tensor]] = {
    "stripes": stripes,
    "checkers": checkers,
    "dots": dots,
    "waves": waves,
    "noise": noise,
    "plaid": plaid,
    "rings": rings,
    "cells": cells,
}
assert set(STYLE_GENERATORS) == set(STYLES)


def style_image(name: str, side: int, generator: torch.Generator) -> torch.Tensor:
    if name not in STYLE_GENERATORS:
        raise ValueError(f"unknown style {name!r}; expected one of {', '.join(STYLES)}")
    return STYLE_GENERATORS[name](grid(side), generator).clamp(0, 1).float()


def content_image(side: int, generator: torch.Generator) -> torch.Tensor:
    """A 'scene': a two-colour sky-to-ground gradient and a few soft discs and boxes."""
    x, y = grid(side)
    palette = _palette(generator, 2)
    image = _mix(palette, y)
    for _ in range(int(torch.randint(3, 7, (), generator=generator))):
        colour = torch.rand(3, generator=generator).view(3, 1, 1)
        cx, cy = _uniform(generator, 0.1, 0.9), _uniform(generator, 0.1, 0.9)
        size = _uniform(generator, 0.08, 0.25)
        if float(torch.rand((), generator=generator)) < 0.5:
            inside = size - torch.sqrt((x - cx).square() + (y - cy).square())
        else:
            aspect = _uniform(generator, 0.5, 2.0)
            inside = torch.minimum(size * aspect - (x - cx).abs(), size / aspect - (y - cy).abs())
        mask = _soft(inside)
        image = image * (1 - mask) + colour * mask
    return image.clamp(0, 1).float()
