"""Prometheus figures, and Triton's per-model statistics they share their counters with.

Per model and version, `ModelStats` holds Triton's cumulative counters (requests, inferences,
executions, durations in ns, batch sizes): `/v2/models/{m}/stats` (and gRPC's ModelStatistics)
answers them, and `/metrics` writes them under Triton's own names and types
(`nv_inference_request_success`, `nv_inference_count`, `nv_inference_queue_duration_us`, ...:
counters without prometheus_client's `_total` suffix and `_created` series, labels `model`,
`version`), so that dashboards built for Triton match. The rest goes through prometheus_client:
HTTP requests, histograms (batch sizes, queue and compute times: the distributions Triton's
counters cannot show), queue depth, readiness. Each app owns its registry and its statistics, so
several apps in one process (tests) do not collide.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
# Why a request failed (`reason` of nv_inference_request_failure): Triton's REJECTED (a full
# queue), BACKEND (the run failed) and OTHER, with TIMEOUT (its deadline) and INVALID (bad input).
FAILURE_REASONS = ("REJECTED", "TIMEOUT", "INVALID", "BACKEND", "OTHER")


@dataclass
class Duration:
    """Triton's `StatisticDuration`: how many, and their cumulative nanoseconds."""

    count: int = 0
    ns: int = 0

    def add(self, seconds: float, count: int = 1) -> None:
        self.count += count
        self.ns += round(seconds * 1e9)

    def as_dict(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass
class BatchStats:
    """Executions of one batch size (compute_input and compute_output: see `ModelStats`)."""

    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass
class ModelStats:
    """One model version's cumulative figures, as Triton's statistics extension reports them.

    Per request: `success`/`fail` (from the model's resolution to the answer), `queue` (waiting
    for a batch) and `compute_infer` (the batch's `session.run`, counted for each request in it,
    as Triton does). The copy into the batch buffer and the slicing of the outputs happen inside
    the measured run, so `compute_input` and `compute_output` count the same requests with 0 ns.
    """

    name: str
    version: str
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    failures: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAILURE_REASONS, 0))
    inference_count: int = 0  # rows inferred (a batch of n counts n)
    execution_count: int = 0  # session.run calls
    last_inference_ms: int = 0  # milliseconds since the epoch
    batches: dict[int, BatchStats] = field(default_factory=dict)
    served: bool = False  # loaded at least once (or counted something): only then on /metrics, as Triton

    def batch_done(self, size: int, compute_s: float, queue_s: Sequence[float]) -> None:
        requests = len(queue_s)
        self.inference_count += size
        self.execution_count += 1
        self.last_inference_ms = int(time.time() * 1e3)
        self.queue.add(sum(queue_s), requests)
        self.compute_input.add(0.0, requests)
        self.compute_infer.add(compute_s * requests, requests)
        self.compute_output.add(0.0, requests)
        batch = self.batches.setdefault(size, BatchStats())
        batch.compute_input.add(0.0)
        batch.compute_infer.add(compute_s)
        batch.compute_output.add(0.0)

    def request_done(self, seconds: float, failure_reason: str | None) -> None:
        if failure_reason is None:
            self.success.add(seconds)
        else:
            self.fail.add(seconds)
            self.failures[failure_reason] = self.failures.get(failure_reason, 0) + 1

    def as_triton(self) -> dict[str, Any]:
        """One entry of Triton's `model_stats` (HTTP JSON; the gRPC message has the same fields)."""
        return {
            "name": self.name,
            "version": self.version,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": self.success.as_dict(),
                "fail": self.fail.as_dict(),
                "queue": self.queue.as_dict(),
                "compute_input": self.compute_input.as_dict(),
                "compute_infer": self.compute_infer.as_dict(),
                "compute_output": self.compute_output.as_dict(),
                "cache_hit": Duration().as_dict(),  # no response cache
                "cache_miss": Duration().as_dict(),
            },
            "batch_stats": [
                {
                    "batch_size": size,
                    "compute_input": b.compute_input.as_dict(),
                    "compute_infer": b.compute_infer.as_dict(),
                    "compute_output": b.compute_output.as_dict(),
                }
                for size, b in sorted(self.batches.items())
            ],
            "memory_usage": [],
        }


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


# Triton's counters: name, help, and the figure of one model's statistics (µs where the name says).
_TRITON_COUNTERS: list[tuple[str, str, Any]] = [
    ("nv_inference_request_success", "Number of successful inference requests, all batch sizes",
     lambda s: s.success.count),
    ("nv_inference_count", "Number of inferences performed (a batch of n counts n)",
     lambda s: s.inference_count),
    ("nv_inference_exec_count", "Number of model executions performed (session.run calls)",
     lambda s: s.execution_count),
    ("nv_inference_request_duration_us", "Cumulative inference request duration in microseconds",
     lambda s: s.success.ns // 1000),
    ("nv_inference_queue_duration_us", "Cumulative inference queuing duration in microseconds",
     lambda s: s.queue.ns // 1000),
    ("nv_inference_compute_input_duration_us", "Cumulative compute input duration in microseconds",
     lambda s: s.compute_input.ns // 1000),
    ("nv_inference_compute_infer_duration_us", "Cumulative compute inference duration in microseconds",
     lambda s: s.compute_infer.ns // 1000),
    ("nv_inference_compute_output_duration_us", "Cumulative inference compute output duration in microseconds",
     lambda s: s.compute_output.ns // 1000),
]  # fmt: skip


def triton_exposition(stats: Sequence[ModelStats]) -> Iterator[str]:
    """Triton's counters in the Prometheus text format, as Triton writes them (no `_total`)."""
    served = [s for s in stats if s.served or s.execution_count or s.success.count or s.fail.count]
    failure = "nv_inference_request_failure"
    yield f"# HELP {failure} Number of failed inference requests, all batch sizes, by reason\n"
    yield f"# TYPE {failure} counter\n"
    for s in served:
        for reason, count in s.failures.items():
            yield f'{failure}{{model="{_label(s.name)}",reason="{reason}",version="{s.version}"}} {count}\n'
    for name, description, figure in _TRITON_COUNTERS:
        yield f"# HELP {name} {description}\n# TYPE {name} counter\n"
        for s in served:
            yield f'{name}{{model="{_label(s.name)}",version="{s.version}"}} {figure(s)}\n'


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.stats: dict[tuple[str, str], ModelStats] = {}
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
        self.grpc_requests = Counter(
            "grpc_requests_total", "gRPC calls by method and status code", ["method", "code"], registry=r
        )
        model = ["model", "version"]
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
        key = (name, str(version))
        stats = self.stats.setdefault(key, ModelStats(*key))  # a reload of the same version keeps its counts
        return ModelMetrics(self, stats)

    def render(self) -> bytes:
        triton = "".join(triton_exposition(list(self.stats.values())))
        return generate_latest(self.registry) + triton.encode()


class ModelMetrics:
    """One model's figures; implements the batcher's `BatchObserver`."""

    def __init__(self, metrics: Metrics, stats: ModelStats) -> None:
        self._m = metrics
        self.stats = stats
        self._labels = (stats.name, stats.version)

    def batch_done(self, size: int, compute_s: float, queue_s: Sequence[float]) -> None:
        m, labels = self._m, self._labels
        self.stats.batch_done(size, compute_s, queue_s)
        m.batch_size.labels(*labels).observe(size)
        m.compute_seconds.labels(*labels).observe(compute_s)
        for waited in queue_s:
            m.queue_seconds.labels(*labels).observe(waited)

    def batch_failed(self, size: int) -> None:
        self.stats.execution_count += 1

    def queue_depth(self, slots: int) -> None:
        self._m.pending.labels(*self._labels).set(slots)

    def request_done(self, failure_reason: str | None = None, seconds: float = 0.0) -> None:
        self.stats.request_done(seconds, failure_reason)

    def set_ready(self, ready: bool) -> None:
        if ready:
            self.stats.served = True
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
