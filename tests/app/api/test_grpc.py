"""The Open Inference Protocol over gRPC, driven by Triton's own gRPC client against a real server.

The server serves HTTP and gRPC from one process (GRPC_PORT on loopback); each gRPC answer is
compared with what /v2 over HTTP answers for the same tensor, so both protocols are seen to run
the same models through the same batcher.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from tests.app.conftest import RunningServer, metric_value, read_card, serve

MAX_BODY = 4_000_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def grpc_server(model_repository: Path, names: dict[str, str]) -> Iterator[tuple[RunningServer, str]]:
    """Classification and pose, a queue of one image (a second request finds it full), 4 MB messages."""
    port = free_port()
    with serve(
        model_repository,
        models=[names["classification"], names["pose"]],
        host="127.0.0.1",
        grpc_port=port,
        max_queue_size=1,
        max_images=64,
        max_body_bytes=MAX_BODY,
    ) as running:
        yield running, f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def rpc(grpc_server: tuple[RunningServer, str]) -> Iterator[triton_grpc.InferenceServerClient]:
    client = triton_grpc.InferenceServerClient(grpc_server[1])
    yield client
    client.close()


@pytest.fixture(scope="module")
def http(grpc_server: tuple[RunningServer, str]) -> Iterator[triton_http.InferenceServerClient]:
    client = triton_http.InferenceServerClient(
        grpc_server[0].url.removeprefix("http://"), network_timeout=120
    )
    yield client
    client.close()


def pixels(shape: list[int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def grpc_input(tensor: np.ndarray, datatype: str = "UINT8") -> triton_grpc.InferInput:
    given = triton_grpc.InferInput("image", list(tensor.shape), datatype)
    given.set_data_from_numpy(tensor)  # always raw_input_contents in tritonclient.grpc
    return given


def http_input(tensor: np.ndarray) -> triton_http.InferInput:
    given = triton_http.InferInput("image", list(tensor.shape), "UINT8")
    given.set_data_from_numpy(tensor, binary_data=True)
    return given


def refusal(call: object) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as raised:
        call()  # type: ignore[operator]
    return raised.value


# -- server and models ---------------------------------------------------------------------------------


def test_server_is_live_ready_and_names_its_extensions(
    rpc: triton_grpc.InferenceServerClient, names: dict[str, str]
) -> None:
    assert rpc.is_server_live() and rpc.is_server_ready()
    metadata = rpc.get_server_metadata(as_json=True)
    assert metadata["name"] == "mnv2-serve"
    assert {"classification", "model_configuration", "statistics", "model_repository"} <= set(
        metadata["extensions"]
    )
    assert rpc.is_model_ready(names["classification"]) and rpc.is_model_ready(names["pose"], "1")
    assert not rpc.is_model_ready(names["pose"], "2")
    assert not rpc.is_model_ready("resnet-50")  # as Triton: not ready rather than an error


def test_model_metadata_and_config_are_those_of_http(
    rpc: triton_grpc.InferenceServerClient,
    http: triton_http.InferenceServerClient,
    model_repository: Path,
    names: dict[str, str],
) -> None:
    name = names["classification"]
    card, _ = read_card(model_repository, name)
    metadata = rpc.get_model_metadata(name, as_json=True)
    assert metadata["platform"] == "onnxruntime_onnx" and metadata["versions"] == ["1"]
    assert metadata["inputs"] == [
        {
            "name": "image",
            "datatype": "UINT8",
            "shape": ["-1", str(card.input.height), str(card.input.width), "3"],
        }
    ]  # protobuf's JSON writes int64 as strings
    config = rpc.get_model_config(name).config
    assert (config.name, config.platform, config.max_batch_size) == (name, "onnxruntime_onnx", 64)
    assert list(config.input[0].dims) == [card.input.height, card.input.width, 3]
    assert config.input[0].data_type == 2  # TYPE_UINT8
    assert list(config.output[0].dims) == [1000]
    over_http = http.get_model_config(name)
    assert (
        config.dynamic_batching.max_queue_delay_microseconds
        == (over_http["dynamic_batching"]["max_queue_delay_microseconds"])
    )
    assert config.dynamic_batching.default_queue_policy.max_queue_size == 1


# -- inference -----------------------------------------------------------------------------------------


def test_infer_with_raw_contents_equals_http(
    rpc: triton_grpc.InferenceServerClient,
    http: triton_http.InferenceServerClient,
    names: dict[str, str],
) -> None:
    name = names["classification"]
    tensor = pixels([1, 224, 224, 3])
    over_grpc = rpc.infer(name, [grpc_input(tensor)], request_id="r-7")
    over_http = http.infer(name, [http_input(tensor)])
    probabilities = over_grpc.as_numpy("probabilities")
    assert probabilities.shape == (1, 1000) and probabilities.dtype == np.float32
    np.testing.assert_array_equal(probabilities, over_http.as_numpy("probabilities"))
    response = over_grpc.get_response()
    assert (response.model_name, response.model_version, response.id) == (name, "1", "r-7")
    assert len(response.raw_output_contents) == 1


def test_classification_extension_answers_the_same_top_k_strings_as_http(
    rpc: triton_grpc.InferenceServerClient,
    http: triton_http.InferenceServerClient,
    names: dict[str, str],
) -> None:
    name = names["classification"]
    tensor = pixels([2, 224, 224, 3], seed=1)
    wanted = [triton_grpc.InferRequestedOutput("probabilities", class_count=3)]
    top = rpc.infer(name, [grpc_input(tensor)], outputs=wanted).as_numpy("probabilities")
    expected = http.infer(
        name,
        [http_input(tensor)],
        outputs=[triton_http.InferRequestedOutput("probabilities", binary_data=True, class_count=3)],
    ).as_numpy("probabilities")
    assert top.shape == (2, 3)
    assert top.tolist() == expected.tolist()
    score, index, label = top[0][0].decode().split(":", 2)
    assert 0 < float(score) <= 1 and 0 <= int(index) < 1000 and label


def test_a_wrong_datatype_is_invalid_argument(
    rpc: triton_grpc.InferenceServerClient, names: dict[str, str]
) -> None:
    wrong = grpc_input(np.zeros((1, 224, 224, 3), np.float32), "FP32")
    error = refusal(lambda: rpc.infer(names["classification"], [wrong]))
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    assert "takes UINT8" in error.message()


def test_a_wrong_shape_is_invalid_argument(
    rpc: triton_grpc.InferenceServerClient, names: dict[str, str]
) -> None:
    error = refusal(lambda: rpc.infer(names["classification"], [grpc_input(pixels([1, 100, 224, 3]))]))
    assert error.status() == "StatusCode.INVALID_ARGUMENT" and "shape" in error.message()


def test_an_unknown_model_or_version_is_not_found(
    rpc: triton_grpc.InferenceServerClient, names: dict[str, str]
) -> None:
    tensor = pixels([1, 224, 224, 3])
    for call in (
        lambda: rpc.infer("resnet-50", [grpc_input(tensor)]),
        lambda: rpc.infer(names["classification"], [grpc_input(tensor)], model_version="2"),
        lambda: rpc.get_model_metadata("resnet-50"),
        lambda: rpc.get_model_config("resnet-50"),
    ):
        assert refusal(call).status() == "StatusCode.NOT_FOUND"


def test_a_message_over_max_body_bytes_is_resource_exhausted(
    rpc: triton_grpc.InferenceServerClient, names: dict[str, str]
) -> None:
    too_big = pixels([30, 224, 224, 3])  # 4.5 MB
    assert too_big.nbytes > MAX_BODY
    error = refusal(lambda: rpc.infer(names["classification"], [grpc_input(too_big)]))
    assert error.status() == "StatusCode.RESOURCE_EXHAUSTED"


def test_the_timeout_parameter_bounds_the_request(
    rpc: triton_grpc.InferenceServerClient, names: dict[str, str]
) -> None:
    # tritonclient sends `timeout` (µs) as a request parameter; the server's own deadline answers.
    error = refusal(lambda: rpc.infer(names["pose"], [grpc_input(pixels([8, 256, 192, 3]))], timeout=1))
    assert error.status() == "StatusCode.DEADLINE_EXCEEDED"


def test_a_full_queue_is_unavailable_as_triton_answers_it(
    grpc_server: tuple[RunningServer, str], rpc: triton_grpc.InferenceServerClient, names: dict[str, str]
) -> None:
    server, _ = grpc_server
    model = names["pose"]
    many = pixels([24, 256, 192, 3])  # 3.5 MB: six batches keep the one-image queue busy
    with server.client() as client, ThreadPoolExecutor(1) as pool:
        long_request = pool.submit(rpc.infer, model, [grpc_input(many)])
        deadline = time.monotonic() + 30
        while (
            time.monotonic() < deadline
            and metric_value(client.get("/metrics").text, "nv_inference_pending_request_count", model=model)
            < 1
        ):
            time.sleep(0.005)
        error = refusal(lambda: rpc.infer(model, [grpc_input(pixels([1, 256, 192, 3]))]))
        assert long_request.result().as_numpy("heatmaps").shape[0] == 24
    assert error.status() == "StatusCode.UNAVAILABLE"
    assert "MAX_QUEUE_SIZE" in error.message()


def test_statistics_count_grpc_and_http_requests_alike(
    rpc: triton_grpc.InferenceServerClient,
    http: triton_http.InferenceServerClient,
    names: dict[str, str],
) -> None:
    name = names["classification"]

    def successes() -> int:
        [stats] = http.get_inference_statistics(name)["model_stats"]
        return int(stats["inference_stats"]["success"]["count"])

    before = successes()
    tensor = pixels([1, 224, 224, 3])
    rpc.infer(name, [grpc_input(tensor)])
    http.infer(name, [http_input(tensor)])
    assert successes() == before + 2
    [over_grpc] = rpc.get_inference_statistics(name).model_stats
    assert over_grpc.inference_stats.success.count == before + 2
    assert over_grpc.inference_stats.compute_infer.ns > 0
    assert sum(b.compute_infer.count for b in over_grpc.batch_stats) == over_grpc.execution_count


# -- keys ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from tests.app.tiny_models import write_classifier

    repository = tmp_path_factory.mktemp("keyed")
    write_classifier(repository, "tiny")
    port = free_port()
    with serve(
        repository, host="127.0.0.1", grpc_port=port, api_keys=["client-key"], admin_api_keys=["admin-key"]
    ):
        yield f"127.0.0.1:{port}"


def test_keys_travel_as_authorization_metadata(keyed_server: str) -> None:
    with triton_grpc.InferenceServerClient(keyed_server) as rpc:
        assert rpc.is_server_live() and rpc.is_server_ready()  # open, as /v2/health/*
        assert refusal(lambda: rpc.get_model_metadata("tiny")).status() == "StatusCode.UNAUTHENTICATED"
        wrong = {"authorization": "Bearer guess"}
        assert refusal(lambda: rpc.get_model_metadata("tiny", headers=wrong)).status() == (
            "StatusCode.UNAUTHENTICATED"
        )
        client = {"authorization": "Bearer client-key"}
        assert rpc.get_model_metadata("tiny", headers=client).name == "tiny"
        error = refusal(lambda: rpc.get_model_repository_index(headers=client))
        assert error.status() == "StatusCode.PERMISSION_DENIED"
        index = rpc.get_model_repository_index(headers={"authorization": "Bearer admin-key"})
        assert [(m.name, m.version, m.state) for m in index.models] == [("tiny", "1", "READY")]


def test_an_unimplemented_method_says_so(keyed_server: str) -> None:
    with triton_grpc.InferenceServerClient(keyed_server) as rpc:
        error = refusal(
            lambda: rpc.get_system_shared_memory_status(headers={"authorization": "Bearer admin-key"})
        )
        assert error.status() == str(grpc.StatusCode.UNIMPLEMENTED)
