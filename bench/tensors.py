"""Tensor requests for `/v2/models/{m}/infer`: the bench's JPEGs preprocessed as the service would,
sent as the Open Inference Protocol's binary extension (a JSON header, then the raw uint8 rows),
answered in binary too. What such a request costs the service is HTTP, the protocol and
`session.run`: no decoding. Its limit is `session.run` alone (`bench.limit.measure_run_limit`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from contract.card import ModelCard
from contract.pipelines import ClassificationPipeline

HEADER_LENGTH = "Inference-Header-Content-Length"


def tensor_body(card: ModelCard, row: np.ndarray) -> tuple[bytes, int]:
    """One image (H, W, 3) uint8 → (body, JSON header length) asking for binary outputs."""
    header = {
        "inputs": [
            {
                "name": card.input.name,
                "shape": [1, *row.shape],
                "datatype": "UINT8",
                "parameters": {"binary_data_size": row.nbytes},
            }
        ],
        "outputs": [{"name": output.name, "parameters": {"binary_data": True}} for output in card.outputs],
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    return head + np.ascontiguousarray(row).tobytes(), len(head)


def write_tensor_bodies(
    card: ModelCard, images: list[bytes], max_pixels: int, folder: Path
) -> tuple[list[str], dict[str, str]]:
    """The images as tensor request bodies in `folder`; returns their paths and the headers to send.

    Every body has the same JSON header (same shape), so one `Inference-Header-Content-Length`.
    """
    if card.task != "classification":
        raise ValueError(f"tensor requests are built for a classifier, not {card.task}")
    pipeline = ClassificationPipeline(card, max_pixels)
    folder.mkdir(parents=True, exist_ok=True)
    paths, length = [], 0
    for index, data in enumerate(images):
        row = np.empty((card.input.height, card.input.width, 3), np.uint8)
        pipeline.prepare(data, row)
        body, length = tensor_body(card, row)
        path = folder / f"{index:02d}.bin"
        path.write_bytes(body)
        paths.append(str(path))
    headers = {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(length)}
    return paths, headers
