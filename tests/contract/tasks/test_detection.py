"""Detection post-processing as mmdet's: per-level top-k above the threshold, per-class NMS, max_per_img."""

from __future__ import annotations

import numpy as np
from PIL import Image

from contract.card import Detection, InputSpec, ModelCard, OutputSpec, Parity, Preprocess, Weights
from contract.imaging import DecodedImage
from contract.tasks import detection

LABELS = ["person", "dog", "cat"]


def card(level_anchors: list[int], pre_nms_top_k: int = 1000) -> ModelCard:
    anchors = sum(level_anchors)
    return ModelCard(
        name="tiny-detector",
        version=1,
        task="detection",
        recipe="tiny",
        dataset="none",
        input=InputSpec(height=64, width=64, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
        outputs=[
            OutputSpec(name="boxes", dtype="float32", shape=[-1, anchors, 4]),
            OutputSpec(name="scores", dtype="float32", shape=[-1, anchors, len(LABELS)]),
        ],
        preprocess=Preprocess(keep_ratio=False),
        labels=LABELS,
        detection=Detection(
            score_threshold=0.02,
            iou_threshold=0.45,
            max_detections=200,
            pre_nms_top_k=pre_nms_top_k,
            level_anchors=level_anchors,
        ),
        weights=Weights(source="random-init"),
        parameters=0,
        parity=Parity(metric="max_abs_diff", value=0.0, tolerance=0.0, images=0),
        opset=17,
        created="2026-01-01T00:00:00+00:00",
        onnx_sha256="",
    )


def scores_for(entries: list[tuple[int, int, float]], anchors: int) -> np.ndarray:
    scores = np.zeros((anchors, len(LABELS)), np.float32)
    for anchor, label, value in entries:
        scores[anchor, label] = value
    return scores


BOXES = np.array(
    [[0, 0, 20, 20], [1, 1, 21, 21], [40, 40, 60, 60], [0, 0, 20, 20]], np.float32
)  # 0 and 1 overlap (IoU 0.82); 3 is 0's twin


def test_overlapping_boxes_of_one_class_suppress_each_other_but_not_across_classes() -> None:
    c = card([4])
    scores = scores_for([(0, 0, 0.9), (1, 0, 0.8), (2, 0, 0.7), (3, 1, 0.6)], 4)
    boxes, kept, labels = detection.detect(BOXES, scores, c, (64, 64), detection.thresholds(c))
    assert kept.tolist() == [np.float32(0.9), np.float32(0.7), np.float32(0.6)]
    assert labels.tolist() == [0, 0, 1]
    np.testing.assert_allclose(boxes[2], [0, 0, 20, 20])


def test_iou_at_the_threshold_is_kept_as_mmcv_keeps_it() -> None:
    c = card([2])
    # Intersection 10×20 = 200, union 400 + 400 − 200 = 600: IoU 1/3.
    pair = np.array([[0, 0, 20, 20], [10, 0, 30, 20]], np.float32)
    scores = scores_for([(0, 0, 0.9), (1, 0, 0.8)], 2)
    kept = detection.detect(pair, scores, c, (64, 64), detection.Thresholds(0.02, 1 / 3, 200))[1]
    assert len(kept) == 2
    kept = detection.detect(pair, scores, c, (64, 64), detection.Thresholds(0.02, 0.33, 200))[1]
    assert len(kept) == 1


def test_scores_must_exceed_the_threshold_and_max_detections_caps_the_answer() -> None:
    c = card([4])
    scores = scores_for([(0, 0, 0.02), (2, 0, 0.5), (3, 1, 0.4), (1, 2, 0.3)], 4)
    kept = detection.detect(BOXES, scores, c, (64, 64), detection.thresholds(c))[1]
    assert len(kept) == 3  # 0.02 is not above 0.02
    kept = detection.detect(BOXES, scores, c, (64, 64), detection.thresholds(c, max_detections=2))[1]
    assert kept.tolist() == [np.float32(0.5), np.float32(0.4)]


def test_pre_nms_top_k_counts_per_level() -> None:
    c = card([2, 2], pre_nms_top_k=1)
    # Level 0 holds anchors 0-1, level 1 anchors 2-3: one pair survives from each level.
    scores = scores_for([(0, 0, 0.3), (1, 2, 0.9), (2, 0, 0.5), (3, 1, 0.8)], 4)
    _, kept, labels = detection.detect(BOXES, scores, c, (64, 64), detection.thresholds(c))
    assert sorted(zip(kept.tolist(), labels.tolist(), strict=True)) == [
        (np.float32(0.8), 1),
        (np.float32(0.9), 2),
    ]


def test_boxes_are_scaled_back_to_the_image_axis_by_axis() -> None:
    c = card([4])
    scores = scores_for([(2, 1, 0.9)], 4)
    boxes, _, _ = detection.detect(BOXES, scores, c, (640, 32), detection.thresholds(c))
    np.testing.assert_allclose(boxes, [[400, 20, 600, 30]])  # × 10 across, × 0.5 down


def test_classes_restricts_to_people() -> None:
    c = card([4])
    scores = scores_for([(0, 1, 0.9), (2, 0, 0.5)], 4)
    _, kept, labels = detection.detect(BOXES, scores, c, (64, 64), detection.thresholds(c), classes=[0])
    assert labels.tolist() == [0] and kept.tolist() == [np.float32(0.5)]


def test_nothing_above_the_threshold_answers_no_objects() -> None:
    c = card([4])
    boxes, kept, labels = detection.detect(
        BOXES, np.zeros((4, 3), np.float32), c, (64, 64), detection.thresholds(c)
    )
    assert boxes.shape == (0, 4) and kept.size == 0 and labels.size == 0


def test_preprocess_resizes_without_keeping_the_aspect_ratio() -> None:
    c = card([4])
    image = Image.new("RGB", (200, 50), (10, 20, 30))
    out = np.zeros((64, 64, 3), np.uint8)
    detection.preprocess(DecodedImage(image, image.size), c, out)
    assert (out == (10, 20, 30)).all()


def test_draw_marks_the_boxes() -> None:
    image = Image.new("RGB", (100, 100))
    found = detection.objects(np.array([[10.0, 20.0, 60.0, 80.0]]), np.array([0.9]), np.array([1]), card([1]))
    drawn = np.asarray(detection.draw(image, found))
    assert drawn[50, 10].any() and not drawn[50, 30].any()


def test_people_keeps_persons_above_0_3_after_mmposes_nms_at_0_3() -> None:
    c = card([4])
    boxes = np.array([[0, 0, 9, 9], [0, 5, 9, 14], [20, 20, 40, 40], [50, 50, 60, 60]], np.float64)
    # Inclusive pixels: 10×10 boxes overlapping 10×5 → IoU 50 / 150 = 1/3 > 0.3: the second goes.
    scores = np.array([0.9, 0.8, 0.3, 0.7])
    labels = np.array([0, 0, 0, 1])
    kept, kept_scores = detection.people(boxes, scores, labels, c)
    assert kept.tolist() == [[0, 0, 9, 9]] and kept_scores.tolist() == [0.9]  # 0.3 is not above 0.3


def test_mmpose_nms_counts_pixels_inclusively() -> None:
    # Exclusive: 2×2 boxes sharing 1×2 → IoU 2 / 6 = 0.33; inclusive: 3×3 sharing 2×3 → 6 / 12 = 0.5.
    pair = np.array([[0, 0, 2, 2], [1, 0, 3, 2]], np.float64)
    scores = np.array([0.9, 0.8])
    assert len(detection.nms(pair, scores, 0.4)) == 2
    assert len(detection.nms(pair, scores, 0.4, pixel=1.0)) == 1


def _iou(a: np.ndarray, b: np.ndarray, pixel: float) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + pixel)
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + pixel)
    area = lambda box: (box[2] - box[0] + pixel) * (box[3] - box[1] + pixel)  # noqa: E731
    return w * h / max(area(a) + area(b) - w * h, np.finfo(np.float32).tiny)


def _greedy_nms_by_definition(
    boxes: np.ndarray, scores: np.ndarray, threshold: float, pixel: float
) -> list[int]:
    """The definition, one pair at a time: take the best box left, drop those overlapping it more."""
    left = sorted(range(len(scores)), key=lambda i: -scores[i])  # stable: ties keep input order
    kept = []
    while left:
        best = left.pop(0)
        kept.append(best)
        left = [other for other in left if _iou(boxes[best], boxes[other], pixel) <= threshold]
    return kept


def test_nms_keeps_what_the_greedy_definition_keeps_and_a_limit_keeps_its_first_ones() -> None:
    rng = np.random.default_rng(7)
    for trial in range(60):
        n = int(rng.integers(0, 120))
        corner = rng.uniform(0, 60, (n, 2))
        boxes = np.concatenate([corner, corner + rng.uniform(0.5, 30, (n, 2))], 1)
        # Every other trial draws scores from a few values, so that ties are common.
        scores = rng.choice(np.linspace(0, 1, 8), n) if trial % 2 else rng.uniform(0, 1, n)
        for pixel, threshold in ((0.0, 0.45), (1.0, 0.3)):
            expected = _greedy_nms_by_definition(boxes, scores, threshold, pixel)
            assert detection.nms(boxes, scores, threshold, pixel).tolist() == expected
            assert detection.nms(boxes, scores, threshold, pixel, limit=5).tolist() == expected[:5]
