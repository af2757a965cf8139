"""The benchmark, run briefly: it must produce its table, JSON and plot (never judged on speed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from contract.card import ModelCard

ROOT = Path(__file__).resolve().parents[1]


def classifier_name(repository: Path) -> str:
    cards = (ModelCard.read(p) for p in sorted(repository.glob("*/*/card.json")))
    return next(card.name for card in cards if card.task == "classification")


def test_short_run_writes_a_table_a_json_file_and_a_plot(model_repository: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    command = [
        sys.executable, "-m", "bench",
        "--tasks", "classification", "--concurrency", "1,4", "--requests", "8", "--duration", "20",
        "--baseline", "--unbatched", "--repeats", "2", "--models", str(model_repository), "--out", str(out),
        "--set", f"MODELS={classifier_name(model_repository)}", "--set", "MAX_BATCH_SIZE=2",
        "--sizes", "320x240,640x480", "--per-size", "1", "--limit-seconds", "0.3", "--no-ceiling",
    ]  # fmt: skip
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]

    report = json.loads((out / "results.json").read_text())
    assert report["ceiling"] == []
    steps = {(s["server"], s["concurrency"], s["repeat"]): s for s in report["steps"]}
    servers = ("service", "service-unbatched", "naive")
    assert set(steps) == {(k, c, r) for k in servers for c in (1, 4) for r in (0, 1)}
    # Batching off means one image per session.run, even with 4 clients waiting.
    assert (
        steps["service-unbatched", 4, 0]["mean_batch"] == steps["service-unbatched", 4, 1]["mean_batch"] == 1
    )
    for step in steps.values():
        assert step["task"] == "classification"
        assert step["sent"] == step["ok"] == 8 and step["errors"] == {}
        assert 0 < step["p50_ms"] <= step["p95_ms"] <= step["p99_ms"] <= step["max_ms"]
        assert step["images_per_s"] > 0 and step["ratio_to_limit"] > 0
        assert step["mean_batch"] >= 1
        assert step["client_cpu_ms_per_request"] > 0
    limit = report["limits"]["classification"]
    assert limit["images_per_s"] > 0 and limit["batch_size"] in (1, 2) and limit["single_image_ms"] > 0
    parts = limit["parts"]  # the pipelined bound cannot beat the run alone, nor the cores' CPU
    bound, batch = parts["bound_images_per_s"], str(parts["bound_batch_size"])
    assert 0 < bound <= parts["run_images_per_s"][batch]
    assert bound <= parts["cores"] * 1e3 / (parts["prepare_cpu_ms"] + parts["run_cpu_ms"][batch]) * 1.0001
    assert all(s["ratio_to_bound"] > 0 for s in steps.values())
    service = next(s for s in report["servers"] if s["kind"] == "service")
    assert service["ready_s"] > 0 and service["peak_rss_mib"] > 100
    assert {t["name"] for t in report["targets"]} >= {
        "classification, 1 client: p50",
        "service peak RSS",
        "service ready after start",
    }

    table = (out / "results.md").read_text()
    assert "| service | classification | 1 | 1 |" in table and "| naive | classification | 4 | 2 |" in table
    # The comparison: each server's median of the two repeats, with their range, against the naive one.
    assert (
        "median of 2 interleaved repeat(s)" in table
        and "| clients | service | service-unbatched | naive |" in table
    )
    assert table in run.stdout  # the same table on stdout
    assert (out / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list((out / "images").glob("*.jpg"))) == 2


def test_tensor_requests_against_session_run_alone_and_the_front_ends_ceiling(
    model_repository: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bench"
    classifier = classifier_name(model_repository)
    command = [
        sys.executable, "-m", "bench",
        "--tasks", "tensors", "--concurrency", "2", "--requests", "8", "--duration", "20",
        "--baseline", "--models", str(model_repository), "--out", str(out), "--set", f"MODELS={classifier}",
        "--sizes", "320x240", "--per-size", "2", "--limit-seconds", "0.3", "--ceiling-clients", "3",
    ]  # fmt: skip
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]

    report = json.loads((out / "results.json").read_text())
    # Only the service speaks the Open Inference Protocol: the naive server sits the tensors out.
    assert [(s["server"], s["task"], s["model"]) for s in report["steps"]] == [
        ("service", "tensors", classifier)
    ]
    step = report["steps"][0]
    assert step["sent"] == step["ok"] == 8 and step["errors"] == {} and step["ratio_to_limit"] > 0
    limit = report["limits"]["tensors"]  # session.run alone: nothing is decoded
    assert limit["single_prepare_ms"] == 0 and limit["single_run_ms"] == limit["single_image_ms"] > 0
    assert limit["schedule"] in ("run alone", "2 runs at once") and limit["parts"] is None
    assert len(list((out / "tensors" / classifier).glob("*.bin"))) == 2

    ceiling = report["ceiling"]
    cores = len(os.sched_getaffinity(0))
    servers = ["zero-cost, 1 core"] + ([f"zero-cost, {cores} cores"] if cores > 1 else [])
    assert sorted({s["server"] for s in ceiling}) == sorted(servers)
    assert sorted((s["server"], s["task"]) for s in ceiling) == sorted(
        (server, task) for server in servers for task in ("classification", "tensors")
    )
    for step in ceiling:
        assert step["model"] == f"zero-cost-{classifier}" and step["concurrency"] == 3
        assert step["ok"] == step["sent"] == 32 and step["errors"] == {}
        assert step["server_cpu_ms_per_request"] > 0
    table = (out / "results.md").read_text()
    assert "### The front end's own ceiling: the service on a zero-cost classifier, 3 clients" in table
    assert "| tensor to /v2 (binary) | zero-cost, 1 core |" in table
    assert "tensors, 16 clients" not in table  # no 16-client step in this run: no target


def test_an_empty_model_repository_says_to_build_the_models(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--models", str(tmp_path), "--out", str(tmp_path / "out")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode != 0
    assert "make models" in run.stderr


def test_perf_analyzer_mode_says_why_it_is_skipped_without_the_binary(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "PERF_ANALYZER": str(tmp_path / "no-such-binary")}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--perf-analyzer", "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "perf_analyzer skipped: no perf_analyzer binary" in done.stdout
    assert not (tmp_path / "out").exists()  # nothing started, nothing written


def test_perf_analyzer_summary_is_parsed_into_throughput_and_percentiles() -> None:
    from bench.perf_analyzer import parse_output

    text = (
        "Request concurrency: 4\n  Client: \n    Request count: 3973\n    Throughput: 220.276 infer/sec\n"
        "    p50 latency: 17725 usec\n    p90 latency: 25682 usec\n    p99 latency: 31626 usec\n"
    )
    assert parse_output(text) == (220.276, 17.725, 31.626)
    assert parse_output("Failed to obtain stable measurement.") == (None, None, None)


def test_the_zero_cost_model_has_the_classifiers_interface_and_costs_almost_nothing(
    model_repository: Path, tmp_path: Path
) -> None:
    import numpy as np
    import onnx
    import onnxruntime as ort

    from bench.zero_model import write_zero_cost_model

    source = next(
        p.parent
        for p in sorted(model_repository.glob("*/*/card.json"))
        if ModelCard.read(p).task == "classification"
    )
    folder = write_zero_cost_model(source, tmp_path / "zero")
    card, real = ModelCard.read(folder / "card.json"), ModelCard.read(source / "card.json")
    assert (card.input, card.outputs, card.preprocess, card.labels) == (
        real.input,
        real.outputs,
        real.preprocess,
        real.labels,
    )
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    images = np.zeros((3, card.input.height, card.input.width, 3), np.uint8)
    [probabilities] = session.run(None, {card.input.name: images})
    assert probabilities.shape == (3, card.outputs[0].shape[-1])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    nodes = [node.op_type for node in onnx.load(str(folder / "model.onnx")).graph.node]
    assert "Conv" not in nodes and len(nodes) <= 5


def test_two_service_processes_share_one_port_answer_and_stop_together(model_repository: Path) -> None:
    import os
    import signal

    import httpx

    from bench.images import image_set
    from bench.server import free_port

    port = free_port()
    env = {
        **os.environ,
        "MODEL_REPOSITORY": str(model_repository),
        "MODELS": classifier_name(model_repository),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "LOG_LEVEL": "warning",
    }
    server = subprocess.Popen([sys.executable, "-m", "bench.processes", "2"], cwd=ROOT, env=env)
    try:
        from bench.processes import wait_until_ready

        wait_until_ready(f"http://127.0.0.1:{port}", 2, timeout_s=120)
        children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
        assert len(children) == 2  # two servers, each its own process with its own sessions
        photo = image_set(((320, 240),), 1)[0].data
        answers = [
            httpx.post(
                f"http://127.0.0.1:{port}/v1/classify", content=photo, headers={"Content-Type": "image/jpeg"}
            )
            for _ in range(6)  # a fresh connection each: the kernel hands them to either process
        ]
        assert [a.status_code for a in answers] == [200] * 6
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0  # both drained and exited 0
    finally:
        if server.poll() is None:
            server.kill()


def test_two_checkouts_are_driven_in_turn_and_each_gets_its_figures(model_repository: Path) -> None:
    command = [
        sys.executable, "-m", "bench.checkouts", str(ROOT), str(ROOT), "--models", str(model_repository),
        "--clients", "2", "--rounds", "2", "--seconds", "0.5",
    ]  # fmt: skip
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    lines = run.stdout.strip().splitlines()
    assert [line.split()[:4] for line in lines] == [
        [kind, "2", "clients", name] for kind in ("v1", "v2") for name in ("before", "after")
    ]
    for line in lines:  # two rounds of requests/s, then their median
        rates = line.split("req/s ")[1].split(" (")[0].split()
        assert len(rates) == 2 and all(float(rate) > 0 for rate in rates)
        assert "server CPU" in line
