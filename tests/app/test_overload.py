"""Overload and faults: a burst beyond capacity, clients that go away, a model that fails at run time."""

from __future__ import annotations

import asyncio
import gzip
import itertools
import json
import socket
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.app.conftest import RunningServer, encode, metric_value, png_claiming, scene, serve
from tests.app.processes import AppProcess, run_app
from tests.app.tiny_models import FAIL_FROM

PNG = {"content-type": "image/png"}


def raw_request(url: str, method: str, target: str, body: bytes, headers: dict[str, str]) -> socket.socket:
    """Send a request's head and `body` on a new socket (the caller reads, or just closes it)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", *(f"{k}: {v}" for k, v in headers.items())]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    return sock


def read_status(sock: socket.socket, timeout: float = 10.0) -> tuple[int, bytes]:
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1]), data


# -- a model that fails at run time --------------------------------------------------------------


def solid(red: int) -> bytes:
    image = np.full((40, 40, 3), 90, np.uint8)
    image[..., 0] = red
    return encode(image)


@pytest.fixture(scope="module")
def one_at_a_time_server(tiny_repository: Path) -> Iterator[RunningServer]:
    with serve(tiny_repository, max_batch_size=1) as running:
        yield running


def test_session_failing_at_run_time_answers_500_for_its_batch_only_and_the_next_batch_runs(
    one_at_a_time_server: RunningServer,
) -> None:
    labels = {"model": "tiny", "version": "1"}
    with one_at_a_time_server.client() as client:
        before = client.get("/metrics").text
        failing = client.post("/v1/classify", content=solid(FAIL_FROM + 50), headers=PNG)
        after_it = client.post("/v1/classify", content=solid(10), headers=PNG)
        with ThreadPoolExecutor(6) as pool:  # one failing image among five good ones, batches of one
            reds = [10, 20, FAIL_FROM + 10, 30, 40, 50]
            concurrent = list(
                pool.map(lambda red: client.post("/v1/classify", content=solid(red), headers=PNG), reds)
            )
        text = client.get("/metrics").text
    assert failing.status_code == 500
    assert failing.json()["error"]["code"] == "inference_failed"
    assert "Gather" in failing.json()["error"]["message"]
    assert after_it.status_code == 200
    assert [r.status_code for r in concurrent] == [200, 200, 500, 200, 200, 200]

    def delta(name: str, **extra: str) -> float:
        return metric_value(text, name, **labels, **extra) - metric_value(before, name, **labels, **extra)

    assert delta("nv_inference_request_failure", reason="BACKEND") == 2
    assert delta("nv_inference_request_success") == 6


# -- clients that go away ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pose_server(model_repository: Path, names: dict[str, str]) -> Iterator[RunningServer]:
    with serve(model_repository, models=[names["pose"]], max_batch_size=2, max_queue_size=200) as running:
        yield running


def _pending(client: httpx.Client, model: str) -> float:
    return metric_value(client.get("/metrics").text, "nv_inference_pending_request_count", model=model)


def _executions(source: httpx.Client | str, model: str) -> float:
    text = source if isinstance(source, str) else source.get("/metrics").text
    return metric_value(text, "nv_inference_exec_count", model=model)


def test_client_disconnect_while_queued_frees_its_slot_and_its_batch_still_runs(
    pose_server: RunningServer, names: dict[str, str]
) -> None:
    model = names["pose"]
    labels = {"model": model, "version": "1"}
    image = encode(scene(200, 200))

    def pose(boxes: int) -> httpx.Response:
        with pose_server.client() as own:
            params = {"boxes": json.dumps([[0, 0, 100 + i % 50, 200] for i in range(boxes)])}
            return own.post("/v1/pose", params=params, content=image, headers=PNG)

    with pose_server.client() as client, ThreadPoolExecutor(2) as pool:
        before = client.get("/metrics").text
        busy = pool.submit(pose, 100)  # 50 batches of 2 keep the model busy for seconds
        deadline = time.monotonic() + 30
        while _executions(client, model) == _executions(before, model) and time.monotonic() < deadline:
            time.sleep(0.01)  # until the busy request's first batch runs: the rest is queued
        boxes = json.dumps([[0, 0, 150, 200]] * 8)
        gone = raw_request(
            pose_server.url, "POST", f"/v1/pose?boxes={boxes.replace(' ', '')}", image,
            {"Content-Type": "image/png", "Content-Length": str(len(image))},
        )  # fmt: skip
        time.sleep(0.5)  # decoded and queued behind the busy request
        neighbour = pool.submit(pose, 1)  # queued beside the one that goes away
        time.sleep(0.2)
        pending_before_close = _pending(client, model)
        assert not busy.done()  # so the request that goes away is still queued behind it
        gone.close()
        freed_at = time.monotonic() + 2
        while _pending(client, model) > pending_before_close - 8 and time.monotonic() < freed_at:
            time.sleep(0.01)
        pending_after_close = _pending(client, model)
        assert busy.result().status_code == 200
        assert neighbour.result().status_code == 200
        assert busy.done() and neighbour.done()
        time.sleep(0.3)
        text = client.get("/metrics").text
    assert pending_after_close <= pending_before_close - 8
    ran = metric_value(text, "nv_inference_count", **labels) - metric_value(
        before, "nv_inference_count", **labels
    )
    assert ran == 100 + 1  # the 8 crops of the request whose client went away never ran


@pytest.fixture(scope="module")
def two_request_server(model_repository: Path, names: dict[str, str]) -> Iterator[RunningServer]:
    with serve(
        model_repository,
        models=[names["pose"]],
        max_batch_size=2,
        max_queue_size=200,
        max_concurrent_requests=2,
    ) as running:
        yield running


def test_requests_beyond_max_concurrent_requests_get_503_at_once_and_probes_still_answer(
    two_request_server: RunningServer,
) -> None:
    image = encode(scene(200, 200))
    params = {"boxes": json.dumps([[0, 0, 100 + i % 50, 200] for i in range(60)])}  # 30 batches each

    def busy() -> httpx.Response:
        with two_request_server.client() as own:
            return own.post("/v1/pose", params=params, content=image, headers=PNG)

    with two_request_server.client() as client, ThreadPoolExecutor(2) as pool:
        before = _executions(client, two_request_server.settings.models[0])
        holding = [pool.submit(busy) for _ in range(2)]
        deadline = time.monotonic() + 30
        while (
            _executions(client, two_request_server.settings.models[0]) == before
            and time.monotonic() < deadline
        ):
            time.sleep(0.01)  # both bodies are in and their batches run: the two slots are taken
        started = time.perf_counter()
        refused = client.post("/v1/classify", content=solid(10), headers=PNG)
        elapsed = time.perf_counter() - started
        health = client.get("/healthz")
        metrics = client.get("/metrics")
        assert [f.result().status_code for f in holding] == [200, 200]
        after = client.post("/v1/pose", content=image, headers=PNG)  # the slots came back
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "overloaded"
    assert refused.headers["retry-after"] == "1"
    assert "connection" not in refused.headers  # its body was read: the connection stays usable
    assert elapsed < 1.0
    assert (health.status_code, metrics.status_code) == (200, 200)  # probes are never refused
    assert after.status_code == 200


# -- a burst far beyond capacity -----------------------------------------------------------------


async def _burst(url: str, images: list[bytes], count: int) -> list[tuple[int, float, dict[str, str], bytes]]:
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def one(i: int) -> tuple[int, float, dict[str, str], bytes]:
            started = time.perf_counter()
            response = await client.post("/v1/classify", content=images[i % len(images)], headers=PNG)
            return (
                response.status_code,
                time.perf_counter() - started,
                dict(response.headers),
                response.content,
            )

        return list(await asyncio.gather(*(one(i) for i in range(count))))


@pytest.fixture(scope="module")
def classifier_process(model_repository: Path, names: dict[str, str]) -> Iterator[AppProcess]:
    """`python -m app` serving the classifier, with a small queue: its memory can be measured."""
    settings = {"models": names["classification"], "max_queue_size": 8, "max_concurrent_requests": 16}
    with run_app(model_repository, **settings) as app:
        yield app


def _settled_rss(app: AppProcess) -> float:
    time.sleep(1.0)
    return app.rss_mb()


def test_png_claiming_50000x50000_pixels_is_refused_before_decoding_and_memory_stays_flat(
    classifier_process: AppProcess,
) -> None:
    bomb = png_claiming(50_000, 50_000)  # 7.5 GB of pixels once decoded; 100 bytes as sent
    with classifier_process.client() as client:
        client.post("/v1/classify", content=bomb, headers=PNG)
        rss_before = _settled_rss(classifier_process)
        answers = [client.post("/v1/classify", content=bomb, headers=PNG) for _ in range(20)]
        rss_after = _settled_rss(classifier_process)
    assert {(a.status_code, a.json()["error"]["code"]) for a in answers} == {(413, "image_too_large")}
    print(f"20 PNG bombs: RSS {rss_before:.1f} -> {rss_after:.1f} MiB")
    assert rss_after - rss_before < 5.0


def test_gzip_bomb_on_v1_is_refused_uninflated_and_memory_stays_flat(classifier_process: AppProcess) -> None:
    bomb = gzip.compress(encode(scene(64, 48)) + b"\0" * 100_000_000, compresslevel=9)  # 100 MB inflated
    headers = {**PNG, "content-encoding": "gzip"}
    with classifier_process.client() as client:
        rss_before = _settled_rss(classifier_process)
        answers = [client.post("/v1/classify", content=bomb, headers=headers) for _ in range(5)]
        rss_after = _settled_rss(classifier_process)
    assert {(a.status_code, a.json()["error"]["code"]) for a in answers} == {
        (415, "unsupported_content_encoding")
    }
    print(f"5 gzip bombs of {len(bomb) / 1e3:.0f} kB: RSS {rss_before:.1f} -> {rss_after:.1f} MiB")
    assert rss_after - rss_before < 5.0


def test_burst_beyond_capacity_gets_503s_with_retry_after_correct_answers_and_memory_back(
    classifier_process: AppProcess,
) -> None:
    images = [encode(scene(400, 300, seed)) for seed in range(8)]
    app = classifier_process
    with app.client() as client:
        expected = []
        for data in images:  # the reference answers, one at a time; also warms every code path
            response = client.post("/v1/classify", content=data, headers=PNG)
            expected.append(response.json()["results"][0]["predictions"][0])
        asyncio.run(_burst(app.url, images, 400))  # the first burst grows the heap towards its working size
        rss = [_settled_rss(app)]
        bursts = []
        for _ in range(5):
            bursts.append(asyncio.run(_burst(app.url, images, 400)))
            rss.append(_settled_rss(app))
        still_serving = client.post("/v1/classify", content=images[0], headers=PNG)
    answers = bursts[-1]
    accepted = [(i, a) for i, a in enumerate(answers) if a[0] == 200]
    refused = [a for a in answers if a[0] == 503]
    assert len(accepted) + len(refused) == len(answers), {a[0] for a in answers}
    assert len(refused) > len(answers) // 2 and len(accepted) >= 8  # at least a full queue
    for _, _, headers, body in refused:
        assert int(headers["retry-after"]) >= 1
        assert json.loads(body)["error"]["code"] in ("overloaded", "queue_full")
    for i, (_, _, _, body) in accepted:
        top = json.loads(body)["results"][0]["predictions"][0]
        assert top["index"] == expected[i % len(images)]["index"]
        assert top["score"] == pytest.approx(expected[i % len(images)]["score"], abs=1e-5)
    latencies = sorted(a[1] for _, a in accepted)
    growth = [after - before for before, after in itertools.pairwise(rss)]
    print(
        f"burst of {len(answers)}: {len(accepted)} answered (p50 {statistics.median(latencies) * 1e3:.0f} ms, "
        f"max {latencies[-1] * 1e3:.0f} ms), {len(refused)} refused; RSS after each burst "
        + " -> ".join(f"{v:.1f}" for v in rss)
        + " MiB"
    )
    assert latencies[-1] < 10.0
    # A leak grows after every burst (8 decoded images alone are 2.9 MB). Growth towards a bound is
    # not a leak: glibc adds an arena when a new thread first allocates, and with two runs in flight
    # ORT's arena grows whenever two batches first overlap (seen in CI: +24 and +13 MiB, between flat
    # bursts). So some burst must leave memory flat, and all of them together stay bounded.
    assert min(growth) < 2.0, growth
    assert rss[-1] - rss[0] < 64.0, growth
    assert still_serving.status_code == 200
