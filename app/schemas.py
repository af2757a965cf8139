"""The wire format: pydantic models of every JSON answer (they also make the OpenAPI schema)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from contract.card import Task
from contract.results import Classification, Detections, Person, Segmentation, Size
from contract.tasks.pose import DRAW_THRESHOLD

ModelState = Literal["loading", "ready", "failed", "unloaded"]  # unloaded: by the repository API


class ErrorDetail(BaseModel):
    code: str = Field(description="stable machine-readable code, e.g. `queue_full`, `corrupt_image`")
    message: str = Field(description="what was wrong, for a person")
    details: list[dict[str, object]] | None = Field(
        None, description="per-field problems of a 422 validation"
    )


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Timing(BaseModel):
    """Where the request's time went, in milliseconds."""

    preprocess_ms: float = Field(description="decoding and resizing the images (or cropping the people)")
    queue_ms: float = Field(
        description="waiting for a batch (the longest wait when the request spans batches)"
    )
    inference_ms: float = Field(description="session.run of the batches holding this request")
    total_ms: float = Field(description="arrival of the request to its answer, excluding the body upload")


class ModelRef(BaseModel):
    model: str = Field(description="name of the model that answered")
    version: int = Field(description="version of the model that answered")


class ClassifyResponse(ModelRef):
    results: list[Classification] = Field(description="one entry per uploaded image, in upload order")
    timing: Timing


class SegmentResponse(ModelRef):
    results: list[Segmentation]
    timing: Timing


class PoseResponse(ModelRef):
    image: Size
    boxes: Literal["request", "detector", "whole_image"] = Field(
        description="where the person boxes came from: the request, the person detector, or none (the "
        "whole image as one person, when no detector is loaded)"
    )
    detector: str | None = Field(default=None, description="the detector that found the people")
    people: list[Person]
    skeleton: list[tuple[str, str]] = Field(description="pairs of keypoint names joined by a limb")
    keypoint_threshold: float = Field(
        default=DRAW_THRESHOLD,
        description="the request's keypoint_threshold: a drawing (overlay=true, or the demo page) shows "
        "the keypoints scoring at least this, and the limbs between them; `people` lists them all",
    )
    timing: Timing


class DetectResponse(ModelRef):
    results: list[Detections] = Field(description="one entry per uploaded image, in upload order")
    timing: Timing


class InputSize(BaseModel):
    height: int
    width: int


class ModelInfo(BaseModel):
    name: str
    version: int | None
    task: Task | None
    state: ModelState
    input: InputSize | None = Field(None, description="the graph's input size; images are resized to it")
    num_labels: int | None = Field(None, description="classes, or keypoints for pose")
    dataset: str | None = None
    weights: str | None = Field(None, description="where the weights came from (random-init, openmmlab, ...)")
    provider: str | None = Field(None, description="execution provider the session actually got")
    default: bool = Field(False, description="answers its task's endpoint when no model is named")
    path: str
    reason: str | None = Field(None, description="why the model failed to load")


class ModelsResponse(BaseModel):
    models: list[ModelInfo]


class ModelStatus(BaseModel):
    name: str
    version: int | None
    state: ModelState
    path: str
    reason: str | None = None
    load_ms: float | None = Field(None, description="session creation plus warm-up")
    reload_error: str | None = Field(
        None, description="why the last attempt to load another version failed; this version keeps serving"
    )


class ReadyResponse(BaseModel):
    ready: bool
    models: list[ModelStatus]
    problems: list[str] = Field(default_factory=list, description="repository-level problems")


class LiveResponse(BaseModel):
    status: Literal["ok"] = "ok"


class ReloadResponse(BaseModel):
    name: str
    version: int = Field(description="the version serving now")
    previous_version: int | None = Field(description="the version served before the reload")
    reloaded: bool = Field(description="false when that version was already serving")
    load_ms: float | None = Field(None, description="verifying, opening and warming the new version")
