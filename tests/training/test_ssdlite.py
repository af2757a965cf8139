"""SSDLite-MobileNetV2: mmdet's key layout loads strictly; anchors, box coder and outputs as mmdet's."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from training.checkpoints import CheckpointError, load_checkpoint
from training.nets.ssdlite import AnchorSpec, BoxCoder, SSDLiteDetector, feature_sizes, level_anchor_counts
from training.recipes import get_recipe

RECIPE = "ssdlite_mobilenetv2-scratch_8xb24-600e_coco"


def _conv_module(prefix: str, cin: int, cout: int, k: int, groups: int = 1) -> dict[str, tuple[int, ...]]:
    """mmcv ConvModule with BN: `conv` without bias (bias='auto' with a norm), `bn`."""
    return {
        f"{prefix}.conv.weight": (cout, cin // groups, k, k),
        f"{prefix}.bn.weight": (cout,),
        f"{prefix}.bn.bias": (cout,),
        f"{prefix}.bn.running_mean": (cout,),
        f"{prefix}.bn.running_var": (cout,),
        f"{prefix}.bn.num_batches_tracked": (),
    }


def mmdet_ssdlite_keys() -> dict[str, tuple[int, ...]]:
    """Keys and shapes of mmdet's SingleStageDetector for the config, written from mmdet's sources:
    mmdet/models/backbones/mobilenet_v2.py, mmdet/models/layers/inverted_residual.py,
    mmdet/models/necks/ssd_neck.py, mmdet/models/dense_heads/ssd_head.py, mmcv's ConvModule and
    DepthwiseSeparableConvModule."""
    keys: dict[str, tuple[int, ...]] = {}
    keys |= _conv_module("backbone.conv1", 3, 32, 3)
    arch = [
        [1, 16, 1, 1],
        [6, 24, 2, 2],
        [6, 32, 3, 2],
        [6, 64, 4, 2],
        [6, 96, 3, 1],
        [6, 160, 3, 2],
        [6, 320, 1, 1],
    ]
    cin = 32
    for i, (t, c, n, _) in enumerate(arch, start=1):
        for j in range(n):
            mid = round(cin * t)
            block = f"backbone.layer{i}.{j}"
            if t != 1:
                keys |= _conv_module(f"{block}.expand_conv", cin, mid, 1)
            keys |= _conv_module(f"{block}.depthwise_conv", mid, mid, 3, groups=mid)
            keys |= _conv_module(f"{block}.linear_conv", mid, c, 1)
            cin = c
    keys |= _conv_module("backbone.conv2", 320, 1280, 1)
    outs = (96, 1280, 512, 256, 256, 128)
    for i, c in enumerate(outs[2:]):
        layer = f"neck.extra_layers.{i}"
        keys |= _conv_module(f"{layer}.0", outs[1 + i], c // 2, 1)
        keys |= _conv_module(f"{layer}.1.depthwise_conv", c // 2, c // 2, 3, groups=c // 2)
        keys |= _conv_module(f"{layer}.1.pointwise_conv", c // 2, c, 1)
    for i, c in enumerate(outs):
        for branch, per_anchor in (("cls_convs", 81), ("reg_convs", 4)):
            keys |= _conv_module(f"bbox_head.{branch}.{i}.0", c, c, 3, groups=c)
            keys[f"bbox_head.{branch}.{i}.1.weight"] = (6 * per_anchor, c, 1, 1)
            keys[f"bbox_head.{branch}.{i}.1.bias"] = (6 * per_anchor,)
    return keys


def _mmdet_file(path: Path, keys: dict[str, tuple[int, ...]]) -> Path:
    generator = torch.Generator().manual_seed(0)
    state = {
        k: torch.tensor(7) if not shape else torch.randn(shape, generator=generator)
        for k, shape in keys.items()
    }
    # mmengine's Runner.save_checkpoint layout (meta + state_dict), mmdet 3.x key names.
    torch.save({"meta": {"mmdet_version": "3.3.0", "epoch": 120}, "state_dict": state}, path)
    return path


def test_mmdet_key_layout_loads_strictly(tmp_path: Path) -> None:
    keys = mmdet_ssdlite_keys()
    model = get_recipe(RECIPE).build()
    checkpoint = load_checkpoint(model, str(_mmdet_file(tmp_path / "ssdlite.pth", keys)))
    assert checkpoint.layout == "openmmlab" and len(checkpoint.sha256) == 64
    own = model.state_dict()
    assert set(own) == set(keys)
    loaded = torch.load(tmp_path / "ssdlite.pth", weights_only=True)["state_dict"]
    assert torch.equal(own["bbox_head.cls_convs.5.1.weight"], loaded["bbox_head.cls_convs.5.1.weight"])


def test_a_missing_head_key_is_named(tmp_path: Path) -> None:
    keys = mmdet_ssdlite_keys()
    del keys["bbox_head.reg_convs.3.1.bias"]
    with pytest.raises(CheckpointError, match=r"bbox_head\.reg_convs\.3\.1\.bias"):
        load_checkpoint(get_recipe(RECIPE).build(), str(_mmdet_file(tmp_path / "partial.pth", keys)))


def test_norms_are_the_configs() -> None:
    norms = [m for m in get_recipe(RECIPE).build().modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(m.eps == 1e-3 and m.momentum == 0.03 for m in norms)


def test_anchor_grid_matches_ssd_anchor_generator_at_320() -> None:
    spec = AnchorSpec()
    assert feature_sizes((320, 320)) == [(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]
    assert level_anchor_counts((320, 320)) == [2400, 600, 150, 54, 24, 6]
    anchors = spec.grid(feature_sizes((320, 320)))
    assert anchors.shape == (3234, 4)
    # Level 0, cell (0, 0): centre (8, 8); ratio 1 of min size 48, then 1/2, 2, 1/3, 3, then √(48·100).
    first = anchors[:6]
    torch.testing.assert_close(first[0], torch.tensor([-16.0, -16.0, 32.0, 32.0]))
    w, h = 48 * math.sqrt(2), 48 / math.sqrt(2)  # ratio 1/2: h = 48·√0.5, w = 48 / √0.5
    torch.testing.assert_close(first[1], torch.tensor([8 - w / 2, 8 - h / 2, 8 + w / 2, 8 + h / 2]))
    side = math.sqrt(48 * 100)
    torch.testing.assert_close(
        first[5], torch.tensor([8 - side / 2, 8 - side / 2, 8 + side / 2, 8 + side / 2])
    )
    # Next cell to the right: shifted by the stride.
    torch.testing.assert_close(anchors[6], first[0] + torch.tensor([16.0, 0.0, 16.0, 0.0]))
    # Last level: one cell, centre 160, stride 320.
    torch.testing.assert_close(anchors[-6], torch.tensor([8.0, 8.0, 312.0, 312.0]))


def test_box_coder_round_trips_and_clips() -> None:
    coder = BoxCoder()
    anchors = torch.tensor([[10.0, 10.0, 50.0, 90.0], [100.0, 100.0, 140.0, 120.0]])
    boxes = torch.tensor([[12.0, 8.0, 60.0, 80.0], [90.0, 95.0, 150.0, 130.0]])
    deltas = coder.encode(anchors, boxes)
    torch.testing.assert_close(coder.decode(anchors, deltas, (320, 320)), boxes)
    # stds scale the targets: a centre shift of a tenth of the width is a target of 1.
    shifted = anchors[:1] + torch.tensor([4.0, 0.0, 4.0, 0.0])
    torch.testing.assert_close(coder.encode(anchors[:1], shifted), torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    huge = coder.decode(anchors[:1], torch.tensor([[0.0, 0.0, 100.0, 100.0]]), (64, 48))
    assert huge.tolist() == [[0.0, 0.0, 48.0, 64.0]]


def test_predict_gives_boxes_in_pixels_and_scores_without_background() -> None:
    model = get_recipe(RECIPE).build().eval()
    assert isinstance(model, SSDLiteDetector)
    images = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    with torch.no_grad():
        boxes, scores = model.predict(images)
    anchors = sum(level_anchor_counts((64, 64)))
    assert boxes.shape == (2, anchors, 4) and scores.shape == (2, anchors, 80)
    assert float(boxes.min()) >= 0 and float(boxes.max()) <= 64
    assert float(scores.sum(-1).max()) < 1.0  # the background's share is dropped
