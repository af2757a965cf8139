"""Detection: mmdet's test pipeline (Resize to the input, keep_ratio=False) and its post-processing.

The graph answers every anchor's decoded box (input pixels) and class scores (background
dropped). What mmdet's `_predict_by_feat_single` and `_bbox_post_process` do next is here, in
numpy: per head level keep the (anchor, class) pairs scoring above `score_threshold`, at most
`pre_nms_top_k` of them; scale the boxes back to the image; drop empty boxes (`min_bbox_size` 0);
non-maximum suppression class by class (mmcv's `batched_nms`: a box suppresses another of its
class when their IoU exceeds the threshold); keep the `max_detections` highest scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from contract.card import Detection as DetectionSettings
from contract.card import ModelCard
from contract.imaging import DecodedImage
from contract.results import DetectedObject

# mmdet's visualiser palette is per data set; a fixed set of distinct colours, cycled by class.
_COLOURS = (
    (220, 20, 60), (0, 130, 200), (60, 180, 75), (255, 225, 25), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (0, 128, 128),
)  # fmt: skip


@dataclass(frozen=True)
class Thresholds:
    score: float
    iou: float
    max_detections: int


def settings(card: ModelCard) -> DetectionSettings:
    if card.detection is None:
        raise ValueError(f"model {card.name} has no detection settings in its card")
    return card.detection


def thresholds(
    card: ModelCard, score: float | None = None, iou: float | None = None, max_detections: int | None = None
) -> Thresholds:
    """The request's thresholds, the card's (mmdet's `test_cfg`) where the request gives none."""
    base = settings(card)
    return Thresholds(
        score=base.score_threshold if score is None else score,
        iou=base.iou_threshold if iou is None else iou,
        max_detections=base.max_detections if max_detections is None else max_detections,
    )


def needed_size(card: ModelCard) -> tuple[int, int]:
    """(w, h) the image is resized to; a JPEG may be draft-decoded down to it."""
    return card.input.width, card.input.height


def preprocess(decoded: DecodedImage, card: ModelCard, out: np.ndarray) -> None:
    """Resize the whole image to the input, aspect ratio not kept (bilinear), into `out` (H, W, 3)."""
    out[...] = np.asarray(decoded.image.resize(needed_size(card), Image.Resampling.BILINEAR))


# mmpose's top-down demo (demo/topdown_demo_with_mmdet.py): after the detector's own
# post-processing keep class `--det-cat-id 0` (person) scoring above `--bbox-thr 0.3`, then
# mmpose's NMS at `--nms-thr 0.3` (`mmpose.evaluation.functional.nms`, which counts a box's
# pixels inclusively: w = x2 − x1 + 1).
PERSON_LABEL = "person"
PERSON_SCORE_THRESHOLD = 0.3
PERSON_NMS_THRESHOLD = 0.3


def nms(
    boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, pixel: float = 0.0, limit: int | None = None
) -> np.ndarray:
    """Indices kept by greedy NMS, highest score first; suppresses IoU > `iou_threshold`.

    `pixel` 0 measures boxes as mmcv's `nms` does; 1 as mmpose's (inclusive pixel counts). `limit`
    stops after that many kept: the greedy order keeps them first, so they are the same boxes.
    """
    order = np.argsort(-scores, kind="stable")
    # Sorted once into contiguous coordinates: each step then compares the best box left with the
    # slice after it, without gathering the survivors again (a trained detector sends ~1400).
    x1, y1, x2, y2 = (np.ascontiguousarray(boxes[order, k]) for k in range(4))
    areas = (x2 - x1 + pixel) * (y2 - y1 + pixel)
    suppressed = np.zeros(order.size, bool)
    keep: list[int] = []
    tiny = np.finfo(np.float32).tiny
    for best in range(order.size):
        if suppressed[best]:
            continue
        keep.append(best)
        if limit is not None and len(keep) >= limit:
            break
        later = slice(best + 1, None)
        inter = np.clip(np.minimum(x2[best], x2[later]) - np.maximum(x1[best], x1[later]) + pixel, 0, None)
        inter *= np.clip(np.minimum(y2[best], y2[later]) - np.maximum(y1[best], y1[later]) + pixel, 0, None)
        iou = inter / np.maximum(areas[best] + areas[later] - inter, tiny)
        suppressed[later] |= iou > iou_threshold
    return order[np.array(keep, dtype=np.int64)]


def detect(
    boxes: np.ndarray,
    scores: np.ndarray,
    card: ModelCard,
    size_wh: tuple[int, int],
    limits: Thresholds,
    classes: list[int] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's (A, 4) input-pixel boxes and (A, C) scores → image-pixel boxes (n, 4), scores (n,)
    and class indices (n,), highest score first. `classes` keeps only those classes (e.g. [0])."""
    input_wh = (card.input.width, card.input.height)
    return postprocess(boxes, scores, settings(card), input_wh, size_wh, limits, classes)


def postprocess(
    boxes: np.ndarray,
    scores: np.ndarray,
    base: DetectionSettings,
    input_wh: tuple[int, int],
    size_wh: tuple[int, int],
    limits: Thresholds,
    classes: list[int] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`detect` without a card: the settings and the (w, h) of the input the boxes are in."""
    if classes is not None:
        keep_classes = np.zeros(scores.shape[1], bool)
        keep_classes[classes] = True
        scores = np.where(keep_classes[None], scores, 0.0)
    picked_boxes, picked_scores, picked_labels = [], [], []
    start = 0
    for count in base.level_anchors:
        level = scores[start : start + count]
        anchor, label = np.nonzero(level > limits.score)
        values = level[anchor, label]
        if values.size > base.pre_nms_top_k:
            top = np.argsort(-values, kind="stable")[: base.pre_nms_top_k]
            anchor, label, values = anchor[top], label[top], values[top]
        picked_boxes.append(boxes[start + anchor])
        picked_scores.append(values)
        picked_labels.append(label)
        start += count
    kept_boxes = np.concatenate(picked_boxes).astype(np.float64)
    kept_scores = np.concatenate(picked_scores).astype(np.float64)
    kept_labels = np.concatenate(picked_labels)
    width, height = size_wh
    kept_boxes = kept_boxes * np.array([width / input_wh[0], height / input_wh[1]] * 2, np.float64)
    nonempty = (kept_boxes[:, 2] > kept_boxes[:, 0]) & (kept_boxes[:, 3] > kept_boxes[:, 1])
    kept_boxes, kept_scores, kept_labels = kept_boxes[nonempty], kept_scores[nonempty], kept_labels[nonempty]
    chosen = [
        np.flatnonzero(kept_labels == label)[
            nms(
                kept_boxes[kept_labels == label],
                kept_scores[kept_labels == label],
                limits.iou,
                limit=limits.max_detections,
            )
        ]
        for label in np.unique(kept_labels)
    ]
    if not chosen:
        return np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64)
    winners = np.concatenate(chosen)
    winners = winners[np.argsort(-kept_scores[winners], kind="stable")][: limits.max_detections]
    return kept_boxes[winners], kept_scores[winners], kept_labels[winners]


def objects(
    boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, card: ModelCard
) -> list[DetectedObject]:
    return [
        DetectedObject(
            label=card.labels[int(label)],
            index=int(label),
            score=float(score),
            box=(float(box[0]), float(box[1]), float(box[2]), float(box[3])),
        )
        for box, score, label in zip(boxes, scores, labels, strict=True)
    ]


def draw(
    image: Image.Image, found: list[DetectedObject], size_wh: tuple[int, int] | None = None
) -> Image.Image:
    """The image with each object's box and `label score` drawn, lowest score first (best on top).

    `found` is in the pixels of an image of `size_wh` (default: `image`'s own); `image` may be that
    image at another scale (the answer's canvas, at most `ANSWER_MAX_SIDE` a side), drawn at its own.
    """
    canvas = image.convert("RGB")
    pen = ImageDraw.Draw(canvas)
    sx, sy = (canvas.width / size_wh[0], canvas.height / size_wh[1]) if size_wh else (1.0, 1.0)
    width = max(2, round(max(canvas.size) / 300))
    for obj in sorted(found, key=lambda o: o.score):
        colour = _COLOURS[obj.index % len(_COLOURS)]
        x1, y1, x2, y2 = obj.box
        box = (x1 * sx, y1 * sy, x2 * sx, y2 * sy)
        pen.rectangle(box, outline=colour, width=width)
        text = f"{obj.label} {obj.score:.2f}"
        left, top = box[0], max(0.0, box[1] - 12)
        text_box = pen.textbbox((left, top), text)
        pen.rectangle(text_box, fill=colour)
        pen.text((left, top), text, fill=(255, 255, 255))
    return canvas


def people(
    boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, card: ModelCard
) -> tuple[np.ndarray, np.ndarray]:
    """A detector's answer → the person boxes (n, 4) and scores (n,) mmpose's demo would crop."""
    if PERSON_LABEL not in card.labels:
        return np.zeros((0, 4)), np.zeros(0)
    chosen = (labels == card.labels.index(PERSON_LABEL)) & (scores > PERSON_SCORE_THRESHOLD)
    boxes, scores = boxes[chosen], scores[chosen]
    kept = nms(boxes, scores, PERSON_NMS_THRESHOLD, pixel=1.0)
    return boxes[kept], scores[kept]
