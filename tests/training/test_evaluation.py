from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from training.evaluation import (
    IoUAccumulator,
    PosePrediction,
    coco_keypoint_ap,
    head_size_from_box,
    oks_nms,
    pckh,
    predictions_to_coco_results,
    rescore_and_nms,
    topk_accuracy,
)
from training.labels import COCO_SIGMAS

SIGMAS = COCO_SIGMAS


def test_topk_accuracy_on_a_tiny_case() -> None:
    scores = np.array(
        [
            [0.1, 0.5, 0.2, 0.0, 0.0, 0.0, 0.2],  # label 1: top-1 hit
            [0.4, 0.3, 0.2, 0.1, 0.0, 0.0, 0.0],  # label 2: rank 3, top-5 hit
            [0.6, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05],  # label 6: ties keep index order, rank 7
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.1, 0.9],  # label 5: rank 2
        ]
    )
    labels = np.array([1, 2, 6, 5])
    result = topk_accuracy(scores, labels, ks=(1, 2, 5))
    assert result == {"top1": 0.25, "top2": 0.5, "top5": 0.75}


def test_iou_accumulator_matches_a_hand_count_with_ignored_pixels() -> None:
    label = np.array([[0, 0, 1, 1], [0, 255, 1, 2], [255, 255, 2, 2]])
    pred = np.array([[0, 1, 1, 1], [0, 2, 1, 2], [0, 1, 1, 2]])
    acc = IoUAccumulator(num_classes=4)
    acc.update(pred, label)
    # The 9 labelled pixels, by class (ignored pixels drop out of prediction and label alike):
    #   class 0: label 3, predicted 2, both 2 -> IoU 2 / 3
    #   class 1: label 3, predicted 5, both 3 -> IoU 3 / 5
    #   class 2: label 3, predicted 2, both 2 -> IoU 2 / 3;  class 3 never appears.
    result = acc.result()
    intersection = np.array([2, 3, 2, 0])
    label_area = np.array([3, 3, 3, 0])
    pred_area = np.array([2, 5, 2, 0])
    union = label_area + pred_area - intersection
    expected = [2 / 3, 3 / 5, 2 / 3]
    np.testing.assert_allclose(result["per_class_iou"][:3], expected)
    np.testing.assert_array_equal(acc.union, union)
    assert math.isnan(result["per_class_iou"][3])  # never appears: left out of the mean
    assert result["mIoU"] == pytest.approx(np.mean(expected))
    assert result["aAcc"] == pytest.approx(7 / 9)


def test_iou_accumulator_sums_histograms_over_the_set_rather_than_averaging_images() -> None:
    acc = IoUAccumulator(num_classes=2)
    acc.update(np.array([[0, 0]]), np.array([[0, 1]]))  # class 1 missed once
    acc.update(np.ones((4, 4), dtype=np.int64), np.ones((4, 4), dtype=np.int64))  # 16 hits of class 1
    result = acc.result()
    # class 0: I 1, U 2; class 1: I 16, U 17 (per-image averaging would give (0 + 1) / 2 for class 1).
    np.testing.assert_allclose(result["per_class_iou"], [1 / 2, 16 / 17])


def _person(x0: float, y0: float, size: float) -> list[float]:
    """17 keypoints spread over a size × size box, all visible, as a COCO keypoints list."""
    grid = np.linspace(0.1, 0.9, 17)
    triples = []
    for k, t in enumerate(grid):
        triples += [x0 + t * size, y0 + ((k * 7) % 17) / 17 * size, 2]
    return triples


def _ground_truth() -> dict[str, Any]:
    people = [(1, 10.0, 10.0, 80.0), (1, 150.0, 40.0, 150.0), (2, 30.0, 20.0, 120.0)]
    annotations = [
        {
            "id": i + 1,
            "image_id": image_id,
            "category_id": 1,
            "keypoints": _person(x0, y0, size),
            "num_keypoints": 17,
            "bbox": [x0, y0, size, size],
            "area": size * size * 0.5,
            "iscrowd": 0,
        }
        for i, (image_id, x0, y0, size) in enumerate(people)
    ]
    return {
        "images": [{"id": 1, "width": 320, "height": 240}, {"id": 2, "width": 320, "height": 240}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "person"}],
    }


def _results_from(gt: dict[str, Any], noise: float = 0.0, seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    results = []
    for ann in gt["annotations"]:
        triples = np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
        triples[:, :2] += rng.normal(0, noise, size=(17, 2)) if noise else 0.0
        triples[:, 2] = 0.9
        results.append(
            {
                "image_id": ann["image_id"],
                "category_id": 1,
                "keypoints": triples.reshape(-1).tolist(),
                "score": 0.9,
            }
        )
    return results


def test_coco_keypoint_ap_is_one_when_predictions_equal_the_ground_truth() -> None:
    gt = _ground_truth()
    stats = coco_keypoint_ap(gt, _results_from(gt), SIGMAS)
    assert stats["AP"] == pytest.approx(1.0)
    assert stats["AP50"] == pytest.approx(1.0) and stats["AR"] == pytest.approx(1.0)
    assert stats["APm"] == pytest.approx(1.0) and stats["APl"] == pytest.approx(1.0)


def test_coco_keypoint_ap_drops_for_perturbed_predictions(tmp_path: Path) -> None:
    gt = _ground_truth()
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    perfect = coco_keypoint_ap(path, _results_from(gt), SIGMAS)["AP"]
    perturbed = coco_keypoint_ap(path, _results_from(gt, noise=6.0), SIGMAS)["AP"]
    assert perturbed < perfect - 0.1
    assert coco_keypoint_ap(gt, [], SIGMAS)["AP"] == 0.0


def test_rescore_uses_box_score_times_mean_confident_keypoint_score() -> None:
    keypoints = np.zeros((17, 2))
    scores = np.array([0.1] * 7 + [0.6] * 5 + [0.9] * 5)  # mean above 0.2 = 0.75
    prediction = PosePrediction(
        image_id=1, keypoints=keypoints, keypoint_scores=scores, box_score=0.8, area=1e4
    )
    (kept,) = rescore_and_nms([prediction], SIGMAS)
    assert kept.score == pytest.approx(0.8 * 0.75)
    no_confident = PosePrediction(
        image_id=2, keypoints=keypoints, keypoint_scores=np.full(17, 0.1), box_score=1.0
    )
    assert rescore_and_nms([no_confident], SIGMAS)[0].score == 0.0


def test_oks_nms_drops_near_duplicates_and_keeps_distinct_people() -> None:
    base = np.asarray(_person(10, 10, 100), dtype=np.float64).reshape(-1, 3)[:, :2]
    people = [
        PosePrediction(1, base, np.full(17, 0.9), area=5000.0, score=0.9),
        PosePrediction(1, base + 0.5, np.full(17, 0.9), area=5000.0, score=0.8),  # duplicate
        PosePrediction(1, base + 120.0, np.full(17, 0.9), area=5000.0, score=0.7),  # someone else
    ]
    assert oks_nms(people, 0.9, SIGMAS) == [0, 2]
    results = predictions_to_coco_results(people[:1])
    assert len(results[0]["keypoints"]) == 51 and results[0]["keypoints"][2] == pytest.approx(0.9)


def test_pckh_by_hand_excludes_pelvis_and_thorax() -> None:
    gt = np.zeros((2, 16, 2))
    pred = np.zeros((2, 16, 2))
    head_sizes = np.array([10.0, 20.0])
    pred[0, 0] = [6.0, 0.0]  # 0.6 head sizes off: wrong
    pred[1, 0] = [6.0, 0.0]  # 0.3 head sizes off: right
    pred[0, 1] = [0.0, 5.0]  # exactly 0.5: right (<=)
    pred[0, 6] = [100.0, 0.0]  # pelvis, excluded from the mean
    visible = np.ones((2, 16), dtype=bool)
    visible[1, 2] = False  # not counted
    result = pckh(pred, gt, visible, head_sizes)
    # 14 joints included, 28 visible minus 1 = 27, one miss -> 26 / 27.
    assert result["PCKh"] == pytest.approx(26 / 27)
    assert result["PCKh_per_joint"][0] == pytest.approx(0.5)
    assert result["PCKh_per_joint"][6] == pytest.approx(0.5)
    assert result["PCKh_per_joint"][2] == pytest.approx(1.0)


def test_head_size_is_point_six_of_the_head_box_diagonal() -> None:
    np.testing.assert_allclose(head_size_from_box(np.array([[0, 0, 30, 40]])), [30.0])
