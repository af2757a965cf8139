"""Shared fixtures: a model repository of the default recipes, exported once per source version.

The default detector is left out (`TEST_RECIPES`): with random weights it finds nobody, and the
endpoint tests post `/v1/pose` without boxes to mean the whole image. Detector tests bring their
own (tests/app/tiny_models.py) or export it (tests/training/test_export.py).

Exports take a minute on 2 cores, so the repository is cached under `.pytest_cache/`, keyed on the
sources that shape the exported files (recipes, nets, labels, export, the card, the builder
below); a change to any rebuilds it.
Weights are random, with BatchNorm statistics calibrated on noise so that outputs vary from image
to image (freshly initialised MobileNetV2s answer near-constant outputs, which would make parity
checks vacuous).
"""

from __future__ import annotations

import hashlib
import inspect
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".pytest_cache" / "model-repository"


def _test_recipes() -> tuple[str, ...]:
    from training.recipes import DEFAULT_RECIPES, get_recipe

    return tuple(name for name in DEFAULT_RECIPES if get_recipe(name).task != "detection")


TEST_RECIPES = _test_recipes()


def _source_key() -> str:
    digest = hashlib.sha256()
    training = ROOT / "training"
    shaping = [
        training / "recipes.py",
        training / "export.py",
        training / "labels.py",
        ROOT / "app" / "card.py",
    ]
    shaping += sorted((training / "nets").glob("*.py")) + sorted((training / "labelsets").glob("*"))
    for path in (p for p in shaping if p.is_file()):
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    for builder in (build_repository, _calibrate_batchnorm):
        digest.update(inspect.getsource(builder).encode())
    return digest.hexdigest()[:16]


def _calibrate_batchnorm(model: object, height: int, width: int) -> None:
    """Set every BatchNorm's running statistics from one batch of noise images."""
    import torch
    from torch import nn

    assert isinstance(model, nn.Module)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4, height, width, 3), dtype=torch.uint8, generator=generator)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(images)
    model.eval()


def build_repository(out: Path) -> None:
    """Export `TEST_RECIPES` into `out` (random weights, calibrated BatchNorm)."""
    import torch

    from contract.card import Weights
    from training.export import export_model
    from training.recipes import get_recipe

    torch.manual_seed(0)
    for name in TEST_RECIPES:
        recipe = get_recipe(name)
        model = recipe.build()
        height, width = recipe.input_size
        # Calibrating at a quarter of a large input is as good and much faster.
        scale = 4 if height * width > 300_000 else 1
        _calibrate_batchnorm(model, height // scale, width // scale)
        weights = Weights(source="random-init", note="random weights, BatchNorm calibrated on noise (tests)")
        export_model(model, recipe, out, weights)


@pytest.fixture(scope="session")
def model_repository() -> Path:
    """A read-only repository with `TEST_RECIPES` at version 1. Copy it before changing it."""
    return cached_repository()


def cached_repository() -> Path:
    """Build the repository once per source version (see the module docstring)."""
    target = CACHE / _source_key()
    if (target / ".complete").exists():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=CACHE))
    try:
        build_repository(staging)
        (staging / ".complete").touch()
        try:
            os.rename(staging, target)  # atomic; a concurrent run may have won the race
        except OSError:
            if not (target / ".complete").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for stale in CACHE.iterdir():  # keep the cache from growing; a day old is no concurrent run's
        if stale.name != target.name and time.time() - stale.stat().st_mtime > 86_400:
            shutil.rmtree(stale, ignore_errors=True)
    return target
