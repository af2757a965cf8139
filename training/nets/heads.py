"""Task heads with mmpretrain / mmsegmentation / mmpose module names.

Segmentation heads take the backbone's tuple of feature maps (layer2, layer3, layer5, layer7 of
M-V2-D8) and return logits at stride 8 (stride 4 for DeepLabV3+). Every 3×3 or 1×1 block is a
`ConvModule` with ReLU, as mmseg builds them.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from training.nets.mobilenet_v2 import ConvModule

SegConv = partial(ConvModule, act=nn.ReLU)


def resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def _pool_matrix(in_size: int, out_size: int, like: torch.Tensor) -> torch.Tensor:
    """(out, in) averaging matrix with PyTorch's adaptive-pool bins: [⌊i·in/out⌋, ⌈(i+1)·in/out⌉)."""
    matrix = torch.zeros(out_size, in_size, dtype=like.dtype, device=like.device)
    for i in range(out_size):
        start = (i * in_size) // out_size
        end = -((-(i + 1) * in_size) // out_size)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


class ExactAdaptiveAvgPool2d(nn.Module):
    """AdaptiveAvgPool2d written as two matrix products, so it exports to ONNX exactly.

    ONNX has no adaptive pooling; mmdeploy's fixed `avg_pool2d` swap is exact only when the scale
    divides the feature size (PSPNet at 512×1024 has 64×128 features and scales 3 and 6). Bins
    are built from the traced shape, so the export is exact at the size it was traced at.
    """

    def __init__(self, output_size: int) -> None:
        super().__init__()
        self.output_size = output_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        rows = _pool_matrix(h, self.output_size, x)
        cols = _pool_matrix(w, self.output_size, x)
        return rows @ x @ cols.transpose(0, 1)


class ClsHead(nn.Module):
    """mmpretrain's LinearClsHead after GlobalAveragePooling: logits `(N, num_classes)`."""

    def __init__(self, in_channels: int = 1280, num_classes: int = 1000) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, features: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return self.fc(self.pool(features[-1]).flatten(1))


class DecodeHead(nn.Module):
    """mmseg's BaseDecodeHead tail: Dropout2d 0.1, then `conv_seg` 1×1 with bias."""

    def __init__(self, channels: int, num_classes: int, in_index: int) -> None:
        super().__init__()
        self.in_index = in_index
        self.dropout = nn.Dropout2d(0.1)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def cls_seg(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_seg(self.dropout(x))


class FCNHead(DecodeHead):
    def __init__(
        self,
        in_channels: int,
        channels: int,
        num_classes: int,
        in_index: int = 3,
        num_convs: int = 2,
        concat_input: bool = True,
    ) -> None:
        super().__init__(channels, num_classes, in_index)
        convs = [
            SegConv(in_channels if i == 0 else channels, channels, 3, padding=1) for i in range(num_convs)
        ]
        self.convs = nn.Sequential(*convs)
        self.concat_input = concat_input
        if concat_input:
            self.conv_cat = SegConv(in_channels + channels, channels, 3, padding=1)

    def forward(self, features: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x = features[self.in_index]
        out = self.convs(x)
        if self.concat_input:
            out = self.conv_cat(torch.cat([x, out], dim=1))
        return self.cls_seg(out)


class PSPHead(DecodeHead):
    def __init__(
        self,
        in_channels: int,
        channels: int,
        num_classes: int,
        in_index: int = 3,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
    ) -> None:
        super().__init__(channels, num_classes, in_index)
        self.psp_modules = nn.ModuleList(
            nn.Sequential(ExactAdaptiveAvgPool2d(scale), SegConv(in_channels, channels, 1))
            for scale in pool_scales
        )
        self.bottleneck = SegConv(in_channels + len(pool_scales) * channels, channels, 3, padding=1)

    def forward(self, features: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x = features[self.in_index]
        outs = [x] + [resize(m(x), x.shape[2:]) for m in self.psp_modules]
        return self.cls_seg(self.bottleneck(torch.cat(outs, dim=1)))


class DepthwiseSeparableConvModule(nn.Module):
    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, padding: int, dilation: int = 1
    ):
        super().__init__()
        self.depthwise_conv = SegConv(
            in_channels, in_channels, kernel_size, padding=padding, dilation=dilation, groups=in_channels
        )
        self.pointwise_conv = SegConv(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


class ASPPHead(DecodeHead):
    """DeepLabV3: image pooling + 1×1 + dilated 3×3 branches, concatenated, then a 3×3 bottleneck."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        num_classes: int,
        in_index: int = 3,
        dilations: Sequence[int] = (1, 12, 24, 36),
        separable: bool = False,
    ) -> None:
        super().__init__(channels, num_classes, in_index)
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), SegConv(in_channels, channels, 1))
        branches: list[nn.Module] = []
        for d in dilations:
            if d == 1:
                branches.append(SegConv(in_channels, channels, 1))
            elif separable:
                branches.append(DepthwiseSeparableConvModule(in_channels, channels, 3, padding=d, dilation=d))
            else:
                branches.append(SegConv(in_channels, channels, 3, padding=d, dilation=d))
        self.aspp_modules = nn.ModuleList(branches)
        self.bottleneck = SegConv((len(dilations) + 1) * channels, channels, 3, padding=1)

    def aspp(self, x: torch.Tensor) -> torch.Tensor:
        pooled = resize(self.image_pool(x), x.shape[2:])
        return self.bottleneck(torch.cat([pooled] + [m(x) for m in self.aspp_modules], dim=1))

    def forward(self, features: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return self.cls_seg(self.aspp(features[self.in_index]))


class DepthwiseSeparableASPPHead(ASPPHead):
    """DeepLabV3+: separable ASPP, plus a 48-channel low-level branch from layer2 (stride 4)."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        num_classes: int,
        c1_in_channels: int = 24,
        c1_channels: int = 48,
        in_index: int = 3,
        c1_index: int = 0,
        dilations: Sequence[int] = (1, 12, 24, 36),
    ) -> None:
        super().__init__(in_channels, channels, num_classes, in_index, dilations, separable=True)
        self.c1_index = c1_index
        self.c1_bottleneck = SegConv(c1_in_channels, c1_channels, 1)
        self.sep_bottleneck = nn.Sequential(
            DepthwiseSeparableConvModule(channels + c1_channels, channels, 3, padding=1),
            DepthwiseSeparableConvModule(channels, channels, 3, padding=1),
        )

    def forward(self, features: tuple[torch.Tensor, ...]) -> torch.Tensor:
        out = self.aspp(features[self.in_index])
        c1 = self.c1_bottleneck(features[self.c1_index])
        out = torch.cat([resize(out, c1.shape[2:]), c1], dim=1)
        return self.cls_seg(self.sep_bottleneck(out))


class HeatmapHead(nn.Module):
    """mmpose's top-down heatmap head: 3 × (4×4 stride-2 deconv 256, BN, ReLU), then 1×1 to K maps."""

    def __init__(self, in_channels: int, num_keypoints: int, channels: int = 256, num_deconv: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(num_deconv):
            layers += [
                nn.ConvTranspose2d(
                    in_channels if i == 0 else channels, channels, 4, stride=2, padding=1, bias=False
                ),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
            ]
        self.deconv_layers = nn.Sequential(*layers)
        self.final_layer = nn.Conv2d(channels, num_keypoints, 1)

    def forward(self, features: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return self.final_layer(self.deconv_layers(features[-1]))
