"""Soak test: run the service for a while at moderate load; memory and latency must not grow.

Starts `python -m app` on a loopback port, keeps `--concurrency` clients posting images for
`--seconds`, and every `--interval` seconds samples the server's resident memory and the
interval's latencies. Prints one table row per interval, then judges: the first interval is the
warm-up; against the next one (the baseline), the last interval may not hold more than
`--rss-growth-mb` MiB more, nor a median latency more than `--latency-growth` times as long
(plus 5 ms of jitter), and no request may fail. Exit status 1 when any of that happens.

    python -m bench.soak --seconds 600                       # ten minutes on the default classifier
    python -m bench.soak --model mobilenet-v2-d8_fcn_4xb2-80k_cityscapes-512x1024 --endpoint /v1/segment
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
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

    @property
    def requests(self) -> int:
        return len(self.latencies_ms) + self.errors

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


def judge(intervals: list[Interval], rss_growth_mb: float, latency_growth: float) -> list[str]:
    """What grew or failed; empty when the run was steady."""
    if len(intervals) < 2:
        return ["too short: at least two intervals are needed (a warm-up and a baseline)"]
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
    return problems


def table(intervals: list[Interval]) -> str:
    header = (
        f"{'t (s)':>7} {'requests':>8} {'errors':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'RSS MiB':>8}"
    )
    rows = [header]
    for i in intervals:
        rows.append(
            f"{i.elapsed_s:7.1f} {i.requests:8d} {i.errors:6d} {i.percentile(50):8.1f} "
            f"{i.percentile(95):8.1f} {i.percentile(99):8.1f} {i.rss_mb:8.1f}"
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
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    current.latencies_ms.append((time.perf_counter() - sent) * 1e3)
                else:
                    current.errors += 1

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

        await asyncio.gather(sampler(), *(worker(i) for i in range(args.concurrency)))
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
    problems = judge(intervals, args.rss_growth_mb, args.latency_growth)
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
