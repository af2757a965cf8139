"""Graceful shutdown of a real `python -m app` process: SIGTERM, drain, finish, exit."""

from __future__ import annotations

import json
import signal
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.app.conftest import encode, metric_value, scene
from tests.app.processes import AppProcess, run_app

PNG = {"content-type": "image/png"}
IMAGE = encode(scene(200, 200))


def pose(app: AppProcess, boxes: int) -> httpx.Response:
    with app.client() as client:
        params = {"boxes": json.dumps([[0, 0, 100 + i % 50, 200] for i in range(boxes)])}
        return client.post("/v1/pose", params=params, content=IMAGE, headers=PNG)


def start_work(
    app: AppProcess, pool: ThreadPoolExecutor, model: str, requests: int, boxes: int
) -> list[Future[httpx.Response]]:
    """Send requests and return once the first batch runs (the rest is queued)."""
    with app.client() as client:
        before = metric_value(client.get("/metrics").text, "nv_inference_exec_count", model=model)
        futures = [pool.submit(pose, app, boxes) for _ in range(requests)]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            text = client.get("/metrics").text
            if metric_value(text, "nv_inference_exec_count", model=model) > before:
                break
            time.sleep(0.01)
    return futures


def test_sigterm_turns_readyz_503_first_then_finishes_queued_requests_and_exits(
    model_repository: Path, names: dict[str, str]
) -> None:
    model = names["pose"]
    settings = {"models": model, "max_batch_size": 1, "shutdown_drain_s": 1.5, "shutdown_grace_s": 30}
    with run_app(model_repository, **settings) as app, ThreadPoolExecutor(4) as pool:
        queued = start_work(app, pool, model, requests=3, boxes=12)
        app.signal(signal.SIGTERM)
        signalled = time.monotonic()
        with app.client(timeout=10) as client:
            ready = client.get("/readyz")
            live = client.get("/healthz")
            during_drain = client.post("/v1/pose", content=IMAGE, headers=PNG)  # still accepted
        answers = [future.result(timeout=60) for future in queued]
        code = app.wait(timeout=60)
        exited = time.monotonic() - signalled
        log = app.log()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{app.url}/healthz", timeout=2)
    assert ready.status_code == 503
    assert any("shutting down" in problem for problem in ready.json()["problems"])
    assert live.status_code == 200
    assert during_drain.status_code == 200
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert all(len(a.json()["people"]) == 12 for a in answers)
    assert code in (0, -signal.SIGTERM), log  # uvicorn may re-raise the signal once it is done
    assert 1.5 <= exited < 30
    assert "Application shutdown complete" in log


def test_requests_still_queued_when_the_grace_period_ends_answer_503(
    model_repository: Path, names: dict[str, str]
) -> None:
    model = names["pose"]
    settings = {"models": model, "max_batch_size": 1, "max_queue_size": 200, "shutdown_grace_s": 0.5}
    with run_app(model_repository, **settings) as app, ThreadPoolExecutor(3) as pool:
        queued = start_work(app, pool, model, requests=3, boxes=40)  # far more than 0.5 s of work
        app.signal(signal.SIGTERM)
        signalled = time.monotonic()
        answers = [future.result(timeout=60) for future in queued]
        code = app.wait(timeout=30)
        exited = time.monotonic() - signalled
    statuses = [a.status_code for a in answers]
    assert 503 in statuses and set(statuses) <= {200, 503}, statuses
    for answer in answers:
        if answer.status_code == 503:
            assert answer.json()["error"]["code"] == "model_not_ready"
    assert code in (0, -signal.SIGTERM)
    assert exited < 10
