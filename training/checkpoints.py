"""Bring released checkpoints: OpenMMLab's `.pth` files and torchvision's MobileNetV2 layout.

A URL is downloaded once into a cache and checked against the hash its name carries (OpenMMLab
names end in the first 8 hex digits of the file's sha256). Loading is strict: a key that does not
fit is an error that names it, never a silent partial load.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from training.nets.mobilenet_v2 import ARCH_SETTINGS

# `..._20200708-3b2dc3af.pth` (mmcls, mmseg) or `...-55a04c35_20221016.pth` (mmpose 1.x).
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8})(?:_\d{8})?\.pth$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used as asked: wrong hash, keys or shapes."""


def cache_dir() -> Path:
    return Path(os.environ.get("MNV2_CACHE", Path.home() / ".cache" / "mnv2-serve")) / "checkpoints"


def expected_hash_prefix(name: str) -> str | None:
    match = _HASH_IN_NAME.search(name)
    return match.group(1) if match else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, name: str | None = None) -> str:
    """sha256 of `path`; raises if the file name (or `name`) carries a hash prefix it does not match."""
    actual = _sha256(path)
    expected = expected_hash_prefix(name or path.name)
    if expected is not None and not actual.startswith(expected):
        raise CheckpointError(
            f"{name or path.name}: sha256 {actual[:8]}… does not match the expected hash prefix {expected} "
            "(corrupted or truncated download?)"
        )
    return actual


def fetch(url_or_path: str, cache: Path | None = None) -> tuple[Path, str]:
    """A local file, or a URL downloaded into the cache; returns (path, sha256) once verified."""
    parsed = urllib.parse.urlparse(url_or_path)
    if parsed.scheme in ("", "file") and not url_or_path.startswith(("http://", "https://")):
        path = Path(parsed.path if parsed.scheme == "file" else url_or_path)
        if not path.is_file():
            raise CheckpointError(f"no checkpoint at {path}")
        return path, verify(path)
    name = Path(parsed.path).name
    target = (cache or cache_dir()) / name
    if target.is_file():
        return target, verify(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".part", delete=False) as tmp:
        tmp_path = Path(tmp.name)
        try:
            with urllib.request.urlopen(url_or_path, timeout=60) as response:
                shutil.copyfileobj(response, tmp)
        except BaseException:
            tmp_path.unlink(missing_ok=True)
            raise
    try:
        digest = verify(tmp_path, name)
    except CheckpointError:
        tmp_path.unlink(missing_ok=True)
        raise
    tmp_path.replace(target)
    return target, digest


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a `.pth` file, with or without OpenMMLab's `{'state_dict': ..., 'meta': ...}` wrapper."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, Mapping):
        # OpenMMLab wraps weights in `state_dict`; this project's training runs in `model`.
        for wrapper in ("state_dict", "model"):
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: not a state dict (found {type(obj).__name__})")
    return {k.removeprefix("module."): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _torchvision_block_names() -> dict[int, str]:
    """`features.k` → `layerL.j` for the 17 inverted-residual blocks (k = 1…17)."""
    names = {}
    k = 1
    for stage, (_, _, n, _) in enumerate(ARCH_SETTINGS, start=1):
        for j in range(n):
            names[k] = f"layer{stage}.{j}"
            k += 1
    return names


def _from_torchvision(key: str, blocks: dict[int, str]) -> str:
    if key.startswith("classifier.1."):
        return "head.fc." + key.removeprefix("classifier.1.")
    parts = key.split(".")
    k = int(parts[1])
    if k == 0 or k == len(blocks) + 1:
        module = "conv1" if k == 0 else "conv2"
        return f"backbone.{module}.{'conv' if parts[2] == '0' else 'bn'}.{'.'.join(parts[3:])}"
    block = f"backbone.{blocks[k]}.conv"
    rest = parts[3:]
    if k == 1:  # t = 1: conv.0 is a (conv, bn) pair, conv.1 and conv.2 are the bare project conv and bn
        if parts[3] == "0":
            return f"{block}.0.{'conv' if rest[1] == '0' else 'bn'}.{'.'.join(rest[2:])}"
        return f"{block}.1.{'conv' if rest[0] == '1' else 'bn'}.{'.'.join(rest[1:])}"
    if rest[0] in ("0", "1"):
        return f"{block}.{rest[0]}.{'conv' if rest[1] == '0' else 'bn'}.{'.'.join(rest[2:])}"
    return f"{block}.2.{'conv' if rest[0] == '2' else 'bn'}.{'.'.join(rest[1:])}"


def to_openmmlab_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename torchvision MobileNetV2 keys and mmpose 0.x `keypoint_head.` to this project's (= OpenMMLab's)."""
    if any(k.startswith("features.") for k in state):
        blocks = _torchvision_block_names()
        return {_from_torchvision(k, blocks): v for k, v in state.items()}
    return {
        ("head." + k.removeprefix("keypoint_head.") if k.startswith("keypoint_head.") else k): v
        for k, v in state.items()
    }


def load_strict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load every key or none: missing, unexpected and mis-shaped keys are named in the error.

    Only BatchNorm's `num_batches_tracked` counters may be absent (torchvision omits them).
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} keys: {', '.join(missing[:8])}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} keys: {', '.join(unexpected[:8])}")
    if shapes:
        problems.append(f"shape mismatch: {'; '.join(shapes[:8])}")
    if problems:
        raise CheckpointError(f"{source} does not fit {type(model).__name__}: " + " | ".join(problems))
    full = dict(own)
    full.update(state)
    model.load_state_dict(full, strict=True)


def load_checkpoint(model: nn.Module, url_or_path: str) -> tuple[str, Literal["openmmlab", "torchvision"]]:
    """Fetch, verify, rename and strictly load a checkpoint; returns (sha256, "openmmlab"|"torchvision")."""
    path, digest = fetch(url_or_path)
    state = read_state_dict(path)
    layout: Literal["openmmlab", "torchvision"] = (
        "torchvision" if any(k.startswith("features.") for k in state) else "openmmlab"
    )
    load_strict(model, to_openmmlab_keys(state), source=path.name)
    return digest, layout


def load_backbone(model: nn.Module, url_or_path: str) -> str:
    """Initialise `model.backbone` from a classifier checkpoint (as OpenMMLab's `pretrained`).

    Keys of the classifier that the backbone lacks (`conv2` for M-V2-D8, the `head`) are dropped;
    every backbone key must be present.
    """
    path, digest = fetch(url_or_path)
    state = to_openmmlab_keys(read_state_dict(path))
    backbone: nn.Module = model.backbone  # type: ignore[assignment]
    own = backbone.state_dict()
    sub = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    load_strict(backbone, {k: v for k, v in sub.items() if k in own}, source=f"{path.name} (backbone)")
    return digest
