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
    summaries = [summarize(get_recipe(n)) for n in names]
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
    from app.card import Weights
    from training.checkpoints import load_checkpoint
    from training.export import export_model

    for name in args.recipe:
        recipe = get_recipe(name)
        model = recipe.build()
        if args.checkpoint:
            digest, layout = load_checkpoint(model, args.checkpoint)
            weights = Weights(
                source=layout,
                checkpoint=args.checkpoint,
                checkpoint_sha256=digest,
                trained_on=recipe.dataset if layout == "openmmlab" else "imagenet-1k",
            )
        else:
            weights = Weights(
                source="random-init", note="freshly initialised weights: predictions are meaningless"
            )
        target = export_model(model, recipe, Path(args.out), weights)
        print(f"exported {recipe.name} -> {target}")


def _cmd_defaults(args: argparse.Namespace) -> None:
    from app.card import Weights
    from training.export import export_model
    from training.recipes import DEFAULT_RECIPES

    for name in DEFAULT_RECIPES:
        if list((Path(args.out) / name).glob("*/card.json")):
            print(f"{name}: already in {args.out}")
            continue
        recipe = get_recipe(name)
        weights = Weights(
            source="random-init", note="freshly initialised weights: predictions are meaningless"
        )
        print(f"exported {name} -> {export_model(recipe.build(), recipe, Path(args.out), weights)}")


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
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_summary)

    p = sub.add_parser("export", help="export recipes to ONNX + card under the model repository")
    p.add_argument("recipe", nargs="+")
    p.add_argument("--checkpoint", help="OpenMMLab or torchvision .pth, a path or a URL (checked by hash)")
    p.add_argument("--out", default="models", help="model repository (default: models)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("defaults", help="build the three default models where the repository lacks them")
    p.add_argument("--out", default="models", help="model repository (default: models)")
    p.set_defaults(func=_cmd_defaults)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (KeyError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
