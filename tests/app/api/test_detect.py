"""/v1/detect over HTTP: a real server, a real ONNX Runtime session of a tiny detector graph."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.app.conftest import RunningServer, encode, serve
from tests.app.tiny_models import write_detector


@pytest.fixture(scope="module")
def detector_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repository: Path = tmp_path_factory.mktemp("detector-repository")
    write_detector(repository)
    with serve(repository, default_detection_model="tiny-detector") as running:
        yield running


@pytest.fixture
def http(detector_server: RunningServer) -> Iterator[httpx.Client]:
    with detector_server.client() as client:
        yield client


def _image(width: int, height: int, value: int) -> bytes:
    return encode(np.full((height, width, 3), value, np.uint8))


def _detect(http: httpx.Client, *images: bytes, **params: float | str) -> httpx.Response:
    files = [("file", (f"{i}.png", data, "image/png")) for i, data in enumerate(images)]
    return http.post("/v1/detect", files=files, params=params)


def test_detect_answers_classes_scores_and_boxes_in_image_pixels_after_per_class_nms(
    http: httpx.Client,
) -> None:
    response = _detect(http, _image(128, 64, 255))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "tiny-detector"
    (result,) = body["results"]
    assert result["image"] == {"width": 128, "height": 64}
    found = [(o["label"], o["index"], round(o["score"], 4), o["box"]) for o in result["objects"]]
    # The second person (IoU 0.82 with the first) is suppressed; the dog's 0.01 is under 0.02; the cat
    # shares the dog's box but is another class. Input 64×64 → image 128×64: x × 2, y × 1.
    assert found == [
        ("person", 0, 0.9, [16.0, 8.0, 80.0, 56.0]),
        ("dog", 1, 0.7, [60.0, 4.0, 120.0, 30.0]),
        ("person", 0, 0.6, [88.0, 30.0, 124.0, 62.0]),
        ("person", 0, 0.25, [0.0, 40.0, 40.0, 62.0]),
        ("cat", 2, 0.05, [60.0, 4.0, 120.0, 30.0]),
    ]


def test_thresholds_are_request_parameters(http: httpx.Client) -> None:
    white = _image(64, 64, 255)
    strict = _detect(http, white, score_threshold=0.5).json()["results"][0]["objects"]
    assert [o["label"] for o in strict] == ["person", "dog", "person"]
    loose_nms = _detect(http, white, iou_threshold=0.9, score_threshold=0.5).json()["results"][0]["objects"]
    assert [round(o["score"], 2) for o in loose_nms] == [0.9, 0.8, 0.7, 0.6]
    capped = _detect(http, white, max_detections=1).json()["results"][0]["objects"]
    assert [o["label"] for o in capped] == ["person"]


def test_each_uploaded_image_has_its_own_result(http: httpx.Client) -> None:
    results = _detect(http, _image(64, 64, 255), _image(32, 48, 0)).json()["results"]
    assert len(results[0]["objects"]) == 5
    assert results[1] == {"image": {"width": 32, "height": 48}, "objects": []}


def test_overlay_answers_the_image_with_the_boxes_drawn(http: httpx.Client) -> None:
    response = _detect(http, _image(128, 64, 255), overlay="true")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    drawn = np.asarray(Image.open(io.BytesIO(response.content)))
    assert drawn.shape == (64, 128, 3)
    assert (drawn[30, 16] != 255).any()  # the person's left edge
    assert (drawn[45, 60] == 255).all()  # inside the box, untouched


def test_overlay_asked_as_json_is_422_saying_the_two_contradict(http: httpx.Client) -> None:
    response = _detect(http, _image(64, 64, 255), overlay="true", format="json")
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_input" and "overlay=true" in error["message"]
    assert "format=json" in error["message"]


@pytest.mark.parametrize("params", [{"score_threshold": 1.5}, {"iou_threshold": -0.1}, {"max_detections": 0}])
def test_out_of_range_parameters_are_422(http: httpx.Client, params: dict[str, float]) -> None:
    response = _detect(http, _image(64, 64, 255), **params)
    assert response.status_code == 422
    assert response.json()["error"]["code"]


def test_not_an_image_is_a_4xx_json_error(http: httpx.Client) -> None:
    response = http.post("/v1/detect", files={"file": ("x.png", b"not an image", "image/png")})
    assert 400 <= response.status_code < 500 and response.json()["error"]["message"]


def test_v2_serves_the_detectors_tensors(http: httpx.Client) -> None:
    rows = np.full((2, 64, 64, 3), 255, np.uint8)
    request = {
        "inputs": [
            {"name": "image", "shape": list(rows.shape), "datatype": "UINT8", "data": rows.ravel().tolist()}
        ]
    }
    response = http.post("/v2/models/tiny-detector/infer", json=request)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert outputs["boxes"]["shape"] == [2, 5, 4] and outputs["scores"]["shape"] == [2, 5, 3]
    assert outputs["scores"]["data"][0] == pytest.approx(0.9)
