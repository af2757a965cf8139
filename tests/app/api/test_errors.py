"""Bad input gets a 4xx in the one JSON error shape, never a 500."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.app.conftest import encode, png_claiming, scene

JPEG_BYTES = encode(scene(64, 48), "JPEG")
PNG_BYTES = encode(scene(64, 48))
SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"><rect/></svg>'
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


@dataclass
class Case:
    path: str
    status: int
    code: str
    content: bytes | None = None
    content_type: str | None = "image/jpeg"
    params: dict[str, Any] = field(default_factory=dict)
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None
    data: dict[str, str] | None = None
    method: str = "POST"


def raw(
    path: str, status: int, code: str, content: bytes, content_type: str | None = "image/jpeg", **params: Any
) -> Case:
    return Case(path, status, code, content=content, content_type=content_type, params=params)


def _cases(names: dict[str, str]) -> dict[str, Case]:
    seg, cls = names["segmentation"], names["classification"]
    return {
        "empty-body": raw("/v1/classify", 422, "invalid_input", b""),
        "multipart-without-file-field": Case("/v1/classify", 422, "invalid_input",
                                             files=[("image", ("a.jpg", JPEG_BYTES, "image/jpeg"))]),
        "truncated-jpeg": raw("/v1/classify", 422, "corrupt_image", JPEG_BYTES[: len(JPEG_BYTES) // 2]),
        "truncated-png": raw("/v1/segment", 422, "corrupt_image", PNG_BYTES[: len(PNG_BYTES) // 2], "image/png"),
        "png-claiming-50000x50000": raw("/v1/classify", 413, "image_too_large", png_claiming(50_000, 50_000), "image/png"),
        "svg": raw("/v1/classify", 415, "not_an_image", SVG, "image/svg+xml"),
        "pdf-as-image": raw("/v1/classify", 415, "not_an_image", PDF, "image/png"),
        "pdf-content-type": raw("/v1/classify", 415, "unsupported_media_type", PDF, "application/pdf"),
        "text-content-type": raw("/v1/pose", 415, "unsupported_media_type", b"hello", "text/plain"),
        "json-content-type": raw("/v1/segment", 415, "unsupported_media_type", b"{}", "application/json"),
        "no-content-type": raw("/v1/classify", 415, "unsupported_media_type", JPEG_BYTES, None),
        "unknown-model": raw("/v1/classify", 404, "model_not_found", JPEG_BYTES, model="resnet-50"),
        "model-dotdot": raw("/v1/classify", 404, "model_not_found", JPEG_BYTES, model=".."),
        "model-path": raw("/v1/segment", 404, "model_not_found", JPEG_BYTES, model="../../etc/passwd"),
        "model-of-another-task": raw("/v1/classify", 400, "wrong_task", JPEG_BYTES, model=seg),
        "classifier-for-pose": raw("/v1/pose", 400, "wrong_task", JPEG_BYTES, model=cls),
        "huge-top-k": raw("/v1/classify", 422, "invalid_input", JPEG_BYTES, top_k=10**30),
        "zero-top-k": raw("/v1/classify", 422, "invalid_request", JPEG_BYTES, top_k=0),
        "text-top-k": raw("/v1/classify", 422, "invalid_request", JPEG_BYTES, top_k="five"),
        "bad-format": raw("/v1/segment", 422, "invalid_request", JPEG_BYTES, format="gif"),
        "jpeg-mask": raw("/v1/segment", 422, "invalid_input", JPEG_BYTES, format="jpeg"),
        "segment-overlay-as-json": raw("/v1/segment", 422, "invalid_input", JPEG_BYTES, format="json", overlay="true"),
        "pose-overlay-as-json": raw("/v1/pose", 422, "invalid_input", JPEG_BYTES, format="json", overlay="true"),
        "boxes-not-json": raw("/v1/pose", 422, "invalid_boxes", JPEG_BYTES, boxes="[[1,2,3,4]"),
        "boxes-wrong-shape": raw("/v1/pose", 422, "invalid_boxes", JPEG_BYTES, boxes="[[1,2,3]]"),
        "boxes-nan": raw("/v1/pose", 422, "invalid_boxes", JPEG_BYTES, boxes="[[1,2,NaN,4]]"),
        "boxes-inf": raw("/v1/pose", 422, "invalid_boxes", JPEG_BYTES, boxes="[[1,2,Infinity,4]]"),
        "boxes-x2-before-x1": raw("/v1/pose", 422, "invalid_boxes", JPEG_BYTES, boxes="[[30,2,10,40]]"),
        "boxes-outside-image": raw("/v1/pose", 422, "invalid_boxes", JPEG_BYTES, boxes="[[100,100,200,200]]"),
        "too-many-boxes": raw("/v1/pose", 422, "invalid_boxes", JPEG_BYTES, boxes=json.dumps([[0, 0, 9, 9]] * 101)),
        "boxes-form-field-not-json": Case("/v1/pose", 422, "invalid_boxes",
                                          files=[("file", ("a.jpg", JPEG_BYTES, "image/jpeg"))], data={"boxes": "x"}),
        "several-images-for-pose": Case("/v1/pose", 422, "invalid_input",
                                        files=[("file", ("a.jpg", JPEG_BYTES, "image/jpeg"))] * 2),
        "too-many-images": Case("/v1/classify", 422, "invalid_input",
                                files=[("file", ("a.jpg", JPEG_BYTES, "image/jpeg"))] * 17),
        "body-too-large": raw("/v1/classify", 413, "body_too_large", b"\xff" * 2_000_001),
        "unknown-route": Case("/v1/nowhere", 404, "not_found"),
        "wrong-method": Case("/v1/classify", 405, "method_not_allowed", method="GET"),
        "card-of-unknown-model": Case("/v1/models/..", 404, "not_found", method="GET"),
        "zero-length-multipart-file": Case("/v1/classify", 422, "invalid_input", files=[("file", ("a.png", b"", "image/png"))]),
        "empty-multipart-body": raw("/v1/classify", 422, "invalid_input", b"", "multipart/form-data; boundary=xyz"),
        "multipart-without-boundary": raw("/v1/segment", 400, "bad_request", b"abc", "multipart/form-data"),
        "form-urlencoded": raw("/v1/classify", 415, "unsupported_media_type", b"image=abc", "application/x-www-form-urlencoded"),
        "thousands-of-boxes": Case("/v1/pose", 422, "invalid_boxes", files=[("file", ("a.jpg", JPEG_BYTES, "image/jpeg"))],
                                   data={"boxes": json.dumps([[0, 0, 9, 9]] * 5000)}),
        "negative-box-outside-image": raw("/v1/pose", 422, "invalid_boxes", JPEG_BYTES, boxes="[[-50,-40,-10,-5]]"),
        "boxes-deeply-nested": raw("/v1/pose", 422, "invalid_boxes", JPEG_BYTES, boxes="[" * 5000),
        "box-of-huge-numbers": raw("/v1/pose", 422, "invalid_boxes", JPEG_BYTES, boxes="[[0,0,1e999,5]]"),
        "model-url-encoded-path": raw("/v1/classify", 404, "model_not_found", JPEG_BYTES, model="..%2F..%2Fetc%2Fpasswd"),
    }  # fmt: skip


CASE_IDS = list(_cases({"segmentation": "s", "classification": "c"}))


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_bad_input_answers_its_status_in_the_json_error_shape(
    case_id: str, client: httpx.Client, names: dict[str, str]
) -> None:
    case = _cases(names)[case_id]
    headers = {"content-type": case.content_type} if case.content is not None and case.content_type else {}
    response = client.request(
        case.method, case.path, params=case.params, content=case.content, files=case.files, data=case.data,
        headers=headers,
    )  # fmt: skip
    assert response.status_code == case.status, response.text
    error = response.json()["error"]
    assert error["code"] == case.code
    assert isinstance(error["message"], str) and error["message"]


def test_body_streamed_past_the_limit_without_a_length_is_cut_off_with_413(client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b"\0" * 100_000

    response = client.post("/v1/classify", content=chunks(), headers={"content-type": "image/jpeg"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"


def test_multipart_body_past_the_limit_is_cut_off_with_413(client: httpx.Client) -> None:
    files = [("file", ("big.jpg", b"\0" * 2_100_000, "image/jpeg"))]
    response = client.post("/v1/classify", files=files)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"


GARBAGE: list[Callable[[int], bytes]] = [
    lambda i: bytes(range(256)) * (i + 1),
    lambda i: b"\x89PNG\r\n\x1a\n" + bytes(range(i * 7 % 256)) * 3,
    lambda i: b"\xff\xd8\xff\xe0" + bytes((i * 31 + k) % 256 for k in range(500)),
    lambda i: b"GIF89a" + bytes(50),
    lambda i: b"BM" + bytes(100),
    lambda i: b"II*\x00" + bytes(range(100)),
    lambda i: b"RIFF\x00\x00\x00\x00WEBPVP8 " + bytes(40),
]


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about the corrupt EXIF it is fed
@pytest.mark.parametrize("endpoint", ["/v1/classify", "/v1/segment", "/v1/pose"])
def test_garbage_with_image_signatures_never_answers_500(client: httpx.Client, endpoint: str) -> None:
    for i, make in enumerate(GARBAGE):
        response = client.post(endpoint, content=make(i), headers={"content-type": "image/png"})
        assert 400 <= response.status_code < 500, (i, response.text)
        assert "error" in response.json()
