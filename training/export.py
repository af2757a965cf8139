"""Export a recipe's network to `models/<name>/<version>/{model.onnx, card.json}`.

The graph takes `uint8` RGB `(N, H, W, 3)` with a dynamic batch axis and normalises inside.
Outputs: classification `probabilities (N, C)` float32; segmentation `mask (N, H, W)` uint8 (argmax
in the graph at the input resolution); pose `heatmaps (N, K, H/4, W/4)` float32; detection
`boxes (N, A, 4)` (decoded, input pixels) and `scores (N, A, C)` float32 (NMS is the service's).
Before anything is written where the service looks, PyTorch and ONNX Runtime run the same images
and the export is refused if they differ beyond the task's tolerance.
"""

from __future__ import annotations

import datetime as dt
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from contract.card import (
    METADATA_KEY,
    Detection,
    InputSpec,
    ModelCard,
    OutputSpec,
    Parity,
    Preprocess,
    Weights,
    sha256_file,
)
from contract.repository import CARD_FILE, MODEL_FILE, write_version
from training.nets.models import Exported
from training.recipes import Recipe

OPSET = 17
PARITY_IMAGES = 2


class ParityError(RuntimeError):
    """ONNX Runtime's outputs differ from PyTorch's beyond the tolerance."""


@dataclass(frozen=True)
class _TaskOutput:
    name: str
    dtype: str
    parity_metric: str
    tolerance: float


_OUTPUTS = {
    "classification": _TaskOutput("probabilities", "float32", "max_abs_diff", 1e-4),
    # Argmax can flip where two classes tie to float precision: compare the share of equal pixels.
    "segmentation": _TaskOutput("mask", "uint8", "pixel_disagreement", 1e-3),
    "pose": _TaskOutput("heatmaps", "float32", "max_abs_diff", 1e-3),
    # Two outputs, `boxes` (input pixels) then `scores`; the figure is the larger of their differences.
    "detection": _TaskOutput("boxes", "float32", "max_abs_diff", 2e-3),
}
# Float16 weights and arithmetic (`--fp16`) are compared with PyTorch's float32 under these
# looser tolerances; the measured figure goes into the card as for float32.
_FP16_TOLERANCE = {"classification": 5e-3, "segmentation": 2e-2, "pose": 5e-3, "detection": 0.5}
_DETECTION_OUTPUTS = ("boxes", "scores")


def output_specs(recipe: Recipe) -> list[OutputSpec]:
    """The card's outputs: one per task, two for detection (boxes, and class scores per anchor)."""
    if recipe.task != "detection":
        spec = _OUTPUTS[recipe.task]
        return [OutputSpec(name=spec.name, dtype=spec.dtype, shape=output_shape(recipe))]  # type: ignore[arg-type]
    from training.nets.ssdlite import level_anchor_counts

    anchors = sum(level_anchor_counts(recipe.input_size))
    return [
        OutputSpec(
            name="boxes",
            dtype="float32",
            shape=[-1, anchors, 4],
            description="x1, y1, x2, y2 per anchor in input pixels, decoded and clipped to the input",
        ),
        OutputSpec(
            name="scores",
            dtype="float32",
            shape=[-1, anchors, recipe.num_outputs],
            description="softmax class scores per anchor, the background class dropped",
        ),
    ]


def output_shape(recipe: Recipe) -> list[int]:
    h, w = recipe.input_size
    if recipe.task == "classification":
        return [-1, recipe.num_outputs]
    if recipe.task == "segmentation":
        return [-1, h, w]
    hh, hw = recipe.heatmap_size or (h // 4, w // 4)
    return [-1, recipe.num_outputs, hh, hw]


def parity_images(recipe: Recipe, n: int = PARITY_IMAGES, seed: int = 0) -> np.ndarray:
    """Deterministic `(n, H, W, 3)` uint8 images with structure (gradients, blocks) and noise."""
    h, w = recipe.input_size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    images = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        base = np.stack([xx * 255 / w, yy * 255 / h, ((xx // 32 + yy // 32) % 2) * 200], axis=-1)
        images[i] = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
    return images


def _compare(task: str, reference: np.ndarray, onnx_out: np.ndarray) -> float:
    if task == "segmentation":
        return float(np.mean(reference != onnx_out))
    return float(np.max(np.abs(reference.astype(np.float64) - onnx_out.astype(np.float64))))


def export_model(
    model: nn.Module,
    recipe: Recipe,
    out: Path,
    weights: Weights,
    measured_metrics: dict[str, float] | None = None,
    fp16: bool = False,
    int8_images: Path | None = None,
) -> Path:
    """Export `model` (built by `recipe.build()`) as the next version under `out/<recipe>/`.

    With `fp16`, the float32 graph (checked first) is converted to float16 weights and arithmetic
    (`training.fp16`, same inputs and outputs) and checked again under a looser tolerance.
    With `int8_images` (a folder of images), the float32 graph is quantized to int8 (`training.int8`:
    calibrated on half the images, checked against float32 on the other half).
    Returns the version folder. Nothing appears under `out` unless parity holds.
    """
    if fp16 and int8_images is not None:
        raise ValueError("choose one of float16 and int8")
    spec = _OUTPUTS[recipe.task]
    names = [o.name for o in output_specs(recipe)]
    model = model.eval().cpu()
    wrapper = Exported(model).eval()
    images = parity_images(recipe)
    with torch.no_grad():
        predicted = wrapper(torch.from_numpy(images))
    references = [t.numpy() for t in (predicted if isinstance(predicted, tuple) else (predicted,))]

    with write_version(Path(out), recipe.name) as (staging, version):
        onnx_path = staging / MODEL_FILE
        with torch.no_grad(), warnings.catch_warnings():
            # Shapes are fixed at export by design (only the batch axis is dynamic).
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            # The TorchScript exporter is deprecated but exports in ~1 s against ~9 s for dynamo,
            # with the same parity here; revisit when it is removed.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                wrapper,
                (torch.from_numpy(images),),
                str(onnx_path),
                input_names=["image"],
                output_names=names,
                dynamic_axes={"image": {0: "batch"}, **{name: {0: "batch"} for name in names}},
                opset_version=OPSET,
                dynamo=False,  # exports in about a second with parity ~1e-7 (see REFERENCE.md)
            )
        _pin_output_shapes(onnx_path, [o.shape for o in output_specs(recipe)])
        tolerance = spec.tolerance
        value = _parity(recipe, onnx_path, images, references, tolerance)
        if fp16:
            from training.fp16 import convert_file_to_fp16

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the converter warns about every weight it clips
                convert_file_to_fp16(onnx_path, onnx_path)
            tolerance = _FP16_TOLERANCE[recipe.task]
            value = _parity(recipe, onnx_path, images, references, tolerance, "float16 ")

        card = _card(
            recipe,
            version,
            weights,
            measured_metrics or {},
            model,
            Parity(metric=spec.parity_metric, value=value, tolerance=tolerance, images=len(images)),
        )
        if fp16:
            card = card.model_copy(update={"precision": "float16"})
        if int8_images is not None:
            from training.int8 import quantize_file

            quantization = quantize_file(onnx_path, card, int8_images)
            card = card.model_copy(update={"precision": "int8", "quantization": quantization})
        proto = onnx.load(str(onnx_path))
        # The embedded copy cannot hold the hash of the file it lives in; card.json holds it.
        onnx.helper.set_model_props(proto, {METADATA_KEY: card.to_json()})
        onnx.save(proto, str(onnx_path))
        card = card.model_copy(update={"onnx_sha256": sha256_file(onnx_path)})
        (staging / CARD_FILE).write_text(card.to_json(), encoding="utf-8")
    return Path(out) / recipe.name / str(version)


def _parity(
    recipe: Recipe,
    onnx_path: Path,
    images: np.ndarray,
    references: list[np.ndarray],
    tolerance: float,
    kind: str = "",
) -> float:
    """PyTorch's outputs against ONNX Runtime's on `images`; raises `ParityError` past `tolerance`."""
    spec = _OUTPUTS[recipe.task]
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_outs = session.run(None, {"image": images})
    value = max(
        _compare(recipe.task, reference, onnx_out)
        for reference, onnx_out in zip(references, onnx_outs, strict=True)
    )
    if not value <= tolerance:
        raise ParityError(
            f"{recipe.name}: {spec.parity_metric} between PyTorch and the {kind}ONNX model is {value:.3g}, "
            f"over the tolerance {tolerance:g}; nothing was written"
        )
    return value


def _pin_output_shapes(onnx_path: Path, shapes: list[list[int]]) -> None:
    """Declare the outputs' static dims (the exporter leaves them symbolic after a resize)."""
    proto = onnx.load(str(onnx_path))
    for output, shape in zip(proto.graph.output, shapes, strict=True):
        for dim, size in zip(output.type.tensor_type.shape.dim, shape, strict=True):
            if size == -1:
                dim.dim_param = "batch"
            else:
                dim.dim_value = size
    onnx.save(proto, str(onnx_path))


def _card(
    recipe: Recipe,
    version: int,
    weights: Weights,
    measured: dict[str, float],
    model: nn.Module,
    parity: Parity,
) -> ModelCard:
    h, w = recipe.input_size
    if recipe.task == "classification":
        preprocess = Preprocess(resize_short=round(256 * h / 224))
    elif recipe.task == "segmentation":
        preprocess = Preprocess(keep_ratio=True, pad_value=0)
    elif recipe.task == "detection":
        preprocess = Preprocess(keep_ratio=False)  # mmdet's test Resize (320, 320), keep_ratio=False
    else:
        preprocess = Preprocess(box_padding=1.25)
    return ModelCard(
        name=recipe.name,
        version=version,
        task=recipe.task,
        recipe=recipe.name,
        dataset=weights.trained_on or recipe.dataset,
        input=InputSpec(height=h, width=w, mean=recipe.mean, std=recipe.std),
        outputs=output_specs(recipe),
        preprocess=preprocess,
        labels=recipe.labels(),
        palette=recipe.palette() if recipe.palette else None,
        skeleton=list(recipe.skeleton) if recipe.skeleton else None,
        flip_indices=list(recipe.flip_indices) if recipe.flip_indices else None,
        detection=detection_settings(recipe) if recipe.task == "detection" else None,
        weights=weights,
        published_metrics=recipe.published,
        measured_metrics=measured,
        parameters=sum(p.numel() for n, p in model.named_parameters() if not n.startswith("auxiliary_head.")),
        parity=parity,
        opset=OPSET,
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        onnx_sha256="",
    )


def detection_settings(recipe: Recipe) -> Detection:
    """The card's detection block: the recipe's test_cfg and the anchors per feature level."""
    from training.nets.ssdlite import level_anchor_counts

    test = recipe.detection_test
    assert test is not None, f"{recipe.name} is not a detection recipe"
    return Detection(
        score_threshold=test.score_threshold,
        iou_threshold=test.iou_threshold,
        max_detections=test.max_per_image,
        pre_nms_top_k=test.pre_nms_top_k,
        level_anchors=level_anchor_counts(recipe.input_size),
    )
