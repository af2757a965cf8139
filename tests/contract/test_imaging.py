"""Decoding: every kind of image Pillow reads becomes upright 8-bit RGB, within the limits."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from contract.errors import CorruptImage, ImageTooLarge, InvalidInput, NotAnImage
from contract.imaging import ALPHA_BACKGROUND, decode_image, encode_png, open_image, to_rgb
from tests.app.conftest import encode, png_claiming, scene

LIMIT = 10_000_000


def png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims the size, followed by a few bytes of pixel data."""
    return png_claiming(width, height)


def test_exif_orientation_is_applied() -> None:
    image = Image.fromarray(scene(60, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif.tobytes())
    decoded = decode_image(out.getvalue(), LIMIT)
    assert decoded.image.size == (40, 60)
    assert decoded.size == (40, 60)


def test_draft_decodes_a_large_jpeg_at_reduced_scale_but_reports_the_full_size() -> None:
    data = encode(scene(2000, 1200), "JPEG")
    decoded = decode_image(data, LIMIT, lambda size: (256, 256))
    assert decoded.size == (2000, 1200)
    assert 256 <= decoded.image.height < 1200
    assert decoded.image.mode == "RGB"


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [
        ("L", "PNG"),
        ("P", "PNG"),
        ("RGBA", "PNG"),
        ("LA", "PNG"),
        ("1", "PNG"),
        ("CMYK", "JPEG"),
        ("I;16", "PNG"),
    ],
)
def test_every_mode_becomes_8_bit_rgb(mode: str, fmt: str) -> None:
    rgb = Image.fromarray(scene(32, 24))
    if mode == "I;16":
        image = Image.fromarray(np.asarray(rgb.convert("L")).astype(np.uint16) * 257)
    else:
        image = rgb.convert(mode)
    out = io.BytesIO()
    image.save(out, format=fmt)
    decoded = decode_image(out.getvalue(), LIMIT)
    assert decoded.image.mode == "RGB"
    assert decoded.image.size == (32, 24)
    if mode == "I;16":  # 16-bit scaled down, not clipped to white
        grey = np.asarray(rgb.convert("L")).astype(int)
        assert np.abs(np.asarray(decoded.image)[..., 0].astype(int) - grey).max() <= 1


def test_16_bit_grey_is_scaled_not_clipped() -> None:
    values = np.array([[0, 257, 32768, 65535]], np.uint16)
    rgb = np.asarray(to_rgb(Image.fromarray(values)))
    assert rgb[0, :, 0].tolist() == [0, 1, 128, 255]


def test_transparent_pixels_become_the_neutral_background() -> None:
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)
    rgb = np.asarray(to_rgb(Image.fromarray(rgba, "RGBA")))
    assert tuple(rgb[0, 0]) == (255, 0, 0)
    assert tuple(rgb[1, 1]) == ALPHA_BACKGROUND


def test_header_claiming_too_many_pixels_is_refused_before_decoding() -> None:
    with pytest.raises(ImageTooLarge):
        open_image(png_header_claiming(50_000, 50_000), LIMIT)
    with pytest.raises(ImageTooLarge):
        open_image(png_header_claiming(4000, 3000), LIMIT)


@pytest.mark.parametrize(
    "data",
    [
        b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
        b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF",
        b"hello, this is text",
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n",
    ],
    ids=["svg", "pdf", "text", "eps"],
)
def test_non_images_are_not_an_image(data: bytes) -> None:
    with pytest.raises(NotAnImage):
        decode_image(data, LIMIT)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_image_is_corrupt(fmt: str) -> None:
    data = encode(scene(200, 150), fmt)
    with pytest.raises(CorruptImage):
        decode_image(data[: len(data) // 2], LIMIT)


def test_png_cut_after_its_header_is_corrupt_not_foreign() -> None:
    with pytest.raises(CorruptImage):
        decode_image(encode(scene(20, 10), "PNG")[:40], LIMIT)


def test_empty_bytes_are_invalid_input() -> None:
    with pytest.raises(InvalidInput):
        decode_image(b"", LIMIT)


def test_encode_png_round_trips() -> None:
    image = Image.fromarray(scene(20, 10))
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode_png(image)))), np.asarray(image))
