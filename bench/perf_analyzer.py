"""`python -m bench --perf-analyzer`: Triton's perf_analyzer against the service over HTTP and gRPC,
beside the project's own load generator on the same server in the same run.

perf_analyzer reads the model's configuration (`/v2/models/{m}/config`), sends random UINT8
tensors of the configured shape, one image per request, at a fixed concurrency, and reads the
server's statistics (`/v2/models/{m}/stats`) for the server-side split of the time. The
project's generator (`bench.load`) then sends JPEGs to /v1/classify at the same concurrency:
the difference is the decoding and resizing the service does for /v1.

perf_analyzer ships in the `tritonclient==2.51.0` wheel (later wheels need a newer glibc); it
needs `libb64.so.0d` (Debian's libb64-0d) and `libcudart.so.12` (PyPI nvidia-cuda-runtime-cu12)
even against a CPU server. `bench/get_perf_analyzer.sh DIR` fetches all three into DIR; then
`PERF_ANALYZER=DIR/bin/perf_analyzer PERF_ANALYZER_LIBS=DIR/lib python -m bench --perf-analyzer`.
Where it cannot run, the mode says why and exits 0 (skipped).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.images import DEFAULT_SIZES, image_set, write_images
from bench.load import LoadSpec
from bench.report import percentile
from bench.server import ServerProcess, free_port
from contract.card import ModelCard

SKIPPED = "perf_analyzer skipped"


@dataclass
class PerfOptions:
    models: Path
    out: Path
    concurrency: list[int] = field(default_factory=lambda: [4])
    interval_ms: int = 5000  # one measurement window; perf_analyzer takes up to `trials` of them
    trials: int = 4
    bench_duration_s: float = 10.0
    url: str | None = None  # a running service (HTTP); then `grpc_url` too
    grpc_url: str | None = None
    settings: dict[str, str] = field(default_factory=dict)
    command: str = "python -m bench --perf-analyzer"


@dataclass
class Measurement:
    tool: str  # perf_analyzer or bench.load
    protocol: str  # http (v2), grpc, or http (v1 JPEG)
    concurrency: int
    throughput: float | None  # requests (= images) per second
    p50_ms: float | None
    p99_ms: float | None
    output: str = ""


def find_perf_analyzer() -> tuple[list[str], dict[str, str]] | str:
    """The command and environment that run perf_analyzer, or why it cannot run here."""
    chosen = os.environ.get("PERF_ANALYZER")  # when set, only it
    candidates = (
        [chosen]
        if chosen
        else [shutil.which("perf_analyzer"), str(Path(sys.prefix) / "bin" / "perf_analyzer")]
    )
    binary = next((c for c in candidates if c and Path(c).is_file()), None)
    if binary is None:
        return (
            "no perf_analyzer binary (set PERF_ANALYZER, or put it on PATH): it comes with the "
            "tritonclient==2.51.0 wheel; bench/get_perf_analyzer.sh DIR fetches it and its libraries"
        )
    libraries = [p for p in os.environ.get("PERF_ANALYZER_LIBS", "").split(":") if p]
    try:  # libcudart.so.12 from PyPI's nvidia-cuda-runtime-cu12, when installed in this environment
        import nvidia.cuda_runtime

        libraries += [str(Path(p) / "lib") for p in nvidia.cuda_runtime.__path__]
    except ImportError:
        pass
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = ":".join([*libraries, *filter(None, [env.get("LD_LIBRARY_PATH")])])
    try:
        probe = subprocess.run([binary, "--version"], capture_output=True, text=True, env=env, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{binary} cannot start: {exc}"
    if "error while loading shared libraries" in probe.stderr or probe.returncode == 127:
        return (
            f"{binary} cannot start: {probe.stderr.strip()[:300]} (it needs libb64.so.0d from Debian's "
            "libb64-0d and libcudart.so.12 from PyPI's nvidia-cuda-runtime-cu12 on PERF_ANALYZER_LIBS)"
        )
    return [binary], env


_LATENCY = re.compile(r"p(50|99) latency: (\d+) usec")
_THROUGHPUT = re.compile(r"Throughput: ([\d.]+) infer/sec")


def parse_output(text: str) -> tuple[float | None, float | None, float | None]:
    """(throughput, p50 ms, p99 ms) of perf_analyzer's summary for one concurrency."""
    throughput = _THROUGHPUT.findall(text)
    latencies = dict(_LATENCY.findall(text))
    return (
        float(throughput[-1]) if throughput else None,
        int(latencies["50"]) / 1e3 if "50" in latencies else None,
        int(latencies["99"]) / 1e3 if "99" in latencies else None,
    )


def perf_analyzer_command(
    binary: list[str], model: str, protocol: str, url: str, concurrency: int, o: PerfOptions
) -> list[str]:
    return [
        *binary,
        "-m", model,
        "-i", protocol,
        "-u", url,
        "-b", "1",
        "--concurrency-range", f"{concurrency}:{concurrency}",
        "--measurement-interval", str(o.interval_ms),
        "--max-trials", str(o.trials),
        # Twice Triton's default of 10 %: 5 s windows on a shared 2-core machine vary that much.
        "--stability-percentage", "20",
    ]  # fmt: skip


def run_perf_analyzer(command: list[str], env: dict[str, str], timeout_s: float) -> tuple[int, str]:
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        partial = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
        return 124, f"timed out after {timeout_s:.0f} s\n{partial}"
    return done.returncode, done.stdout + done.stderr


def classifier(repository: Path) -> str:
    cards = sorted(repository.glob("*/*/card.json"))
    names = [ModelCard.read(p).name for p in cards if ModelCard.read(p).task == "classification"]
    if not names:
        raise SystemExit(f"no classification model in {repository}: build one first (make models)")
    return names[0]


def run_bench_load(url: str, model: str, concurrency: int, o: PerfOptions) -> Measurement:
    from bench.run import run_load

    paths = [str(p) for p in write_images(image_set(DEFAULT_SIZES, 2), o.out / "images")]
    spec = LoadSpec(
        url=url,
        path="/v1/classify",
        params={"model": model},
        images=paths,
        concurrency=concurrency,
        requests=100_000,
        duration_s=o.bench_duration_s,
        timeout_s=60.0,
        warmup=concurrency,
    )
    result = run_load(spec, 0, None)
    return Measurement(
        "bench.load",
        "http /v1/classify (JPEG)",
        concurrency,
        result.ok / result.wall_s if result.wall_s else None,
        percentile(result.latencies_ms, 50),
        percentile(result.latencies_ms, 99),
        f"sent {result.sent}, ok {result.ok}, errors {result.errors}",
    )


def _fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def report(measurements: list[Measurement], o: PerfOptions, model: str) -> str:
    lines = [
        f"# perf_analyzer and bench.load against the service ({model})",
        "",
        f"Command: `{o.command}`",
        "",
        "| tool | protocol | clients | requests/s | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    for m in measurements:
        lines.append(
            f"| {m.tool} | {m.protocol} | {m.concurrency} | {_fmt(m.throughput)} | {_fmt(m.p50_ms)} | {_fmt(m.p99_ms)} |"
        )
    for m in measurements:
        if m.tool == "perf_analyzer":
            lines += [
                "",
                f"## perf_analyzer over {m.protocol}, {m.concurrency} clients",
                "",
                "```",
                m.output.strip(),
                "```",
            ]
    return "\n".join(lines) + "\n"


def main(o: PerfOptions) -> int:
    found = find_perf_analyzer()
    if isinstance(found, str):
        print(f"{SKIPPED}: {found}")
        return 0
    binary, env = found
    model = classifier(o.models)
    o.out.mkdir(parents=True, exist_ok=True)
    server = None
    if o.url is None:
        grpc_port = free_port()
        server_env = {
            "MODEL_REPOSITORY": str(o.models),
            "MODELS": model,
            "GRPC_PORT": str(grpc_port),
            "LOG_LEVEL": "warning",
            **o.settings,
        }
        server = ServerProcess("service", "app", server_env, log_path=o.out / "service.log")
        print(f"starting the service ({model}) ...", flush=True)
        server.start()
        http_url, grpc_url = server.url, f"127.0.0.1:{grpc_port}"
    else:
        http_url, grpc_url = o.url, o.grpc_url or ""
    measurements: list[Measurement] = []
    try:
        for concurrency in o.concurrency:
            for protocol, url in (("http", http_url.removeprefix("http://")), ("grpc", grpc_url)):
                if not url:
                    print("no gRPC address (--grpc-url): perf_analyzer over gRPC skipped")
                    continue
                command = perf_analyzer_command(binary, model, protocol, url, concurrency, o)
                print("$", shlex.join(command), flush=True)
                started = time.monotonic()
                code, output = run_perf_analyzer(command, env, 60 + o.interval_ms / 1e3 * (o.trials + 2))
                print(output.strip(), f"\n(exit {code}, {time.monotonic() - started:.0f} s)\n", flush=True)
                throughput, p50, p99 = parse_output(output) if code == 0 else (None, None, None)
                measurements.append(
                    Measurement("perf_analyzer", protocol, concurrency, throughput, p50, p99, output)
                )
            bench = run_bench_load(http_url, model, concurrency, o)
            print(f"bench.load /v1/classify, {concurrency} clients: {bench.output}", flush=True)
            measurements.append(bench)
    finally:
        if server is not None:
            server.stop()
    text = report(measurements, o, model)
    (o.out / "perf_analyzer.md").write_text(text)
    print(text)
    print(f"written to {o.out / 'perf_analyzer.md'}")
    return 0
