from __future__ import annotations

import numpy as np
import pytest

from contract.pose_geometry import (
    box_to_center_scale,
    decode_heatmaps,
    flip_heatmaps_back,
    get_warp_matrix,
    keypoints_to_image,
    transform_points,
    warp_image,
)

COCO_FLIP = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)
INPUT_WH = (192, 256)


def gaussian_map(height: int, width: int, x: float, y: float, sigma: float = 2.0) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width]
    return np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2)).astype(np.float32)


def test_box_to_center_scale_pads_and_widens_the_short_side() -> None:
    center, scale = box_to_center_scale([10, 20, 50, 220], aspect_ratio=0.75, padding=1.25)
    np.testing.assert_allclose(center, [30, 120])
    # 40 × 200 padded to 50 × 250; too narrow for 3:4, so the width grows to 250 × 0.75.
    np.testing.assert_allclose(scale, [187.5, 250])

    _, wide = box_to_center_scale([0, 0, 200, 100], aspect_ratio=0.75, padding=1.0)
    np.testing.assert_allclose(wide, [200, 200 / 0.75])

    centers, scales = box_to_center_scale(np.array([[10, 20, 50, 220], [0, 0, 200, 100]]), 0.75, 1.0)
    np.testing.assert_allclose(centers, [[30, 120], [100, 50]])
    np.testing.assert_allclose(scales, [[150.0, 200.0], [200.0, 200 / 0.75]])


@pytest.mark.parametrize("rotation", [0.0, 30.0, -75.0])
def test_warp_matrix_maps_box_centre_to_crop_centre(rotation: float) -> None:
    center, scale = box_to_center_scale([40, 30, 140, 250], INPUT_WH[0] / INPUT_WH[1])
    matrix = get_warp_matrix(center, scale, rotation, INPUT_WH)
    np.testing.assert_allclose(transform_points(center, matrix), [96, 128], atol=1e-9)
    # Unrotated, the crop spans exactly `scale` pixels: the box's left edge maps to x = 0.
    if rotation == 0.0:
        left_middle = center - np.array([scale[0] / 2, 0])
        np.testing.assert_allclose(transform_points(left_middle, matrix), [0, 128], atol=1e-9)


def test_warp_matrix_shift_moves_the_centre_by_a_fraction_of_the_scale() -> None:
    center, scale = np.array([100.0, 100.0]), np.array([60.0, 80.0])
    matrix = get_warp_matrix(center, scale, 0.0, (60, 80), shift=(0.1, -0.25))
    np.testing.assert_allclose(transform_points([106.0, 80.0], matrix), [30, 40], atol=1e-9)


@pytest.mark.parametrize("rotation", [0.0, 47.0])
def test_point_round_trip_image_to_crop_to_image_is_identity(rotation: float) -> None:
    center, scale = box_to_center_scale([12.5, 7.0, 301.0, 180.0], INPUT_WH[0] / INPUT_WH[1])
    forward = get_warp_matrix(center, scale, rotation, INPUT_WH)
    backward = get_warp_matrix(center, scale, rotation, INPUT_WH, inv=True)
    points = np.random.default_rng(0).uniform(0, 300, size=(50, 2))
    np.testing.assert_allclose(
        transform_points(transform_points(points, forward), backward), points, atol=1e-4
    )
    if rotation == 0.0:  # the service's closed form agrees with the inverse warp
        crop_points = transform_points(points, forward)
        np.testing.assert_allclose(
            keypoints_to_image(crop_points, center, scale, INPUT_WH), points, atol=1e-4
        )


def test_keypoints_to_image_broadcasts_over_a_batch() -> None:
    keypoints = np.zeros((2, 3, 2))
    centers = np.array([[100.0, 100.0], [50.0, 60.0]])
    scales = np.array([[96.0, 128.0], [192.0, 256.0]])
    out = keypoints_to_image(keypoints, centers, scales, INPUT_WH)
    np.testing.assert_allclose(out[:, 0], centers - scales / 2)


def test_warp_image_moves_a_marked_pixel_to_the_crop_centre() -> None:
    image = np.zeros((240, 320, 3), dtype=np.uint8)
    image[119:122, 159:162] = 255  # a 3×3 white square centred on (160, 120)
    center, scale = np.array([160.0, 120.0]), np.array([96.0, 128.0])  # scale = input / 2: zoom × 2
    crop = warp_image(image, get_warp_matrix(center, scale, 0.0, INPUT_WH), INPUT_WH)
    assert crop.shape == (256, 192, 3) and crop.dtype == np.uint8
    ys, xs = np.nonzero(crop[..., 0] > 127)
    assert abs(xs.mean() - 96) <= 0.5 and abs(ys.mean() - 128) <= 0.5


def test_warp_image_is_bilinear_at_pixel_centres_and_fills_outside_with_zero() -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(60, 80, 3), dtype=np.uint8)
    center, scale = box_to_center_scale([10, 5, 60, 50], 0.75)
    matrix = get_warp_matrix(center, scale, 30.0, (48, 64))
    crop = warp_image(image, matrix, (48, 64)).astype(np.float64)

    ys, xs = np.mgrid[0:64, 0:48]
    source = transform_points(
        np.stack([xs, ys], axis=-1), get_warp_matrix(center, scale, 30.0, (48, 64), inv=True)
    )
    x0, y0 = np.floor(source[..., 0]).astype(int), np.floor(source[..., 1]).astype(int)
    fx, fy = (source[..., 0] - x0)[..., None], (source[..., 1] - y0)[..., None]
    inside = (x0 >= 0) & (x0 < 79) & (y0 >= 0) & (y0 < 59)
    x0c, y0c = np.clip(x0, 0, 78), np.clip(y0, 0, 58)
    reference = (
        image[y0c, x0c] * (1 - fx) * (1 - fy)
        + image[y0c, x0c + 1] * fx * (1 - fy)
        + image[y0c + 1, x0c] * (1 - fx) * fy
        + image[y0c + 1, x0c + 1] * fx * fy
    )
    assert inside.sum() > 1000
    assert np.abs(crop - reference)[inside].max() <= 1.0  # Pillow rounds to uint8
    far_outside = (source[..., 0] < -2) | (source[..., 1] < -2)
    assert far_outside.any() and (crop[far_outside] == 0).all()


def test_decode_heatmaps_finds_the_peak_with_the_quarter_pixel_shift() -> None:
    heatmaps = np.stack(
        [
            gaussian_map(64, 48, 20.3, 30.8),  # right and lower neighbours are higher
            gaussian_map(64, 48, 10.7, 40.2),  # argmax (11, 40); left and lower neighbours higher
            gaussian_map(64, 48, 5.0, 6.0) * 0.5,  # exactly on a pixel: no shift, score 0.5
        ]
    )
    keypoints, scores = decode_heatmaps(heatmaps)
    np.testing.assert_allclose(keypoints, [[20.25, 31 - 0.25], [11 - 0.25, 40.25], [5.0, 6.0]])
    np.testing.assert_allclose(scores[2], 0.5)
    assert keypoints.shape == (3, 2) and scores.shape == (3,)


def test_decode_heatmaps_accepts_a_batch_and_marks_empty_maps() -> None:
    batch = np.zeros((2, 2, 16, 12), dtype=np.float32)
    batch[0, 0] = gaussian_map(16, 12, 4.4, 9.0)
    batch[1, 1] = gaussian_map(16, 12, 7.0, 3.6)
    keypoints, scores = decode_heatmaps(batch)
    assert keypoints.shape == (2, 2, 2) and scores.shape == (2, 2)
    np.testing.assert_allclose(keypoints[0, 0], [4.25, 9.0])
    np.testing.assert_allclose(keypoints[1, 1], [7.0, 3.75])
    np.testing.assert_allclose(keypoints[0, 1], [-1, -1])  # all-zero map: no peak
    assert scores[0, 1] == 0


def test_flip_heatmaps_back_mirrors_swaps_channels_and_shifts_right() -> None:
    flipped = np.zeros((17, 8, 10), dtype=np.float32)
    flipped[5, 3, 2] = 1.0  # left shoulder seen at x = 2 in the flipped crop
    restored = flip_heatmaps_back(flipped, COCO_FLIP)
    # Mirrored to x = 10 - 1 - 2 = 7, moved to the right-shoulder channel, shifted to x = 8.
    assert restored[6, 3, 8] == 1.0 and restored.sum() == 1.0
    unshifted = flip_heatmaps_back(flipped, COCO_FLIP, shift=False)
    assert unshifted[6, 3, 7] == 1.0


def test_flip_heatmaps_back_twice_restores_the_maps_up_to_the_shift() -> None:
    maps = np.random.default_rng(2).random((3, 17, 8, 10)).astype(np.float32)
    np.testing.assert_array_equal(
        flip_heatmaps_back(flip_heatmaps_back(maps, COCO_FLIP, False), COCO_FLIP, False), maps
    )
    twice = flip_heatmaps_back(flip_heatmaps_back(maps, COCO_FLIP), COCO_FLIP)
    # Each pass shifts by one pixel and the mirror turns the second shift back; only column 0,
    # which the shift duplicates, differs.
    np.testing.assert_array_equal(twice[..., 1:], maps[..., 1:])
