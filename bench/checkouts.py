"""Two checkouts of the service side by side: the A/B of a code change, interleaved.

    git worktree add /tmp/before HEAD~1
    python -m bench.checkouts /tmp/before . --models models --requests v1,v2 --clients 1,16

starts `python -m app` from each checkout (its own code, this Python and its packages) on the
same model repository, then for each round, request kind and client count drives them one after
the other with `bench.load` for `--seconds` each, the order reversed every round, and prints each
checkout's requests/s per round, the median, the median p50 latency and the server's CPU ms per
request. `v1`: the bench's JPEGs to /v1/classify; `v2`: the same images preprocessed, as binary
tensors to /v2/models/{classifier}/infer. A setting cannot show a code change; this can.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from app.config import Settings
from bench.images import image_set, write_images
from bench.load import LoadSpec, run
from bench.run import find_models
from bench.server import free_port, proc_cpu_seconds
from bench.tensors import write_tensor_bodies


def start(tree: Path, models: Path, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {
        **os.environ,
        "MODEL_REPOSITORY": str(models.resolve()),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "LOG_LEVEL": "warning",
        "PYTHONPATH": str(tree.resolve()),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "app"], cwd=tree, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    started = time.monotonic()
    while True:
        if process.poll() is not None:
            raise SystemExit(f"the service of {tree} exited while starting; see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return process, port
        except httpx.TransportError:
            pass
        if time.monotonic() - started > 300:
            process.kill()
            raise SystemExit(f"the service of {tree} was not ready after 300 s; see {log}")
        time.sleep(0.2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.checkouts", description=__doc__.split("\n")[0])
    parser.add_argument("before", type=Path, help="a checkout of the service (e.g. a git worktree)")
    parser.add_argument("after", type=Path, help="another checkout")
    parser.add_argument("--models", type=Path, default=Path("models"), help="model repository")
    parser.add_argument("--requests", default="v1,v2", help="request kinds: v1 (JPEG), v2 (tensors)")
    parser.add_argument("--clients", default="1,16", help="comma-separated client counts")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per load slice")
    args = parser.parse_args(argv)
    settings = Settings()
    card, _ = find_models(args.models, settings)["classification"]
    trees = {"before": args.before, "after": args.after}
    kinds = [k.strip() for k in args.requests.split(",") if k.strip()]
    clients = [int(c) for c in args.clients.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-checkouts-") as scratch:
        folder = Path(scratch)
        images = image_set(((640, 480), (1280, 720), (1920, 1080)), 2)
        jpegs = [str(p) for p in write_images(images, folder / "images")]
        tensors, tensor_headers = write_tensor_bodies(
            card, [i.data for i in images], settings.max_image_pixels, folder / "tensors"
        )
        requests = {
            "v1": ("/v1/classify", {"model": card.name}, jpegs, {"Content-Type": "image/jpeg"}),
            "v2": (f"/v2/models/{card.name}/infer", {}, tensors, tensor_headers),
        }
        servers = {name: start(tree, args.models, folder / f"{name}.log") for name, tree in trees.items()}
        figures: dict[tuple[str, str, int], list[tuple[float, float, float]]] = {}
        try:
            for round_ in range(args.rounds):
                for kind in kinds:
                    path, params, bodies, headers = requests[kind]
                    for count in clients:
                        order = list(trees) if round_ % 2 == 0 else list(trees)[::-1]
                        for name in order:
                            process, port = servers[name]
                            cpu = proc_cpu_seconds(process.pid) or 0.0
                            result = run(
                                LoadSpec(
                                    url=f"http://127.0.0.1:{port}",
                                    path=path,
                                    params=params,
                                    images=bodies,
                                    concurrency=count,
                                    requests=10**9,
                                    duration_s=args.seconds,
                                    timeout_s=60,
                                    warmup=1,
                                    headers=headers,
                                )
                            )
                            used = (proc_cpu_seconds(process.pid) or 0.0) - cpu
                            if result.errors:
                                raise SystemExit(f"{name}: {result.errors} {result.error_samples}")
                            figures.setdefault((kind, name, count), []).append(
                                (
                                    result.ok / result.wall_s,
                                    statistics.median(result.latencies_ms),
                                    used / result.ok * 1e3,
                                )
                            )
        finally:
            for process, _ in servers.values():
                process.terminate()
                process.wait(30)
    for kind in kinds:
        for count in clients:
            for name in trees:
                rows = figures[(kind, name, count)]
                rates = " ".join(f"{r[0]:.0f}" for r in rows)
                print(
                    f"{kind} {count:>3} clients {name:<6} req/s {rates} (median "
                    f"{statistics.median(r[0] for r in rows):.1f}); p50 {statistics.median(r[1] for r in rows):.2f} ms; "
                    f"server CPU {statistics.median(r[2] for r in rows):.2f} ms/request"
                )


if __name__ == "__main__":
    main()
