"""Half-precision copies of exported models, for GPUs (`python -m training export ... --fp16`).

The graph keeps its interface: it still takes `uint8` images and answers the output types its card
names (float32 probabilities and heatmaps, a uint8 mask); only the weights and the arithmetic in
between become float16. Ops that lose too much in float16, or lack float16 kernels, stay float32
behind Cast nodes (`FP32_OPS`).

Untested on GPU hardware: on the CPU (where this was written) ONNX Runtime has few float16
kernels, so parity of the converted graph must be measured on the GPU it is meant for, with
`measure_parity` below, before the file is served.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Kept in float32: reductions whose sums overflow or lose precision in float16, and ops with
# coordinate arithmetic (Resize: the bilinear upsampling of segmentation logits), on top of
# onnxconverter-common's own list of ops without float16 kernels.
FP32_OPS = ("Resize", "Softmax", "ReduceMean", "ReduceSum", "GlobalAveragePool", "ArgMax", "TopK")


def convert_model_to_fp16(model: object, keep_fp32_ops: tuple[str, ...] = FP32_OPS) -> object:
    """An `onnx.ModelProto` → its float16 copy with the same inputs and outputs (types included)."""
    try:
        from onnxconverter_common import float16
    except ImportError as exc:  # an optional dependency of the training side
        raise RuntimeError(
            "fp16 export needs onnxconverter-common: pip install onnxconverter-common"
        ) from exc
    block = sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | set(keep_fp32_ops))
    import onnx

    assert isinstance(model, onnx.ModelProto)
    wanted = {o.name: o.type.tensor_type.elem_type for o in model.graph.output}
    converted = float16.convert_float_to_float16(model, keep_io_types=True, op_block_list=block)
    _retarget_casts(converted)
    _restore_output_types(converted, wanted)
    return converted


def _restore_output_types(model: object, wanted: dict[str, int]) -> None:
    """`keep_io_types` misses an output made by a kept-float32 op (the classifier's Softmax): it
    casts that back to float16. Cast every output that changed type back to what it was."""
    import onnx

    assert isinstance(model, onnx.ModelProto)
    for output in model.graph.output:
        elem_type = wanted.get(output.name)
        if elem_type is None or output.type.tensor_type.elem_type == elem_type:
            continue
        inner = output.name + "_fp16"
        for node in model.graph.node:
            node.output[:] = [inner if name == output.name else name for name in node.output]
            node.input[:] = [inner if name == output.name else name for name in node.input]
        model.graph.node.append(onnx.helper.make_node("Cast", [inner], [output.name], to=elem_type))
        output.type.tensor_type.elem_type = elem_type


def _retarget_casts(model: object) -> None:
    """The converter retypes a `Cast(to=FLOAT)` output (our uint8 → float normalisation) as float16
    but leaves the node's `to`: make the node agree with the type the rest of the graph now expects.
    """
    import onnx

    assert isinstance(model, onnx.ModelProto)
    half = {
        v.name for v in model.graph.value_info if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    }
    for node in model.graph.node:
        if node.op_type != "Cast" or node.output[0] not in half:
            continue
        for attribute in node.attribute:
            if attribute.name == "to" and attribute.i == onnx.TensorProto.FLOAT:
                attribute.i = onnx.TensorProto.FLOAT16


def convert_file_to_fp16(source: Path, target: Path) -> Path:
    """Write the float16 copy of the ONNX file `source` to `target` (one file, no external data)."""
    import onnx

    model = onnx.load(str(source))
    converted = convert_model_to_fp16(model)
    onnx.checker.check_model(converted)  # type: ignore[arg-type]
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(converted, str(target))  # type: ignore[arg-type]
    return target


def measure_parity(
    reference: Path, converted: Path, images: np.ndarray, providers: list[str] | None = None
) -> dict[str, float]:
    """Largest absolute difference per output between the two files on `images` (N, H, W, 3) uint8.

    Run it with the providers the model will be served with (e.g. `["CUDAExecutionProvider"]`);
    the CPU provider may refuse float16 graphs for want of kernels.
    """
    import onnxruntime as ort

    chosen = providers or ["CPUExecutionProvider"]
    sessions = [ort.InferenceSession(str(path), providers=chosen) for path in (reference, converted)]
    input_name = sessions[0].get_inputs()[0].name
    names = [output.name for output in sessions[0].get_outputs()]
    expected, got = (s.run(names, {input_name: images}) for s in sessions)
    return {
        name: float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
        for name, a, b in zip(names, expected, got, strict=True)
    }
