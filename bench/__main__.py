"""`python -m bench`: benchmark the service (and optionally a naive baseline) against its limit.

    python -m bench                                  # every task, 1/4/16/64 clients, default models,
                                                     # and the front end's ceiling
    python -m bench --tasks classification --concurrency 1,16 --baseline
    python -m bench --url http://host:8000 --models models   # a server that is already running
    python -m bench --perf-analyzer                  # Triton's perf_analyzer over HTTP and gRPC

See bench/PERFORMANCE.md for what is measured and how to read it.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from bench import perf_analyzer
from bench.images import DEFAULT_SIZES, parse_sizes
from bench.perf_analyzer import PerfOptions
from bench.run import PLANS, UNBATCHED_SETTINGS, Options, main


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _cpus(text: str | None) -> set[int] | None:
    if not text:
        return None
    cpus: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


def parse(argv: list[str]) -> Options | PerfOptions:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Drive the service on loopback at several concurrencies and compare it with the "
        "in-process limit (same decoding, preprocessing and ONNX Runtime session, no HTTP).",
    )
    parser.add_argument(
        "--tasks",
        default="classification,tensors,segmentation,pose",
        help="comma-separated tasks (tensors: the classifier over /v2 with preprocessed binary tensors, "
        "against session.run alone); also detection, and detect+pose (/v1/pose without boxes, where the "
        "repository has a detector)",
    )
    parser.add_argument(
        "--concurrency", help="comma-separated client counts (default 1,4,16,64; with --perf-analyzer 4)"
    )
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds of new requests per step (segmentation: ×1.5)"
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=400,
        help="most requests per step (pose ×0.5, segmentation ×0.05; never fewer than the clients)",
    )
    parser.add_argument("--baseline", action="store_true", help="also run bench/naive_server.py")
    parser.add_argument(
        "--baseline-options",
        default="default",
        help="session options of the naive server(s): default (ONNX Runtime's), service (the "
        "service's), or default,service for both",
    )
    parser.add_argument(
        "--unbatched",
        action="store_true",
        help="also run the service with dynamic batching off (MAX_BATCH_SIZE=1), side by side",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE[,KEY=VALUE]",
        help="also run the service with these settings, as server service-NAME; repeatable",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="run each (task, clients) step this many times, every server in turn (interleaved); "
        "tables give the median and the spread",
    )
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="folder for the outputs")
    parser.add_argument(
        "--models",
        type=Path,
        default=Path(os.environ.get("MODEL_REPOSITORY", "models")),
        help="model repository (default: MODEL_REPOSITORY or models)",
    )
    parser.add_argument("--url", help="benchmark a running service instead of starting one")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a service setting (environment variable), e.g. --set MAX_BATCH_SIZE=16; repeatable",
    )
    parser.add_argument(
        "--sizes",
        default=",".join(f"{w}x{h}" for w, h in DEFAULT_SIZES),
        help="JPEG sizes of the image set",
    )
    parser.add_argument("--per-size", type=int, default=2, help="JPEGs per size")
    parser.add_argument("--client-nice", type=int, default=0, help="niceness of the load generator process")
    parser.add_argument("--client-cpus", help="CPUs of the load generator, e.g. 1 or 0-1 (default: any)")
    parser.add_argument(
        "--server-cpus", help="CPUs of the server and of the limit measurement (default: any)"
    )
    parser.add_argument("--no-limit", action="store_true", help="skip the in-process limit")
    parser.add_argument(
        "--no-ceiling",
        action="store_true",
        help="skip the front end's ceiling (the service on a zero-cost classifier, on 1 core and on all, "
        "JPEG and tensor requests); it is skipped with --url too",
    )
    parser.add_argument(
        "--ceiling-clients", type=int, default=16, help="clients of the ceiling's steps (default 16)"
    )
    parser.add_argument(
        "--limit-seconds",
        type=float,
        help="most seconds per batch size and schedule of the limit (quick runs)",
    )
    parser.add_argument(
        "--perf-analyzer",
        action="store_true",
        help="run Triton's perf_analyzer over HTTP and gRPC (and bench.load on /v1) against the "
        "classifier instead; skipped with the reason where perf_analyzer cannot run",
    )
    parser.add_argument(
        "--pa-interval-ms",
        type=int,
        default=5000,
        help="perf_analyzer's measurement window (up to 4 per step)",
    )
    parser.add_argument("--grpc-url", help="with --url and --perf-analyzer: the service's gRPC host:port")
    args = parser.parse_args(argv)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in PLANS]
    if unknown:
        parser.error(f"unknown tasks {unknown}; choose from {', '.join(PLANS)}")
    baseline_options = tuple(o.strip() for o in args.baseline_options.split(",") if o.strip())
    if any(o not in ("default", "service") for o in baseline_options):
        parser.error("--baseline-options takes default, service or default,service")
    variants: dict[str, dict[str, str]] = {}
    if args.unbatched:
        variants["unbatched"] = dict(UNBATCHED_SETTINGS)
    for item in args.variant:
        name, sep, pairs = item.partition(":")
        chosen = dict(pair.split("=", 1) for pair in pairs.split(",") if "=" in pair)
        if not sep or not name.strip() or not chosen:
            parser.error(f"--variant takes NAME:KEY=VALUE[,KEY=VALUE], got {item!r}")
        variants[name.strip()] = {k.strip().upper(): v for k, v in chosen.items()}
    if args.repeats < 1:
        parser.error("--repeats takes a count of at least 1")
    settings = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set takes KEY=VALUE, got {item!r}")
        settings[key.strip().upper()] = value
    if args.perf_analyzer:
        return PerfOptions(
            models=args.models,
            out=args.out,
            concurrency=_ints(args.concurrency or "4"),
            interval_ms=args.pa_interval_ms,
            bench_duration_s=args.duration,
            url=args.url,
            grpc_url=args.grpc_url,
            settings=settings,
            command="python -m bench " + shlex.join(argv),
        )
    return Options(
        tasks=tasks,
        concurrency=_ints(args.concurrency or "1,4,16,64"),
        duration_s=args.duration,
        requests=args.requests,
        baseline=args.baseline,
        out=args.out,
        models=args.models,
        url=args.url,
        settings=settings,
        sizes=parse_sizes(args.sizes),
        per_size=args.per_size,
        client_nice=args.client_nice,
        client_cpus=_cpus(args.client_cpus),
        server_cpus=_cpus(args.server_cpus),
        limit=not args.no_limit,
        limit_seconds=args.limit_seconds,
        baseline_options=baseline_options,
        variants=variants,
        repeats=args.repeats,
        ceiling=not args.no_ceiling and args.url is None,
        ceiling_clients=args.ceiling_clients,
        command="python -m bench " + shlex.join(argv),
    )


if __name__ == "__main__":
    options = parse(sys.argv[1:])
    if isinstance(options, PerfOptions):
        sys.exit(perf_analyzer.main(options))
    main(options)
