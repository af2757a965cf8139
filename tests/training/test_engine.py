from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from training.data.synthetic import generate
from training.defaults import synthetic_recipe
from training.engine import TrainOptions, lr_at, train
from training.recipes import Schedule, get_recipe

ROOT = Path(__file__).resolve().parents[2]


def test_poly_schedule_runs_from_lr_to_min_lr() -> None:
    s = Schedule("sgd", 0.01, 8, "poly", iterations=100, min_lr=1e-4)
    assert lr_at(s, 0, 100, 10, 10) == pytest.approx(0.01)
    assert lr_at(s, 50, 100, 10, 10) == pytest.approx((0.01 - 1e-4) * 0.5**0.9 + 1e-4)
    assert lr_at(s, 100, 100, 10, 10) == pytest.approx(1e-4)


def test_step_schedule_decays_every_epoch() -> None:
    s = Schedule("sgd", 0.045, 256, "step", epochs=300, gamma=0.98)
    assert lr_at(s, 9, 3000, 10, 300) == pytest.approx(0.045)
    assert lr_at(s, 25, 3000, 10, 300) == pytest.approx(0.045 * 0.98**2)


def test_multistep_milestones_scale_with_a_shortened_run_and_warm_up_first() -> None:
    s = Schedule("adam", 5e-4, 512, "multistep", epochs=210, milestones=(170, 200), warmup_iterations=500)
    assert lr_at(s, 0, 10_000, 100, 21) == pytest.approx(5e-4 * 0.001)
    assert lr_at(s, 250, 10_000, 100, 21) == pytest.approx(5e-4 * (0.001 + 0.999 * 0.5))
    # 21 epochs instead of 210: the drops come at epochs 17 and 20.
    assert lr_at(s, 16 * 100, 2100, 100, 21) == pytest.approx(5e-4)
    assert lr_at(s, 17 * 100, 2100, 100, 21) == pytest.approx(5e-5)
    assert lr_at(s, 20 * 100, 2100, 100, 21) == pytest.approx(5e-6)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    generate("classification", root, n_train=48, n_val=24, seed=3)
    return root


def test_training_learns_and_resume_continues_from_the_checkpoint(shapes: Path, tmp_path: Path) -> None:
    recipe = synthetic_recipe(get_recipe("mobilenet-v2_8xb32_in1k"), shapes)
    options = TrainOptions(
        data=shapes, run_dir=tmp_path, iterations=12, batch_size=16, lr=0.05, train_size=(64, 64), workers=0
    )
    result = train(recipe, options)
    assert result.iterations == 12
    assert set(result.metrics) == {"top1", "top5"}
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    steps = [row for row in log if "loss" in row]
    assert [row["iteration"] for row in steps] == [0, 10, 11]
    assert all(row["loss"] > 0 and row["images_per_s"] > 0 for row in steps)
    # The row's per-epoch step decay (× 0.98), on 3 iterations an epoch.
    assert steps[1]["lr"] == pytest.approx(0.05 * 0.98**3)
    assert (tmp_path / "curves.png").stat().st_size > 1000
    assert torch.load(tmp_path / "latest.pth", weights_only=True)["iteration"] == 12

    resumed = train(recipe, replace(options, iterations=15, resume=True))
    assert resumed.iterations == 15
    iterations = [
        row["iteration"] for row in map(json.loads, (tmp_path / "log.jsonl").read_text().splitlines())
    ]
    assert 12 not in iterations[: iterations.index(11) + 1] and max(i for i in iterations) == 15


@pytest.mark.slow
def test_torchrun_trains_with_two_cpu_processes_on_gloo(shapes: Path, tmp_path: Path) -> None:
    with socket.socket() as probe:  # a free port for the rendezvous (0 is not accepted there)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(port),
        "-m", "training", "train", "mobilenet-v2_8xb32_in1k", "--data", str(shapes), "--iterations", "3",
        "--batch-size", "8", "--train-size", "64x64", "--workers", "0", "--run-dir", str(tmp_path), "--no-export",
    ]  # fmt: skip
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    state = torch.load(tmp_path / "latest.pth", weights_only=True)
    assert state["iteration"] == 3
    # Each process saw 4 of the 8 images per step; the log counts images over both.
    assert "mobilenet-v2_8xb32_in1k: 3 iterations" in done.stdout


def test_a_run_continues_from_another_runs_weights_and_may_skip_evaluation(
    shapes: Path, tmp_path: Path
) -> None:
    recipe = synthetic_recipe(get_recipe("mobilenet-v2_8xb32_in1k"), shapes)
    first = TrainOptions(
        data=shapes, run_dir=tmp_path / "small", iterations=2, batch_size=8, train_size=(64, 64), workers=0
    )
    assert train(recipe, replace(first, evaluate=False)).metrics == {}
    assert not any(
        "eval" in row for row in map(json.loads, (tmp_path / "small/log.jsonl").read_text().splitlines())
    )
    started = torch.load(tmp_path / "small/latest.pth", weights_only=True)["model"]

    # At lr 0 the weights stay where the first run left them (BatchNorm statistics do move).
    finish = replace(
        first,
        run_dir=tmp_path / "full",
        train_size=None,
        lr=0.0,
        iterations=1,
        init_model=str(tmp_path / "small/latest.pth"),
    )
    result = train(recipe, finish)
    assert set(result.metrics) == {"top1", "top5"}
    finished = result.model.state_dict()
    weights = [k for k in started if k.endswith("weight")]
    assert weights and all(torch.equal(started[k], finished[k]) for k in weights)


def test_a_time_cap_anneals_the_schedule_by_the_clock_and_logs_where_it_stopped(
    shapes: Path, tmp_path: Path
) -> None:
    recipe = synthetic_recipe(get_recipe("mobilenet-v2_8xb32_in1k"), shapes)
    poly = replace(recipe.schedule, policy="poly", iterations=100_000, epochs=None, min_lr=0.0, power=1.0)
    options = TrainOptions(
        data=shapes,
        run_dir=tmp_path,
        batch_size=4,
        lr=0.01,
        train_size=(64, 64),
        workers=0,
        max_minutes=0.05,
        evaluate=False,
    )
    result = train(replace(recipe, schedule=poly), options)
    assert result.iterations < 100_000
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    last = rows[-1]
    assert last["iteration"] == result.iterations - 1  # the row of the step where time ran out
    # By iterations alone the rate would still be ~0.01; by the clock it has decayed most of the way.
    assert last["lr"] < 0.5 * 0.01
