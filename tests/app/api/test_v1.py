"""The task endpoints over HTTP, against a real server and real ONNX Runtime sessions."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from contract.card import ModelCard
from contract.imaging import decode_image
from contract.tasks import classification, pose, segmentation
from tests.app.conftest import RunningServer, encode, metric_value, read_card, scene, serve

JPEG = "image/jpeg"


def session_for(onnx_path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])


def test_models_lists_task_input_size_labels_provider_and_version(
    client: httpx.Client, names: dict[str, str]
) -> None:
    models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert set(names.values()) <= set(models)
    for task, name in names.items():
        info = models[name]
        assert (info["task"], info["state"], info["version"], info["default"]) == (task, "ready", 1, True)
        assert info["provider"] == "CPUExecutionProvider"
        assert info["num_labels"] > 0 and info["input"]["height"] > 0


def test_model_card_is_served_by_name(client: httpx.Client, names: dict[str, str]) -> None:
    card = client.get(f"/v1/models/{names['pose']}").json()
    assert (card["task"], card["name"]) == ("pose", names["pose"])
    assert card["flip_indices"] and card["skeleton"]
    missing = client.get("/v1/models/nope")
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "model_not_found")


def test_classify_answers_top_k_sorted_predictions_for_each_uploaded_image(
    client: httpx.Client, names: dict[str, str]
) -> None:
    files = [("file", ("a.jpg", encode(scene(640, 480, 1), "JPEG"), JPEG)),
             ("file", ("b.png", encode(scene(300, 500, 2)), "image/png"))]  # fmt: skip
    response = client.post("/v1/classify", params={"top_k": 3}, files=files)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model"], body["version"]) == (names["classification"], 1)
    assert [r["image"] for r in body["results"]] == [
        {"width": 640, "height": 480},
        {"width": 300, "height": 500},
    ]
    for result in body["results"]:
        scores = [p["score"] for p in result["predictions"]]
        assert len(scores) == 3 and scores == sorted(scores, reverse=True)
    assert set(body["timing"]) == {"preprocess_ms", "queue_ms", "inference_ms", "total_ms"}
    assert body["timing"]["total_ms"] >= body["timing"]["inference_ms"] > 0


def test_classify_probabilities_equal_a_direct_onnxruntime_run(
    client: httpx.Client, model_repository: Path, names: dict[str, str]
) -> None:
    card, onnx_path = read_card(model_repository, names["classification"])
    data = encode(scene(500, 375, 3), "JPEG", quality=90)
    response = client.post(
        "/v1/classify", params={"top_k": len(card.labels)}, content=data, headers={"content-type": JPEG}
    )
    assert response.status_code == 200, response.text
    served = np.zeros(len(card.labels))
    for prediction in response.json()["results"][0]["predictions"]:
        served[prediction["index"]] = prediction["score"]

    tensor = np.zeros((1, card.input.height, card.input.width, 3), np.uint8)
    decoded = decode_image(data, 10**8, lambda _: classification.needed_size(card))
    classification.preprocess(decoded, card, tensor[0])
    direct = session_for(onnx_path).run(None, {card.input.name: tensor})[0][0]
    assert direct.std() > 1e-5  # the weights make images distinguishable
    np.testing.assert_allclose(served, direct, rtol=0, atol=1e-6)


def offline_mask(data: bytes, card: ModelCard, onnx_path: Path) -> np.ndarray:
    """The service's preprocessing, a direct session run and the service's postprocessing."""
    tensor = np.zeros((1, card.input.height, card.input.width, 3), np.uint8)
    decoded = decode_image(data, 10**8, lambda size: segmentation.resized_size(size, card))
    fitted = segmentation.preprocess(decoded, card, tensor[0])
    mask = session_for(onnx_path).run(None, {card.input.name: tensor})[0][0]
    return segmentation.mask_to_image_size(mask, fitted, decoded.size)


# Smaller than the canvas's image area (the mask is scaled down), and larger (scaled up ×2.1).
@pytest.mark.parametrize("size", [(700, 500), (1600, 900)], ids=["down", "up"])
def test_segment_json_mask_equals_the_offline_mask_and_fractions_count_its_pixels(
    client: httpx.Client, model_repository: Path, names: dict[str, str], size: tuple[int, int]
) -> None:
    data = encode(scene(*size, 4), "JPEG")
    response = client.post("/v1/segment", files={"file": ("s.jpg", data, JPEG)})
    assert response.status_code == 200, response.text
    [result] = response.json()["results"]
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(result["mask_png"]))))
    expected = offline_mask(data, *read_card(model_repository, names["segmentation"]))
    assert mask.shape == (size[1], size[0]) == expected.shape
    assert np.array_equal(mask, expected)
    assert len(np.unique(expected)) > 1
    counts = np.bincount(expected.ravel())
    fractions = {c["index"]: c["fraction"] for c in result["classes"]}
    assert fractions == {i: counts[i] / expected.size for i in np.flatnonzero(counts)}  # exactly


def test_segment_png_is_a_palette_mask_of_class_indices_at_the_image_size(
    client: httpx.Client, names: dict[str, str]
) -> None:
    response = client.post(
        "/v1/segment",
        params={"format": "png"},
        content=encode(scene(333, 250, 5)),
        headers={"content-type": "image/png"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-model"] == names["segmentation"]
    assert "inference;dur=" in response.headers["server-timing"]
    mask = Image.open(io.BytesIO(response.content))
    assert (mask.mode, mask.size) == ("P", (333, 250))
    assert np.asarray(mask).max() < 19


def test_segment_overlay_answers_the_blended_image_as_jpeg(client: httpx.Client) -> None:
    response = client.post(
        "/v1/segment",
        params={"overlay": "true", "format": "jpeg"},
        content=encode(scene(320, 240, 6), "JPEG"),
        headers={"content-type": JPEG},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == JPEG
    assert Image.open(io.BytesIO(response.content)).size == (320, 240)


def test_pose_answers_keypoints_for_each_box_in_image_coordinates(
    client: httpx.Client, model_repository: Path, names: dict[str, str]
) -> None:
    card, onnx_path = read_card(model_repository, names["pose"])
    image = scene(640, 480, 7)
    boxes = [[50, 40, 250, 440], [300.5, 100, 420, 330]]
    response = client.post(
        "/v1/pose", files={"file": ("p.png", encode(image), "image/png")}, data={"boxes": json.dumps(boxes)}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == names["pose"]
    assert body["skeleton"][0] == [card.labels[a] for a in card.skeleton[0]]  # type: ignore[index]
    assert [p["box"] for p in body["people"]] == boxes

    crops = np.zeros((2, card.input.height, card.input.width, 3), np.uint8)
    where = pose.crop_people(image, np.array(boxes, float), card, crops, flip=False)
    heatmaps = session_for(onnx_path).run(None, {"image": crops})[0]
    keypoints, scores = pose.decode_people(heatmaps, where, card, flip=False)
    for person, expected_xy, expected_scores in zip(body["people"], keypoints, scores, strict=True):
        served = np.array([[k["x"], k["y"]] for k in person["keypoints"]])
        np.testing.assert_allclose(served, expected_xy, atol=1e-3)
        assert person["score"] == pytest.approx(float(np.mean(expected_scores)), abs=1e-5)
        assert [k["name"] for k in person["keypoints"]] == card.labels


def test_pose_of_a_jpeg_crops_a_reduced_decode_and_answers_in_full_image_pixels(
    client: httpx.Client, model_repository: Path, names: dict[str, str]
) -> None:
    card, onnx_path = read_card(model_repository, names["pose"])
    data = encode(scene(1280, 960, 11), "JPEG", quality=95)
    boxes = [[0, 0, 1280, 960], [200, 100, 700, 900]]  # crops 1600 and 625 px wide: a 1/2 decode
    response = client.post(
        "/v1/pose", params={"boxes": json.dumps(boxes)}, content=data, headers={"content-type": JPEG}
    )
    assert response.status_code == 200, response.text

    def crops_from(decoded_reduction: int) -> tuple[np.ndarray, pose.Crops]:
        needed = lambda size: pose.draft_size(size, np.array(boxes, float), card)  # noqa: E731
        decoded = decode_image(data, 10**8, needed if decoded_reduction > 1 else None)
        assert (decoded.reduction, decoded.size) == (decoded_reduction, (1280, 960))
        crops = np.zeros((2, card.input.height, card.input.width, 3), np.uint8)
        image = np.asarray(decoded.image)
        return crops, pose.crop_people(image, np.array(boxes, float), card, crops, False, decoded.reduction)

    crops, where = crops_from(2)
    heatmaps = session_for(onnx_path).run(None, {"image": crops})[0]
    keypoints, _ = pose.decode_people(heatmaps, where, card, flip=False)
    served = [[[k["x"], k["y"]] for k in person["keypoints"]] for person in response.json()["people"]]
    np.testing.assert_allclose(served, keypoints, atol=1e-3)
    # The crops are those of the full decode but for JPEG and scaling noise (mean 1.4 and 3.7 of
    # 255; boxes 8 px off: 10 and 25). Keypoints are not compared: a random-weight network's
    # heatmap peaks jump with such noise.
    full_crops, _ = crops_from(1)
    assert (np.abs(crops.astype(int) - full_crops).mean(axis=(1, 2, 3)) < 5).all()


def test_pose_without_boxes_takes_the_whole_image_as_one_person(client: httpx.Client) -> None:
    response = client.post(
        "/v1/pose", content=encode(scene(200, 300, 8), "JPEG"), headers={"content-type": JPEG}
    )
    assert response.status_code == 200, response.text
    [person] = response.json()["people"]
    assert person["box"] == [0, 0, 200, 300]


def test_pose_takes_boxes_as_a_query_parameter_beside_a_raw_body(client: httpx.Client) -> None:
    response = client.post(
        "/v1/pose",
        params={"boxes": "[[10, 10, 90, 190], [100, 20, 190, 180]]"},
        content=encode(scene(200, 200, 9)),
        headers={"content-type": "image/png"},
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["people"]) == 2


def test_pose_with_an_empty_box_list_finds_nobody(client: httpx.Client) -> None:
    response = client.post(
        "/v1/pose",
        params={"boxes": "[]"},
        content=encode(scene(64, 64)),
        headers={"content-type": "image/png"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["people"] == []


def test_pose_overlay_answers_the_drawn_image_as_png(client: httpx.Client) -> None:
    response = client.post(
        "/v1/pose",
        params={"overlay": "true"},
        content=encode(scene(160, 240, 10), "JPEG"),
        headers={"content-type": JPEG},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(response.content)).size == (160, 240)


def _keypoint_pixels(client: httpx.Client, image: bytes, **params: str) -> int:
    """Pixels of the keypoint colour (pure red) in the drawn pose of `image`."""
    response = client.post(
        "/v1/pose", params={"overlay": "true", **params}, content=image, headers={"content-type": "image/png"}
    )
    assert response.status_code == 200, response.text
    drawn = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB")).astype(int)
    return int(((drawn[..., 0] == 255) & (drawn[..., 1] == 0) & (drawn[..., 2] == 0)).sum())


def test_pose_overlay_draws_the_keypoints_scoring_at_least_keypoint_threshold(client: httpx.Client) -> None:
    image = encode(np.full((240, 160, 3), 128, np.uint8))  # grey: no red of its own
    body = client.post("/v1/pose", content=image, headers={"content-type": "image/png"}).json()
    scores = [k["score"] for k in body["people"][0]["keypoints"]]
    assert body["keypoint_threshold"] == 0.3  # the default, echoed for clients that draw
    everything = _keypoint_pixels(client, image, keypoint_threshold="0")
    nothing = _keypoint_pixels(client, image, keypoint_threshold=str(max(scores) + 0.01))
    assert everything > 0 and nothing == 0
    assert _keypoint_pixels(client, image) == _keypoint_pixels(client, image, keypoint_threshold="0.3")
    refused = client.post(
        "/v1/pose", params={"keypoint_threshold": "-1"}, content=image, headers={"content-type": "image/png"}
    )
    assert refused.status_code == 422


def test_openapi_documents_every_endpoint_with_parameters_upload_and_schemas(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in ("/v1/classify", "/v1/segment", "/v1/pose", "/v1/models", "/healthz", "/readyz", "/metrics"):
        assert path in paths
    for path, params in {"/v1/classify": {"model", "top_k"}, "/v1/segment": {"model", "format", "overlay"},
                         "/v1/pose": {"model", "boxes", "format", "overlay", "keypoint_threshold"}}.items():  # fmt: skip
        operation = paths[path]["post"]
        assert params <= {p["name"] for p in operation["parameters"]}
        content = operation["requestBody"]["content"]
        assert "multipart/form-data" in content and "image/*" in content
        assert "$ref" in operation["responses"]["200"]["content"]["application/json"]["schema"]
        assert "422" in operation["responses"] and "503" in operation["responses"]
    schemas = spec["components"]["schemas"]
    assert {"ClassifyResponse", "SegmentResponse", "PoseResponse", "ErrorResponse"} <= set(schemas)
    assert client.get("/docs").status_code == 200


@pytest.fixture(scope="module")
def flip_test_server(model_repository: Path, names: dict[str, str]) -> Iterator[RunningServer]:
    with serve(model_repository, models=[names["pose"]], pose_flip_test=True) as running:
        yield running


def test_pose_flip_test_runs_a_mirrored_crop_per_person_and_averages_their_heatmaps(
    flip_test_server: RunningServer, model_repository: Path, names: dict[str, str]
) -> None:
    card, onnx_path = read_card(model_repository, names["pose"])
    image = scene(300, 300, 11)
    boxes = [[20, 20, 150, 280], [140, 30, 290, 290], [0, 0, 300, 300]]
    with flip_test_server.client() as client:
        response = client.post(
            "/v1/pose",
            files={"file": ("p.png", encode(image), "image/png")},
            data={"boxes": json.dumps(boxes)},
        )
        text = client.get("/metrics").text
    assert response.status_code == 200, response.text
    assert metric_value(text, "nv_inference_count", model=names["pose"]) == 2 * len(boxes)

    crops = np.zeros((2 * len(boxes), card.input.height, card.input.width, 3), np.uint8)
    where = pose.crop_people(image, np.array(boxes, float), card, crops, flip=True)
    heatmaps = session_for(onnx_path).run(None, {"image": crops})[0]
    keypoints, _ = pose.decode_people(heatmaps, where, card, flip=True)
    served = np.array([[[k["x"], k["y"]] for k in p["keypoints"]] for p in response.json()["people"]])
    np.testing.assert_allclose(served, keypoints, atol=1e-3)
