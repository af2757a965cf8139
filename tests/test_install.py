"""Each half installs and runs on its own extra, as its image installs it.

`make setup` installs every extra into one environment, where a training module that imports the
web stack (or a package left out of the wheel) goes unnoticed. Here each extra gets a fresh
virtual environment with a regular (not editable) install of the project, and the commands run
from a folder outside the checkout, so only what the wheel carries can be imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.app.conftest import encode, scene

ROOT = Path(__file__).resolve().parents[1]
RECIPE = "mobilenet-v2_8xb32_in1k"

pytestmark = pytest.mark.slow


def _run(args: list[str], cwd: Path, timeout: float = 900, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )
    assert result.returncode == 0, f"{' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}"
    return result.stdout


def _venv(where: Path, extra: str, torch: bool) -> Path:
    """A new virtual environment holding the project with one extra; returns its python."""
    _run([sys.executable, "-m", "venv", str(where)], cwd=where.parent)
    python = where / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    if torch:  # pinned first, as the Makefile does: the CPU build on these machines
        _run([*pip, "torch==2.13.0"], cwd=where.parent)
    _run([*pip, f"{ROOT}[{extra}]"], cwd=where.parent)
    return python


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("install")


@pytest.fixture(scope="module")
def exported(workspace: Path) -> Path:
    """The `train` extra alone: the training commands run, and export a model repository."""
    python = str(_venv(workspace / "train-venv", "train", torch=True))
    run = workspace / "run"
    run.mkdir()
    missing = _run(
        [
            python,
            "-c",
            "import importlib.util as u; print([m for m in ('fastapi', 'starlette', 'uvicorn') if u.find_spec(m)])",
        ],
        cwd=run,
    )
    assert missing.strip() == "[]"  # the web stack is really absent here
    assert "defaults" in _run([python, "-m", "training", "defaults", "--help"], cwd=run)
    _run(
        [python, "-m", "training", "synth", "classification", "--out", "data", "--train", "8", "--val", "4"],
        cwd=run,
    )
    _run(
        [
            python,
            "-m",
            "training",
            "train",
            RECIPE,
            "--data",
            "data",
            "--iterations",
            "2",
            "--batch-size",
            "2",
            "--workers",
            "0",
            "--run-dir",
            "runs",
            "--out",
            "trained",
        ],
        cwd=run,
    )
    assert list((run / "trained" / RECIPE).glob("*/model.onnx"))
    _run([python, "-m", "training", "export", RECIPE, "--out", "models"], cwd=run)
    return run / "models"


def test_train_extra_alone_trains_and_exports(exported: Path) -> None:
    assert (exported / RECIPE / "1" / "card.json").is_file()


@pytest.fixture
def serving(workspace: Path, exported: Path) -> Iterator[str]:
    python = str(_venv(workspace / "serve-venv", "serve", torch=False))
    has_torch = _run(
        [python, "-c", "import importlib.util as u; print(bool(u.find_spec('torch')))"], cwd=workspace
    )
    assert has_torch.strip() == "False"
    port = 18000 + os.getpid() % 1000
    log = (workspace / "serve.log").open("w")
    process = subprocess.Popen(
        [python, "-m", "app"],
        cwd=workspace,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "MODEL_REPOSITORY": str(exported), "PORT": str(port), "HOST": "127.0.0.1"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        assert process.poll() is None, (workspace / "serve.log").read_text()[-3000:]
        yield url
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()


def test_serve_extra_alone_serves_the_exported_model(serving: str) -> None:
    data = encode(scene(320, 240), "JPEG")
    answer = httpx.post(
        f"{serving}/v1/classify", content=data, headers={"Content-Type": "image/jpeg"}, timeout=60
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["model"] == RECIPE
