"""Segmentation: fit the image into the input canvas, and turn the class mask back into answers.

The canvas is the graph's input size: the image is resized keeping its aspect ratio to fit
(bilinear, sizes rounded as mmcv's `rescale_size`; stretched instead when the card says
`keep_ratio: false`), padded bottom/right with `pad_value`; the graph's argmax mask has the
padding cut off, then is scaled to the original size (nearest).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from PIL import Image

from contract.card import ModelCard
from contract.imaging import DecodedImage
from contract.results import SegmentClass

OVERLAY_ALPHA = 0.5


def fit_size(size_wh: tuple[int, int], canvas_wh: tuple[int, int]) -> tuple[int, int]:
    """Largest (w, h) with the image's aspect ratio that fits the canvas."""
    width, height = size_wh
    scale = min(canvas_wh[0] / width, canvas_wh[1] / height)
    return (
        min(canvas_wh[0], max(1, int(width * scale + 0.5))),
        min(canvas_wh[1], max(1, int(height * scale + 0.5))),
    )


def canvas_size(card: ModelCard) -> tuple[int, int]:
    return card.input.width, card.input.height


def resized_size(size_wh: tuple[int, int], card: ModelCard) -> tuple[int, int]:
    """(w, h) the image is resized to: fitted keeping its aspect ratio, or stretched to the canvas."""
    return fit_size(size_wh, canvas_size(card)) if card.preprocess.keep_ratio else canvas_size(card)


def preprocess(decoded: DecodedImage, card: ModelCard, out: np.ndarray) -> tuple[int, int]:
    """Write the padded canvas into `out` (H, W, 3) uint8; returns the (w, h) holding the image."""
    fitted = resized_size(decoded.size, card)
    resized = decoded.image.resize(fitted, Image.Resampling.BILINEAR)
    out[...] = card.preprocess.pad_value
    out[: fitted[1], : fitted[0]] = np.asarray(resized)
    return fitted


def unpadded(mask: np.ndarray, fitted_wh: tuple[int, int]) -> np.ndarray:
    """(H, W) canvas mask → the (fitted h, fitted w) part that holds the image."""
    return np.ascontiguousarray(mask[: fitted_wh[1], : fitted_wh[0]])


def mask_to_image_size(mask: np.ndarray, fitted_wh: tuple[int, int], size_wh: tuple[int, int]) -> np.ndarray:
    """(H, W) canvas mask → (h, w) mask of the original image: padding removed, nearest scaling."""
    valid = unpadded(mask, fitted_wh)
    if fitted_wh == size_wh:
        return valid
    return np.asarray(Image.fromarray(valid).resize(size_wh, Image.Resampling.NEAREST))


def palette_of(card: ModelCard) -> list[tuple[int, int, int]]:
    """The card's palette, or a fixed pseudo-random one when the card has none."""
    if card.palette:
        return list(card.palette)
    rng = np.random.default_rng(0)
    return [tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in card.labels]  # type: ignore[misc]


def _nearest_repeats(length: int, scaled_length: int) -> np.ndarray:
    """How many of `scaled_length` pixels Pillow's nearest resize takes from each of `length`.

    Read off Pillow itself (a one-row ramp, resized): its nearest mapping of one axis does not
    depend on the other axis or on the mode, so these are the repeats of the real resize.
    """
    ramp = Image.frombytes("I", (length, 1), np.arange(length, dtype=np.int32).tobytes())
    taken = np.asarray(ramp.resize((scaled_length, 1), Image.Resampling.NEAREST))[0]
    return np.bincount(taken, minlength=length)


def _by_repeats(array: np.ndarray, repeats: np.ndarray, axis: int) -> Iterator[tuple[int, np.ndarray]]:
    """(r, the slices of `array` along `axis` repeated r times), for each r > 0 in `repeats`."""
    if (repeats == repeats[0]).all():  # every slice alike (no scaling on this axis): no copy
        if repeats[0] > 0:
            yield int(repeats[0]), array
        return
    for r in np.unique(repeats[repeats > 0]):
        yield int(r), np.compress(repeats == r, array, axis)


def scaled_class_counts(mask: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """(256,) pixel count per class of `mask` (h, w) uint8 once nearest-scaled to `size_wh`.

    Exactly the counts of the scaled mask, from the small one: a pixel repeated c times across and
    r times down counts r·c. Pixels sharing (r, c) are histogrammed together (a handful of groups),
    so a 1080p answer reads its 0.5 Mpx mask instead of 2 Mpx.
    """
    across = _nearest_repeats(mask.shape[1], size_wh[0])
    down = _nearest_repeats(mask.shape[0], size_wh[1])
    counts = np.zeros(256, np.int64)
    for rows, band in _by_repeats(mask, down, axis=0):
        for columns, part in _by_repeats(band, across, axis=1):
            histogram = Image.fromarray(np.ascontiguousarray(part, np.uint8)).histogram()
            counts += rows * columns * np.asarray(histogram, np.int64)
    return counts


def classes_present(
    mask: np.ndarray, card: ModelCard, size_wh: tuple[int, int] | None = None
) -> list[SegmentClass]:
    """The classes in the mask with their pixel fractions, largest first.

    With `size_wh`, the fractions are those of the mask nearest-scaled to that size (as the
    answer's mask PNG is), counted without scaling it.
    """
    size_wh = size_wh or (mask.shape[1], mask.shape[0])
    counts = scaled_class_counts(mask, size_wh)
    total = size_wh[0] * size_wh[1]
    palette = palette_of(card)
    order = np.argsort(-counts, kind="stable")
    return [
        SegmentClass(
            index=int(i),
            label=card.labels[i] if i < len(card.labels) else str(i),
            fraction=float(counts[i] / total),
            color=palette[i] if i < len(palette) else None,
        )
        for i in order
        if counts[i] > 0
    ]


def mask_image(mask: np.ndarray, card: ModelCard) -> Image.Image:
    """(h, w) class indices → a palette ('P') image whose pixel values are the indices."""
    image = Image.frombytes(
        "P", (mask.shape[1], mask.shape[0]), np.ascontiguousarray(mask, np.uint8).tobytes()
    )
    flat = [channel for colour in palette_of(card)[:256] for channel in colour]
    image.putpalette(flat + [0] * (768 - len(flat)))
    return image


def overlay(
    image: Image.Image, mask: np.ndarray, card: ModelCard, alpha: float = OVERLAY_ALPHA
) -> Image.Image:
    """The image blended with the class colours of `mask` (same size)."""
    colours = np.zeros((256, 3), np.uint8)
    palette = np.asarray(palette_of(card)[:256], np.uint8).reshape(-1, 3)
    colours[: len(palette)] = palette
    return Image.blend(image.convert("RGB"), Image.fromarray(colours[mask]), alpha)
