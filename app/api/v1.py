"""Task endpoints under /v1: thin handlers that read the request and delegate to the data plane."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request, Response

from app.api.deps import RAW_IMAGE_BODY, DataPlaneDep, FilesParam, read_images
from app.dataplane import ImageAnswer
from app.schemas import (
    ClassifyResponse,
    DetectResponse,
    ErrorResponse,
    ModelsResponse,
    PoseResponse,
    SegmentResponse,
)
from contract.card import ModelCard
from contract.pipelines import ImageFormat
from contract.tasks.pose import DRAW_THRESHOLD

router = APIRouter(prefix="/v1", tags=["v1"])

ModelParam = Annotated[
    str | None, Query(description="model name (GET /v1/models); default: the task's configured default")
]
OverlayParam = Annotated[
    bool,
    Query(description="answer the image with the result drawn on it (PNG, or JPEG with format=jpeg)"),
]
FormatParam = Annotated[
    ImageFormat | None,
    Query(
        description="json (the default), or png/jpeg for the drawn image (png is the default with "
        "overlay=true; json with overlay=true is 422)"
    ),
]

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": description}
    for code, description in {
        400: "wrong_task: the model does another task; bad_request: a multipart body that cannot be "
        "parsed, or bytes that are not HTTP",
        404: "unknown model",
        413: "body or image too large",
        415: "not an image, or not a supported content type",
        422: "invalid parameters, corrupt or truncated image, bad boxes",
        500: "inference_failed: session.run failed on this request's batch (the next batch runs); "
        "internal_error: a bug",
        503: "queue_full, deadline_unreachable, model_not_ready or overloaded; see Retry-After",
        504: "the request's deadline passed",
    }.items()
}


def _with_image_answer(description: str) -> dict[int | str, dict[str, Any]]:
    """The error answers, plus a 200 that may be an image instead of the JSON model."""
    binary = {"schema": {"type": "string", "format": "binary"}}
    return {
        **_ERRORS,
        200: {"description": description, "content": {"image/png": binary, "image/jpeg": binary}},
    }


def _as_response(answer: ImageAnswer) -> Response:
    return Response(answer.content, media_type=answer.media_type, headers=answer.headers())


@router.get("/models", response_model=ModelsResponse, summary="The models this server knows, and their state")
async def list_models(plane: DataPlaneDep) -> ModelsResponse:
    return plane.models()


@router.get(
    "/models/{name}",
    summary="A model's card (labels, preprocessing, metrics, provenance)",
    responses={404: {"model": ErrorResponse, "description": "unknown model"}},
)
async def model_card(name: str, plane: DataPlaneDep) -> ModelCard:
    return plane.card(name)


@router.post(
    "/classify",
    response_model=ClassifyResponse,
    summary="Classify images: the top_k classes of each",
    responses=_ERRORS,
    openapi_extra=RAW_IMAGE_BODY,
)
async def classify(
    request: Request,
    plane: DataPlaneDep,
    file: FilesParam = None,
    model: ModelParam = None,
    top_k: Annotated[int, Query(ge=1, description="classes per image, at most the model's class count")] = 5,
) -> ClassifyResponse:
    images = await read_images(request, file)
    return await plane.classify(images, model, top_k)


@router.post(
    "/segment",
    response_model=SegmentResponse,
    summary="Segment images: a class per pixel at the image's size",
    responses=_with_image_answer(
        "JSON by default; format=png: the mask as a palette PNG; overlay=true: the blended image"
    ),
    openapi_extra=RAW_IMAGE_BODY,
)
async def segment(
    request: Request,
    plane: DataPlaneDep,
    file: FilesParam = None,
    model: ModelParam = None,
    format: Annotated[
        ImageFormat | None,
        Query(
            description="json (the default): classes and a base64 mask PNG; png: the mask PNG (pixel "
            "value = class index); with overlay=true png (the default) or jpeg; json with overlay=true is 422"
        ),
    ] = None,
    overlay: OverlayParam = False,
) -> Any:
    images = await read_images(request, file)
    answer = await plane.segment(images, model, format, overlay)
    return _as_response(answer) if isinstance(answer, ImageAnswer) else answer


@router.post(
    "/detect",
    response_model=DetectResponse,
    summary="Detect objects: boxes with class and score in image pixels, after per-class NMS",
    responses=_with_image_answer(
        "JSON by default; overlay=true (or format=png|jpeg): the boxes drawn on the image"
    ),
    openapi_extra=RAW_IMAGE_BODY,
)
async def detect(
    request: Request,
    plane: DataPlaneDep,
    file: FilesParam = None,
    model: ModelParam = None,
    score_threshold: Annotated[
        float | None,
        Query(
            ge=0.0, le=1.0, description="keep class scores above this; default the model's (0.02, mmdet's)"
        ),
    ] = None,
    iou_threshold: Annotated[
        float | None,
        Query(ge=0.0, le=1.0, description="per-class NMS suppresses overlaps above this IoU; default 0.45"),
    ] = None,
    max_detections: Annotated[
        int | None, Query(ge=1, le=1000, description="most objects per image; default the model's (200)")
    ] = None,
    format: FormatParam = None,
    overlay: OverlayParam = False,
) -> Any:
    images = await read_images(request, file)
    answer = await plane.detect(
        images, model, score_threshold, iou_threshold, max_detections, format, overlay
    )
    return _as_response(answer) if isinstance(answer, ImageAnswer) else answer


@router.post(
    "/pose",
    response_model=PoseResponse,
    summary="Keypoints of each person box; without boxes, of each person the detector finds",
    responses=_with_image_answer("JSON by default; overlay=true (or format=png|jpeg): the drawn image"),
    openapi_extra=RAW_IMAGE_BODY,
)
async def estimate_pose(
    request: Request,
    plane: DataPlaneDep,
    file: FilesParam = None,
    boxes: Annotated[
        str | None,
        Form(
            description="JSON list of person boxes [[x1, y1, x2, y2], ...] in image pixels; `[]`: "
            "nobody to look at (no people, neither model runs); an empty box (under a pixel wide or "
            "high) is 422. Left empty: none given (an HTML form, Swagger UI's too, sends an unfilled "
            "field as empty): the detector finds the people, or with detect=false the whole image is one",
            examples=["[[10, 20, 200, 400]]"],  # Swagger UI would otherwise prefill "string"
        ),
    ] = None,
    boxes_query: Annotated[
        str | None,
        Query(
            alias="boxes", description="the same boxes as a query parameter (raw-body uploads); `[]`: nobody"
        ),
    ] = None,
    model: ModelParam = None,
    format: FormatParam = None,
    overlay: OverlayParam = False,
    detect: Annotated[
        bool,
        Query(
            description="without boxes: find the people with the default detector first, when one is "
            "loaded; false: the whole image is one person"
        ),
    ] = True,
    keypoint_threshold: Annotated[
        float,
        Query(
            ge=0.0,
            description="the drawn image (overlay=true, format=png|jpeg) shows the keypoints scoring at "
            "least this (heatmap peaks), and the limbs between them; the JSON lists every keypoint and "
            "echoes the figure for clients that draw (the demo page does). Default: mmpose's kpt_thr",
        ),
    ] = DRAW_THRESHOLD,
) -> Any:
    images = await read_images(request, file)
    given = boxes if boxes is not None and boxes.strip() else boxes_query
    answer = await plane.pose(images, model, given, format, overlay, detect, keypoint_threshold)
    return _as_response(answer) if isinstance(answer, ImageAnswer) else answer
