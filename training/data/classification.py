"""ImageNet-style classification data: `root/<split>/<class>/*.{JPEG,jpg,png}`.

Images leave as `uint8` RGB (H, W, 3) numpy arrays; normalisation happens inside the network.
Transforms follow mmpretrain's MobileNetV2 recipe, with Pillow instead of OpenCV:

- train: RandomResizedCrop(size, scale (0.08, 1), ratio (3/4, 4/3)) + horizontal flip 0.5;
- test: resize the short side to round(size · 256 / 224) (bilinear), centre-crop `size`.

JPEGs are decoded with `Image.draft`, which lets libjpeg decode at 1/2, 1/4 or 1/8 scale when the
output needs no more pixels than that.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from contract.tasks.classification import resize_short_center_crop

__all__ = [
    "IMAGE_SUFFIXES",
    "ClassificationTransform",
    "ImageFolderDataset",
    "RandomResizedCrop",
    "ResizeCenterCrop",
    "sample_rng",
]

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")

# (lazy PIL image, rng) -> (size, size, 3) uint8
ClassificationTransform = Callable[[Image.Image, np.random.Generator], np.ndarray]


def sample_rng() -> np.random.Generator:
    """A fresh numpy generator seeded from torch's RNG.

    DataLoader workers each get their own torch seed (a new one every epoch unless the workers
    persist, in which case the stream simply continues), and `torch.manual_seed` makes the main
    process reproducible, so augmentations never repeat across workers.
    """
    return np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))


def _draft_rgb(image: Image.Image, min_size_wh: tuple[int, int]) -> tuple[float, float]:
    """Let a JPEG decode at a reduced scale that keeps at least `min_size_wh`; returns the factors
    (decoded / original) per axis, which differ by rounding, so boxes can be rescaled."""
    original_w, original_h = image.size
    if image.format == "JPEG":
        image.draft("RGB", (max(1, min_size_wh[0]), max(1, min_size_wh[1])))
    return image.size[0] / original_w, image.size[1] / original_h


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


@dataclass(frozen=True)
class RandomResizedCrop:
    """torchvision's RandomResizedCrop (10 tries, then a centre crop) + horizontal flip.

    Output (size, size, 3) uint8, resized bilinearly by Pillow from the crop box.
    """

    size: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_prob: float = 0.5

    def crop_box(self, width: int, height: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """(left, top, crop_w, crop_h) in pixels of a `width` × `height` image."""
        area = width * height
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target_area = area * rng.uniform(self.scale[0], self.scale[1])
            aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
            crop_w = round(math.sqrt(target_area * aspect))
            crop_h = round(math.sqrt(target_area / aspect))
            if 0 < crop_w <= width and 0 < crop_h <= height:
                top = int(rng.integers(0, height - crop_h + 1))
                left = int(rng.integers(0, width - crop_w + 1))
                return left, top, crop_w, crop_h
        in_ratio = width / height
        if in_ratio < min(self.ratio):
            crop_w, crop_h = width, round(width / min(self.ratio))
        elif in_ratio > max(self.ratio):
            crop_w, crop_h = round(height * max(self.ratio)), height
        else:
            crop_w, crop_h = width, height
        return (width - crop_w) // 2, (height - crop_h) // 2, crop_w, crop_h

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> np.ndarray:
        width, height = image.size
        left, top, crop_w, crop_h = self.crop_box(width, height, rng)
        # Decode no larger than needed for the crop to still cover `size` pixels.
        fx, fy = _draft_rgb(
            image, (math.ceil(width * self.size / crop_w), math.ceil(height * self.size / crop_h))
        )
        decoded_w, decoded_h = image.size
        box = (
            left * fx,
            top * fy,
            min((left + crop_w) * fx, decoded_w),
            min((top + crop_h) * fy, decoded_h),
        )
        resized = image.convert("RGB").resize((self.size, self.size), Image.Resampling.BILINEAR, box=box)
        array = np.asarray(resized)
        if rng.random() < self.flip_prob:
            array = array[:, ::-1]
        return np.array(array)  # a writable copy: torch refuses to wrap read-only arrays safely


@dataclass(frozen=True)
class ResizeCenterCrop:
    """mmpretrain's test pipeline: ResizeEdge(short side, bilinear) then CenterCrop(size).

    `resize_short` defaults to round(size · 256 / 224) (256 for 224). Output (size, size, 3) uint8.
    """

    size: int
    resize_short: int | None = None
    use_draft: bool = True

    @property
    def short_side(self) -> int:
        return self.resize_short if self.resize_short is not None else round(self.size * 256 / 224)

    def __call__(self, image: Image.Image, rng: np.random.Generator | None = None) -> np.ndarray:
        """The service's own crop (`contract.tasks.classification`), so evaluation cannot drift from serving."""
        short = self.short_side
        if self.use_draft:
            _draft_rgb(image, (short, short))
        array = resize_short_center_crop(image.convert("RGB"), short, (self.size, self.size))
        return np.array(array)  # a writable copy: torch refuses to wrap read-only arrays safely


class ImageFolderDataset(Dataset[tuple[np.ndarray, int]]):
    """`root/<split>/<class>/<image>`: class index = position of the folder name in sorted order.

    Yields (image (size, size, 3) uint8, label int) after `transform`.
    """

    def __init__(self, root: str | Path, split: str, transform: ClassificationTransform) -> None:
        from training.data.classes import folder_classes

        self.root = Path(root)
        split_dir = self.root / split
        self.classes = folder_classes(self.root, split)
        self.samples: list[tuple[Path, int]] = [
            (path, label)
            for label, name in enumerate(self.classes)
            for path in sorted((split_dir / name).iterdir())
            if path.suffix.lower() in IMAGE_SUFFIXES
        ]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        path, label = self.samples[index]
        with Image.open(path) as image:
            array = self.transform(image, sample_rng())
        return array, label
