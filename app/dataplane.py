"""The data plane: what each endpoint does, from image bytes to the answer, without HTTP.

Per request: resolve the model, reserve batch slots (503 at once when the queue is full), decode
and preprocess on the decode pool straight into the request's rows, submit to the model's
batcher, post-process (again on the pool when it is heavy). Every step runs under the request's
deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal, TypeVar, cast

import numpy as np

from app.batching import BatchOutcome, InlineRun
from app.config import Settings
from app.errors import (
    DeadlineExceeded,
    DeadlineUnreachable,
    InferenceFailed,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    Overloaded,
    QueueFull,
    ServiceError,
    from_input_error,
)
from app.observability import annotate
from app.registry import ModelEntry, ModelRegistry
from app.schemas import (
    ClassifyResponse,
    DetectResponse,
    InputSize,
    ModelInfo,
    ModelsResponse,
    ModelStatus,
    PoseResponse,
    ReadyResponse,
    SegmentResponse,
    Timing,
)
from app.traffic import ByteBudget, request_deadline
from contract.card import ModelCard, Task
from contract.errors import InputError
from contract.imaging import ANSWER_MAX_SIDE
from contract.pipelines import (
    ClassificationPipeline,
    DetectionPipeline,
    ImageFormat,
    PosePipeline,
    SegmentationPipeline,
)
from contract.results import Person, Size
from contract.tasks import detection as detection_task
from contract.tasks import pose as pose_task

T = TypeVar("T")


@dataclass
class ImageAnswer:
    """An answer that is an image (a mask PNG or an overlay), with what the JSON would carry."""

    content: bytes
    output: ImageFormat  # png or jpeg
    model: str
    version: int
    timing: Timing

    @property
    def media_type(self) -> str:
        return "image/jpeg" if self.output == "jpeg" else "image/png"

    def headers(self) -> dict[str, str]:
        t = self.timing
        return {
            "X-Model": self.model,
            "X-Model-Version": str(self.version),
            "Server-Timing": (
                f"preprocess;dur={t.preprocess_ms:.2f}, queue;dur={t.queue_ms:.2f}, "
                f"inference;dur={t.inference_ms:.2f}, total;dur={t.total_ms:.2f}"
            ),
        }


class _Clock:
    """A request's deadline and the split of its time."""

    def __init__(self, timeout_ms: float) -> None:
        self.started = time.monotonic()
        # From the end of the request's head when the HTTP layer set it (its body's time counts).
        self.deadline = request_deadline() or self.started + timeout_ms / 1e3
        self.preprocess_ms = 0.0

    def preprocessed(self) -> None:
        self.preprocess_ms = (time.monotonic() - self.started) * 1e3
        if time.monotonic() >= self.deadline:
            raise DeadlineExceeded("the request's deadline passed while its images were decoded")

    def timing(self, outcome: BatchOutcome | None) -> Timing:
        return Timing(
            preprocess_ms=round(self.preprocess_ms, 3),
            queue_ms=round(outcome.queue_ms, 3) if outcome else 0.0,
            inference_ms=round(outcome.inference_ms, 3) if outcome else 0.0,
            total_ms=round((time.monotonic() - self.started) * 1e3, 3),
        )


def _call_on_loop(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    """`callback` on `loop`, from any thread; nothing once the loop is closed (the process ends)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback)


def answer_format(output: ImageFormat | None, overlay: bool) -> ImageFormat:
    """The answer's format: `format` as given; without it an image (PNG) for an overlay, else JSON.

    `format=json` with `overlay=true` asks for two answers at once (the drawing is an image, the
    JSON carries the result and, for segmentation, the mask): refused rather than one picked.
    """
    if output == "json" and overlay:
        raise InvalidInput(
            "overlay=true answers an image (PNG, or JPEG with format=jpeg) and format=json answers "
            "JSON: leave out one of them"
        )
    if output is None:
        return "png" if overlay else "json"
    return output


_FAILURE_REASONS: list[tuple[type[ServiceError], str]] = [
    (QueueFull, "REJECTED"),
    (DeadlineUnreachable, "REJECTED"),
    (Overloaded, "REJECTED"),
    (DeadlineExceeded, "TIMEOUT"),
    (InferenceFailed, "BACKEND"),
]


class DataPlane:
    def __init__(self, settings: Settings, registry: ModelRegistry) -> None:
        self.settings = settings
        self.registry = registry
        self._pool = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="decode")
        # The work after inference has its own threads: behind 20 queued decodes in one pool, the
        # answers of requests already inferred waited until every one of them missed its deadline.
        self._answers = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="answer")
        self.draining = False  # set on SIGTERM (app.shutdown): /readyz answers 503 from then on
        # The pool futures awaited now; when the shutdown's grace period ends they are cancelled
        # and their requests answer 503 at once (the threads run on), rather than being cut off
        # by uvicorn's backstop.
        self._awaited: set[asyncio.Future[object]] = set()
        self._aborting = False
        # Bodies (app.traffic.AdmissionMiddleware) and what requests keep while they wait (here).
        self.budget = ByteBudget(settings.max_inflight_bytes)

    def abort_waiting(self) -> None:
        self._aborting = True
        for future in list(self._awaited):
            future.cancel()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._answers.shutdown(wait=False, cancel_futures=True)

    async def _in_pool(
        self,
        deadline: float,
        fn: Callable[..., T],
        *args: object,
        answer: bool = False,
        finished: Callable[[], None] | None = None,
    ) -> T:
        """`fn(*args)` on the decode pool (the answer pool with `answer`); `DeadlineExceeded` at
        `deadline` (monotonic seconds).

        The deadline holds for decoding and for the work after inference alike; the thread itself
        runs on (it cannot be stopped), which is why that work is bounded by the answer's size.
        `finished` is called on the loop once the thread is done with `fn`, or will never start
        it, whatever became of the request meanwhile.
        """
        pool = self._answers if answer else self._pool
        if self._aborting:
            if finished is not None:
                finished()
            raise ModelNotReady("the service is shutting down", headers={"Retry-After": "1"})
        loop = asyncio.get_running_loop()
        work = pool.submit(fn, *args)
        if finished is not None:
            work.add_done_callback(lambda _: _call_on_loop(loop, finished))
        future = asyncio.wrap_future(work, loop=loop)
        self._awaited.add(cast("asyncio.Future[object]", future))
        try:
            return await asyncio.wait_for(future, max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            pass
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._aborting and task is not None and not task.cancelling():  # not the request's own
                raise ModelNotReady("the service is shutting down", headers={"Retry-After": "1"}) from None
            raise
        finally:
            self._awaited.discard(cast("asyncio.Future[object]", future))
        raise DeadlineExceeded("the request's deadline passed while its images were processed")

    def _model(self, name: str | None, task: Task) -> tuple[ModelEntry, ModelCard]:
        entry = self.registry.resolve(name, task)
        assert entry.card is not None and entry.batcher is not None
        return entry, entry.card

    def _check_count(self, images: list[bytes], exactly_one: str | None = None) -> None:
        if not images:
            raise InvalidInput("no image: send multipart/form-data with a `file` field, or an image/* body")
        if exactly_one and len(images) != 1:
            raise InvalidInput(f"{exactly_one} takes exactly one image, got {len(images)}")
        if len(images) > self.settings.max_images:
            raise InvalidInput(
                f"{len(images)} images; at most {self.settings.max_images} per request (MAX_IMAGES)"
            )

    @contextlib.contextmanager
    def _holding(self, entry: ModelEntry, images: list[bytes], rows: int, canvas: bool) -> Iterator[None]:
        """Hold the bytes the request keeps while it waits in the budget, or raise `Overloaded`.

        That is its `rows` of model input, plus an answer canvas (at most `ANSWER_MAX_SIDE` a
        side) for an overlay or a drawing; the bodies are held already by the HTTP layer.
        """
        card = entry.card
        assert card is not None and entry.batcher is not None
        # Rows are numpy (3 bytes a pixel); a Pillow RGB canvas takes 4.
        size = rows * card.input.height * card.input.width * 3 + (ANSWER_MAX_SIDE**2 * 4 if canvas else 0)
        if not self.budget.take(size, own=sum(map(len, images))):
            retry = entry.batcher.retry_after_s()
            raise Overloaded(
                f"{self.budget.held} bytes held by requests in progress (MAX_INFLIGHT_BYTES="
                f"{self.budget.limit}); retry in {retry} s",
                headers={"Retry-After": str(retry)},
            )
        try:
            yield
        finally:
            self.budget.give(size)

    @contextlib.contextmanager
    def _tracked(self, entry: ModelEntry) -> Iterator[None]:
        """Count the request as a success or a failure (by reason) of its model."""
        annotate(model=entry.name, version=entry.version)  # for the request's access log line
        started = time.perf_counter()
        try:
            try:
                yield
            except InputError as exc:
                raise from_input_error(exc) from exc
        except ServiceError as exc:
            reason = next((r for kind, r in _FAILURE_REASONS if isinstance(exc, kind)), "INVALID")
            entry.metrics.request_done(reason, time.perf_counter() - started)
            raise
        except Exception:
            entry.metrics.request_done("OTHER", time.perf_counter() - started)
            raise
        entry.metrics.request_done(None, time.perf_counter() - started)

    async def _decode_and_run(
        self,
        entry: ModelEntry,
        clock: _Clock,
        images: list[bytes],
        new_batch: Callable[[int], np.ndarray],
        prepare: Callable[..., T],
        *args: object,
    ) -> tuple[list[T], BatchOutcome]:
        """One row per image: reserve the slots, decode each image into its row on the pool, run.

        Returns what `prepare(data, row, *args)` returned per image, and the batch's outcome.
        """
        assert entry.batcher is not None
        with self._tracked(entry), entry.batcher.reserve(len(images), clock.deadline) as reservation:
            batch = new_batch(len(images))
            inline = await entry.batcher.claim_inline(reservation) if len(images) == 1 else None
            if inline is not None:
                return await self._decode_and_run_inline(inline, clock, images[0], batch, prepare, *args)
            prepared = await asyncio.gather(
                *(
                    self._in_pool(clock.deadline, prepare, data, batch[i], *args)
                    for i, data in enumerate(images)
                )
            )
            clock.preprocessed()
            return list(prepared), await reservation.submit(batch, clock.deadline)

    async def _decode_and_run_inline(
        self,
        inline: InlineRun,
        clock: _Clock,
        data: bytes,
        batch: np.ndarray,
        prepare: Callable[..., T],
        *args: object,
    ) -> tuple[list[T], BatchOutcome]:
        """A lone request on an idle model: decoded and run on one pool thread (`claim_inline`)."""

        def decode_then_run() -> tuple[T, float, tuple[list[np.ndarray], float]]:
            value = prepare(data, batch[0], *args)
            decoded_at = time.monotonic()
            if decoded_at >= clock.deadline:  # nobody waits for the run any more
                raise DeadlineExceeded("the request's deadline passed while its images were decoded")
            return value, decoded_at, inline.run(batch)

        value, decoded_at, (outputs, compute_s) = await self._in_pool(
            clock.deadline, decode_then_run, finished=inline.release
        )
        clock.preprocess_ms = (decoded_at - clock.started) * 1e3
        return [value], inline.finish(outputs, compute_s)

    # -- classification --------------------------------------------------------------------------

    async def classify(self, images: list[bytes], model: str | None, top_k: int) -> ClassifyResponse:
        clock = _Clock(self.settings.request_timeout_ms)
        entry, card = self._model(model, "classification")
        pipeline = ClassificationPipeline(card, self.settings.max_image_pixels)
        pipeline.check_top_k(top_k)
        self._check_count(images)
        with self._holding(entry, images, len(images), canvas=False):
            sizes, outcome = await self._decode_and_run(
                entry, clock, images, pipeline.batch, pipeline.prepare
            )
        return ClassifyResponse(
            model=entry.name,
            version=card.version,
            results=pipeline.answer(outcome.outputs[0], sizes, top_k),
            timing=clock.timing(outcome),
        )

    # -- segmentation ----------------------------------------------------------------------------

    async def segment(
        self, images: list[bytes], model: str | None, format: ImageFormat | None, overlay: bool
    ) -> SegmentResponse | ImageAnswer:
        clock = _Clock(self.settings.request_timeout_ms)
        output = answer_format(format, overlay)
        entry, card = self._model(model, "segmentation")
        pipeline = SegmentationPipeline(card, self.settings.max_image_pixels)
        if output == "jpeg" and not overlay:
            raise InvalidInput("a class mask is not sent as JPEG (lossy); use format=png, or overlay=true")
        wants_image = overlay or output != "json"
        self._check_count(
            images, "an image answer (format=png|jpeg or overlay=true)" if wants_image else None
        )
        with self._holding(entry, images, len(images), canvas=overlay):
            prepared, outcome = await self._decode_and_run(
                entry, clock, images, pipeline.batch, pipeline.prepare, overlay
            )
            masks = outcome.outputs[0]
            if wants_image:
                content = await self._in_pool(
                    clock.deadline, pipeline.image, masks[0], prepared[0], overlay, output, answer=True
                )
                return ImageAnswer(content, output, entry.name, card.version, clock.timing(outcome))
            results = await asyncio.gather(
                *(
                    self._in_pool(clock.deadline, pipeline.answer, mask, one, answer=True)
                    for mask, one in zip(masks, prepared, strict=True)
                )
            )
        return SegmentResponse(
            model=entry.name, version=card.version, results=results, timing=clock.timing(outcome)
        )

    # -- detection -------------------------------------------------------------------------------

    async def detect(
        self,
        images: list[bytes],
        model: str | None,
        score_threshold: float | None,
        iou_threshold: float | None,
        max_detections: int | None,
        format: ImageFormat | None,
        overlay: bool,
    ) -> DetectResponse | ImageAnswer:
        clock = _Clock(self.settings.request_timeout_ms)
        output = answer_format(format, overlay)
        entry, card = self._model(model, "detection")
        pipeline = DetectionPipeline(card, self.settings.max_image_pixels)
        limits = pipeline.thresholds(score_threshold, iou_threshold, max_detections)
        wants_image = overlay or output != "json"
        self._check_count(
            images, "an image answer (format=png|jpeg or overlay=true)" if wants_image else None
        )
        with self._holding(entry, images, len(images), canvas=wants_image):
            prepared, outcome = await self._decode_and_run(
                entry, clock, images, pipeline.batch, pipeline.prepare, wants_image
            )
            boxes, scores = outcome.outputs[0], outcome.outputs[1]
            results = await asyncio.gather(
                *(
                    self._in_pool(
                        clock.deadline, pipeline.answer, boxes[i], scores[i], one, limits, answer=True
                    )
                    for i, one in enumerate(prepared)
                )
            )
            if wants_image:
                content = await self._in_pool(
                    clock.deadline, pipeline.image, results[0].objects, prepared[0], output, answer=True
                )
                return ImageAnswer(content, output, entry.name, card.version, clock.timing(outcome))
        return DetectResponse(
            model=entry.name, version=card.version, results=results, timing=clock.timing(outcome)
        )

    # -- pose ------------------------------------------------------------------------------------

    async def pose(
        self,
        images: list[bytes],
        model: str | None,
        boxes_json: str | None,
        format: ImageFormat | None,
        overlay: bool,
        detect_people: bool = True,
        keypoint_threshold: float = pose_task.DRAW_THRESHOLD,
    ) -> PoseResponse | ImageAnswer:
        clock = _Clock(self.settings.request_timeout_ms)
        output = answer_format(format, overlay)
        entry, card = self._model(model, "pose")
        pipeline = PosePipeline(card, self.settings.max_image_pixels, self.settings.pose_flip_test)
        self._check_count(images, "pose")
        boxes = pose_task.parse_boxes(boxes_json, self.settings.max_boxes) if boxes_json is not None else None
        wants_image = overlay or output != "json"
        source: Literal["request", "detector", "whole_image"] = "request"
        box_scores: np.ndarray | None = None
        detector = self._person_detector() if boxes is None and detect_people else None
        if detector is not None:
            boxes, box_scores = await self._detect_people(detector, images[0], clock)
            source = "detector"
        elif boxes is None:
            source = "whole_image"
        slots = pipeline.rows(boxes)
        outcome: BatchOutcome | None = None
        assert entry.batcher is not None
        with self._tracked(entry), self._holding(entry, images, slots, canvas=wants_image):
            if slots == 0:  # an explicit empty list of boxes: nobody to look at
                decoded = await self._in_pool(clock.deadline, pipeline.nobody, images[0], wants_image)
                clock.preprocessed()
                found: list[Person] = []
            else:
                with entry.batcher.reserve(slots, clock.deadline) as reservation:
                    batch = pipeline.batch(slots)
                    prepared = await self._in_pool(
                        clock.deadline, pipeline.prepare, images[0], boxes, batch, wants_image
                    )
                    clock.preprocessed()
                    outcome = await reservation.submit(batch, clock.deadline)
                decoded = prepared.decoded
                found = pipeline.answer(outcome.outputs[0], prepared)
                if box_scores is not None:
                    found = [
                        p.model_copy(update={"box_score": float(s)})
                        for p, s in zip(found, box_scores, strict=True)
                    ]
            if wants_image:
                content = await self._in_pool(
                    clock.deadline, pipeline.image, decoded, found, output, keypoint_threshold, answer=True
                )
                return ImageAnswer(content, output, entry.name, card.version, clock.timing(outcome))
        return PoseResponse(
            model=entry.name,
            version=card.version,
            image=Size(width=decoded.size[0], height=decoded.size[1]),
            boxes=source,
            detector=detector.name if detector is not None else None,
            people=found,
            skeleton=pipeline.skeleton(),
            keypoint_threshold=keypoint_threshold,
            timing=clock.timing(outcome),
        )

    def _person_detector(self) -> ModelEntry | None:
        """The detector `/v1/pose` finds its people with: the default detector, if ready and it knows people."""
        entry = self.registry.default_for("detection")
        if entry is None or entry.state != "ready" or entry.card is None:
            return None
        return entry if detection_task.PERSON_LABEL in entry.card.labels else None

    async def _detect_people(
        self, entry: ModelEntry, image: bytes, clock: _Clock
    ) -> tuple[np.ndarray, np.ndarray]:
        """Person boxes (n, 4) and scores, at most MAX_BOXES, best first: one run of the detector."""
        assert entry.card is not None and entry.batcher is not None
        pipeline = DetectionPipeline(entry.card, self.settings.max_image_pixels)
        (prepared,), outcome = await self._decode_and_run(
            entry, clock, [image], pipeline.batch, pipeline.prepare
        )
        boxes, scores = await self._in_pool(
            clock.deadline,
            pipeline.people,
            outcome.outputs[0][0],
            outcome.outputs[1][0],
            prepared,
            answer=True,
        )
        return boxes[: self.settings.max_boxes], scores[: self.settings.max_boxes]

    # -- raw tensors (the Open Inference Protocol, app/protocol) --------------------------------

    async def run_rows(self, entry: ModelEntry, rows: np.ndarray, deadline: float) -> BatchOutcome:
        """Run rows a client preprocessed itself, (N, H, W, 3) uint8, through the model's batcher.

        N rows take N slots, as N uploaded images would. Raises `QueueFull` or `DeadlineUnreachable`
        at once, or `DeadlineExceeded` at `deadline` (monotonic seconds).
        """
        assert entry.batcher is not None
        with self._tracked(entry), entry.batcher.reserve(len(rows), deadline) as reservation:
            inline = await entry.batcher.claim_inline(reservation)
            if inline is not None:  # an idle model: run on a pool thread, without the queue
                outputs, seconds = await self._in_pool(deadline, inline.run, rows, finished=inline.release)
                return inline.finish(outputs, seconds)
            return await reservation.submit(rows, deadline)

    # -- models and readiness --------------------------------------------------------------------

    def models(self) -> ModelsResponse:
        defaults = {
            self.registry.default_for(task)
            for task in ("classification", "segmentation", "pose", "detection")
        }
        infos = []
        for entry in self.registry.entries.values():
            card = entry.card
            infos.append(
                ModelInfo(
                    name=entry.name,
                    version=entry.version,
                    task=card.task if card else None,
                    state=entry.state,
                    input=InputSize(height=card.input.height, width=card.input.width) if card else None,
                    num_labels=len(card.labels) if card else None,
                    dataset=card.dataset if card else None,
                    weights=card.weights.source if card else None,
                    provider=entry.provider,
                    default=entry in defaults,
                    path=str(entry.path),
                    reason=entry.reason,
                )
            )
        return ModelsResponse(models=infos)

    def card(self, name: str) -> ModelCard:
        entry = self.registry.entries.get(name)
        if entry is None or entry.card is None:
            raise ModelNotFound(f"no model named {name[:200]!r} with a readable card")
        return entry.card

    def readiness(self) -> ReadyResponse:
        draining = ["shutting down: draining before exit"] if self.draining else []
        return ReadyResponse(
            ready=self.registry.ready and not self.draining,
            models=[
                ModelStatus(
                    name=e.name,
                    version=e.version,
                    state=e.state,
                    path=str(e.path),
                    reason=e.reason,
                    load_ms=round(e.load_seconds * 1e3, 1) if e.load_seconds is not None else None,
                    reload_error=e.reload_error,
                )
                for e in self.registry.entries.values()
            ],
            problems=[*self.registry.problems, *draining],
        )
