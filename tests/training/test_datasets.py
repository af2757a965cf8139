from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from contract.pose_geometry import decode_heatmaps, get_warp_matrix, keypoints_to_image, transform_points
from contract.tasks.classification import resize_short_size
from training.data.classification import ImageFolderDataset, RandomResizedCrop, ResizeCenterCrop
from training.data.pose import (
    CocoKeypointDataset,
    MpiiDataset,
    PoseAugment,
    collate,
    generate_gaussian_heatmaps,
)
from training.data.segmentation import (
    ADE20KDataset,
    CityscapesDataset,
    PhotoMetricDistortion,
    SegTestTransform,
    SegTrainTransform,
    rescale_size,
)
from training.data.synthetic import CLASSIFICATION_SHAPES, generate

COCO_FLIP = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)
MPII_FLIP = (5, 4, 3, 2, 1, 0, 6, 7, 8, 9, 15, 14, 13, 12, 11, 10)
POSE_INPUT, POSE_HEATMAP = (96, 128), (24, 32)  # stride 4, as 192 × 256 -> 48 × 64
NO_AUGMENT = PoseAugment(flip_prob=0, half_body_prob=0, shift_prob=0, scale_prob=0, rotate_prob=0)


@pytest.fixture(autouse=True)
def seeded() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("datasets")
    generate(
        "classification",
        base / "cls",
        n_train=2 * len(CLASSIFICATION_SHAPES),
        n_val=12,
        seed=0,
        size=(64, 160),
    )
    generate("cityscapes", base / "cityscapes", n_train=4, n_val=2, seed=0, size=(128, 64))
    generate("ade20k", base / "ade", n_train=3, n_val=2, seed=0, size=(96, 72))
    generate("coco", base / "coco", n_train=6, n_val=4, seed=0, size=(160, 128))
    generate("mpii", base / "mpii", n_train=4, n_val=4, seed=0, size=(128, 128))
    return base


# --- classification ---------------------------------------------------------------------------


def test_image_folder_reads_back_counts_and_sorted_classes(data: Path) -> None:
    dataset = ImageFolderDataset(data / "cls", "train", RandomResizedCrop(48))
    classes = len(CLASSIFICATION_SHAPES)
    assert len(dataset) == 2 * classes and dataset.classes == sorted(dataset.classes)
    assert len(dataset.classes) == classes
    assert sorted({label for _, label in dataset.samples}) == list(range(classes))
    image, label = dataset[5]
    assert image.shape == (48, 48, 3) and image.dtype == np.uint8 and isinstance(label, int)


def test_test_transform_resizes_the_short_side_then_centre_crops(data: Path) -> None:
    assert ResizeCenterCrop(224).short_side == 256 and ResizeCenterCrop(64).short_side == 73
    assert resize_short_size((500, 375), 256) == (341, 256)  # the service's, which evaluation uses
    assert resize_short_size((375, 500), 256) == (256, 341)
    dataset = ImageFolderDataset(data / "cls", "val", ResizeCenterCrop(56))
    shapes = {dataset[i][0].shape for i in range(len(dataset))}
    assert shapes == {(56, 56, 3)}


def test_test_transform_keeps_the_image_centre(tmp_path: Path) -> None:
    image = np.zeros((100, 300, 3), dtype=np.uint8)
    image[40:60, 140:160] = 255  # a square in the middle of a wide image
    Image.fromarray(image).save(tmp_path / "wide.png")
    with Image.open(tmp_path / "wide.png") as pil:
        out = ResizeCenterCrop(64, resize_short=64)(pil)
    ys, xs = np.nonzero(out[..., 0] > 127)
    assert out.shape == (64, 64, 3) and abs(xs.mean() - 31.5) < 1 and abs(ys.mean() - 31.5) < 1


def test_random_resized_crop_boxes_stay_inside_with_scale_and_ratio_in_range() -> None:
    transform = RandomResizedCrop(32)
    rng = np.random.default_rng(0)
    for width, height in [(200, 150), (90, 300), (64, 64)]:
        for _ in range(200):
            left, top, crop_w, crop_h = transform.crop_box(width, height, rng)
            assert left >= 0 and top >= 0 and left + crop_w <= width and top + crop_h <= height
            area = crop_w * crop_h / (width * height)
            assert 0.07 <= area <= 1.0
    # No draw fits a 10 × 1000 image: fall back to a centred crop at the narrowest ratio, 3:4.
    assert transform.crop_box(10, 1000, np.random.default_rng(0)) == (0, 493, 10, 13)


def test_train_transform_flips_about_half_the_time(tmp_path: Path) -> None:
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    image[:, :32] = 255  # bright left half
    Image.fromarray(image).save(tmp_path / "half.png")
    transform = RandomResizedCrop(16, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    rng = np.random.default_rng(0)
    left_bright = []
    for _ in range(100):
        with Image.open(tmp_path / "half.png") as pil:
            out = transform(pil, rng)
        left_bright.append(out[:, 0, 0].mean() > 127)
    assert 30 < sum(left_bright) < 70


def test_grayscale_jpeg_is_read_as_rgb(tmp_path: Path) -> None:
    folder = tmp_path / "train" / "gray"
    folder.mkdir(parents=True)
    Image.fromarray(np.full((120, 90), 128, dtype=np.uint8)).save(folder / "a.jpg")
    dataset = ImageFolderDataset(tmp_path, "train", ResizeCenterCrop(32))
    image, label = dataset[0]
    assert image.shape == (32, 32, 3) and label == 0


# --- segmentation -----------------------------------------------------------------------------


def test_rescale_size_matches_mmcv_keep_ratio() -> None:
    assert rescale_size((2048, 1024), (2048, 1024)) == (2048, 1024)
    assert rescale_size((500, 375), (2048, 512)) == (683, 512)
    assert rescale_size((1024, 512), (4096, 2048)) == (4096, 2048)


def test_cityscapes_train_samples_have_the_crop_size_and_train_ids(data: Path) -> None:
    transform = SegTrainTransform(scale_wh=(128, 64), crop_size_hw=(48, 96))
    dataset = CityscapesDataset(data / "cityscapes", "train", transform)
    assert len(dataset) == 4
    values: set[int] = set()
    for i in range(len(dataset)):
        image, label = dataset[i]
        assert image.shape == (48, 96, 3) and image.dtype == np.uint8
        assert label.shape == (48, 96) and label.dtype == np.int64
        values |= set(np.unique(label).tolist())
    assert values <= set(range(19)) | {255}


def test_cityscapes_test_samples_resize_the_image_and_keep_the_label(data: Path) -> None:
    dataset = CityscapesDataset(data / "cityscapes", "val", SegTestTransform(scale_wh=(64, 32)))
    image, label = dataset[0]
    assert image.shape == (32, 64, 3) and label.shape == (64, 128) and label.dtype == np.int64
    raw = np.asarray(Image.open(dataset.pairs[0][1]))
    np.testing.assert_array_equal(label, raw)
    assert isinstance(CityscapesDataset(data / "cityscapes", "val").transform, SegTestTransform)


def test_ade20k_reduces_the_zero_label(data: Path) -> None:
    dataset = ADE20KDataset(data / "ade", "val", SegTestTransform(scale_wh=(96, 72)))
    assert len(dataset) == 2
    for i in range(len(dataset)):
        raw = np.asarray(Image.open(dataset.pairs[i][1])).astype(np.int64)
        label = dataset[i][1]
        np.testing.assert_array_equal(label[raw == 0], 255)
        np.testing.assert_array_equal(label[raw > 0], raw[raw > 0] - 1)
    assert len(ADE20KDataset(data / "ade" / "ADEChallengeData2016", "train")) == 3


def test_train_transform_pads_small_images_with_zero_and_ignore(tmp_path: Path) -> None:
    image = Image.fromarray(np.full((30, 40, 3), 200, dtype=np.uint8))
    label = np.ones((30, 40), dtype=np.uint8)
    transform = SegTrainTransform(
        scale_wh=(40, 30), crop_size_hw=(64, 64), ratio_range=(1.0, 1.0), photometric=None
    )
    out, out_label = transform(image, label, np.random.default_rng(0))
    assert out.shape == (64, 64, 3) and out_label.shape == (64, 64)
    assert (out[30:] == 0).all() and (out_label[30:] == 255).all() and (out_label[:30, :40] == 1).all()


def test_random_crop_respects_cat_max_ratio_when_it_can() -> None:
    label = np.zeros((64, 256), dtype=np.uint8)
    label[:, 192:] = 1  # only crops with left in 145..175 hold < 75 % of one class
    label[:, :8] = 255

    def satisfied(box: tuple[int, int, int, int]) -> bool:
        top, bottom, left, right = box
        classes, counts = np.unique(label[top:bottom, left:right], return_counts=True)
        counts = counts[classes != 255]
        return len(counts) > 1 and counts.max() / counts.sum() < 0.75

    rng = np.random.default_rng(0)
    with_ratio = SegTrainTransform((256, 64), (64, 64), cat_max_ratio=0.75)
    without = SegTrainTransform((256, 64), (64, 64), cat_max_ratio=1.0)
    hits_with = np.mean([satisfied(with_ratio.crop_box(label, rng)) for _ in range(300)])
    hits_without = np.mean([satisfied(without.crop_box(label, rng)) for _ in range(300)])
    assert hits_without < 0.3 and hits_with > 0.7  # ~0.16 vs ~0.85 expected


def test_random_crop_of_a_single_class_label_still_returns_a_crop() -> None:
    label = np.full((40, 50), 3, dtype=np.uint8)
    top, bottom, left, right = SegTrainTransform((50, 40), (20, 30)).crop_box(label, np.random.default_rng(0))
    assert bottom - top == 20 and right - left == 30 and right <= 50 and bottom <= 40


def test_photometric_distortion_keeps_shape_and_changes_the_image() -> None:
    image = np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    distort = PhotoMetricDistortion()
    rng = np.random.default_rng(1)
    outputs = [distort(image, rng) for _ in range(8)]
    assert all(o.shape == image.shape and o.dtype == np.uint8 for o in outputs)
    assert any(not np.array_equal(o, image) for o in outputs)


# --- pose -------------------------------------------------------------------------------------


def coco(
    data: Path,
    split: str = "val",
    train: bool = False,
    augment: PoseAugment | None = None,
    bbox_file: Path | None = None,
    bbox_score_thr: float = 0.0,
) -> CocoKeypointDataset:
    return CocoKeypointDataset(
        data / "coco",
        split,
        POSE_INPUT,
        POSE_HEATMAP,
        2.0,
        COCO_FLIP,
        train,
        bbox_file=bbox_file,
        bbox_score_thr=bbox_score_thr,
        augment=augment,
    )


def test_coco_dataset_has_one_sample_per_labelled_non_crowd_person(data: Path) -> None:
    root = data / "coco"
    document = json.loads((root / "annotations" / "person_keypoints_val2017.json").read_text())
    expected = sum(1 for a in document["annotations"] if a["num_keypoints"] > 0)
    extra = dict(document)
    first = document["annotations"][0]
    extra["annotations"] = [
        *document["annotations"],
        {**first, "id": 900, "iscrowd": 1},
        {**first, "id": 901, "num_keypoints": 0, "keypoints": [0] * 51},
    ]
    (root / "annotations" / "person_keypoints_extra2017.json").write_text(json.dumps(extra))
    if not (root / "extra2017").exists():
        (root / "extra2017").symlink_to(root / "val2017")
    assert len(coco(data)) == expected
    assert len(coco(data, "extra")) == expected


def test_heatmap_peaks_land_on_the_keypoints(data: Path) -> None:
    dataset = coco(data)
    stride = POSE_INPUT[0] / POSE_HEATMAP[0]
    checked = 0
    for i in range(len(dataset)):
        sample, record = dataset[i], dataset.records[i]
        assert sample["image"].shape == (128, 96, 3) and sample["image"].dtype == np.uint8
        assert sample["heatmaps"].shape == (17, 32, 24) and sample["weights"].shape == (17,)
        matrix = get_warp_matrix(sample["center"], sample["scale"], 0.0, POSE_INPUT)
        crop_keypoints = transform_points(record.keypoints, matrix)
        for k in np.flatnonzero(sample["weights"]):
            x, y = (crop_keypoints[k] / stride + 0.5).astype(int)
            if 0 <= x < POSE_HEATMAP[0] and 0 <= y < POSE_HEATMAP[1]:
                assert sample["heatmaps"][k, y, x] == pytest.approx(1.0)
                checked += 1
        assert (sample["weights"][record.visible == 0] == 0).all()
    assert checked > 20


def test_decoded_targets_map_back_to_the_image_keypoints(data: Path) -> None:
    dataset = coco(data)
    for i in range(len(dataset)):
        sample, record = dataset[i], dataset.records[i]
        keypoints, scores = decode_heatmaps(sample["heatmaps"])
        in_image = keypoints_to_image(keypoints * 4, sample["center"], sample["scale"], POSE_INPUT)
        pixel = sample["scale"][0] / POSE_HEATMAP[0]  # one heatmap pixel, in image pixels
        confident = (sample["weights"] > 0) & (scores > 0.9)
        error = np.linalg.norm(in_image - record.keypoints, axis=1)[confident]
        assert (error <= pixel).all()


def test_flip_mirrors_the_crop_and_swaps_left_and_right(data: Path) -> None:
    flip_only = PoseAugment(flip_prob=1.0, half_body_prob=0, shift_prob=0, scale_prob=0, rotate_prob=0)
    plain, flipped = coco(data, train=True, augment=NO_AUGMENT), coco(data, train=True, augment=flip_only)
    for i in range(3):
        a, b = plain[i], flipped[i]
        np.testing.assert_array_equal(b["image"], a["image"][:, ::-1])
        matrix = get_warp_matrix(a["center"], a["scale"], 0.0, POSE_INPUT)
        crop = transform_points(plain.records[i].keypoints, matrix)
        for left, right in [(5, 6), (9, 10), (15, 16)]:
            if a["weights"][right] == 0:
                continue
            mirrored_x = POSE_INPUT[0] - 1 - crop[right, 0]
            x, y = (np.array([mirrored_x, crop[right, 1]]) / 4 + 0.5).astype(int)
            if 0 <= x < POSE_HEATMAP[0] and 0 <= y < POSE_HEATMAP[1]:
                # The right keypoint, mirrored, is now the left one.
                assert b["heatmaps"][left, y, x] == pytest.approx(1.0) and b["weights"][left] == 1


def test_gaussian_targets_peak_at_the_rounded_keypoint_and_zero_weight_outside() -> None:
    keypoints = np.array([[10.4, 7.6], [-10.0, -10.0], [30.0, 5.0], [-2.0, 3.0], [5.0, 5.0]])
    visible = np.array([1, 1, 1, 1, 0])
    heatmaps, weights = generate_gaussian_heatmaps((24, 32), keypoints, visible, sigma=2.0)
    assert heatmaps.shape == (5, 32, 24) and heatmaps.dtype == np.float32
    assert heatmaps[0, 8, 10] == 1.0 and heatmaps[0].max() == 1.0
    assert heatmaps[0, 8, 14] == pytest.approx(np.exp(-16 / 8))  # 2σ away
    assert heatmaps[0, 8, 17] == 0.0  # beyond the 3σ square
    # Wholly outside -> weight 0; the Gaussian of (-2, 3) still reaches the map -> weight 1.
    np.testing.assert_array_equal(weights, [1, 0, 0, 1, 0])
    assert heatmaps[1].max() == 0 and heatmaps[4].max() == 0 and heatmaps[3, 3, 0] > 0


def test_train_augmentation_stays_within_mmpose_ranges(data: Path) -> None:
    dataset = coco(data, "train", train=True)
    rng = np.random.default_rng(0)
    center, scale = np.array([50.0, 60.0]), np.array([40.0, 80.0])
    draws = [dataset.random_box_transform(center, scale, rng) for _ in range(500)]
    shifts = np.array([(c - center) / scale for c, _, _ in draws])
    factors = np.array([s[0] / scale[0] for _, s, _ in draws])
    rotations = np.array([r for _, _, r in draws])
    assert np.abs(shifts).max() <= 0.16 and 0.15 < (np.abs(shifts).sum(axis=1) > 0).mean() < 0.45
    assert factors.min() >= 0.5 and factors.max() <= 1.5
    assert np.abs(rotations).max() <= 80 and 0.45 < (rotations != 0).mean() < 0.75
    sample = dataset[0]
    assert sample["image"].shape == (128, 96, 3) and sample["heatmaps"].shape == (17, 32, 24)


def test_half_body_crops_around_the_upper_or_the_lower_body(data: Path) -> None:
    always = PoseAugment(half_body_prob=1.0)
    dataset = coco(data, "train", train=True, augment=always)
    keypoints = np.arange(34, dtype=np.float64).reshape(17, 2) * [3.0, 5.0]
    visible = np.ones(17)
    rng = np.random.default_rng(0)
    upper_center = keypoints[:11].mean(axis=0)
    lower_center = keypoints[11:].mean(axis=0)
    results = [dataset.half_body(keypoints, visible, rng) for _ in range(50)]
    centers = [tuple(r[0]) for r in results if r is not None]
    assert len(centers) == 50
    assert set(centers) == {tuple(upper_center), tuple(lower_center)}
    few = np.zeros(17)
    few[:8] = 1  # 8 visible keypoints are not enough (mmpose needs more than 8)
    assert dataset.half_body(keypoints, few, rng) is None


def test_detection_boxes_above_the_threshold_become_samples(data: Path, tmp_path: Path) -> None:
    detections = [
        {"image_id": 1, "category_id": 1, "bbox": [10, 12, 50, 90], "score": 0.9},
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 30, 30], "score": 0.1},
        {"image_id": 2, "category_id": 2, "bbox": [5, 5, 40, 40], "score": 0.95},
    ]
    path = tmp_path / "detections.json"
    path.write_text(json.dumps(detections))
    dataset = coco(data, bbox_file=path, bbox_score_thr=0.3)
    assert len(dataset) == 1
    sample = dataset[0]
    assert sample["box_score"] == pytest.approx(0.9) and sample["ann_id"] == -1 and sample["image_id"] == 1
    np.testing.assert_allclose(sample["center"], [35, 57])
    # 50 × 90 padded to 62.5 × 112.5, then widened to the 3:4 input: 112.5 × 0.75 = 84.375.
    np.testing.assert_allclose(sample["scale"], [84.375, 112.5])
    assert sample["weights"].sum() == 0


def test_collate_stacks_samples_into_tensors(data: Path) -> None:
    loader = DataLoader(coco(data, "train", train=True), batch_size=3, collate_fn=collate)
    batch = next(iter(loader))
    assert batch["image"].shape == (3, 128, 96, 3) and batch["image"].dtype == torch.uint8
    assert batch["heatmaps"].shape == (3, 17, 32, 24) and batch["heatmaps"].dtype == torch.float32
    assert batch["weights"].shape == (3, 17) and batch["center"].shape == (3, 2)
    assert batch["image_id"].dtype == torch.int64 and batch["box_score"].shape == (3,)


def test_mpii_dataset_converts_matlab_center_scale_and_joints(data: Path) -> None:
    root = data / "mpii"
    entries = json.loads((root / "annotations" / "mpii_val.json").read_text())
    dataset = MpiiDataset(root, "val", (64, 64), (16, 16), 2.0, MPII_FLIP, train=False)
    assert len(dataset) == len(entries)
    entry, record = entries[0], dataset.records[0]
    expected_center = np.array(entry["center"]) + np.array([0, 15 * entry["scale"]]) - 1
    np.testing.assert_allclose(record.center, expected_center)
    np.testing.assert_allclose(record.scale, [entry["scale"] * 200 * 1.25] * 2)
    visible = np.array(entry["joints_vis"]) > 0
    np.testing.assert_allclose(record.keypoints[visible], np.array(entry["joints"])[visible] - 1)
    truth = dataset.ground_truth()
    boxes = json.loads((root / "annotations" / "mpii_val_headboxes.json").read_text())[entry["image"]][0]
    assert truth.head_sizes[0] == pytest.approx(0.6 * np.hypot(boxes[2] - boxes[0], boxes[3] - boxes[1]))
    assert truth.keypoints.shape == (len(entries), 16, 2) and truth.visible.shape == (len(entries), 16)
    sample = dataset[0]
    assert sample["image"].shape == (64, 64, 3) and sample["heatmaps"].shape == (16, 16, 16)


def test_mpii_head_boxes_accept_one_box_per_image(tmp_path: Path) -> None:
    (tmp_path / "annotations").mkdir()
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((50, 50, 3), dtype=np.uint8)).save(tmp_path / "images" / "000000001.jpg")
    entry = {"image": "000000001.jpg", "center": [26, 26], "scale": 0.2, "joints": [[10, 10]] * 16}
    entry["joints_vis"] = [1] * 16
    (tmp_path / "annotations" / "mpii_val.json").write_text(json.dumps([entry]))
    (tmp_path / "annotations" / "mpii_val_headboxes.json").write_text(
        json.dumps({"000000001.jpg": [0, 0, 6, 8]})
    )
    dataset = MpiiDataset(tmp_path, "val", (32, 32), (8, 8), 1.0, MPII_FLIP, train=False)
    np.testing.assert_allclose(dataset.ground_truth().head_sizes, [6.0])
    assert dataset[0]["image_id"] == 1
