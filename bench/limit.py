"""The limit: what the same work costs in-process, with no HTTP, no queue and no event loop.

The same JPEGs are decoded and preprocessed by the service's own pipelines (`contract.pipelines`,
which `app.dataplane` calls too) straight into the rows of a batch buffer, and run
through an ONNX Runtime session made by the service's own `app.runtime.create_session` (same
session options, same thread count), on the same cores. Two schedules are timed per batch size:

- `serial`: decode the batch's images (on a pool of `DECODE_THREADS` threads, as the service
  does), then run it; decoding and inference never overlap.
- `pipelined`: decode the next batch on that pool while the current one runs.
- `parallel` (where the service keeps several runs in flight, `app.registry.inference_runs`):
  that many threads, each decoding a batch on the pool and then running it, at once.

The limit of a task is the best images/s over the batch sizes and both schedules. Its
single-image time is the median, over the image set, of decode + preprocess + `session.run` of one
image at batch 1 (what a lone client could at best see, less HTTP and post-processing).

The parts are also timed alone (`PartsAlone`): decode + preprocess on one thread (its CPU time per
image) and on the pool, and `session.run` at each batch size (images/s and the process's CPU per
image). With both sharing the machine's cores, no schedule can beat the **pipelined bound**,
`min(run alone, cores / (prepare CPU + run CPU per image))` at the best
batch size: what perfect overlap would give. The serial figure above is what no overlap gives.

Requests that bring their own tensors (`/v2`, bench task `tensors`) decode nothing: their limit is
`session.run` alone at each batch size, on one thread and on as many as the service keeps runs in
flight (`measure_run_limit`).
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.config import Settings
from app.registry import inference_runs
from app.runtime import create_session, plan_device
from contract.card import ModelCard
from contract.pipelines import ClassificationPipeline, DetectionPipeline, PosePipeline, SegmentationPipeline

Prepare = Callable[[bytes, np.ndarray], object]


def preparer(card: ModelCard, settings: Settings) -> Prepare:
    """Bytes → the model input written into one row (H, W, 3), by the pipeline the service uses."""
    max_pixels = settings.max_image_pixels
    if card.task == "classification":
        return ClassificationPipeline(card, max_pixels).prepare
    if card.task == "segmentation":
        return SegmentationPipeline(card, max_pixels).prepare
    if card.task == "detection":
        return DetectionPipeline(card, max_pixels).prepare
    pose = PosePipeline(card, max_pixels)

    def prepare_pose(data: bytes, row: np.ndarray) -> None:  # no boxes: the whole image is the person
        pose.prepare(data, None, row[None])

    return prepare_pose


@dataclass
class LimitPoint:
    batch_size: int
    schedule: str  # "serial", "pipelined" or "parallel"
    images: int
    seconds: float
    prepare_ms: float  # per image, summed over the decode threads' work
    run_ms: float  # per image, session.run only
    cpu_ms: float  # per image, CPU time of the whole process (every thread)

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds


@dataclass
class PartsAlone:
    cores: int
    prepare_cpu_ms: float  # per image, one thread
    prepare_images_per_s: float  # on the decode pool, nothing else running
    run_images_per_s: dict[int, float]  # batch size → session.run alone
    run_cpu_ms: dict[int, float]  # batch size → the process's CPU per image during it
    bound_images_per_s: float
    bound_batch_size: int


@dataclass
class Limit:
    task: str
    model: str
    images_per_s: float
    batch_size: int
    schedule: str
    single_image_ms: float  # median of decode + preprocess + run, batch 1
    single_prepare_ms: float
    single_run_ms: float
    cpu_ms_per_image: float  # at the best point: compare with the server's CPU ms per request
    points: list[LimitPoint] = field(default_factory=list)
    parts: PartsAlone | None = None


def _time_schedule(
    run: Callable[[np.ndarray], object],
    prepare: Prepare,
    images: list[bytes],
    shape: tuple[int, int, int],
    batch_size: int,
    pipelined: bool,
    pool: ThreadPoolExecutor,
    min_images: int,
    max_seconds: float,
) -> LimitPoint:
    buffers = [np.empty((batch_size, *shape), np.uint8) for _ in range(2)]
    prepare_s = 0.0
    next_image = 0

    def timed_prepare(data: bytes, row: np.ndarray) -> float:
        started = time.perf_counter()
        prepare(data, row)
        return time.perf_counter() - started

    def submit(buffer: np.ndarray) -> list[Future[float]]:
        nonlocal next_image
        futures = []
        for row in range(batch_size):
            futures.append(pool.submit(timed_prepare, images[next_image % len(images)], buffer[row]))
            next_image += 1
        return futures

    done_images, run_s, turn = 0, 0.0, 0
    started, cpu_started = time.perf_counter(), time.process_time()
    pending = submit(buffers[0])
    while True:
        prepare_s += sum(f.result() for f in pending)
        current = buffers[turn]
        finished = done_images + batch_size >= min_images or time.perf_counter() - started >= max_seconds
        if pipelined and not finished:
            turn ^= 1
            pending = submit(buffers[turn])  # decoded while `current` runs
        run_started = time.perf_counter()
        run(current)
        run_s += time.perf_counter() - run_started
        done_images += batch_size
        if finished:
            break
        if not pipelined:
            pending = submit(current)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return LimitPoint(
        batch_size,
        "pipelined" if pipelined else "serial",
        done_images,
        seconds,
        prepare_s / done_images * 1e3,
        run_s / done_images * 1e3,
        cpu / done_images * 1e3,
    )


def _log_point(log: Callable[[str], None], card: ModelCard, point: LimitPoint) -> None:
    log(
        f"  limit {card.task} batch {point.batch_size:>2} {point.schedule:<9} "
        f"{point.images_per_s:7.1f} img/s (prepare {point.prepare_ms:.1f} ms, "
        f"run {point.run_ms:.1f} ms, CPU {point.cpu_ms:.1f} ms per image)"
    )


def _time_parallel(
    run: Callable[[np.ndarray], object],
    prepare: Prepare,
    images: list[bytes],
    shape: tuple[int, int, int],
    batch_size: int,
    runs: int,
    pool: ThreadPoolExecutor,
    min_images: int,
    max_seconds: float,
) -> LimitPoint:
    """`runs` threads at once, each taking the next batch's images, decoding them on `pool`
    and running the batch, until `min_images` are done or `max_seconds` have passed."""
    lock = threading.Lock()
    taken = 0
    prepare_s = run_s = 0.0
    started, cpu_started = time.perf_counter(), time.process_time()

    def timed_prepare(data: bytes, row: np.ndarray) -> float:
        begun = time.perf_counter()
        prepare(data, row)
        return time.perf_counter() - begun

    def runner() -> None:
        nonlocal taken, prepare_s, run_s
        buffer = np.empty((batch_size, *shape), np.uint8)
        while True:
            with lock:
                if taken >= min_images or time.perf_counter() - started >= max_seconds:
                    return
                first = taken
                taken += batch_size
            futures = [
                pool.submit(timed_prepare, images[(first + row) % len(images)], buffer[row])
                for row in range(batch_size)
            ]
            prepared = sum(f.result() for f in futures)
            run_started = time.perf_counter()
            run(buffer)
            ran = time.perf_counter() - run_started
            with lock:
                prepare_s += prepared
                run_s += ran

    threads = [threading.Thread(target=runner) for _ in range(runs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return LimitPoint(
        batch_size,
        "parallel",
        taken,
        seconds,
        prepare_s / taken * 1e3,
        run_s / taken * 1e3,
        cpu / taken * 1e3,
    )


def measure_parts(
    run: Callable[[np.ndarray], object],
    prepare: Prepare,
    images: list[bytes],
    shape: tuple[int, int, int],
    batch_sizes: list[int],
    pool: ThreadPoolExecutor,
    seconds: float,
) -> PartsAlone:
    """Each part alone, for about `seconds` each; see the module docstring."""
    cores = len(os.sched_getaffinity(0))
    row = np.empty(shape, np.uint8)
    done, began, cpu_began = 0, time.perf_counter(), time.thread_time()
    while done < len(images) or time.perf_counter() - began < seconds:
        prepare(images[done % len(images)], row)
        done += 1
    prepare_cpu_ms = (time.thread_time() - cpu_began) / done * 1e3

    rows = np.empty((max(batch_sizes), *shape), np.uint8)
    count = max(done * 2, len(rows))
    began = time.perf_counter()
    list(pool.map(lambda i: prepare(images[i % len(images)], rows[i % len(rows)]), range(count)))
    prepare_rate = count / (time.perf_counter() - began)

    run_rate: dict[int, float] = {}
    run_cpu: dict[int, float] = {}
    for batch_size in batch_sizes:
        batch = rows[:batch_size]
        run(batch)
        runs, began, cpu_began = 0, time.perf_counter(), time.process_time()
        while runs < 2 or time.perf_counter() - began < seconds:
            run(batch)
            runs += 1
        wall, cpu = time.perf_counter() - began, time.process_time() - cpu_began
        run_rate[batch_size] = runs * batch_size / wall
        run_cpu[batch_size] = cpu / (runs * batch_size) * 1e3

    def bound(batch_size: int) -> float:
        # The pool's wall rate is reported, not bounding: thread hand-offs make it pessimistic.
        shared = cores * 1e3 / (prepare_cpu_ms + run_cpu[batch_size])
        return min(run_rate[batch_size], shared)

    best = max(batch_sizes, key=bound)
    return PartsAlone(cores, prepare_cpu_ms, prepare_rate, run_rate, run_cpu, bound(best), best)


def measure_limit(
    card: ModelCard,
    onnx_path: Path,
    images: list[bytes],
    settings: Settings,
    batch_sizes: list[int],
    min_images: int,
    max_seconds: float,
    single_images: int = 12,
    log: Callable[[str], None] = print,
) -> Limit:
    """Time every batch size and schedule; see the module docstring. Blocking, minutes at most."""
    plan = plan_device(settings)
    session = create_session(onnx_path, settings, plan)
    in_flight = inference_runs(settings, card, plan.uses_cuda)  # as the service keeps
    input_name, output_names = card.input.name, [o.name for o in card.outputs]
    shape = (card.input.height, card.input.width, 3)

    def run(batch: np.ndarray) -> object:
        return session.run(output_names, {input_name: batch})

    prepare = preparer(card, settings)
    run(np.zeros((1, *shape), np.uint8))  # first-run allocations out of the figures
    # Single image: everything on this thread, one at a time.
    row = np.empty((1, *shape), np.uint8)
    totals, prepares, runs = [], [], []
    for data in (images * (single_images // len(images) + 1))[:single_images]:
        t0 = time.perf_counter()
        prepare(data, row[0])
        t1 = time.perf_counter()
        run(row)
        t2 = time.perf_counter()
        totals.append((t2 - t0) * 1e3)
        prepares.append((t1 - t0) * 1e3)
        runs.append((t2 - t1) * 1e3)
    points = []
    with ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="limit-decode") as pool:
        for batch_size in batch_sizes:
            run(np.zeros((batch_size, *shape), np.uint8))  # warm this size
            for pipelined in (False, True):
                point = _time_schedule(
                    run,
                    prepare,
                    images,
                    shape,
                    batch_size,
                    pipelined,
                    pool,
                    max(min_images, batch_size * 2),
                    max_seconds,
                )
                points.append(point)
                _log_point(log, card, point)
            if in_flight > 1:
                point = _time_parallel(
                    run, prepare, images, shape, batch_size, in_flight, pool,
                    max(min_images, batch_size * 2 * in_flight), max_seconds,
                )  # fmt: skip
                points.append(point)
                _log_point(log, card, point)
        parts = measure_parts(run, prepare, images, shape, batch_sizes, pool, min(max_seconds, 2.0))
    log(
        f"  parts alone {card.task}: prepare {parts.prepare_cpu_ms:.1f} CPU ms/image "
        f"({parts.prepare_images_per_s:.1f} img/s on the pool); run "
        + ", ".join(
            f"b{b} {r:.1f} img/s ({parts.run_cpu_ms[b]:.1f} CPU ms)"
            for b, r in parts.run_images_per_s.items()
        )
        + f"; pipelined bound {parts.bound_images_per_s:.1f} img/s at batch {parts.bound_batch_size} on {parts.cores} cores"
    )
    best = max(points, key=lambda p: p.images_per_s)
    return Limit(
        task=card.task,
        model=card.name,
        images_per_s=best.images_per_s,
        batch_size=best.batch_size,
        schedule=best.schedule,
        single_image_ms=statistics.median(totals),
        single_prepare_ms=statistics.median(prepares),
        single_run_ms=statistics.median(runs),
        cpu_ms_per_image=best.cpu_ms,
        points=points,
        parts=parts,
    )


def _time_runs(
    run: Callable[[np.ndarray], object], rows: np.ndarray, threads: int, min_images: int, max_seconds: float
) -> LimitPoint:
    """`threads` threads each running `rows` over and over: session.run alone, no preparing."""
    lock = threading.Lock()
    done = 0
    run_s = 0.0
    started, cpu_started = time.perf_counter(), time.process_time()

    def runner() -> None:
        nonlocal done, run_s
        while True:
            with lock:
                if done >= min_images or time.perf_counter() - started >= max_seconds:
                    return
                done += len(rows)
            begun = time.perf_counter()
            run(rows)
            with lock:
                run_s += time.perf_counter() - begun

    workers = [threading.Thread(target=runner) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    schedule = "run alone" if threads == 1 else f"{threads} runs at once"
    return LimitPoint(len(rows), schedule, done, seconds, 0.0, run_s / done * 1e3, cpu / done * 1e3)


def measure_run_limit(
    card: ModelCard,
    onnx_path: Path,
    settings: Settings,
    batch_sizes: list[int],
    min_images: int,
    max_seconds: float,
    task: str = "tensors",
    log: Callable[[str], None] = print,
) -> Limit:
    """The limit of requests that bring their tensors: `session.run` alone, on one thread and on as
    many threads as the service keeps runs in flight, at every batch size; the best of them.

    The rows are the card's input size of mid-grey noise (the cost of a run does not depend on
    the pixels). Its single-image time is the median of 24 runs at batch 1.
    """
    plan = plan_device(settings)
    session = create_session(onnx_path, settings, plan)
    in_flight = inference_runs(settings, card, plan.uses_cuda)
    input_name, output_names = card.input.name, [o.name for o in card.outputs]
    shape = (card.input.height, card.input.width, 3)
    rng = np.random.default_rng(0)
    largest = rng.integers(64, 192, (max(batch_sizes), *shape), dtype=np.uint8)

    def run(batch: np.ndarray) -> object:
        return session.run(output_names, {input_name: batch})

    singles = []
    run(largest[:1])
    for _ in range(24):
        begun = time.perf_counter()
        run(largest[:1])
        singles.append((time.perf_counter() - begun) * 1e3)
    points = []
    for batch_size in batch_sizes:
        rows = largest[:batch_size]
        run(rows)  # warm this size
        for threads in sorted({1, in_flight}):
            point = _time_runs(run, rows, threads, max(min_images, batch_size * 2 * threads), max_seconds)
            points.append(point)
            log(
                f"  limit {task} batch {batch_size:>2} {point.schedule:<14} {point.images_per_s:7.1f} img/s "
                f"(run {point.run_ms:.1f} ms, CPU {point.cpu_ms:.1f} ms per image)"
            )
    best = max(points, key=lambda p: p.images_per_s)
    single = statistics.median(singles)
    return Limit(
        task=task,
        model=card.name,
        images_per_s=best.images_per_s,
        batch_size=best.batch_size,
        schedule=best.schedule,
        single_image_ms=single,
        single_prepare_ms=0.0,
        single_run_ms=single,
        cpu_ms_per_image=best.cpu_ms,
        points=points,
    )
