"""The four default models: OpenMMLab's released weights when they can be had, else trained here.

Offline (as on the machines this project is built on), each default recipe is trained on a
synthetic data set written in its real layout, at the recipe's real architecture and input size,
then evaluated on held-out synthetic images. The classifier goes first: the other models'
backbones start from it, as OpenMMLab's recipes start from ImageNet weights. The detector trains
on the pose model's synthetic figures (their person boxes), so `/v1/pose` finds its people offline.
A synthetic model's card names its synthetic classes, never ImageNet's, Cityscapes' or COCO's.
"""

from __future__ import annotations

import time
import urllib.error
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from contract.card import Weights
from contract.tasks.detection import PERSON_LABEL
from training.checkpoints import CheckpointError, fetch, load_checkpoint, provenance
from training.data.classes import recipe_for_data
from training.recipes import DEFAULT_RECIPES, Recipe, Schedule, get_recipe

if TYPE_CHECKING:
    from training.engine import TrainResult


@dataclass(frozen=True)
class Finish:
    """The last part of a plan, at the served input size.

    Measured: a classifier trained on 96 px crops scores 87.5 % top-1 on held-out images cropped
    to 96 px and 31 % at the served 224 px (its objects appear twice as large there); re-estimating
    BatchNorm statistics at 224 gave 40 %, and 100 iterations at 224 gave 82 %. Low-resolution
    iterations are 5x cheaper, so most of the run stays small and only its end is at 224.
    """

    iterations: int
    batch_size: int
    lr: float
    seconds_per_iteration: float  # on 2 cores with a margin (see SyntheticPlan): ETA, --minutes cap


@dataclass(frozen=True)
class SyntheticPlan:
    """How to train one default recipe on synthetic data: a fixed number of seeded iterations.

    The rows' schedules assume ImageNet-initialised backbones and hundreds of epochs; from scratch
    and for a few hundred iterations, the row's SGD does not move (measured: loss at chance after
    120 iterations at lr 0.01-0.2, where Adam at 3e-3 had left it), so these plans use Adam with
    poly decay and a short warm-up. The cards say how each model was trained. A fixed plan gives
    the same model on a busy machine as on a quiet one (a wall-clock plan gave top-1 52.7 % where
    the quiet machine got 87.7 %); `--minutes` caps it, and then says what it cut.
    """

    dataset: str  # `python -m training synth` task
    n_train: int
    n_val: int
    iterations: int
    batch_size: int
    lr: float
    share: float  # of a `--minutes` cap's training time, against the other plans still to run
    # Per iteration (data loading included) on 2 cores, with a margin for load: the whole plan,
    # put at 22 min, took 12.2 quiet and 25 at load 4-8. The ETA, and what --minutes cuts by.
    seconds_per_iteration: float
    reserve_minutes: float  # data generation, evaluation and export, measured on 2 cores
    train_size: tuple[int, int] | None = None  # smaller training crops than the served input
    scale_wh: tuple[int, int] | None = None  # segmentation resize target (the serving canvas)
    warmup_iterations: int = 20
    min_crop_scale: float | None = None  # classification: RandomResizedCrop's smallest share
    zero_init_residual: bool = False  # trained from scratch (the classifier)
    finish: Finish | None = None  # a last phase at the served input size


def _adam_poly(row: Schedule, lr: float, iterations: int, warmup_iterations: int) -> Schedule:
    return replace(
        row,
        optimizer="adam",
        lr=lr,
        policy="poly",
        iterations=iterations,
        epochs=None,
        weight_decay=0.0,
        min_lr=0.0,
        warmup_iterations=warmup_iterations,
    )


# Learning curves measured on the 2-core machine (held-out synthetic images):
# - classifier at 96 px, 150 iterations: top-1 38 % (lr 3e-3), 55 % (3e-3, zero-init residuals),
#   63 % (6e-3, zero-init), 50 % (1e-2, zero-init).
# - FCN, the same 2.5 min: 128x256 crops x 4 (97 iterations) mIoU 19.7, 64x128 x 8 (162) 25.7,
#   64x128 x 4 (275) 19.0. Earlier: 300 iterations of 128x256 x 4 gave 42, 500 gave 56.
# - pose 256x192 x 8: 215 iterations AP 0.02, 400 gave 0.37, 640 gave 0.27-0.51 over three runs;
#   lr 2e-3 0.29. 128x96 for 461-521 iterations, then 60-80 at 256x192: AP 0.02-0.08 (not kept).
# - the 15-minute budget, shares 5.0 / 3.2 / 4.0 (below): top-1 87.7 % (568 + 108 iterations),
#   mIoU 36.3 (206), AP 0.015 (217), 14.8 min in all. The classifier is the one model that comes
#   close to its target (90 %) in such a budget, so it gets the largest share.
# The fixed plans below keep those iteration counts, except pose: 400 (AP 0.37 above, against
# 0.015 at 217), at about 8 of the plan's minutes.
# - detector (320x320 x 8, backbone from the classifier): 150 iterations at lr 1e-3 gave box AP
#   24.6 (AP50 80.8), 250 at 2e-3 45.4 (AP50 92.4), 2.3 min of training.
PLANS: dict[str, SyntheticPlan] = {
    "mobilenet-v2_8xb32_in1k": SyntheticPlan(
        "classification",
        1100,
        220,
        iterations=568,
        batch_size=32,
        lr=6e-3,
        share=5.0,
        seconds_per_iteration=0.37,
        reserve_minutes=0.6,
        train_size=(96, 96),
        min_crop_scale=0.35,
        zero_init_residual=True,
        finish=Finish(iterations=108, batch_size=16, lr=5e-4, seconds_per_iteration=0.9),
    ),
    "mobilenet-v2-d8_fcn_4xb2-80k_cityscapes-512x1024": SyntheticPlan(
        "cityscapes",
        160,
        20,
        iterations=206,
        batch_size=8,
        lr=1e-3,
        share=3.2,
        seconds_per_iteration=0.93,
        reserve_minutes=1.3,
        train_size=(64, 128),
        scale_wh=(1024, 512),
    ),
    "td-hm_mobilenetv2_8xb64-210e_coco-256x192": SyntheticPlan(
        "coco",
        400,
        40,
        iterations=400,
        batch_size=8,
        lr=1e-3,
        share=4.0,
        seconds_per_iteration=1.2,
        reserve_minutes=0.9,
    ),
    # The same synthetic figures as the pose model (one data set), one class: "person".
    "ssdlite_mobilenetv2-scratch_8xb24-600e_coco": SyntheticPlan(
        "coco",
        400,
        40,
        iterations=250,
        batch_size=8,
        lr=2e-3,
        share=2.0,
        seconds_per_iteration=0.55,
        reserve_minutes=0.5,
    ),
}


def synthetic_recipe(recipe: Recipe, data: Path) -> Recipe:
    """The recipe as trained on synthetic data: same network, input and data layout; synthetic labels."""
    if recipe.task == "classification":
        return recipe_for_data(recipe, data)
    if recipe.task == "segmentation":
        from training.data.synthetic import segmentation_class_styles

        styles = segmentation_class_styles(recipe.num_outputs)
        names = [f"{s.shape} ({s.pattern})" for s in styles]
        colours = [tuple(round(v) for v in s.primary) for s in styles]
        return replace(
            recipe, labels=lambda: list(names), palette=lambda: [(c[0], c[1], c[2]) for c in colours]
        )
    if recipe.task == "detection":
        # The figures are its only objects: a one-class head, not COCO's 80 names it never saw.
        return replace(recipe, num_outputs=1, labels=lambda: [PERSON_LABEL])
    return recipe


_SYNTHETIC_KIND = {
    "classification": "shapes",
    "segmentation": "scenes",
    "pose": "figures",
    "detection": "figures",
}


def synthetic_dataset_name(recipe: Recipe) -> str:
    return f"synthetic {_SYNTHETIC_KIND[recipe.task]} ({recipe.dataset} layout)"


def _released(recipe: Recipe, out: Path) -> Path | None:
    """Export from the released checkpoint if it downloads and verifies; None when offline."""
    if not recipe.checkpoint_url:
        return None
    try:
        fetch(recipe.checkpoint_url, releases=recipe.releases)
    except (urllib.error.URLError, OSError, CheckpointError) as exc:
        print(f"{recipe.name}: released checkpoint unavailable ({exc}); training on synthetic data")
        return None
    from training.export import export_model

    model = recipe.build()
    loaded = load_checkpoint(model, recipe.checkpoint_url, recipe.releases)
    weights = provenance(loaded, recipe, recipe.checkpoint_url)
    return export_model(model, recipe, out, weights)


def planned_minutes(names: list[str]) -> float:
    """What the plans of `names` take on 2 cores, with a margin (data, training, evaluation, export)."""
    total_s = 0.0
    for name in names:
        plan = PLANS[name]
        total_s += plan.iterations * plan.seconds_per_iteration + 60 * plan.reserve_minutes
        if plan.finish:
            total_s += plan.finish.iterations * plan.finish.seconds_per_iteration
    return total_s / 60


def build_defaults(out: Path, work: Path, offline: bool = False, minutes: float | None = None) -> list[Path]:
    """Build each default recipe that `out` lacks; returns the folders written.

    Each trains its plan's fixed, seeded iterations, so a rebuild gives the same model however busy
    the machine is. `minutes` caps the whole: each plan still to train then gets its share of what
    is left of it once the other plans' reserves (data, evaluation, export) are set aside.
    """
    from training.export import export_model

    written = []
    classifier_checkpoint: str | None = None
    began = time.monotonic()
    deadline = began + minutes * 60 if minutes else None
    pending = [name for name in DEFAULT_RECIPES if not list((out / name).glob("*/card.json"))]
    if pending and offline:
        cap = f", capped at {minutes:g} min" if minutes else ""
        duration = f"about {planned_minutes(pending):.0f} min planned on 2 cores, with a margin for load"
        print(f"training {len(pending)} default models: {duration}{cap}")
    for name in DEFAULT_RECIPES:
        recipe = get_recipe(name)
        plan = PLANS[name]
        run_dir = work / "runs" / name
        if recipe.task == "classification" and (run_dir / "latest.pth").is_file():
            classifier_checkpoint = str(_final_checkpoint(run_dir, plan))
        if name not in pending:
            print(f"{name}: already in {out}")
            continue
        folder = None if offline else _released(recipe, out)
        if folder is None:
            seconds = (
                None if deadline is None else _training_seconds(name, pending, deadline - time.monotonic())
            )
            print(f"{name}: training on synthetic data, {_plan_text(plan)}")
            trained, result = _train_synthetic(
                recipe,
                plan,
                seconds,
                work,
                run_dir,
                None if recipe.task == "classification" else classifier_checkpoint,
            )
            planned = plan.iterations + (plan.finish.iterations if plan.finish else 0)
            if result.iterations < planned:
                print(
                    f"{name}: --minutes cut training to {result.iterations} of {planned} planned iterations"
                )
            checkpoint = _final_checkpoint(run_dir, plan)
            if recipe.task == "classification":
                classifier_checkpoint = str(checkpoint)
            weights = Weights(
                source="trained",
                trained_on=synthetic_dataset_name(recipe),
                checkpoint=str(checkpoint),
                note=f"trained {result.iterations} iterations ({result.seconds / 60:.1f} min, Adam, poly decay"
                f"{_finish_text(recipe, plan)}) on synthetic images: it knows synthetic {_SYNTHETIC_KIND[recipe.task]}, "
                "not ImageNet, Cityscapes or real people",
            )
            folder = export_model(result.model, trained, out, weights, result.metrics)
            print(f"{name}: measured on held-out synthetic images {result.metrics}")
        pending.remove(name)
        written.append(folder)
        print(f"{name} -> {folder}")
    cap = f" (capped at {minutes:g} min)" if minutes else ""
    print(f"default models built in {(time.monotonic() - began) / 60:.1f} min{cap}")
    return written


MIN_TRAINING_SECONDS = 20.0


def _training_seconds(name: str, pending: list[str], left_s: float) -> float:
    """`name`'s share of the training time left once every pending plan's reserve is set aside."""
    plans = [PLANS[n] for n in pending]
    training_s = left_s - 60 * sum(p.reserve_minutes for p in plans)
    share = PLANS[name].share / sum(p.share for p in plans)
    return max(MIN_TRAINING_SECONDS, training_s * share)


def _main_share(plan: SyntheticPlan) -> float:
    """The share of a plan's time before its finish phase."""
    if plan.finish is None:
        return 1.0
    main_s = plan.iterations * plan.seconds_per_iteration
    return main_s / (main_s + plan.finish.iterations * plan.finish.seconds_per_iteration)


def _plan_text(plan: SyntheticPlan) -> str:
    finish = f" + {plan.finish.iterations} at the served size" if plan.finish else ""
    return (
        f"{plan.iterations} iterations{finish}, about {planned_minutes_of(plan):.1f} min planned on 2 cores"
    )


def planned_minutes_of(plan: SyntheticPlan) -> float:
    finish_s = plan.finish.iterations * plan.finish.seconds_per_iteration if plan.finish else 0.0
    return (plan.iterations * plan.seconds_per_iteration + finish_s) / 60


def _finish_text(recipe: Recipe, plan: SyntheticPlan) -> str:
    if plan.finish is None or plan.train_size is None:
        return ""
    (h, w), (small_h, small_w) = recipe.input_size, plan.train_size
    return f"; {small_h}x{small_w} px crops, then the served {h}x{w}"


def _final_checkpoint(run_dir: Path, plan: SyntheticPlan) -> Path:
    finished = run_dir / "finish" / "latest.pth"
    return finished if plan.finish and finished.is_file() else run_dir / "latest.pth"


def _train_synthetic(
    recipe: Recipe,
    plan: SyntheticPlan,
    seconds: float | None,
    work: Path,
    run_dir: Path,
    init_backbone: str | None,
) -> tuple[Recipe, TrainResult]:
    """Generate the plan's data set if missing, train (and finish) on it — the plan's iterations,
    or fewer where `seconds` caps them — and evaluate on held-out images."""
    from training.data.synthetic import generate
    from training.engine import TrainOptions, train

    data = work / "data" / plan.dataset
    if not data.is_dir():
        generate(plan.dataset, data, n_train=plan.n_train, n_val=plan.n_val, seed=0)  # type: ignore[arg-type]
    finish = plan.finish
    main_s = None if seconds is None else seconds * _main_share(plan)
    iterations = plan.iterations
    if main_s is not None:
        iterations = max(1, min(iterations, round(main_s / plan.seconds_per_iteration)))
    trained = replace(
        synthetic_recipe(recipe, data),
        schedule=_adam_poly(recipe.schedule, plan.lr, iterations, plan.warmup_iterations),
    )
    options = TrainOptions(
        data=data,
        run_dir=run_dir,
        batch_size=plan.batch_size,
        lr=plan.lr,
        train_size=plan.train_size,
        max_minutes=None if main_s is None else main_s / 60,
        init_backbone=init_backbone,
        zero_init_residual=plan.zero_init_residual and init_backbone is None,
        evaluate=finish is None,
        scale_wh=plan.scale_wh,
        min_crop_scale=plan.min_crop_scale,
    )
    result = train(trained, options)
    if finish is None:
        return trained, result
    finish_s = None if seconds is None else max(seconds - result.seconds, 1.0)
    finish_iterations = finish.iterations
    if finish_s is not None:
        finish_iterations = max(1, min(finish_iterations, round(finish_s / finish.seconds_per_iteration)))
    finishing = replace(
        trained, schedule=_adam_poly(recipe.schedule, finish.lr, finish_iterations, warmup_iterations=0)
    )
    finished = train(
        finishing,
        replace(
            options,
            run_dir=run_dir / "finish",
            batch_size=finish.batch_size,
            lr=finish.lr,
            train_size=None,
            max_minutes=None if finish_s is None else finish_s / 60,
            init_backbone=None,
            zero_init_residual=False,
            init_model=str(run_dir / "latest.pth"),
            evaluate=True,
        ),
    )
    finished.iterations += result.iterations
    finished.seconds += result.seconds
    return finishing, finished
