"""What differs per task in training: the data set and its pipeline, the loss, and the table's metric.

Metrics are reported in the units of the results tables: top-1/top-5 and mIoU in percent, COCO AP
and MPII PCKh as fractions.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.data import default_collate as torch_default_collate

from contract.pose_geometry import decode_heatmaps, flip_heatmaps_back, keypoints_to_image
from training.recipes import Recipe

if TYPE_CHECKING:
    from training.engine import TrainOptions

IGNORE_INDEX = 255
AUX_LOSS_WEIGHT = 0.4


class TaskAdapter(Protocol):
    collate: Callable[..., Any]

    def train_dataset(self) -> Dataset[Any]: ...

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> torch.Tensor: ...

    def batch_images(self, batch: Any) -> int: ...

    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, float]: ...


def adapter_for(recipe: Recipe, options: TrainOptions) -> TaskAdapter:
    if recipe.task == "classification":
        return ClassificationAdapter(recipe, options)
    if recipe.task == "segmentation":
        return SegmentationAdapter(recipe, options)
    if recipe.task == "detection":
        return DetectionAdapter(recipe, options)
    return PoseAdapter(recipe, options)


def _images(batch_images: torch.Tensor, device: torch.device) -> torch.Tensor:
    return batch_images.to(device, non_blocking=True)


class ClassificationAdapter:
    collate = staticmethod(torch_default_collate)

    def __init__(self, recipe: Recipe, options: TrainOptions) -> None:
        self.recipe, self.options = recipe, options
        self.size = (options.train_size or recipe.input_size)[0]

    def train_dataset(self) -> Dataset[Any]:
        from training.data.classification import ImageFolderDataset, RandomResizedCrop

        # The row's RandomResizedCrop keeps 8-100% of the image; a data set of one small object per
        # image (the synthetic shapes) loses the object in many such crops, so a run may raise it.
        min_scale = self.options.min_crop_scale or 0.08
        return ImageFolderDataset(
            self.options.data, "train", RandomResizedCrop(self.size, scale=(min_scale, 1.0))
        )

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> torch.Tensor:
        images, labels = batch
        return F.cross_entropy(model(_images(images, device)), labels.to(device))

    def batch_images(self, batch: Any) -> int:
        return len(batch[1])

    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        from training.data.classification import ImageFolderDataset, ResizeCenterCrop
        from training.evaluation import topk_accuracy

        dataset = ImageFolderDataset(self.options.data, "val", ResizeCenterCrop(self.recipe.input_size[0]))
        scores, labels = [], []
        model.eval()
        with torch.no_grad():
            for images, target in DataLoader(dataset, batch_size=32, num_workers=self.options.workers):
                scores.append(cast(Any, model).predict(_images(images, device)).float().cpu().numpy())
                labels.append(target.numpy())
        ks = (1, 5) if self.recipe.num_outputs >= 5 else (1,)
        accuracy = topk_accuracy(np.concatenate(scores), np.concatenate(labels), ks=ks)
        return {f"top{k}": round(100 * accuracy[f"top{k}"], 2) for k in ks}


class SegmentationAdapter:
    collate = staticmethod(torch_default_collate)

    def __init__(self, recipe: Recipe, options: TrainOptions) -> None:
        self.recipe, self.options = recipe, options
        self.crop = options.train_size or recipe.input_size
        # The synthetic data sets are smaller than the real ones: scale the resize target with them.
        height, width = recipe.input_size
        self.scale: tuple[int, int] = options.scale_wh or recipe.seg_scale or (width, height)

    def _dataset(self, split: str, transform: Any) -> Dataset[Any]:
        from training.data.segmentation import ADE20KDataset, CityscapesDataset

        cls = CityscapesDataset if self.recipe.dataset == "cityscapes" else ADE20KDataset
        names = {
            "cityscapes": {"train": "train", "val": "val"},
            "ade20k": {"train": "training", "val": "validation"},
        }
        return cls(self.options.data, names[self.recipe.dataset][split], transform)

    def train_dataset(self) -> Dataset[Any]:
        from training.data.segmentation import SegTrainTransform

        return self._dataset("train", SegTrainTransform(scale_wh=self.scale, crop_size_hw=self.crop))

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> torch.Tensor:
        images, labels = batch
        labels = labels.to(device)
        out, aux = model(_images(images, device))
        loss = _seg_ce(out, labels)
        if aux is not None:
            loss = loss + AUX_LOSS_WEIGHT * _seg_ce(aux, labels)
        return loss

    def batch_images(self, batch: Any) -> int:
        return len(batch[1])

    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        """The row's test pipeline: the whole image resized keeping its ratio to the test scale
        (Cityscapes 2048x1024, ADE20K 2048x512; smaller for the synthetic sets), one image at a
        time, logits resized to the label, mIoU at label size."""
        from training.data.segmentation import SegTestTransform
        from training.evaluation import IoUAccumulator

        dataset = self._dataset("val", SegTestTransform(scale_wh=self.scale))
        accumulator = IoUAccumulator(self.recipe.num_outputs, IGNORE_INDEX)
        model.eval()
        with torch.no_grad():
            for image, label in DataLoader(dataset, batch_size=1, num_workers=self.options.workers):
                logits = cast(Any, model).logits(_images(image, device))
                logits = F.interpolate(
                    logits, size=tuple(label.shape[1:]), mode="bilinear", align_corners=False
                )
                accumulator.update(logits.argmax(1)[0].cpu().numpy(), label[0].numpy())
        result = accumulator.result()
        return {"mIoU": round(100 * result["mIoU"], 2), "aAcc": round(100 * result["aAcc"], 2)}


def _seg_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logits = F.interpolate(logits, size=labels.shape[1:], mode="bilinear", align_corners=False)
    return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)


class PoseAdapter:
    def __init__(self, recipe: Recipe, options: TrainOptions) -> None:
        from training.data.pose import collate

        self.recipe, self.options = recipe, options
        self.collate = collate

    def _dataset(self, split: str, train: bool) -> Any:
        from training.data.pose import CocoKeypointDataset, MpiiDataset

        h, w = self.recipe.input_size
        hh, hw = self.recipe.heatmap_size or (h // 4, w // 4)
        kwargs: dict[str, Any] = dict(
            input_size_wh=(w, h),
            heatmap_size_wh=(hw, hh),
            sigma=self.recipe.sigma or 2.0,
            flip_indices=self.recipe.flip_indices or (),
            train=train,
        )
        if self.recipe.dataset == "coco":
            if split == "val" and self.options.person_boxes is not None:
                kwargs["bbox_file"] = self.options.person_boxes
            return CocoKeypointDataset(self.options.data, split, **kwargs)
        return MpiiDataset(self.options.data, split, **kwargs)

    def train_dataset(self) -> Dataset[Any]:
        return self._dataset("train", train=True)

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> torch.Tensor:
        """mmpose's KeypointMSELoss with target weights."""
        heatmaps = model(_images(batch["image"], device))
        weights = batch["weights"].to(device)[:, :, None, None]
        return F.mse_loss(heatmaps * weights, batch["heatmaps"].to(device) * weights)

    def batch_images(self, batch: Any) -> int:
        return int(batch["image"].shape[0])

    def predict(self, model: nn.Module, dataset: Any, device: torch.device) -> list[Any]:
        """Keypoints in image pixels for every sample of `dataset` (ground-truth or detector boxes),
        with mmpose's test-time flip (`flip_test=True, shift_heatmap=True`) where the recipe has
        flip indices: the mirrored crop's heatmaps, mirrored back and channel-swapped, averaged in."""
        from training.evaluation import PosePrediction

        h, w = self.recipe.input_size
        predictions = []
        model.eval()
        with torch.no_grad():
            loader = DataLoader(
                dataset, batch_size=32, num_workers=self.options.workers, collate_fn=self.collate
            )
            for batch in loader:
                images = _images(batch["image"], device)  # (N, H, W, 3)
                heatmaps = model(images).float().cpu().numpy()
                if self.recipe.flip_indices:
                    flipped = model(torch.flip(images, dims=[2])).float().cpu().numpy()
                    restored = flip_heatmaps_back(flipped, self.recipe.flip_indices, shift=True)
                    heatmaps = (heatmaps + restored) * 0.5
                coords, scores = decode_heatmaps(heatmaps)
                stride = np.array([w / heatmaps.shape[3], h / heatmaps.shape[2]])
                for i in range(len(heatmaps)):
                    center, scale = batch["center"][i].numpy(), batch["scale"][i].numpy()
                    points = keypoints_to_image(coords[i] * stride, center, scale, (w, h))
                    predictions.append(
                        PosePrediction(
                            image_id=int(batch["image_id"][i]),
                            keypoints=points,
                            keypoint_scores=scores[i],
                            box_score=float(batch["box_score"][i]),
                            area=float(scale[0] * scale[1]),
                        )
                    )
        return predictions

    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        from training import evaluation
        from training.labels import COCO_SIGMAS

        dataset = self._dataset("val", train=False)
        predictions = self.predict(model, dataset, device)
        if self.recipe.dataset == "coco":
            kept = evaluation.rescore_and_nms(predictions, COCO_SIGMAS)
            stats = evaluation.coco_keypoint_ap(
                Path(dataset.annotation_file), evaluation.predictions_to_coco_results(kept), COCO_SIGMAS
            )
            return {k: round(v, 4) for k, v in stats.items() if k in ("AP", "AP50", "AP75", "AR")}
        truth = dataset.ground_truth()
        pred = np.stack([p.keypoints for p in predictions])
        result = evaluation.pckh(pred, truth.keypoints, truth.visible, truth.head_sizes)
        return {"PCKh": round(float(result["PCKh"]), 4)}


class DetectionAdapter:
    """SSDLite on COCO-style boxes: mmdet's SSD loss, pycocotools' box AP (in percent, as the table)."""

    def __init__(self, recipe: Recipe, options: TrainOptions) -> None:
        from training.data.detection import collate

        self.recipe, self.options = recipe, options
        self.collate = collate
        self.size = options.train_size or recipe.input_size

    def _dataset(self, split: str, train: bool) -> Any:
        from training.data.detection import CocoDetectionDataset

        size = self.size if train else self.recipe.input_size
        return CocoDetectionDataset(self.options.data, split, self.recipe.labels(), size, train)

    def train_dataset(self) -> Dataset[Any]:
        return cast(Dataset[Any], self._dataset("train", train=True))

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> torch.Tensor:
        from training.nets.ssdlite import ssd_loss

        return ssd_loss(model, _images(batch["image"], device), batch["boxes"], batch["labels"])

    def batch_images(self, batch: Any) -> int:
        return int(batch["image"].shape[0])

    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        from contract.tasks.detection import Thresholds, postprocess
        from training.export import detection_settings

        h, w = self.recipe.input_size
        settings = detection_settings(self.recipe)
        limits = Thresholds(settings.score_threshold, settings.iou_threshold, settings.max_detections)
        dataset = self._dataset("val", train=False)
        results: list[dict[str, Any]] = []
        model.eval()
        with torch.no_grad():
            loader = DataLoader(
                dataset, batch_size=16, num_workers=self.options.workers, collate_fn=self.collate
            )
            for batch in loader:
                boxes, scores = cast(Any, model).predict(_images(batch["image"], device))
                for i in range(len(boxes)):
                    kept = postprocess(
                        boxes[i].float().cpu().numpy(),
                        scores[i].float().cpu().numpy(),
                        settings,
                        (w, h),
                        batch["size_wh"][i],
                        limits,
                    )
                    for box, score, label in zip(*kept, strict=True):
                        results.append(
                            {
                                "image_id": batch["image_id"][i],
                                "category_id": dataset.category_of[int(label)],
                                "bbox": [
                                    float(box[0]),
                                    float(box[1]),
                                    float(box[2] - box[0]),
                                    float(box[3] - box[1]),
                                ],
                                "score": float(score),
                            }
                        )
        stats = coco_box_ap(dataset.annotation_file, results)
        return {"box_AP": round(100 * stats[0], 2), "box_AP50": round(100 * stats[1], 2)}


def coco_box_ap(annotation_file: Path, results: list[dict[str, Any]]) -> list[float]:
    """pycocotools' `COCOeval(..., "bbox")` stats (AP, AP50, AP75, APs, APm, APl, AR1, ...), in [0, 1]."""
    import contextlib
    import io
    import json

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not results:
        return [0.0] * 12
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO()
        ground_truth.dataset = json.loads(Path(annotation_file).read_text())
        ground_truth.createIndex()
        evaluator = COCOeval(ground_truth, ground_truth.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return [float(v) for v in evaluator.stats]
