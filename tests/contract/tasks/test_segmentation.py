"""Segmentation pre- and post-processing, without HTTP."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from contract.imaging import DecodedImage, encode_png
from contract.tasks import segmentation
from tests.app.conftest import read_card, scene


def test_fit_size_keeps_the_aspect_ratio_inside_the_canvas() -> None:
    assert segmentation.fit_size((2048, 1024), (1024, 512)) == (1024, 512)
    assert segmentation.fit_size((1000, 1000), (1024, 512)) == (512, 512)
    assert segmentation.fit_size((100, 50), (1024, 512)) == (1024, 512)
    assert segmentation.fit_size((300, 100), (1024, 512)) == (1024, 341)


def test_preprocess_pads_bottom_and_right_with_the_pad_value(
    model_repository: Path, names: dict[str, str]
) -> None:
    card, _ = read_card(model_repository, names["segmentation"])
    image = Image.fromarray(scene(400, 400))
    canvas = np.full((card.input.height, card.input.width, 3), 77, np.uint8)
    fitted = segmentation.preprocess(DecodedImage(image, image.size), card, canvas)
    assert fitted == (card.input.height, card.input.height)  # a square fills the canvas height
    assert (canvas[:, fitted[0] :] == card.preprocess.pad_value).all()
    assert canvas[: fitted[1], : fitted[0]].std() > 10


def test_mask_loses_its_padding_before_it_is_scaled_to_the_image() -> None:
    mask = np.full((512, 1024), 9, np.uint8)
    mask[:256, :512] = 3  # the image occupies the top-left quarter; the rest is padding
    full = segmentation.mask_to_image_size(mask, (512, 256), (1000, 500))
    assert full.shape == (500, 1000)
    assert (full == 3).all()


def test_mask_png_pixel_values_are_class_indices(model_repository: Path, names: dict[str, str]) -> None:
    card, _ = read_card(model_repository, names["segmentation"])
    mask = (np.arange(60 * 40).reshape(40, 60) % len(card.labels)).astype(np.uint8)
    decoded = Image.open(io.BytesIO(encode_png(segmentation.mask_image(mask, card))))
    assert decoded.mode == "P"
    assert np.array_equal(np.asarray(decoded), mask)
    assert decoded.getpalette()[:3] == list(card.palette[0]) if card.palette else True


def test_classes_present_are_largest_first_with_fractions_summing_to_one(
    model_repository: Path, names: dict[str, str]
) -> None:
    card, _ = read_card(model_repository, names["segmentation"])
    mask = np.zeros((10, 10), np.uint8)
    mask[:3] = 2
    mask[3:4] = 5
    classes = segmentation.classes_present(mask, card)
    assert [c.index for c in classes] == [0, 2, 5]
    assert [c.fraction for c in classes] == [0.6, 0.3, 0.1]
    assert classes[1].label == card.labels[2]


@pytest.mark.parametrize(
    ("mask_wh", "size_wh"),
    [((910, 512), (1920, 1080)), ((683, 512), (640, 480)), ((512, 512), (1000, 1000)),
     ((1024, 341), (300, 100)), ((37, 23), (37, 23)), ((37, 23), (1000, 3)), ((5, 7), (2, 2000))],
)  # fmt: skip
def test_counts_of_the_unscaled_mask_equal_those_of_the_scaled_one(
    mask_wh: tuple[int, int], size_wh: tuple[int, int]
) -> None:
    rng = np.random.default_rng(sum(mask_wh) + sum(size_wh))
    mask = rng.integers(0, 19, (mask_wh[1], mask_wh[0])).astype(np.uint8)
    scaled = np.asarray(Image.fromarray(mask).resize(size_wh, Image.Resampling.NEAREST))
    expected = np.bincount(scaled.ravel(), minlength=256)
    assert np.array_equal(segmentation.scaled_class_counts(mask, size_wh), expected)


def test_fractions_from_the_unscaled_mask_equal_those_of_the_scaled_mask(
    model_repository: Path, names: dict[str, str]
) -> None:
    card, _ = read_card(model_repository, names["segmentation"])
    canvas = np.asarray(Image.fromarray(scene(64, 32)[..., 0] % 19).resize((1024, 512)))
    fitted, size = segmentation.fit_size((1920, 1080), (1024, 512)), (1920, 1080)
    full = segmentation.mask_to_image_size(canvas, fitted, size)
    from_small = segmentation.classes_present(segmentation.unpadded(canvas, fitted), card, size)
    assert len(from_small) > 3
    assert from_small == segmentation.classes_present(full, card)
