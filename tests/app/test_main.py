"""`python -m app` as a process: it serves, and DEVICE=cuda refuses to start without CUDA."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import onnxruntime as ort
import pytest

from app.config import Settings
from app.runtime import CUDA, DeviceUnavailable, plan_device
from tests.app.conftest import encode, scene

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cuda_usable() -> bool:
    try:
        return plan_device(Settings(device="cuda")).uses_cuda
    except DeviceUnavailable:
        return False


def test_python_m_app_serves_the_configured_models(model_repository: Path, names: dict[str, str]) -> None:
    port = free_port()
    env = {**os.environ, "MODEL_REPOSITORY": str(model_repository), "MODELS": names["classification"],
           "HOST": "127.0.0.1", "PORT": str(port), "DEVICE": "cpu", "WARMUP_BATCH_SIZES": "1"}  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "app"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            deadline = time.monotonic() + 120
            while True:
                assert process.poll() is None, process.stdout.read() if process.stdout else ""
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "not ready after 120 s"
                time.sleep(0.2)
            response = client.post(
                "/v1/classify", content=encode(scene(90, 60)), headers={"content-type": "image/png"}
            )
            assert response.status_code == 200
            assert [m["name"] for m in client.get("/v1/models").json()["models"]] == [names["classification"]]
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it: the status says "terminated".
    assert process.returncode in (0, -15), output
    assert "Application shutdown complete" in output
    load_line = next(line for line in output.splitlines() if "model loaded" in line)
    for part in (
        f"name={names['classification']}",
        "version=1",
        "path=",
        "provider=CPUExecutionProvider",
        "warmup_ms=",
    ):
        assert part in load_line


@pytest.mark.skipif(CUDA in ort.get_available_providers() and cuda_usable(), reason="this machine has CUDA")
def test_device_cuda_refuses_to_start_without_cuda(model_repository: Path) -> None:
    env = {
        **os.environ,
        "MODEL_REPOSITORY": str(model_repository),
        "DEVICE": "cuda",
        "PORT": str(free_port()),
    }
    result = subprocess.run(
        [sys.executable, "-m", "app"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "DEVICE=cuda but" in output and "DEVICE=cpu" in output  # why, and what to do instead
    assert "Traceback" not in output


def test_settling_the_heap_freezes_what_start_up_built_and_collects_young_objects_less_often() -> None:
    import gc

    from app.main import GC_YOUNG_THRESHOLD, settle_heap

    threshold = gc.get_threshold()
    try:
        settle_heap()
        assert gc.get_freeze_count() > 1000
        assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def _app_env(**settings: str) -> dict[str, str]:
    env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(free_port()), "LOG_FORMAT": "text"}
    env.update(settings)
    return env


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [("MAX_BATCH_SIZE", "abc", "an integer ≥ 1"), ("DEVICE", "gpu", "one of auto, cuda, cpu")],
)
def test_bad_setting_exits_with_one_line_naming_it_its_value_and_what_is_allowed(
    name: str, value: str, allowed: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app"], cwd=ROOT, env=_app_env(**{name: value}),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1, lines  # not pydantic's traceback
    assert f"{name}={value!r}" in lines[0] and allowed in lines[0]


def test_taken_port_exits_at_once_saying_to_set_port(model_repository: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = _app_env(MODEL_REPOSITORY=str(model_repository), PORT=str(port), DEVICE="cpu")
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "app"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )
        elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"127.0.0.1:{port}" in output and "in use" in output and "set PORT" in output
    assert "model loaded" not in output and "Traceback" not in output  # refused before any model loads
    assert elapsed < 30


def test_shutdown_while_a_model_loads_stops_the_load_before_shutdown_completes(
    model_repository: Path,
) -> None:
    # The classifier loads first (the smallest file); the segmentor takes seconds more on 2 cores.
    env = _app_env(MODEL_REPOSITORY=str(model_repository), DEVICE="cpu", WARMUP_BATCH_SIZES="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "app"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    assert process.stdout is not None
    lines: list[str] = []
    try:
        for line in process.stdout:
            lines.append(line)
            if "model loaded" in line:
                process.terminate()  # while the next model loads
                break
        lines.extend(process.stdout)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = "".join(lines)
    complete = next(i for i, line in enumerate(lines) if "Application shutdown complete" in line)
    assert "stopped: the service is shutting down" in output, output
    assert not any("model loaded" in line for line in lines[complete:]), output


@pytest.mark.skipif(CUDA in ort.get_available_providers() and cuda_usable(), reason="this machine has CUDA")
def test_device_auto_without_cuda_logs_one_line_and_none_of_onnx_runtimes(
    model_repository: Path, names: dict[str, str]
) -> None:
    env = _app_env(MODEL_REPOSITORY=str(model_repository), MODELS=names["classification"], DEVICE="auto")
    process = subprocess.Popen(
        [sys.executable, "-m", "app"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    assert process.stdout is not None
    lines: list[str] = []
    try:
        for line in process.stdout:
            lines.append(line)
            if "model loaded" in line:
                break
        process.terminate()
        lines.extend(process.stdout)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = "".join(lines)
    assert "model loaded" in output
    assert ":onnxruntime:" not in output and "\x1b[" not in output, output  # ORT's coloured lines
    device_lines = [line for line in lines if "sessions use" in line]
    assert len(device_lines) == 1 and "CPUExecutionProvider" in device_lines[0], output
