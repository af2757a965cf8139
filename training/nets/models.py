"""Whole models with OpenMMLab's top-level names, and the wrapper that exports them.

Top-level prefixes match the released checkpoints: `backbone.` + `head.` (classifier, pose),
`backbone.` + `decode_head.` + `auxiliary_head.` (segmentor). Every model takes `uint8` RGB
images `(N, H, W, 3)` — what the service sends — and normalises them itself, so training and
serving share one preprocessing path.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from training.nets.heads import resize


class Normalize(nn.Module):
    """`(N, H, W, 3)` uint8 RGB → `(N, 3, H, W)` float32, `(x - mean) / std`."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).to(torch.float32)
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    def __init__(self, backbone: nn.Module, head: nn.Module, normalize: Normalize) -> None:
        super().__init__()
        self.normalize = normalize
        self.backbone = backbone
        self.head = head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits `(N, classes)`."""
        return self.head(self.backbone(self.normalize(images)))

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Probabilities `(N, classes)` float32."""
        return F.softmax(self(images), dim=1)


class Segmentor(nn.Module):
    def __init__(
        self,
        backbone: nn.Module,
        decode_head: nn.Module,
        normalize: Normalize,
        auxiliary_head: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.normalize = normalize
        self.backbone = backbone
        self.decode_head = decode_head
        self.auxiliary_head = auxiliary_head

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Decode logits at the head's stride, and the auxiliary logits while training."""
        features = self.backbone(self.normalize(images))
        aux = self.auxiliary_head(features) if self.auxiliary_head is not None and self.training else None
        return self.decode_head(features), aux

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits `(N, classes, H, W)` at the input resolution (bilinear, as mmseg's inference)."""
        out, _ = self(images)
        return resize(out, images.shape[1:3])

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Class of every pixel `(N, H, W)` uint8 (all recipes have < 256 classes)."""
        return self.logits(images).argmax(dim=1).to(torch.uint8)


class TopdownPoseEstimator(nn.Module):
    def __init__(self, backbone: nn.Module, head: nn.Module, normalize: Normalize) -> None:
        super().__init__()
        self.normalize = normalize
        self.backbone = backbone
        self.head = head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Heatmaps `(N, K, H/4, W/4)`."""
        return self.head(self.backbone(self.normalize(images)))

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self(images)


class Exported(nn.Module):
    """What goes into the ONNX graph: the model's `predict` (no auxiliary head, eval mode)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        return self.model.predict(images)  # type: ignore[operator]
