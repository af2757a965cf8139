"""The server under test: started on loopback as a child process (or reached at a URL), watched
through /proc (resident memory, CPU time) and its /metrics page (batch sizes formed).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

# Linux reports /proc/<pid>/stat times in clock ticks.
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def proc_status_kib(pid: int, key: str) -> int | None:
    """A `kB` field of /proc/<pid>/status (`VmRSS`, `VmHWM`: peak resident), or None."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def proc_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of the process so far (all its threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class ServerProcess:
    """A server child process: `python -m app` or the naive baseline, bound to 127.0.0.1."""

    kind: str  # "service" or "naive"
    module: str
    env: dict[str, str]
    cpus: set[int] | None = None
    log_path: Path | None = None
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    ready_s: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self, ready_timeout_s: float = 600.0) -> float:
        """Start and wait for /readyz 200; returns the seconds from start to ready."""
        env = {**os.environ, **self.env, "HOST": "127.0.0.1", "PORT": str(self.port)}
        log = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        cpus = self.cpus
        started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )
        self._log = log
        with httpx.Client(timeout=2.0) as client:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"the {self.kind} server exited with {self.process.returncode} while starting"
                        + (f"; see {self.log_path}" if self.log_path else "")
                    )
                try:
                    if client.get(self.url + "/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() - started > ready_timeout_s:
                    self.stop()
                    raise TimeoutError(f"the {self.kind} server was not ready after {ready_timeout_s:.0f} s")
                time.sleep(0.05)
        self.ready_s = time.monotonic() - started
        return self.ready_s

    def rss_mib(self) -> tuple[float | None, float | None]:
        """(current, peak) resident memory in MiB."""
        if self.pid is None:
            return None, None
        now, peak = proc_status_kib(self.pid, "VmRSS"), proc_status_kib(self.pid, "VmHWM")
        return (now / 1024 if now else None), (peak / 1024 if peak else None)

    def cpu_seconds(self) -> float | None:
        return proc_cpu_seconds(self.pid) if self.pid is not None else None

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        log = getattr(self, "_log", None)
        if log is not None and log is not subprocess.DEVNULL:
            log.close()


def parse_metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, label_text = head.partition("{")
        if metric != name:
            continue
        if all(f'{key}="{val}"' in label_text for key, val in labels.items()):
            try:
                total += float(value)
            except ValueError:
                continue
    return total


@dataclass(frozen=True)
class BatchCounters:
    """The batch-size histogram's running sum (rows) and count (session.run calls) of one model."""

    rows: float
    runs: float

    def mean_since(self, before: BatchCounters) -> float | None:
        runs = self.runs - before.runs
        return (self.rows - before.rows) / runs if runs > 0 else None


def batch_counters(client: httpx.Client, url: str, model: str) -> BatchCounters | None:
    """Read the server's `inference_batch_size` histogram for `model` (None: no such page)."""
    try:
        answer = client.get(url + "/metrics")
    except httpx.TransportError:
        return None
    if answer.status_code != 200:
        return None
    text = answer.text
    return BatchCounters(
        parse_metric(text, "inference_batch_size_sum", model=model),
        parse_metric(text, "inference_batch_size_count", model=model),
    )
