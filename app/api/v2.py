"""The Open Inference Protocol under /v2 (KServe V2 REST, as Triton speaks it): thin handlers over
`app.protocol`, so `tritonclient.http` and KServe clients work unchanged.

Every failure here answers the protocol's `{"error": "..."}` rather than /v1's error object: the
clients read that field, and an object there would reach their users as a dict.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.deps import DataPlaneDep
from app.errors import BadRequest, ServiceError, protocol_error_response
from app.protocol.codec import HEADER_LENGTH
from app.protocol.datamodels import (
    InferenceRequest,
    InferenceResponse,
    ModelMetadataResponse,
    ModelReadyResponse,
    ModelStatisticsResponse,
    ProtocolErrorResponse,
    RepositoryIndexRequest,
    RepositoryModel,
    RepositoryModelRequest,
    ServerLiveResponse,
    ServerMetadataResponse,
    ServerReadyResponse,
)
from app.protocol.dataplane import ProtocolPlane
from app.schemas import ReloadResponse

logger = logging.getLogger(__name__)


class ProtocolRoute(APIRoute):
    """A route whose failures answer in the protocol's error shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answer_protocol_errors(request: Request) -> Response:
            try:
                return await handler(request)
            except StarletteHTTPException as exc:  # ServiceError included (the body limit's 413 too)
                message = exc.message if isinstance(exc, ServiceError) else str(exc.detail)
                return protocol_error_response(exc.status_code, message, exc.headers)
            except RequestValidationError as exc:
                return protocol_error_response(400, f"invalid request: {exc.errors()[0].get('msg', '')}")
            except Exception:
                logger.exception("unhandled error on %s", request.url.path)
                return protocol_error_response(500, "internal server error")

        return answer_protocol_errors


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ProtocolErrorResponse} for code in codes}


router = APIRouter(
    prefix="/v2",
    tags=["v2 (Open Inference Protocol)"],
    route_class=ProtocolRoute,
    responses=_errors(500),
)


async def get_protocol(request: Request, plane: DataPlaneDep) -> ProtocolPlane:  # async: no thread
    return ProtocolPlane(plane, request.app.version, request.app.state.reloader)


ProtocolDep = Annotated[ProtocolPlane, Depends(get_protocol)]


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema with its `$defs` substituted (an OpenAPI `openapi_extra` has no $defs)."""
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    inlined: dict[str, Any] = resolve(schema)
    return inlined


_INFER_BODY = {
    "requestBody": {
        "required": True,
        "description": "The JSON header; with `Inference-Header-Content-Length`, the binary inputs follow it. "
        "May be gzip or deflate encoded (Content-Encoding).",
        "content": {
            "application/json": {"schema": _inline(InferenceRequest.model_json_schema())},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
_INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": InferenceResponse,
        "description": "JSON, or (application/octet-stream) the JSON header of "
        "`Inference-Header-Content-Length` bytes followed by the binary outputs",
    },
    **_errors(400, 404, 413, 415, 503, 504),
}


# -- server ------------------------------------------------------------------------------------------


@router.get("", response_model=ServerMetadataResponse, summary="Server name, version and extensions")
async def server_metadata(protocol: ProtocolDep) -> ServerMetadataResponse:
    return protocol.server_metadata()


@router.get("/health/live", response_model=ServerLiveResponse, summary="Liveness: the process answers")
async def server_live() -> ServerLiveResponse:
    return ServerLiveResponse(live=True)


@router.get(
    "/health/ready",
    response_model=ServerReadyResponse,
    summary="Readiness: every configured model loaded and warmed (503 otherwise)",
    responses={503: {"model": ServerReadyResponse}},
)
async def server_ready(protocol: ProtocolDep) -> JSONResponse:
    ready = protocol.server_ready()
    return JSONResponse({"ready": ready}, status_code=200 if ready else 503)


# -- models: each route also under /versions/{version} ----------------------------------------------

_STATS = "Triton's statistics: requests, queue and compute time, executions per batch size"
_CONFIG = "Triton's model configuration: inputs, outputs, batch limits, dynamic batching"


# Before /models/{name}, which would take `stats` for a model's name.
@router.get("/models/stats", response_model=ModelStatisticsResponse, summary=_STATS + " (every model)")
async def statistics(protocol: ProtocolDep) -> dict[str, Any]:
    return protocol.statistics(None, None)


@router.get(
    "/models/{name}/stats", response_model=ModelStatisticsResponse, summary=_STATS, responses=_errors(404)
)
async def model_statistics(name: str, protocol: ProtocolDep) -> dict[str, Any]:
    return protocol.statistics(name, None)


@router.get(
    "/models/{name}/versions/{version}/stats",
    response_model=ModelStatisticsResponse,
    summary=_STATS,
    responses=_errors(404),
)
async def model_version_statistics(name: str, version: str, protocol: ProtocolDep) -> dict[str, Any]:
    return protocol.statistics(name, version)


@router.get(
    "/models/{name}/config", response_model=dict[str, Any], summary=_CONFIG, responses=_errors(404, 503)
)
async def model_config(name: str, protocol: ProtocolDep) -> dict[str, Any]:
    return protocol.model_config(name, None)


@router.get(
    "/models/{name}/versions/{version}/config",
    response_model=dict[str, Any],
    summary=_CONFIG,
    responses=_errors(404, 503),
)
async def model_version_config(name: str, version: str, protocol: ProtocolDep) -> dict[str, Any]:
    return protocol.model_config(name, version)


def _model_ready(protocol: ProtocolPlane, name: str, version: str | None) -> JSONResponse:
    ready = protocol.model_ready(name, version)
    return JSONResponse({"name": name, "ready": ready}, status_code=200 if ready else 503)


async def _infer(protocol: ProtocolPlane, request: Request, name: str, version: str | None) -> Response:
    answer = await protocol.infer(
        name,
        version,
        await request.body(),
        request.headers.get(HEADER_LENGTH),
        request.headers.get("content-encoding"),
    )
    return Response(answer.body, media_type=answer.media_type, headers=answer.headers)


_METADATA = "A model's inputs and outputs (names, datatypes, shapes)"
_READY = "Whether a model is loaded and warmed (503 otherwise)"
_INFER = "Run a model on raw tensors (JSON or binary), through its dynamic batcher"
_READY_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": ProtocolErrorResponse},
    503: {"model": ModelReadyResponse},
}


@router.get(
    "/models/{name}", response_model=ModelMetadataResponse, summary=_METADATA, responses=_errors(404, 503)
)
async def model_metadata(name: str, protocol: ProtocolDep) -> ModelMetadataResponse:
    return protocol.model_metadata(name, None)


@router.get(
    "/models/{name}/versions/{version}",
    response_model=ModelMetadataResponse,
    summary=_METADATA,
    responses=_errors(404, 503),
)
async def model_version_metadata(name: str, version: str, protocol: ProtocolDep) -> ModelMetadataResponse:
    return protocol.model_metadata(name, version)


@router.get(
    "/models/{name}/ready", response_model=ModelReadyResponse, summary=_READY, responses=_READY_RESPONSES
)
async def model_ready(name: str, protocol: ProtocolDep) -> JSONResponse:
    return _model_ready(protocol, name, None)


@router.get(
    "/models/{name}/versions/{version}/ready",
    response_model=ModelReadyResponse,
    summary=_READY,
    responses=_READY_RESPONSES,
)
async def model_version_ready(name: str, version: str, protocol: ProtocolDep) -> JSONResponse:
    return _model_ready(protocol, name, version)


@router.post("/models/{name}/infer", summary=_INFER, responses=_INFER_RESPONSES, openapi_extra=_INFER_BODY)
async def infer(name: str, request: Request, protocol: ProtocolDep) -> Response:
    return await _infer(protocol, request, name, None)


@router.post(
    "/models/{name}/versions/{version}/infer",
    summary=_INFER,
    responses=_INFER_RESPONSES,
    openapi_extra=_INFER_BODY,
)
async def infer_version(name: str, version: str, request: Request, protocol: ProtocolDep) -> Response:
    return await _infer(protocol, request, name, version)


# -- the model repository (ADMIN_API_KEYS: app.security) ---------------------------------------------

Body = TypeVar("Body", bound=BaseModel)


async def _optional_body(request: Request, model: type[Body]) -> Body:
    """Triton's clients send these bodies empty as often as not."""
    body = await request.body()
    if not body.strip():
        return model()
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise BadRequest(f"invalid request body: {exc.errors()[0].get('msg', '')}") from None


def _optional_json(model: type[BaseModel]) -> dict[str, Any]:
    schema = _inline(model.model_json_schema())
    return {"requestBody": {"required": False, "content": {"application/json": {"schema": schema}}}}


@router.post(
    "/repository/index",
    response_model=list[RepositoryModel],
    summary="Every model of the repository with its version and state (an admin key)",
    openapi_extra=_optional_json(RepositoryIndexRequest),
    responses=_errors(400),
)
async def repository_index(request: Request, protocol: ProtocolDep) -> list[dict[str, str]]:
    asked = await _optional_body(request, RepositoryIndexRequest)
    return protocol.repository_index(asked.ready)


@router.post(
    "/repository/models/{name}/load",
    response_model=ReloadResponse,
    summary="Serve the newest version of a model, loaded beside the current one (an admin key)",
    openapi_extra=_optional_json(RepositoryModelRequest),
    responses=_errors(400, 404, 409, 503),
)
async def repository_load(name: str, request: Request, protocol: ProtocolDep) -> ReloadResponse:
    asked = await _optional_body(request, RepositoryModelRequest)
    return await protocol.load(name, asked.parameters)


@router.post(
    "/repository/models/{name}/unload",
    summary="Stop serving a model: its requests finish, new ones get 503 (an admin key)",
    openapi_extra=_optional_json(RepositoryModelRequest),
    responses={
        200: {"content": {"application/json": {"schema": {"type": "object"}}}},
        **_errors(400, 404, 503),
    },
)
async def repository_unload(name: str, request: Request, protocol: ProtocolDep) -> JSONResponse:
    await _optional_body(request, RepositoryModelRequest)
    await protocol.unload(name)
    return JSONResponse({})
