"""Bring released checkpoints: OpenMMLab's `.pth` files and torchvision's MobileNetV2 layout.

A URL is downloaded once into a cache and checked against the hash its name carries (OpenMMLab
and torchvision names end in the first 8 hex digits of the file's sha256) — except where the
recipe says the publishing tool hashed another file (mmseg 1.x); every download's sha256 is
recorded beside it, and a later file of that name must match the record. Files are read by
`checkpoint_pickle`, which runs nothing they name. Loading is strict: a key that does not fit is
an error that names it, never a silent partial load.
"""

from __future__ import annotations

import http.client
import os
import pickle
import re
import shutil
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from contract.card import Weights, sha256_file
from training.checkpoint_pickle import torch_load
from training.nets.mobilenet_v2 import ARCH_SETTINGS
from training.recipes import Recipe, Release

# `..._20200708-3b2dc3af.pth` (mmcls, mmseg) or `...-55a04c35_20221016.pth` (mmpose 1.x).
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8})(?:_\d{8})?\.pth$")
_DOWNLOAD_TIMEOUT_S = 60

Layout = Literal["openmmlab", "torchvision", "run"]


class CheckpointError(ValueError):
    """A checkpoint that cannot be used as asked: wrong hash, keys or shapes, or unsafe to read."""


def cache_dir() -> Path:
    return Path(os.environ.get("MNV2_CACHE", Path.home() / ".cache" / "mnv2-serve")) / "checkpoints"


def expected_hash_prefix(name: str) -> str | None:
    match = _HASH_IN_NAME.search(name)
    return match.group(1) if match else None


def release_named(name: str, releases: Sequence[Release]) -> Release | None:
    return next((r for r in releases if r.file_name == name), None)


def _record_path(cached: Path) -> Path:
    return cached.with_name(cached.name + ".sha256")


def recorded_sha256(name: str, cache: Path | None = None) -> str | None:
    """The sha256 recorded when a file of this name was first downloaded into the cache."""
    record = _record_path((cache or cache_dir()) / name)
    return record.read_text(encoding="ascii").strip() if record.is_file() else None


def verify(path: Path, name: str | None = None, name_hash: Literal["file", "input"] = "file") -> str:
    """sha256 of `path`; raises if the name carries a hash prefix of the file that it does not match."""
    actual = sha256_file(path)
    expected = expected_hash_prefix(name or path.name)
    if name_hash == "file" and expected is not None and not actual.startswith(expected):
        raise CheckpointError(
            f"{name or path.name}: sha256 {actual[:8]}… does not match the expected hash prefix {expected} "
            "(corrupted or truncated download?)"
        )
    return actual


def _check_record(name: str, digest: str, cache: Path) -> None:
    recorded = recorded_sha256(name, cache)
    if recorded is not None and recorded != digest:
        raise CheckpointError(
            f"{name}: sha256 {digest[:12]}… differs from {recorded[:12]}…, recorded when this file was "
            "first downloaded: the published file changed, or this copy is not it"
        )


def fetch(url_or_path: str, cache: Path | None = None, releases: Sequence[Release] = ()) -> tuple[Path, str]:
    """A local file, or a URL downloaded into the cache; returns (path, sha256) once verified.

    A local file whose name's hash does not match it is still read (a user may rename files); it
    will not count as a release. A download must match its name's hash (unless its release says
    the name cannot be checked) and the sha256 recorded for that name, if any.
    """
    parsed = urllib.parse.urlparse(url_or_path)
    if not url_or_path.startswith(("http://", "https://")):
        path = Path(parsed.path if parsed.scheme == "file" else url_or_path)
        if not path.is_file():
            raise CheckpointError(f"no checkpoint at {path}")
        return path, sha256_file(path)
    if parsed.scheme != "https" and parsed.scheme != "http":
        raise CheckpointError(f"{url_or_path}: only http(s) URLs and local paths")
    cache = cache or cache_dir()
    name = Path(parsed.path).name
    release = release_named(name, releases)
    name_hash = release.name_hash if release else "file"
    target = cache / name
    if target.is_file():
        digest = verify(target, name, name_hash)
        _check_record(name, digest, cache)
        return target, digest
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".part", delete=False) as tmp:
        tmp_path = Path(tmp.name)
        try:
            _download(url_or_path, tmp)
        except BaseException:
            tmp_path.unlink(missing_ok=True)
            raise
    try:
        digest = verify(tmp_path, name, name_hash)
        _check_record(name, digest, cache)
    except CheckpointError:
        tmp_path.unlink(missing_ok=True)
        raise
    tmp_path.replace(target)
    _record_path(target).write_text(digest + "\n", encoding="ascii")
    return target, digest


def _download(url: str, out: Any) -> None:
    """Copy `url` into `out`; a body shorter than its Content-Length is a truncated download."""
    try:
        response = urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S)
    except OSError as exc:  # URLError, timeouts, refused connections: one line, not a traceback
        reason = getattr(exc, "reason", exc)
        raise CheckpointError(f"cannot download {url}: {reason}") from None
    with response:
        length = response.headers.get("Content-Length")
        try:
            shutil.copyfileobj(response, out)
        except (http.client.IncompleteRead, OSError) as exc:
            raise CheckpointError(
                f"{url}: download cut off after {out.tell()} of {length} bytes ({exc!r})"
            ) from None
    if length is not None and length.isdigit() and out.tell() != int(length):
        raise CheckpointError(f"{url}: truncated download ({out.tell()} of {length} bytes)")


@dataclass(frozen=True)
class CheckpointFile:
    """What a `.pth` holds that this project uses: tensors, their key layout, and the inert meta."""

    state: dict[str, torch.Tensor]
    layout: Layout
    meta: Mapping[str, Any] = field(default_factory=dict)


def read_checkpoint(path: Path) -> CheckpointFile:
    """Tensors of a `.pth` file: OpenMMLab's `{'state_dict', 'meta', ...}`, this project's runs'
    `{'model', 'optimizer', 'iteration'}`, or a bare state dict (torchvision)."""
    try:
        obj = torch_load(path)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path.name}: {exc}") from None
    layout: Layout = "openmmlab"
    meta: Mapping[str, Any] = {}
    if isinstance(obj, Mapping):
        if isinstance(obj.get("state_dict"), Mapping):
            meta = obj["meta"] if isinstance(obj.get("meta"), Mapping) else {}
            obj = obj["state_dict"]
        elif isinstance(obj.get("model"), Mapping):
            meta = {k: v for k, v in obj.items() if k not in ("model", "optimizer")}
            obj, layout = obj["model"], "run"
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: not a state dict (found {type(obj).__name__})")
    state = {k.removeprefix("module."): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if layout == "openmmlab" and any(k.startswith("features.") for k in state):
        layout = "torchvision"
    return CheckpointFile(state, layout, meta)


def run_metadata(url_or_path: str) -> Mapping[str, Any]:
    """What a training run of this project saved beside its weights (labels, data); {} otherwise."""
    if url_or_path.startswith(("http://", "https://")) or not Path(url_or_path).is_file():
        return {}
    checkpoint = read_checkpoint(Path(url_or_path))
    return checkpoint.meta if checkpoint.layout == "run" else {}


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a `.pth` file, with or without a wrapper (see `read_checkpoint`)."""
    return read_checkpoint(path).state


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


_MMPRETRAIN_BLOCK_CONV = re.compile(r"^(layer\d+\.\d+)\.conv\.(\d)\.(.+)$")


def _as_mmdet_blocks(
    state: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """mmpretrain's block convs `conv.0/1/2` under mmdet's names (the detector's backbone): expand,
    depthwise, linear, where a block without expansion (layer1) starts at the depthwise one."""
    renamed = {}
    for key, value in state.items():
        match = _MMPRETRAIN_BLOCK_CONV.match(key)
        if match is None:
            renamed[key] = value
            continue
        block, index, rest = match.groups()
        names = ["depthwise_conv", "linear_conv"]
        if f"{block}.expand_conv.conv.weight" in own:
            names.insert(0, "expand_conv")
        renamed[f"{block}.{names[int(index)]}.{rest}"] = value
    return renamed


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


@dataclass(frozen=True)
class LoadedCheckpoint:
    sha256: str
    layout: Layout
    release: Release | None  # the recipe's release this file proved to be, if any
    meta: Mapping[str, Any]


def identify_release(
    name: str, digest: str, releases: Sequence[Release], cache: Path | None = None
) -> Release | None:
    """The release this file is, judged by its content: its sha256 begins with a release's name
    hash, or (for names whose hash is of another file) equals the sha256 recorded at download."""
    for release in releases:
        prefix = expected_hash_prefix(release.file_name)
        if release.name_hash == "file" and prefix and digest.startswith(prefix):
            return release
        if release.name_hash == "input" and recorded_sha256(release.file_name, cache) == digest:
            return release
    return None


def load_checkpoint(
    model: nn.Module, url_or_path: str, releases: Sequence[Release] = (), cache: Path | None = None
) -> LoadedCheckpoint:
    """Fetch, verify, rename and strictly load a checkpoint; says which release it is, if any."""
    path, digest = fetch(url_or_path, cache, releases)
    checkpoint = read_checkpoint(path)
    load_strict(model, to_openmmlab_keys(checkpoint.state), source=path.name)
    release = identify_release(path.name, digest, releases, cache)
    return LoadedCheckpoint(digest, checkpoint.layout, release, checkpoint.meta)


def provenance(loaded: LoadedCheckpoint, recipe: Recipe, checkpoint: str) -> Weights:
    """The card's `weights` for a loaded file: a release only when its content proves it."""
    release = loaded.release
    if release is not None:
        figures = release.published or recipe.published
        shown = ", ".join(f"{k} {v:g}" for k, v in figures.items() if k not in ("params_m", "gflops"))
        return Weights(
            source=release.publisher,
            checkpoint=checkpoint,
            checkpoint_sha256=loaded.sha256,
            trained_on="imagenet-1k" if release.publisher == "torchvision" else recipe.dataset,
            note=f"{release.note or 'the released checkpoint of this row'}; published {shown} "
            "(not measured here)",
        )
    if loaded.layout == "run":
        return Weights(
            source="trained",
            checkpoint=checkpoint,
            checkpoint_sha256=loaded.sha256,
            trained_on=str(loaded.meta["trained_on"]) if "trained_on" in loaded.meta else None,
            note="a training run of this project",
        )
    return Weights(
        source="imported",
        checkpoint=checkpoint,
        checkpoint_sha256=loaded.sha256,
        note=f"a {loaded.layout}-layout checkpoint that is not one of this recipe's releases "
        "(its sha256 matches none): how it was trained is not known here",
    )


def load_backbone(model: nn.Module, url_or_path: str) -> str:
    """Initialise `model.backbone` from a classifier checkpoint (as OpenMMLab's `pretrained`).

    Keys of the classifier that the backbone lacks (`conv2` for M-V2-D8, the `head`) are dropped;
    every backbone key must be present. The detector's mmdet backbone names its block convs its own
    way; the classifier's are renamed to them.
    """
    path, digest = fetch(url_or_path)
    state = to_openmmlab_keys(read_state_dict(path))
    backbone: nn.Module = model.backbone  # type: ignore[assignment]
    own = backbone.state_dict()
    sub = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    sub = _as_mmdet_blocks(sub, own) if any(".depthwise_conv." in k for k in own) else sub
    load_strict(backbone, {k: v for k, v in sub.items() if k in own}, source=f"{path.name} (backbone)")
    return digest
