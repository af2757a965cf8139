"""The load generator: closed-loop asynchronous clients (aiohttp, on uvloop when installed).

It runs as its own process (`python -m bench.load`, a JSON `LoadSpec` on stdin, a JSON
`LoadResult` on stdout) so that its CPU time can be measured apart, and so that it can be given
its own CPU affinity and niceness without touching the in-process limit measurement.

Each of `concurrency` clients sends one request, waits for the answer, sends the next: the images
are taken in turn from the set. New requests stop once `requests` were sent or `duration_s`
passed; the requests in flight then finish (or time out at `timeout_s`).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class LoadSpec:
    url: str
    path: str
    params: dict[str, str]
    images: list[str]  # request bodies (JPEG files, or tensor bodies), sent in turn
    concurrency: int
    requests: int
    duration_s: float
    timeout_s: float
    warmup: int = 0  # requests sent (one per client at most) before the measured ones
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "image/jpeg"})


@dataclass
class LoadResult:
    sent: int
    ok: int
    errors: dict[str, int]  # HTTP status (or exception name) → count
    latencies_ms: list[float]  # of the successful requests, in completion order
    wall_s: float
    cpu_s: float  # this process's CPU time during the measured phase
    error_samples: list[str] = field(default_factory=list)
    total_cpu_s: float = 0.0  # this process's CPU time from start to end (imports included)


async def _drive(spec: LoadSpec) -> LoadResult:
    import aiohttp

    bodies = [Path(p).read_bytes() for p in spec.images]
    connector = aiohttp.TCPConnector(limit=spec.concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=spec.timeout_s)
    url = spec.url.rstrip("/") + spec.path
    headers = spec.headers
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    samples: list[str] = []
    next_index = 0

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(index: int, record: bool) -> None:
            started = time.perf_counter()
            try:
                async with session.post(
                    url, data=bodies[index % len(bodies)], params=spec.params, headers=headers
                ) as answer:
                    content = await answer.read()
                    status = answer.status
            except Exception as exc:  # a transport error or a client timeout
                if record:
                    errors[type(exc).__name__] += 1
                return
            if not record:
                return
            if status == 200:
                latencies.append((time.perf_counter() - started) * 1e3)
            else:
                errors[str(status)] += 1
                if len(samples) < 5:
                    samples.append(f"{status}: {content[:200].decode('utf-8', 'replace')}")

        warm = min(spec.warmup, spec.concurrency)
        await asyncio.gather(*(one(i, record=False) for i in range(warm)))

        end = time.monotonic() + spec.duration_s

        async def client() -> None:
            nonlocal next_index
            while next_index < spec.requests and time.monotonic() < end:
                index = next_index
                next_index += 1
                await one(index, record=True)

        cpu_started, started = time.process_time(), time.perf_counter()
        await asyncio.gather(*(client() for _ in range(spec.concurrency)))
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return LoadResult(
        sent=next_index,
        ok=len(latencies),
        errors=dict(errors),
        latencies_ms=latencies,
        wall_s=wall,
        cpu_s=cpu,
        error_samples=samples,
    )


def run(spec: LoadSpec) -> LoadResult:
    try:
        import uvloop

        return uvloop.run(_drive(spec))
    except ImportError:
        return asyncio.run(_drive(spec))


def main() -> None:
    spec = LoadSpec(**json.loads(sys.stdin.read()))
    nice = int(os.environ.get("BENCH_CLIENT_NICE", "0"))
    if nice:
        os.nice(nice)
    result = run(spec)
    result.total_cpu_s = time.process_time()
    sys.stdout.write(json.dumps(asdict(result)))


if __name__ == "__main__":
    main()
