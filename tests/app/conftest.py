"""Real servers for the service tests: `create_app` under uvicorn on a loopback port, in a thread."""

from __future__ import annotations

import io
import shutil
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from PIL import Image

from app.config import Settings
from app.connections import server_config
from app.main import create_app
from contract.card import ModelCard
from tests.app.tiny_models import write_detector

# Small batches and a single warm-up size keep each server's start to a few seconds on 2 cores.
TEST_DEFAULTS: dict[str, Any] = {"max_batch_size": 4, "warmup_batch_sizes": [1], "log_level": "warning"}


@dataclass
class RunningServer:
    url: str
    settings: Settings

    def client(self, timeout: float = 120.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)


@contextmanager
def serve(repository: Path, **overrides: Any) -> Iterator[RunningServer]:
    """Run the service until the block ends; wait until no model is still loading."""
    settings = Settings(model_repository=repository, **{**TEST_DEFAULTS, **overrides})
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = server_config(create_app(settings), settings, log_level="warning", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    running = RunningServer(f"http://127.0.0.1:{port}", settings)
    try:
        deadline = time.monotonic() + 300
        with running.client(timeout=5) as client:
            while True:
                if not thread.is_alive():
                    raise RuntimeError("the server thread died while starting")
                try:
                    states = [m["state"] for m in client.get("/readyz").json()["models"]]
                    if "loading" not in states:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError("models still loading after 300 s")
                time.sleep(0.1)
        yield running
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()


def model_names(repository: Path) -> dict[str, str]:
    """task → the name of the repository's model for that task."""
    names: dict[str, str] = {}
    for card_path in sorted(repository.glob("*/*/card.json")):
        card = ModelCard.read(card_path)
        names[card.task] = card.name
    return names


def read_card(repository: Path, name: str) -> tuple[ModelCard, Path]:
    version_dir = max((repository / name).iterdir(), key=lambda p: int(p.name))
    return ModelCard.read(version_dir / "card.json"), version_dir / "model.onnx"


@pytest.fixture(scope="session")
def names(model_repository: Path) -> dict[str, str]:
    return model_names(model_repository)


def scene(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A structured RGB test image (H, W, 3) uint8: gradients, blocks, a disc, some noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    image = np.stack(
        [xx * 255.0 / width, yy * 255.0 / height, ((xx // 37 + yy // 29) % 2) * 180.0 + 40], axis=-1
    )
    disc = (xx - width * 0.6) ** 2 + (yy - height * 0.4) ** 2 < (min(width, height) * 0.2) ** 2
    image[disc] = (230, 40, 60)
    return np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)


def encode(array: np.ndarray, fmt: str = "PNG", **params: Any) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format=fmt, **params)
    return out.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims `width` × `height` RGB pixels, with only a few bytes of data."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def metric_value(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus text page (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.fixture(scope="session")
def server(model_repository: Path) -> Iterator[RunningServer]:
    """The default-recipe server shared by the endpoint tests (bodies capped at 2 MB)."""
    with serve(model_repository, max_body_bytes=2_000_000) as running:
        yield running


@pytest.fixture(scope="session")
def pose_and_detector(
    model_repository: Path, names: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """The default pose model beside the tiny detector (fixed boxes, scores following brightness)."""
    repository = tmp_path_factory.mktemp("pose-and-detector")
    shutil.copytree(model_repository / names["pose"], repository / names["pose"])
    write_detector(repository)
    with serve(
        repository, default_pose_model=names["pose"], default_detection_model="tiny-detector"
    ) as running:
        yield running


@pytest.fixture
def client(server: RunningServer) -> Iterator[httpx.Client]:
    with server.client() as http:
        yield http


@pytest.fixture(scope="module")
def tiny_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository of one tiny classifier, for servers started with bounds of their own."""
    from tests.app.tiny_models import write_classifier

    repository = tmp_path_factory.mktemp("tiny-repository")
    write_classifier(repository, "tiny", 1)
    return repository
