"""Soak test: run the service for a while at moderate load; memory and latency must not grow.

Starts `python -m app` on a loopback port, keeps `--concurrency` clients posting images for
`--seconds`, and every `--interval` seconds samples the server's resident memory and the
interval's latencies. Prints one table row per interval, then judges: the first interval is the
warm-up; against the next one (the baseline), the last interval may not hold more than
`--rss-growth-mb` MiB more, nor a median latency more than `--latency-growth` times as long
(plus 5 ms of jitter), and no request may fail. Exit status 1 when any of that happens.

    python -m bench.soak --seconds 600                       # ten minutes on the default classifier
    python -m bench.soak --model mobilenet-v2-d8_fcn_4xb2-80k_cityscapes-512x1024 --endpoint /v1/segment
    python -m bench.soak --model '' --attacks all --seconds 120  # the same, with issue 21's attackers

`--attacks` runs hostile clients beside the honest ones (see `ATTACKS`). Then a 503 with
Retry-After is counted as refused, not failed; `/healthz` is probed every 0.2 s and must answer
within `--health-bound-ms` throughout, and the peak resident memory must stay under
`--rss-bound-mb` (these absolute bounds replace the growth checks: attacks come and go).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import io
import itertools
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
LATENCY_JITTER_MS = 5.0


@dataclass
class Interval:
    """One sampling interval: when it ended, the server's memory then, and its requests."""

    elapsed_s: float
    rss_mb: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    refused: int = 0  # 503 with Retry-After, counted only while attacks run
    health_ms: float = 0.0  # the slowest /healthz of the interval
    rss_peak_mb: float = 0.0

    @property
    def requests(self) -> int:
        return len(self.latencies_ms) + self.errors + self.refused

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


def judge(
    intervals: list[Interval],
    rss_growth_mb: float,
    latency_growth: float,
    health_bound_ms: float | None = None,
    rss_bound_mb: float | None = None,
) -> list[str]:
    """What grew or failed; empty when the run was steady."""
    if len(intervals) < 2:
        return ["too short: at least two intervals are needed (a warm-up and a baseline)"]
    bounds = []
    slowest = max(i.health_ms for i in intervals)
    if health_bound_ms is not None and slowest > health_bound_ms:
        bounds.append(f"/healthz took {slowest:.0f} ms (bound {health_bound_ms:.0f} ms)")
    peak = max(max(i.rss_peak_mb, i.rss_mb) for i in intervals)
    if rss_bound_mb is not None and peak > rss_bound_mb:
        bounds.append(f"resident memory peaked at {peak:.0f} MiB (bound {rss_bound_mb:.0f} MiB)")
    baseline = intervals[1] if len(intervals) > 2 else intervals[0]
    last = intervals[-1]
    problems = []
    if last.rss_mb - baseline.rss_mb > rss_growth_mb:
        problems.append(
            f"memory grew by {last.rss_mb - baseline.rss_mb:.1f} MiB "
            f"({baseline.rss_mb:.1f} -> {last.rss_mb:.1f}; limit {rss_growth_mb} MiB)"
        )
    base_p50, last_p50 = baseline.percentile(50), last.percentile(50)
    if last_p50 > base_p50 * latency_growth + LATENCY_JITTER_MS:
        problems.append(
            f"median latency grew from {base_p50:.1f} to {last_p50:.1f} ms (limit {latency_growth}x + {LATENCY_JITTER_MS:.0f} ms)"
        )
    errors = sum(i.errors for i in intervals)
    if errors:
        problems.append(f"{errors} requests failed")
    if not last.latencies_ms:
        problems.append("no request succeeded in the last interval")
    return bounds + problems


def table(intervals: list[Interval]) -> str:
    header = (
        f"{'t (s)':>7} {'requests':>8} {'errors':>6} {'503s':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
        f"{'RSS MiB':>8} {'peak MiB':>8} {'healthz ms':>10}"
    )
    rows = [header]
    for i in intervals:
        rows.append(
            f"{i.elapsed_s:7.1f} {i.requests:8d} {i.errors:6d} {i.refused:6d} {i.percentile(50):8.1f} "
            f"{i.percentile(95):8.1f} {i.percentile(99):8.1f} {i.rss_mb:8.1f} {i.rss_peak_mb:8.1f} "
            f"{i.health_ms:10.1f}"
        )
    return "\n".join(rows)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def images(count: int, width: int, height: int) -> list[bytes]:
    """Varied JPEGs: gradients, blocks and noise, a different seed each."""
    out = []
    for seed in range(count):
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[0:height, 0:width]
        pixels = np.stack([xx * 255 / width, yy * 255 / height, (xx // 23 + yy // 17) % 2 * 200], -1)
        pixels = np.clip(pixels + rng.normal(0, 20, pixels.shape), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


@functools.cache
def solid_png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 120, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@functools.cache
def striped_png(side: int) -> bytes:
    """A `side`² PNG of stripes: a few hundred kB that decode to side² pixels."""
    yy, xx = np.mgrid[0:side, 0:side]
    stripes = np.stack([(xx // 50 % 2) * 200, (yy // 70 % 2) * 150, ((xx + yy) // 90 % 2) * 100], -1)
    buffer = io.BytesIO()
    Image.fromarray(stripes.astype(np.uint8)).save(buffer, format="PNG", compress_level=9)
    return buffer.getvalue()


async def _posting(url: str, stop_at: float, path: str, body: bytes, clients: int) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=90) as client:

        async def loop() -> None:
            while time.monotonic() < stop_at:
                with contextlib.suppress(httpx.HTTPError):
                    await client.post(path, content=body, headers={"content-type": "image/png"})

        await asyncio.gather(*(loop() for _ in range(clients)))


async def _trickling(url: str, stop_at: float, head: bytes, body_bytes: bool, connections: int) -> None:
    """`connections` sockets sending one byte a second (of the head, or after it of the body);
    each reopened when the server closes it."""
    host, port = url.removeprefix("http://").split(":")

    async def one() -> None:
        while time.monotonic() < stop_at:
            try:
                reader, writer = await asyncio.open_connection(host, int(port))
            except OSError:
                await asyncio.sleep(1)
                continue
            try:
                if body_bytes:
                    writer.write(head)
                for i in itertools.count():
                    if time.monotonic() >= stop_at or reader.at_eof():
                        break
                    writer.write(b"x" if body_bytes else head[i % len(head) : i % len(head) + 1])
                    await writer.drain()
                    with contextlib.suppress(TimeoutError):
                        if await asyncio.wait_for(reader.read(65536), 1.0) == b"":
                            break  # closed by the server
            except OSError:
                pass
            finally:
                writer.close()

    await asyncio.gather(*(one() for _ in range(connections)))


async def _big_heads(url: str, stop_at: float) -> None:
    host, port = url.removeprefix("http://").split(":")
    while time.monotonic() < stop_at:
        with contextlib.suppress(OSError):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000_000 + b"\r\n\r\n")
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.drain(), 5)
                await asyncio.wait_for(reader.read(), 5)
            writer.close()
        await asyncio.sleep(0.5)


SLOW_HEAD = (
    b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\n"
)
# Issue 21's attacks, each one cheap client: name -> (url, stop_at) -> its coroutine.
ATTACKS: dict[str, Callable[[str, float], Awaitable[object]]] = {
    # Pose drawings of a 1×4,000,000 PNG (held the GIL for minutes), as PNG and as JSON.
    "needle": lambda url, stop: asyncio.gather(
        _posting(url, stop, "/v1/pose?format=png", solid_png(1, 4_000_000), 1),
        _posting(url, stop, "/v1/pose", solid_png(1, 4_000_000), 1),
    ),
    # 24 clients posting 6300² PNGs for overlays (resident memory went to 4.7 GB).
    "overlays": lambda url, stop: _posting(url, stop, "/v1/segment?overlay=true", striped_png(6300), 24),
    # 64 bodies at 1 byte/s (held every slot), 300 heads at 1 byte/s (held open).
    "slow-bodies": lambda url, stop: _trickling(url, stop, SLOW_HEAD, True, 64),
    "slowloris": lambda url, stop: _trickling(url, stop, SLOW_HEAD, False, 300),
    # 20 MB request heads, one every half second (were read whole).
    "big-headers": _big_heads,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_service(args: argparse.Namespace, port: int, log: IO[Any] | int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "MODEL_REPOSITORY": str(args.repository),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "LOG_LEVEL": "warning",
    }
    if args.model:
        env["MODELS"] = args.model
    return subprocess.Popen(
        [sys.executable, "-m", "app"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )


async def wait_ready(client: httpx.AsyncClient, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited with status {process.returncode}")
        try:
            if (await client.get("/readyz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.2)
    raise TimeoutError(f"the service was not ready after {timeout_s} s")


async def drive(
    args: argparse.Namespace, url: str, pid: int, process: subprocess.Popen[bytes]
) -> list[Interval]:
    bodies = images(8, *args.image_size)
    attacks = list(ATTACKS) if args.attacks == "all" else [a for a in args.attacks.split(",") if a]
    solid_png(1, 4_000_000), striped_png(6300)  # made before the clock starts (seconds of CPU)
    params = {"model": args.model} if args.model else {}
    limits = httpx.Limits(max_connections=args.concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        await wait_ready(client, process, args.ready_timeout)
        started = time.monotonic()
        stop_at = started + args.seconds
        current = Interval(0.0, rss_mb(pid))
        intervals: list[Interval] = []

        async def worker(offset: int) -> None:
            n = offset
            while time.monotonic() < stop_at:
                body = bodies[n % len(bodies)]
                n += 1
                sent = time.perf_counter()
                try:
                    response = await client.post(
                        args.endpoint, params=params, content=body, headers={"content-type": "image/jpeg"}
                    )
                    status, retry = response.status_code, response.headers.get("retry-after")
                except httpx.HTTPError:
                    status, retry = 0, None
                if status == 200:
                    current.latencies_ms.append((time.perf_counter() - sent) * 1e3)
                elif attacks and status == 503 and retry:
                    current.refused += 1
                    await asyncio.sleep(min(float(retry), 1.0))
                else:
                    current.errors += 1

        async def prober() -> None:  # /healthz and memory, every 0.2 s
            async with httpx.AsyncClient(base_url=url, timeout=10) as probe:
                while time.monotonic() < stop_at:
                    sent = time.perf_counter()
                    try:
                        ok = (await probe.get("/healthz")).status_code == 200
                    except httpx.HTTPError:
                        ok = False
                    took = (time.perf_counter() - sent) * 1e3 if ok else 10_000.0
                    current.health_ms = max(current.health_ms, took)
                    current.rss_peak_mb = max(current.rss_peak_mb, rss_mb(pid))
                    await asyncio.sleep(0.2)

        async def sampler() -> None:
            nonlocal current
            while time.monotonic() < stop_at:
                await asyncio.sleep(min(args.interval, max(0.0, stop_at - time.monotonic())))
                finished, current = current, Interval(0.0, 0.0)
                finished.elapsed_s = time.monotonic() - started
                finished.rss_mb = rss_mb(pid)
                intervals.append(finished)
                if len(intervals) == 1:
                    print(table([]), flush=True)
                print(table([finished]).splitlines()[1], flush=True)

        hostile = [ATTACKS[name](url, stop_at) for name in attacks]
        await asyncio.gather(sampler(), prober(), *hostile, *(worker(i) for i in range(args.concurrency)))
        return intervals


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", type=Path, default=Path(os.environ.get("MODEL_REPOSITORY", "models")))
    parser.add_argument(
        "--model", default="mobilenet-v2_8xb32_in1k", help="model to serve and drive ('' = all)"
    )
    parser.add_argument("--endpoint", default="/v1/classify")
    parser.add_argument("--seconds", type=float, default=300.0, help="how long to drive the service")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds per sample")
    parser.add_argument("--concurrency", type=int, default=4, help="clients sending at once")
    parser.add_argument("--image-size", type=int, nargs=2, default=(640, 480), metavar=("W", "H"))
    parser.add_argument("--rss-growth-mb", type=float, default=50.0)
    parser.add_argument("--latency-growth", type=float, default=1.5)
    parser.add_argument("--ready-timeout", type=float, default=300.0)
    parser.add_argument(
        "--attacks",
        default="",
        help=f"comma-separated hostile clients to run beside: {', '.join(ATTACKS)}, or all",
    )
    parser.add_argument("--health-bound-ms", type=float, default=1000.0, help="with --attacks")
    parser.add_argument("--rss-bound-mb", type=float, default=1024.0, help="with --attacks: peak RSS")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    port = free_port()
    with tempfile.TemporaryFile("w+") as log:
        process = start_service(args, port, log)
        try:
            intervals = asyncio.run(drive(args, f"http://127.0.0.1:{port}", process.pid, process))
        except (RuntimeError, TimeoutError) as exc:
            log.seek(0)
            print(f"soak: {exc}\n{log.read()[-4000:]}", file=sys.stderr)
            return 2
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
    attacked = bool(args.attacks)
    # Under attack the load comes and goes by design: the bounds are absolute, not growth.
    problems = judge(
        intervals,
        math.inf if attacked else args.rss_growth_mb,
        math.inf if attacked else args.latency_growth,
        args.health_bound_ms if attacked else None,
        args.rss_bound_mb if attacked else None,
    )
    total = sum(i.requests for i in intervals)
    seconds = intervals[-1].elapsed_s if intervals else 0.0
    latencies = [ms for i in intervals for ms in i.latencies_ms]
    median = statistics.median(latencies) if latencies else float("nan")
    print(f"{total} requests in {seconds:.0f} s ({total / max(seconds, 1e-9):.1f}/s), median {median:.1f} ms")
    for problem in problems:
        print(f"GROWTH: {problem}")
    print("steady" if not problems else "NOT steady")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
