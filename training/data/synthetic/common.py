"""What the three generators share: per-image RNGs, backgrounds, colours, polygons, files."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw

Split = Literal["train", "val"]

SPLIT_CODE = {"train": 0, "val": 1}
JPEG_QUALITY = 90


def image_rng(seed: int, split: str, index: int, salt: int) -> np.random.Generator:
    """One generator per image, so images do not depend on each other or on the counts."""
    return np.random.default_rng([seed, salt, SPLIT_CODE[split], index])


def background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A textured background (H, W, 3) float: a gradient, low-frequency blotches and pixel noise."""
    start, end = rng.uniform(30, 225, size=(2, 3))
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = xs * np.cos(angle) + ys * np.sin(angle)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1.0)
    image = start + (end - start) * ramp[..., None]
    grid_h, grid_w = int(rng.integers(3, 9)), int(rng.integers(3, 9))
    blotches = rng.integers(0, 256, size=(grid_h, grid_w, 3), dtype=np.uint8)
    smooth = np.asarray(
        Image.fromarray(blotches).resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32
    )
    image += (smooth - 128.0) * rng.uniform(0.1, 0.35)
    image += rng.normal(0.0, rng.uniform(2, 9), size=image.shape)
    return image


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def distinct_colour(rng: np.random.Generator, avoid: np.ndarray, min_distance: float = 90.0) -> np.ndarray:
    """A random RGB colour at least `min_distance` away from `avoid` (3,) (best of 20 tries)."""
    best, best_distance = rng.uniform(0, 255, 3), -1.0
    for _ in range(20):
        colour = rng.uniform(0, 255, 3)
        distance = float(np.linalg.norm(colour - avoid))
        if distance >= min_distance:
            return colour
        if distance > best_distance:
            best, best_distance = colour, distance
    return best


def polygon_mask(height: int, width: int, points: np.ndarray) -> np.ndarray:
    canvas = Image.new("L", (width, height), 0)
    ImageDraw.Draw(canvas).polygon([(float(x), float(y)) for x, y in points], fill=255)
    return np.asarray(canvas) > 0


def regular_polygon(cx: float, cy: float, radius: float, sides: int, rotation: float) -> np.ndarray:
    angles = rotation + np.arange(sides) * 2 * np.pi / sides - np.pi / 2
    return np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], axis=1)


def star_polygon(cx: float, cy: float, outer: float, inner: float, rotation: float) -> np.ndarray:
    angles = rotation + np.arange(10) * np.pi / 5 - np.pi / 2
    radii = np.where(np.arange(10) % 2 == 0, outer, inner)
    return np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)


def save_jpeg(image: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="JPEG", quality=JPEG_QUALITY)


def save_png(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG")
