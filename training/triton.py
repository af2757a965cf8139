"""Write a Triton Inference Server model repository from ours (`python -m training export-triton`).

Ours: `models/<name>/<version>/{model.onnx, card.json}`. Triton's: `DIR/<name>/config.pbtxt`,
`DIR/<name>/<version>/model.onnx` and, for classifiers, `DIR/<name>/labels.txt`. The same ONNX
files serve in both (uint8 `(N, H, W, 3)` in, normalisation inside the graph), so a Triton client
sends exactly what a client of our `/v2` routes sends.

Every tensor in `config.pbtxt` is read from the ONNX graph itself, not from the card, so the config
cannot disagree with the file Triton loads. Dims leave out the batch axis, as Triton wants when
`max_batch_size > 0`.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import onnx

from contract import repository
from contract.card import ModelCard
from contract.repository import MODEL_FILE

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.pbtxt"
LABELS_FILE = "labels.txt"

# The service's own defaults (app.config.Settings: MAX_BATCH_SIZE=8, MAX_QUEUE_DELAY_MS=5), so
# Triton batches as our service does unless told otherwise. Not imported: `training` must not
# need pydantic-settings.
DEFAULT_MAX_BATCH_SIZE = 8
DEFAULT_MAX_QUEUE_DELAY_US = 5000

# onnx.TensorProto element types -> Triton's model_config.proto DataType.
_TRITON_TYPES: dict[int, str] = {
    onnx.TensorProto.BOOL: "TYPE_BOOL",
    onnx.TensorProto.UINT8: "TYPE_UINT8",
    onnx.TensorProto.UINT16: "TYPE_UINT16",
    onnx.TensorProto.UINT32: "TYPE_UINT32",
    onnx.TensorProto.UINT64: "TYPE_UINT64",
    onnx.TensorProto.INT8: "TYPE_INT8",
    onnx.TensorProto.INT16: "TYPE_INT16",
    onnx.TensorProto.INT32: "TYPE_INT32",
    onnx.TensorProto.INT64: "TYPE_INT64",
    onnx.TensorProto.FLOAT16: "TYPE_FP16",
    onnx.TensorProto.FLOAT: "TYPE_FP32",
    onnx.TensorProto.DOUBLE: "TYPE_FP64",
    onnx.TensorProto.BFLOAT16: "TYPE_BF16",
    onnx.TensorProto.STRING: "TYPE_STRING",
}


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output as Triton sees it: `dims` without the batch axis, -1 where dynamic."""

    name: str
    data_type: str
    dims: tuple[int, ...]


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


def read_signature(onnx_path: Path) -> Signature:
    """The graph's inputs and outputs. Raises `ValueError` if the first axis is not a dynamic batch."""
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    # Old exporters list initialisers among the inputs; they are weights, not tensors to send.
    weights = {init.name for init in graph.initializer}
    inputs = tuple(_tensor(v, onnx_path) for v in graph.input if v.name not in weights)
    outputs = tuple(_tensor(v, onnx_path) for v in graph.output)
    return Signature(inputs, outputs)


def _tensor(value: onnx.ValueInfoProto, onnx_path: Path) -> TensorSpec:
    tensor_type = value.type.tensor_type
    if tensor_type.elem_type not in _TRITON_TYPES:
        name = onnx.TensorProto.DataType.Name(tensor_type.elem_type)
        raise ValueError(f"{onnx_path}: {value.name} has type {name}, which Triton cannot take")
    dims = list(tensor_type.shape.dim)
    # Triton prepends the batch axis itself when max_batch_size > 0, so axis 0 must be that axis.
    if not dims or dims[0].HasField("dim_value"):
        raise ValueError(f"{onnx_path}: {value.name} has no dynamic batch axis (shape {_shape(dims)})")
    rest = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in dims[1:])
    return TensorSpec(value.name, _TRITON_TYPES[tensor_type.elem_type], rest)


def _shape(dims: list[onnx.TensorShapeProto.Dimension]) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param or "?" for d in dims]


def config_pbtxt(
    name: str,
    signature: Signature,
    max_batch_size: int,
    max_queue_delay_us: int,
    label_output: str | None = None,
    instance_count: int = 1,
    instance_kind: str = "KIND_GPU",
) -> str:
    """Triton's `config.pbtxt` (protobuf text format of `inference.ModelConfig`)."""
    lines = [
        f'name: "{name}"',
        'platform: "onnxruntime_onnx"',
        f"max_batch_size: {max_batch_size}",
        # Triton's default too; written out so nobody wonders which versions are served.
        "version_policy: { latest: { num_versions: 1 } }",
    ]
    for field, tensors in (("input", signature.inputs), ("output", signature.outputs)):
        lines.append(f"{field} [")
        for i, t in enumerate(tensors):
            lines += [
                "  {",
                f'    name: "{t.name}"',
                f"    data_type: {t.data_type}",
                f"    dims: [ {', '.join(str(d) for d in t.dims)} ]",
            ]
            if field == "output" and t.name == label_output:
                lines.append(f'    label_filename: "{LABELS_FILE}"')
            lines.append("  }," if i < len(tensors) - 1 else "  }")
        lines.append("]")
    lines += [
        "dynamic_batching {",
        f"  max_queue_delay_microseconds: {max_queue_delay_us}",
        "}",
        "instance_group [",
        "  {",
        f"    count: {instance_count}",
        f"    kind: {instance_kind}",
        "  }",
        "]",
    ]
    return "\n".join(lines) + "\n"


def _place(source: Path, target: Path) -> None:
    """Hard-link `source` at `target` (no copy of the weights), copying across file systems."""
    target.parent.mkdir(parents=True, exist_ok=True)
    # Unlink first: writing through an existing hard link would change our repository's file.
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def export_triton(
    models_dir: Path,
    out_dir: Path,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    max_queue_delay_us: int = DEFAULT_MAX_QUEUE_DELAY_US,
    instance_count: int = 1,
    instance_kind: str = "KIND_GPU",
) -> list[Path]:
    """Write `out_dir/<name>/` for every model in `models_dir`; returns those model folders.

    Every version is placed; the config describes the newest, and older versions whose graph
    differs from it are left out (with a warning) rather than served under the wrong config.
    Raises `ValueError` when `models_dir` holds no model.
    """
    if max_batch_size < 1:
        raise ValueError("max_batch_size must be at least 1 (our graphs all have a batch axis)")
    if max_queue_delay_us < 0:
        raise ValueError("max_queue_delay_us must not be negative")
    if instance_kind not in ("KIND_GPU", "KIND_CPU", "KIND_AUTO"):
        raise ValueError(f"instance_kind must be KIND_GPU, KIND_CPU or KIND_AUTO, not {instance_kind!r}")
    models_dir, out_dir = Path(models_dir), Path(out_dir)
    written: list[Path] = []
    for name, model_dir in repository.model_dirs(models_dir).items():
        found = repository.complete_versions(model_dir)
        if not found:
            continue
        newest = found[-1]
        versions = [v.version for v in reversed(found)]
        card = ModelCard.read(newest.card_file)
        signature = read_signature(newest.model_file)
        target = out_dir / name
        placed: set[str] = set()
        for version in versions:
            source = model_dir / str(version) / MODEL_FILE
            if version != versions[0] and read_signature(source) != signature:
                logger.warning(
                    "%s: version %d has another signature than %d; left out",
                    name,
                    version,
                    versions[0],
                )
                continue
            _place(source, target / str(version) / MODEL_FILE)
            placed.add(str(version))
        # A version left over from an earlier export would be served under this config: remove it.
        for stale in (
            p for p in target.iterdir() if repository.is_version_name(p.name) and p.name not in placed
        ):
            shutil.rmtree(stale)

        label_output = None
        if card.task == "classification":
            label_output = signature.outputs[0].name
            # One label per line, in output order: Triton's classification extension reads it so.
            (target / LABELS_FILE).write_text("\n".join(card.labels) + "\n", encoding="utf-8")
        config = config_pbtxt(
            name,
            signature,
            max_batch_size,
            max_queue_delay_us,
            label_output=label_output,
            instance_count=instance_count,
            instance_kind=instance_kind,
        )
        (target / CONFIG_FILE).write_text(config, encoding="utf-8")
        written.append(target)
    if not written:
        raise ValueError(f"no models (<name>/<version>/{MODEL_FILE}) in {models_dir}")
    return written
