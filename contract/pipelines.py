"""One pipeline per task: an image → rows of the model's input batch, the model's outputs → answers.

The shape of LitServe's `LitAPI` (decode a request into rows, answer from the outputs), with no
server in it: the service's data plane (`app.dataplane`), the benchmark's in-process limit
(`bench.limit`) and the naive baseline (`bench.naive_server`) all call these methods, so the work
they compare cannot drift apart. Every method is synchronous and CPU-bound; Pillow and numpy
release the GIL for most of it, so callers run them on a thread pool. Bad input raises
`contract.errors.InputError`.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

from contract.card import ModelCard
from contract.errors import InvalidInput
from contract.imaging import (
    DecodedImage,
    answer_canvas,
    answer_size,
    check_answer_aspect,
    decode_image,
    encode_jpeg,
    encode_png,
    open_image,
    upright_size,
)
from contract.results import Classification, DetectedObject, Detections, Person, Segmentation, Size
from contract.tasks import classification, segmentation
from contract.tasks import detection as detection_task
from contract.tasks import pose as pose_task

ImageFormat = Literal["json", "png", "jpeg"]


def _size(decoded: DecodedImage) -> Size:
    return Size(width=decoded.size[0], height=decoded.size[1])


def _without_pixels(decoded: DecodedImage) -> DecodedImage:
    """Only the size: a queued request should not hold pixels its answer will not use."""
    return DecodedImage(Image.new("RGB", (1, 1)), decoded.size)


def _covering(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    return max(a[0], b[0]), max(a[1], b[1])


def _for_drawing(decoded: DecodedImage) -> DecodedImage:
    """The image at the answer's size (at most `ANSWER_MAX_SIDE` a side), to draw on later."""
    return DecodedImage(answer_canvas(decoded.image, decoded.size), decoded.size)


def _encode(image: Image.Image, output: ImageFormat) -> bytes:
    return encode_jpeg(image) if output == "jpeg" else encode_png(image)


class _Pipeline:
    def __init__(self, card: ModelCard, max_pixels: int) -> None:
        self.card = card
        self.max_pixels = max_pixels

    def batch(self, rows: int) -> np.ndarray:
        """An empty input batch of `rows` rows, (rows, H, W, 3) uint8, for `prepare` to fill."""
        return np.empty((rows, self.card.input.height, self.card.input.width, 3), np.uint8)


class ClassificationPipeline(_Pipeline):
    def check_top_k(self, top_k: int) -> None:
        if top_k > len(self.card.labels):
            raise InvalidInput(f"top_k={top_k} exceeds the model's {len(self.card.labels)} classes")

    def prepare(self, data: bytes, row: np.ndarray) -> Size:
        """Decode (JPEG at the smallest DCT scale that still covers the crop) into `row` (H, W, 3)."""
        needed = classification.needed_size(self.card)
        decoded = decode_image(data, self.max_pixels, lambda _: needed)
        classification.preprocess(decoded, self.card, row)
        return _size(decoded)

    def answer(self, probabilities: np.ndarray, sizes: list[Size], top_k: int) -> list[Classification]:
        """(N, classes) probabilities → per image its `top_k` classes."""
        predictions = classification.top_k(probabilities, top_k, self.card.labels)
        return [Classification(predictions=p, image=size) for p, size in zip(predictions, sizes, strict=True)]


@dataclass
class SegmentationInput:
    """What an image's answer needs once its canvas is in the batch."""

    decoded: DecodedImage  # pixels (at the answer's size) only when an overlay will be drawn on them
    fitted: tuple[int, int]  # (w, h) of the canvas that holds the image


class SegmentationPipeline(_Pipeline):
    def prepare(self, data: bytes, row: np.ndarray, keep_pixels: bool = False) -> SegmentationInput:
        """Write the canvas into `row`; keep only what the answer needs while the request waits.

        That is the image's size, and for an overlay the image at the answer's size (at most
        `ANSWER_MAX_SIDE`): 24 queued overlays of 6300² held 2.8 GB of full-size pixels before.
        """

        def needed(size: tuple[int, int]) -> tuple[int, int]:
            model = segmentation.resized_size(size, self.card)
            return _covering(model, answer_size(size)) if keep_pixels else model

        check = check_answer_aspect if keep_pixels else None
        decoded = decode_image(data, self.max_pixels, needed, check)
        fitted = segmentation.preprocess(decoded, self.card, row)
        return SegmentationInput(_for_drawing(decoded) if keep_pixels else _without_pixels(decoded), fitted)

    def answer(self, mask: np.ndarray, prepared: SegmentationInput) -> Segmentation:
        """(H, W) canvas mask → the classes present and the mask PNG at the image's size."""
        mask = mask.astype(np.uint8, copy=False)
        size = prepared.decoded.size
        full = segmentation.mask_to_image_size(mask, prepared.fitted, size)
        png = encode_png(segmentation.mask_image(full, self.card))
        # Counted on the smaller of the two masks: the same fractions (1080p: 0.5 Mpx, not 2 Mpx).
        small = segmentation.unpadded(mask, prepared.fitted)
        classes = segmentation.classes_present(small if small.size < full.size else full, self.card, size)
        return Segmentation(
            image=_size(prepared.decoded), classes=classes, mask_png=base64.b64encode(png).decode("ascii")
        )

    def image(
        self, mask: np.ndarray, prepared: SegmentationInput, overlay: bool, output: ImageFormat
    ) -> bytes:
        """The mask PNG at the image's size, or the kept image (at the answer's size, never the
        upload's) blended with the mask's colours (PNG or JPEG)."""
        mask = mask.astype(np.uint8, copy=False)
        if not overlay:
            full = segmentation.mask_to_image_size(mask, prepared.fitted, prepared.decoded.size)
            return encode_png(segmentation.mask_image(full, self.card))
        drawn = prepared.decoded.image
        scaled = segmentation.mask_to_image_size(mask, prepared.fitted, drawn.size)
        return _encode(segmentation.overlay(drawn, scaled, self.card), output)


@dataclass
class PoseInput:
    decoded: DecodedImage  # pixels (at the answer's size) only when the answer draws on them
    boxes: np.ndarray  # (n, 4) the people, in image pixels
    crops: pose_task.Crops


class PosePipeline(_Pipeline):
    def __init__(self, card: ModelCard, max_pixels: int, flip_test: bool = False) -> None:
        super().__init__(card, max_pixels)
        self.flip = flip_test and bool(card.flip_indices)

    def rows(self, boxes: np.ndarray | None) -> int:
        """Batch rows for these boxes (None: the whole image is one person); twice with flip test."""
        return (len(boxes) if boxes is not None else 1) * (2 if self.flip else 1)

    def prepare(
        self, data: bytes, boxes: np.ndarray | None, batch: np.ndarray, keep_pixels: bool = False
    ) -> PoseInput:
        """Crop the people into `batch`; keep the image, at the answer's size, only where the
        answer draws on it.

        A JPEG is decoded at the smallest DCT scale the crops (and the drawing) allow
        (`pose.draft_size`: a third of the time at 1080p).
        """

        def needed_size(size: tuple[int, int]) -> tuple[int, int]:
            people = boxes if boxes is not None else pose_task.whole_image_box(size)
            crops = pose_task.draft_size(size, people, self.card)
            return _covering(crops, answer_size(size)) if keep_pixels else crops

        check = check_answer_aspect if keep_pixels else None
        decoded = decode_image(data, self.max_pixels, needed_size, check)
        if boxes is None:
            boxes = pose_task.whole_image_box(decoded.size)
        else:
            pose_task.check_boxes_in_image(boxes, decoded.size)
        image = np.asarray(decoded.image)
        crops = pose_task.crop_people(image, boxes, self.card, batch, self.flip, decoded.reduction)
        # 64 queued 1080p requests held ~400 MB of pixels only for their size
        return PoseInput(_for_drawing(decoded) if keep_pixels else _without_pixels(decoded), boxes, crops)

    def nobody(self, data: bytes, keep_pixels: bool) -> DecodedImage:
        """An image with no boxes to look at: the image at the answer's size to draw on, or only
        its header."""
        if keep_pixels:
            return _for_drawing(decode_image(data, self.max_pixels, answer_size, check_answer_aspect))
        header = open_image(data, self.max_pixels)
        return DecodedImage(header, upright_size(header))

    def answer(self, heatmaps: np.ndarray, prepared: PoseInput) -> list[Person]:
        keypoints, scores = pose_task.decode_people(heatmaps, prepared.crops, self.card, self.flip)
        return pose_task.people(prepared.boxes, keypoints, scores, self.card)

    def image(
        self,
        decoded: DecodedImage,
        found: list[Person],
        output: ImageFormat,
        threshold: float = pose_task.DRAW_THRESHOLD,
    ) -> bytes:
        """The drawn answer: keypoints scoring ≥ `threshold` (and the limbs between them)."""
        return _encode(pose_task.draw(decoded.image, found, self.card, decoded.size, threshold), output)

    def skeleton(self) -> list[tuple[str, str]]:
        return pose_task.skeleton_names(self.card)


@dataclass
class DetectionInput:
    decoded: DecodedImage  # full pixels only when the answer draws on them


class DetectionPipeline(_Pipeline):
    def thresholds(
        self, score: float | None, iou: float | None, max_detections: int | None
    ) -> detection_task.Thresholds:
        """The request's thresholds, the card's (mmdet's test_cfg) for those not given."""
        return detection_task.thresholds(self.card, score, iou, max_detections)

    def prepare(self, data: bytes, row: np.ndarray, keep_pixels: bool = False) -> DetectionInput:
        """Resize the whole image into `row` (a JPEG draft-decoded to what the model and the drawing
        need); keep the image, at the answer's size, only where the answer draws on it."""

        def needed(size: tuple[int, int]) -> tuple[int, int]:
            model = detection_task.needed_size(self.card)
            return _covering(model, answer_size(size)) if keep_pixels else model

        check = check_answer_aspect if keep_pixels else None
        decoded = decode_image(data, self.max_pixels, needed, check)
        detection_task.preprocess(decoded, self.card, row)
        return DetectionInput(_for_drawing(decoded) if keep_pixels else _without_pixels(decoded))

    def found(
        self,
        boxes: np.ndarray,
        scores: np.ndarray,
        prepared: DetectionInput,
        limits: detection_task.Thresholds,
        classes: list[int] | None = None,
    ) -> list[DetectedObject]:
        """One image's (A, 4) boxes and (A, C) scores → its objects in image pixels."""
        kept = detection_task.detect(boxes, scores, self.card, prepared.decoded.size, limits, classes)
        return detection_task.objects(*kept, self.card)

    def answer(
        self,
        boxes: np.ndarray,
        scores: np.ndarray,
        prepared: DetectionInput,
        limits: detection_task.Thresholds,
    ) -> Detections:
        return Detections(image=_size(prepared.decoded), objects=self.found(boxes, scores, prepared, limits))

    def people(
        self, boxes: np.ndarray, scores: np.ndarray, prepared: DetectionInput
    ) -> tuple[np.ndarray, np.ndarray]:
        """Person boxes (n, 4) in image pixels and their scores, as mmpose's top-down demo picks them."""
        limits = self.thresholds(None, None, None)
        kept = detection_task.detect(boxes, scores, self.card, prepared.decoded.size, limits)
        return detection_task.people(*kept, self.card)

    def image(self, found: list[DetectedObject], prepared: DetectionInput, output: ImageFormat) -> bytes:
        return _encode(detection_task.draw(prepared.decoded.image, found, prepared.decoded.size), output)
