"""Several service processes on one listening socket: a measurement of how the service could use
more cores (each process its own sessions, batchers and decode threads; the kernel hands each new
connection to one of them). Not a deployment: replicas behind a proxy are (docker/DEPLOYING.md).

    MODEL_REPOSITORY=models PORT=8000 INTRA_OP_THREADS=1 DECODE_THREADS=1 python -m bench.processes 2
    python -m bench --url http://127.0.0.1:8000 --tasks classification --no-limit

Settings come from the environment as for `python -m app`, for every process alike. SIGTERM or
Ctrl+C stops them all.

    python -m bench.processes compare MODEL_FOLDER [MODEL_FOLDER ...]

starts, for each model version folder, one process with the default threads and two processes
with one ONNX Runtime and one decode thread each (and one process with those, for reference),
all at once, then drives each in turn with the bench's client (16 clients, the bench's JPEGs),
3 rounds, and prints req/s, p50, p99 and server CPU per request. `bench/PERFORMANCE.md` has what
it measured.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

from app.config import Settings
from app.shutdown import listen


def _serve_in_child(settings: Settings, listener: socket.socket) -> None:
    from app.main import create_app
    from app.observability import configure_logging
    from app.runtime import plan_device
    from app.shutdown import serve

    configure_logging(settings.log_level, settings.log_format)
    serve(create_app(settings, plan_device(settings)), settings, listener)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].isdigit() or int(argv[0]) < 1:
        print(__doc__)
        return 2
    settings = Settings()
    listener = listen(settings)  # bound once, before the fork: every process accepts from it
    children = []
    for _ in range(int(argv[0])):
        pid = os.fork()
        if pid == 0:  # the child: nothing of the parent's runs here but the import of the settings
            code = 0
            try:
                _serve_in_child(settings, listener)
            except BaseException:
                code = 1
            os._exit(code)
        children.append(pid)

    stopping: list[int] = []

    def stop(signum: int, _frame: object) -> None:
        stopping.append(signum)
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    codes = []
    for child in children:
        while True:
            try:
                _, status = os.waitpid(child, 0)
                break
            except InterruptedError:
                continue
        code = os.waitstatus_to_exitcode(status)
        # uvicorn re-raises the signal once it has shut down: death by the SIGTERM passed on is a stop.
        codes.append(0 if code == -signal.SIGTERM and stopping else code)
    return max(codes, key=abs, default=0)


# (name, processes, settings): the same two cores spent three ways.
ONE_THREAD_EACH = {"INTRA_OP_THREADS": "1", "DECODE_THREADS": "1", "INFERENCE_RUNS": "1"}
LAYOUTS: tuple[tuple[str, int, dict[str, str]], ...] = (
    ("1 process, default threads", 1, {}),
    ("1 process, 1+1 threads", 1, ONE_THREAD_EACH),
    ("2 processes, 1+1 threads each", 2, ONE_THREAD_EACH),
)


def _tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of `pid` and its children (the forked servers)."""
    from bench.server import proc_cpu_seconds

    total = proc_cpu_seconds(pid) or 0.0
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return total + sum(proc_cpu_seconds(int(child)) or 0.0 for child in children)


def wait_until_ready(url: str, processes: int, timeout_s: float = 180.0) -> None:
    """/readyz 200 on 8 × processes fresh connections in a row: every process is up."""
    import httpx

    deadline, in_a_row = time.monotonic() + timeout_s, 0
    while in_a_row < 8 * processes:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} not ready within {timeout_s:g} s")
        try:
            ok = httpx.get(url + "/readyz", timeout=5).status_code == 200
        except httpx.TransportError:
            ok = False
        in_a_row = in_a_row + 1 if ok else 0
        if not ok:
            time.sleep(0.5)


def compare(folders: list[Path], rounds: int = 3, clients: int = 16, duration_s: float = 8.0) -> None:
    import subprocess

    from bench.images import image_set, write_images
    from bench.load import LoadSpec
    from bench.report import percentile
    from bench.run import run_load
    from bench.server import free_port

    folder = Path(tempfile.mkdtemp(prefix="bench-processes-"))
    images = [str(p) for p in write_images(image_set(), folder)]
    servers = []
    try:
        for folder in folders:
            name = folder.parent.name
            for layout, count, settings in LAYOUTS:
                port = free_port()
                env = {
                    **os.environ,
                    **settings,
                    "MODEL_REPOSITORY": str(folder.parent.parent),
                    "MODELS": name,
                    "HOST": "127.0.0.1",
                    "PORT": str(port),
                    "LOG_LEVEL": "warning",
                }
                process = subprocess.Popen([sys.executable, "-m", "bench.processes", str(count)], env=env)
                servers.append((name, layout, count, f"http://127.0.0.1:{port}", process))
        for _, _, count, url, _ in servers:
            wait_until_ready(url, count)
        figures: dict[tuple[str, str], list[tuple[float, float, float, float]]] = {}
        for round_ in range(rounds):
            shift = round_ % len(LAYOUTS)
            for name in dict.fromkeys(s[0] for s in servers):
                mine = [s for s in servers if s[0] == name]
                for _, layout, _, url, process in mine[shift:] + mine[:shift]:
                    spec = LoadSpec(
                        url, "/v1/classify", {}, images, clients, 100_000, duration_s, 60.0, warmup=1
                    )
                    before = _tree_cpu_seconds(process.pid)
                    result = run_load(spec, 0, None)
                    cpu_ms = (_tree_cpu_seconds(process.pid) - before) / max(result.ok, 1) * 1e3
                    rate = result.ok / result.wall_s
                    p50 = percentile(result.latencies_ms, 50) or 0.0
                    p99 = percentile(result.latencies_ms, 99) or 0.0
                    figures.setdefault((name, layout), []).append((rate, p50, p99, cpu_ms))
                    print(
                        f"round {round_ + 1} {name} | {layout}: {rate:.1f} req/s, p50 {p50:.1f} ms, "
                        f"p99 {p99:.1f} ms, server CPU {cpu_ms:.2f} ms/req, errors {result.errors or 0}",
                        flush=True,
                    )
        print(
            f"\n| model | layout | req/s median (min–max) of {rounds} | p50 ms | p99 ms | server CPU ms/req |"
        )
        print("|---|---|---|---|---|---|")
        for (name, layout), rows in figures.items():
            rows.sort()
            rate, p50, p99, cpu = rows[(len(rows) - 1) // 2]
            print(
                f"| {name} | {layout} | {rate:.1f} ({rows[0][0]:.1f}–{rows[-1][0]:.1f}) | {p50:.1f} | "
                f"{p99:.1f} | {cpu:.2f} |"
            )
    finally:
        for *_, process in servers:
            process.send_signal(signal.SIGTERM)
        for *_, process in servers:
            process.wait(timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["compare"]:
        compare([Path(folder) for folder in sys.argv[2:]])
    else:
        sys.exit(main(sys.argv[1:]))
