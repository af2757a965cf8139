"""A recipe's classes (or keypoints) taken from the data set it is trained on.

A user who trains the classifier on their own folders gets a model whose classes are their
folders, not ImageNet's 1000. Cityscapes and ADE20K define their class sets; COCO-style keypoint
files name their keypoints in `categories[0].keypoints`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from training.recipes import Recipe

_IMAGENET_WNID = re.compile(r"n\d{8}")


def folder_classes(root: Path, split: str = "train") -> list[str]:
    """The class folders of an ImageNet-style `root/<split>/<class>/`, in label order (sorted)."""
    split_dir = root / split
    if not split_dir.is_dir():
        raise FileNotFoundError(f"no split folder {split_dir}")
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir())


def recipe_for_data(recipe: Recipe, data: Path) -> Recipe:
    """`recipe` with the classes or keypoint names of the data set at `data`.

    ImageNet itself (its 1000 WordNet-id folders) keeps the recipe's human-readable names.
    """
    if recipe.task == "classification":
        classes = folder_classes(data)
        if len(classes) == recipe.num_outputs and all(_IMAGENET_WNID.fullmatch(c) for c in classes):
            return recipe
        if len(classes) < 2:
            raise ValueError(f"{data / 'train'}: a classifier needs at least two class folders")
        # The table's figures are ImageNet's; they say nothing of a model of these classes.
        return replace(recipe, num_outputs=len(classes), labels=lambda: list(classes), published={})
    if recipe.task == "pose" and recipe.dataset == "coco":
        names = _coco_keypoint_names(data)
        if names is None:
            return recipe
        if len(names) != recipe.num_outputs:
            raise ValueError(
                f"{data}: the annotations name {len(names)} keypoints; {recipe.name} predicts "
                f"{recipe.num_outputs} (its flip pairs and skeleton are COCO's)"
            )
        return replace(recipe, labels=lambda: list(names))
    return recipe


def recipe_for_run(recipe: Recipe, run_meta: Mapping[str, Any]) -> Recipe:
    """`recipe` with the labels a training run of this project saved in its checkpoint."""
    names = run_meta.get("labels")
    if not isinstance(names, list) or names == recipe.labels():
        return recipe
    labels = [str(n) for n in names]
    if recipe.task == "classification":
        return replace(recipe, num_outputs=len(labels), labels=lambda: list(labels), published={})
    if len(labels) != recipe.num_outputs:
        raise ValueError(
            f"the run's checkpoint has {len(labels)} labels; {recipe.name} has {recipe.num_outputs}"
        )
    return replace(recipe, labels=lambda: list(labels))


def _coco_keypoint_names(data: Path) -> list[str] | None:
    # val's file (25 MB for COCO) names the same keypoints as train's (450 MB).
    candidates = [data / "annotations" / f"person_keypoints_{split}2017.json" for split in ("val", "train")]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        return None
    with open(path, encoding="utf-8") as f:
        categories = json.load(f).get("categories") or []
    names = categories[0].get("keypoints") if categories else None
    return [str(n) for n in names] if names else None
