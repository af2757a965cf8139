"""A model that costs nothing, with a real model's inputs and outputs: the front end's own ceiling.

    python -m bench.zero_model models/mobilenet-v2_8xb32_in1k/1 --out /tmp/zero-models
    python -m bench --models /tmp/zero-models --tasks classification --no-limit

writes `<out>/zero-cost-<name>/1` with the card of the given classifier (same input size,
preprocessing and labels) and a graph that reads the image and answers a fixed distribution: a
mean over the pixels and one (1 × classes) product, microseconds per image. Whatever the service
then spends per request is its own cost — HTTP, multipart, decode, copies, batching, JSON — which
is what limits how fast it could feed a GPU that runs the real network in no time.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from contract.card import ModelCard, sha256_file
from contract.repository import CARD_FILE, MODEL_FILE, write_version

OPSET = 17


def zero_cost_graph(card: ModelCard) -> onnx.ModelProto:
    """uint8 (N, H, W, 3) → the classifier's (N, classes) output, for almost no work."""
    if card.task != "classification":
        raise ValueError(f"{card.name}: the zero-cost model stands in for a classifier, not {card.task}")
    classes = card.outputs[0].shape[-1]
    h, w = card.input.height, card.input.width
    image = helper.make_tensor_value_info(card.input.name, TensorProto.UINT8, ["batch", h, w, 3])
    output = helper.make_tensor_value_info(card.outputs[0].name, TensorProto.FLOAT, ["batch", classes])
    weights = np.linspace(0.0, 1.0, classes, dtype=np.float32)[None, :]
    nodes = [
        helper.make_node("Cast", [card.input.name], ["pixels"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["pixels"], ["mean"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Unsqueeze", ["mean", "axis1"], ["column"]),
        helper.make_node("MatMul", ["column", "weights"], ["logits"]),
        helper.make_node("Softmax", ["logits"], [card.outputs[0].name], axis=1),
    ]
    initializers = [
        helper.make_tensor("axis1", TensorProto.INT64, [1], [1]),
        helper.make_tensor("weights", TensorProto.FLOAT, list(weights.shape), weights.ravel().tolist()),
    ]
    graph = helper.make_graph(nodes, "zero_cost", [image], [output], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8  # what onnxruntime builds of the last years all read (opset 17 needs 8)
    onnx.checker.check_model(model)
    return model


def write_zero_cost_model(source: Path, out: Path) -> Path:
    card = ModelCard.read(source / CARD_FILE)
    name = f"zero-cost-{card.name}"
    with write_version(out, name) as (staging, version):
        onnx.save(zero_cost_graph(card), str(staging / MODEL_FILE))
        zero = card.model_copy(
            update={
                "name": name,
                "version": version,
                "onnx_sha256": sha256_file(staging / MODEL_FILE),
                "opset": OPSET,
                "measured_metrics": {},
            }
        )
        zero = zero.model_copy(
            update={"weights": zero.weights.model_copy(update={"note": "zero-cost stand-in"})}
        )
        (staging / CARD_FILE).write_text(zero.to_json(), encoding="utf-8")
    return out / name / str(version)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.zero_model", description=__doc__.split("\n")[0])
    parser.add_argument("source", type=Path, help="a classifier's version folder (card.json + model.onnx)")
    parser.add_argument("--out", type=Path, required=True, help="model repository to write into")
    args = parser.parse_args(argv)
    print(write_zero_cost_model(args.source, args.out))


if __name__ == "__main__":
    main()
