"""The baseline: the server one writes first. FastAPI + uvicorn, one `session.run` per request.

Same models, same decoding and pre/post-processing functions as the service, same answers (the
service's pydantic schemas) on the same `/v1` paths for a raw `image/*` body; but no batching, no
queue bound and no deadline: each request is handled by a plain `def` endpoint on Starlette's
thread pool, so runs overlap on the shared session. Its sessions are opened as one first would,
`InferenceSession(path)` with ONNX Runtime's default options (spinning intra-op threads);
NAIVE_SESSION_OPTIONS=service gives it the service's options instead (`app.runtime`), which
isolates what batching and the service's structure add.

Run: `MODEL_REPOSITORY=models PORT=8001 python -m bench.naive_server`.
"""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import Body, FastAPI, HTTPException, Query
from fastapi.responses import JSONResponse, Response

from app.card import CARD_FILE, MODEL_FILE, ModelCard
from app.config import Settings
from app.imaging import decode_image, encode_png
from app.runtime import create_session, plan_device
from app.schemas import (
    Classification,
    ClassifyResponse,
    PoseResponse,
    Segmentation,
    SegmentResponse,
    Size,
    Timing,
)
from app.tasks import classification, segmentation
from app.tasks import pose as pose_task

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
    models = {}
    for model_dir in sorted(p for p in settings.model_repository.iterdir() if p.is_dir()):
        if settings.models and model_dir.name not in settings.models:
            continue
        versions = sorted((p for p in model_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
        if versions:
            models[model_dir.name] = NaiveModel(versions[-1], settings)
    return models


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
        card = m.card
        batch = np.empty((1, card.input.height, card.input.width, 3), np.uint8)
        needed = classification.needed_size(card)
        decoded = decode_image(body, settings.max_image_pixels, lambda _: needed)
        classification.preprocess(decoded, card, batch[0])
        predictions = classification.top_k(m.run(batch)[0], top_k, card.labels)
        w, h = decoded.size
        return ClassifyResponse(
            model=card.name,
            version=card.version,
            results=[Classification(predictions=predictions[0], image=Size(width=w, height=h))],
            timing=timing(started),
        )

    @app.post("/v1/segment", response_model=SegmentResponse)
    def segment(body: ImageBody, model: str | None = None) -> SegmentResponse:
        started = time.monotonic()
        m = pick(model, "segmentation")
        card = m.card
        batch = np.empty((1, card.input.height, card.input.width, 3), np.uint8)
        decoded = decode_image(body, settings.max_image_pixels, lambda s: segmentation.resized_size(s, card))
        fitted = segmentation.preprocess(decoded, card, batch[0])
        mask = m.run(batch)[0][0].astype(np.uint8, copy=False)
        full = segmentation.mask_to_image_size(mask, fitted, decoded.size)
        png = encode_png(segmentation.mask_image(full, card))
        result = Segmentation(
            image=Size(width=decoded.size[0], height=decoded.size[1]),
            classes=segmentation.classes_present(full, card),
            mask_png=base64.b64encode(png).decode("ascii"),
        )
        return SegmentResponse(
            model=card.name, version=card.version, results=[result], timing=timing(started)
        )

    @app.post("/v1/pose", response_model=PoseResponse)
    def pose(body: ImageBody, model: str | None = None) -> PoseResponse:
        started = time.monotonic()
        m = pick(model, "pose")
        card = m.card
        batch = np.empty((1, card.input.height, card.input.width, 3), np.uint8)
        decoded = decode_image(body, settings.max_image_pixels)
        boxes = pose_task.whole_image_box(decoded.size)
        crops = pose_task.crop_people(np.asarray(decoded.image), boxes, card, batch, flip=False)
        keypoints, scores = pose_task.decode_people(m.run(batch)[0], crops, card, flip=False)
        return PoseResponse(
            model=card.name,
            version=card.version,
            image=Size(width=decoded.size[0], height=decoded.size[1]),
            people=pose_task.people(boxes, keypoints, scores, card),
            skeleton=pose_task.skeleton_names(card),
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
