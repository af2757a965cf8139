"""COCO-style detection data: `root/annotations/instances_<split>2017.json` (all classes) or, where
only the keypoint file exists, `person_keypoints_<split>2017.json` (its person boxes), images in
`root/<split>2017/`.

Categories map to the recipe's labels by name (mmdet's `cat2label`); crowd boxes and boxes under
1 px are skipped as mmdet's `CocoDataset` skips them. The pipeline is the config's test `Resize`
(to the input, aspect ratio not kept); training adds its `RandomFlip(0.5)` and a light
photometric jitter. The config's `Expand` and `MinIoURandomCrop` are not implemented here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset


class DetectionSample(TypedDict):
    image: torch.Tensor  # (H, W, 3) uint8, the network input
    boxes: torch.Tensor  # (n, 4) float32 x1, y1, x2, y2 in input pixels
    labels: torch.Tensor  # (n,) int64 label indices
    image_id: int
    size_wh: tuple[int, int]  # of the original image


class DetectionBatch(TypedDict):
    image: torch.Tensor
    boxes: list[torch.Tensor]
    labels: list[torch.Tensor]
    image_id: list[int]
    size_wh: list[tuple[int, int]]


def collate(samples: Sequence[DetectionSample]) -> DetectionBatch:
    return DetectionBatch(
        image=torch.stack([s["image"] for s in samples]),
        boxes=[s["boxes"] for s in samples],
        labels=[s["labels"] for s in samples],
        image_id=[s["image_id"] for s in samples],
        size_wh=[s["size_wh"] for s in samples],
    )


@dataclass(frozen=True)
class _Record:
    path: Path
    image_id: int
    boxes: np.ndarray  # (n, 4) xyxy image pixels
    labels: np.ndarray  # (n,)


def annotation_file(root: Path, split: str) -> Path:
    """The instances file if there is one, else the keypoint file (person boxes only)."""
    instances = root / "annotations" / f"instances_{split}2017.json"
    return instances if instances.is_file() else root / "annotations" / f"person_keypoints_{split}2017.json"


class CocoDetectionDataset(Dataset[DetectionSample]):
    def __init__(
        self, root: str | Path, split: str, labels: Sequence[str], input_size_hw: tuple[int, int], train: bool
    ) -> None:
        self.root = Path(root)
        self.annotation_file = annotation_file(self.root, split)
        document = json.loads(self.annotation_file.read_text())
        names = {int(c["id"]): c["name"] for c in document["categories"]}
        self.label_of = {cat: list(labels).index(name) for cat, name in names.items() if name in labels}
        self.category_of = {label: cat for cat, label in self.label_of.items()}
        per_image: dict[int, list[tuple[list[float], int]]] = {int(im["id"]): [] for im in document["images"]}
        for ann in document["annotations"]:
            x, y, w, h = ann["bbox"]
            if ann.get("iscrowd", 0) or w < 1 or h < 1 or int(ann["category_id"]) not in self.label_of:
                continue
            per_image[int(ann["image_id"])].append(
                ([x, y, x + w, y + h], self.label_of[int(ann["category_id"])])
            )
        image_dir = self.root / f"{split}2017"
        self.records = []
        for image in document["images"]:
            objects = per_image[int(image["id"])]
            if train and not objects:  # mmdet's filter_empty_gt
                continue
            self.records.append(
                _Record(
                    image_dir / image["file_name"],
                    int(image["id"]),
                    np.array([o[0] for o in objects], np.float32).reshape(-1, 4),
                    np.array([o[1] for o in objects], np.int64),
                )
            )
        self.input_size_hw = input_size_hw
        self.train = train

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> DetectionSample:
        record = self.records[index]
        with Image.open(record.path) as opened:
            image = opened.convert("RGB")
        width, height = image.size
        h, w = self.input_size_hw
        pixels = np.asarray(image.resize((w, h), Image.Resampling.BILINEAR))
        boxes = record.boxes * np.array([w / width, h / height, w / width, h / height], np.float32)
        if self.train:
            # From torch's generator: seeded by `torch.manual_seed`, distinct per loader worker.
            rng = np.random.default_rng(int(torch.randint(0, 2**31, ()).item()))
            if rng.random() < 0.5:
                pixels = pixels[:, ::-1]
                boxes = np.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], axis=1)
            # PhotoMetricDistortion's brightness (±32) and contrast (0.5-1.5), each half the time.
            jitter = pixels.astype(np.float32)
            if rng.random() < 0.5:
                jitter += rng.uniform(-32, 32)
            if rng.random() < 0.5:
                jitter *= rng.uniform(0.5, 1.5)
            pixels = np.clip(jitter, 0, 255).astype(np.uint8)
        return DetectionSample(
            image=torch.from_numpy(np.array(pixels, copy=True)),
            boxes=torch.from_numpy(np.ascontiguousarray(boxes, dtype=np.float32)),
            labels=torch.from_numpy(record.labels),
            image_id=record.image_id,
            size_wh=(width, height),
        )
