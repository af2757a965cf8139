"""Semantic segmentation data in the Cityscapes and ADE20K layouts, with mmseg's pipelines.

Samples are (image (H, W, 3) uint8 RGB, label (H, W) int64) with 255 = ignore. Pillow does the
resizing (bilinear for images, nearest for labels); normalisation happens inside the network.

- train (`SegTrainTransform`): RandomResize(scale, ratio 0.5-2.0, keep ratio), RandomCrop(crop,
  cat_max_ratio 0.75), flip 0.5, PhotoMetricDistortion, pad to the crop (image 0, label 255).
- test (`SegTestTransform`): resize keeping the ratio to fit `scale`; the label stays at its
  original size, as mmseg evaluates at the original resolution.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from training.data.classification import sample_rng

__all__ = [
    "ADE20KDataset",
    "CityscapesDataset",
    "PhotoMetricDistortion",
    "SegTestTransform",
    "SegTrainTransform",
    "SegmentationDataset",
    "SegmentationTransform",
    "rescale_size",
]

IGNORE_INDEX = 255


class SegmentationTransform(Protocol):
    def __call__(
        self, image: Image.Image, label: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]: ...


def rescale_size(size_wh: tuple[int, int], scale_wh: tuple[int, int]) -> tuple[int, int]:
    """mmcv's keep-ratio rescale: the largest (w, h) with long side <= max(scale) and short side
    <= min(scale), rounded half up."""
    width, height = size_wh
    factor = min(max(scale_wh) / max(width, height), min(scale_wh) / min(width, height))
    return int(width * factor + 0.5), int(height * factor + 0.5)


def _resize_pair(
    image: Image.Image, label: np.ndarray, size_wh: tuple[int, int]
) -> tuple[Image.Image, np.ndarray]:
    resized_label = np.asarray(Image.fromarray(label).resize(size_wh, Image.Resampling.NEAREST))
    return image.resize(size_wh, Image.Resampling.BILINEAR), resized_label


@dataclass(frozen=True)
class PhotoMetricDistortion:
    """mmseg's PhotoMetricDistortion on uint8 RGB (H, W, 3): brightness, then contrast either first
    or last, with saturation and hue in between, each applied with probability 0.5.

    HSV goes through Pillow (H in 0-255), so `hue_delta` (OpenCV units of 2°, 0-180) is rescaled.
    """

    brightness_delta: int = 32
    contrast_range: tuple[float, float] = (0.5, 1.5)
    saturation_range: tuple[float, float] = (0.5, 1.5)
    hue_delta: int = 18

    @staticmethod
    def _convert(channel: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
        return np.clip(channel.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)

    def _hsv_edit(self, image: np.ndarray, saturation: float | None, hue_shift: int | None) -> np.ndarray:
        hsv = np.array(Image.fromarray(image).convert("HSV"))
        if saturation is not None:
            hsv[..., 1] = self._convert(hsv[..., 1], alpha=saturation)
        if hue_shift is not None:
            # OpenCV hue units (0-180) -> Pillow's (0-256), wrapping around.
            shift = round(hue_shift * 256 / 180)
            hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + shift) % 256).astype(np.uint8)
        return np.asarray(Image.fromarray(hsv, mode="HSV").convert("RGB"))

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.integers(2):
            image = self._convert(image, beta=rng.uniform(-self.brightness_delta, self.brightness_delta))
        contrast_first = bool(rng.integers(2))
        if contrast_first and rng.integers(2):
            image = self._convert(image, alpha=rng.uniform(*self.contrast_range))
        saturation = rng.uniform(*self.saturation_range) if rng.integers(2) else None
        hue_shift = int(rng.integers(-self.hue_delta, self.hue_delta)) if rng.integers(2) else None
        if saturation is not None or hue_shift is not None:
            image = self._hsv_edit(image, saturation, hue_shift)
        if not contrast_first and rng.integers(2):
            image = self._convert(image, alpha=rng.uniform(*self.contrast_range))
        return image


@dataclass(frozen=True)
class SegTrainTransform:
    """mmseg's training pipeline; `scale_wh` (w, h) and `crop_size_hw` (h, w) as in its configs
    (Cityscapes (2048, 1024) / (512, 1024), ADE20K (2048, 512) / (512, 512)). Output image
    (crop_h, crop_w, 3) uint8 and label (crop_h, crop_w) int64."""

    scale_wh: tuple[int, int]
    crop_size_hw: tuple[int, int]
    ratio_range: tuple[float, float] = (0.5, 2.0)
    cat_max_ratio: float = 0.75
    flip_prob: float = 0.5
    photometric: PhotoMetricDistortion | None = PhotoMetricDistortion()
    ignore_index: int = IGNORE_INDEX

    def random_resize(
        self, image: Image.Image, label: np.ndarray, rng: np.random.Generator
    ) -> tuple[Image.Image, np.ndarray]:
        ratio = rng.uniform(*self.ratio_range)
        target = (int(self.scale_wh[0] * ratio), int(self.scale_wh[1] * ratio))
        return _resize_pair(image, label, rescale_size(image.size, target))

    def crop_box(self, label: np.ndarray, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) of a random crop; with cat_max_ratio < 1, up to 10 crops where
        one class covers more than `cat_max_ratio` of the labelled pixels (or only one class is
        present) are redrawn, and the last draw is kept (mmseg's RandomCrop)."""
        crop_h, crop_w = self.crop_size_hw

        def draw() -> tuple[int, int, int, int]:
            top = int(rng.integers(0, max(label.shape[0] - crop_h, 0) + 1))
            left = int(rng.integers(0, max(label.shape[1] - crop_w, 0) + 1))
            return top, top + crop_h, left, left + crop_w

        box = draw()
        if self.cat_max_ratio < 1.0:
            for _ in range(10):
                top, bottom, left, right = box
                classes, counts = np.unique(label[top:bottom, left:right], return_counts=True)
                counts = counts[classes != self.ignore_index]
                if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                    break
                box = draw()
        return box

    def __call__(
        self, image: Image.Image, label: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        resized, resized_label = self.random_resize(image, label, rng)
        top, bottom, left, right = self.crop_box(resized_label, rng)
        array = np.asarray(resized.convert("RGB"))[top:bottom, left:right]
        cropped_label = resized_label[top:bottom, left:right]
        if rng.random() < self.flip_prob:
            array, cropped_label = array[:, ::-1], cropped_label[:, ::-1]
        array = np.ascontiguousarray(array)
        if self.photometric is not None:
            array = self.photometric(array, rng)
        crop_h, crop_w = self.crop_size_hw
        padded = np.zeros((crop_h, crop_w, 3), dtype=np.uint8)
        padded[: array.shape[0], : array.shape[1]] = array
        padded_label = np.full((crop_h, crop_w), self.ignore_index, dtype=np.int64)
        padded_label[: cropped_label.shape[0], : cropped_label.shape[1]] = cropped_label
        return padded, padded_label


@dataclass(frozen=True)
class SegTestTransform:
    """Resize keeping the ratio to fit `scale_wh`; the label is returned untouched (original size)."""

    scale_wh: tuple[int, int]

    def __call__(
        self, image: Image.Image, label: np.ndarray, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        size = rescale_size(image.size, self.scale_wh)
        resized = image.convert("RGB")
        if size != resized.size:
            resized = resized.resize(size, Image.Resampling.BILINEAR)
        return np.asarray(resized), label.astype(np.int64)


def reduce_zero_label(label: np.ndarray) -> np.ndarray:
    """ADE20K's label shift: 0 ("other") -> 255, class k -> k - 1, 255 stays 255."""
    shifted = label.astype(np.int64) - 1
    shifted[(label == 0) | (label == IGNORE_INDEX)] = IGNORE_INDEX
    return shifted


class SegmentationDataset(Dataset[tuple[np.ndarray, np.ndarray]]):
    """Pairs of image and label files; yields (image uint8 (H, W, 3), label int64 (H, W))."""

    def __init__(
        self,
        pairs: list[tuple[Path, Path]],
        transform: SegmentationTransform,
        reduce_zero: bool = False,
    ) -> None:
        if not pairs:
            raise FileNotFoundError("no image/label pairs found")
        self.pairs = pairs
        self.transform = transform
        self.reduce_zero = reduce_zero

    def __len__(self) -> int:
        return len(self.pairs)

    def load_label(self, index: int) -> np.ndarray:
        """The label as training ids (H, W) int64, 255 = ignore, at the original size."""
        label = np.asarray(Image.open(self.pairs[index][1]))
        return reduce_zero_label(label) if self.reduce_zero else label.astype(np.int64)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        label = self.load_label(index).astype(np.uint8)  # uint8 so Pillow can resize it
        with Image.open(self.pairs[index][0]) as image:
            return self.transform(image, label, sample_rng())


class CityscapesDataset(SegmentationDataset):
    """`root/leftImg8bit/<split>/<city>/*_leftImg8bit.png` with
    `root/gtFine/<split>/<city>/*_gtFine_labelTrainIds.png` (19 classes, 255 = ignore).

    The transform defaults to the recipe's: train (2048, 1024) scale and 512 × 1024 crops, test
    (2048, 1024); pass smaller ones for a small machine.
    """

    def __init__(self, root: str | Path, split: str, transform: SegmentationTransform | None = None) -> None:
        root = Path(root)
        images = sorted((root / "leftImg8bit" / split).glob("*/*_leftImg8bit.png"))
        pairs = [
            (
                path,
                root
                / "gtFine"
                / split
                / path.parent.name
                / path.name.replace("_leftImg8bit.png", "_gtFine_labelTrainIds.png"),
            )
            for path in images
        ]
        if transform is None:
            transform = (
                SegTrainTransform(scale_wh=(2048, 1024), crop_size_hw=(512, 1024))
                if split == "train"
                else SegTestTransform(scale_wh=(2048, 1024))
            )
        super().__init__(pairs, transform, reduce_zero=False)


class ADE20KDataset(SegmentationDataset):
    """`ADEChallengeData2016/images/{training,validation}/*.jpg` with `annotations/.../*.png`
    (`root` may be the folder holding ADEChallengeData2016 or that folder itself; `split` is
    train/val or training/validation). reduce_zero_label: 0 -> 255, k -> k - 1 (150 classes).

    The transform defaults to the recipe's: train (2048, 512) scale and 512 × 512 crops, test
    (2048, 512).
    """

    def __init__(self, root: str | Path, split: str, transform: SegmentationTransform | None = None) -> None:
        base = Path(root)
        if (base / "ADEChallengeData2016").is_dir():
            base = base / "ADEChallengeData2016"
        folder = {"train": "training", "val": "validation"}.get(split, split)
        images = sorted((base / "images" / folder).glob("*.jpg"))
        pairs = [(path, base / "annotations" / folder / f"{path.stem}.png") for path in images]
        if transform is None:
            transform = (
                SegTrainTransform(scale_wh=(2048, 512), crop_size_hw=(512, 512))
                if folder == "training"
                else SegTestTransform(scale_wh=(2048, 512))
            )
        super().__init__(pairs, transform, reduce_zero=True)
