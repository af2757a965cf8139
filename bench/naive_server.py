"""The baseline: the server one writes first. FastAPI + uvicorn, one `session.run` per request.

Same models, the same per-task pipelines as the service (`contract.pipelines`), same answers (the
service's pydantic schemas) on the same `/v1` paths for a raw `image/*` body; but no batching, no
queue bound and no deadline: each request is handled by a plain `def` endpoint on Starlette's
thread pool, so runs overlap on the shared session. Its sessions are opened as one first would,
`InferenceSession(path)` with ONNX Runtime's default options (spinning intra-op threads);
NAIVE_SESSION_OPTIONS=service gives it the service's options instead (`app.runtime`), which
isolates what batching and the service's structure add.

Run: `MODEL_REPOSITORY=models PORT=8001 python -m bench.naive_server`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import Body, FastAPI, HTTPException, Query
from fastapi.responses import JSONResponse, Response

from app.config import Settings
from app.runtime import create_session, plan_device
from app.schemas import ClassifyResponse, DetectResponse, PoseResponse, SegmentResponse, Timing
from contract import repository
from contract.card import ModelCard
from contract.pipelines import ClassificationPipeline, DetectionPipeline, PosePipeline, SegmentationPipeline
from contract.repository import CARD_FILE, MODEL_FILE
from contract.results import Size

ImageBody = Annotated[bytes, Body(media_type="image/jpeg")]


class NaiveModel:
    def __init__(self, folder: Path, settings: Settings) -> None:
        self.card = ModelCard.read(folder / CARD_FILE)
        if os.environ.get("NAIVE_SESSION_OPTIONS", "default") == "service":
            self.session = create_session(folder / MODEL_FILE, settings, plan_device(settings))
        else:
            self.session = ort.InferenceSession(str(folder / MODEL_FILE), providers=["CPUExecutionProvider"])
        self.outputs = [o.name for o in self.card.outputs]
        self.run(np.zeros((1, self.card.input.height, self.card.input.width, 3), np.uint8))

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self.outputs, {self.card.input.name: batch})


def load_models(settings: Settings) -> dict[str, NaiveModel]:
    """The newest version of every model in the repository (or of those in MODELS)."""
    return {
        found.name: NaiveModel(found.path, settings)
        for found in repository.newest_versions(settings.model_repository, settings.models)
    }


def create_app(settings: Settings) -> FastAPI:
    models = load_models(settings)
    app = FastAPI(title="naive baseline")

    def pick(name: str | None, task: str) -> NaiveModel:
        if name is None:
            name = settings.default_model(task)
        model = models.get(name)
        if model is None:
            model = next((m for m in models.values() if m.card.task == task), None)
        if model is None or model.card.task != task:
            raise HTTPException(404, f"no {task} model {name}")
        return model

    def timing(started: float) -> Timing:
        total = (time.monotonic() - started) * 1e3
        return Timing(preprocess_ms=0.0, queue_ms=0.0, inference_ms=0.0, total_ms=total)

    @app.get("/readyz")
    def readyz() -> dict[str, bool]:
        return {"ready": True}

    @app.get("/metrics")
    def metrics() -> Response:
        return Response("", media_type="text/plain")

    @app.post("/v1/classify", response_model=ClassifyResponse)
    def classify(
        body: ImageBody, model: str | None = None, top_k: Annotated[int, Query(ge=1)] = 5
    ) -> ClassifyResponse:
        started = time.monotonic()
        m = pick(model, "classification")
        pipeline = ClassificationPipeline(m.card, settings.max_image_pixels)
        batch = pipeline.batch(1)
        size = pipeline.prepare(body, batch[0])
        return ClassifyResponse(
            model=m.card.name,
            version=m.card.version,
            results=pipeline.answer(m.run(batch)[0], [size], top_k),
            timing=timing(started),
        )

    @app.post("/v1/segment", response_model=SegmentResponse)
    def segment(body: ImageBody, model: str | None = None) -> SegmentResponse:
        started = time.monotonic()
        m = pick(model, "segmentation")
        pipeline = SegmentationPipeline(m.card, settings.max_image_pixels)
        batch = pipeline.batch(1)
        prepared = pipeline.prepare(body, batch[0])
        result = pipeline.answer(m.run(batch)[0][0], prepared)
        return SegmentResponse(
            model=m.card.name, version=m.card.version, results=[result], timing=timing(started)
        )

    @app.post("/v1/detect", response_model=DetectResponse)
    def detect(body: ImageBody, model: str | None = None) -> DetectResponse:
        started = time.monotonic()
        m = pick(model, "detection")
        pipeline = DetectionPipeline(m.card, settings.max_image_pixels)
        batch = pipeline.batch(1)
        prepared = pipeline.prepare(body, batch[0])
        boxes, scores = m.run(batch)
        result = pipeline.answer(boxes[0], scores[0], prepared, pipeline.thresholds(None, None, None))
        return DetectResponse(
            model=m.card.name, version=m.card.version, results=[result], timing=timing(started)
        )

    @app.post("/v1/pose", response_model=PoseResponse)
    def pose(body: ImageBody, model: str | None = None) -> PoseResponse:
        started = time.monotonic()
        m = pick(model, "pose")
        pipeline = PosePipeline(m.card, settings.max_image_pixels)
        batch = pipeline.batch(1)
        prepared = pipeline.prepare(body, None, batch)
        return PoseResponse(
            model=m.card.name,
            version=m.card.version,
            image=Size(width=prepared.decoded.size[0], height=prepared.decoded.size[1]),
            boxes="whole_image",
            people=pipeline.answer(m.run(batch)[0], prepared),
            skeleton=pipeline.skeleton(),
            timing=timing(started),
        )

    @app.exception_handler(Exception)
    async def failed(_: object, exc: Exception) -> JSONResponse:
        status = getattr(exc, "status_code", 500)
        return JSONResponse({"error": str(exc)}, status_code=status)

    return app


def main() -> None:
    settings = Settings()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning")


if __name__ == "__main__":
    main()
