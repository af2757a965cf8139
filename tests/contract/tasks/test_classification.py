"""Classification pre- and post-processing, without HTTP."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PIL import Image

from contract.imaging import DecodedImage
from contract.tasks import classification
from tests.app.conftest import read_card, scene


def test_short_side_resize_truncates_the_long_side_like_mmpretrain() -> None:
    assert classification.resize_short_size((640, 480), 256) == (341, 256)
    assert classification.resize_short_size((480, 640), 256) == (256, 341)
    assert classification.resize_short_size((300, 300), 256) == (256, 256)


def test_preprocess_writes_the_centre_crop_into_the_batch_row(
    model_repository: Path, names: dict[str, str]
) -> None:
    card, _ = read_card(model_repository, names["classification"])
    image = Image.fromarray(scene(640, 480))
    batch = np.zeros((2, card.input.height, card.input.width, 3), np.uint8)
    classification.preprocess(DecodedImage(image, image.size), card, batch[1])
    expected = np.asarray(image.resize((341, 256), Image.Resampling.BILINEAR))[16:240, 58:282]
    difference = np.abs(batch[1].astype(int) - expected)
    assert difference.max() <= 1 and (difference > 0).mean() < 0.005  # only the crop is resized
    assert not batch[0].any()


def test_panorama_resizes_only_the_cropped_region_matching_a_full_resize() -> None:
    panorama = Image.fromarray(scene(3000, 100))  # resized whole it would be 7680 × 256
    crop = classification.resize_short_center_crop(panorama, 256, (224, 224))
    full = panorama.resize((7680, 256), Image.Resampling.BILINEAR).crop((3728, 16, 3952, 240))
    assert np.abs(crop.astype(int) - np.asarray(full)).max() <= 1


def test_extreme_aspect_ratio_is_cheap() -> None:
    line = Image.fromarray(scene(40_000, 1))
    started = time.perf_counter()
    assert classification.resize_short_center_crop(line, 256, (224, 224)).shape == (224, 224, 3)
    assert time.perf_counter() - started < 1.0


def test_top_k_is_sorted_by_score_with_ties_broken_by_index() -> None:
    probabilities = np.array([[0.1, 0.3, 0.3, 0.2, 0.1]], np.float32)
    labels = ["a", "b", "c", "d", "e"]
    [predictions] = classification.top_k(probabilities, 4, labels)
    assert [p.index for p in predictions] == [1, 2, 3, 0]
    assert [p.label for p in predictions] == ["b", "c", "d", "a"]
