"""Train and evaluate a recipe: the row's optimiser and schedule, checkpoints with resume, logs.

One loop for the three tasks; what differs per task (data, loss, metric) lives in `training.tasks`.
Runs on one device, or under `torchrun` with DistributedDataParallel (NCCL on CUDA, gloo on CPU).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator, Sized
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from training.nets.mobilenet_v2 import zero_init_residual
from training.recipes import Recipe, Schedule
from training.tasks import TaskAdapter, adapter_for


@dataclass(frozen=True)
class TrainOptions:
    """What a run may change from the recipe's row, for small machines and short demos."""

    data: Path
    run_dir: Path
    epochs: int | None = None  # epoch-based rows (classification, pose)
    iterations: int | None = None  # iteration-based rows (segmentation); also caps epoch-based ones
    batch_size: int | None = None  # total over all processes
    lr: float | None = None  # default: the row's lr scaled linearly with the batch size
    train_size: tuple[int, int] | None = None  # (h, w) of training crops; default the recipe's
    workers: int = 2
    device: str = "auto"
    amp: bool = True  # mixed precision, CUDA only
    resume: bool = False
    init_backbone: str | None = None  # classifier checkpoint for the backbone (OpenMMLab's `pretrained`)
    init_model: str | None = None  # a run's latest.pth to continue from, e.g. at a larger size
    zero_init_residual: bool = False  # from scratch: residual blocks start as the identity
    evaluate: bool = True  # False: skip the held-out evaluation (a phase that another one continues)
    max_minutes: float | None = None  # stop early, keeping the schedule of the planned run
    seed: int = 0
    # RandomResizedCrop's smallest area (the row's 0.08 loses a small object in many crops)
    min_crop_scale: float | None = None
    # (w, h) segmentation resize target; default the recipe's (small synthetic scenes want less)
    scale_wh: tuple[int, int] | None = None
    # COCO pose evaluation: a detector's person boxes (COCO results JSON) instead of ground truth
    person_boxes: Path | None = None


@dataclass
class TrainResult:
    model: nn.Module
    metrics: dict[str, float]
    iterations: int
    seconds: float


def lr_at(schedule: Schedule, iteration: int, total: int, iters_per_epoch: int, total_epochs: int) -> float:
    """The row's learning rate at `iteration` (0-based) of a run of `total` iterations.

    Epoch milestones are scaled to the run's length, so a shortened run keeps the row's shape.
    """
    epoch = iteration // max(iters_per_epoch, 1)
    if schedule.policy == "poly":
        factor_lr = (schedule.lr - schedule.min_lr) * (
            1 - iteration / total
        ) ** schedule.power + schedule.min_lr
    elif schedule.policy == "step":
        factor_lr = schedule.lr * schedule.gamma**epoch
    elif schedule.policy == "cosine":  # mmengine's CosineAnnealingLR to eta_min 0, by epoch
        factor_lr = schedule.lr * 0.5 * (1 + math.cos(math.pi * epoch / max(total_epochs, 1)))
    else:
        row_epochs = schedule.epochs or total_epochs
        milestones = [m * total_epochs / row_epochs for m in schedule.milestones]
        factor_lr = schedule.lr * schedule.gamma ** sum(epoch >= m for m in milestones)
    if iteration < schedule.warmup_iterations:
        ratio = schedule.warmup_ratio + (1 - schedule.warmup_ratio) * iteration / schedule.warmup_iterations
        factor_lr *= ratio
    return factor_lr


def shortened(schedule: Schedule, total: int, row_total: int) -> Schedule:
    """The schedule of a run `total` iterations long where the row runs `row_total`: its warm-up
    shrinks in proportion (the pose rows' 500 iterations would otherwise outlast a 3-iteration run)."""
    if not schedule.warmup_iterations or total >= row_total:
        return schedule
    warmup = max(1, round(schedule.warmup_iterations * total / row_total))
    return replace(schedule, warmup_iterations=warmup)


def build_optimizer(schedule: Schedule, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if schedule.optimizer == "adam":
        return torch.optim.Adam(params, lr=schedule.lr, weight_decay=schedule.weight_decay)
    return torch.optim.SGD(
        params, lr=schedule.lr, momentum=schedule.momentum, weight_decay=schedule.weight_decay
    )


def _distributed() -> tuple[int, int]:
    """(rank, world size); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def _device(name: str, rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        local = int(os.environ.get("LOCAL_RANK", rank))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device(name)


def _cycle(loader: DataLoader[Any], sampler: DistributedSampler[Any] | None) -> Iterator[Any]:
    epoch = 0
    while True:
        if sampler is not None:
            sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def train(recipe: Recipe, options: TrainOptions) -> TrainResult:
    """Train `recipe` on `options.data`; rank 0 evaluates, logs and checkpoints into `run_dir`."""
    rank, world = _distributed()
    if world > 1 and options.max_minutes:
        raise ValueError("max_minutes stops one process at a time: use it in single-process runs")
    torch.manual_seed(options.seed + rank)
    device = _device(options.device, rank)
    task: TaskAdapter = adapter_for(recipe, options)
    schedule = recipe.schedule
    batch_size = options.batch_size or schedule.batch_size
    lr = options.lr if options.lr is not None else schedule.lr * batch_size / schedule.batch_size
    schedule = replace(schedule, lr=lr, min_lr=min(schedule.min_lr, lr))

    dataset = task.train_dataset()
    sampler: DistributedSampler[Any] | None = (
        DistributedSampler(dataset, world, rank, shuffle=True, seed=options.seed) if world > 1 else None
    )
    per_process = max(1, batch_size // world)
    loader = DataLoader(
        dataset,
        batch_size=per_process,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=options.workers,
        collate_fn=task.collate,
        drop_last=len(cast(Sized, dataset)) >= per_process,
        persistent_workers=options.workers > 0,
    )
    iters_per_epoch = max(1, len(loader))
    if schedule.iterations is not None and options.epochs is None:
        total = options.iterations or schedule.iterations
        total_epochs = math.ceil(total / iters_per_epoch)
    else:
        total_epochs = options.epochs or schedule.epochs or 1
        total = total_epochs * iters_per_epoch
        if options.iterations:
            total = min(total, options.iterations)
    row_total = (
        schedule.iterations
        if schedule.iterations is not None and options.epochs is None
        else (schedule.epochs or total_epochs) * iters_per_epoch
    )
    schedule = shortened(schedule, total, row_total)

    # NHWC images arrive permuted, i.e. already channels-last; weights to match: ~5 % per step on CPU.
    model = recipe.build().to(device, memory_format=torch.channels_last)  # type: ignore[call-overload]
    if options.zero_init_residual:
        zero_init_residual(model)
    if options.init_backbone:
        from training.checkpoints import load_backbone

        load_backbone(model, options.init_backbone)
    if options.init_model:
        state = torch.load(options.init_model, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
    if world > 1:
        if device.type == "cuda" and recipe.task == "segmentation":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        # The auxiliary head is unused at eval and some heads skip branches: tolerate unused params.
        model = nn.parallel.DistributedDataParallel(
            model, find_unused_parameters=recipe.task == "segmentation"
        )
    optimizer = build_optimizer(schedule, model)
    use_amp = options.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    run_dir = options.run_dir
    checkpoint = run_dir / "latest.pth"
    start = 0
    if options.resume and checkpoint.is_file():
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        _unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = int(state["iteration"])
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)

    log_path = run_dir / "log.jsonl"
    began = time.monotonic()
    deadline = began + options.max_minutes * 60 if options.max_minutes else math.inf
    model.train()
    batches = _cycle(loader, sampler)
    bar = tqdm(
        range(start, total), desc=recipe.name[:40], disable=rank != 0, dynamic_ncols=True, mininterval=2
    )
    seen, tick = 0, time.monotonic()
    iteration = start
    for iteration in bar:
        # Under a time cap the schedule follows whichever runs out first, iterations or minutes,
        # so a slower machine still ends on a decayed learning rate instead of being cut mid-way.
        progress = iteration
        if options.max_minutes and options.max_minutes > 0:
            elapsed_share = (time.monotonic() - began) / (options.max_minutes * 60)
            progress = min(total - 1, max(iteration, int(elapsed_share * total)))
        current_lr = lr_at(schedule, progress, total, iters_per_epoch, total_epochs)
        for group in optimizer.param_groups:
            group["lr"] = current_lr
        batch = next(batches)
        with torch.autocast(device.type, enabled=use_amp):
            loss = task.loss(model, batch, device)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        seen += task.batch_images(batch) * world
        out_of_time = time.monotonic() > deadline
        if rank == 0 and (iteration % 10 == 0 or iteration == total - 1 or out_of_time):
            now = time.monotonic()
            rate = seen / max(now - tick, 1e-9)
            seen, tick = 0, now
            bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{current_lr:.2e}", img_s=f"{rate:.1f}")
            with open(log_path, "a", encoding="utf-8") as f:
                row = {"iteration": iteration, "loss": loss.item(), "lr": current_lr, "images_per_s": rate}
                f.write(json.dumps(row) + "\n")
        if rank == 0 and (iteration + 1) % iters_per_epoch == 0:
            _save(checkpoint, model, optimizer, iteration + 1, options.data, recipe)
        if out_of_time:
            if rank == 0:
                bar.write(
                    f"time budget of {options.max_minutes} min reached at iteration {iteration + 1}/{total}"
                )
            break
    bar.close()
    done = iteration + 1
    metrics: dict[str, float] = {}
    if rank == 0:
        _save(checkpoint, model, optimizer, done, options.data, recipe)
        if options.evaluate:
            metrics = task.evaluate(_unwrap(model), device)
            with open(log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"iteration": done, "eval": metrics}) + "\n")
        plot_curves(log_path, run_dir / "curves.png")
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    trained = _unwrap(model).cpu().to(memory_format=torch.contiguous_format).eval()  # type: ignore[call-overload]
    return TrainResult(trained, metrics, done, time.monotonic() - began)


def evaluate(
    recipe: Recipe, model: nn.Module, data: Path, device: str = "auto", person_boxes: Path | None = None
) -> dict[str, float]:
    options = TrainOptions(data=data, run_dir=Path("."), workers=0, person_boxes=person_boxes)
    dev = _device(device, 0)
    return adapter_for(recipe, options).evaluate(model.to(dev).eval(), dev)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _save(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, iteration: int, data: Path, recipe: Recipe
) -> None:
    tmp = path.with_suffix(".tmp")
    state = {
        "model": _unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "iteration": iteration,
        # Read back by export: provenance, and the classes of a model trained on its own data.
        "trained_on": str(data),
        "labels": recipe.labels(),
    }
    torch.save(state, tmp)
    tmp.replace(path)


def plot_curves(log_path: Path, png_path: Path) -> None:
    """Loss and learning rate against iteration, from the JSON-lines log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in log_path.read_text(encoding="utf-8").splitlines()]
    rows = [r for r in rows if "loss" in r]
    if not rows:
        return
    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(10, 3.5))
    its = [r["iteration"] for r in rows]
    ax_loss.plot(its, [r["loss"] for r in rows])
    ax_loss.set(xlabel="iteration", ylabel="loss", yscale="log", title="training loss")
    ax_lr.plot(its, [r["lr"] for r in rows])
    ax_lr.set(xlabel="iteration", ylabel="learning rate", title="schedule")
    fig.tight_layout()
    fig.savefig(png_path, dpi=80)
    plt.close(fig)
