"""Admin routes (an ADMIN_API_KEYS key required; see app.security): reload a model."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from app.reload import ModelReloader
from app.schemas import ErrorResponse, ReloadResponse

router = APIRouter(prefix="/v1", tags=["admin"])

_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": description}
    for code, description in {
        401: "no valid API key (WWW-Authenticate: Bearer)",
        403: "the key is not an admin key, or ADMIN_API_KEYS is not set",
        404: "unknown model",
        409: "the version cannot be loaded (bad hash, broken ONNX, ...); the current version keeps serving",
        422: "invalid parameters",
        503: "the model is still loading (see Retry-After)",
    }.items()
}


@router.post(
    "/models/{name}/reload",
    response_model=ReloadResponse,
    summary="Load another version of a model beside the current one, then swap it in",
    responses=_RESPONSES,
)
async def reload_model(
    name: str,
    request: Request,
    version: Annotated[
        int | None, Query(ge=1, description="the version to serve; default: the newest")
    ] = None,
) -> ReloadResponse:
    reloader: ModelReloader = request.app.state.reloader
    return await reloader.reload(name, version)
