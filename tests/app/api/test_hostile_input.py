"""Hostile and odd input that needs more than a table row (see test_errors.py for those): raw request
targets no client library would send, and images whose decoding must come out right."""

from __future__ import annotations

import http.client
import io

import httpx
import numpy as np
import pytest
from PIL import Image

from contract.imaging import decode_image
from tests.app.conftest import RunningServer, encode, scene

PNG = {"content-type": "image/png"}


def raw(
    server: RunningServer, method: str, target: str, body: bytes = b"", **headers: str
) -> tuple[int, bytes]:
    """Send `target` byte for byte (no normalisation of `..` or percent-escapes)."""
    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        connection.request(method, target, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


# -- model names are names, never paths ----------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("GET", "/v1/models/%2e%2e"),
        ("GET", "/v1/models/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd"),
        ("GET", "/v1/models/..%2F..%2Fmobilenet-v2_8xb32_in1k%2F1%2Fcard.json"),
        ("GET", "/v1/models/%2F"),
        ("GET", "/v1/models/mobilenet-v2_8xb32_in1k%2F1"),
        ("GET", "/v1/models/./mobilenet-v2_8xb32_in1k/../.."),
        ("POST", "/v1/classify?model=%2e%2e%2F%2e%2e%2Fmobilenet-v2_8xb32_in1k"),
        ("POST", "/v1/classify?model=mobilenet-v2_8xb32_in1k%2F..%2F..%2Fetc"),
        ("POST", "/v1/segment?model=%2Fetc%2Fpasswd"),
        ("POST", "/v1/pose?model=..%5C..%5Cwindows"),
    ],
)
def test_model_names_with_dots_slashes_or_their_escapes_answer_404(
    server: RunningServer, method: str, target: str
) -> None:
    body = encode(scene(64, 48)) if method == "POST" else b""
    status, content = raw(server, method, target, body, **({"Content-Type": "image/png"} if body else {}))
    assert status == 404, content
    assert b'"error"' in content


# -- text that is not UTF-8 ----------------------------------------------------------------------


def _multipart(fields: list[tuple[bytes, bytes]], boundary: str = "b0undary") -> tuple[bytes, str]:
    body = b""
    for disposition, value in fields:
        body += f"--{boundary}\r\n".encode() + b"Content-Disposition: form-data; " + disposition + b"\r\n\r\n"
        body += value + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_form_fields_and_query_values_that_are_not_utf8_answer_4xx(server: RunningServer) -> None:
    image = encode(scene(64, 48))
    file_part = (b'name="file"; filename="a.png"', image)
    body, content_type = _multipart([file_part, (b'name="boxes"', b"\xff\xfe[[1,2,3,4]]\x80")])
    assert raw(server, "POST", "/v1/pose", body, **{"Content-Type": content_type})[0] == 422
    status, _ = raw(server, "POST", "/v1/pose?boxes=%FF%FE%80", image, **{"Content-Type": "image/png"})
    assert status == 422
    status, _ = raw(server, "POST", "/v1/classify?model=%FF%FE", image, **{"Content-Type": "image/png"})
    assert status == 404
    status, _ = raw(server, "POST", "/v1/classify?top_k=%FF", image, **{"Content-Type": "image/png"})
    assert status == 422
    # A file name that is not UTF-8 is only a name: the image is still read.
    body, content_type = _multipart([(b'name="file"; filename="\xff\xfe.png"', image)])
    assert raw(server, "POST", "/v1/classify", body, **{"Content-Type": content_type})[0] == 200


# -- images that must decode right ---------------------------------------------------------------


def probabilities(
    client: httpx.Client, data: bytes, content_type: str = "image/png"
) -> tuple[np.ndarray, dict]:
    response = client.post(
        "/v1/classify", params={"top_k": 1000}, content=data, headers={"content-type": content_type}
    )
    assert response.status_code == 200, response.text
    [result] = response.json()["results"]
    scores = np.zeros(1000)
    for prediction in result["predictions"]:
        scores[prediction["index"]] = prediction["score"]
    return scores, result["image"]


def test_animated_gif_is_read_as_its_first_frame(client: httpx.Client) -> None:
    frames = [Image.fromarray(scene(80, 60, seed)).quantize(64) for seed in (1, 2, 3)]
    out = io.BytesIO()
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    first = encode(np.asarray(Image.open(io.BytesIO(out.getvalue())).convert("RGB")))
    second = encode(np.asarray(frames[1].convert("RGB")))
    served, size = probabilities(client, out.getvalue(), "image/gif")
    assert size == {"width": 80, "height": 60}
    np.testing.assert_allclose(served, probabilities(client, first)[0], atol=1e-6)
    assert np.abs(served - probabilities(client, second)[0]).max() > 1e-4


def test_cmyk_jpeg_and_16_bit_png_are_served_as_their_8_bit_rgb(client: httpx.Client) -> None:
    out = io.BytesIO()
    Image.fromarray(scene(90, 70, 4)).convert("CMYK").save(out, format="JPEG", quality=95)
    cmyk = out.getvalue()
    as_rgb = encode(np.asarray(Image.open(io.BytesIO(cmyk)).convert("RGB")))
    np.testing.assert_allclose(
        probabilities(client, cmyk, "image/jpeg")[0], probabilities(client, as_rgb)[0], atol=1e-6
    )

    grey16 = (np.asarray(Image.fromarray(scene(90, 70, 5)).convert("L")).astype(np.uint16) * 257) + 100
    out = io.BytesIO()
    Image.fromarray(grey16).save(out, format="PNG")
    assert Image.open(io.BytesIO(out.getvalue())).mode.startswith("I")
    grey8 = np.clip(grey16 / 257.0 + 0.5, 0, 255).astype(np.uint8)
    expected = encode(np.stack([grey8] * 3, axis=-1))
    np.testing.assert_allclose(
        probabilities(client, out.getvalue())[0], probabilities(client, expected)[0], atol=1e-6
    )


# EXIF orientation → how the stored pixels (H, W, 3) become the upright picture, by the EXIF spec.
UPRIGHT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],  # mirrored left-right
    3: lambda a: a[::-1, ::-1],  # rotated 180°
    4: lambda a: a[::-1],  # mirrored top-bottom
    5: lambda a: a.transpose(1, 0, 2),  # mirrored along the main diagonal
    6: lambda a: np.rot90(a, -1),  # stored rotated 90° counter-clockwise: turn it clockwise
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),  # mirrored along the anti-diagonal
    8: lambda a: np.rot90(a, 1),  # stored rotated 90° clockwise: turn it counter-clockwise
}


def jpeg_with_orientation(pixels: np.ndarray, orientation: int) -> tuple[bytes, np.ndarray]:
    """A JPEG of `pixels` tagged with `orientation`, and its stored pixels made upright by hand."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=95, exif=exif.tobytes())
    stored = np.asarray(Image.open(io.BytesIO(out.getvalue())).convert("RGB"))  # EXIF not applied
    return out.getvalue(), np.ascontiguousarray(UPRIGHT[orientation](stored))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_each_exif_orientation_decodes_to_the_upright_pixels(orientation: int) -> None:
    data, upright = jpeg_with_orientation(scene(60, 40, 6), orientation)
    decoded = decode_image(data, 10**7)
    assert decoded.size == (upright.shape[1], upright.shape[0])
    assert np.array_equal(np.asarray(decoded.image), upright)


def test_each_exif_orientation_is_served_upright(client: httpx.Client) -> None:
    pixels = scene(64, 48, 7)
    answers = {}
    for orientation in range(1, 9):
        data, upright = jpeg_with_orientation(pixels, orientation)
        served, size = probabilities(client, data, "image/jpeg")
        assert size == {"width": upright.shape[1], "height": upright.shape[0]}
        np.testing.assert_allclose(served, probabilities(client, encode(upright))[0], atol=1e-6)
        answers[orientation] = served
    # The orientations really differ for the model: the check above could not pass by accident.
    assert min(np.abs(answers[1] - answers[k]).max() for k in range(2, 9)) > 1e-5
