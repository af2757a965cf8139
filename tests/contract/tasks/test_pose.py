"""Pose boxes, crops and keypoint decoding, without HTTP."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from contract.errors import InvalidBoxes
from contract.tasks import pose
from tests.app.conftest import read_card


def test_boxes_parse_as_a_json_list_of_xyxy() -> None:
    boxes = pose.parse_boxes("[[1, 2, 30, 40.5], [0, 0, 5, 5]]", max_boxes=10)
    assert boxes.tolist() == [[1, 2, 30, 40.5], [0, 0, 5, 5]]


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        '{"x1": 1}',
        "[[1, 2, 3]]",
        "[1, 2, 3, 4]",
        '[[1, 2, "3", 4]]',
        "[[1, 2, NaN, 4]]",
        "[[1, 2, 1e999, 4]]",
        "[[1, 2, " + "9" * 400 + ", 4]]",
        "[[true, 2, 3, 4]]",
        "[[10, 2, 10, 4]]",
        "[[1, 8, 3, 4]]",
        "[" + ",".join(["[0, 0, 1, 1]"] * 11) + "]",
        "[" * 100_000,
    ],
    ids=[
        "not-json", "object", "three-numbers", "flat", "string", "nan", "inf", "huge-int", "bool",
        "zero-width", "negative-height", "too-many", "deep-nesting",
    ],
)  # fmt: skip
def test_bad_boxes_are_invalid(text: str) -> None:
    with pytest.raises(InvalidBoxes):
        pose.parse_boxes(text, max_boxes=10)


def test_a_box_entirely_outside_the_image_is_invalid() -> None:
    pose.check_boxes_in_image(np.array([[-10.0, -10, 5, 5]]), (100, 80))  # partly inside: fine
    with pytest.raises(InvalidBoxes):
        pose.check_boxes_in_image(np.array([[100.0, 10, 150, 50]]), (100, 80))


def test_crop_covers_the_box_and_mirrors_for_the_flip_test(
    model_repository: Path, names: dict[str, str]
) -> None:
    card, _ = read_card(model_repository, names["pose"])
    image = np.zeros((400, 300, 3), np.uint8)
    image[100:300, 100:200] = (255, 0, 0)  # a red person
    image[100:300, 100:110] = (0, 0, 255)  # blue on their right-hand side of the picture's left
    out = np.zeros((2, card.input.height, card.input.width, 3), np.uint8)
    crops = pose.crop_people(image, np.array([[100.0, 100, 200, 300]]), card, out, flip=True)
    assert crops.centers.tolist() == [[150.0, 200.0]]
    h, w = card.input.height, card.input.width
    assert tuple(out[0, h // 2, w // 2]) == (255, 0, 0)
    assert np.array_equal(out[1], out[0, :, ::-1])


def test_heatmap_peak_at_the_centre_maps_to_the_box_centre(
    model_repository: Path, names: dict[str, str]
) -> None:
    card, _ = read_card(model_repository, names["pose"])
    k, hh, hw = card.outputs[0].shape[1:]
    yy, xx = np.mgrid[0:hh, 0:hw]
    peak = np.exp(-((xx - hw // 2) ** 2 + (yy - hh // 2) ** 2) / 8.0).astype(np.float32)
    heatmaps = np.repeat(peak[None, None], k, axis=1)
    boxes = np.array([[100.0, 50, 196, 306]])
    out = np.zeros((1, card.input.height, card.input.width, 3), np.uint8)
    crops = pose.crop_people(np.zeros((400, 400, 3), np.uint8), boxes, card, out, flip=False)
    keypoints, scores = pose.decode_people(heatmaps, crops, card, flip=False)
    expected_x = 148 + (hw // 2 * card.input.width / hw / card.input.width - 0.5) * crops.scales[0, 0]
    expected_y = 178 + (hh // 2 * card.input.height / hh / card.input.height - 0.5) * crops.scales[0, 1]
    assert np.allclose(keypoints[0], [expected_x, expected_y])
    assert np.allclose(scores, 1.0)
    people = pose.people(boxes, keypoints, scores, card)
    assert people[0].score == pytest.approx(1.0)
    assert [kp.name for kp in people[0].keypoints] == card.labels


def test_draft_size_reduces_only_as_far_as_the_smallest_crop_keeps_the_input_width(
    model_repository: Path, names: dict[str, str]
) -> None:
    card, _ = read_card(model_repository, names["pose"])
    assert card.input.width == 192
    whole = pose.whole_image_box((1920, 1080))  # a crop 2400 px wide: 300 at 1/8
    assert pose.draft_size((1920, 1080), whole, card) == (240, 135)
    # 1.25 × 320 = 400 px wide: 200 at 1/2, 100 at 1/4; the smallest box decides.
    boxes = np.vstack([whole, [[100.0, 100, 420, 500]]])
    assert pose.draft_size((1920, 1080), boxes, card) == (960, 540)
    assert pose.draft_size((1920, 1080), np.array([[0.0, 0, 150, 200]]), card) == (1920, 1080)


def test_crops_of_a_reduced_image_line_up_with_crops_of_the_full_image(
    model_repository: Path, names: dict[str, str]
) -> None:
    """A 1/8 image (each pixel the mean of an 8×8 block, as a JPEG DCT-scaled decode) gives the
    crop the full image gives: its edges within 0.25 crop pixel (0.6–0.75 without the half-block
    shift of the pixel centres)."""
    card, _ = read_card(model_repository, names["pose"])
    height, width, reduction = 1200, 1600, 8
    yy, xx = np.mgrid[0:height, 0:width]
    full = np.zeros((height, width, 3), np.uint8)
    full[..., 0] = np.where(xx >= 777, 255, 0)  # a vertical edge in red
    full[..., 1] = np.where(yy >= 555, 255, 0)  # a horizontal one in green
    blocks = full.reshape(height // reduction, reduction, width // reduction, reduction, 3)
    reduced = blocks.mean(axis=(1, 3)).round().astype(np.uint8)
    boxes = np.array([[100.0, 50, 1500, 1150]])
    assert pose.draft_size((width, height), boxes, card) == (width // reduction, height // reduction)
    crops = np.zeros((2, card.input.height, card.input.width, 3), np.uint8)
    from_full = pose.crop_people(full, boxes, card, crops[:1], flip=False)
    from_reduced = pose.crop_people(reduced, boxes, card, crops[1:], flip=False, reduction=reduction)
    assert np.array_equal(from_full.centers, from_reduced.centers)
    assert np.array_equal(from_full.scales, from_reduced.scales)

    def edges(crop: np.ndarray) -> tuple[float, float]:
        """Where the red edge crosses a row and the green one a column, in crop pixels."""
        red, green = crop[..., 0] / 255.0, crop[..., 1] / 255.0
        return crop.shape[1] - red.sum(axis=1).mean(), crop.shape[0] - green.sum(axis=0).mean()

    np.testing.assert_allclose(edges(crops[1]), edges(crops[0]), atol=0.25)
