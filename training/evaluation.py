"""Metrics as the OpenMMLab results tables define them: top-k accuracy, mIoU, COCO keypoint AP, PCKh.

numpy only, plus pycocotools for COCO AP (imported when used).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "IoUAccumulator",
    "PosePrediction",
    "coco_keypoint_ap",
    "head_size_from_box",
    "oks_nms",
    "pckh",
    "predictions_to_coco_results",
    "rescore_and_nms",
    "topk_accuracy",
]


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Top-k accuracy in [0, 1] for scores (N, C) and integer labels (N,): {"top1": ..., "top5": ...}.

    A k larger than C counts every sample as correct, as mmpretrain does.
    """
    scores = np.asarray(scores)
    labels = np.asarray(labels).reshape(-1)
    if scores.shape[0] != labels.shape[0]:
        raise ValueError(f"{scores.shape[0]} score rows for {labels.shape[0]} labels")
    # Stable sort on the negated scores: ties keep the lower class index first.
    ranking = np.argsort(-scores, axis=1, kind="stable")
    hits = ranking == labels[:, None]
    return {f"top{k}": float(hits[:, :k].any(axis=1).mean()) if len(labels) else float("nan") for k in ks}


class IoUAccumulator:
    """Intersection / union / label-area histograms over a whole set (mmseg's `intersect_and_union`).

    IoU per class = ΣI / ΣU over all images; mIoU = nanmean over classes, so classes that never
    appear in labels or predictions do not count. aAcc = ΣI / Σ label area (all pixels not ignored).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.intersection = np.zeros(num_classes, dtype=np.int64)
        self.union = np.zeros(num_classes, dtype=np.int64)
        self.label_area = np.zeros(num_classes, dtype=np.int64)
        self.pred_area = np.zeros(num_classes, dtype=np.int64)

    def update(self, pred: np.ndarray, label: np.ndarray) -> None:
        """Add one prediction (H, W) (or a batch of them) against its label of the same shape."""
        pred = np.asarray(pred).reshape(-1).astype(np.int64)
        label = np.asarray(label).reshape(-1).astype(np.int64)
        if pred.shape != label.shape:
            raise ValueError(f"prediction has {pred.size} pixels, label {label.size}")
        keep = label != self.ignore_index
        pred, label = pred[keep], label[keep]
        bins = self.num_classes
        hit = pred[pred == label]
        area_intersect = np.bincount(hit[(hit >= 0) & (hit < bins)], minlength=bins)[:bins]
        area_pred = np.bincount(pred[(pred >= 0) & (pred < bins)], minlength=bins)[:bins]
        area_label = np.bincount(label[(label >= 0) & (label < bins)], minlength=bins)[:bins]
        self.intersection += area_intersect
        self.pred_area += area_pred
        self.label_area += area_label
        self.union += area_pred + area_label - area_intersect

    def result(self) -> dict[str, Any]:
        """{"mIoU": float, "aAcc": float, "per_class_iou": list[float]} with NaN for absent classes."""
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = self.intersection / self.union.astype(np.float64)
        iou = np.where(self.union > 0, iou, np.nan)
        total = self.label_area.sum()
        miou = float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")
        return {
            "mIoU": miou,
            "aAcc": float(self.intersection.sum() / total) if total else float("nan"),
            "per_class_iou": [float(v) for v in iou],
        }


@dataclass(frozen=True, eq=False)
class PosePrediction:
    """One person's keypoints in image pixels, as a top-down model predicts them.

    `keypoints` (K, 2) and `keypoint_scores` (K,); `area` is the crop's scale w·h (pixels²), used
    by OKS-NMS; `score` is the instance score given to COCOeval (set by `rescore_and_nms`).
    """

    image_id: int
    keypoints: np.ndarray
    keypoint_scores: np.ndarray
    box_score: float = 1.0
    area: float = 0.0
    score: float = 1.0
    category_id: int = 1


def rescore_and_nms(
    predictions: Iterable[PosePrediction],
    sigmas: Sequence[float],
    keypoint_score_thr: float = 0.2,
    nms_thr: float = 0.9,
) -> list[PosePrediction]:
    """mmpose's CocoMetric post-processing: score = box score × mean keypoint score above the
    threshold (0 when none passes), then OKS-NMS per image at `nms_thr`."""
    by_image: dict[int, list[PosePrediction]] = defaultdict(list)
    for prediction in predictions:
        scores = np.asarray(prediction.keypoint_scores, dtype=np.float64)
        confident = scores[scores > keypoint_score_thr]
        mean_score = float(confident.mean()) if confident.size else 0.0
        by_image[prediction.image_id].append(replace(prediction, score=prediction.box_score * mean_score))
    kept: list[PosePrediction] = []
    for image_id in sorted(by_image):
        instances = by_image[image_id]
        kept.extend(instances[i] for i in oks_nms(instances, nms_thr, sigmas))
    return kept


def _oks(
    reference: np.ndarray, others: np.ndarray, area_ref: float, areas: np.ndarray, sigmas: np.ndarray
) -> np.ndarray:
    """OKS of `reference` (K, 2) against `others` (M, K, 2), scale = mean of the two areas."""
    variances = (sigmas * 2) ** 2
    squared = ((others - reference) ** 2).sum(axis=-1)
    scale = (area_ref + areas)[:, None] / 2 + np.spacing(1)
    return np.exp(-squared / variances / scale / 2).mean(axis=-1)


def oks_nms(instances: Sequence[PosePrediction], threshold: float, sigmas: Sequence[float]) -> list[int]:
    """Greedy NMS by OKS (mmpose's `oks_nms`): indices of the kept instances, best score first."""
    if not instances:
        return []
    sigmas_array = np.asarray(sigmas, dtype=np.float64)
    scores = np.array([p.score for p in instances])
    keypoints = np.stack([np.asarray(p.keypoints, dtype=np.float64) for p in instances])
    areas = np.array([p.area for p in instances], dtype=np.float64)
    order = scores.argsort(kind="stable")[::-1]
    keep: list[int] = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        overlap = _oks(keypoints[best], keypoints[rest], areas[best], areas[rest], sigmas_array)
        order = rest[overlap <= threshold]
    return keep


def predictions_to_coco_results(predictions: Iterable[PosePrediction]) -> list[dict[str, Any]]:
    """COCO keypoint results format: keypoints [x, y, score] × K flattened, plus the instance score."""
    results = []
    for p in predictions:
        triples = np.concatenate(
            [np.asarray(p.keypoints, dtype=np.float64), np.asarray(p.keypoint_scores, np.float64)[:, None]],
            axis=1,
        )
        results.append(
            {
                "image_id": int(p.image_id),
                "category_id": int(p.category_id),
                "keypoints": [float(v) for v in triples.reshape(-1)],
                "score": float(p.score),
            }
        )
    return results


_COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


def coco_keypoint_ap(
    ground_truth: str | Path | dict[str, Any], results: list[dict[str, Any]], sigmas: Sequence[float]
) -> dict[str, float]:
    """COCO keypoint AP via pycocotools `COCOeval(..., "keypoints")` with the given OKS sigmas.

    `ground_truth` is a person_keypoints JSON path or its loaded dict; `results` are in the COCO
    results format (`image_id`, `category_id`, `keypoints` [x, y, s] × K, `score`). Returns AP,
    AP50, AP75, APm, APl, AR, AR50, AR75, ARm, ARl in [0, 1] (-1 where an area range is empty).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not results:
        return dict.fromkeys(_COCO_STAT_NAMES, 0.0)
    if isinstance(ground_truth, dict):
        dataset = copy.deepcopy(ground_truth)
    else:
        dataset = json.loads(Path(ground_truth).read_text())
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = dataset
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))
        evaluator = COCOeval(coco_gt, coco_dt, "keypoints")
        evaluator.params.useSegm = None
        evaluator.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(value) for name, value in zip(_COCO_STAT_NAMES, evaluator.stats, strict=True)}


def pckh(
    pred: np.ndarray,
    gt: np.ndarray,
    visible: np.ndarray,
    head_sizes: np.ndarray,
    threshold: float = 0.5,
    exclude: Sequence[int] = (6, 7),
) -> dict[str, Any]:
    """Fraction of visible joints within `threshold` × head size of the truth, in [0, 1].

    pred, gt (N, K, 2) pixels; visible (N, K) bool/0-1; head_sizes (N,) pixels, = 0.6 × the head
    box diagonal in MPII's evaluation (see `head_size_from_box`). Pelvis (6) and thorax (7) are
    left out of the mean by default, as mmpose reports MPII. The mean is weighted by visible
    counts (MPII's official script). Returns {"PCKh": mean, "PCKh_per_joint": (K,) list, NaN
    where a joint is never visible}.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    visible = np.asarray(visible).astype(bool)
    head_sizes = np.asarray(head_sizes, dtype=np.float64)
    distance = np.linalg.norm(pred - gt, axis=-1) / head_sizes[:, None]
    correct = (distance <= threshold) & visible
    visible_count = visible.sum(axis=0)
    correct_count = correct.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_joint = np.where(visible_count > 0, correct_count / visible_count, np.nan)
    included = np.ones(pred.shape[1], dtype=bool)
    included[list(exclude)] = False
    total = visible_count[included].sum()
    mean = float(correct_count[included].sum() / total) if total else float("nan")
    return {"PCKh": mean, "PCKh_per_joint": [float(v) for v in per_joint]}


def head_size_from_box(head_boxes_xyxy: np.ndarray) -> np.ndarray:
    """MPII head size: 0.6 × the diagonal of the head box; boxes (N, 4) -> sizes (N,) pixels."""
    boxes = np.asarray(head_boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    return 0.6 * np.linalg.norm(boxes[:, 2:] - boxes[:, :2], axis=1)
