"""Tiny real ONNX classifiers written into a model repository: they load in milliseconds.

`write_classifier` makes `<name>/<version>/{model.onnx, card.json}`: (N, 32, 32, 3) uint8 in,
softmax probabilities over 6 classes out, with a bias per version so that versions answer
differently. The graph also looks the image's top-left red value up in a table of
`FAIL_FROM` entries: an image whose top-left pixel has red ≥ `FAIL_FROM` makes `session.run`
fail (Gather out of bounds), a real run-time failure for some inputs only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from contract.card import (
    InputSpec,
    ModelCard,
    OutputSpec,
    Parity,
    Preprocess,
    Weights,
    sha256_file,
)
from contract.repository import CARD_FILE, MODEL_FILE

SIZE = 32
LABELS = ["zero", "one", "two", "three", "four", "five"]
FAIL_FROM = 200


def _graph(version: int) -> onnx.ModelProto:
    weights = np.linspace(-1, 1, 3 * len(LABELS), dtype=np.float32).reshape(3, len(LABELS)) / 1024
    bias = np.zeros(len(LABELS), np.float32)
    bias[version % len(LABELS)] = 2.0  # each version prefers another class
    nodes = [
        helper.make_node("Cast", ["image"], ["pixels"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["pixels", "hw_axes"], ["means"], keepdims=0),
        helper.make_node("MatMul", ["means", "weights"], ["mixed"]),
        helper.make_node("Add", ["mixed", "bias"], ["biased"]),
        helper.make_node("Slice", ["image", "starts", "ends", "axes"], ["corner"]),
        helper.make_node("Reshape", ["corner", "flat"], ["corner_flat"]),
        helper.make_node("Cast", ["corner_flat"], ["index"], to=TensorProto.INT64),
        helper.make_node("Gather", ["table", "index"], ["looked_up"], axis=0),
        helper.make_node("Unsqueeze", ["looked_up", "one_axis"], ["column"]),
        helper.make_node("Add", ["biased", "column"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    initializers = [
        numpy_helper.from_array(np.array([1, 2], np.int64), "hw_axes"),
        numpy_helper.from_array(weights, "weights"),
        numpy_helper.from_array(bias, "bias"),
        numpy_helper.from_array(np.array([0, 0, 0], np.int64), "starts"),
        numpy_helper.from_array(np.array([1, 1, 1], np.int64), "ends"),
        numpy_helper.from_array(np.array([1, 2, 3], np.int64), "axes"),
        numpy_helper.from_array(np.array([-1], np.int64), "flat"),
        numpy_helper.from_array(np.zeros(FAIL_FROM, np.float32), "table"),
        numpy_helper.from_array(np.array([1], np.int64), "one_axis"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["batch", SIZE, SIZE, 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", len(LABELS)])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_classifier(repository: Path, name: str = "tiny", version: int = 1) -> Path:
    """Write version `version` of the tiny classifier; returns its folder."""
    folder = repository / name / str(version)
    folder.mkdir(parents=True)
    onnx.save(_graph(version), folder / MODEL_FILE)
    card = ModelCard(
        name=name,
        version=version,
        task="classification",
        recipe="tiny",
        dataset="none",
        input=InputSpec(height=SIZE, width=SIZE, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
        outputs=[OutputSpec(name="probabilities", dtype="float32", shape=[-1, len(LABELS)])],
        preprocess=Preprocess(resize_short=SIZE),
        labels=LABELS,
        weights=Weights(source="random-init", note="a test graph"),
        parameters=3 * len(LABELS) + len(LABELS),
        parity=Parity(metric="max_abs_diff", value=0.0, tolerance=0.0, images=0),
        opset=18,
        created="2026-01-01T00:00:00+00:00",
        onnx_sha256=sha256_file(folder / MODEL_FILE),
    )
    (folder / CARD_FILE).write_text(card.to_json())
    return folder


def favourite_class(version: int) -> str:
    """The label a version ranks first for a grey image."""
    return LABELS[version % len(LABELS)]


DETECTOR_SIZE = 64
DETECTOR_LABELS = ["person", "dog", "cat"]
# Five anchors' boxes in input pixels: two overlapping people (IoU 0.82), a dog (and a faint cat)
# in one box, a third person apart, and a fourth too faint for mmpose's person threshold (0.3).
DETECTOR_BOXES = np.array(
    [[8, 8, 40, 56], [10, 10, 42, 58], [30, 4, 60, 30], [44, 30, 62, 62], [0, 40, 20, 62]], np.float32
)
# Class scores of a white image; they scale with the image's mean brightness (black: nothing).
DETECTOR_SCORES = np.array(
    [[0.9, 0.01, 0.0], [0.8, 0.0, 0.0], [0.0, 0.7, 0.05], [0.6, 0.0, 0.0], [0.25, 0.0, 0.0]], np.float32
)


def _detector_graph() -> onnx.ModelProto:
    anchors, classes = DETECTOR_SCORES.shape
    nodes = [
        helper.make_node("Cast", ["image"], ["pixels"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["pixels", "all_axes"], ["mean"], keepdims=0),
        helper.make_node("Div", ["mean", "white"], ["brightness"]),
        helper.make_node("Reshape", ["brightness", "column"], ["per_image"]),
        helper.make_node("Mul", ["per_image", "base_scores"], ["scores"]),
        helper.make_node("Mul", ["per_image", "zero_boxes"], ["zeros"]),
        helper.make_node("Add", ["zeros", "anchor_boxes"], ["boxes"]),
    ]
    initializers = [
        numpy_helper.from_array(np.array([1, 2, 3], np.int64), "all_axes"),
        numpy_helper.from_array(np.array(255.0, np.float32), "white"),
        numpy_helper.from_array(np.array([-1, 1, 1], np.int64), "column"),
        numpy_helper.from_array(DETECTOR_SCORES[None], "base_scores"),
        numpy_helper.from_array(np.zeros((1, anchors, 4), np.float32), "zero_boxes"),
        numpy_helper.from_array(DETECTOR_BOXES[None], "anchor_boxes"),
    ]
    size = DETECTOR_SIZE
    graph = helper.make_graph(
        nodes,
        "tiny-detector",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["batch", size, size, 3])],
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["batch", anchors, 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", anchors, classes]),
        ],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_detector(repository: Path, name: str = "tiny-detector", version: int = 1) -> Path:
    """A detector of fixed boxes whose scores follow the image's brightness; returns its folder."""
    from contract.card import Detection

    folder = repository / name / str(version)
    folder.mkdir(parents=True)
    onnx.save(_detector_graph(), folder / MODEL_FILE)
    anchors, classes = DETECTOR_SCORES.shape
    card = ModelCard(
        name=name,
        version=version,
        task="detection",
        recipe="tiny",
        dataset="none",
        input=InputSpec(height=DETECTOR_SIZE, width=DETECTOR_SIZE, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
        outputs=[
            OutputSpec(name="boxes", dtype="float32", shape=[-1, anchors, 4]),
            OutputSpec(name="scores", dtype="float32", shape=[-1, anchors, classes]),
        ],
        preprocess=Preprocess(keep_ratio=False),
        labels=DETECTOR_LABELS,
        detection=Detection(
            score_threshold=0.02,
            iou_threshold=0.45,
            max_detections=200,
            pre_nms_top_k=1000,
            level_anchors=[anchors],
        ),
        weights=Weights(source="random-init", note="a test graph"),
        parameters=0,
        parity=Parity(metric="max_abs_diff", value=0.0, tolerance=0.0, images=0),
        opset=18,
        created="2026-01-01T00:00:00+00:00",
        onnx_sha256=sha256_file(folder / MODEL_FILE),
    )
    (folder / CARD_FILE).write_text(card.to_json())
    return folder
