"""Small deterministic data sets written to disk in the real on-disk layouts.

The loaders in `training.data` read real ImageNet, Cityscapes, ADE20K, COCO and MPII folders; this
module writes tiny look-alikes so the whole pipeline can be trained and tested on a laptop:

- classification: ImageNet-style `train/<class>/*.JPEG`, `val/<class>/*.JPEG` and `classes.txt`;
  the class is the shape (circle, star, stripes...), its colour is random.
- cityscapes: `leftImg8bit/{train,val}/<city>/*_leftImg8bit.png` and
  `gtFine/{train,val}/<city>/*_gtFine_labelTrainIds.png` (19 train ids, 255 on shape borders and
  on an occasional "ego vehicle" region).
- ade20k: `ADEChallengeData2016/{images,annotations}/{training,validation}/ADE_*`; class k is
  stored as k + 1 and 0 marks "other" regions (the loader's reduce_zero_label makes them 255).
- coco: `annotations/person_keypoints_{train,val}2017.json` and `{train,val}2017/*.jpg` with 1-3
  rendered stick figures per image.
- mpii: mmpose's `annotations/mpii_{train,val}.json` (1-based MATLAB coordinates), `images/*.jpg`
  and `annotations/mpii_val_headboxes.json` for PCKh.

Every image draws from its own RNG seeded by (seed, split, index): the same seed gives the same
bytes, and changing a count does not change the other images.
"""

from __future__ import annotations

import colorsys
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "CLASSIFICATION_SHAPES",
    "Task",
    "generate",
    "write_ade20k",
    "write_cityscapes",
    "write_classification",
    "write_coco_pose",
    "write_mpii_pose",
]

Task = Literal["classification", "cityscapes", "ade20k", "coco", "mpii"]
Split = Literal["train", "val"]

# No hexagon (`_shape_mask` still draws one): at the 96 px the default classifier mostly trains at,
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

_SPLIT_CODE = {"train": 0, "val": 1}
_JPEG_QUALITY = 90


def _image_rng(seed: int, split: str, index: int, salt: int) -> np.random.Generator:
    """One generator per image, so images do not depend on each other or on the counts."""
    return np.random.default_rng([seed, salt, _SPLIT_CODE[split], index])


# ---------------------------------------------------------------------------------------------
# Shared drawing helpers
# ---------------------------------------------------------------------------------------------


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
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


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _distinct_colour(rng: np.random.Generator, avoid: np.ndarray, min_distance: float = 90.0) -> np.ndarray:
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


def _polygon_mask(height: int, width: int, points: np.ndarray) -> np.ndarray:
    canvas = Image.new("L", (width, height), 0)
    ImageDraw.Draw(canvas).polygon([(float(x), float(y)) for x, y in points], fill=255)
    return np.asarray(canvas) > 0


def _regular_polygon(cx: float, cy: float, radius: float, sides: int, rotation: float) -> np.ndarray:
    angles = rotation + np.arange(sides) * 2 * np.pi / sides - np.pi / 2
    return np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], axis=1)


def _star_polygon(cx: float, cy: float, outer: float, inner: float, rotation: float) -> np.ndarray:
    angles = rotation + np.arange(10) * np.pi / 5 - np.pi / 2
    radii = np.where(np.arange(10) % 2 == 0, outer, inner)
    return np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)


def _save_jpeg(image: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="JPEG", quality=_JPEG_QUALITY)


def _save_png(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG")


# ---------------------------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------------------------


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
        return _polygon_mask(height, width, _regular_polygon(cx, cy, radius, 3, any_rotation))
    if shape == "hexagon":
        return _polygon_mask(height, width, _regular_polygon(cx, cy, radius, 6, any_rotation))
    if shape == "star":
        return _polygon_mask(height, width, _star_polygon(cx, cy, radius, radius * 0.42, any_rotation))
    raise ValueError(f"unknown shape {shape!r}")


def _classification_image(shape: str, rng: np.random.Generator, side_range: tuple[int, int]) -> np.ndarray:
    width = int(rng.integers(side_range[0], side_range[1] + 1))
    aspect = rng.uniform(0.6, 1.67)
    height = int(np.clip(round(width / aspect), side_range[0], side_range[1]))
    image = _background(rng, height, width)
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
    colour = _distinct_colour(rng, image[mask].mean(axis=0) if mask.any() else image.mean(axis=(0, 1)))
    shading = rng.normal(0.0, 4.0, size=(int(mask.sum()), 3))
    image[mask] = colour + shading
    return _to_uint8(image)


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
            rng = _image_rng(seed, split, index, salt=1)
            image = _classification_image(shape, rng, side_range)
            _save_jpeg(image, root / split / shape / f"{shape}_{index:06d}.JPEG")
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("".join(f"{name}\n" for name in ordered))
    return root


# ---------------------------------------------------------------------------------------------
# Segmentation
# ---------------------------------------------------------------------------------------------

_SEG_SHAPES = ("ellipse", "rectangle", "triangle", "diamond", "hexagon", "star", "pole", "slab", "pentagon")
# One pattern per Cityscapes class, told apart by layout rather than by period (random rescaling
# 0.5-2x blurs periods together) and each its own mirror image (a flipped "antidiagonal" class was
# a diagonal one: measured, the FCN merged every pair of classes that shared a pattern).
_SEG_PATTERNS = (
    "solid",
    "hstripes",
    "vstripes",
    "diagonal",
    "checker",
    "dots",
    "grid",
    "speckle",
    "waves",
    "hlines",
    "vlines",
    "diamonds",
    "rings",
    "bricks",
    "zigzag",
    "vwaves",
    "crosses",
    "dashes",
    "vdashes",
)


@dataclass(frozen=True)
class SegClassStyle:
    """How one segmentation class looks: its own shape, texture, colours (RGB 0-255) and period (px)."""

    shape: str
    pattern: str
    primary: tuple[float, float, float]
    secondary: tuple[float, float, float]
    period: int


def segmentation_class_styles(num_classes: int) -> list[SegClassStyle]:
    """Fixed (seed-independent) looks per class.

    (shape, pattern) pairs are unique below 171 classes; with 19 classes each has its own pattern
    and only 0 (Cityscapes' road) is plain. Primary hues are spread by the golden angle; the secondary colour sits at a hue offset that differs between classes sharing a
    pattern, so the pair stays telling after PhotoMetricDistortion shifts every hue alike.
    """
    hue_offsets = (0.5, 0.18, 0.82)
    styles = []
    for c in range(num_classes):
        hue = (c * 0.381966) % 1.0
        saturation = (0.9, 0.6)[c % 2]
        value = (0.95, 0.7)[(c // 2) % 2]
        secondary_hue = (hue + hue_offsets[(c // len(_SEG_PATTERNS)) % 3]) % 1.0
        primary = tuple(255.0 * v for v in colorsys.hsv_to_rgb(hue, saturation, value))
        secondary_value = 1.0 if value < 0.8 else 0.4  # contrast in brightness as well as hue
        secondary = tuple(255.0 * v for v in colorsys.hsv_to_rgb(secondary_hue, 0.8, secondary_value))
        styles.append(
            SegClassStyle(
                shape=_SEG_SHAPES[c % len(_SEG_SHAPES)],
                pattern=_SEG_PATTERNS[c % len(_SEG_PATTERNS)],
                primary=(primary[0], primary[1], primary[2]),
                secondary=(secondary[0], secondary[1], secondary[2]),
                period=8 + (c * 5) % 7,
            )
        )
    return styles


def _texture(style: SegClassStyle, rng: np.random.Generator, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """The class texture (h, w, 3) float at pixel coordinates `xs`, `ys` (h, w)."""
    jitter = rng.uniform(-14, 14, 3)
    primary = np.asarray(style.primary) + jitter
    secondary = np.asarray(style.secondary) + jitter
    period = float(style.period)
    half = period / 2
    pattern = style.pattern
    if pattern == "solid":
        use_secondary = np.zeros(xs.shape, dtype=bool)
    elif pattern == "hstripes":
        use_secondary = np.floor(ys / half) % 2 == 1
    elif pattern == "vstripes":
        use_secondary = np.floor(xs / half) % 2 == 1
    elif pattern == "diagonal":
        use_secondary = np.floor((xs + ys) / half) % 2 == 1
    elif pattern == "checker":
        use_secondary = (np.floor(xs / half) + np.floor(ys / half)) % 2 == 1
    elif pattern == "dots":
        dx = xs % period - half
        dy = ys % period - half
        use_secondary = dx**2 + dy**2 <= (period * 0.3) ** 2
    elif pattern == "grid":
        use_secondary = (xs % period < 2) | (ys % period < 2)
    elif pattern == "speckle":
        use_secondary = rng.random(xs.shape) < 0.25
    elif pattern == "waves":
        use_secondary = np.floor((ys + half * np.sin(xs * 2 * np.pi / (2 * period))) / half) % 2 == 1
    elif pattern == "hlines":
        use_secondary = ys % period < period * 0.22
    elif pattern == "vlines":
        use_secondary = xs % period < period * 0.22
    elif pattern == "diamonds":
        use_secondary = (np.floor((xs + ys) / period) + np.floor((xs - ys) / period)) % 2 == 1
    elif pattern == "rings":
        radius = np.hypot(xs % period - half, ys % period - half)
        use_secondary = (radius >= period * 0.2) & (radius <= period * 0.38)
    elif pattern == "bricks":
        row = np.floor(ys / half)
        use_secondary = (ys % half < half * 0.25) | ((xs + (row % 2) * half) % period < half * 0.25)
    elif pattern == "zigzag":
        use_secondary = np.floor((ys + np.abs(xs % period - half)) / half) % 2 == 1
    elif pattern == "vwaves":
        use_secondary = np.floor((xs + half * np.sin(ys * 2 * np.pi / (2 * period))) / half) % 2 == 1
    elif pattern == "crosses":
        dx, dy = np.abs(xs % period - half), np.abs(ys % period - half)
        use_secondary = ((dx < period * 0.1) & (dy < period * 0.35)) | (
            (dy < period * 0.1) & (dx < period * 0.35)
        )
    elif pattern == "dashes":
        use_secondary = (ys % period < period * 0.3) & (xs % (2 * period) < period)
    elif pattern == "vdashes":
        use_secondary = (xs % period < period * 0.3) & (ys % (2 * period) < period)
    else:
        raise ValueError(f"unknown pattern {pattern!r}")
    texture = np.where(use_secondary[..., None], secondary, primary)
    return texture + rng.normal(0.0, 5.0, size=texture.shape)


def _object_mask(shape: str, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Mask (height, width) of one object filling its box in the style's shape."""
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    box = (0, 0, width - 1, height - 1)
    cx, cy, radius = (width - 1) / 2, (height - 1) / 2, min(width, height) / 2
    if shape == "ellipse":
        draw.ellipse(box, fill=255)
    elif shape == "slab":
        draw.rounded_rectangle(box, radius=int(min(width, height) * 0.3), fill=255)
    elif shape in {"rectangle", "pole"}:
        draw.rectangle(box, fill=255)
    else:
        rotation = rng.uniform(-0.3, 0.3)
        if shape == "triangle":
            points = _regular_polygon(cx, cy * 1.15, radius * 1.1, 3, rotation)
        elif shape == "diamond":
            points = np.array([[cx, 0], [width - 1, cy], [cx, height - 1], [0, cy]], dtype=np.float64)
        elif shape == "hexagon":
            points = _regular_polygon(cx, cy, radius, 6, rotation)
        elif shape == "pentagon":
            points = _regular_polygon(cx, cy, radius, 5, rotation)
        elif shape == "star":
            points = _star_polygon(cx, cy, radius, radius * 0.45, rotation)
        else:
            raise ValueError(f"unknown shape {shape!r}")
        draw.polygon([(float(x), float(y)) for x, y in points], fill=255)
    return np.asarray(canvas) > 0


def _object_box_size(shape: str, rng: np.random.Generator, image_height: int) -> tuple[int, int]:
    height = rng.uniform(0.18, 0.5) * image_height
    aspect_ranges = {"pole": (0.25, 0.4), "slab": (1.6, 2.4)}
    aspect = rng.uniform(*aspect_ranges.get(shape, (0.85, 1.2)))
    return max(4, int(height * aspect)), max(4, int(height))


def _mark_borders(label: np.ndarray, ignore_index: int) -> np.ndarray:
    """Set pixels whose 4-neighbourhood holds another class to `ignore_index` (Cityscapes-like)."""
    border = np.zeros(label.shape, dtype=bool)
    border[1:, :] |= label[1:, :] != label[:-1, :]
    border[:-1, :] |= label[1:, :] != label[:-1, :]
    border[:, 1:] |= label[:, 1:] != label[:, :-1]
    border[:, :-1] |= label[:, 1:] != label[:, :-1]
    marked = label.copy()
    marked[border] = ignore_index
    return marked


@dataclass(frozen=True)
class _Scene:
    image: np.ndarray  # (H, W, 3) uint8
    label: np.ndarray  # (H, W) uint8 class ids, `void` where unlabelled


def _render_scene(
    rng: np.random.Generator,
    size_wh: tuple[int, int],
    styles: Sequence[SegClassStyle],
    background_classes: tuple[int, int],
    void: int,
    void_region_prob: float,
) -> _Scene:
    """Objects of random classes over a two-class background (top, bottom), painter's order.

    With probability `void_region_prob` an unlabelled region (`void` in the label) is added: a
    dark "ego vehicle" at the bottom, or a noise patch.
    """
    width, height = size_wh
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    top_class, bottom_class = background_classes
    horizon = height * rng.uniform(0.35, 0.6) + (xs - width / 2) * rng.uniform(-0.15, 0.15)
    label = np.where(ys < horizon, top_class, bottom_class).astype(np.uint8)
    image = np.where(
        (ys < horizon)[..., None],
        _texture(styles[top_class], rng, xs, ys),
        _texture(styles[bottom_class], rng, xs, ys),
    )
    object_classes = [c for c in range(len(styles)) if c not in background_classes]
    # 8-16 objects cover ~40 % of a scene (4-10 covered 20 %): measured, an FCN trained 300
    # iterations on such scenes reached mIoU 41 where it had reached 31 with the sparser ones.
    for _ in range(int(rng.integers(8, 17))):
        cls = int(rng.choice(object_classes))
        style = styles[cls]
        box_w, box_h = _object_box_size(style.shape, rng, height)
        box_w, box_h = min(box_w, width), min(box_h, height)
        x0 = int(rng.integers(-box_w // 4, width - box_w + box_w // 4 + 1))
        y0 = int(rng.integers(-box_h // 4, height - box_h + box_h // 4 + 1))
        mask = _object_mask(style.shape, rng, box_h, box_w)
        # Clip the object's box to the image.
        ix0, iy0 = max(x0, 0), max(y0, 0)
        ix1, iy1 = min(x0 + box_w, width), min(y0 + box_h, height)
        if ix1 <= ix0 or iy1 <= iy0:
            continue
        mask = mask[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0]
        texture = _texture(style, rng, xs[iy0:iy1, ix0:ix1], ys[iy0:iy1, ix0:ix1])
        image[iy0:iy1, ix0:ix1][mask] = texture[mask]
        label[iy0:iy1, ix0:ix1][mask] = cls
    if rng.random() < void_region_prob:
        if rng.random() < 0.5:
            hood = (xs - width / 2) ** 2 / (0.6 * width) ** 2 + (ys - height * 1.05) ** 2 / (
                0.14 * height
            ) ** 2 <= 1.0
            image[hood] = rng.uniform(10, 40, 3) + rng.normal(0, 3, size=(int(hood.sum()), 3))
            label[hood] = void
        else:
            patch_w, patch_h = int(width * rng.uniform(0.08, 0.2)), int(height * rng.uniform(0.08, 0.2))
            px, py = int(rng.integers(0, width - patch_w)), int(rng.integers(0, height - patch_h))
            image[py : py + patch_h, px : px + patch_w] = rng.uniform(0, 255, (patch_h, patch_w, 3))
            label[py : py + patch_h, px : px + patch_w] = void
    image += rng.normal(0.0, 3.0, size=image.shape)
    return _Scene(image=_to_uint8(image), label=label)


_CITIES = {"train": ("aachen", "bochum"), "val": ("frankfurt", "lindau")}
CITYSCAPES_ROAD, CITYSCAPES_SKY = 0, 10


def write_cityscapes(
    root: str | Path,
    *,
    n_train: int = 40,
    n_val: int = 10,
    seed: int = 0,
    size_wh: tuple[int, int] = (512, 256),
    num_classes: int = 19,
) -> Path:
    """Cityscapes layout: `leftImg8bit/<split>/<city>/<city>_000000_0000NN_leftImg8bit.png` and
    `gtFine/<split>/<city>/..._gtFine_labelTrainIds.png`; road below a horizon, sky above, objects
    of the other train ids; 255 on class borders and on an occasional ego-vehicle or void patch."""
    root = Path(root)
    styles = segmentation_class_styles(num_classes)
    for split, count in (("train", n_train), ("val", n_val)):
        cities = _CITIES[split]
        for index in range(count):
            rng = _image_rng(seed, split, index, salt=2)
            scene = _render_scene(rng, size_wh, styles, (CITYSCAPES_SKY, CITYSCAPES_ROAD), 255, 0.4)
            city = cities[index % len(cities)]
            stem = f"{city}_000000_{index:06d}"
            _save_png(scene.image, root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
            label = _mark_borders(scene.label, 255)
            _save_png(label, root / "gtFine" / split / city / f"{stem}_gtFine_labelTrainIds.png")
    return root


ADE20K_WALL, ADE20K_FLOOR = 0, 3


def write_ade20k(
    root: str | Path,
    *,
    n_train: int = 40,
    n_val: int = 10,
    seed: int = 0,
    size_wh: tuple[int, int] = (384, 288),
    num_classes: int = 19,
) -> Path:
    """ADE20K layout under `root/ADEChallengeData2016`: `images/{training,validation}/ADE_*.jpg` and
    `annotations/.../ADE_*.png`, class k stored as k + 1, 0 = other. Only the first `num_classes`
    of ADE's 150 ids are used, so a small set still shows each class often. Image sizes vary
    ±20 % around `size_wh`."""
    base = Path(root) / "ADEChallengeData2016"
    styles = segmentation_class_styles(num_classes)
    folders = {"train": ("training", "ADE_train"), "val": ("validation", "ADE_val")}
    for split, count in (("train", n_train), ("val", n_val)):
        folder, prefix = folders[split]
        for index in range(count):
            rng = _image_rng(seed, split, index, salt=3)
            size = (int(size_wh[0] * rng.uniform(0.8, 1.2)), int(size_wh[1] * rng.uniform(0.8, 1.2)))
            scene = _render_scene(rng, size, styles, (ADE20K_WALL, ADE20K_FLOOR), 255, 0.5)
            stored = np.where(scene.label == 255, 0, scene.label.astype(np.int32) + 1).astype(np.uint8)
            name = f"{prefix}_{index + 1:08d}"
            _save_jpeg(scene.image, base / "images" / folder / f"{name}.jpg")
            _save_png(stored, base / "annotations" / folder / f"{name}.png")
    return Path(root)


# ---------------------------------------------------------------------------------------------
# Pose: stick figures
# ---------------------------------------------------------------------------------------------

# The body model's joints: COCO's 17 in COCO order, then the extra MPII joints.
_PELVIS, _THORAX, _UPPER_NECK, _HEAD_TOP = 17, 18, 19, 20
_NUM_BODY_JOINTS = 21
# MPII-16 order (r_ankle ... l_wrist) as indices into the body model.
_MPII_FROM_BODY = (16, 14, 12, 11, 13, 15, _PELVIS, _THORAX, _UPPER_NECK, _HEAD_TOP, 10, 8, 6, 5, 7, 9)
# Limbs drawn as thick lines. Left and right look alike: a side marker would contradict itself
# under flip augmentation; the figures face the camera, so left is on the image's right.
_LIMBS: tuple[tuple[int, int], ...] = (
    (5, 7),
    (7, 9),
    (11, 13),
    (13, 15),
    (6, 8),
    (8, 10),
    (12, 14),
    (14, 16),
)


@dataclass(frozen=True)
class _Figure:
    joints: np.ndarray  # (21, 2) image pixels (x, y)
    occluded: np.ndarray  # (21,) bool, labelled but hidden
    head_radius: float
    limb_width: int
    height: float  # body height in pixels


def _random_figure(rng: np.random.Generator, image_wh: tuple[int, int], body_height: float) -> _Figure:
    """A front-facing person: the person's left side is on the image's right, as in COCO."""
    width, height = image_wh
    h = body_height
    lean = np.deg2rad(rng.normal(0, 12) if rng.random() < 0.85 else rng.uniform(-80, 80))
    up = np.array([np.sin(lean), -np.cos(lean)])
    side = np.array([np.cos(lean), np.sin(lean)])  # towards the person's left
    pelvis = np.array([rng.uniform(0.1, 0.9) * width, rng.uniform(0.45, 0.62) * h])
    pelvis[1] += rng.uniform(-0.1, 0.1) * h + max(0.0, height - h) * rng.uniform(0, 1)
    neck = pelvis + up * 0.3 * h
    joints = np.zeros((_NUM_BODY_JOINTS, 2))
    joints[_PELVIS], joints[_THORAX] = pelvis, neck
    shoulder, hip = 0.11 * h, 0.075 * h
    joints[5], joints[6] = neck + side * shoulder, neck - side * shoulder
    joints[11], joints[12] = pelvis + side * hip, pelvis - side * hip

    def bend(direction: np.ndarray, degrees: float) -> np.ndarray:
        rad = np.deg2rad(degrees)
        c, s = np.cos(rad), np.sin(rad)
        return np.array([c * direction[0] - s * direction[1], s * direction[0] + c * direction[1]])

    down = -up
    for sign, shoulder_j, elbow_j, wrist_j in ((1, 5, 7, 9), (-1, 6, 8, 10)):
        raise_angle = rng.uniform(-25, 165)
        upper = bend(down, -sign * raise_angle)  # positive angles swing the arm outwards
        joints[elbow_j] = joints[shoulder_j] + upper * 0.17 * h
        joints[wrist_j] = joints[elbow_j] + bend(upper, rng.uniform(-130, 130)) * 0.15 * h
    for sign, hip_j, knee_j, ankle_j in ((1, 11, 13, 15), (-1, 12, 14, 16)):
        spread = rng.uniform(-12, 40)
        thigh = bend(down, -sign * spread)
        joints[knee_j] = joints[hip_j] + thigh * 0.24 * h
        joints[ankle_j] = joints[knee_j] + bend(thigh, rng.uniform(-70, 70)) * 0.23 * h

    head_radius = 0.065 * h
    head = neck + up * head_radius * 1.45
    yaw = rng.uniform(-0.5, 0.5)  # > 0: face turned towards the person's left (image right)
    face = head + side * yaw * head_radius * 0.6
    joints[0] = face + up * -0.1 * head_radius
    eyes = face + up * 0.28 * head_radius
    joints[1], joints[2] = eyes + side * 0.38 * head_radius, eyes - side * 0.38 * head_radius
    joints[3], joints[4] = head + side * head_radius * 0.95, head - side * head_radius * 0.95
    joints[_UPPER_NECK] = neck + up * head_radius * 0.45
    joints[_HEAD_TOP] = head + up * head_radius
    occluded = np.zeros(_NUM_BODY_JOINTS, dtype=bool)
    occluded[3] = yaw > 0.3  # the left ear turns behind the head
    occluded[4] = yaw < -0.3
    return _Figure(joints, occluded, head_radius, max(2, round(0.045 * h)), h)


@dataclass(frozen=True)
class _FigureColours:
    """Fills of one figure's parts (RGB, or (255,) for every part when drawing its mask)."""

    torso: tuple[int, ...]
    limbs: tuple[int, ...]
    head: tuple[int, ...]
    ears: tuple[int, ...]
    eyes: tuple[int, ...] = (15, 15, 15)
    nose: tuple[int, ...] = (200, 40, 40)

    @classmethod
    def random(cls, rng: np.random.Generator) -> _FigureColours:
        torso, limbs = (tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in range(2))
        skin = tuple(int(v) for v in rng.integers(90, 240, 3))
        return cls(torso=torso, limbs=limbs, head=skin, ears=tuple(max(0, v - 50) for v in skin))

    @classmethod
    def uniform(cls, value: int) -> _FigureColours:
        fill = (value,)
        return cls(torso=fill, limbs=fill, head=fill, ears=fill, eyes=fill, nose=fill)


def _draw_figure(draw: ImageDraw.ImageDraw, figure: _Figure, colours: _FigureColours) -> None:
    """Draw one figure: torso, limbs, head with ears, eyes and nose."""
    j = [(float(x), float(y)) for x, y in figure.joints]
    width = figure.limb_width
    draw.polygon([j[5], j[6], j[12], j[11]], fill=colours.torso)
    for a, b in _LIMBS:
        draw.line([j[a], j[b]], fill=colours.limbs, width=width, joint="curve")
        for point in (j[a], j[b]):
            _dot(draw, point, width / 2, colours.limbs)
    draw.line([j[_THORAX], j[_UPPER_NECK]], fill=colours.torso, width=width)
    head = (figure.joints[_HEAD_TOP] + figure.joints[_UPPER_NECK]) / 2
    r = figure.head_radius
    for ear in (3, 4):
        if not figure.occluded[ear]:
            _dot(draw, j[ear], r * 0.3, colours.ears)
    _dot(draw, (float(head[0]), float(head[1])), r, colours.head)
    for eye in (1, 2):
        _dot(draw, j[eye], max(1.0, r * 0.13), colours.eyes)
    _dot(draw, j[0], max(1.0, r * 0.16), colours.nose)


def _dot(
    draw: ImageDraw.ImageDraw, center: tuple[float, float], radius: float, fill: tuple[int, ...]
) -> None:
    x, y = center
    draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=fill)


@dataclass(frozen=True)
class _PosePerson:
    keypoints: np.ndarray  # (21, 2) image pixels
    visibility: np.ndarray  # (21,) 0 out of image, 1 occluded, 2 visible
    bbox_xywh: tuple[float, float, float, float]
    head_box_xyxy: tuple[float, float, float, float]


def _render_pose_image(
    rng: np.random.Generator, size_wh: tuple[int, int]
) -> tuple[np.ndarray, list[_PosePerson]]:
    """An image (H, W, 3) uint8 with 1-3 stick figures, some occluded or cut by the border."""
    width, height = size_wh
    canvas = Image.fromarray(_to_uint8(_background(rng, height, width)))
    draw = ImageDraw.Draw(canvas)
    count = int(rng.integers(1, 4))
    people = []
    for _ in range(count):
        body_height = height * (rng.uniform(0.45, 0.95) if count == 1 else rng.uniform(0.35, 0.8))
        figure = _random_figure(rng, size_wh, body_height)
        mask = Image.new("L", size_wh, 0)
        _draw_figure(draw, figure, _FigureColours.random(rng))
        _draw_figure(ImageDraw.Draw(mask), figure, _FigureColours.uniform(255))
        occluded = figure.occluded.copy()
        if rng.random() < 0.3:  # an occluder over one limb joint: its keypoints stay labelled (v=1)
            target = figure.joints[int(rng.choice([7, 8, 9, 10, 13, 14, 15, 16]))]
            half = np.array([rng.uniform(0.08, 0.14), rng.uniform(0.06, 0.12)]) * figure.height
            x0, y0 = target - half * rng.uniform(0.3, 1.7, 2)
            x1, y1 = x0 + 2 * half[0], y0 + 2 * half[1]
            occluder = tuple(int(v) for v in rng.integers(0, 256, 3))
            draw.rectangle([x0, y0, x1, y1], fill=occluder)
            inside = (
                (figure.joints[:, 0] >= x0)
                & (figure.joints[:, 0] <= x1)
                & (figure.joints[:, 1] >= y0)
                & (figure.joints[:, 1] <= y1)
            )
            occluded |= inside
        mask_array = np.asarray(mask) > 0
        if not mask_array.any():
            continue
        cols = np.flatnonzero(mask_array.any(axis=0))
        rows = np.flatnonzero(mask_array.any(axis=1))
        bbox = (float(cols[0]), float(rows[0]), float(cols[-1] - cols[0] + 1), float(rows[-1] - rows[0] + 1))
        in_image = (
            (figure.joints[:, 0] >= 0)
            & (figure.joints[:, 0] <= width - 1)
            & (figure.joints[:, 1] >= 0)
            & (figure.joints[:, 1] <= height - 1)
        )
        visibility = np.where(in_image, np.where(occluded, 1, 2), 0)
        head = (figure.joints[_HEAD_TOP] + figure.joints[_UPPER_NECK]) / 2
        r = figure.head_radius * 1.1
        head_box = (float(head[0] - r), float(head[1] - r), float(head[0] + r), float(head[1] + r))
        people.append(_PosePerson(figure.joints.copy(), visibility, bbox, head_box))
    image = np.asarray(canvas, dtype=np.float32) + rng.normal(0.0, 2.5, size=(height, width, 3))
    return _to_uint8(image), people


def write_coco_pose(
    root: str | Path,
    *,
    n_train: int = 60,
    n_val: int = 20,
    seed: int = 0,
    size_wh: tuple[int, int] = (320, 256),
    keypoint_names: Sequence[str] | None = None,
    skeleton: Sequence[tuple[int, int]] | None = None,
) -> Path:
    """COCO keypoint layout: `annotations/person_keypoints_{train,val}2017.json`, `{split}2017/*.jpg`.

    Keypoints [x, y, v] × 17 (v = 2 visible, 1 occluded, 0 out of the image with x = y = 0),
    `bbox` the figure's pixel extent (xywh), `area` = 0.5 × bbox area (a filled person's
    segment, not the thin stick figure, sets the OKS scale). `skeleton` (0-based pairs) is
    written 1-based as COCO does. Names and skeleton default to `training.labels`' COCO-17.
    """
    if keypoint_names is None or skeleton is None:
        from training import labels

        keypoint_names = labels.COCO_KEYPOINTS if keypoint_names is None else keypoint_names
        skeleton = labels.COCO_SKELETON if skeleton is None else skeleton
    root = Path(root)
    category = {
        "id": 1,
        "name": "person",
        "supercategory": "person",
        "keypoints": list(keypoint_names),
        "skeleton": [[a + 1, b + 1] for a, b in skeleton],
    }
    for split, count in (("train", n_train), ("val", n_val)):
        images: list[dict[str, object]] = []
        annotations: list[dict[str, object]] = []
        for index in range(count):
            rng = _image_rng(seed, split, index, salt=4)
            image, people = _render_pose_image(rng, size_wh)
            image_id = index + 1
            file_name = f"{image_id:012d}.jpg"
            _save_jpeg(image, root / f"{split}2017" / file_name)
            images.append({"id": image_id, "file_name": file_name, "width": size_wh[0], "height": size_wh[1]})
            for person in people:
                keypoints: list[float] = []
                for (x, y), v in zip(person.keypoints[:17], person.visibility[:17], strict=True):
                    keypoints += [round(float(x), 2), round(float(y), 2), int(v)] if v else [0.0, 0.0, 0]
                _, _, box_w, box_h = person.bbox_xywh
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": 1,
                        "keypoints": keypoints,
                        "num_keypoints": int((person.visibility[:17] > 0).sum()),
                        "bbox": [round(v, 2) for v in person.bbox_xywh],
                        "area": round(0.5 * box_w * box_h, 2),
                        "iscrowd": 0,
                    }
                )
        document = {
            "info": {"description": "synthetic stick figures", "version": "1.0"},
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": [category],
        }
        path = root / "annotations" / f"person_keypoints_{split}2017.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document))
    return root


def write_mpii_pose(
    root: str | Path,
    *,
    n_train: int = 60,
    n_val: int = 20,
    seed: int = 0,
    size_wh: tuple[int, int] = (256, 256),
) -> Path:
    """mmpose's MPII layout: `annotations/mpii_{train,val}.json`, `images/*.jpg`, and head boxes
    `annotations/mpii_val_headboxes.json` ({image: [[x1, y1, x2, y2], ...]} per person in file
    order). Like MPII's MATLAB files, coordinates are 1-based; `center` is shifted up by
    15 × scale px so the loader's MPII adjustment lands on the box centre, `scale` = box side / 200.
    Joints out of the image are [-1, -1] with `joints_vis` 0."""
    root = Path(root)
    for split, count in (("train", n_train), ("val", n_val)):
        entries = []
        head_boxes: dict[str, list[list[float]]] = {}
        for index in range(count):
            rng = _image_rng(seed, split, index, salt=5)
            image, people = _render_pose_image(rng, size_wh)
            name = f"{_SPLIT_CODE[split]}{index + 1:08d}.jpg"
            _save_jpeg(image, root / "images" / name)
            for person in people:
                joints = person.keypoints[list(_MPII_FROM_BODY)]
                visible = person.visibility[list(_MPII_FROM_BODY)] > 0
                x, y, w, h = person.bbox_xywh
                scale = max(w, h) / 200.0
                center = [x + w / 2 + 1, y + h / 2 + 1 - 15 * scale]
                entries.append(
                    {
                        "image": name,
                        "center": [round(v, 3) for v in center],
                        "scale": round(scale, 5),
                        "joints": [
                            [round(float(px) + 1, 2), round(float(py) + 1, 2)] if vis else [-1.0, -1.0]
                            for (px, py), vis in zip(joints, visible, strict=True)
                        ],
                        "joints_vis": [int(v) for v in visible],
                    }
                )
                head_boxes.setdefault(name, []).append([round(v + 1, 2) for v in person.head_box_xyxy])
        path = root / "annotations" / f"mpii_{split}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(entries))
        if split == "val":
            (root / "annotations" / "mpii_val_headboxes.json").write_text(json.dumps(head_boxes))
    return root


# ---------------------------------------------------------------------------------------------


def generate(
    task: Task,
    root: str | Path,
    *,
    n_train: int,
    n_val: int,
    seed: int = 0,
    size: tuple[int, int] | None = None,
) -> Path:
    """Write one synthetic data set; `size` is the side range (min, max) for classification and
    the image (width, height) otherwise (None: each writer's default). Returns the data root."""
    writers: dict[str, Callable[..., Path]] = {
        "classification": write_classification,
        "cityscapes": write_cityscapes,
        "ade20k": write_ade20k,
        "coco": write_coco_pose,
        "mpii": write_mpii_pose,
    }
    if task not in writers:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(writers)}")
    size_argument = {} if size is None else {"side_range" if task == "classification" else "size_wh": size}
    return writers[task](root, n_train=n_train, n_val=n_val, seed=seed, **size_argument)
