"""Network size: parameters and operation counts at a recipe's input size.

Two counts, because the tables use one and papers the other:
- `macs`: multiply-adds of convolutions, deconvolutions and linear layers (the paper's "300 M").
- `flops`: mmcv's `get_model_complexity_info` convention, which also counts batch norm,
  activations, pooling and upsampling (the results table's "0.319 GFLOPs").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from training.recipes import Recipe

_ACTIVATIONS = (nn.ReLU, nn.ReLU6)
_POOLS = (nn.AdaptiveAvgPool2d, nn.AvgPool2d, nn.MaxPool2d)


@dataclass(frozen=True)
class Summary:
    recipe: str
    task: str
    input_hw: tuple[int, int]
    params: int
    macs: int
    flops: int

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _conv_macs(m: nn.Conv2d | nn.ConvTranspose2d, x: torch.Tensor, y: torch.Tensor) -> int:
    k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
    if isinstance(m, nn.ConvTranspose2d):  # every input element is spread over k·out positions
        return x.numel() * m.kernel_size[0] * m.kernel_size[1] * (m.out_channels // m.groups)
    return y.numel() * k


def count(model: nn.Module, images: torch.Tensor) -> tuple[int, int]:
    """(macs, flops) of one forward pass of `model` on `images` (batch 1 expected)."""
    macs = 0
    flops = 0

    def hook(m: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal macs, flops
        x = inputs[0]
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            n = _conv_macs(m, x, output)
            macs += n
            flops += n + (output.numel() if m.bias is not None else 0)
        elif isinstance(m, nn.Linear):
            n = x.numel() * m.out_features
            macs += n
            flops += n + (m.out_features if m.bias is not None else 0)
        elif isinstance(m, nn.BatchNorm2d):
            flops += x.numel() * (2 if m.affine else 1)
        elif isinstance(m, _ACTIVATIONS):
            flops += output.numel()
        elif isinstance(m, _POOLS):
            flops += x.numel()
        elif isinstance(m, nn.Upsample):
            flops += output.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad():
            model(images)
    finally:
        for h in handles:
            h.remove()
    return macs, flops


def summarize(recipe: Recipe) -> Summary:
    """Size of the network as served (segmentation without its training-only auxiliary head)."""
    model = recipe.build(with_aux=False).eval()
    h, w = recipe.input_size
    macs, flops = count(model, torch.zeros(1, h, w, 3, dtype=torch.uint8))
    params = sum(p.numel() for p in model.parameters())
    return Summary(recipe.name, recipe.task, (h, w), params, macs, flops)
