"""Operations: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from app.api.deps import DataPlaneDep
from app.schemas import LiveResponse, ReadyResponse

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=LiveResponse, summary="Liveness: the process answers")
async def healthz() -> LiveResponse:
    return LiveResponse()


@router.get(
    "/readyz",
    response_model=ReadyResponse,
    summary="Readiness: every configured model loaded and warmed",
    responses={
        503: {
            "model": ReadyResponse,
            "description": "a model is loading or failed to load, or the service is shutting down (from SIGTERM on)",
        }
    },
)
async def readyz(plane: DataPlaneDep) -> JSONResponse:
    status = plane.readiness()
    return JSONResponse(status.model_dump(mode="json"), status_code=200 if status.ready else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
