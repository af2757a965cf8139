"""What one image costs each model: `session.run` at batch 1, the models timed in turn.

    python -m bench.model_cost models/A/1 models/B/1 [--rounds 5] [--runs 3]

Each round runs every model `--runs` times (after a warm-up) on the same zero image of its
input size, with the service's session options (`app.runtime.create_session`), so the models see
the same machine state; the figure is the median over rounds of each round's mean, with the
spread (min–max) over rounds, and each model's ratio to the first.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

from app.config import Settings
from app.runtime import create_session, plan_device
from contract.card import ModelCard
from contract.repository import CARD_FILE, MODEL_FILE


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.model_cost", description=__doc__.split("\n")[0])
    parser.add_argument(
        "folders", nargs="+", type=Path, help="model version folders (card.json + model.onnx)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each model per round (default 3)")
    args = parser.parse_args(argv)

    settings = Settings(device="cpu")
    plan = plan_device(settings)
    models = []
    for folder in args.folders:
        card = ModelCard.read(folder / CARD_FILE)
        session = create_session(folder / MODEL_FILE, settings, plan)
        image = np.zeros((1, card.input.height, card.input.width, 3), np.uint8)
        session.run(None, {"image": image})  # warm-up
        models.append(
            (f"{card.name} {card.input.height}x{card.input.width} {card.precision}", session, image)
        )
    seconds: list[list[float]] = [[] for _ in models]
    for _ in range(args.rounds):
        for i, (_, session, image) in enumerate(models):
            began = time.perf_counter()
            for _ in range(args.runs):
                session.run(None, {"image": image})
            seconds[i].append((time.perf_counter() - began) / args.runs)
    first = statistics.median(seconds[0])
    threads = settings.intra_op_threads or "ONNX Runtime's default"
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(
        f"session.run at batch 1, intra-op threads: {threads}, {args.rounds} rounds × {args.runs}, load {load}"
    )
    print("| model | ms per image (median) | spread over rounds | × first |")
    print("|---|---|---|---|")
    for (name, _, _), times in zip(models, seconds, strict=True):
        median = statistics.median(times)
        print(
            f"| {name} | {1000 * median:.1f} | {1000 * min(times):.1f}–{1000 * max(times):.1f} | "
            f"{median / first:.2f} |"
        )


if __name__ == "__main__":
    main()
