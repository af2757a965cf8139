"""Image bytes → RGB Pillow image, within limits; and images → PNG/JPEG bytes.

Every failure is the client's and maps to a 4xx: `NotAnImage` (415) for bytes Pillow cannot
identify, `ImageTooLarge` (413) for a header claiming more than `max_pixels` (checked before
decoding), `CorruptImage` (422) for a truncated or broken file. EXIF orientation is applied; grey,
palette, alpha, CMYK and 16-bit images become 8-bit RGB.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from contract.errors import CorruptImage, ImageTooLarge, InvalidInput, NotAnImage

# Formats that are not raster images or that shell out to other programs (EPS runs Ghostscript).
_REFUSED_FORMATS = frozenset({"EPS", "WMF", "MPEG", "BUFR", "GRIB", "HDF5", "IPTC"})
# Transparent pixels become the ImageNet mean colour: the network sees ~0 after normalisation.
ALPHA_BACKGROUND = (124, 116, 104)
# Magic numbers of common formats: such bytes that Pillow cannot open are broken, not foreign.
_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*", b"BM")
_TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})
_EXIF_ORIENTATION = 0x0112


# The pixel limit below is the authority; Pillow's own bomb warning, and its warnings about a
# client's odd file (corrupt EXIF, palette transparency), would only add noise to the server log.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")


def _readable_formats() -> list[str]:
    Image.init()
    return [name for name in Image.OPEN if name not in _REFUSED_FORMATS]


@dataclass
class DecodedImage:
    """`image` is RGB and upright; it may be smaller than `size` when JPEG draft mode was used.

    `size` is (width, height) of the full upright image: results are mapped back to it.
    `reduction` is the JPEG DCT scale of a draft decode (1, 2, 4 or 8): pixel i of `image` is the
    mean of full-image pixels i·r … i·r + r − 1, per axis (the last one may cover fewer).
    """

    image: Image.Image
    size: tuple[int, int]
    reduction: int = 1

    @property
    def scale(self) -> tuple[float, float]:
        """Factor from `image` pixels to `size` pixels, per axis."""
        return self.size[0] / self.image.width, self.size[1] / self.image.height


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Identify the image and check its pixel count from the header alone (nothing decoded yet)."""
    if not data:
        raise InvalidInput("the image is empty (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data), formats=_readable_formats())
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"the image has too many pixels (limit {max_pixels}): {exc}") from exc
    except UnidentifiedImageError as exc:
        if data.startswith(_SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
            raise CorruptImage("the image is truncated or corrupt: its header cannot be read") from exc
        raise NotAnImage("the bytes are not an image in a format this service reads") from exc
    except Exception as exc:  # a recognised header that is broken
        raise CorruptImage(f"the image header is broken: {exc}") from exc
    width, height = image.size
    if width < 1 or height < 1:
        raise CorruptImage(f"the image header claims {width}×{height} pixels")
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"the image has {width}×{height} = {width * height} pixels; the limit is {max_pixels}"
        )
    return image


def upright_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) once EXIF orientation is applied (from the header, JPEG only: cheap there)."""
    if image.format in ("JPEG", "MPO"):
        try:
            orientation = image.getexif().get(_EXIF_ORIENTATION)
        except Exception:
            orientation = None
        if orientation in _TRANSPOSING_ORIENTATIONS:
            return image.height, image.width
    return image.size


def decode_image(
    data: bytes,
    max_pixels: int,
    needed_size: Callable[[tuple[int, int]], tuple[int, int]] | None = None,
) -> DecodedImage:
    """Decode to upright 8-bit RGB.

    `needed_size` maps the upright size to the smallest upright (w, h) the caller will resize to;
    when given, JPEGs are decoded at a reduced DCT scale that still covers it (`Image.draft`).
    """
    image = open_image(data, max_pixels)
    full_size = upright_size(image)
    drafted = needed_size is not None and image.format in ("JPEG", "MPO")
    reduction = 1
    try:
        if needed_size is not None and drafted:
            width, height = needed_size(full_size)
            if full_size != image.size:  # stored transposed
                width, height = height, width
            stored_width = image.width
            chosen = image.draft("RGB", (max(1, width), max(1, height)))
            if chosen is not None:  # (mode, (0, 0, width / scale, height / scale))
                reduction = round(stored_width / chosen[1][2])
        image.load()
        # In place: without an orientation tag, the copying form copies the whole image.
        with contextlib.suppress(Exception):  # a broken EXIF block should not cost the picture
            ImageOps.exif_transpose(image, in_place=True)
        rgb = to_rgb(image)
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, struct.error, ...
        raise CorruptImage(f"the image could not be decoded (truncated or corrupt): {exc}") from exc
    return DecodedImage(rgb, full_size if drafted else rgb.size, reduction)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode → 8-bit RGB. 16-bit data is scaled (÷257), not clipped; alpha is flattened."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        values = np.asarray(image, dtype=np.float32)
        if mode == "F" and values.size and np.nanmax(values) <= 1.0:
            values = values * 255.0
        else:
            values = values / 257.0  # 0..65535 → 0..255
        grey = np.clip(np.nan_to_num(values) + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, ALPHA_BACKGROUND)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("RGB")


def encode_png(image: Image.Image, compress_level: int = 1) -> bytes:
    """PNG bytes; level 1 is ~5× faster than the default for a few % more bytes."""
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=compress_level)
    return out.getvalue()


def encode_jpeg(image: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, format="JPEG", quality=quality)
    return out.getvalue()
