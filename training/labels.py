"""Label sets of the datasets the models are trained on.

Class lists and palettes live as JSON in the `training.labelsets` package (each records its
upstream `source`); the keypoint sets are small enough to be constants here.

- ImageNet-1k: the 1000 class names in the standard index order (0 "tench" ... 999 "toilet tissue").
- Cityscapes: the 19 train classes with mmsegmentation's palette.
- ADE20K: the 150 classes with mmsegmentation's palette. Index 7 is 'bed ' with a trailing space,
  exactly as mmseg 1.x `mmseg/datasets/ade.py` spells it; it is kept so names match mmseg's.
- COCO-17 and MPII-16 keypoints: names, flip pairs, skeletons (0-based) and COCO's OKS sigmas.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import TypeAlias

RGB: TypeAlias = tuple[int, int, int]

_PACKAGE = "training.labelsets"


@cache
def _load(filename: str) -> tuple[tuple[str, ...], tuple[RGB, ...] | None]:
    """Read and check one label-set JSON file: its classes and, if it has one, its palette."""
    text = resources.files(_PACKAGE).joinpath(filename).read_text(encoding="utf-8")
    data = json.loads(text)
    classes = data["classes"]
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise ValueError(f"{filename}: 'classes' must be a list of strings")
    if "palette" not in data:
        return tuple(classes), None
    palette: list[RGB] = []
    for entry in data["palette"]:
        if (
            not isinstance(entry, list)
            or len(entry) != 3
            or not all(isinstance(v, int) and 0 <= v <= 255 for v in entry)
        ):
            raise ValueError(f"{filename}: palette entry {entry!r} is not an [r, g, b] of 0..255")
        palette.append((entry[0], entry[1], entry[2]))
    if len(palette) != len(classes):
        raise ValueError(f"{filename}: {len(palette)} palette colours for {len(classes)} classes")
    return tuple(classes), tuple(palette)


def _classes(filename: str) -> list[str]:
    """A fresh list of a label set's classes (the cached tuple stays untouched)."""
    return list(_load(filename)[0])


def _palette(filename: str) -> list[RGB]:
    """A fresh list of a label set's palette colours."""
    palette = _load(filename)[1]
    if palette is None:
        raise ValueError(f"{filename} has no palette")
    return list(palette)


def imagenet1k_classes() -> list[str]:
    """The 1000 ImageNet-1k class names, by class index."""
    return _classes("imagenet1k.json")


def cityscapes_classes() -> list[str]:
    """The 19 Cityscapes train classes, by train id."""
    return _classes("cityscapes.json")


def cityscapes_palette() -> list[RGB]:
    """mmsegmentation's RGB colour for each Cityscapes class."""
    return _palette("cityscapes.json")


# ADE20K index 7 is 'bed ' with a trailing space: mmseg 1.x mmseg/datasets/ade.py spells it so, and
# ade20k.json keeps it byte for byte; strip it for display if you must, not in the data.
def ade20k_classes() -> list[str]:
    """The 150 ADE20K classes, by index (background is not one; note 'bed ' at index 7)."""
    return _classes("ade20k.json")


def ade20k_palette() -> list[RGB]:
    """mmsegmentation's RGB colour for each ADE20K class."""
    return _palette("ade20k.json")


# COCO-17 keypoints (order as in the COCO person annotations and mmpose's coco.py).
COCO_KEYPOINTS: tuple[str, ...] = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
COCO_FLIP_INDICES: tuple[int, ...] = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)
COCO_SKELETON: tuple[tuple[int, int], ...] = (
    (15, 13),
    (13, 11),
    (16, 14),
    (14, 12),
    (11, 12),
    (5, 11),
    (6, 12),
    (5, 6),
    (5, 7),
    (6, 8),
    (7, 9),
    (8, 10),
    (1, 2),
    (0, 1),
    (0, 2),
    (1, 3),
    (2, 4),
    (3, 5),
    (4, 6),
)
# Per-keypoint OKS sigmas of the COCO keypoint evaluation.
COCO_SIGMAS: tuple[float, ...] = (
    0.026,
    0.025,
    0.025,
    0.035,
    0.035,
    0.079,
    0.079,
    0.072,
    0.072,
    0.062,
    0.062,
    0.107,
    0.107,
    0.087,
    0.087,
    0.089,
    0.089,
)

# MPII-16 keypoints (order as in mmpose's configs/_base_/datasets/mpii.py).
MPII_KEYPOINTS: tuple[str, ...] = (
    "r_ankle",
    "r_knee",
    "r_hip",
    "l_hip",
    "l_knee",
    "l_ankle",
    "pelvis",
    "thorax",
    "upper_neck",
    "head_top",
    "r_wrist",
    "r_elbow",
    "r_shoulder",
    "l_shoulder",
    "l_elbow",
    "l_wrist",
)
MPII_FLIP_INDICES: tuple[int, ...] = (5, 4, 3, 2, 1, 0, 6, 7, 8, 9, 15, 14, 13, 12, 11, 10)
# mmpose's mpii.py skeleton_info links, as 0-based index pairs.
MPII_SKELETON: tuple[tuple[int, int], ...] = (
    (0, 1),  # r_ankle - r_knee
    (1, 2),  # r_knee - r_hip
    (2, 6),  # r_hip - pelvis
    (6, 3),  # pelvis - l_hip
    (3, 4),  # l_hip - l_knee
    (4, 5),  # l_knee - l_ankle
    (6, 7),  # pelvis - thorax
    (7, 8),  # thorax - upper_neck
    (8, 9),  # upper_neck - head_top
    (8, 12),  # upper_neck - r_shoulder
    (12, 11),  # r_shoulder - r_elbow
    (11, 10),  # r_elbow - r_wrist
    (8, 13),  # upper_neck - l_shoulder
    (13, 14),  # l_shoulder - l_elbow
    (14, 15),  # l_elbow - l_wrist
)


def coco80_classes() -> list[str]:
    """The 80 COCO detection classes in mmdet's label order (0 "person" ... 79 "toothbrush")."""
    return _classes("coco80.json")
