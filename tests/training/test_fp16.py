"""Half-precision copies keep the model's interface and stay close to the float32 model."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from training.fp16 import convert_file_to_fp16, measure_parity

pytest.importorskip("onnxconverter_common")


def test_fp16_copy_keeps_inputs_outputs_and_answers(model_repository: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    source = next(model_repository.glob("mobilenet-v2_8xb32_in1k/*/model.onnx"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the converter warns about every weight it clips
        target = convert_file_to_fp16(source, tmp_path / "model.onnx")
    original, converted = (
        ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (source, target)
    )
    signature = [(v.name, v.type) for v in (*original.get_inputs(), *original.get_outputs())]
    assert [(v.name, v.type) for v in (*converted.get_inputs(), *converted.get_outputs())] == signature
    assert target.stat().st_size < 0.6 * source.stat().st_size
    images = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    assert measure_parity(source, target, images)["probabilities"] < 1e-3


def test_export_fp16_writes_a_float16_model_whose_card_says_so(tmp_path: Path) -> None:
    """`python -m training export --fp16`: half the weights' bytes, parity measured under its tolerance."""
    import subprocess
    import sys

    from contract.card import ModelCard

    recipe = "mobilenet-v2_8xb32_in1k"
    for flags in ([], ["--fp16"]):
        subprocess.run(
            [sys.executable, "-m", "training", "export", recipe, "--out", str(tmp_path), *flags],
            check=True,
            capture_output=True,
            timeout=300,
        )
    full, half = (ModelCard.read(tmp_path / recipe / v / "card.json") for v in ("1", "2"))
    assert (full.precision, half.precision) == ("float32", "float16")
    assert half.parity.tolerance > full.parity.tolerance
    assert half.parity.value <= half.parity.tolerance
    sizes = [(tmp_path / recipe / v / "model.onnx").stat().st_size for v in ("1", "2")]
    assert sizes[1] < 0.6 * sizes[0]
