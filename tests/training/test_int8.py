"""`export --int8`: calibrated on the user's images as the service prepares them, checked against
float32 on held-out ones, refused beyond the tolerance, and served."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from contract.card import ModelCard
from training import int8
from training.__main__ import main as training_cli
from training.data.synthetic import generate

CLASSIFIER = "mobilenet-v2_8xb32_in1k"
POSE = "td-hm_mobilenetv2_8xb64-210e_coco-256x192"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate("classification", tmp_path_factory.mktemp("shapes"), n_train=1, n_val=16, seed=4) / "val"


def test_an_int8_classifier_records_its_agreement_and_is_served(tmp_path: Path, images: Path) -> None:
    from tests.app.conftest import serve

    torch.manual_seed(0)
    models = tmp_path / "models"
    assert training_cli(["export", CLASSIFIER, "--int8", str(images), "--out", str(models)]) == 0
    card = ModelCard.read(models / CLASSIFIER / "1" / "card.json")
    assert card.precision == "int8" and card.quantization is not None
    agreement = card.quantization.agreement
    assert (agreement.metric, agreement.images) == ("top1_disagreement", 8)
    assert agreement.value <= agreement.tolerance and card.quantization.calibration_images == 8
    assert card.quantization.speedup > 0
    onnx_text = (models / CLASSIFIER / "1" / "model.onnx").read_bytes()
    assert b"QuantizeLinear" in onnx_text and b"DequantizeLinear" in onnx_text
    image = next(images.rglob("*.JPEG")).read_bytes()
    with serve(models) as server, server.client() as client:
        answer = client.post("/v1/classify", params={"model": CLASSIFIER}, files={"file": image})
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["results"][0]["predictions"]) == 5


def test_int8_beyond_its_tolerance_is_refused_and_writes_nothing(
    tmp_path: Path, images: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(int8.AGREEMENT, "pose", ("heatmap_max_abs_diff", -1.0))  # nothing can pass
    models = tmp_path / "models"
    assert training_cli(["export", POSE, "--int8", str(images), "--out", str(models)]) == 2
    assert "over the tolerance" in capsys.readouterr().err
    assert not list((models / POSE).glob("*/model.onnx"))


def test_int8_needs_enough_images_to_calibrate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    few = tmp_path / "few"
    few.mkdir()
    assert training_cli(["export", CLASSIFIER, "--int8", str(few), "--out", str(tmp_path / "m")]) == 2
    assert "at least 8 images" in capsys.readouterr().err
