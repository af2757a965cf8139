"""Liveness, readiness and metrics."""

from __future__ import annotations

import httpx

from tests.app.conftest import encode, metric_value, scene


def test_healthz_answers_ok(client: httpx.Client) -> None:
    response = client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_readyz_answers_200_with_every_model_ready(client: httpx.Client, names: dict[str, str]) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["ready"] is True
    states = {m["name"]: m["state"] for m in body["models"]}
    assert all(states[name] == "ready" for name in names.values())
    assert all(m["load_ms"] > 0 for m in body["models"])


def test_metrics_count_requests_inferences_and_batches_under_triton_names(
    client: httpx.Client, names: dict[str, str]
) -> None:
    model = {"model": names["classification"], "version": "1"}
    before = client.get("/metrics").text
    files = [("file", ("a.png", encode(scene(100, 80)), "image/png"))] * 3
    assert client.post("/v1/classify", files=files).status_code == 200
    assert client.post("/v1/classify", params={"model": "nope"}, files=files).status_code == 404
    text = client.get("/metrics").text

    def delta(name: str, **labels: str) -> float:
        return metric_value(text, name, **labels) - metric_value(before, name, **labels)

    assert delta("nv_inference_request_success", **model) == 1
    assert delta("nv_inference_count", **model) == 3
    assert delta("nv_inference_exec_count", **model) >= 1
    assert delta("nv_inference_queue_duration_us", **model) >= 0
    assert delta("nv_inference_compute_infer_duration_us", **model) > 0
    assert delta("inference_batch_size_sum", **model) == 3
    assert delta("inference_queue_duration_seconds_count", **model) >= 1
    assert delta("inference_compute_duration_seconds_count", **model) >= 1
    assert "nv_inference_pending_request_count{" in text
    assert delta("http_requests_total", route="/v1/classify", method="POST", status="200") == 1
    assert delta("http_requests_total", route="/v1/classify", method="POST", status="404") == 1
    assert delta("http_request_duration_seconds_count", route="/v1/classify", method="POST") == 2


def test_body_limit_answers_are_counted_under_their_route(client: httpx.Client) -> None:
    labels = {"route": "/v1/segment", "method": "POST", "status": "413"}
    before = metric_value(client.get("/metrics").text, "http_requests_total", **labels)
    big = client.post("/v1/segment", content=b"\0" * 2_000_001, headers={"content-type": "image/png"})
    assert big.status_code == 413
    assert metric_value(client.get("/metrics").text, "http_requests_total", **labels) == before + 1
