"""The model card: the whole contract between `training/` (which writes it) and `app/` (which reads it).

`models/<name>/<version>/card.json` sits beside `model.onnx` (`contract.repository`); the same JSON is stored in the ONNX
file's `metadata_props` under the key `model_card`. The service learns everything about a model
from this card and never imports torch, onnx or `training/`.

This module depends on pydantic alone, so both halves can import it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

METADATA_KEY = "model_card"
SCHEMA_VERSION = 1

Task = Literal["classification", "segmentation", "pose", "detection"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class InputSpec(_Frozen):
    """The graph's one input: `uint8` RGB images `(N, height, width, 3)`, normalised inside."""

    name: str = "image"
    height: int
    width: int
    layout: Literal["NHWC"] = "NHWC"
    dtype: Literal["uint8"] = "uint8"
    color: Literal["RGB"] = "RGB"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class OutputSpec(_Frozen):
    """One graph output. `shape` uses -1 for the dynamic batch axis."""

    name: str
    dtype: Literal["float32", "uint8", "int64"]
    shape: list[int]
    description: str = ""


class Preprocess(_Frozen):
    """How the service turns an arbitrary image into the input canvas (the recipe's test pipeline).

    - classification: resize the short side to `resize_short` (bilinear), centre-crop the input size.
    - segmentation: resize to fit the canvas keeping the aspect ratio, pad bottom/right with
      `pad_value`; the padding is cut from the mask before it is scaled back.
    - pose: each person box becomes a crop of the box centre with scale `box_padding` × (w, h),
      widened to the input's aspect ratio, warped affinely to the input size.
    - detection: resize the whole image to the input size, aspect ratio not kept (`keep_ratio`
      False, mmdet's SSD test pipeline); boxes scale back axis by axis.
    """

    resize_short: int | None = None
    keep_ratio: bool = True
    pad_value: int = 0
    box_padding: float | None = None


class Detection(_Frozen):
    """A detector's test-time settings (mmdet's `test_cfg`); requests may override the first three.

    The graph answers every anchor's box and class scores; the service keeps the (anchor, class)
    pairs above `score_threshold`, at most `pre_nms_top_k` per head level (`level_anchors` counts
    each level's anchors, in output order), suppresses overlaps above `iou_threshold` class by
    class, and answers the `max_detections` highest.
    """

    score_threshold: float
    iou_threshold: float
    max_detections: int
    pre_nms_top_k: int
    level_anchors: list[int]


class Weights(_Frozen):
    """Where the exported weights came from, so a card never overstates what a model can do."""

    # openmmlab / torchvision: the file proved (by its hash) to be a published release; trained: a
    # training run of this project; imported: any other checkpoint file, of unknown training.
    source: Literal["random-init", "openmmlab", "torchvision", "trained", "imported"]
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    trained_on: str | None = Field(default=None, description="data set the weights were trained on")
    note: str = ""


class Parity(_Frozen):
    """PyTorch against ONNX Runtime on the same images, measured at export."""

    metric: str
    value: float
    tolerance: float
    images: int


class Quantization(_Frozen):
    """How an int8 model was made, and how far it stays from its float32 graph (`--int8`)."""

    method: str
    calibration_images: int
    agreement: Parity = Field(description="the int8 model against the float32 one, on held-out images")
    speedup: float = Field(description="float32 time / int8 time, session.run at batch 1, measured at export")


class ModelCard(_Frozen):
    schema_version: int = SCHEMA_VERSION
    name: str
    version: int
    task: Task
    recipe: str
    dataset: str
    input: InputSpec
    outputs: list[OutputSpec]
    preprocess: Preprocess
    labels: list[str] = Field(description="class names, or keypoint names for pose")
    palette: list[tuple[int, int, int]] | None = None
    skeleton: list[tuple[int, int]] | None = None
    flip_indices: list[int] | None = None
    detection: Detection | None = None
    weights: Weights
    published_metrics: dict[str, float] = Field(default_factory=dict)
    measured_metrics: dict[str, float] = Field(default_factory=dict)
    parameters: int
    parity: Parity
    precision: Literal["float32", "float16", "int8"] = Field(
        default="float32",
        description="of the weights and arithmetic inside; inputs and outputs keep their types",
    )
    quantization: Quantization | None = None
    opset: int
    created: str
    onnx_sha256: str

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def read(cls, path: Path) -> ModelCard:
        return cls.model_validate_json(Path(path).read_text(encoding="utf-8"))


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
