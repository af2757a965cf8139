"""Assemble the app: settings → registry → data plane, routes, middleware, error handlers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from app.api import health, v1
from app.config import Settings
from app.dataplane import DataPlane
from app.errors import install_error_handlers
from app.metrics import HttpMetricsMiddleware, Metrics
from app.middleware import BodyLimitMiddleware
from app.registry import ModelRegistry
from app.runtime import plan_device


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = Metrics()
    registry = ModelRegistry(settings, metrics)
    plane = DataPlane(settings, registry)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        plan = plan_device(settings)  # DEVICE=cuda without CUDA stops the start here
        registry.discover()
        loading = asyncio.create_task(registry.load_all(plan))  # /readyz says 503 until it is done
        yield
        loading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loading
        await registry.close()
        plane.close()

    app = FastAPI(title="MobileNetV2 vision service", version="0.1.0", lifespan=lifespan)
    app.state.settings, app.state.metrics, app.state.dataplane = settings, metrics, plane
    app.include_router(v1.router)
    app.include_router(health.router)
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(HttpMetricsMiddleware, metrics=metrics)  # outermost: sees every answer
    return app
