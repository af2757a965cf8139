"""CPU int8: ONNX Runtime's static quantization (QDQ), calibrated on the user's images.

The images go through the service's own preprocessing (`contract.pipelines`, from the card), so
the ranges are calibrated on what the model will see. Half the images (every other file, sorted)
calibrate; the other half, held out, measure how often the int8 model agrees with the float32
one. A model beyond the task's tolerance is refused, as a float32 export beyond parity is.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from contract.card import ModelCard, Parity, Quantization
from contract.pipelines import ClassificationPipeline, PosePipeline, SegmentationPipeline

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
MIN_IMAGES = 8
MAX_IMAGES = 128
METHOD = "onnxruntime static QDQ: per-channel int8 weights, uint8 activations, MinMax calibration"

# (metric, tolerance) of the int8 model against the float32 one on the held-out images.
AGREEMENT = {
    "classification": ("top1_disagreement", 0.05),
    "segmentation": ("pixel_disagreement", 0.05),
    "pose": ("heatmap_max_abs_diff", 0.1),
}


class QuantizationError(RuntimeError):
    """The int8 model disagrees with the float32 one beyond the tolerance, or cannot be made."""


def calibration_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:MAX_IMAGES]
    if len(files) < MIN_IMAGES:
        raise QuantizationError(
            f"{folder}: int8 needs at least {MIN_IMAGES} images to calibrate on, found {len(files)}"
        )
    return files


def model_inputs(card: ModelCard, files: Sequence[Path]) -> np.ndarray:
    """(N, H, W, 3) uint8: each file as the service prepares it (pose: the whole image as one person)."""
    h, w = card.input.height, card.input.width
    rows = np.zeros((len(files), h, w, 3), np.uint8)
    max_pixels = 64_000_000
    prepare: Callable[[bytes, np.ndarray], object]
    if card.task == "classification":
        prepare = ClassificationPipeline(card, max_pixels).prepare
    elif card.task == "segmentation":
        prepare = SegmentationPipeline(card, max_pixels).prepare
    elif card.task == "pose":
        pose = PosePipeline(card, max_pixels)
        prepare = lambda data, row: pose.prepare(data, None, row[None])  # noqa: E731
    else:
        raise QuantizationError(
            f"int8 export supports classification, segmentation and pose, not {card.task}"
        )
    for row, path in zip(rows, files, strict=True):
        prepare(path.read_bytes(), row)
    return rows


def _agreement(task: str, reference: np.ndarray, quantized: np.ndarray) -> float:
    if task == "classification":
        return float(np.mean(reference.argmax(1) != quantized.argmax(1)))
    if task == "segmentation":
        return float(np.mean(reference != quantized))
    return float(np.max(np.abs(reference.astype(np.float64) - quantized.astype(np.float64))))


def _batch1_seconds(session: ort.InferenceSession, image: np.ndarray, runs: int) -> float:
    began = time.perf_counter()
    for _ in range(runs):
        session.run(None, {"image": image})
    return (time.perf_counter() - began) / runs


def quantize_file(onnx_path: Path, card: ModelCard, images_folder: Path, rounds: int = 3) -> Quantization:
    """Replace the float32 graph at `onnx_path` by its int8 one; raises `QuantizationError` (and
    leaves the file as it was) beyond the tolerance. Returns what goes into the card."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    files = calibration_files(images_folder)
    inputs = model_inputs(card, files)
    calibration, held_out = inputs[0::2], inputs[1::2]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.rows = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            row = next(self.rows, None)
            return None if row is None else {"image": row[None]}

    with tempfile.TemporaryDirectory() as tmp:
        prepared, quantized = Path(tmp) / "prepared.onnx", Path(tmp) / "int8.onnx"
        quant_pre_process(str(onnx_path), str(prepared))
        quantize_static(
            str(prepared),
            str(quantized),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        providers = ["CPUExecutionProvider"]
        fp32 = ort.InferenceSession(str(onnx_path), providers=providers)
        int8 = ort.InferenceSession(str(quantized), providers=providers)
        metric, tolerance = AGREEMENT[card.task]
        value = _agreement(
            card.task, fp32.run(None, {"image": held_out})[0], int8.run(None, {"image": held_out})[0]
        )
        if not value <= tolerance:
            raise QuantizationError(
                f"{card.name}: int8 {metric} against float32 is {value:.3g} on {len(held_out)} held-out images, "
                f"over the tolerance {tolerance:g}; nothing was written"
            )
        # Batch 1, the two sessions in turn, so both see the same machine state.
        one = held_out[:1]
        fp32.run(None, {"image": one})
        int8.run(None, {"image": one})
        ratios = [_batch1_seconds(fp32, one, 3) / _batch1_seconds(int8, one, 3) for _ in range(rounds)]
        shutil.move(quantized, onnx_path)  # the temporary folder may be on another file system
    return Quantization(
        method=METHOD,
        calibration_images=len(calibration),
        agreement=Parity(metric=metric, value=value, tolerance=tolerance, images=len(held_out)),
        speedup=round(statistics.median(ratios), 2),
    )
