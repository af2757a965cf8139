"""Small deterministic data sets written to disk in the real on-disk layouts.

The loaders in `training.data` read real ImageNet, Cityscapes, ADE20K, COCO and MPII folders; this
module writes tiny look-alikes so the whole pipeline can be trained and tested on a laptop:

- classification: ImageNet-style `train/<class>/*.JPEG`, `val/<class>/*.JPEG` and `classes.txt`;
  the class is the shape (circle, star, stripes...), its colour is random.
- cityscapes: `leftImg8bit/{train,val}/<city>/*_leftImg8bit.png` and
  `gtFine/{train,val}/<city>/*_gtFine_labelTrainIds.png` (19 train ids, 255 on shape borders and
  on an occasional "ego vehicle" region).
- ade20k: `ADEChallengeData2016/{images,annotations}/{training,validation}/ADE_*`; class k is
  stored as k + 1 and 0 marks "other" regions (the loader's reduce_zero_label makes them 255).
- coco: `annotations/person_keypoints_{train,val}2017.json` and `{train,val}2017/*.jpg` with 1-3
  rendered stick figures per image.
- mpii: mmpose's `annotations/mpii_{train,val}.json` (1-based MATLAB coordinates), `images/*.jpg`
  and `annotations/mpii_val_headboxes.json` for PCKh.

Every image draws from its own RNG seeded by (seed, split, index): the same seed gives the same
bytes, and changing a count does not change the other images.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

from training.data.synthetic.figures import write_coco_pose, write_mpii_pose
from training.data.synthetic.scenes import segmentation_class_styles, write_ade20k, write_cityscapes
from training.data.synthetic.shapes import CLASSIFICATION_SHAPES, write_classification

__all__ = [
    "CLASSIFICATION_SHAPES",
    "Task",
    "generate",
    "segmentation_class_styles",
    "write_ade20k",
    "write_cityscapes",
    "write_classification",
    "write_coco_pose",
    "write_mpii_pose",
]

Task = Literal["classification", "cityscapes", "ade20k", "coco", "mpii"]


def generate(
    task: Task,
    root: str | Path,
    *,
    n_train: int,
    n_val: int,
    seed: int = 0,
    size: tuple[int, int] | None = None,
) -> Path:
    """Write one synthetic data set; `size` is the side range (min, max) for classification and
    the image (width, height) otherwise (None: each writer's default). Returns the data root."""
    writers: dict[str, Callable[..., Path]] = {
        "classification": write_classification,
        "cityscapes": write_cityscapes,
        "ade20k": write_ade20k,
        "coco": write_coco_pose,
        "mpii": write_mpii_pose,
    }
    if task not in writers:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(writers)}")
    size_argument = {} if size is None else {"side_range" if task == "classification" else "size_wh": size}
    return writers[task](root, n_train=n_train, n_val=n_val, seed=seed, **size_argument)
