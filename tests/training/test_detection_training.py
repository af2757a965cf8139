"""Training the detector: mmdet's assigner, the SSD loss, COCO-style boxes, pycocotools' box AP."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from training.data.detection import CocoDetectionDataset, collate
from training.data.synthetic.figures import write_coco_pose
from training.engine import TrainOptions, lr_at, train
from training.nets.ssdlite import SSDLiteDetector, assign, ssd_loss
from training.recipes import get_recipe
from training.tasks import coco_box_ap

RECIPE = get_recipe("ssdlite_mobilenetv2-scratch_8xb24-600e_coco")
SMALL = replace(RECIPE, input_size=(96, 96))


@pytest.fixture(scope="module")
def figures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_coco_pose(tmp_path_factory.mktemp("figures"), n_train=8, n_val=4, size_wh=(160, 128), seed=5)


def test_assigner_takes_iou_half_and_each_boxs_best_anchor() -> None:
    anchors = torch.tensor(
        [[0, 0, 10, 10], [0, 0, 10, 12], [50, 50, 60, 60], [100, 100, 200, 200]], dtype=torch.float
    )
    gts = torch.tensor([[0, 0, 10, 10], [50, 50, 70, 70]], dtype=torch.float)
    assigned = assign(anchors, gts)
    # Anchor 1 overlaps box 0 at IoU 100/120 ≥ 0.5; box 1's best anchor (IoU 0.25) is still its own.
    assert assigned.tolist() == [0, 0, 1, -1]


def test_dataset_reads_person_boxes_scaled_to_the_input(figures: Path) -> None:
    dataset = CocoDetectionDataset(figures, "val", RECIPE.labels(), (96, 96), train=False)
    sample = dataset[0]
    assert sample["image"].shape == (96, 96, 3) and sample["image"].dtype == torch.uint8
    assert sample["size_wh"] == (160, 128)
    assert len(sample["boxes"]) >= 1 and (sample["labels"] == 0).all()  # person is COCO label 0
    assert float(sample["boxes"].max()) <= 96.5 and dataset.category_of[0] == 1


def test_ssd_loss_falls_when_fitting_one_batch(figures: Path) -> None:
    torch.manual_seed(0)
    dataset = CocoDetectionDataset(figures, "train", RECIPE.labels(), (96, 96), train=False)
    batch = collate([dataset[i] for i in range(4)])
    model = SMALL.build().train()
    assert isinstance(model, SSDLiteDetector)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(15):
        loss = ssd_loss(model, batch["image"], batch["boxes"], batch["labels"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.6 * losses[0]


def test_box_ap_is_one_for_the_ground_truth_and_zero_for_misses(figures: Path) -> None:
    dataset = CocoDetectionDataset(figures, "val", RECIPE.labels(), (96, 96), train=False)
    import json

    document = json.loads(dataset.annotation_file.read_text())
    perfect = [
        {"image_id": a["image_id"], "category_id": 1, "bbox": a["bbox"], "score": 0.9}
        for a in document["annotations"]
    ]
    assert coco_box_ap(dataset.annotation_file, perfect)[0] == pytest.approx(1.0)
    shifted = [{**r, "bbox": [r["bbox"][0] + 500, *r["bbox"][1:]]} for r in perfect]
    assert coco_box_ap(dataset.annotation_file, shifted)[0] == pytest.approx(0.0)


def test_cosine_schedule_anneals_to_zero_by_epoch() -> None:
    schedule = replace(RECIPE.schedule, warmup_iterations=0)
    assert lr_at(schedule, 0, 100, 10, 10) == pytest.approx(0.015)
    assert lr_at(schedule, 50, 100, 10, 10) == pytest.approx(0.0075)
    assert lr_at(schedule, 99, 100, 10, 10) < 0.001


def test_engine_trains_and_evaluates_box_ap(figures: Path, tmp_path: Path) -> None:
    options = TrainOptions(
        data=figures, run_dir=tmp_path / "run", iterations=2, batch_size=4, workers=0, device="cpu"
    )
    result = train(SMALL, options)
    assert set(result.metrics) == {"box_AP", "box_AP50"}
    assert 0.0 <= result.metrics["box_AP"] <= 100.0
