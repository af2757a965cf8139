"""Triton's model repository extension (index, load, unload) over HTTP, with Triton's client,
under admin keys, against a real server serving tiny models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.app.conftest import RunningServer, serve
from tests.app.tiny_models import FAIL_FROM, LABELS, favourite_class, write_classifier

ADMIN = {"Authorization": "Bearer admin-key"}
CLIENT = {"Authorization": "Bearer client-key"}


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    write_classifier(tmp_path, "tiny")
    write_classifier(tmp_path, "other")
    return tmp_path


@pytest.fixture
def server(repository: Path) -> Iterator[RunningServer]:
    with serve(repository, api_keys=["client-key"], admin_api_keys=["admin-key"]) as running:
        yield running


@pytest.fixture
def client_v2(server: RunningServer) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    yield client
    client.close()


def favourite(client: triton.InferenceServerClient, model: str) -> str:
    given = triton.InferInput("image", [1, 32, 32, 3], "UINT8")
    given.set_data_from_numpy(np.full((1, 32, 32, 3), FAIL_FROM // 2, np.uint8))
    probabilities = client.infer(model, [given], headers=CLIENT).as_numpy("probabilities")
    return LABELS[int(probabilities[0].argmax())]


def test_the_index_lists_each_model_with_its_version_and_state(
    client_v2: triton.InferenceServerClient,
) -> None:
    index = client_v2.get_model_repository_index(headers=ADMIN)
    assert sorted(index, key=lambda m: m["name"]) == [
        {"name": "other", "version": "1", "state": "READY", "reason": ""},
        {"name": "tiny", "version": "1", "state": "READY", "reason": ""},
    ]


def test_repository_control_needs_an_admin_key(server: RunningServer) -> None:
    with server.client() as http:
        assert http.post("/v2/repository/index").status_code == 401
        assert http.post("/v2/repository/index", headers=CLIENT).status_code == 403
        assert http.post("/v2/repository/models/tiny/unload", headers=CLIENT).status_code == 403
        assert http.post("/v2/repository/index", headers=ADMIN).status_code == 200


def test_unload_stops_serving_a_model_and_load_serves_it_again(
    server: RunningServer, client_v2: triton.InferenceServerClient
) -> None:
    assert favourite(client_v2, "tiny") == favourite_class(1)
    client_v2.unload_model("tiny", headers=ADMIN)
    assert not client_v2.is_model_ready("tiny", headers=CLIENT)
    assert client_v2.is_server_ready()  # an unloaded model does not make the server unready
    with pytest.raises(InferenceServerException) as raised:
        favourite(client_v2, "tiny")
    assert raised.value.status() == "503" and "unloaded" in raised.value.message()
    assert favourite(client_v2, "other") == favourite_class(1)  # the others keep serving
    [tiny] = [m for m in client_v2.get_model_repository_index(headers=ADMIN) if m["name"] == "tiny"]
    assert (tiny["state"], tiny["reason"]) == ("UNAVAILABLE", "unloaded")
    with server.client() as http:
        assert http.get("/readyz").status_code == 200
    client_v2.load_model("tiny", headers=ADMIN)
    assert client_v2.is_model_ready("tiny", headers=CLIENT)
    assert favourite(client_v2, "tiny") == favourite_class(1)


def test_load_serves_a_newer_version_from_the_repository(
    repository: Path, client_v2: triton.InferenceServerClient
) -> None:
    write_classifier(repository, "tiny", version=2)
    client_v2.load_model("tiny", headers=ADMIN)
    assert client_v2.get_model_metadata("tiny", headers=CLIENT)["versions"] == ["2"]
    assert favourite(client_v2, "tiny") == favourite_class(2)


def test_load_of_an_unknown_model_is_404_and_config_overrides_are_refused(server: RunningServer) -> None:
    with server.client() as http:
        response = http.post("/v2/repository/models/resnet-50/load", headers=ADMIN)
        assert response.status_code == 404 and "error" in response.json()
        response = http.post(
            "/v2/repository/models/tiny/load", headers=ADMIN, json={"parameters": {"config": "{}"}}
        )
        assert response.status_code == 400 and "config" in response.json()["error"]
        response = http.post("/v2/repository/models/tiny/unload", headers=ADMIN, content=b"{not json")
        assert response.status_code == 400


def test_statistics_of_an_unloaded_model_remain_readable(
    client_v2: triton.InferenceServerClient,
) -> None:
    favourite(client_v2, "tiny")
    client_v2.unload_model("tiny", headers=ADMIN)
    [stats] = client_v2.get_inference_statistics("tiny", headers=CLIENT)["model_stats"]
    assert stats["inference_stats"]["success"]["count"] == 1
    served = client_v2.get_inference_statistics(headers=CLIENT)["model_stats"]
    assert [s["name"] for s in served] == ["other"]
