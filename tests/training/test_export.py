from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from contract.card import METADATA_KEY, ModelCard, Weights, sha256_file
from contract.repository import CARD_FILE, MODEL_FILE
from training import export
from training.__main__ import main as training_cli
from training.recipes import RECIPES, get_recipe

RANDOM = Weights(source="random-init")


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RECIPES))
def test_every_recipe_exports_with_parity_and_a_truthful_card(name: str, tmp_path: Path) -> None:
    recipe = get_recipe(name)
    folder = export.export_model(recipe.build(), recipe, tmp_path, RANDOM)
    assert folder == tmp_path / name / "1"

    card = ModelCard.read(folder / CARD_FILE)
    onnx_path = folder / MODEL_FILE
    assert card.onnx_sha256 == sha256_file(onnx_path)
    assert card.parity.value <= card.parity.tolerance
    assert card.weights.source == "random-init"
    assert (card.input.height, card.input.width) == recipe.input_size
    assert len(card.labels) == recipe.num_outputs
    embedded = {p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props}
    assert json.loads(embedded[METADATA_KEY])["name"] == name

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (graph_input,) = session.get_inputs()
    assert graph_input.type == "tensor(uint8)"
    assert graph_input.shape[1:] == [*recipe.input_size, 3] and not isinstance(graph_input.shape[0], int)
    graph_outputs = session.get_outputs()
    assert [o.name for o in graph_outputs] == [o.name for o in card.outputs]
    for graph_output, declared in zip(graph_outputs, card.outputs, strict=True):
        assert graph_output.shape[1:] == declared.shape[1:]

    # The batch axis is dynamic, and a batch answers as its images do one by one.
    images = export.parity_images(recipe, n=2, seed=1)
    together = session.run(None, {"image": images})[0]
    alone = np.concatenate([session.run(None, {"image": images[i : i + 1]})[0] for i in range(2)])
    assert together.dtype == np.dtype(card.outputs[0].dtype)
    if recipe.task == "segmentation":
        assert np.mean(together != alone) < 1e-3
        assert together.max() < recipe.num_outputs
    else:
        np.testing.assert_allclose(together, alone, atol=1e-4)
    if recipe.task == "classification":
        np.testing.assert_allclose(together.sum(axis=1), 1.0, atol=1e-5)
    shutil.rmtree(tmp_path)


def test_export_refuses_a_model_beyond_the_parity_tolerance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe = get_recipe("mobilenet-v2_8xb32_in1k")
    strict = export._TaskOutput("probabilities", "float32", "max_abs_diff", -1.0)
    monkeypatch.setitem(export._OUTPUTS, "classification", strict)
    with pytest.raises(export.ParityError, match="over the tolerance"):
        export.export_model(recipe.build(), recipe, tmp_path, RANDOM)
    assert list((tmp_path / recipe.name).iterdir()) == []  # nothing the service could pick up


def test_cli_exports_successive_versions(tmp_path: Path) -> None:
    name = "mobilenet-v2_8xb32_in1k"
    assert training_cli(["export", name, "--out", str(tmp_path)]) == 0
    assert training_cli(["export", name, "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in (tmp_path / name).iterdir()) == ["1", "2"]
    assert ModelCard.read(tmp_path / name / "2" / CARD_FILE).version == 2


def test_cli_names_an_unknown_recipe(capsys: pytest.CaptureFixture[str]) -> None:
    assert training_cli(["export", "resnet50", "--out", "unused"]) == 2
    assert "unknown recipe 'resnet50'" in capsys.readouterr().err


def test_detector_exports_boxes_and_scores_with_dynamic_batch(tmp_path: Path) -> None:
    """A 64×64 SSDLite (the same network, fewer anchors) so the test stays fast."""
    import dataclasses

    recipe = dataclasses.replace(
        get_recipe("ssdlite_mobilenetv2-scratch_8xb24-600e_coco"), input_size=(64, 64)
    )
    folder = export.export_model(recipe.build(), recipe, tmp_path, RANDOM)
    card = ModelCard.read(folder / CARD_FILE)
    assert card.task == "detection" and len(card.labels) == 80 and card.labels[0] == "person"
    assert [o.name for o in card.outputs] == ["boxes", "scores"]
    assert card.detection is not None and sum(card.detection.level_anchors) == card.outputs[0].shape[1]
    assert (card.detection.score_threshold, card.detection.iou_threshold) == (0.02, 0.45)
    assert card.parity.value <= card.parity.tolerance
    session = ort.InferenceSession(str(folder / MODEL_FILE), providers=["CPUExecutionProvider"])
    images = export.parity_images(recipe, n=3, seed=2)
    boxes, scores = session.run(None, {"image": images})
    assert boxes.shape == (3, *card.outputs[0].shape[1:]) and scores.shape == (3, *card.outputs[1].shape[1:])
    one_boxes, one_scores = session.run(None, {"image": images[1:2]})
    np.testing.assert_allclose(one_boxes[0], boxes[1], atol=1e-3)
    np.testing.assert_allclose(one_scores[0], scores[1], atol=1e-5)
    assert boxes.min() >= 0 and boxes.max() <= 64
