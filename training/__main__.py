"""`python -m training COMMAND`: the recipes, their sizes, export, training and evaluation."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from training.recipes import RECIPES, get_recipe


def _cmd_recipes(args: argparse.Namespace) -> None:
    rows = [
        (
            r.name,
            r.task,
            r.dataset,
            f"{r.input_size[0]}x{r.input_size[1]}",
            ", ".join(f"{k} {v:g}" for k, v in r.published.items()),
            "yes" if r.checkpoint_url else "no",
        )
        for r in RECIPES.values()
    ]
    _print_table(("recipe", "task", "dataset", "input HxW", "published", "checkpoint"), rows)


def _cmd_summary(args: argparse.Namespace) -> None:
    from training.summary import summarize

    names = list(RECIPES) if args.recipe == "all" else [args.recipe]
    summaries = []
    for i, name in enumerate(names, start=1):
        if len(names) > 1:  # `all` takes about a minute on 2 cores: say where it is
            print(f"[{i}/{len(names)}] {name}", file=sys.stderr, flush=True)
        summaries.append(summarize(get_recipe(name)))
    if args.json:
        print(json.dumps([s.as_dict() for s in summaries], indent=2))
        return
    rows = [
        (
            s.recipe,
            f"{s.input_hw[0]}x{s.input_hw[1]}",
            f"{s.params:,}",
            f"{s.params / 1e6:.2f}",
            f"{s.macs / 1e9:.3f}",
            f"{s.flops / 1e9:.3f}",
            ", ".join(f"{k} {v:g}" for k, v in get_recipe(s.recipe).published.items()),
        )
        for s in summaries
    ]
    _print_table(("recipe", "input", "params", "M", "GMACs", "GFLOPs (mmcv)", "published"), rows)


def _cmd_export(args: argparse.Namespace) -> None:
    from contract.card import Weights
    from training.checkpoints import load_checkpoint, provenance, run_metadata
    from training.data.classes import recipe_for_run
    from training.export import export_model

    for name in args.recipe:
        recipe = get_recipe(name).at_test_scale() if args.test_scale else get_recipe(name)
        if args.checkpoint:
            recipe = recipe_for_run(recipe, run_metadata(args.checkpoint))
        model = recipe.build()
        if args.checkpoint:
            loaded = load_checkpoint(model, args.checkpoint, recipe.releases)
            weights = provenance(loaded, recipe, args.checkpoint)
            print(f"{recipe.name}: weights {weights.source} ({weights.note})")
        else:
            weights = Weights(
                source="random-init", note="freshly initialised weights: predictions are meaningless"
            )
        int8 = Path(args.int8) if args.int8 else None
        target = export_model(model, recipe, Path(args.out), weights, fp16=args.fp16, int8_images=int8)
        print(f"exported {recipe.name} -> {target}")


def _cmd_defaults(args: argparse.Namespace) -> None:
    from training.defaults import build_defaults

    build_defaults(Path(args.out), Path(args.work), offline=args.offline, minutes=args.minutes)


def _cmd_export_triton(args: argparse.Namespace) -> None:
    from training.triton import export_triton

    written = export_triton(
        Path(args.models),
        Path(args.out),
        max_batch_size=args.max_batch_size,
        max_queue_delay_us=args.max_queue_delay_us,
        instance_count=args.instances,
        instance_kind=args.kind,
    )
    for folder in written:
        print(f"{folder.name} -> {folder}")


def _size(text: str) -> tuple[int, int]:
    h, _, w = text.lower().partition("x")
    return int(h), int(w)


def _cmd_train(args: argparse.Namespace) -> None:
    from contract.card import Weights
    from training.data.classes import recipe_for_data
    from training.engine import TrainOptions, train
    from training.export import export_model

    recipe = recipe_for_data(get_recipe(args.recipe), Path(args.data))
    options = TrainOptions(
        data=Path(args.data),
        run_dir=Path(args.run_dir or f"runs/{recipe.name}"),
        epochs=args.epochs,
        iterations=args.iterations,
        batch_size=args.batch_size,
        lr=args.lr,
        train_size=_size(args.train_size) if args.train_size else None,
        workers=args.workers,
        device=args.device,
        resume=args.resume,
        init_backbone=args.init_backbone,
        max_minutes=args.max_minutes,
        zero_init_residual=args.zero_init_residual,
    )
    result = train(recipe, options)
    if not result.metrics:  # not rank 0 under torchrun
        return
    published = ", ".join(f"{k} {v:g}" for k, v in recipe.published.items())
    print(
        f"{recipe.name}: {result.iterations} iterations in {result.seconds / 60:.1f} min; "
        f"measured {result.metrics} (published: {published})"
    )
    if args.export:
        weights = Weights(
            source="trained", trained_on=str(args.data), checkpoint=str(options.run_dir / "latest.pth")
        )
        print(f"exported -> {export_model(result.model, recipe, Path(args.out), weights, result.metrics)}")


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from training.data.classes import recipe_for_data
    from training.engine import evaluate

    if not args.checkpoint and not args.random_weights:
        raise ValueError(
            "evaluate needs --checkpoint (a run's latest.pth, a released checkpoint's URL or path); "
            "--random-weights evaluates a freshly initialised network on purpose"
        )
    recipe = recipe_for_data(get_recipe(args.recipe), Path(args.data))
    if args.checkpoint:
        from training.checkpoints import load_checkpoint, provenance, run_metadata
        from training.data.classes import recipe_for_run

        recipe = recipe_for_run(recipe, run_metadata(args.checkpoint))
        model = recipe.build()
        weights = provenance(
            load_checkpoint(model, args.checkpoint, recipe.releases), recipe, args.checkpoint
        )
        print(f"evaluating {weights.source} weights ({weights.note})")
    else:
        model = recipe.build()
    boxes = Path(args.person_boxes) if args.person_boxes else None
    metrics = evaluate(recipe, model, Path(args.data), args.device, boxes)
    rows = [
        (k, f"{v:g}", f"{recipe.published[k]:g}" if k in recipe.published else "") for k, v in metrics.items()
    ]
    _print_table(("metric", "measured", "published"), rows)


def _cmd_synth(args: argparse.Namespace) -> None:
    from training.data.synthetic import generate

    root = generate(args.task, Path(args.out), n_train=args.train, n_val=args.val, seed=args.seed)
    print(f"wrote a synthetic {args.task} data set to {root or args.out}")


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A GitHub-flavoured Markdown table, so the output can go into the README as it is."""
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("recipes", help="list the recipes").set_defaults(func=_cmd_recipes)

    p = sub.add_parser("summary", help="parameters and FLOPs at the recipe's input size")
    p.add_argument("recipe", help="a recipe name, or 'all'")
    p.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")
    p.set_defaults(func=_cmd_summary)

    p = sub.add_parser("export", help="export recipes to ONNX + card under the model repository")
    p.add_argument("recipe", nargs="+", help="recipe names (`python -m training recipes` lists them)")
    p.add_argument("--checkpoint", help="OpenMMLab or torchvision .pth, a path or a URL (checked by hash)")
    p.add_argument("--out", default="models", help="model repository (default: models)")
    p.add_argument(
        "--fp16",
        action="store_true",
        help="float16 weights and arithmetic (for GPUs), checked against PyTorch under a looser tolerance",
    )
    p.add_argument(
        "--int8",
        metavar="IMAGES",
        help="CPU int8 (static QDQ) calibrated on half of this folder's images as the service prepares "
        "them, refused if it disagrees with float32 on the other half beyond the task's tolerance",
    )
    p.add_argument(
        "--test-scale",
        action="store_true",
        help="segmentation: the graph takes the row's test scale (Cityscapes 1024x2048, where the "
        "table's mIoU is measured) instead of the training crop",
    )
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("train", help="train a recipe on a data set in its users' layout, evaluate, export")
    p.add_argument("recipe", help="a recipe name (`python -m training recipes` lists them)")
    p.add_argument(
        "--data", required=True, help="data set root (ImageNet folders, Cityscapes, ADE20K, COCO, MPII)"
    )
    p.add_argument("--run-dir", help="checkpoints, log.jsonl and curves.png (default: runs/RECIPE)")
    p.add_argument("--epochs", type=int, help="shorten an epoch-based schedule (milestones scale with it)")
    p.add_argument("--iterations", type=int, help="shorten an iteration-based schedule, or cap any")
    p.add_argument("--batch-size", type=int, help="total batch size (lr scales linearly unless --lr)")
    p.add_argument(
        "--lr", type=float, help="peak learning rate (default: the row's, scaled with the batch size)"
    )
    p.add_argument("--train-size", help="HxW of training crops, e.g. 256x512 (default: the recipe's)")
    p.add_argument("--workers", type=int, default=2, help="data-loading processes (default: 2)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/latest.pth")
    p.add_argument("--init-backbone", help="classifier checkpoint for the backbone (path or URL)")
    p.add_argument("--max-minutes", type=float, help="stop after this long, then evaluate and export")
    p.add_argument(
        "--zero-init-residual",
        action="store_true",
        help="from scratch: start each residual block as the identity (trains faster)",
    )
    p.add_argument("--no-export", dest="export", action="store_false", help="train and evaluate only")
    p.add_argument("--out", default="models", help="model repository for the export")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="the recipe's table metric on a data set, beside the published one")
    p.add_argument("recipe", help="a recipe name (`python -m training recipes` lists them)")
    p.add_argument("--data", required=True, help="data set root in its users' layout (its val split is used)")
    p.add_argument("--checkpoint", help="a run's latest.pth, or an OpenMMLab/torchvision checkpoint")
    p.add_argument(
        "--random-weights", action="store_true", help="evaluate freshly initialised weights (a baseline)"
    )
    p.add_argument(
        "--person-boxes",
        help="COCO pose: a detector's person boxes (COCO results JSON), as the tables used; "
        "default the ground-truth boxes",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("synth", help="write a small synthetic data set in a real layout")
    p.add_argument(
        "task",
        choices=["classification", "cityscapes", "ade20k", "coco", "mpii"],
        help="which layout to write",
    )
    p.add_argument("--out", required=True, help="folder to write the data set into")
    p.add_argument("--train", type=int, default=200, help="training images (default: 200)")
    p.add_argument("--val", type=int, default=50, help="validation images (default: 50)")
    p.add_argument("--seed", type=int, default=0, help="the same seed writes the same files (default: 0)")
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("defaults", help="build the four default models where the repository lacks them")
    p.add_argument("--out", default="models", help="model repository (default: models)")
    p.add_argument("--work", default=".cache/defaults", help="synthetic data and training runs")
    p.add_argument("--offline", action="store_true", help="do not try to download released checkpoints")
    p.add_argument(
        "--minutes",
        type=float,
        help="cap the whole build at this many minutes, cutting iterations (and saying so); by default "
        "every model trains its fixed, seeded plan, the same model on a busy machine as on a quiet one",
    )
    p.set_defaults(func=_cmd_defaults)

    p = sub.add_parser("export-triton", help="write a Triton model repository from the model repository")
    p.add_argument("--models", default="models", help="our model repository (default: models)")
    p.add_argument("--out", required=True, help="the Triton model repository to write")
    # Defaults as the service's MAX_BATCH_SIZE=8 and MAX_QUEUE_DELAY_MS=5.
    p.add_argument("--max-batch-size", type=int, default=8, help="Triton's max_batch_size (default: 8)")
    p.add_argument(
        "--max-queue-delay-us", type=int, default=5000, help="dynamic batching delay (default: 5000)"
    )
    p.add_argument("--instances", type=int, default=1, help="model instances per GPU (default: 1)")
    p.add_argument(
        "--kind",
        default="KIND_GPU",
        choices=["KIND_GPU", "KIND_CPU", "KIND_AUTO"],
        help="Triton instance kind",
    )
    p.set_defaults(func=_cmd_export_triton)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (KeyError, ValueError, RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
