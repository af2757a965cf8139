"""/v1/pose without boxes finds its people with the loaded detector (mmpose's top-down demo)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from tests.app.conftest import RunningServer, encode


@pytest.fixture
def http(pose_and_detector: RunningServer) -> Iterator[httpx.Client]:
    with pose_and_detector.client() as client:
        yield client


def _scene(value: int) -> bytes:
    rng = np.random.default_rng(0)
    image = np.clip(rng.normal(value, 8, (64, 128, 3)), 0, 255).astype(np.uint8)
    return encode(image)


def test_pose_without_boxes_crops_the_people_the_detector_finds(http: httpx.Client) -> None:
    image = _scene(250)
    response = http.post("/v1/pose", files={"file": ("a.png", image, "image/png")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["boxes"], body["detector"]) == ("detector", "tiny-detector")
    # Persons above 0.3 after NMS: the 0.8 twin is suppressed, the 0.25 one is too faint.
    boxes = [p["box"] for p in body["people"]]
    scale = 250 / 255  # the tiny detector's scores follow the mean brightness
    assert [p["box_score"] for p in body["people"]] == pytest.approx([0.9 * scale, 0.6 * scale], abs=0.01)
    np.testing.assert_allclose(boxes, [[16, 8, 80, 56], [88, 30, 124, 62]], atol=1e-4)
    assert all(len(p["keypoints"]) == 17 for p in body["people"])

    # The same boxes sent by the client give the same keypoints: the pose model ran on those crops.
    given = http.post(
        "/v1/pose", files={"file": ("a.png", image, "image/png")}, data={"boxes": json.dumps(boxes)}
    ).json()
    assert (given["boxes"], given["detector"]) == ("request", None)
    assert all(p["box_score"] is None for p in given["people"])
    for found, sent in zip(body["people"], given["people"], strict=True):
        assert [k["x"] for k in found["keypoints"]] == pytest.approx([k["x"] for k in sent["keypoints"]])


def test_no_person_detected_answers_nobody(http: httpx.Client) -> None:
    body = http.post("/v1/pose", files={"file": ("a.png", _scene(0), "image/png")}).json()
    assert (body["boxes"], body["people"]) == ("detector", [])
    assert body["image"] == {"width": 128, "height": 64}


def test_detect_false_takes_the_whole_image_even_with_a_detector_loaded(http: httpx.Client) -> None:
    response = http.post("/v1/pose?detect=false", files={"file": ("a.png", _scene(250), "image/png")})
    body = response.json()
    assert (body["boxes"], body["detector"]) == ("whole_image", None)
    assert [p["box"] for p in body["people"]] == [[0.0, 0.0, 128.0, 64.0]]


def _runs(http: httpx.Client, model: str) -> float:
    from tests.app.conftest import metric_value

    return metric_value(http.get("/metrics").text, "nv_inference_exec_count", model=model)


def test_an_empty_box_list_is_nobody_to_look_at_and_runs_neither_model(
    http: httpx.Client, names: dict[str, str]
) -> None:
    before = _runs(http, "tiny-detector"), _runs(http, names["pose"])
    response = http.post(
        "/v1/pose", files={"file": ("a.png", _scene(250), "image/png")}, data={"boxes": "[]"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["boxes"], body["detector"], body["people"]) == ("request", None, [])
    assert (_runs(http, "tiny-detector"), _runs(http, names["pose"])) == before


def test_an_empty_form_field_is_no_boxes_given_and_the_detector_finds_the_people(http: httpx.Client) -> None:
    response = http.post("/v1/pose", files={"file": ("a.png", _scene(250), "image/png")}, data={"boxes": ""})
    assert response.status_code == 200, response.text
    assert response.json()["boxes"] == "detector" and response.json()["people"]


def test_an_empty_box_is_422_invalid_boxes(http: httpx.Client) -> None:
    response = http.post(
        "/v1/pose", files={"file": ("a.png", _scene(250), "image/png")}, data={"boxes": "[[10, 10, 10, 40]]"}
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_boxes" and "empty" in error["message"]
