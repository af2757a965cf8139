"""Prometheus figures: HTTP requests, and per model the batcher's queue, compute and batch sizes.

Names follow Triton's `nv_inference_*` where they mean the same thing (cumulative counters in
microseconds); histograms carry the distributions Triton's counters cannot. Each app owns its
registry, so several apps in one process (tests) do not collide.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = Counter(
            "http_requests_total",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.http_latency = Histogram(
            "http_request_duration_seconds",
            "HTTP request latency, first byte in to last byte out",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        model = ["model", "version"]
        self.request_success = Counter(
            "nv_inference_request_success", "Inference requests answered successfully", model, registry=r
        )
        self.request_failure = Counter(
            "nv_inference_request_failure",
            "Inference requests that failed, by reason (REJECTED, TIMEOUT, INVALID, BACKEND)",
            [*model, "reason"],
            registry=r,
        )
        self.inference_count = Counter(
            "nv_inference_count", "Inferences performed (a batch of n counts n)", model, registry=r
        )
        self.exec_count = Counter(
            "nv_inference_exec_count", "Batched executions (session.run calls)", model, registry=r
        )
        self.queue_duration_us = Counter(
            "nv_inference_queue_duration_us",
            "Cumulative time requests waited in the queue, µs",
            model,
            registry=r,
        )
        self.compute_duration_us = Counter(
            "nv_inference_compute_infer_duration_us", "Cumulative session.run time, µs", model, registry=r
        )
        self.pending = Gauge(
            "nv_inference_pending_request_count",
            "Images reserved or queued for a model and not yet running (queue depth)",
            model,
            registry=r,
        )
        self.batch_size = Histogram(
            "inference_batch_size", "Rows per session.run", model, buckets=BATCH_BUCKETS, registry=r
        )
        self.queue_seconds = Histogram(
            "inference_queue_duration_seconds",
            "Time a request waited for its batch",
            model,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.compute_seconds = Histogram(
            "inference_compute_duration_seconds",
            "session.run time per batch",
            model,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.model_ready = Gauge("model_ready", "1 when the model is loaded and warmed", model, registry=r)

    def for_model(self, name: str, version: int) -> ModelMetrics:
        return ModelMetrics(self, name, str(version))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class ModelMetrics:
    """One model's figures; implements the batcher's `BatchObserver`."""

    def __init__(self, metrics: Metrics, name: str, version: str) -> None:
        self._m = metrics
        self._labels = (name, version)

    def batch_done(self, size: int, compute_s: float, queue_s: Sequence[float]) -> None:
        m, labels = self._m, self._labels
        m.inference_count.labels(*labels).inc(size)
        m.exec_count.labels(*labels).inc()
        m.batch_size.labels(*labels).observe(size)
        m.compute_seconds.labels(*labels).observe(compute_s)
        m.compute_duration_us.labels(*labels).inc(compute_s * 1e6)
        for waited in queue_s:
            m.queue_seconds.labels(*labels).observe(waited)
            m.queue_duration_us.labels(*labels).inc(waited * 1e6)

    def batch_failed(self, size: int) -> None:
        self._m.exec_count.labels(*self._labels).inc()

    def queue_depth(self, slots: int) -> None:
        self._m.pending.labels(*self._labels).set(slots)

    def request_done(self, failure_reason: str | None = None) -> None:
        if failure_reason is None:
            self._m.request_success.labels(*self._labels).inc()
        else:
            self._m.request_failure.labels(*self._labels, failure_reason).inc()

    def set_ready(self, ready: bool) -> None:
        self._m.model_ready.labels(*self._labels).set(1 if ready else 0)


class HttpMetricsMiddleware:
    """Counts every HTTP answer by route template (never the raw path: unbounded label values)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            path = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.http_requests.labels(path, method, str(status)).inc()
            self.metrics.http_latency.labels(path, method).observe(time.perf_counter() - started)
