"""The Open Inference Protocol under /v2, driven by Triton's own client against a real server.

Each inference builds its tensor with the service's own preprocessing (`contract/tasks`), sends it
over /v2 and compares the answer with what /v1 answered for the same image.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from PIL import Image
from tritonclient.utils import InferenceServerException

from contract.card import ModelCard
from contract.imaging import decode_image
from contract.tasks import classification, pose, segmentation
from tests.app.conftest import RunningServer, encode, metric_value, read_card, scene, serve

PNG = {"content-type": "image/png"}


@pytest.fixture(scope="module")
def client_v2(server: RunningServer) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(server.url.removeprefix("http://"), network_timeout=120)
    yield client
    client.close()


@pytest.fixture(scope="module")
def roomy_server(model_repository: Path, names: dict[str, str]) -> Iterator[RunningServer]:
    """Segmentation and pose with the default body limit (JSON masks exceed the shared 2 MB) and a
    queue of one image, so that a second request finds it full."""
    with serve(
        model_repository, models=[names["segmentation"], names["pose"]], max_queue_size=1, max_images=64
    ) as running:
        yield running


@pytest.fixture(scope="module")
def roomy_v2(roomy_server: RunningServer) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(roomy_server.url.removeprefix("http://"), network_timeout=120)
    yield client
    client.close()


def infer(
    client: triton.InferenceServerClient,
    model: str,
    tensor: np.ndarray,
    output: str,
    binary: bool,
    **options: object,
) -> triton.InferResult:
    given = triton.InferInput("image", list(tensor.shape), "UINT8")
    given.set_data_from_numpy(tensor, binary_data=binary)
    wanted = triton.InferRequestedOutput(output, binary_data=binary)
    return client.infer(model, [given], outputs=[wanted], **options)


def classification_tensor(data: bytes, card: ModelCard) -> np.ndarray:
    tensor = np.zeros((1, card.input.height, card.input.width, 3), np.uint8)
    decoded = decode_image(data, 10**8, lambda _: classification.needed_size(card))
    classification.preprocess(decoded, card, tensor[0])
    return tensor


def v1_probabilities(client: httpx.Client, data: bytes, classes: int) -> np.ndarray:
    response = client.post("/v1/classify", params={"top_k": classes}, content=data, headers=PNG)
    assert response.status_code == 200, response.text
    served = np.zeros(classes)
    for prediction in response.json()["results"][0]["predictions"]:
        served[prediction["index"]] = prediction["score"]
    return served


# -- server and models ---------------------------------------------------------------------------------


def test_server_metadata_names_the_binary_tensor_data_extension(
    client_v2: triton.InferenceServerClient,
) -> None:
    metadata = client_v2.get_server_metadata()
    assert metadata["name"] == "mnv2-serve" and metadata["version"]
    assert {"binary_tensor_data", "classification"} <= set(metadata["extensions"])


def test_server_and_each_model_are_live_and_ready_at_their_version(
    client_v2: triton.InferenceServerClient, names: dict[str, str]
) -> None:
    assert client_v2.is_server_live() and client_v2.is_server_ready()
    for name in names.values():
        assert client_v2.is_model_ready(name)
        assert client_v2.is_model_ready(name, "1")
        assert not client_v2.is_model_ready(name, "2")
    assert not client_v2.is_model_ready("resnet-50")


def test_model_metadata_is_the_cards_uint8_image_input_and_its_outputs(
    client_v2: triton.InferenceServerClient, model_repository: Path, names: dict[str, str]
) -> None:
    datatypes = {"float32": "FP32", "uint8": "UINT8", "int64": "INT64"}
    for name in names.values():
        card, _ = read_card(model_repository, name)
        metadata = client_v2.get_model_metadata(name)
        assert metadata == client_v2.get_model_metadata(name, "1")
        assert (metadata["name"], metadata["versions"], metadata["platform"]) == (
            name,
            ["1"],
            "onnxruntime_onnx",
        )
        size = [card.input.height, card.input.width]
        assert metadata["inputs"] == [{"name": "image", "datatype": "UINT8", "shape": [-1, *size, 3]}]
        assert metadata["outputs"] == [
            {"name": o.name, "datatype": datatypes[o.dtype], "shape": o.shape} for o in card.outputs
        ]
    classifier = client_v2.get_model_metadata(names["classification"])
    assert classifier["outputs"][0] == {"name": "probabilities", "datatype": "FP32", "shape": [-1, 1000]}


# -- inference equals /v1 ------------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_classification_probabilities_equal_those_of_v1(
    binary: bool,
    client_v2: triton.InferenceServerClient,
    client: httpx.Client,
    model_repository: Path,
    names: dict[str, str],
) -> None:
    card, _ = read_card(model_repository, names["classification"])
    data = encode(scene(500, 375, 21))
    result = infer(client_v2, card.name, classification_tensor(data, card), "probabilities", binary)
    probabilities = result.as_numpy("probabilities")
    assert probabilities is not None and probabilities.shape == (1, len(card.labels))
    assert probabilities.dtype == np.float32
    expected = v1_probabilities(client, data, len(card.labels))
    np.testing.assert_allclose(probabilities[0], expected, rtol=0, atol=1e-6)


def v1_mask(client: httpx.Client, data: bytes) -> np.ndarray:
    response = client.post("/v1/segment", content=data, headers=PNG)
    assert response.status_code == 200, response.text
    [result] = response.json()["results"]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(result["mask_png"]))))


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_segmentation_mask_equals_that_of_v1(
    binary: bool,
    roomy_server: RunningServer,
    roomy_v2: triton.InferenceServerClient,
    model_repository: Path,
    names: dict[str, str],
) -> None:
    card, _ = read_card(model_repository, names["segmentation"])
    data = encode(scene(700, 500, 22))
    tensor = np.zeros((1, card.input.height, card.input.width, 3), np.uint8)
    decoded = decode_image(data, 10**8, lambda size: segmentation.resized_size(size, card))
    fitted = segmentation.preprocess(decoded, card, tensor[0])
    mask = infer(roomy_v2, card.name, tensor, "mask", binary).as_numpy("mask")
    assert (
        mask is not None and mask.dtype == np.uint8 and mask.shape == (1, card.input.height, card.input.width)
    )
    with roomy_server.client() as client:
        expected = v1_mask(client, data)
    assert np.array_equal(segmentation.mask_to_image_size(mask[0], fitted, decoded.size), expected)
    assert len(np.unique(expected)) > 1


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_pose_heatmaps_decode_to_the_keypoints_of_v1(
    binary: bool,
    client_v2: triton.InferenceServerClient,
    client: httpx.Client,
    model_repository: Path,
    names: dict[str, str],
) -> None:
    card, _ = read_card(model_repository, names["pose"])
    image = scene(640, 480, 23)
    boxes = [[50, 40, 250, 440], [300.5, 100, 420, 330]]
    crops = np.zeros((len(boxes), card.input.height, card.input.width, 3), np.uint8)
    where = pose.crop_people(image, np.array(boxes, float), card, crops, flip=False)
    heatmaps = infer(client_v2, card.name, crops, "heatmaps", binary).as_numpy("heatmaps")
    assert heatmaps is not None and list(heatmaps.shape) == [len(boxes), *card.outputs[0].shape[1:]]
    keypoints, _ = pose.decode_people(heatmaps, where, card, flip=False)

    response = client.post(
        "/v1/pose", files={"file": ("p.png", encode(image), "image/png")}, data={"boxes": json.dumps(boxes)}
    )
    assert response.status_code == 200, response.text
    served = np.array([[[k["x"], k["y"]] for k in p["keypoints"]] for p in response.json()["people"]])
    np.testing.assert_allclose(keypoints, served, atol=1e-3)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_classification_extension_answers_v1s_top_k_as_score_index_label(
    binary: bool,
    client_v2: triton.InferenceServerClient,
    client: httpx.Client,
    model_repository: Path,
    names: dict[str, str],
) -> None:
    card, _ = read_card(model_repository, names["classification"])
    data = encode(scene(320, 320, 24))
    given = triton.InferInput("image", [1, card.input.height, card.input.width, 3], "UINT8")
    given.set_data_from_numpy(classification_tensor(data, card), binary_data=binary)
    wanted = triton.InferRequestedOutput("probabilities", binary_data=binary, class_count=5)
    result = client_v2.infer(card.name, [given], outputs=[wanted])
    assert result.get_output("probabilities")["datatype"] == "BYTES"
    top = result.as_numpy("probabilities")
    assert top is not None and top.shape == (1, 5)
    # Binary BYTES arrive as bytes, JSON ones as str (as from Triton).
    parsed = [(item.decode() if isinstance(item, bytes) else item).split(":", 2) for item in top[0]]

    response = client.post("/v1/classify", params={"top_k": 5}, content=data, headers=PNG)
    expected = response.json()["results"][0]["predictions"]
    assert [(int(i), label) for _, i, label in parsed] == [(p["index"], p["label"]) for p in expected]
    np.testing.assert_allclose([float(s) for s, _, _ in parsed], [p["score"] for p in expected], atol=1e-6)


def test_a_batch_of_n_images_takes_n_slots_and_answers_in_order(
    server: RunningServer,
    client_v2: triton.InferenceServerClient,
    client: httpx.Client,
    model_repository: Path,
    names: dict[str, str],
) -> None:
    card, _ = read_card(model_repository, names["classification"])
    images = [encode(scene(300 + 40 * i, 280, 30 + i)) for i in range(6)]  # more than MAX_BATCH_SIZE=4
    batch = np.concatenate([classification_tensor(data, card) for data in images])
    labels = {"model": card.name, "version": "1"}
    before = metric_value(client.get("/metrics").text, "nv_inference_count", **labels)
    probabilities = infer(client_v2, card.name, batch, "probabilities", True).as_numpy("probabilities")
    after = metric_value(client.get("/metrics").text, "nv_inference_count", **labels)
    assert after - before == len(images)
    assert probabilities is not None and probabilities.shape == (len(images), len(card.labels))
    for row, data in zip(probabilities, images, strict=True):
        np.testing.assert_allclose(row, v1_probabilities(client, data, len(card.labels)), atol=1e-6)


def test_request_id_is_echoed_and_unrequested_outputs_follow_binary_data_output(
    client_v2: triton.InferenceServerClient, names: dict[str, str], model_repository: Path
) -> None:
    card, _ = read_card(model_repository, names["classification"])
    given = triton.InferInput("image", [1, card.input.height, card.input.width, 3], "UINT8")
    given.set_data_from_numpy(np.zeros(given.shape(), np.uint8))
    result = client_v2.infer(card.name, [given], request_id="req-42")  # no outputs: all, in binary
    response = result.get_response()
    assert (response["id"], response["model_name"], response["model_version"]) == ("req-42", card.name, "1")
    assert response["outputs"][0]["parameters"]["binary_data_size"] == 4 * len(card.labels)


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_request_bodies_are_inflated(
    algorithm: str, client_v2: triton.InferenceServerClient, names: dict[str, str]
) -> None:
    crops = np.full((1, 256, 192, 3), 128, np.uint8)
    given = triton.InferInput("image", list(crops.shape), "UINT8")
    given.set_data_from_numpy(crops)
    plain = client_v2.infer(names["pose"], [given]).as_numpy("heatmaps")
    packed = client_v2.infer(names["pose"], [given], request_compression_algorithm=algorithm)
    assert np.array_equal(packed.as_numpy("heatmaps"), plain)


# -- errors --------------------------------------------------------------------------------------------


def raw_infer(
    client: httpx.Client,
    model: str,
    header: dict[str, object],
    tail: bytes = b"",
    headers: dict[str, str] | None = None,
    path: str = "infer",
) -> httpx.Response:
    head = json.dumps(header).encode()
    extra = {"Inference-Header-Content-Length": str(len(head))} if tail else {}
    return client.post(
        f"/v2/models/{model}/{path}", content=head + tail, headers={**extra, **(headers or {})}
    )


def classify_header(shape: list[int], **changes: object) -> dict[str, object]:
    size = int(np.prod(shape))
    given = {"name": "image", "shape": shape, "datatype": "UINT8", "parameters": {"binary_data_size": size}}
    return {"inputs": [{**given, **changes}]}


IMAGE = [1, 224, 224, 3]
PIXELS = bytes(int(np.prod(IMAGE)))
CORRUPT_GZIP = gzip.compress(b"{}")[:10] + b"\xff\xff\xff\xff"  # a valid header, then a reserved block type


def expect_error(response: httpx.Response, status: int, words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str)
    assert words in body["error"], body["error"]


@pytest.mark.parametrize(
    ("case", "status", "words"),
    [
        ("unknown-model", 404, "unknown model"),
        ("unknown-version", 404, "no version '7'"),
        ("wrong-input-name", 400, "unexpected input 'pixels'"),
        ("wrong-datatype", 400, "datatype FP32"),
        ("wrong-shape", 400, "has shape [1, 224, 224]"),
        ("wrong-image-size", 400, "takes [-1, 224, 224, 3]"),
        ("too-many-images", 400, "MAX_IMAGES"),
        ("short-body", 400, "binary_data_size add up to"),
        ("long-body", 400, "binary_data_size add up to"),
        ("header-length-past-the-body", 400, "Inference-Header-Content-Length"),
        ("not-json", 400, "invalid inference request"),
        ("json-data-out-of-range", 400, "outside UINT8's range"),
        ("json-data-too-short", 400, "holds 3 values"),
        ("unknown-output", 400, "unknown output 'logits'"),
        ("classification-of-a-mask", 400, "classification extension needs"),
        ("unsupported-encoding", 415, "content encoding 'br'"),
        ("corrupt-gzip", 400, "gzip body is corrupt"),
    ],
)
def test_bad_requests_answer_the_protocols_error_shape(
    case: str, status: int, words: str, client: httpx.Client, names: dict[str, str]
) -> None:
    cls, seg = names["classification"], names["segmentation"]
    requests = {
        "unknown-model": lambda: raw_infer(client, "resnet-50", classify_header(IMAGE), PIXELS),
        "unknown-version": lambda: raw_infer(
            client, cls, classify_header(IMAGE), PIXELS, path="versions/7/infer"
        ),
        "wrong-input-name": lambda: raw_infer(client, cls, classify_header(IMAGE, name="pixels"), PIXELS),
        "wrong-datatype": lambda: raw_infer(client, cls, classify_header(IMAGE, datatype="FP32"), PIXELS),
        "wrong-shape": lambda: raw_infer(client, cls, classify_header(IMAGE[:3]), PIXELS[: 224 * 224]),
        "wrong-image-size": lambda: raw_infer(client, cls, classify_header([1, 100, 100, 3]), bytes(30_000)),
        "too-many-images": lambda: raw_infer(client, cls, classify_header([17, *IMAGE[1:]]), b"\0"),
        "short-body": lambda: raw_infer(client, cls, classify_header(IMAGE), PIXELS[:-1]),
        "long-body": lambda: raw_infer(client, cls, classify_header(IMAGE), PIXELS + b"\0"),
        "header-length-past-the-body": lambda: client.post(
            f"/v2/models/{cls}/infer", content=b"{}", headers={"Inference-Header-Content-Length": "99"}
        ),
        "not-json": lambda: client.post(f"/v2/models/{cls}/infer", content=b"{not json"),
        "json-data-out-of-range": lambda: raw_infer(
            client, cls, classify_header(IMAGE, parameters=None, data=[0] * (len(PIXELS) - 1) + [256])
        ),
        "json-data-too-short": lambda: raw_infer(
            client, cls, classify_header(IMAGE, parameters=None, data=[1, 2, 3])
        ),
        "unknown-output": lambda: raw_infer(
            client, cls, {**classify_header(IMAGE), "outputs": [{"name": "logits"}]}, PIXELS
        ),
        "classification-of-a-mask": lambda: raw_infer(
            client,
            seg,
            {
                **classify_header([1, 512, 1024, 3]),
                "outputs": [{"name": "mask", "parameters": {"classification": 3}}],
            },
            b"\0",
        ),
        "unsupported-encoding": lambda: raw_infer(
            client, cls, classify_header(IMAGE), PIXELS, headers={"content-encoding": "br"}
        ),
        "corrupt-gzip": lambda: client.post(
            f"/v2/models/{cls}/infer", content=CORRUPT_GZIP, headers={"content-encoding": "gzip"}
        ),
    }
    expect_error(requests[case](), status, words)


def test_wrong_input_reaches_a_triton_client_as_a_400_with_the_reason(
    client_v2: triton.InferenceServerClient, names: dict[str, str]
) -> None:
    given = triton.InferInput("image", [1, 224, 224, 3], "FP32")
    given.set_data_from_numpy(np.zeros((1, 224, 224, 3), np.float32))
    with pytest.raises(InferenceServerException) as raised:
        client_v2.infer(names["classification"], [given])
    assert raised.value.status() == "400"
    assert "takes UINT8" in raised.value.message()


def test_unknown_model_and_version_answer_404_on_metadata_and_ready(
    client: httpx.Client, names: dict[str, str]
) -> None:
    for path in ("/v2/models/resnet-50", f"/v2/models/{names['pose']}/versions/2", "/v2/models/x/ready"):
        expect_error(client.get(path), 404, "")


def test_a_gzip_bomb_is_refused_with_413(client: httpx.Client, names: dict[str, str]) -> None:
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    bomb = b"".join(packer.compress(zeros) for _ in range(64)) + packer.flush()  # 64 MiB in ~64 KiB
    assert len(bomb) < 200_000
    response = client.post(
        f"/v2/models/{names['classification']}/infer", content=bomb, headers={"content-encoding": "gzip"}
    )
    expect_error(response, 413, "MAX_BODY_BYTES")


def test_a_body_over_max_body_bytes_is_refused_with_413(client: httpx.Client, names: dict[str, str]) -> None:
    response = raw_infer(
        client, names["classification"], classify_header([14, *IMAGE[1:]]), bytes(14 * 150_528)
    )
    expect_error(response, 413, "MAX_BODY_BYTES")


def test_a_request_past_its_timeout_parameter_answers_504(
    client: httpx.Client, names: dict[str, str]
) -> None:
    header = {**classify_header(IMAGE), "parameters": {"timeout": 1}}  # µs, as Triton's client sends it
    expect_error(raw_infer(client, names["classification"], header, PIXELS), 504, "deadline")


def test_a_full_queue_answers_503_with_retry_after(
    roomy_server: RunningServer, names: dict[str, str]
) -> None:
    model, shape = names["pose"], [1, 256, 192, 3]
    many = [40, *shape[1:]]  # ten batches keep the one-image queue busy
    with roomy_server.client() as client, ThreadPoolExecutor(1) as pool:
        long_request = pool.submit(raw_infer, client, model, classify_header(many), bytes(int(np.prod(many))))
        deadline = time.monotonic() + 30
        while (
            time.monotonic() < deadline
            and metric_value(client.get("/metrics").text, "nv_inference_pending_request_count", model=model)
            < 1
        ):
            time.sleep(0.005)
        rejected = raw_infer(client, model, classify_header(shape), bytes(int(np.prod(shape))))
        assert long_request.result().status_code == 200
    expect_error(rejected, 503, "MAX_QUEUE_SIZE")
    assert int(rejected.headers["retry-after"]) >= 1


def test_openapi_documents_the_v2_routes(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/v2",
        "/v2/health/ready",
        "/v2/models/{name}",
        "/v2/models/{name}/versions/{version}/infer",
    ):
        assert path in paths
    body = paths["/v2/models/{name}/infer"]["post"]["requestBody"]["content"]
    assert "inputs" in body["application/json"]["schema"]["properties"]


# -- Triton's extensions: model configuration, statistics, metric names ---------------------------------


def test_model_config_is_tritons_json_for_each_model(
    client_v2: triton.InferenceServerClient,
    server: RunningServer,
    model_repository: Path,
    names: dict[str, str],
) -> None:
    settings = server.settings
    for name in names.values():
        card, _ = read_card(model_repository, name)
        config = client_v2.get_model_config(name)
        assert config == client_v2.get_model_config(name, "1")
        assert (config["name"], config["platform"], config["backend"]) == (
            name,
            "onnxruntime_onnx",
            "onnxruntime",
        )
        assert config["max_batch_size"] == settings.max_images
        assert config["input"][0] | {"dims": None} == {
            "name": "image",
            "data_type": "TYPE_UINT8",
            "format": "FORMAT_NHWC",
            "dims": None,
            "is_shape_tensor": False,
            "allow_ragged_batch": False,
            "optional": False,
        }
        assert config["input"][0]["dims"] == [card.input.height, card.input.width, 3]  # no batch axis
        assert [(o["name"], o["dims"]) for o in config["output"]] == [
            (o.name, o.shape[1:]) for o in card.outputs
        ]
        batching = config["dynamic_batching"]
        assert batching["max_queue_delay_microseconds"] == round(settings.max_queue_delay_ms * 1000)
        assert batching["default_queue_policy"]["max_queue_size"] == settings.max_queue_size
        assert 1 <= batching["preferred_batch_size"][0] <= settings.max_batch_size
    classifier = client_v2.get_model_config(names["classification"])
    assert classifier["output"][0] | {"dims": [1000]} == classifier["output"][0]
    assert classifier["output"][0]["data_type"] == "TYPE_FP32"


def test_model_config_of_an_unknown_model_or_version_is_404(
    client: httpx.Client, names: dict[str, str]
) -> None:
    expect_error(client.get("/v2/models/resnet-50/config"), 404, "unknown model")
    expect_error(client.get(f"/v2/models/{names['pose']}/versions/2/config"), 404, "no version")


def test_statistics_count_each_request_its_rows_and_its_batches(
    client_v2: triton.InferenceServerClient, names: dict[str, str]
) -> None:
    name = names["classification"]
    [before] = client_v2.get_inference_statistics(name)["model_stats"]
    tensor = np.zeros((3, 224, 224, 3), np.uint8)
    infer(client_v2, name, tensor, "probabilities", binary=True)
    infer(client_v2, name, tensor[:1], "probabilities", binary=True)
    [after] = client_v2.get_inference_statistics(name, "1")["model_stats"]
    assert (after["name"], after["version"]) == (name, "1")
    assert after["inference_count"] - before["inference_count"] == 4
    stats, earlier = after["inference_stats"], before["inference_stats"]
    assert stats["success"]["count"] - earlier["success"]["count"] == 2
    assert stats["success"]["ns"] > earlier["success"]["ns"]
    assert stats["compute_infer"]["ns"] > earlier["compute_infer"]["ns"]
    assert after["execution_count"] - before["execution_count"] >= 2
    assert sum(b["compute_infer"]["count"] for b in after["batch_stats"]) == after["execution_count"]
    assert after["last_inference"] > 0  # ms since the epoch
    every = client_v2.get_inference_statistics()["model_stats"]
    assert {s["name"] for s in every} == set(names.values())


def test_a_failed_request_is_counted_as_a_failure(
    client_v2: triton.InferenceServerClient, names: dict[str, str]
) -> None:
    name = names["classification"]
    [before] = client_v2.get_inference_statistics(name)["model_stats"]
    with pytest.raises(InferenceServerException):
        infer(client_v2, name, np.zeros((1, 224, 224, 3), np.uint8), "probabilities", binary=True, timeout=1)
    [after] = client_v2.get_inference_statistics(name)["model_stats"]
    assert after["inference_stats"]["fail"]["count"] == before["inference_stats"]["fail"]["count"] + 1


def test_metrics_carry_tritons_names_types_and_labels(client: httpx.Client, names: dict[str, str]) -> None:
    name = names["classification"]
    client.post("/v1/classify", content=encode(scene(64, 48)), headers=PNG)
    text = client.get("/metrics").text
    lines = text.splitlines()
    for metric in (
        "nv_inference_request_success",
        "nv_inference_request_failure",
        "nv_inference_count",
        "nv_inference_exec_count",
        "nv_inference_request_duration_us",
        "nv_inference_queue_duration_us",
        "nv_inference_compute_infer_duration_us",
    ):
        assert f"# TYPE {metric} counter" in lines
        assert f"{metric}_total" not in text and f"{metric}_created" not in text
    assert metric_value(text, "nv_inference_request_success", model=name, version="1") >= 1
    assert any(
        line.startswith(f'nv_inference_request_success{{model="{name}",version="1"}} ') for line in lines
    )
    assert f'nv_inference_request_failure{{model="{name}",reason="REJECTED",version="1"}} ' in text
    assert "# TYPE nv_inference_pending_request_count gauge" in lines
