"""Hot reload: new versions are loaded beside the old, swapped in atomically, and bad ones refused."""

from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from contract.card import sha256_file
from contract.repository import CARD_FILE, MODEL_FILE
from tests.app.conftest import encode, scene, serve
from tests.app.test_registry import copy_model
from tests.app.tiny_models import favourite_class, write_classifier

PNG = {"content-type": "image/png"}
ADMIN = {"Authorization": "Bearer admin-key"}
GREY = encode(np.full((40, 40, 3), 20, np.uint8))


def top_label(client: httpx.Client, model: str = "tiny") -> tuple[int, str]:
    response = client.post("/v1/classify", params={"model": model, "top_k": 1}, content=GREY, headers=PNG)
    assert response.status_code == 200, response.text
    return response.json()["version"], response.json()["results"][0]["predictions"][0]["label"]


def wait_for(condition: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_new_version_placed_in_the_repository_is_picked_up_by_the_poller(tmp_path: Path) -> None:
    write_classifier(tmp_path, "tiny", 1)
    with serve(tmp_path, reload_interval_s=0.2) as server, server.client() as client:
        assert top_label(client) == (1, favourite_class(1))
        staging = write_classifier(tmp_path / ".staging", "tiny", 2)
        shutil.move(staging, tmp_path / "tiny" / "2")  # appears whole, as `training export` writes it
        wait_for(lambda: client.get("/v1/models").json()["models"][0]["version"] == 2)
        assert top_label(client) == (2, favourite_class(2))
        ready = client.get("/readyz").json()
    assert ready["ready"] is True and ready["models"][0]["reload_error"] is None


def test_version_that_fails_to_load_leaves_the_old_one_serving_and_says_why(tmp_path: Path) -> None:
    write_classifier(tmp_path, "tiny", 1)
    with (
        serve(tmp_path, admin_api_keys=["admin-key"], reload_interval_s=0.2) as server,
        server.client() as client,
    ):
        client.headers.update(ADMIN)  # with keys on, /v1 needs one (an admin key serves too)
        tampered = write_classifier(tmp_path / ".staging", "tiny", 2)
        with open(tampered / MODEL_FILE, "r+b") as f:  # bytes changed after the card was written
            f.seek(100)
            f.write(b"\0\1\2\3")
        shutil.move(tampered, tmp_path / "tiny" / "2")
        wait_for(lambda: client.get("/readyz").json()["models"][0]["reload_error"] is not None)
        ready = client.get("/readyz")
        assert ready.status_code == 200  # still ready: version 1 serves
        assert "version 2" in ready.json()["models"][0]["reload_error"]
        assert "sha256" in ready.json()["models"][0]["reload_error"]
        assert top_label(client) == (1, favourite_class(1))

        broken = tmp_path / "tiny" / "3"  # a graph ONNX Runtime cannot open, with a matching hash
        shutil.copytree(tmp_path / "tiny" / "1", broken)
        (broken / MODEL_FILE).write_bytes(b"not an onnx graph" * 50)
        card = json.loads((broken / CARD_FILE).read_text())
        card.update(version=3, onnx_sha256=sha256_file(broken / MODEL_FILE))
        (broken / CARD_FILE).write_text(json.dumps(card))
        answer = client.post("/v1/models/tiny/reload", headers=ADMIN)
        assert answer.status_code == 409
        assert answer.json()["error"]["code"] == "reload_failed"
        assert "ONNX Runtime cannot open" in answer.json()["error"]["message"]
        assert "version 1 keeps serving" in answer.json()["error"]["message"]
        assert top_label(client) == (1, favourite_class(1))
        assert client.get("/readyz").json()["models"][0]["state"] == "ready"


def test_reload_endpoint_swaps_versions_while_requests_in_flight_finish_on_the_old_one(
    model_repository: Path, names: dict[str, str], tmp_path: Path
) -> None:
    source = model_repository / names["pose"] / "1"
    copy_model(source, tmp_path, "people", 1)
    image = encode(scene(200, 200))
    many = json.dumps([[0, 0, 100 + i % 50, 200] for i in range(60)])
    settings = {"admin_api_keys": ["admin-key"], "max_batch_size": 1, "max_queue_size": 200}
    with serve(tmp_path, **settings) as server, server.client() as client, ThreadPoolExecutor(1) as pool:
        client.headers.update(ADMIN)
        unchanged = client.post("/v1/models/people/reload", headers=ADMIN)
        copy_model(source, tmp_path, "people", 2)
        in_flight = pool.submit(
            client.post, "/v1/pose", params={"model": "people", "boxes": many}, content=image, headers=PNG
        )
        time.sleep(0.3)  # its 60 crops are queued on version 1
        reloaded = client.post("/v1/models/people/reload", headers=ADMIN)
        swapped_at = time.monotonic()
        after = client.post("/v1/pose", params={"model": "people"}, content=image, headers=PNG)
        old = in_flight.result()
        old_done_at = time.monotonic()
        listed = client.get("/v1/models").json()["models"]
    assert unchanged.status_code == 200 and unchanged.json()["reloaded"] is False
    assert reloaded.status_code == 200, reloaded.text
    assert reloaded.json() | {"load_ms": None} == {
        "name": "people", "version": 2, "previous_version": 1, "reloaded": True, "load_ms": None
    }  # fmt: skip
    assert (after.status_code, after.json()["version"]) == (200, 2)
    assert old_done_at > swapped_at  # the old version was still busy when the new one took over
    assert (old.status_code, old.json()["version"], len(old.json()["people"])) == (200, 1, 60)
    assert [(m["name"], m["version"], m["state"]) for m in listed] == [("people", 2, "ready")]


@pytest.mark.parametrize(
    "target", ["/v1/models/%2e%2e/reload", "/v1/models/..%2Ftiny/reload", "/v1/models/nope/reload"]
)
def test_reload_of_a_name_that_is_not_a_served_model_answers_404(tmp_path: Path, target: str) -> None:
    write_classifier(tmp_path, "tiny", 1)
    with serve(tmp_path, admin_api_keys=["admin-key"]) as server:
        request = httpx.Request("POST", server.url + "/", headers=ADMIN)
        request.url = request.url.copy_with(raw_path=target.encode())
        with httpx.Client(timeout=30) as client:
            response = client.send(request)
    assert response.status_code == 404, response.text
