from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.data.synthetic import CLASSIFICATION_SHAPES, Task, generate

SIZES: dict[str, tuple[int, int]] = {
    "classification": (64, 128),
    "cityscapes": (128, 64),
    "ade20k": (96, 72),
    "coco": (160, 128),
    "mpii": (128, 128),
}


def digest_tree(root: Path) -> dict[str, str]:
    """sha256 of every file under `root`, by relative path."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each task's data set (small), written once for the module."""
    base = tmp_path_factory.mktemp("synthetic")
    counts = {
        "classification": (24, 12),
        "cityscapes": (4, 2),
        "ade20k": (4, 2),
        "coco": (6, 3),
        "mpii": (6, 3),
    }
    return {
        task: generate(task, base / task, n_train=n_train, n_val=n_val, seed=3, size=SIZES[task])  # type: ignore[arg-type]
        for task, (n_train, n_val) in counts.items()
    }


@pytest.mark.parametrize("task", ["classification", "cityscapes", "ade20k", "coco", "mpii"])
def test_same_seed_writes_identical_bytes_and_another_seed_does_not(task: Task, tmp_path: Path) -> None:
    first = digest_tree(generate(task, tmp_path / "a", n_train=3, n_val=1, seed=7, size=SIZES[task]))
    second = digest_tree(generate(task, tmp_path / "b", n_train=3, n_val=1, seed=7, size=SIZES[task]))
    other = digest_tree(generate(task, tmp_path / "c", n_train=3, n_val=1, seed=8, size=SIZES[task]))
    assert first and first == second
    assert first.keys() == other.keys() and first != other


def test_counts_do_not_change_the_other_images(tmp_path: Path) -> None:
    few = digest_tree(generate("cityscapes", tmp_path / "few", n_train=2, n_val=1, seed=1, size=(64, 32)))
    more = digest_tree(generate("cityscapes", tmp_path / "more", n_train=3, n_val=1, seed=1, size=(64, 32)))
    assert all(more[name] == digest for name, digest in few.items())


def test_classification_layout_is_imagenet_style(written: dict[str, Path]) -> None:
    root = written["classification"]
    names = (root / "classes.txt").read_text().split()
    assert names == sorted(CLASSIFICATION_SHAPES) == sorted(p.name for p in (root / "train").iterdir())
    assert len(names) >= 10
    train = sorted((root / "train").rglob("*.JPEG"))
    assert len(train) == 24 and len(list((root / "val").rglob("*.JPEG"))) == 12
    for path in train[:6]:
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.mode == "RGB"
            assert all(64 <= side <= 128 for side in image.size)


def test_cityscapes_layout_and_label_values(written: dict[str, Path]) -> None:
    root = written["cityscapes"]
    images = sorted((root / "leftImg8bit" / "train").glob("*/*_leftImg8bit.png"))
    labels = sorted((root / "gtFine" / "train").glob("*/*_gtFine_labelTrainIds.png"))
    assert len(images) == len(labels) == 4
    assert len(list((root / "leftImg8bit" / "val").glob("*/*.png"))) == 2
    values = set()
    for image_path, label_path in zip(images, labels, strict=True):
        assert label_path.name == image_path.name.replace("_leftImg8bit", "_gtFine_labelTrainIds")
        label = np.asarray(Image.open(label_path))
        assert label.dtype == np.uint8 and label.shape == (64, 128)
        assert Image.open(image_path).size == (128, 64)
        values |= set(np.unique(label).tolist())
    assert 255 in values  # class borders are ignored
    assert values - {255} <= set(range(19)) and len(values - {255}) >= 4


def test_ade20k_layout_stores_class_plus_one_and_zero_for_other(written: dict[str, Path]) -> None:
    base = written["ade20k"] / "ADEChallengeData2016"
    images = sorted((base / "images" / "training").glob("ADE_train_*.jpg"))
    annotations = sorted((base / "annotations" / "training").glob("ADE_train_*.png"))
    assert [p.stem for p in images] == [p.stem for p in annotations] and len(images) == 4
    assert len(list((base / "images" / "validation").glob("ADE_val_*.jpg"))) == 2
    values = set()
    for path in annotations:
        values |= set(np.unique(np.asarray(Image.open(path))).tolist())
    assert values <= set(range(20))  # ids 1..19 (class + 1) and 0 = other
    assert {1, 4} <= values  # the two background classes (wall, floor) always appear


def test_coco_layout_follows_the_person_keypoints_format(written: dict[str, Path]) -> None:
    root = written["coco"]
    document = json.loads((root / "annotations" / "person_keypoints_train2017.json").read_text())
    (category,) = document["categories"]
    assert category["id"] == 1 and len(category["keypoints"]) == 17
    assert min(min(pair) for pair in category["skeleton"]) == 1  # 1-based
    assert len(document["images"]) == 6
    for image in document["images"]:
        assert (root / "train2017" / image["file_name"]).exists()
        assert (image["width"], image["height"]) == (160, 128)
    flags: set[int] = set()
    for ann in document["annotations"]:
        triples = np.asarray(ann["keypoints"]).reshape(17, 3)
        flags |= set(triples[:, 2].astype(int).tolist())
        assert ann["num_keypoints"] == int((triples[:, 2] > 0).sum())
        assert (triples[triples[:, 2] == 0, :2] == 0).all()
        _, _, w, h = ann["bbox"]
        assert w > 0 and h > 0 and ann["area"] == pytest.approx(0.5 * w * h, abs=0.01)
        assert ann["iscrowd"] == 0 and ann["category_id"] == 1
        shown = triples[triples[:, 2] > 0, :2]
        assert ((shown >= 0) & (shown <= [159, 127])).all()
    per_image = np.bincount([a["image_id"] for a in document["annotations"]])
    assert per_image.max() <= 3
    assert 2 in flags


def test_coco_visibility_flags_cover_occluded_and_outside(tmp_path: Path) -> None:
    root = generate("coco", tmp_path, n_train=30, n_val=0, seed=0, size=(160, 128))
    document = json.loads((root / "annotations" / "person_keypoints_train2017.json").read_text())
    flags = np.concatenate([np.asarray(a["keypoints"]).reshape(17, 3)[:, 2] for a in document["annotations"]])
    assert {0, 1, 2} <= set(flags.astype(int).tolist())


def test_mpii_layout_is_mmpose_json_with_head_boxes(written: dict[str, Path]) -> None:
    root = written["mpii"]
    entries = json.loads((root / "annotations" / "mpii_val.json").read_text())
    head_boxes = json.loads((root / "annotations" / "mpii_val_headboxes.json").read_text())
    assert entries and set(head_boxes) == {e["image"] for e in entries}
    for entry in entries:
        assert (root / "images" / entry["image"]).exists()
        assert len(entry["joints"]) == len(entry["joints_vis"]) == 16
        assert entry["scale"] > 0 and len(entry["center"]) == 2
    assert len(json.loads((root / "annotations" / "mpii_train.json").read_text())) >= 6
