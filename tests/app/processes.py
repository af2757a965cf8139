"""The service as a real process (`python -m app`) on a loopback port: for what a thread cannot show
(signals, the process's memory, its log lines)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class AppProcess:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def client(self, timeout: float = 60.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)

    def rss_mb(self) -> float:
        """Resident memory of the server process, MiB (from /proc)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS line")

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_once_it_holds(self, *needles: str, timeout: float = 10.0) -> str:
        """The log, once every needle is in it: the access line is written after the answer is sent."""
        deadline = time.monotonic() + timeout
        while not all(needle in (log := self.log()) for needle in needles):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{needles} not in the log after {timeout} s:\n{log}")
            time.sleep(0.05)
        return log

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)


def app_environment(repository: Path, port: int, **settings: Any) -> dict[str, str]:
    env = {
        **os.environ,
        "MODEL_REPOSITORY": str(repository),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "DEVICE": "cpu",
        "WARMUP_BATCH_SIZES": "1",
        "MAX_BATCH_SIZE": "4",
        "LOG_LEVEL": "info",
    }
    for name, value in settings.items():
        env[name.upper()] = ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
    return env


@contextmanager
def run_app(repository: Path, ready_timeout: float = 180.0, **settings: Any) -> Iterator[AppProcess]:
    """Start `python -m app` with these settings; wait until no model is loading; SIGTERM at the end."""
    port = free_port()
    log_file = tempfile.NamedTemporaryFile(prefix="app-", suffix=".log", delete=False)  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "app"],
        cwd=ROOT,
        env=app_environment(repository, port, **settings),
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    running = AppProcess(process, f"http://127.0.0.1:{port}", Path(log_file.name))
    try:
        deadline = time.monotonic() + ready_timeout
        with running.client(timeout=5) as client:
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"the server exited with {process.returncode}:\n{running.log()}")
                try:
                    states = [m["state"] for m in client.get("/readyz").json()["models"]]
                    if states and "loading" not in states:
                        break
                except (httpx.TransportError, ValueError, KeyError):
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"models still loading after {ready_timeout} s:\n{running.log()}")
                time.sleep(0.1)
        yield running
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log_file.close()
        running.log_path.unlink(missing_ok=True)
