"""Top-down pose data: COCO keypoints and mmpose's MPII JSON, with mmpose's augmentations.

One sample per person. The crop geometry is `contract.pose_geometry` (the service uses the same code),
so a crop at training time is the crop the service makes. Pipeline, as mmpose 1.x:

1. box -> centre and scale = box size × 1.25 (MPII: its centre/scale, × 200 × 1.25);
2. train only: half-body (p 0.3), random shift (0.16 of the scale, p 0.3), scale 0.5-1.5 and
   rotation up to 80° (p 0.6) drawn from truncated normals;
3. widen to the input aspect, affine warp (bilinear), and, train only, a horizontal flip (p 0.5)
   with left/right swapped by `flip_indices`;
4. Gaussian heatmap targets (peak 1 at `int(kpt / stride + 0.5)`, radius 3σ).

The flip mirrors the warped crop instead of the whole image before cropping, which gives the same
distribution of crops (rotation and shift are symmetric) and keeps pixel and keypoint coordinates
exactly consistent (`x -> input_w - 1 - x`), like the service's flip test.
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

from contract.pose_geometry import fix_aspect_ratio, get_warp_matrix, transform_points, warp_image
from training.data.classification import sample_rng
from training.evaluation import head_size_from_box

__all__ = [
    "CocoKeypointDataset",
    "MpiiDataset",
    "MpiiGroundTruth",
    "PersonRecord",
    "PoseAugment",
    "PoseBatch",
    "PoseSample",
    "TopdownPoseDataset",
    "collate",
    "generate_gaussian_heatmaps",
]

BOX_PADDING = 1.25
MPII_PIXEL_STD = 200.0


class PoseSample(TypedDict):
    """One person crop. `center`/`scale` (pixels) map crop keypoints back with
    `contract.pose_geometry.keypoints_to_image`; `ann_id` is -1 for detector boxes."""

    image: np.ndarray  # (H, W, 3) uint8, the network input
    heatmaps: np.ndarray  # (K, h, w) float32 targets
    weights: np.ndarray  # (K,) float32, 0 = no loss for that keypoint
    center: np.ndarray  # (2,) float32
    scale: np.ndarray  # (2,) float32, aspect fixed to the input's
    image_id: int
    box_score: float
    ann_id: int


class PoseBatch(TypedDict):
    """`collate`'s output: the samples' fields stacked into tensors with a leading batch axis N."""

    image: torch.Tensor  # (N, H, W, 3) uint8
    heatmaps: torch.Tensor  # (N, K, h, w) float32
    weights: torch.Tensor  # (N, K) float32
    center: torch.Tensor  # (N, 2) float32
    scale: torch.Tensor  # (N, 2) float32
    image_id: torch.Tensor  # (N,) int64
    box_score: torch.Tensor  # (N,) float32
    ann_id: torch.Tensor  # (N,) int64


def collate(samples: Sequence[PoseSample]) -> PoseBatch:
    """Stack `PoseSample`s for a DataLoader (`collate_fn=collate`)."""

    def stack(key: str) -> torch.Tensor:
        return torch.from_numpy(np.stack([np.asarray(s[key]) for s in samples]))  # type: ignore[literal-required]

    return PoseBatch(
        image=stack("image"),
        heatmaps=stack("heatmaps"),
        weights=stack("weights"),
        center=stack("center"),
        scale=stack("scale"),
        image_id=torch.tensor([s["image_id"] for s in samples], dtype=torch.int64),
        box_score=torch.tensor([s["box_score"] for s in samples], dtype=torch.float32),
        ann_id=torch.tensor([s["ann_id"] for s in samples], dtype=torch.int64),
    )


def generate_gaussian_heatmaps(
    heatmap_size_wh: tuple[int, int], keypoints: np.ndarray, visible: np.ndarray, sigma: float
) -> tuple[np.ndarray, np.ndarray]:
    """mmpose's `generate_gaussian_heatmaps` for one person.

    keypoints (K, 2) in heatmap pixels, visible (K,) 0/1 -> heatmaps (K, h, w) float32 with an
    unnormalised Gaussian (peak 1) at `int(kpt + 0.5)`, cut at 3σ, and weights (K,) float32:
    the visibility, set to 0 when the Gaussian's square lies wholly outside the map.
    """
    width, height = heatmap_size_wh
    num_keypoints = len(keypoints)
    heatmaps = np.zeros((num_keypoints, height, width), dtype=np.float32)
    weights = np.asarray(visible, dtype=np.float32).copy()
    radius = sigma * 3
    grid = np.arange(0, 2 * radius + 1, 1, dtype=np.float32)
    middle = (2 * radius + 1) // 2
    gaussian = np.exp(-((grid[None, :] - middle) ** 2 + (grid[:, None] - middle) ** 2) / (2 * sigma**2))
    for k in range(num_keypoints):
        if weights[k] < 0.5:
            continue
        mu = (np.asarray(keypoints[k], dtype=np.float64) + 0.5).astype(np.int64)
        left, top = (mu - radius).astype(np.int64)
        right, bottom = (mu + radius + 1).astype(np.int64)
        if left >= width or top >= height or right < 0 or bottom < 0:
            weights[k] = 0.0
            continue
        gx0, gx1 = max(0, -left), min(width, right) - left
        gy0, gy1 = max(0, -top), min(height, bottom) - top
        hx0, hx1 = max(0, left), min(width, right)
        hy0, hy1 = max(0, top), min(height, bottom)
        region = heatmaps[k, hy0:hy1, hx0:hx1]
        np.maximum(region, gaussian[gy0:gy1, gx0:gx1], out=region)
    return heatmaps, weights


@dataclass(frozen=True)
class PoseAugment:
    """mmpose 1.x training augmentation settings (RandomFlip, RandomHalfBody, RandomBBoxTransform).

    Half-body needs at least `half_body_min_keypoints` visible keypoints (mmpose: 9, i.e. more
    than 8), 2 upper or 3 lower ones, and prefers the upper body with p 0.7.
    """

    flip_prob: float = 0.5
    half_body_prob: float = 0.3
    half_body_min_keypoints: int = 9
    half_body_min_upper: int = 2
    half_body_min_lower: int = 3
    half_body_upper_prob: float = 0.7
    half_body_padding: float = 1.5
    shift_factor: float = 0.16
    shift_prob: float = 0.3
    scale_range: tuple[float, float] = (0.5, 1.5)
    scale_prob: float = 1.0
    rotate_factor: float = 80.0
    rotate_prob: float = 0.6


@dataclass(frozen=True, eq=False)
class PersonRecord:
    """One person to crop: `center` (2,) and `scale` (2,) in pixels (padded, aspect not yet fixed),
    ground-truth `keypoints` (K, 2) pixels and `visible` (K,) 0/1 (zeros for detector boxes)."""

    image_path: Path
    image_id: int
    ann_id: int
    center: np.ndarray
    scale: np.ndarray
    keypoints: np.ndarray
    visible: np.ndarray
    box_score: float = 1.0


def _truncated_normal(rng: np.random.Generator, size: int) -> np.ndarray:
    """Standard normal samples cut to [-1, 1] (scipy's truncnorm(-1, 1)), by rejection."""
    out = np.empty(0)
    while out.size < size:
        draws = rng.standard_normal(2 * size + 4)
        out = np.concatenate([out, draws[np.abs(draws) <= 1.0]])
    return out[:size]


def _default_upper_body_ids(num_keypoints: int) -> tuple[int, ...]:
    if num_keypoints == 17:  # COCO: face, shoulders, arms
        return tuple(range(11))
    if num_keypoints == 16:  # MPII: pelvis is lower; thorax, neck, head, arms are upper
        return (7, 8, 9, 10, 11, 12, 13, 14, 15)
    raise ValueError(f"pass upper_body_ids for a {num_keypoints}-keypoint set")


class TopdownPoseDataset(Dataset[PoseSample]):
    """Person records -> `PoseSample`s (crop, heatmaps, weights, meta). Subclasses load records."""

    def __init__(
        self,
        records: list[PersonRecord],
        input_size_wh: tuple[int, int],
        heatmap_size_wh: tuple[int, int],
        sigma: float,
        flip_indices: Sequence[int],
        train: bool,
        augment: PoseAugment | None = None,
        upper_body_ids: Sequence[int] | None = None,
    ) -> None:
        self.records = records
        self.input_size_wh = (int(input_size_wh[0]), int(input_size_wh[1]))
        self.heatmap_size_wh = (int(heatmap_size_wh[0]), int(heatmap_size_wh[1]))
        self.sigma = sigma
        self.flip_indices = np.asarray(flip_indices, dtype=np.int64)
        self.train = train
        self.augment = augment if augment is not None else PoseAugment()
        self.num_keypoints = len(self.flip_indices)
        upper = _default_upper_body_ids(self.num_keypoints) if upper_body_ids is None else upper_body_ids
        self.upper_body_ids = tuple(upper)
        self.lower_body_ids = tuple(i for i in range(self.num_keypoints) if i not in set(upper))

    @property
    def aspect_ratio(self) -> float:
        return self.input_size_wh[0] / self.input_size_wh[1]

    def __len__(self) -> int:
        return len(self.records)

    def half_body(
        self, keypoints: np.ndarray, visible: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """mmpose's RandomHalfBody: a (center, scale) around the upper or lower body, or None."""
        aug = self.augment
        if visible.sum() < aug.half_body_min_keypoints or rng.random() > aug.half_body_prob:
            return None
        upper = [i for i in self.upper_body_ids if visible[i] > 0]
        lower = [i for i in self.lower_body_ids if visible[i] > 0]
        prefer_upper = rng.random() < aug.half_body_upper_prob
        if len(upper) < aug.half_body_min_upper and len(lower) < aug.half_body_min_lower:
            return None
        if len(lower) < aug.half_body_min_lower:
            chosen = upper
        elif len(upper) < aug.half_body_min_upper:
            chosen = lower
        else:
            chosen = upper if prefer_upper else lower
        points = keypoints[chosen]
        center = points.mean(axis=0)
        scale = (points.max(axis=0) - points.min(axis=0)) * aug.half_body_padding
        return center, scale

    def random_box_transform(
        self, center: np.ndarray, scale: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """mmpose's RandomBBoxTransform: shift (× scale), rescale and rotation in degrees."""
        aug = self.augment
        offset = _truncated_normal(rng, 2) * aug.shift_factor
        if rng.random() >= aug.shift_prob:
            offset[:] = 0.0
        low, high = aug.scale_range
        factor = _truncated_normal(rng, 1)[0] * (high - low) / 2 + (high + low) / 2
        if rng.random() >= aug.scale_prob:
            factor = 1.0
        rotation = float(_truncated_normal(rng, 1)[0] * aug.rotate_factor)
        if rng.random() >= aug.rotate_prob:
            rotation = 0.0
        return center + offset * scale, scale * factor, rotation

    def __getitem__(self, index: int) -> PoseSample:
        record = self.records[index]
        keypoints = record.keypoints.astype(np.float64)
        visible = record.visible.astype(np.float32)
        center, scale, rotation = record.center.astype(np.float64), record.scale.astype(np.float64), 0.0
        rng = sample_rng() if self.train else None
        if rng is not None:
            half = self.half_body(keypoints, visible, rng)
            if half is not None:
                center, scale = half
            center, scale, rotation = self.random_box_transform(center, scale, rng)
        scale = fix_aspect_ratio(scale, self.aspect_ratio)
        matrix = get_warp_matrix(center, scale, rotation, self.input_size_wh)
        with Image.open(record.image_path) as image:
            crop = warp_image(image.convert("RGB"), matrix, self.input_size_wh)
        crop_keypoints = transform_points(keypoints, matrix)
        if rng is not None and rng.random() < self.augment.flip_prob:
            crop = np.ascontiguousarray(crop[:, ::-1])
            crop_keypoints[:, 0] = self.input_size_wh[0] - 1 - crop_keypoints[:, 0]
            crop_keypoints, visible = crop_keypoints[self.flip_indices], visible[self.flip_indices]
        stride = np.array(self.input_size_wh, dtype=np.float64) / np.array(self.heatmap_size_wh)
        heatmaps, weights = generate_gaussian_heatmaps(
            self.heatmap_size_wh, crop_keypoints / stride, visible, self.sigma
        )
        return PoseSample(
            image=crop,
            heatmaps=heatmaps,
            weights=weights,
            center=center.astype(np.float32),
            scale=scale.astype(np.float32),
            image_id=record.image_id,
            box_score=record.box_score,
            ann_id=record.ann_id,
        )


class CocoKeypointDataset(TopdownPoseDataset):
    """COCO keypoints: `root/annotations/person_keypoints_<split>2017.json`, `root/<split>2017/*.jpg`.

    One sample per non-crowd person annotation with num_keypoints > 0 (boxes clipped to the
    image as mmpose does). With `bbox_file` (COCO results JSON: `image_id`, `category_id`, `bbox`
    xywh, `score`) the samples are the detector's person boxes scoring >= `bbox_score_thr`
    instead, without keypoint targets (weights 0, ann_id -1).
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        input_size_wh: tuple[int, int],
        heatmap_size_wh: tuple[int, int],
        sigma: float,
        flip_indices: Sequence[int],
        train: bool,
        bbox_file: str | Path | None = None,
        bbox_score_thr: float = 0.0,
        augment: PoseAugment | None = None,
    ) -> None:
        self.root = Path(root)
        self.annotation_file = self.root / "annotations" / f"person_keypoints_{split}2017.json"
        document = json.loads(self.annotation_file.read_text())
        image_dir = self.root / f"{split}2017"
        images = {int(im["id"]): im for im in document["images"]}
        num_keypoints = len(flip_indices)
        records = (
            self._detection_records(Path(bbox_file), images, image_dir, num_keypoints, bbox_score_thr)
            if bbox_file is not None
            else self._ground_truth_records(document["annotations"], images, image_dir)
        )
        super().__init__(records, input_size_wh, heatmap_size_wh, sigma, flip_indices, train, augment)

    @staticmethod
    def _ground_truth_records(
        annotations: list[dict], images: dict[int, dict], image_dir: Path
    ) -> list[PersonRecord]:
        records = []
        for ann in annotations:
            if ann.get("iscrowd", 0) or ann.get("num_keypoints", 0) <= 0 or "bbox" not in ann:
                continue
            image = images[int(ann["image_id"])]
            width, height = image["width"], image["height"]
            x, y, w, h = ann["bbox"]
            x1, y1 = np.clip(x, 0, width - 1), np.clip(y, 0, height - 1)
            x2, y2 = np.clip(x + w, 0, width - 1), np.clip(y + h, 0, height - 1)
            if x2 <= x1 or y2 <= y1:
                continue
            triples = np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
            records.append(
                PersonRecord(
                    image_path=image_dir / image["file_name"],
                    image_id=int(ann["image_id"]),
                    ann_id=int(ann["id"]),
                    center=np.array([(x1 + x2) / 2, (y1 + y2) / 2]),
                    scale=np.array([x2 - x1, y2 - y1]) * BOX_PADDING,
                    keypoints=triples[:, :2],
                    visible=np.minimum(1.0, triples[:, 2]),
                )
            )
        return records

    @staticmethod
    def _detection_records(
        bbox_file: Path, images: dict[int, dict], image_dir: Path, num_keypoints: int, score_thr: float
    ) -> list[PersonRecord]:
        records = []
        for det in json.loads(bbox_file.read_text()):
            if int(det.get("category_id", 1)) != 1 or float(det["score"]) < score_thr:
                continue
            image = images[int(det["image_id"])]
            x, y, w, h = (float(v) for v in det["bbox"])
            records.append(
                PersonRecord(
                    image_path=image_dir / image["file_name"],
                    image_id=int(det["image_id"]),
                    ann_id=-1,
                    center=np.array([x + w / 2, y + h / 2]),
                    scale=np.array([w, h]) * BOX_PADDING,
                    keypoints=np.zeros((num_keypoints, 2)),
                    visible=np.zeros(num_keypoints),
                    box_score=float(det["score"]),
                )
            )
        return records


@dataclass(frozen=True, eq=False)
class MpiiGroundTruth:
    """What PCKh needs, aligned with the split's JSON entries (0-based pixels)."""

    keypoints: np.ndarray  # (N, 16, 2)
    visible: np.ndarray  # (N, 16) bool
    head_sizes: np.ndarray  # (N,) 0.6 × head-box diagonal


class MpiiDataset(TopdownPoseDataset):
    """mmpose's MPII layout: `root/annotations/mpii_<split>.json`, a list of {image, center [x, y],
    scale (person size / 200 px), joints [[x, y]] × 16, joints_vis [0/1] × 16}, images under
    `root/images/`. Coordinates are 1-based (MATLAB) and are made 0-based here; the centre moves
    down by 15 × scale px and the crop is scale × 200 × 1.25 square, as mmpose does.

    Head boxes for PCKh come from `annotations/mpii_gt_val.mat` (`headboxes_src`, needs scipy)
    when present, otherwise from `annotations/mpii_val_headboxes.json`: {image: [x1, y1, x2, y2]}
    for one person, or {image: [[x1, y1, x2, y2], ...]} for several, in the JSON's order.
    `ann_id` is the entry's position in the JSON.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        input_size_wh: tuple[int, int],
        heatmap_size_wh: tuple[int, int],
        sigma: float,
        flip_indices: Sequence[int],
        train: bool,
        augment: PoseAugment | None = None,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.entries: list[dict] = json.loads((self.root / "annotations" / f"mpii_{split}.json").read_text())
        records = [self._record(i, entry) for i, entry in enumerate(self.entries)]
        super().__init__(records, input_size_wh, heatmap_size_wh, sigma, flip_indices, train, augment)

    def _record(self, index: int, entry: dict) -> PersonRecord:
        center = np.asarray(entry["center"], dtype=np.float64).copy()
        size = float(entry["scale"]) * MPII_PIXEL_STD
        if center[0] != -1:
            center[1] += 15.0 / MPII_PIXEL_STD * size  # mmpose: avoid cutting off the feet
        joints = np.asarray(entry["joints"], dtype=np.float64).reshape(-1, 2)
        return PersonRecord(
            image_path=self.root / "images" / entry["image"],
            image_id=int(Path(entry["image"]).stem),
            ann_id=index,
            center=center - 1.0,
            scale=np.array([size, size]) * BOX_PADDING,
            keypoints=joints - 1.0,
            visible=np.asarray(entry["joints_vis"], dtype=np.float64).reshape(-1),
        )

    def head_boxes(self) -> np.ndarray:
        """Head boxes (N, 4) x1, y1, x2, y2 in file coordinates, aligned with the JSON entries."""
        mat_path = self.root / "annotations" / f"mpii_gt_{self.split}.mat"
        if mat_path.exists():
            from scipy.io import loadmat  # optional: only real MPII ships the .mat

            src = loadmat(str(mat_path))["headboxes_src"]  # (2, 2, N): corner, xy, person
            return np.concatenate([src[0].T, src[1].T], axis=1).astype(np.float64)
        json_path = self.root / "annotations" / f"mpii_{self.split}_headboxes.json"
        if not json_path.exists():
            raise FileNotFoundError(f"no head boxes: {mat_path.name} or {json_path.name} needed for PCKh")
        by_image: dict[str, list] = json.loads(json_path.read_text())
        seen: dict[str, int] = {}
        boxes = []
        for entry in self.entries:
            name = entry["image"]
            value = by_image[name]
            nested = isinstance(value[0], list)
            boxes.append(value[seen.get(name, 0)] if nested else value)
            seen[name] = seen.get(name, 0) + 1
        return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)

    def ground_truth(self) -> MpiiGroundTruth:
        """Joints (0-based), visibility and head sizes for `training.evaluation.pckh`."""
        return MpiiGroundTruth(
            keypoints=np.stack([r.keypoints for r in self.records]),
            visible=np.stack([r.visible > 0 for r in self.records]),
            head_sizes=head_size_from_box(self.head_boxes()),
        )
