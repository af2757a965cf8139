"""SSDLite on MobileNetV2 (Sandler et al., 2018, §6.2), module for module as mmdet's
`configs/ssd/ssdlite_mobilenetv2-scratch_8xb24-600e_coco.py` builds it, so mmdet's released
checkpoint loads with strict key matching.

- `backbone.`: mmdet's MobileNetV2. Same stages as `training.nets.mobilenet_v2`, but mmdet's
  `InvertedResidual` names its convs `expand_conv`, `depthwise_conv`, `linear_conv` (mmpretrain's
  say `conv.0/1/2`), so the blocks are mmdet's own here. `out_indices=(4, 7)` count
  `[layer1 … layer7, conv2]` from 0: layer5 (96 ch, stride 16) and conv2 (1280 ch, stride 32).
- `neck.extra_layers.{0-3}`: a 1×1 ConvModule to half the channels, then a depthwise-separable
  3×3 of stride 2 (`depthwise_conv`, `pointwise_conv`): 512, 256, 256, 128 channels.
- `bbox_head.{cls,reg}_convs.{0-5}`: a 3×3 depthwise ConvModule, then a 1×1 conv with bias to
  6 anchors × 81 (80 classes + background, last) or × 4 deltas.
- Every BatchNorm has eps 0.001, momentum 0.03; every activation is ReLU6.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from training.nets.mobilenet_v2 import ARCH_SETTINGS, ConvModule, make_divisible
from training.nets.models import Normalize

BN_EPS = 1e-3
BN_MOMENTUM = 0.03


@dataclass(frozen=True)
class AnchorSpec:
    """mmdet's `SSDAnchorGenerator` settings: per level a stride, a min and max size, ratios."""

    strides: tuple[int, ...] = (16, 32, 64, 107, 160, 320)
    min_sizes: tuple[float, ...] = (48, 100, 150, 202, 253, 304)
    max_sizes: tuple[float, ...] = (100, 150, 202, 253, 304, 320)
    ratios: tuple[float, ...] = (2, 3)

    @property
    def per_location(self) -> int:
        """Anchors per feature-map cell: ratio 1, each ratio r as 1/r and r, and √(min·max)."""
        return 2 + 2 * len(self.ratios)

    def base_anchors(self, level: int) -> torch.Tensor:
        """(per_location, 4) x1, y1, x2, y2 around the cell centre (stride/2, stride/2)."""
        ratios = [1.0]
        for r in self.ratios:
            ratios += [1 / r, r]
        sizes = [(self.min_sizes[level], r) for r in ratios]
        sizes.append((math.sqrt(self.min_sizes[level] * self.max_sizes[level]), 1.0))
        center = self.strides[level] / 2.0
        rows = []
        for size, ratio in sizes:
            h_ratio = math.sqrt(ratio)
            w, h = size / h_ratio, size * h_ratio
            rows.append([center - 0.5 * w, center - 0.5 * h, center + 0.5 * w, center + 0.5 * h])
        return torch.tensor(rows, dtype=torch.float32)

    def grid(self, feature_sizes: Sequence[tuple[int, int]]) -> torch.Tensor:
        """All anchors (A, 4) in input pixels, in the head's output order: level, row, column, anchor."""
        levels = []
        for level, (h, w) in enumerate(feature_sizes):
            stride = self.strides[level]
            ys, xs = torch.meshgrid(
                torch.arange(h, dtype=torch.float32) * stride,
                torch.arange(w, dtype=torch.float32) * stride,
                indexing="ij",
            )
            shifts = torch.stack([xs, ys, xs, ys], dim=-1).reshape(-1, 1, 4)
            levels.append((shifts + self.base_anchors(level)[None]).reshape(-1, 4))
        return torch.cat(levels)


@dataclass(frozen=True)
class BoxCoder:
    """mmdet's `DeltaXYWHBBoxCoder` with means 0 and the config's stds; deltas clamped at |log(16/1000)|."""

    stds: tuple[float, float, float, float] = (0.1, 0.1, 0.2, 0.2)
    wh_ratio_clip: float = 16 / 1000

    def encode(self, anchors: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Targets (…, 4) of `boxes` (x1, y1, x2, y2) relative to `anchors`."""
        pw, ph = anchors[..., 2] - anchors[..., 0], anchors[..., 3] - anchors[..., 1]
        px, py = (anchors[..., 0] + anchors[..., 2]) * 0.5, (anchors[..., 1] + anchors[..., 3]) * 0.5
        gw, gh = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
        gx, gy = (boxes[..., 0] + boxes[..., 2]) * 0.5, (boxes[..., 1] + boxes[..., 3]) * 0.5
        deltas = torch.stack([(gx - px) / pw, (gy - py) / ph, torch.log(gw / pw), torch.log(gh / ph)], -1)
        return deltas / deltas.new_tensor(self.stds)

    def decode(self, anchors: torch.Tensor, deltas: torch.Tensor, max_hw: tuple[int, int]) -> torch.Tensor:
        """Boxes (…, 4) x1, y1, x2, y2 from `deltas`, clipped to the (H, W) input as mmdet clips."""
        d = deltas * deltas.new_tensor(self.stds)
        max_ratio = abs(math.log(self.wh_ratio_clip))
        dwh = d[..., 2:].clamp(-max_ratio, max_ratio)
        pxy = (anchors[..., :2] + anchors[..., 2:]) * 0.5
        pwh = anchors[..., 2:] - anchors[..., :2]
        gxy = pxy + pwh * d[..., :2]
        gwh = pwh * dwh.exp()
        boxes = torch.cat([gxy - gwh * 0.5, gxy + gwh * 0.5], dim=-1)
        h, w = max_hw
        limit = boxes.new_tensor([w, h, w, h])
        return torch.minimum(boxes.clamp(min=0), limit)


def _set_norms(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps, m.momentum = BN_EPS, BN_MOMENTUM


class InvertedResidual(nn.Module):
    """mmdet's `InvertedResidual` (no SE): `expand_conv` (if t ≠ 1), `depthwise_conv`, `linear_conv`."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        mid = round(in_channels * expand_ratio)
        self.with_res_shortcut = stride == 1 and in_channels == out_channels
        self.expand_conv = ConvModule(in_channels, mid, 1) if expand_ratio != 1 else None
        self.depthwise_conv = ConvModule(mid, mid, 3, stride, padding=1, groups=mid)
        self.linear_conv = ConvModule(mid, out_channels, 1, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.expand_conv(x) if self.expand_conv is not None else x
        out = self.linear_conv(self.depthwise_conv(out))
        return x + out if self.with_res_shortcut else out


class MobileNetV2(nn.Module):
    """mmdet's MobileNetV2 backbone; `out_indices` count `[layer1 … layer7, conv2]` from 0."""

    def __init__(self, out_indices: Sequence[int] = (4, 7), widen_factor: float = 1.0) -> None:
        super().__init__()
        self.out_indices = tuple(out_indices)
        in_channels = make_divisible(32 * widen_factor, 8)
        self.conv1 = ConvModule(3, in_channels, 3, stride=2, padding=1)
        self.layer_names = []
        for i, (t, c, n, s) in enumerate(ARCH_SETTINGS, start=1):
            out_channels = make_divisible(c * widen_factor, 8)
            blocks = [
                InvertedResidual(in_channels if j == 0 else out_channels, out_channels, s if j == 0 else 1, t)
                for j in range(n)
            ]
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
            self.layer_names.append(f"layer{i}")
            in_channels = out_channels
        self.conv2 = ConvModule(in_channels, int(1280 * widen_factor) if widen_factor > 1.0 else 1280, 1)
        self.layer_names.append("conv2")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.conv1(x)
        outs = []
        for i, name in enumerate(self.layer_names):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)


class DepthwiseSeparableConvModule(nn.Module):
    """mmcv's: a depthwise ConvModule then a 1×1 pointwise ConvModule, each with BN and ReLU6."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int
    ) -> None:
        super().__init__()
        self.depthwise_conv = ConvModule(
            in_channels, in_channels, kernel_size, stride, padding=padding, groups=in_channels
        )
        self.pointwise_conv = ConvModule(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


class SSDNeck(nn.Module):
    """mmdet's `SSDNeck(use_depthwise=True, l2_norm_scale=None)`: the inputs, then 4 extra levels."""

    def __init__(
        self,
        in_channels: Sequence[int] = (96, 1280),
        out_channels: Sequence[int] = (96, 1280, 512, 256, 256, 128),
        level_strides: Sequence[int] = (2, 2, 2, 2),
        level_paddings: Sequence[int] = (1, 1, 1, 1),
    ) -> None:
        super().__init__()
        self.extra_layers = nn.ModuleList()
        extra = list(out_channels[len(in_channels) :])
        for i, (channels, stride, padding) in enumerate(
            zip(extra, level_strides, level_paddings, strict=True)
        ):
            previous = out_channels[len(in_channels) - 1 + i]
            self.extra_layers.append(
                nn.Sequential(
                    ConvModule(previous, channels // 2, 1),
                    DepthwiseSeparableConvModule(channels // 2, channels, 3, stride, padding),
                )
            )

    def forward(self, inputs: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        outs = list(inputs)
        feature = outs[-1]
        for layer in self.extra_layers:
            feature = layer(feature)
            outs.append(feature)
        return outs


class SSDHead(nn.Module):
    """mmdet's `SSDHead(use_depthwise=True)`: per level a 3×3 depthwise ConvModule and a 1×1 conv."""

    def __init__(
        self, in_channels: Sequence[int], num_classes: int = 80, anchors_per_location: int = 6
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.cls_convs = nn.ModuleList()
        self.reg_convs = nn.ModuleList()
        for c in in_channels:
            for convs, outputs in ((self.cls_convs, num_classes + 1), (self.reg_convs, 4)):
                convs.append(
                    nn.Sequential(
                        ConvModule(c, c, 3, padding=1, groups=c),
                        nn.Conv2d(c, anchors_per_location * outputs, 1),
                    )
                )

    def forward(self, features: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per level: class logits (N, A·81, h, w) and box deltas (N, A·4, h, w)."""
        cls_scores = [conv(f) for conv, f in zip(self.cls_convs, features, strict=True)]
        bbox_preds = [conv(f) for conv, f in zip(self.reg_convs, features, strict=True)]
        return cls_scores, bbox_preds


class SSDLiteDetector(nn.Module):
    """mmdet's `SingleStageDetector`: `backbone.`, `neck.`, `bbox_head.`; uint8 NHWC images in."""

    def __init__(
        self,
        normalize: Normalize,
        num_classes: int = 80,
        anchors: AnchorSpec | None = None,
        coder: BoxCoder | None = None,
    ) -> None:
        super().__init__()
        self.anchor_spec = anchors or AnchorSpec()
        self.coder = coder or BoxCoder()
        self.num_classes = num_classes
        self.normalize = normalize
        self.backbone = MobileNetV2()
        self.neck = SSDNeck()
        self.bbox_head = SSDHead((96, 1280, 512, 256, 256, 128), num_classes, self.anchor_spec.per_location)
        _set_norms(self)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits (N, A, classes + 1, background last) and box deltas (N, A, 4), all levels."""
        cls_scores, bbox_preds = self.bbox_head(self.neck(self.backbone(self.normalize(images))))
        n = images.shape[0]
        logits = torch.cat(
            [s.permute(0, 2, 3, 1).reshape(n, -1, self.num_classes + 1) for s in cls_scores], 1
        )
        deltas = torch.cat([b.permute(0, 2, 3, 1).reshape(n, -1, 4) for b in bbox_preds], 1)
        return logits, deltas

    def anchors(self, input_hw: tuple[int, int]) -> torch.Tensor:
        """(A, 4) anchors for an input of this size (the feature sizes follow from the strides)."""
        return self.anchor_spec.grid(feature_sizes(input_hw))

    def predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Boxes (N, A, 4) x1, y1, x2, y2 in input pixels and class scores (N, A, classes), softmax
        over classes + background with the background dropped, as mmdet's head scores them."""
        logits, deltas = self(images)
        hw = (int(images.shape[1]), int(images.shape[2]))
        anchors = self.anchors(hw).to(deltas.device)
        boxes = self.coder.decode(anchors[None], deltas, hw)
        scores = F.softmax(logits, dim=-1)[..., : self.num_classes]
        return boxes, scores


def feature_sizes(input_hw: tuple[int, int], levels: int = 6) -> list[tuple[int, int]]:
    """(h, w) of each head level: stride 16 and 32 from the backbone, then four stride-2 3×3 convs.

    Every stride-2 conv here has kernel 3, padding 1, so it maps n to ⌈n / 2⌉.
    """
    h, w = input_hw
    sizes = []
    for _ in range(4):  # conv1, layer2, layer3, layer4 stride 2: stride 16 at layer5
        h, w = (h + 1) // 2, (w + 1) // 2
    sizes.append((h, w))
    for _ in range(levels - 1):
        h, w = (h + 1) // 2, (w + 1) // 2
        sizes.append((h, w))
    return sizes


def level_anchor_counts(input_hw: tuple[int, int], per_location: int = 6) -> list[int]:
    """Anchors per head level, in output order (320×320: 2400, 600, 150, 54, 24, 6)."""
    return [h * w * per_location for h, w in feature_sizes(input_hw)]


def init_ssdlite(model: SSDLiteDetector, generator: torch.Generator | None = None) -> None:
    """The config's init: backbone and neck convs TruncNormal(std 0.03), head convs Normal(std 0.001),
    biases 0, BatchNorm 1 and 0."""
    for part, std, truncated in (
        (model.backbone, 0.03, True),
        (model.neck, 0.03, True),
        (model.bbox_head, 0.001, False),
    ):
        for m in part.modules():
            if isinstance(m, nn.Conv2d):
                if truncated:
                    nn.init.trunc_normal_(m.weight, 0.0, std, generator=generator)
                else:
                    nn.init.normal_(m.weight, 0.0, std, generator=generator)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(n, m) IoU of x1, y1, x2, y2 boxes (mmdet's `bbox_overlaps`, no pixel offset)."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).prod(-1)
    return inter / (area_a[:, None] + area_b[None] - inter).clamp(min=1e-6)


def assign(anchors: torch.Tensor, gt_boxes: torch.Tensor, pos_iou: float = 0.5) -> torch.Tensor:
    """mmdet's `MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0, gt_max_assign_all=False)`.

    Returns per anchor the index of its ground-truth box, or -1 (background). An anchor whose best
    IoU reaches 0.5 takes that box; then each box takes the one anchor that overlaps it most.
    """
    assigned = torch.full((len(anchors),), -1, dtype=torch.long, device=anchors.device)
    if len(gt_boxes) == 0:
        return assigned
    overlaps = box_iou(gt_boxes, anchors)  # (gts, anchors)
    best_iou, best_gt = overlaps.max(dim=0)
    positive = best_iou >= pos_iou
    assigned[positive] = best_gt[positive]
    for gt, anchor in enumerate(overlaps.argmax(dim=1).tolist()):  # in gt order, as mmdet's loop
        assigned[anchor] = gt
    return assigned


def ssd_loss(
    model: nn.Module,
    images: torch.Tensor,
    gt_boxes: Sequence[torch.Tensor],
    gt_labels: Sequence[torch.Tensor],
    neg_pos_ratio: int = 3,
    beta: float = 1.0,
) -> torch.Tensor:
    """mmdet's `SSDHead.loss_by_feat`: softmax cross-entropy over positives and the 3× as many
    hardest negatives, plus smooth L1 (β 1) on the positives' deltas; both summed per image,
    divided by the batch's positive count and summed over images. `model` may be DDP-wrapped."""
    core = cast(SSDLiteDetector, getattr(model, "module", model))
    logits, deltas = model(images)
    anchors = core.anchors((int(images.shape[1]), int(images.shape[2]))).to(deltas.device)
    background = core.num_classes
    labels, targets, positives = [], [], []
    for boxes, classes in zip(gt_boxes, gt_labels, strict=True):
        boxes, classes = boxes.to(deltas.device), classes.to(deltas.device)
        assigned = assign(anchors, boxes)
        positive = assigned >= 0
        label = torch.full((len(anchors),), background, dtype=torch.long, device=deltas.device)
        label[positive] = classes[assigned[positive]]
        target = torch.zeros_like(anchors)
        if positive.any():
            target[positive] = core.coder.encode(anchors[positive], boxes[assigned[positive]])
        labels.append(label)
        targets.append(target)
        positives.append(positive)
    avg_factor = max(1, int(sum(int(p.sum()) for p in positives)))
    total = deltas.new_zeros(())
    for i, (label, target, positive) in enumerate(zip(labels, targets, positives, strict=True)):
        per_anchor = F.cross_entropy(logits[i].float(), label, reduction="none")
        negatives = per_anchor[~positive]
        hardest = negatives.topk(min(neg_pos_ratio * int(positive.sum()), len(negatives))).values
        loss_cls = (per_anchor[positive].sum() + hardest.sum()) / avg_factor
        loss_box = F.smooth_l1_loss(deltas[i][positive].float(), target[positive], beta=beta, reduction="sum")
        total = total + loss_cls + loss_box / avg_factor
    return total
