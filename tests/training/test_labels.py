from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from importlib import resources

import pytest

from training import labels


@pytest.mark.parametrize(
    ("load", "count"),
    [
        (labels.imagenet1k_classes, 1000),
        (labels.cityscapes_classes, 19),
        (labels.ade20k_classes, 150),
    ],
)
def test_class_counts(load: Callable[[], list[str]], count: int) -> None:
    classes = load()
    assert len(classes) == count
    assert all(isinstance(c, str) and c for c in classes)


def test_keypoint_counts() -> None:
    assert len(labels.COCO_KEYPOINTS) == 17
    assert len(labels.COCO_FLIP_INDICES) == 17
    assert len(labels.COCO_SIGMAS) == 17
    assert len(labels.COCO_SKELETON) == 19
    assert len(labels.MPII_KEYPOINTS) == 16
    assert len(labels.MPII_FLIP_INDICES) == 16
    assert len(labels.MPII_SKELETON) == 15
    assert len(set(labels.COCO_KEYPOINTS)) == 17
    assert len(set(labels.MPII_KEYPOINTS)) == 16


@pytest.mark.parametrize(
    ("index", "name"),
    [
        (0, "tench"),
        (1, "goldfish"),
        (207, "golden retriever"),
        (281, "tabby"),
        (409, "analog clock"),
        (817, "sports car"),
        (954, "banana"),
        (999, "toilet tissue"),
    ],
)
def test_imagenet_names(index: int, name: str) -> None:
    assert labels.imagenet1k_classes()[index] == name


def test_imagenet_known_duplicates() -> None:
    # ImageNet really has two 'crane' (bird, machine) and two 'maillot' synsets.
    classes = labels.imagenet1k_classes()
    assert classes[134] == classes[517] == "crane"
    assert classes[638] == classes[639] == "maillot"
    assert len(set(classes)) == 998


def test_cityscapes_names_and_palette() -> None:
    classes = labels.cityscapes_classes()
    assert classes[0] == "road"
    assert classes[6] == "traffic light"
    assert classes[13] == "car"
    assert classes[18] == "bicycle"
    palette = labels.cityscapes_palette()
    assert palette[0] == (128, 64, 128)
    assert palette[13] == (0, 0, 142)
    assert palette[18] == (119, 11, 32)


def test_ade20k_names_and_palette() -> None:
    classes = labels.ade20k_classes()
    assert classes[0] == "wall"
    assert classes[7] == "bed "  # trailing space, exactly as mmseg spells it
    assert classes[12] == "person"
    assert classes[20] == "car"
    assert classes[149] == "flag"
    assert len(set(classes)) == 150
    palette = labels.ade20k_palette()
    assert palette[0] == (120, 120, 120)
    assert palette[7] == (204, 5, 255)
    assert palette[149] == (92, 0, 255)


@pytest.mark.parametrize(
    ("classes", "palette"),
    [
        (labels.cityscapes_classes, labels.cityscapes_palette),
        (labels.ade20k_classes, labels.ade20k_palette),
    ],
)
def test_palette_shape(
    classes: Callable[[], list[str]], palette: Callable[[], list[tuple[int, int, int]]]
) -> None:
    colours = palette()
    assert len(colours) == len(classes())
    for colour in colours:
        assert isinstance(colour, tuple)
        assert len(colour) == 3
        assert all(isinstance(v, int) and 0 <= v <= 255 for v in colour)


def test_callers_cannot_mutate_cache() -> None:
    classes = labels.imagenet1k_classes()
    classes[0] = "changed"
    classes.append("extra")
    assert labels.imagenet1k_classes()[0] == "tench"
    assert len(labels.imagenet1k_classes()) == 1000
    palette = labels.ade20k_palette()
    palette.clear()
    assert len(labels.ade20k_palette()) == 150


@pytest.mark.parametrize("filename", ["imagenet1k.json", "cityscapes.json", "ade20k.json"])
def test_json_records_source(filename: str) -> None:
    data = json.loads(resources.files("training.labelsets").joinpath(filename).read_text(encoding="utf-8"))
    assert isinstance(data["source"], str) and data["source"]


def _swap_side(name: str, left: str, right: str) -> str:
    if name.startswith(left):
        return right + name[len(left) :]
    if name.startswith(right):
        return left + name[len(right) :]
    return name


@pytest.mark.parametrize(
    ("names", "flip", "left", "right"),
    [
        (labels.COCO_KEYPOINTS, labels.COCO_FLIP_INDICES, "left_", "right_"),
        (labels.MPII_KEYPOINTS, labels.MPII_FLIP_INDICES, "l_", "r_"),
    ],
)
def test_flip_indices(names: Sequence[str], flip: Sequence[int], left: str, right: str) -> None:
    assert sorted(flip) == list(range(len(names)))
    for i, j in enumerate(flip):
        assert flip[j] == i  # an involution
        assert names[j] == _swap_side(names[i], left, right)


@pytest.mark.parametrize(
    ("names", "skeleton"),
    [
        (labels.COCO_KEYPOINTS, labels.COCO_SKELETON),
        (labels.MPII_KEYPOINTS, labels.MPII_SKELETON),
    ],
)
def test_skeleton_in_range(names: Sequence[str], skeleton: Sequence[tuple[int, int]]) -> None:
    assert len(set(skeleton)) == len(skeleton)
    for a, b in skeleton:
        assert 0 <= a < len(names)
        assert 0 <= b < len(names)
        assert a != b


def test_mpii_skeleton_matches_mmpose_links() -> None:
    # mmpose configs/_base_/datasets/mpii.py skeleton_info, by name.
    links = [
        ("right_ankle", "right_knee"),
        ("right_knee", "right_hip"),
        ("right_hip", "pelvis"),
        ("pelvis", "left_hip"),
        ("left_hip", "left_knee"),
        ("left_knee", "left_ankle"),
        ("pelvis", "thorax"),
        ("thorax", "upper_neck"),
        ("upper_neck", "head_top"),
        ("upper_neck", "right_shoulder"),
        ("right_shoulder", "right_elbow"),
        ("right_elbow", "right_wrist"),
        ("upper_neck", "left_shoulder"),
        ("left_shoulder", "left_elbow"),
        ("left_elbow", "left_wrist"),
    ]

    def short(name: str) -> str:
        return name.replace("right_", "r_").replace("left_", "l_")

    index = {n: i for i, n in enumerate(labels.MPII_KEYPOINTS)}
    assert tuple((index[short(a)], index[short(b)]) for a, b in links) == labels.MPII_SKELETON


def test_coco_sigmas_symmetric() -> None:
    assert all(0 < s < 1 for s in labels.COCO_SIGMAS)
    for i, j in enumerate(labels.COCO_FLIP_INDICES):
        assert labels.COCO_SIGMAS[i] == labels.COCO_SIGMAS[j]
