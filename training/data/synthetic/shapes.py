"""Classification: one shape per image in ImageNet's folder layout; the class is the shape."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from training.data.synthetic.common import (
    background,
    distinct_colour,
    image_rng,
    polygon_mask,
    regular_polygon,
    save_jpeg,
    star_polygon,
    to_uint8,
)

# No hexagon: at the 96 px the default classifier mostly trains at,
# 11 of 20 held-out hexagons were taken for circles, the one confusion that mattered.
CLASSIFICATION_SHAPES: tuple[str, ...] = (
    "checker",
    "circle",
    "cross",
    "diamond",
    "ellipse",
    "hstripes",
    "ring",
    "square",
    "star",
    "triangle",
    "vstripes",
)


def _shape_mask(shape: str, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Boolean mask (H, W) of one shape of kind `shape`, random size, position and rotation."""
    radius = rng.uniform(0.2, 0.42) * min(height, width)
    cx = rng.uniform(radius * 0.9, width - radius * 0.9)
    cy = rng.uniform(radius * 0.9, height - radius * 0.9)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    # Orientation-defined classes (square vs diamond, stripes) only get small rotations.
    small_turn = np.deg2rad(rng.uniform(-12, 12))
    turn = small_turn if shape in {"square", "diamond", "hstripes", "vstripes", "checker", "cross"} else 0.0
    u = (xs - cx) * np.cos(turn) + (ys - cy) * np.sin(turn)
    v = -(xs - cx) * np.sin(turn) + (ys - cy) * np.cos(turn)
    any_rotation = rng.uniform(0, 2 * np.pi)
    if shape == "circle":
        return u**2 + v**2 <= radius**2
    if shape == "ellipse":
        minor = radius / rng.uniform(2.0, 3.0)
        cu = u * np.cos(any_rotation) + v * np.sin(any_rotation)
        cv = -u * np.sin(any_rotation) + v * np.cos(any_rotation)
        return (cu / radius) ** 2 + (cv / minor) ** 2 <= 1.0
    if shape == "ring":
        inner = radius * rng.uniform(0.45, 0.65)
        squared = u**2 + v**2
        return (squared <= radius**2) & (squared >= inner**2)
    if shape == "square":
        return (np.abs(u) <= radius * 0.8) & (np.abs(v) <= radius * 0.8)
    if shape == "diamond":
        return np.abs(u) * rng.uniform(1.0, 1.3) + np.abs(v) <= radius
    if shape == "cross":
        arm = radius * rng.uniform(0.2, 0.3)
        return ((np.abs(u) <= arm) & (np.abs(v) <= radius)) | ((np.abs(v) <= arm) & (np.abs(u) <= radius))
    if shape in {"hstripes", "vstripes", "checker"}:
        half = radius * 0.85
        period = max(4.0, radius / rng.uniform(2.0, 3.0))
        inside = (np.abs(u) <= half) & (np.abs(v) <= half)
        if shape == "hstripes":
            return inside & (np.floor((v + half) / period) % 2 == 0)
        if shape == "vstripes":
            return inside & (np.floor((u + half) / period) % 2 == 0)
        cell = np.floor((u + half) / period) + np.floor((v + half) / period)
        return inside & (cell % 2 == 0)
    if shape == "triangle":
        return polygon_mask(height, width, regular_polygon(cx, cy, radius, 3, any_rotation))
    if shape == "star":
        return polygon_mask(height, width, star_polygon(cx, cy, radius, radius * 0.42, any_rotation))
    raise ValueError(f"unknown shape {shape!r}")


def _classification_image(shape: str, rng: np.random.Generator, side_range: tuple[int, int]) -> np.ndarray:
    width = int(rng.integers(side_range[0], side_range[1] + 1))
    aspect = rng.uniform(0.6, 1.67)
    height = int(np.clip(round(width / aspect), side_range[0], side_range[1]))
    image = background(rng, height, width)
    # A couple of thin random lines so that "anything drawn" is not the cue.
    clutter = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(clutter)
    for _ in range(int(rng.integers(0, 3))):
        x0, x1 = rng.uniform(0, width, 2)
        y0, y1 = rng.uniform(0, height, 2)
        draw.line([(x0, y0), (x1, y1)], fill=255, width=int(rng.integers(1, 3)))
    clutter_mask = np.asarray(clutter) > 0
    image[clutter_mask] = rng.uniform(0, 255, 3)
    mask = _shape_mask(shape, rng, height, width)
    colour = distinct_colour(rng, image[mask].mean(axis=0) if mask.any() else image.mean(axis=(0, 1)))
    shading = rng.normal(0.0, 4.0, size=(int(mask.sum()), 3))
    image[mask] = colour + shading
    return to_uint8(image)


def write_classification(
    root: str | Path,
    *,
    n_train: int = 240,
    n_val: int = 60,
    seed: int = 0,
    side_range: tuple[int, int] = (96, 320),
    classes: Sequence[str] = CLASSIFICATION_SHAPES,
) -> Path:
    """ImageNet-style folders of shapes: `root/{train,val}/<shape>/<shape>_<n>.JPEG`, `classes.txt`.

    `n_train` / `n_val` are totals per split, spread evenly over the classes (image i has class
    i mod C). Image sides lie in `side_range` pixels with aspect 0.6-1.67.
    """
    root = Path(root)
    ordered = sorted(classes)
    for split, count in (("train", n_train), ("val", n_val)):
        for index in range(count):
            shape = ordered[index % len(ordered)]
            rng = image_rng(seed, split, index, salt=1)
            image = _classification_image(shape, rng, side_range)
            save_jpeg(image, root / split / shape / f"{shape}_{index:06d}.JPEG")
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("".join(f"{name}\n" for name in ordered))
    return root
