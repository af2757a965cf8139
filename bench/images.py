"""Deterministic, real-looking JPEGs for the benchmark: gradients, shapes, texture and noise.

Photographs compress to 1.5–3 bits per pixel at quality 85–90; flat synthetic pictures compress
far better and decode faster, which would flatter the service. The pictures below mix a sky-like
gradient, overlapping shapes with edges, a high-frequency texture band and sensor-like noise, so
their JPEG sizes and decode times are close to those of photographs of the same size.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

DEFAULT_SIZES: tuple[tuple[int, int], ...] = ((640, 480), (1280, 720), (1920, 1080))
JPEG_QUALITY = 90


@dataclass(frozen=True)
class BenchImage:
    """One JPEG file of the set: `name` is `<w>x<h>-<seed>.jpg`."""

    name: str
    width: int
    height: int
    data: bytes


def picture(width: int, height: int, seed: int) -> Image.Image:
    """An RGB picture of `width` × `height`, the same for the same arguments."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    top, bottom = rng.integers(40, 220, 3), rng.integers(20, 200, 3)
    t = (yy / max(1, height - 1))[..., None]
    pixels = top * (1 - t) + bottom * t  # a sky-to-ground gradient
    # A textured band (foliage, gravel): sums of sines at random frequencies.
    band = (yy > height * 0.55) & (yy < height * 0.8)
    texture = np.zeros((height, width), np.float32)
    for _ in range(4):
        fx, fy, phase = rng.uniform(0.05, 0.6), rng.uniform(0.05, 0.6), rng.uniform(0, 6.28)
        texture += np.sin(xx * fx + yy * fy + phase)
    pixels[band] += (texture[band] * 18.0)[:, None]
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    pen = ImageDraw.Draw(image)
    scale = min(width, height)
    for _ in range(12):
        x, y = rng.integers(0, width), rng.integers(0, height)
        w, h = rng.integers(scale // 20, scale // 4, 2)
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        kind = rng.integers(0, 3)
        if kind == 0:
            pen.ellipse([x, y, x + w, y + h], fill=colour)
        elif kind == 1:
            pen.rectangle([x, y, x + w, y + h], fill=colour, outline=(0, 0, 0), width=max(1, scale // 300))
        else:
            points = [(int(x + dx), int(y + dy)) for dx, dy in rng.integers(-w, w, (5, 2))]
            pen.polygon(points, fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(radius=max(0.6, scale / 1000)))  # lens softness
    noisy = np.asarray(image, np.float32) + rng.normal(0, 6.0, (height, width, 3))  # sensor noise
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def jpeg(image: Image.Image, quality: int = JPEG_QUALITY) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def image_set(
    sizes: tuple[tuple[int, int], ...] = DEFAULT_SIZES, per_size: int = 2, seed: int = 0
) -> list[BenchImage]:
    """`per_size` JPEGs of each size, interleaved by size (so any window of requests mixes them)."""
    images = []
    for k in range(per_size):
        for width, height in sizes:
            s = seed * 1000 + k * 10 + sizes.index((width, height))
            images.append(
                BenchImage(f"{width}x{height}-{s}.jpg", width, height, jpeg(picture(width, height, s)))
            )
    return images


def write_images(images: list[BenchImage], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for image in images:
        path = folder / image.name
        path.write_bytes(image.data)
        paths.append(path)
    return paths


def parse_sizes(text: str) -> tuple[tuple[int, int], ...]:
    """`640x480,1280x720` → ((640, 480), (1280, 720))."""
    sizes = []
    for part in text.split(","):
        width, _, height = part.strip().lower().partition("x")
        sizes.append((int(width), int(height)))
    return tuple(sizes)
