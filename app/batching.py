"""Dynamic batching: one `DynamicBatcher` per model gathers requests into `session.run` batches.

Shaped like Ray Serve's `_BatchQueue`: each request waits on its own futures, one background task
forms batches and hands every request its own slice of the outputs (or the exception of the batch
it was in), and the wait for a batch to grow subtracts the time already spent.

Policy, kept apart from batch forming as in Triton's scheduler:
- Admission: a request first *reserves* its slots (one per image or person crop), before it is
  decoded. Reserved plus queued slots are capped by `max_queue_size`; past it `reserve` raises
  `QueueFull` at once. An empty queue admits any request, so a request larger than the cap is
  not refused forever. Given the request's deadline, `reserve` also refuses a request that the
  batches already ahead of it (at the recent time per batch) would make miss it, full queue or
  not (`DeadlineUnreachable`): a 503 now instead of a 504 after the wait, and no decoding spent
  on it.
- Forming: when the runner is free it takes what is queued (oldest first, then any later chunk
  that still fits). It waits for more only while the batch has room, a reserved request that
  would fit is still being decoded, the oldest request has waited less than `max_queue_delay`,
  and no deadline in the batch would be missed by waiting.
- Running: at most `runs` batches at a time per model, each on its own thread (ORT releases the
  GIL). On the CPU a second run keeps the cores busy while the first one's threads wait for a
  core that a decoding thread took; unbounded overlapping runs (a thread-pool endpoint) blew up
  the tail latency, so the count is small and fixed.
- Deadlines: a chunk whose deadline passed while queued is answered `DeadlineExceeded` unrun.
- Inline runs (`inline=True`, with a run free besides the one the forming task holds): a lone
  request that finds nothing else reserved or queued takes a run for itself (`claim_inline`)
  and is decoded and run on one decode-pool thread (a tensor request: run there). Measured on
  2 cores, a lone request lost
  ~2 ms to the hand-offs (loop → decode thread → batcher → inference thread → loop); a request
  that arrives meanwhile goes through the queue as before, and runs stay within `runs`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import queue
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from app.errors import DeadlineExceeded, DeadlineUnreachable, InferenceFailed, ModelNotReady, QueueFull

logger = logging.getLogger(__name__)

RunBatch = Callable[[np.ndarray], Sequence[np.ndarray]]


class BatchObserver(Protocol):
    """Receives the batcher's figures (the metrics module implements it)."""

    def batch_done(self, size: int, compute_s: float, queue_s: Sequence[float]) -> None: ...

    def batch_failed(self, size: int) -> None: ...

    def queue_depth(self, slots: int) -> None: ...


@dataclass
class BatchOutcome:
    """A request's results: each model output sliced to the request's rows, plus where time went."""

    outputs: list[np.ndarray]
    queue_ms: float
    inference_ms: float
    batch_sizes: list[int]


@dataclass(eq=False)
class _ChunkResult:
    outputs: list[np.ndarray]
    queue_s: float
    compute_s: float
    batch_size: int


@dataclass(eq=False)
class _Chunk:
    """At most `max_batch_size` rows of one request; chunks are never split across batches."""

    inputs: np.ndarray
    deadline: float
    future: asyncio.Future[_ChunkResult]
    enqueued: float = field(default_factory=time.monotonic)

    @property
    def slots(self) -> int:
        return int(self.inputs.shape[0])


class Reservation:
    """Slots held for one request from admission until its images are submitted (or released)."""

    def __init__(self, batcher: DynamicBatcher, chunk_sizes: list[int]) -> None:
        self._batcher = batcher
        self.chunk_sizes = chunk_sizes
        self.active = True

    @property
    def slots(self) -> int:
        return sum(self.chunk_sizes)

    def release(self) -> None:
        if self.active:
            self.active = False
            self._batcher._release(self)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    async def submit(self, inputs: np.ndarray, deadline: float) -> BatchOutcome:
        """Queue `inputs` (slots, H, W, C) and wait for the outputs, or raise.

        Raises `DeadlineExceeded` at `deadline` (monotonic seconds), `InferenceFailed` if a batch
        holding these rows failed.
        """
        if not self.active:
            raise RuntimeError("reservation already used or released")
        if inputs.shape[0] != self.slots:
            raise ValueError(f"reserved {self.slots} slots, submitted {inputs.shape[0]} rows")
        self.active = False
        chunks = self._batcher._enqueue(self, inputs, deadline)
        futures = [chunk.future for chunk in chunks]
        try:
            done, pending = await asyncio.wait(
                futures, timeout=max(0.0, deadline - time.monotonic()), return_when=asyncio.FIRST_EXCEPTION
            )
            errors = [f.exception() for f in done if not f.cancelled()]
            for error in errors:
                if error is not None:
                    raise error
            if pending:
                raise DeadlineExceeded("the request's deadline passed before its inference finished")
        finally:
            # Abandoned (deadline, error elsewhere, or the handler cancelled by a disconnect): the
            # request's unrun chunks leave the queue now and free their slots for others.
            for future in futures:
                future.cancel()
            self._batcher._forget(chunks)
        results = [f.result() for f in futures]
        return BatchOutcome(
            outputs=[np.concatenate(parts) for parts in zip(*(r.outputs for r in results), strict=True)]
            if len(results) > 1
            else results[0].outputs,
            queue_ms=max(r.queue_s for r in results) * 1e3,
            inference_ms=sum(r.compute_s for r in results) * 1e3,
            batch_sizes=[r.batch_size for r in results],
        )


class InlineRun:
    """A run a lone request took for itself (`DynamicBatcher.claim_inline`): its rows are run on
    the thread that decoded them, with no queue and no batch to form.

    `run` is called on that thread; `finish` on the loop once it returned; `release` (the loop,
    once the thread is done or will never start) gives the run back and is idempotent.
    """

    def __init__(self, batcher: DynamicBatcher, rows: int) -> None:
        self._batcher = batcher
        self.rows = rows
        self.started = time.monotonic()
        self._held = True

    def run(self, batch: np.ndarray) -> tuple[list[np.ndarray], float]:
        """On the decoding thread: session.run of the request's rows; `InferenceFailed` on error."""
        try:
            return self._batcher._run_sync([batch])
        except Exception as exc:
            logger.exception("inference failed on %s (inline run of %d)", self._batcher.name, self.rows)
            if self._batcher._observer is not None:
                self._batcher._observer.batch_failed(self.rows)
            raise InferenceFailed(f"inference failed on model {self._batcher.name}: {exc}") from exc

    def finish(self, outputs: list[np.ndarray], compute_s: float) -> BatchOutcome:
        """On the loop: record the run as a batch of the request's rows, and its outcome."""
        batcher = self._batcher
        batcher.observe_run_seconds(compute_s)
        if batcher._observer is not None:
            batcher._observer.batch_done(self.rows, compute_s, [0.0])
        return BatchOutcome(outputs, queue_ms=0.0, inference_ms=compute_s * 1e3, batch_sizes=[self.rows])

    def release(self) -> None:
        if self._held:
            self._held = False
            self._batcher._inline_runs -= 1
            self._batcher._free_runs.release()


class DynamicBatcher:
    """Batches requests for one model; see the module docstring for the policy."""

    def __init__(
        self,
        name: str,
        run_batch: RunBatch,
        input_shape: tuple[int, ...],
        *,
        max_batch_size: int,
        max_queue_delay_ms: float,
        max_queue_size: int,
        observer: BatchObserver | None = None,
        input_dtype: type[np.generic] = np.uint8,
        runs: int = 1,
        inline: bool = False,
    ) -> None:
        self.name = name
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_ms / 1e3
        self.max_queue_size = max_queue_size
        self.input_shape = tuple(input_shape)
        self._run_batch = run_batch
        self._observer = observer
        self._queue: deque[_Chunk] = deque()
        self._reserved_chunks: Counter[int] = Counter()  # chunk size -> count, of unsubmitted reservations
        self._waiting_slots = 0  # reserved + queued, not running
        self._wakeup = asyncio.Event()
        if runs < 1:
            raise ValueError("a batcher needs at least one run at a time")
        self.runs = runs
        # One gathering buffer per run in flight.
        self._buffers: queue.SimpleQueue[np.ndarray] = queue.SimpleQueue()
        for _ in range(runs):
            self._buffers.put(np.zeros((max_batch_size, *self.input_shape), dtype=input_dtype))
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self._running: list[list[_Chunk]] = []  # the batches in flight
        self._free_runs = asyncio.Semaphore(runs)
        self._executions: set[asyncio.Task[None]] = set()
        self._batch_seconds = 0.0  # moving average of one run, for deadlines and Retry-After
        self._closed = False
        self.inline = inline
        self._inline_runs = 0  # runs lone requests hold (`claim_inline`)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker task on the running loop."""
        self._executor = ThreadPoolExecutor(max_workers=self.runs, thread_name_prefix=f"infer-{self.name}")
        self._task = asyncio.get_running_loop().create_task(self._serve(), name=f"batcher-{self.name}")

    def _shutting_down(self) -> ModelNotReady:
        return ModelNotReady(f"model {self.name} is shutting down", headers={"Retry-After": "1"})

    async def stop(self, abort_running: bool = False) -> None:
        """Stop taking work; fail what is queued; let the batches in flight finish and answer.

        Their runs cannot be stopped anyway (ORT's thread runs on), so their requests get their
        results: a batch formed just before a reload's swap is answered by the old version.
        With `abort_running` (the end of a shutdown's grace period) their requests are answered
        503 at once instead, before the server's backstop would cut them off.
        """
        self._closed = True
        if abort_running:
            for batch in self._running:
                for chunk in batch:
                    if not chunk.future.done():
                        chunk.future.set_exception(self._shutting_down())
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for chunk in self._queue:
            if not chunk.future.done():
                chunk.future.set_exception(self._shutting_down())
        self._queue.clear()
        if self._executions:
            await asyncio.gather(*self._executions, return_exceptions=True)
        if self._executor is not None:
            await asyncio.to_thread(self._executor.shutdown, wait=True)

    async def drain(self, timeout_s: float) -> None:
        """Wait until nothing is reserved, queued or running (at most `timeout_s`), then stop.

        For a model version being replaced: requests that already hold it finish on it.
        """
        deadline = time.monotonic() + timeout_s
        # `_executions`, not `_running`: a batch is an execution from the moment it is formed.
        while (self._waiting_slots or self._executions or self._inline_runs) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await self.stop()

    @property
    def waiting_slots(self) -> int:
        return self._waiting_slots

    def observe_run_seconds(self, seconds: float) -> None:
        """Seed the run-time estimate (e.g. from the warm-up) used for deadlines and Retry-After."""
        self._batch_seconds = (
            seconds if self._batch_seconds == 0 else 0.8 * self._batch_seconds + 0.2 * seconds
        )

    def retry_after_s(self) -> int:
        batches_ahead = math.ceil(self._waiting_slots / self.max_batch_size) + 1
        return max(1, math.ceil(math.ceil(batches_ahead / self.runs) * self._batch_seconds))

    # -- admission -------------------------------------------------------------------------------

    def expected_seconds(self, slots: int) -> float:
        """Estimated time until a request of `slots` rows arriving now is answered: the batches
        ahead of it (those running count whole), then its own, `runs` at a time, at the recent
        time per batch."""
        batches = (
            math.ceil((self._waiting_slots + slots) / self.max_batch_size)
            + len(self._running)
            + self._inline_runs
        )
        return math.ceil(batches / self.runs) * self._batch_seconds

    def _unreachable(self, slots: int, expected: float, remaining: float) -> DeadlineUnreachable:
        """The refusal of a request the work ahead would make miss its deadline.

        Retry-After is the estimated time until the work running and queued now is done (not a
        1 s that would meet the same queue); where the request would miss its deadline even on an
        idle model, the message says that waiting does not help.
        """
        ahead = self.expected_seconds(0)
        retry = max(1, math.ceil(ahead))
        alone = 1.25 * math.ceil(math.ceil(slots / self.max_batch_size) / self.runs) * self._batch_seconds
        advice = (
            f"even on an idle model it needs about {alone:.1f} s: send fewer images or boxes, or allow "
            "more time (REQUEST_TIMEOUT_MS)"
            if alone >= remaining
            else f"the work ahead of it takes about {ahead:.1f} s: retry in {retry} s"
        )
        return DeadlineUnreachable(
            f"model {self.name} would answer in about {expected:.1f} s, after the request's deadline "
            f"({remaining:.1f} s left); {advice}",
            headers={"Retry-After": str(retry)},
        )

    def reserve(self, slots: int, deadline: float | None = None) -> Reservation:
        """Hold `slots` rows for a request about to be decoded. Raises `QueueFull` at once.

        With `deadline` (monotonic seconds), a request that the work already queued or running
        would make miss it is refused now (`DeadlineUnreachable`, 503 with Retry-After) rather
        than answered 504 at its deadline.
        """
        if self._closed:
            raise self._shutting_down()
        if slots < 1:
            raise ValueError("a reservation needs at least one slot")
        if self._waiting_slots and self._waiting_slots + slots > self.max_queue_size:
            retry = self.retry_after_s()
            raise QueueFull(
                f"model {self.name} has {self._waiting_slots} images waiting (MAX_QUEUE_SIZE="
                f"{self.max_queue_size}); retry in {retry} s",
                headers={"Retry-After": str(retry)},
            )
        if deadline is not None and (self._waiting_slots or self._running):
            # Run times vary ±20–30 % on a shared CPU: refuse a little early rather than time out.
            remaining, expected = deadline - time.monotonic(), 1.25 * self.expected_seconds(slots)
            if 0 < remaining < expected:  # a deadline already past is the 504's business
                raise self._unreachable(slots, expected, remaining)
        full, rest = divmod(slots, self.max_batch_size)
        reservation = Reservation(self, [self.max_batch_size] * full + ([rest] if rest else []))
        self._reserved_chunks.update(reservation.chunk_sizes)
        self._set_waiting(self._waiting_slots + slots)
        return reservation

    async def claim_inline(self, reservation: Reservation) -> InlineRun | None:
        """A run for this reservation alone, to be run on the caller's decoding thread, or None.

        Only where inline runs are on, the reservation (of one batch at most) is all that is
        reserved or queued, and a run is free besides the one the forming task waits with; the
        reservation is then used up. Never suspends: the loop sees the claim at once.
        """
        if (
            not self.inline
            or self._closed
            or not reservation.active
            or reservation.slots > self.max_batch_size
            or self._queue
            or self._waiting_slots != reservation.slots
            or self._free_runs.locked()
        ):
            return None
        await self._free_runs.acquire()  # unlocked: returns at once, without yielding to the loop
        reservation.active = False
        self._reserved_chunks.subtract(reservation.chunk_sizes)
        self._reserved_chunks += Counter()
        self._set_waiting(self._waiting_slots - reservation.slots)
        self._inline_runs += 1
        return InlineRun(self, reservation.slots)

    def _release(self, reservation: Reservation) -> None:
        self._reserved_chunks.subtract(reservation.chunk_sizes)
        self._reserved_chunks += Counter()  # drop zero counts
        self._set_waiting(self._waiting_slots - reservation.slots)
        self._wakeup.set()  # a batch waiting for this request need not wait any more

    def _enqueue(self, reservation: Reservation, inputs: np.ndarray, deadline: float) -> list[_Chunk]:
        if self._closed:  # reserved before the stop, decoded after it: nothing would run it
            raise self._shutting_down()
        if inputs.shape[1:] != self.input_shape:
            raise ValueError(f"inputs {inputs.shape[1:]} do not match the model's {self.input_shape}")
        self._reserved_chunks.subtract(reservation.chunk_sizes)
        self._reserved_chunks += Counter()
        loop = asyncio.get_running_loop()
        chunks = []
        start = 0
        for size in reservation.chunk_sizes:
            chunks.append(_Chunk(inputs[start : start + size], deadline, loop.create_future()))
            start += size
        self._queue.extend(chunks)
        self._wakeup.set()
        return chunks

    def _forget(self, chunks: list[_Chunk]) -> None:
        """Take a request's chunks that are still queued out of the queue, freeing their slots.

        Chunks already taken into a batch are no longer queued (their slots were freed then).
        """
        gone = {id(chunk) for chunk in chunks}
        freed = sum(chunk.slots for chunk in self._queue if id(chunk) in gone)
        if freed:
            self._queue = deque(chunk for chunk in self._queue if id(chunk) not in gone)
            self._set_waiting(self._waiting_slots - freed)
            self._wakeup.set()  # a batch waiting to grow is re-formed without them

    def _set_waiting(self, slots: int) -> None:
        self._waiting_slots = slots
        if self._observer is not None:
            self._observer.queue_depth(slots)

    # -- forming ---------------------------------------------------------------------------------

    def _drop_dead_chunks(self, now: float) -> None:
        """Invariant after: every queued chunk is still wanted and within its deadline."""
        kept: deque[_Chunk] = deque()
        for chunk in self._queue:
            if chunk.future.done():  # abandoned by its request (deadline or disconnect)
                self._set_waiting(self._waiting_slots - chunk.slots)
            elif now >= chunk.deadline:
                chunk.future.set_exception(
                    DeadlineExceeded("the request's deadline passed while it was queued")
                )
                self._set_waiting(self._waiting_slots - chunk.slots)
            else:
                kept.append(chunk)
        self._queue = kept

    def _fitting(self) -> list[_Chunk]:
        """The queued chunks the next batch would take: the oldest, then each later one that fits."""
        batch: list[_Chunk] = []
        room = self.max_batch_size
        for chunk in self._queue:
            if chunk.slots <= room:
                batch.append(chunk)
                room -= chunk.slots
                if room == 0:
                    break
        return batch

    async def _next_batch(self) -> list[_Chunk]:
        """Wait for work, then for the batch to grow while growing is worth it; take the batch."""
        while True:
            now = time.monotonic()
            self._drop_dead_chunks(now)
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = self._fitting()
            room = self.max_batch_size - sum(chunk.slots for chunk in batch)
            could_grow = any(size <= room for size in self._reserved_chunks)
            grow_until = min(
                self._queue[0].enqueued + self.max_queue_delay_s,
                min(chunk.deadline for chunk in batch) - self._batch_seconds,
            )
            if room == 0 or not could_grow or now >= grow_until:
                taken = set(map(id, batch))
                self._queue = deque(chunk for chunk in self._queue if id(chunk) not in taken)
                self._set_waiting(self._waiting_slots - sum(chunk.slots for chunk in batch))
                return batch
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), grow_until - now)

    # -- running ---------------------------------------------------------------------------------

    def _run_sync(self, parts: list[np.ndarray]) -> tuple[list[np.ndarray], float]:
        """On the model's thread: gather the parts into the batch buffer, run, check row counts."""
        rows = sum(part.shape[0] for part in parts)
        buffer = None
        if len(parts) == 1:
            batch = parts[0]
        else:
            buffer = self._buffers.get_nowait()  # one per run: never empty here
            batch = buffer[:rows]
            offset = 0
            for part in parts:
                batch[offset : offset + part.shape[0]] = part
                offset += part.shape[0]
        try:
            started = time.perf_counter()
            outputs = [np.asarray(output) for output in self._run_batch(batch)]
            elapsed = time.perf_counter() - started
        finally:
            if buffer is not None:  # the outputs are ONNX Runtime's own arrays, not views of it
                self._buffers.put(buffer)
        for output in outputs:
            if output.shape[0] != rows:
                raise RuntimeError(f"the model returned {output.shape[0]} rows for a batch of {rows}")
        return outputs, elapsed

    async def _execute(self, batch: list[_Chunk]) -> None:
        assert self._executor is not None
        started = time.monotonic()
        rows = sum(chunk.slots for chunk in batch)
        loop = asyncio.get_running_loop()
        self._running.append(batch)
        try:
            outputs, compute_s = await loop.run_in_executor(
                self._executor, self._run_sync, [chunk.inputs for chunk in batch]
            )
        except Exception as exc:  # reaches only the requests of this batch
            logger.exception("inference failed on %s (batch of %d)", self.name, rows)
            if self._observer is not None:
                self._observer.batch_failed(rows)
            for chunk in batch:
                if not chunk.future.done():
                    chunk.future.set_exception(
                        InferenceFailed(f"inference failed on model {self.name}: {exc}")
                    )
            return
        finally:
            self._running.remove(batch)
        self.observe_run_seconds(compute_s)
        queue_s = [started - chunk.enqueued for chunk in batch]
        if self._observer is not None:
            self._observer.batch_done(rows, compute_s, queue_s)
        offset = 0
        for chunk, waited in zip(batch, queue_s, strict=True):
            rows_of_chunk = slice(offset, offset + chunk.slots)
            offset += chunk.slots
            if not chunk.future.done():
                chunk.future.set_result(
                    _ChunkResult([output[rows_of_chunk] for output in outputs], waited, compute_s, rows)
                )

    async def _serve(self) -> None:
        """Form a batch whenever a run is free; each batch runs in a task of its own (which
        `stop` lets finish)."""
        while True:
            await self._free_runs.acquire()
            try:
                batch = await self._next_batch()
            except asyncio.CancelledError:
                self._free_runs.release()
                raise
            except Exception:  # the worker must outlive any bug in forming a batch
                self._free_runs.release()
                logger.exception("batcher %s: unexpected error", self.name)
                await asyncio.sleep(0.01)
                continue
            execution = asyncio.get_running_loop().create_task(self._execute_and_free(batch))
            self._executions.add(execution)
            execution.add_done_callback(self._executions.discard)

    async def _execute_and_free(self, batch: list[_Chunk]) -> None:
        try:
            await self._execute(batch)
        except Exception:  # the worker must outlive any bug in one batch
            logger.exception("batcher %s: unexpected error", self.name)
        finally:
            self._free_runs.release()
