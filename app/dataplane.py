"""The data plane: what each endpoint does, from image bytes to the answer, without HTTP.

Per request: resolve the model, reserve batch slots (503 at once when the queue is full), decode
and preprocess on the decode pool straight into the request's rows, submit to the model's
batcher, post-process (again on the pool when it is heavy). Every step runs under the request's
deadline.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np
from PIL import Image

from app.batching import BatchOutcome
from app.card import ModelCard, Task
from app.config import Settings
from app.errors import (
    DeadlineExceeded,
    InferenceFailed,
    InvalidInput,
    ModelNotFound,
    QueueFull,
    ServiceError,
)
from app.imaging import DecodedImage, decode_image, encode_jpeg, encode_png, open_image, upright_size
from app.observability import annotate
from app.registry import ModelEntry, ModelRegistry
from app.schemas import (
    Classification,
    ClassifyResponse,
    InputSize,
    ModelInfo,
    ModelsResponse,
    ModelStatus,
    Person,
    PoseResponse,
    ReadyResponse,
    Segmentation,
    SegmentResponse,
    Size,
    Timing,
)
from app.tasks import classification, segmentation
from app.tasks import pose as pose_task

T = TypeVar("T")
ImageFormat = Literal["json", "png", "jpeg"]


@dataclass
class ImageAnswer:
    """An answer that is an image (a mask PNG or an overlay), with what the JSON would carry."""

    content: bytes
    media_type: str
    model: str
    version: int
    timing: Timing

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
        self.deadline = self.started + timeout_ms / 1e3
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


_FAILURE_REASONS: list[tuple[type[ServiceError], str]] = [
    (QueueFull, "REJECTED"),
    (DeadlineExceeded, "TIMEOUT"),
    (InferenceFailed, "BACKEND"),
]


class DataPlane:
    def __init__(self, settings: Settings, registry: ModelRegistry) -> None:
        self.settings = settings
        self.registry = registry
        self._pool = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="decode")
        self.draining = False  # set on SIGTERM (app.shutdown): /readyz answers 503 from then on

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _in_pool(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

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

    @contextmanager
    def _tracked(self, entry: ModelEntry) -> Iterator[None]:
        """Count the request as a success or a failure (by reason) of its model."""
        annotate(model=entry.name, version=entry.version)  # for the request's access log line
        started = time.perf_counter()
        try:
            yield
        except ServiceError as exc:
            reason = next((r for kind, r in _FAILURE_REASONS if isinstance(exc, kind)), "INVALID")
            entry.metrics.request_done(reason, time.perf_counter() - started)
            raise
        except Exception:
            entry.metrics.request_done("OTHER", time.perf_counter() - started)
            raise
        entry.metrics.request_done(None, time.perf_counter() - started)

    # -- classification --------------------------------------------------------------------------

    async def classify(self, images: list[bytes], model: str | None, top_k: int) -> ClassifyResponse:
        clock = _Clock(self.settings.request_timeout_ms)
        entry, card = self._model(model, "classification")
        if top_k > len(card.labels):
            raise InvalidInput(f"top_k={top_k} exceeds the model's {len(card.labels)} classes")
        self._check_count(images)
        assert entry.batcher is not None
        with self._tracked(entry), entry.batcher.reserve(len(images), clock.deadline) as reservation:
            batch = np.empty((len(images), card.input.height, card.input.width, 3), np.uint8)
            sizes = await asyncio.gather(
                *(
                    self._in_pool(self._prepare_classification, data, card, batch[i])
                    for i, data in enumerate(images)
                )
            )
            clock.preprocessed()
            outcome = await reservation.submit(batch, clock.deadline)
        predictions = classification.top_k(outcome.outputs[0], top_k, card.labels)
        return ClassifyResponse(
            model=entry.name,
            version=card.version,
            results=[
                Classification(predictions=p, image=Size(width=w, height=h))
                for p, (w, h) in zip(predictions, sizes, strict=True)
            ],
            timing=clock.timing(outcome),
        )

    def _prepare_classification(self, data: bytes, card: ModelCard, row: np.ndarray) -> tuple[int, int]:
        needed = classification.needed_size(card)
        decoded = decode_image(data, self.settings.max_image_pixels, lambda _: needed)
        classification.preprocess(decoded, card, row)
        return decoded.size

    # -- segmentation ----------------------------------------------------------------------------

    async def segment(
        self, images: list[bytes], model: str | None, output: ImageFormat, overlay: bool
    ) -> SegmentResponse | ImageAnswer:
        clock = _Clock(self.settings.request_timeout_ms)
        entry, card = self._model(model, "segmentation")
        if output == "jpeg" and not overlay:
            raise InvalidInput("a class mask is not sent as JPEG (lossy); use format=png, or overlay=true")
        wants_image = overlay or output != "json"
        self._check_count(
            images, "an image answer (format=png|jpeg or overlay=true)" if wants_image else None
        )
        assert entry.batcher is not None
        with self._tracked(entry), entry.batcher.reserve(len(images), clock.deadline) as reservation:
            batch = np.empty((len(images), card.input.height, card.input.width, 3), np.uint8)
            prepared = await asyncio.gather(
                *(
                    self._in_pool(self._prepare_segmentation, data, card, batch[i], overlay)
                    for i, data in enumerate(images)
                )
            )
            clock.preprocessed()
            outcome = await reservation.submit(batch, clock.deadline)
        masks = outcome.outputs[0]
        if wants_image:
            decoded, fitted = prepared[0]
            content = await self._in_pool(
                self._segmentation_image, masks[0], decoded, fitted, card, overlay, output
            )
            media_type = "image/jpeg" if output == "jpeg" else "image/png"
            return ImageAnswer(content, media_type, entry.name, card.version, clock.timing(outcome))
        results = await asyncio.gather(
            *(
                self._in_pool(self._segmentation_json, mask, decoded, fitted, card)
                for mask, (decoded, fitted) in zip(masks, prepared, strict=True)
            )
        )
        return SegmentResponse(
            model=entry.name, version=card.version, results=results, timing=clock.timing(outcome)
        )

    def _prepare_segmentation(
        self, data: bytes, card: ModelCard, row: np.ndarray, overlay: bool
    ) -> tuple[DecodedImage, tuple[int, int]]:
        """Write the canvas into `row`; keep the full image only where an overlay needs it."""
        needed = None if overlay else (lambda size: segmentation.resized_size(size, card))
        decoded = decode_image(data, self.settings.max_image_pixels, needed)
        fitted = segmentation.preprocess(decoded, card, row)
        if not overlay:  # the answer needs only the size; free the pixels while the request waits
            decoded = DecodedImage(Image.new("RGB", (1, 1)), decoded.size)
        return decoded, fitted

    @staticmethod
    def _segmentation_json(
        mask: np.ndarray, decoded: DecodedImage, fitted: tuple[int, int], card: ModelCard
    ) -> Segmentation:
        mask = mask.astype(np.uint8, copy=False)
        full = segmentation.mask_to_image_size(mask, fitted, decoded.size)
        png = encode_png(segmentation.mask_image(full, card))
        # Counted on the smaller of the two masks: the same fractions (1080p: 0.5 Mpx, not 2 Mpx).
        small = segmentation.unpadded(mask, fitted)
        classes = segmentation.classes_present(small if small.size < full.size else full, card, decoded.size)
        return Segmentation(
            image=Size(width=decoded.size[0], height=decoded.size[1]),
            classes=classes,
            mask_png=base64.b64encode(png).decode("ascii"),
        )

    @staticmethod
    def _segmentation_image(
        mask: np.ndarray,
        decoded: DecodedImage,
        fitted: tuple[int, int],
        card: ModelCard,
        overlay: bool,
        output: ImageFormat,
    ) -> bytes:
        full = segmentation.mask_to_image_size(mask.astype(np.uint8, copy=False), fitted, decoded.size)
        if not overlay:
            return encode_png(segmentation.mask_image(full, card))
        blended = segmentation.overlay(decoded.image, full, card)
        return encode_jpeg(blended) if output == "jpeg" else encode_png(blended)

    # -- pose ------------------------------------------------------------------------------------

    async def pose(
        self,
        images: list[bytes],
        model: str | None,
        boxes_json: str | None,
        output: ImageFormat,
        overlay: bool,
    ) -> PoseResponse | ImageAnswer:
        clock = _Clock(self.settings.request_timeout_ms)
        entry, card = self._model(model, "pose")
        self._check_count(images, "pose")
        boxes = pose_task.parse_boxes(boxes_json, self.settings.max_boxes) if boxes_json is not None else None
        wants_image = overlay or output != "json"
        flip = self.settings.pose_flip_test and bool(card.flip_indices)
        slots = (len(boxes) if boxes is not None else 1) * (2 if flip else 1)
        outcome: BatchOutcome | None = None
        assert entry.batcher is not None
        with self._tracked(entry):
            if slots == 0:  # an explicit empty list of boxes: nobody to look at
                decoded = await self._in_pool(self._decode_for_pose, images[0], wants_image)
                clock.preprocessed()
                found: list[Person] = []
            else:
                with entry.batcher.reserve(slots, clock.deadline) as reservation:
                    batch = np.empty((slots, card.input.height, card.input.width, 3), np.uint8)
                    decoded, person_boxes, crops = await self._in_pool(
                        self._prepare_pose, images[0], boxes, card, batch, flip, wants_image
                    )
                    clock.preprocessed()
                    outcome = await reservation.submit(batch, clock.deadline)
                keypoints, scores = pose_task.decode_people(outcome.outputs[0], crops, card, flip)
                found = pose_task.people(person_boxes, keypoints, scores, card)
        if wants_image:
            content = await self._in_pool(self._pose_image, decoded, found, card, output)
            media_type = "image/jpeg" if output == "jpeg" else "image/png"
            return ImageAnswer(content, media_type, entry.name, card.version, clock.timing(outcome))
        return PoseResponse(
            model=entry.name,
            version=card.version,
            image=Size(width=decoded.size[0], height=decoded.size[1]),
            people=found,
            skeleton=pose_task.skeleton_names(card),
            timing=clock.timing(outcome),
        )

    def _decode_for_pose(self, data: bytes, full: bool) -> DecodedImage:
        """The whole image (to draw on), or only its header (for its size)."""
        if full:
            return decode_image(data, self.settings.max_image_pixels)
        header = open_image(data, self.settings.max_image_pixels)
        return DecodedImage(header, upright_size(header))

    def _prepare_pose(
        self,
        data: bytes,
        boxes: np.ndarray | None,
        card: ModelCard,
        batch: np.ndarray,
        flip: bool,
        keep_pixels: bool = True,
    ) -> tuple[DecodedImage, np.ndarray, pose_task.Crops]:
        """Crop the people into `batch`; keep the full image only where the answer draws on it.

        A JPEG is decoded at the smallest DCT scale the crops allow (`pose.draft_size`: a third of
        the time at 1080p), except when the answer draws on it: the drawing is full size.
        """

        def needed_size(size: tuple[int, int]) -> tuple[int, int]:
            people = boxes if boxes is not None else pose_task.whole_image_box(size)
            return pose_task.draft_size(size, people, card)

        decoded = decode_image(data, self.settings.max_image_pixels, None if keep_pixels else needed_size)
        if boxes is None:
            boxes = pose_task.whole_image_box(decoded.size)
        else:
            pose_task.check_boxes_in_image(boxes, decoded.size)
        image = np.asarray(decoded.image)
        crops = pose_task.crop_people(image, boxes, card, batch, flip, decoded.reduction)
        if not keep_pixels:  # 64 queued 1080p requests held ~400 MB of pixels only for their size
            decoded = DecodedImage(Image.new("RGB", (1, 1)), decoded.size)
        return decoded, boxes, crops

    @staticmethod
    def _pose_image(
        decoded: DecodedImage, found: list[Person], card: ModelCard, output: ImageFormat
    ) -> bytes:
        drawn = pose_task.draw(decoded.image, found, card)
        return encode_jpeg(drawn) if output == "jpeg" else encode_png(drawn)

    # -- raw tensors (the Open Inference Protocol, app/protocol) --------------------------------

    async def run_rows(self, entry: ModelEntry, rows: np.ndarray, deadline: float) -> BatchOutcome:
        """Run rows a client preprocessed itself, (N, H, W, 3) uint8, through the model's batcher.

        N rows take N slots, as N uploaded images would. Raises `QueueFull` at once, or
        `DeadlineExceeded` at `deadline` (monotonic seconds).
        """
        assert entry.batcher is not None
        with self._tracked(entry), entry.batcher.reserve(len(rows), deadline) as reservation:
            return await reservation.submit(rows, deadline)

    # -- models and readiness --------------------------------------------------------------------

    def models(self) -> ModelsResponse:
        defaults = {self.registry.default_for(task) for task in ("classification", "segmentation", "pose")}
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
