"""Batching, backpressure and deadlines seen from a client of a running server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.app.conftest import RunningServer, encode, metric_value, scene, serve

PNG = {"content-type": "image/png"}


def test_concurrent_requests_are_served_in_batches_of_more_than_one(
    server: RunningServer, names: dict[str, str]
) -> None:
    labels = {"model": names["classification"], "version": "1"}
    images = [encode(scene(120, 90, seed)) for seed in range(24)]
    with server.client() as client:
        before = client.get("/metrics").text

        def classify(data: bytes) -> int:
            return client.post("/v1/classify", content=data, headers=PNG).status_code

        with ThreadPoolExecutor(12) as pool:
            statuses = list(pool.map(classify, images))
        text = client.get("/metrics").text
    assert statuses == [200] * 24

    def delta(name: str, **extra: str) -> float:
        return metric_value(text, name, **labels, **extra) - metric_value(before, name, **labels, **extra)

    batches, rows = delta("inference_batch_size_count"), delta("inference_batch_size_sum")
    singles = delta("inference_batch_size_bucket", le="1.0")
    assert rows == 24
    assert batches < 24 and singles < batches  # some batch held more than one request
    print(f"24 concurrent requests ran in {batches:.0f} batches ({singles:.0f} of one)")


@pytest.fixture(scope="module")
def pose_server_with_tiny_queue(model_repository: Path, names: dict[str, str]) -> Iterator[RunningServer]:
    with serve(model_repository, models=[names["pose"]], max_queue_size=1) as running:
        yield running


def _pending(client: httpx.Client, model: str) -> float:
    return metric_value(client.get("/metrics").text, "nv_inference_pending_request_count", model=model)


def test_full_queue_answers_503_with_retry_after_at_once(
    pose_server_with_tiny_queue: RunningServer, names: dict[str, str]
) -> None:
    image = encode(scene(320, 240))
    many = json.dumps([[0, 0, 160 + i, 240] for i in range(40)])  # 40 crops keep the queue busy
    with pose_server_with_tiny_queue.client() as client, ThreadPoolExecutor(1) as pool:
        long_request = pool.submit(
            client.post, "/v1/pose", params={"boxes": many}, content=image, headers=PNG
        )
        deadline = time.monotonic() + 30
        while _pending(client, names["pose"]) < 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        started = time.perf_counter()
        rejected = client.post("/v1/pose", content=image, headers=PNG)
        elapsed = time.perf_counter() - started
        assert long_request.result().status_code == 200
    assert rejected.status_code == 503
    assert rejected.json()["error"]["code"] == "queue_full"
    assert int(rejected.headers["retry-after"]) >= 1
    assert elapsed < 1.0  # answered at once, not after waiting for room


@pytest.fixture(scope="module")
def pose_server_with_short_deadline(model_repository: Path, names: dict[str, str]) -> Iterator[RunningServer]:
    with serve(model_repository, models=[names["pose"]], request_timeout_ms=300) as running:
        yield running


def test_request_past_its_deadline_answers_504_and_its_unrun_crops_are_dropped(
    pose_server_with_short_deadline: RunningServer, names: dict[str, str]
) -> None:
    many = json.dumps([[0, 0, 100 + i, 200] for i in range(100)])
    with pose_server_with_short_deadline.client() as client:
        started = time.perf_counter()
        response = client.post(
            "/v1/pose", params={"boxes": many}, content=encode(scene(200, 200)), headers=PNG
        )
        elapsed = time.perf_counter() - started
        time.sleep(1.0)  # let the batch in flight finish; the abandoned chunks must not run
        text = client.get("/metrics").text
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "deadline_exceeded"
    assert elapsed < 1.5
    labels = {"model": names["pose"], "version": "1"}
    assert metric_value(text, "nv_inference_count", **labels) < 100
    assert metric_value(text, "nv_inference_request_failure", reason="TIMEOUT", **labels) == 1


@pytest.fixture(scope="module")
def pose_server_with_room_but_little_time(
    model_repository: Path, names: dict[str, str]
) -> Iterator[RunningServer]:
    with serve(
        model_repository,
        models=[names["pose"]],
        # One row per run and every crop twice (flip test): 200 runs of work ahead, seconds on any
        # machine; at batch 2 without flips a quiet machine finished within the deadline.
        max_batch_size=1,
        pose_flip_test=True,
        inference_runs=1,
        max_queue_size=400,
        request_timeout_ms=1500,
    ) as running:
        yield running


def test_request_the_work_ahead_would_make_miss_its_deadline_answers_503_deadline_unreachable(
    pose_server_with_room_but_little_time: RunningServer, names: dict[str, str]
) -> None:
    image = encode(scene(200, 200))
    many = json.dumps([[0, 0, 100 + i % 50, 200] for i in range(100)])  # 200 runs: seconds of work
    with pose_server_with_room_but_little_time.client() as client, ThreadPoolExecutor(1) as pool:
        busy = pool.submit(client.post, "/v1/pose", params={"boxes": many}, content=image, headers=PNG)
        deadline = time.monotonic() + 30
        while _pending(client, names["pose"]) < 10 and time.monotonic() < deadline:
            time.sleep(0.005)
        started = time.perf_counter()
        refused = client.post("/v1/pose", params={"detect": "false"}, content=image, headers=PNG)
        elapsed = time.perf_counter() - started
        busy.result()
    assert refused.status_code == 503
    error = refused.json()["error"]
    assert error["code"] == "deadline_unreachable", error  # the queue (400) is far from full
    assert "deadline" in error["message"]
    # The work ahead takes seconds (200 runs): Retry-After says so, not 1 s.
    assert int(refused.headers["retry-after"]) >= 2
    assert elapsed < 1.0


def test_a_lone_request_is_decoded_and_run_inline_and_counted_as_a_batch_of_one(
    server: RunningServer, names: dict[str, str]
) -> None:
    labels = {"model": names["classification"], "version": "1"}
    with server.client() as client:
        before = client.get("/metrics").text
        answers = [
            client.post("/v1/classify", content=encode(scene(200, 150, seed)), headers=PNG)
            for seed in range(3)
        ]
        text = client.get("/metrics").text
    assert [a.status_code for a in answers] == [200] * 3
    for answer in answers:
        timing = answer.json()["timing"]
        assert timing["queue_ms"] == 0.0  # no queue: the decoding thread ran it
        assert timing["preprocess_ms"] > 0 and 0 < timing["inference_ms"] <= timing["total_ms"]
    for name in ("inference_batch_size_count", "inference_batch_size_sum"):
        assert metric_value(text, name, **labels) - metric_value(before, name, **labels) == 3
