"""The soak benchmark (bench/soak.py): a few seconds of it here; minutes by hand (see its docstring)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.soak import Interval, judge

ROOT = Path(__file__).resolve().parents[2]


def test_short_soak_run_is_steady_and_prints_a_row_per_interval(
    model_repository: Path, names: dict[str, str]
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--repository", str(model_repository),
         "--model", names["classification"], "--seconds", "6", "--interval", "1.5", "--concurrency", "3",
         "--image-size", "320", "240"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [
        line
        for line in result.stdout.splitlines()
        if line.strip()[:1].isdigit() and "requests in" not in line
    ]
    assert len(rows) >= 3
    assert "p50 ms" in result.stdout and "RSS MiB" in result.stdout and "steady" in result.stdout


def steady(rss: float, latency: float, errors: int = 0) -> Interval:
    return Interval(0.0, rss, [latency] * 20, errors)


def test_judge_passes_a_steady_run_and_names_memory_growth_latency_growth_and_errors() -> None:
    warmup = steady(150.0, 400.0)  # the first interval is the warm-up: never the baseline
    assert judge([warmup, steady(200, 50), steady(210, 60), steady(220, 55)], 50, 1.5) == []
    grown = judge([warmup, steady(200, 50), steady(260, 50)], 50, 1.5)
    assert len(grown) == 1 and "memory grew by 60.0 MiB" in grown[0]
    slower = judge([warmup, steady(200, 50), steady(200, 90)], 50, 1.5)
    assert len(slower) == 1 and "median latency grew" in slower[0]
    failing = judge([warmup, steady(200, 50), steady(200, 50, errors=3)], 50, 1.5)
    assert failing == ["3 requests failed"]
    assert judge([warmup], 50, 1.5)  # too short to judge is a failure, not a pass


def test_short_soak_run_under_the_cheap_attacks_keeps_health_and_memory_bounds(
    model_repository: Path,
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--repository", str(model_repository), "--model", "",
         "--attacks", "needle,slow-bodies,slowloris,big-headers", "--seconds", "8", "--interval", "2",
         "--concurrency", "2", "--image-size", "320", "240"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "healthz ms" in result.stdout and "steady" in result.stdout


def test_judge_under_attack_names_a_slow_probe_and_a_memory_peak() -> None:
    probed = steady(200, 50)
    probed.health_ms, probed.rss_peak_mb = 1500.0, 1100.0
    problems = judge([steady(150, 400), probed], 50, 1.5, health_bound_ms=1000, rss_bound_mb=1024)
    assert [p.split(" ")[0] for p in problems] == ["/healthz", "resident"]
