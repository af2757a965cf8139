"""The dynamic batcher on its own, with a plain numpy function standing in for a session."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np
import pytest

from app.batching import DynamicBatcher
from app.errors import DeadlineExceeded, DeadlineUnreachable, InferenceFailed, QueueFull

SHAPE = (2, 2, 3)


class Model:
    """Returns each row's sum; records every batch; optionally slow or failing on a marker value."""

    def __init__(self, seconds: float = 0.0, fail_on: int | None = None) -> None:
        self.seconds = seconds
        self.fail_on = fail_on
        self.batches: list[list[int]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self._lock = threading.Lock()

    def __call__(self, batch: np.ndarray) -> Sequence[np.ndarray]:
        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            values = [int(row[0, 0, 0]) for row in batch]
            self.batches.append(values)
            time.sleep(self.seconds)
            if self.fail_on is not None and self.fail_on in values:
                raise RuntimeError("boom")
            return [batch.reshape(len(batch), -1).sum(axis=1, dtype=np.int64)]
        finally:
            with self._lock:
                self.in_flight -= 1


def rows(*values: int) -> np.ndarray:
    return np.stack([np.full(SHAPE, v, np.uint8) for v in values])


def run(test: Callable[[], object]) -> object:
    return asyncio.run(test())  # type: ignore[arg-type]


def make(model: Model, **kwargs: float) -> DynamicBatcher:
    options = {"max_batch_size": 4, "max_queue_delay_ms": 20.0, "max_queue_size": 16, **kwargs}
    return DynamicBatcher("test", model, SHAPE, **options)  # type: ignore[arg-type]


async def infer(batcher: DynamicBatcher, values: Sequence[int], timeout_s: float = 10.0) -> np.ndarray:
    with batcher.reserve(len(values)) as reservation:
        outcome = await reservation.submit(rows(*values), time.monotonic() + timeout_s)
    return outcome.outputs[0]


def test_each_request_gets_its_own_rows_of_a_shared_batch() -> None:
    model = Model(seconds=0.05)

    async def scenario() -> list[np.ndarray]:
        batcher = make(model)
        batcher.start()
        try:
            first = asyncio.ensure_future(infer(batcher, [1]))  # runs alone while the others queue
            await asyncio.sleep(0.01)
            rest = [asyncio.ensure_future(infer(batcher, [v, v])) for v in (2, 3)]
            return list(await asyncio.gather(first, *rest))
        finally:
            await batcher.stop()

    results = run(scenario)
    assert [r.tolist() for r in results] == [[12], [24, 24], [36, 36]]  # type: ignore[union-attr]
    assert model.batches == [[1], [2, 2, 3, 3]]


def test_lone_request_on_an_idle_model_does_not_wait_for_the_queue_delay() -> None:
    model = Model()

    async def scenario() -> float:
        batcher = make(model, max_queue_delay_ms=2000)
        batcher.start()
        try:
            started = time.perf_counter()
            await infer(batcher, [5])
            return time.perf_counter() - started
        finally:
            await batcher.stop()

    assert run(scenario) < 0.5


def test_batch_waits_for_a_request_that_is_still_being_decoded() -> None:
    model = Model()

    async def scenario() -> None:
        batcher = make(model, max_queue_delay_ms=500)
        batcher.start()
        try:
            late = batcher.reserve(1)  # admitted, still "decoding"

            async def decode_then_submit() -> None:
                await asyncio.sleep(0.05)
                await late.submit(rows(2), time.monotonic() + 5)

            await asyncio.gather(infer(batcher, [1]), decode_then_submit())
        finally:
            await batcher.stop()

    run(scenario)
    assert model.batches == [[1, 2]]


def test_full_queue_raises_queue_full_with_retry_after_at_once() -> None:
    model = Model(seconds=0.2)

    async def scenario() -> None:
        batcher = make(model, max_queue_size=2)
        batcher.start()
        try:
            running = asyncio.ensure_future(infer(batcher, [1]))
            await asyncio.sleep(0.05)  # the first batch is running; the queue is empty again
            held = batcher.reserve(2)
            started = time.perf_counter()
            with pytest.raises(QueueFull) as caught:
                batcher.reserve(1)
            assert time.perf_counter() - started < 0.01
            assert int(caught.value.headers["Retry-After"]) >= 1
            held.release()
            batcher.reserve(2).release()  # released slots are free again
            await running
        finally:
            await batcher.stop()

    run(scenario)


def test_request_whose_deadline_passes_while_queued_is_not_run() -> None:
    model = Model(seconds=0.3)

    async def scenario() -> None:
        batcher = make(model, max_batch_size=1)
        batcher.start()
        try:
            running = asyncio.ensure_future(infer(batcher, [1]))
            await asyncio.sleep(0.02)
            with pytest.raises(DeadlineExceeded):
                await infer(batcher, [2], timeout_s=0.1)
            await running
            await asyncio.sleep(0.05)
        finally:
            await batcher.stop()

    run(scenario)
    assert model.batches == [[1]]


def test_exception_reaches_only_the_requests_in_the_failing_batch() -> None:
    model = Model(seconds=0.05, fail_on=7)

    async def scenario() -> list[object]:
        batcher = make(model, max_batch_size=2)
        batcher.start()
        try:
            first = asyncio.ensure_future(infer(batcher, [1]))
            await asyncio.sleep(0.01)
            queued = [asyncio.ensure_future(infer(batcher, [v])) for v in (7, 8, 9, 10)]
            return list(await asyncio.gather(first, *queued, return_exceptions=True))
        finally:
            await batcher.stop()

    results = run(scenario)
    assert model.batches == [[1], [7, 8], [9, 10]]
    assert [type(r) for r in results] == [  # type: ignore[union-attr]
        np.ndarray,
        InferenceFailed,
        InferenceFailed,
        np.ndarray,
        np.ndarray,
    ]


def test_request_larger_than_max_batch_size_spans_several_batches() -> None:
    model = Model()

    async def scenario() -> np.ndarray:
        batcher = make(model, max_batch_size=4, max_queue_size=2)
        batcher.start()
        try:
            return await infer(batcher, list(range(1, 11)))  # 10 rows > queue size: empty queue admits
        finally:
            await batcher.stop()

    result = run(scenario)
    assert result.tolist() == [12 * v for v in range(1, 11)]  # type: ignore[union-attr]
    assert [len(b) for b in model.batches] == [4, 4, 2]


def test_by_default_one_batch_runs_at_a_time() -> None:
    model = Model(seconds=0.02)

    async def scenario() -> None:
        batcher = make(model, max_batch_size=2)
        batcher.start()
        try:
            await asyncio.gather(*(infer(batcher, [v]) for v in range(12)))
        finally:
            await batcher.stop()

    run(scenario)
    assert model.most_in_flight == 1
    assert sum(len(b) for b in model.batches) == 12


def test_cancelled_request_leaves_the_queue_at_once_and_its_rows_never_run() -> None:
    model = Model(seconds=0.2)

    async def scenario() -> None:
        batcher = make(model, max_batch_size=2)
        batcher.start()
        try:
            running = asyncio.ensure_future(infer(batcher, [1]))
            await asyncio.sleep(0.02)  # the first batch runs; the next requests queue behind it
            abandoned = asyncio.ensure_future(infer(batcher, [7, 7]))
            neighbour = asyncio.ensure_future(infer(batcher, [2]))
            await asyncio.sleep(0.02)
            assert batcher.waiting_slots == 3
            abandoned.cancel()  # what a client disconnect does to its handler
            await asyncio.sleep(0)
            assert batcher.waiting_slots == 1  # freed at once, not when the worker next looks
            assert (await neighbour).tolist() == [24]
            await running
        finally:
            await batcher.stop()

    run(scenario)
    assert model.batches == [[1], [2]]


def test_drain_lets_queued_requests_finish_before_stopping() -> None:
    model = Model(seconds=0.05)

    async def scenario() -> list[np.ndarray]:
        batcher = make(model, max_batch_size=1)
        batcher.start()
        queued = [asyncio.ensure_future(infer(batcher, [v])) for v in (1, 2, 3)]
        await asyncio.sleep(0.01)
        await batcher.drain(timeout_s=5)
        return list(await asyncio.gather(*queued))

    assert [r.tolist() for r in run(scenario)] == [[12], [24], [36]]  # type: ignore[union-attr]


def test_request_an_empty_queue_would_make_miss_its_deadline_is_refused_as_deadline_unreachable() -> None:
    model = Model(seconds=1.2)

    async def scenario() -> None:
        batcher = make(model, max_batch_size=1)
        batcher.observe_run_seconds(1.2)
        batcher.start()
        try:
            running = asyncio.ensure_future(infer(batcher, [1]))
            await asyncio.sleep(0.02)
            assert batcher.waiting_slots == 0  # nothing queued: one batch running
            started = time.monotonic()
            with pytest.raises(DeadlineUnreachable) as refused:  # the running batch, then its own: ~2.4 s
                batcher.reserve(1, deadline=time.monotonic() + 2.0)
            assert time.monotonic() - started < 0.05
            assert refused.value.code == "deadline_unreachable" and refused.value.status_code == 503
            # Honest: the batch running takes 1.2 s more at most, so not "retry in 1 s".
            assert refused.value.headers["Retry-After"] == "2"
            assert "retry in 2 s" in refused.value.message
            with pytest.raises(DeadlineUnreachable) as hopeless:  # 1 s is too short even when idle
                batcher.reserve(1, deadline=time.monotonic() + 1.0)
            assert "even on an idle model" in hopeless.value.message
            with batcher.reserve(1, deadline=time.monotonic() + 5) as reservation:  # room enough
                await reservation.submit(rows(2), time.monotonic() + 5)
            await running
        finally:
            await batcher.stop()

    run(scenario)
    assert model.batches == [[1], [2]]


def test_two_runs_in_flight_each_answer_their_own_rows_and_never_more_than_two_at_once() -> None:
    model = Model(seconds=0.1)

    async def scenario() -> list[np.ndarray]:
        batcher = make(model, max_batch_size=2, max_queue_delay_ms=0.0, runs=2)
        batcher.start()
        try:
            return list(await asyncio.gather(*(infer(batcher, [v, v + 1]) for v in range(0, 12, 2))))
        finally:
            await batcher.stop()

    answers: list[np.ndarray] = run(scenario)  # type: ignore[assignment]
    for v, answer in zip(range(0, 12, 2), answers, strict=True):
        assert answer.tolist() == [v * 12, (v + 1) * 12]
    assert model.most_in_flight == 2
    assert sorted(map(sorted, model.batches)) == [[v, v + 1] for v in range(0, 12, 2)]


async def infer_inline(batcher: DynamicBatcher, value: int) -> np.ndarray | None:
    """A lone request the way the data plane runs it when it may (None: it may not)."""
    with batcher.reserve(1) as reservation:
        inline = await batcher.claim_inline(reservation)
        if inline is None:
            return None
        try:
            outputs, seconds = await asyncio.to_thread(inline.run, rows(value))
            return inline.finish(outputs, seconds).outputs[0]
        finally:
            inline.release()


def test_a_lone_request_runs_inline_only_when_nothing_else_waits_and_a_run_is_free() -> None:
    model = Model(seconds=0.1)

    async def scenario() -> None:
        off = make(model, runs=2)
        one_run = make(model, runs=1, inline=True)
        batcher = make(model, runs=2, inline=True)
        for started in (off, one_run, batcher):
            started.start()
        try:
            await asyncio.sleep(0)  # the forming tasks take their run and wait for work
            assert await infer_inline(off, 1) is None  # inline runs off
            assert await infer_inline(one_run, 1) is None  # the only run waits with the forming task
            answer = await infer_inline(batcher, 1)
            assert answer is not None and answer.tolist() == [12]
            with batcher.reserve(1) as other, batcher.reserve(1) as mine:
                assert await batcher.claim_inline(mine) is None  # another request is decoding
                other.release()
                inline = await batcher.claim_inline(mine)
                assert inline is not None and not mine.active and batcher.waiting_slots == 0
                # The run it holds counts for admission, and no second inline run is free.
                assert batcher.expected_seconds(0) > 0
                with batcher.reserve(1) as third:
                    assert await batcher.claim_inline(third) is None
                inline.release()
                inline.release()  # idempotent
            assert await infer_inline(batcher, 2) is not None  # the run came back
            with batcher.reserve(off.max_batch_size + 1) as large:
                assert await batcher.claim_inline(large) is None  # more than one batch
        finally:
            for started in (off, one_run, batcher):
                await started.stop()

    run(scenario)


def test_queued_requests_run_beside_an_inline_run_and_never_more_than_the_runs_at_once() -> None:
    model = Model(seconds=0.1)

    async def scenario() -> list[np.ndarray | None]:
        batcher = make(model, max_batch_size=1, max_queue_delay_ms=0.0, runs=2, inline=True)
        batcher.start()
        try:
            await asyncio.sleep(0)
            lone = asyncio.ensure_future(infer_inline(batcher, 1))
            await asyncio.sleep(0.02)  # it holds the free run now
            queued = [asyncio.ensure_future(infer(batcher, [v])) for v in (2, 3, 4)]
            await asyncio.sleep(0.01)
            drained = asyncio.ensure_future(batcher.drain(timeout_s=5))
            answers = [await lone, *await asyncio.gather(*queued)]
            await drained
            return answers
        finally:
            await batcher.stop()

    answers = run(scenario)
    assert [a.tolist() if a is not None else None for a in answers] == [[12], [24], [36], [48]]  # type: ignore[union-attr]
    assert model.most_in_flight == 2


def test_drain_waits_for_an_inline_run() -> None:
    model = Model(seconds=0.2)

    async def scenario() -> tuple[bool, float]:
        batcher = make(model, runs=2, inline=True)
        batcher.start()
        await asyncio.sleep(0)
        lone = asyncio.ensure_future(infer_inline(batcher, 1))
        await asyncio.sleep(0.02)
        started = time.monotonic()
        await batcher.drain(timeout_s=5)
        waited = time.monotonic() - started
        return (await lone) is not None, waited

    answered, waited = run(scenario)  # type: ignore[misc]
    assert answered and waited >= 0.1
