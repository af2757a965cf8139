"""The model repository: find `<name>/<version>/{card.json, model.onnx}`, verify, load, warm up.

Each model is tracked as a `ModelEntry` whose state goes `loading` → `ready` or `failed` (with the
reason). A model that fails never stops the others. Names are looked up in a dict built from the
folders found on disk, never joined into a path, so `..` is just an unknown name.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from app.batching import DynamicBatcher
from app.config import Settings
from app.errors import ModelNotFound, ModelNotReady, WrongTask
from app.iobinding import BoundRunner, bound_runner
from app.metrics import Metrics, ModelMetrics
from app.runtime import DevicePlan, InputProfile, create_session
from app.schemas import ModelState
from contract import repository
from contract.card import ModelCard, Task, sha256_file
from contract.repository import CARD_FILE, MODEL_FILE

logger = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """Why one model cannot be served (shown in the log and by /readyz)."""


class LoadStopped(ModelLoadError):
    """The service is shutting down: a load in progress stops at its next step (`stop_loading`)."""


@dataclass(eq=False)
class ModelEntry:
    name: str
    version: int | None
    path: Path
    metrics: ModelMetrics
    state: ModelState = "loading"
    reason: str | None = None
    card: ModelCard | None = None
    session: ort.InferenceSession | None = None
    provider: str | None = None
    batcher: DynamicBatcher | None = None
    load_seconds: float | None = None
    output_names: list[str] = field(default_factory=list)
    bound: BoundRunner | None = None  # IO_BINDING on a GPU (untested on hardware)
    runs: int = 1  # session.run calls in flight at once (the session's threads are shared among them)
    rows_per_run: int = 1  # the batcher's largest batch: the batch limit split among the runs
    reload_error: str | None = None  # why the last attempt to replace this entry failed

    def fail(self, reason: str) -> None:
        self.state, self.reason = "failed", reason
        self.metrics.set_ready(False)
        logger.error(
            "model failed name=%s version=%s path=%s reason=%s", self.name, self.version, self.path, reason
        )

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """`session.run` on (N, H, W, 3) uint8; the outputs in card order."""
        assert self.session is not None and self.card is not None
        if self.bound is not None:
            return self.bound(batch)
        return self.session.run(self.output_names, {self.card.input.name: batch})


def batch_limit(settings: Settings, card: ModelCard) -> int:
    """Most rows per run for this model: MAX_BATCH_SIZE, lowered by MAX_BATCH_PIXELS.

    On the CPU a batch costs as much per image as single runs, while its activations stay in
    ONNX Runtime's memory arena: 512×1024 segmentation at batch 8 held 1.2 GB there (batch 2:
    0.4 GB), and its warm-up alone took 8 single-image runs of start-up time.
    """
    limit = settings.max_batch_size
    if settings.max_batch_pixels:
        limit = min(limit, settings.max_batch_pixels // (card.input.height * card.input.width))
    return max(1, limit)


def inference_runs(settings: Settings, card: ModelCard, uses_cuda: bool) -> int:
    """Runs in flight for this model: INFERENCE_RUNS, or 2 on the CPU and 1 on CUDA (auto).

    The rows in flight stay within the batch limit (`rows_per_run` splits it), so two runs hold
    no more activations than one full batch; never more runs than rows. Measured on 2 cores,
    16 clients, interleaved, two rounds: classification 76-78 img/s with one run of 8 rows,
    86-90 with two of 4; pose 21-22 -> 26-27 (two runs of 8 rows: 23, and +110 MiB resident).
    Two runs hide the hand-offs between batches. I/O binding's buffers are shared: one run.
    """
    if settings.io_binding:
        return 1
    wanted = settings.inference_runs or (1 if uses_cuda else 2)
    return max(1, min(wanted, batch_limit(settings, card)))


def rows_per_run(settings: Settings, card: ModelCard, runs: int) -> int:
    """Most rows per batch when `runs` batches may be in flight: the batch limit split among them."""
    return max(1, batch_limit(settings, card) // runs)


class ModelRegistry:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.entries: dict[str, ModelEntry] = {}
        self.problems: list[str] = []
        self.plan: DevicePlan | None = None
        # Set at shutdown: a load running on its thread (which cannot be cancelled) stops at its next
        # step, so that no "model loaded" line follows "Application shutdown complete".
        self._stopping = threading.Event()

    def stop_loading(self) -> None:
        """Make loads in progress stop at their next step (session opened, each warm-up run)."""
        self._stopping.set()

    def _check_stopping(self, entry: ModelEntry) -> None:
        if self._stopping.is_set():
            raise LoadStopped(f"loading {entry.name} stopped: the service is shutting down")

    # -- discovery -------------------------------------------------------------------------------

    def discover(self) -> None:
        """Find the models to serve; each becomes an entry in state `loading` (or `failed`)."""
        root = self.settings.model_repository
        if not root.is_dir():
            self.problems.append(f"model repository {root} is not a folder")
            logger.error("model repository %s is not a folder", root)
        found = repository.model_dirs(root)
        wanted = [repository.parse_model_spec(s) for s in self.settings.models] or [(n, None) for n in found]
        for name, version in wanted:
            model_dir = found.get(name)
            if model_dir is None:
                entry = self._add(name, version, root / name)
                entry.fail(f"no folder {name!r} in the model repository {root}")
                continue
            versions = repository.versions(model_dir)
            chosen = version if version is not None else (versions[-1] if versions else None)
            entry = self._add(name, chosen, model_dir / str(chosen) if chosen is not None else model_dir)
            if chosen is None:
                entry.fail("no numbered version folders")
            elif chosen not in versions:
                entry.fail(f"version {chosen} not found (have {versions})")
        if not wanted:
            self.problems.append(f"no models found in {root}")

    def _add(self, name: str, version: int | None, path: Path) -> ModelEntry:
        entry = ModelEntry(name, version, path, self.metrics.for_model(name, version or 0))
        self.entries[name] = entry
        return entry

    # -- loading ---------------------------------------------------------------------------------

    def batch_limit(self, card: ModelCard) -> int:
        return batch_limit(self.settings, card)

    def warmup_sizes(self, plan: DevicePlan, largest: int) -> list[int]:
        """The batch sizes to run once at start, up to `largest`, the biggest batch the batcher forms."""
        if self.settings.warmup_batch_sizes:
            return sorted({min(size, largest) for size in self.settings.warmup_batch_sizes})
        return list(range(1, largest + 1)) if plan.uses_cuda else sorted({1, largest})

    def load_one(self, entry: ModelEntry, plan: DevicePlan) -> float:
        """Verify, open and warm up one model (blocking). Returns seconds per run at the largest size.

        Raises `ModelLoadError` with a reason a person can act on, `LoadStopped` after `stop_loading`.
        """
        self._check_stopping(entry)
        started = time.perf_counter()
        card_path, onnx_path = entry.path / CARD_FILE, entry.path / MODEL_FILE
        if not card_path.is_file():
            raise ModelLoadError(f"{card_path} is missing")
        try:
            card = ModelCard.read(card_path)
        except Exception as exc:
            raise ModelLoadError(f"{card_path} is not a valid model card: {exc}") from exc
        if card.name != entry.name or card.version != entry.version:
            raise ModelLoadError(f"the card describes {card.name} v{card.version}, not the folder it lies in")
        entry.card = card  # known from here on, even if the model then fails (/v1/models shows it)
        if not onnx_path.is_file():
            raise ModelLoadError(f"{onnx_path} is missing")
        digest = sha256_file(onnx_path)
        if digest != card.onnx_sha256:
            raise ModelLoadError(f"sha256 of {onnx_path} is {digest}, the card says {card.onnx_sha256}")
        try:
            profile = InputProfile(
                card.input.name, card.input.height, card.input.width, self.batch_limit(card)
            )
            session = create_session(onnx_path, self.settings, plan, profile)
        except Exception as exc:
            raise ModelLoadError(f"ONNX Runtime cannot open {onnx_path}: {exc}") from exc
        self._check_stopping(entry)
        entry.session = session
        entry.output_names = [output.name for output in card.outputs]
        s = self.settings
        try:
            entry.bound = bound_runner(
                session, card, s.cuda_device_id, self.batch_limit(card), s.io_binding, s.cuda_graphs
            )
        except Exception as exc:
            raise ModelLoadError(f"I/O binding cannot be set up for {onnx_path}: {exc}") from exc
        _check_signature(session, card)
        loaded = time.perf_counter()
        entry.runs = inference_runs(s, card, plan.uses_cuda)
        entry.rows_per_run = rows_per_run(s, card, entry.runs)
        seconds = {}
        for size in self.warmup_sizes(plan, entry.rows_per_run):
            self._check_stopping(entry)
            seconds[size] = self._warm_up(entry, card, size)
        self._check_stopping(entry)
        entry.provider = session.get_providers()[0]
        entry.load_seconds = time.perf_counter() - started
        logger.info(
            "model loaded name=%s version=%s path=%s provider=%s runs=%d rows_per_run=%d load_ms=%.0f warmup_ms=%.0f",
            entry.name, entry.version, entry.path, entry.provider, entry.runs, entry.rows_per_run,
            (loaded - started) * 1e3, (time.perf_counter() - loaded) * 1e3,
        )  # fmt: skip
        return seconds[max(seconds)]

    @staticmethod
    def _warm_up(entry: ModelEntry, card: ModelCard, size: int) -> float:
        """One run at batch `size`, its outputs checked against the card. Returns its seconds."""
        batch = np.zeros((size, card.input.height, card.input.width, 3), np.uint8)
        run_started = time.perf_counter()
        try:
            outputs = entry.run(batch)
        except Exception as exc:
            raise ModelLoadError(f"warm-up at batch {size} failed: {exc}") from exc
        seconds = time.perf_counter() - run_started
        for output, spec in zip(outputs, card.outputs, strict=True):
            expected = [size if dim == -1 else dim for dim in spec.shape]
            if list(output.shape) != expected:
                raise ModelLoadError(
                    f"output {spec.name} has shape {list(output.shape)}, card says {expected}"
                )
        return seconds

    async def load_all(self, plan: DevicePlan) -> None:
        """Load every `loading` entry, one at a time (they would only fight over 2 cores)."""
        self.plan = plan  # kept for later loads (hot reload)
        pending = [e for e in self.entries.values() if e.state == "loading"]
        pending.sort(
            key=lambda e: (e.path / MODEL_FILE).stat().st_size if (e.path / MODEL_FILE).exists() else 0
        )
        for entry in pending:
            try:
                run_seconds = await asyncio.to_thread(self.load_one, entry, plan)
            except LoadStopped as exc:
                entry.session = None
                logger.info("%s", exc)
                return
            except ModelLoadError as exc:
                entry.session = None
                entry.fail(str(exc))
                continue
            except Exception as exc:  # anything else is a bug, but must not stop the other models
                logger.exception("loading %s failed unexpectedly", entry.name)
                entry.session = None
                entry.fail(f"unexpected error: {exc!r}")
                continue
            self.start_serving(entry, run_seconds)

    def start_serving(self, entry: ModelEntry, run_seconds: float) -> None:
        """Give a loaded entry its batcher (on the running loop) and mark it ready."""
        assert entry.card is not None
        s = self.settings
        entry.batcher = DynamicBatcher(
            entry.name,
            entry.run,
            (entry.card.input.height, entry.card.input.width, 3),
            max_batch_size=entry.rows_per_run,
            max_queue_delay_ms=s.max_queue_delay_ms,
            max_queue_size=s.max_queue_size,
            observer=entry.metrics,
            runs=entry.runs,
            inline=s.inline_lone_requests,
        )
        entry.batcher.observe_run_seconds(run_seconds)
        entry.batcher.start()
        entry.state = "ready"
        entry.metrics.set_ready(True)

    async def close(self, abort_running: bool = False) -> None:
        """Stop every batcher (see `Batcher.stop`; `abort_running` answers batches in flight 503)."""
        for entry in self.entries.values():
            if entry.batcher is not None:
                await entry.batcher.stop(abort_running)
            entry.session = None

    # -- look-up ---------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return (
            bool(self.entries)
            and not self.problems
            # As Triton's: a model unloaded on purpose does not make the server unready.
            and all(e.state in ("ready", "unloaded") for e in self.entries.values())
        )

    def default_for(self, task: Task) -> ModelEntry | None:
        """The configured default if present; else the newest ready model of the task."""
        configured = self.entries.get(self.settings.default_model(task))
        same_task = configured is not None and (configured.card is None or configured.card.task == task)
        if configured is not None and same_task and configured.state != "failed":
            return configured
        candidates = [
            e for e in self.entries.values() if e.state == "ready" and e.card and e.card.task == task
        ]
        if candidates:
            return max(candidates, key=lambda e: (e.card.created if e.card else "", e.name))
        return configured

    def resolve(self, name: str | None, task: Task) -> ModelEntry:
        """The ready model that answers `task`. Raises 404, 400 (other task) or 503 (not ready)."""
        if name is None:
            entry = self.default_for(task)
            if entry is None:
                raise ModelNotFound(f"no {task} model is loaded")
        else:
            found = self.entries.get(name)
            if found is None:
                raise ModelNotFound(f"no model named {name[:200]!r}; GET /v1/models lists them")
            entry = found
        if entry.card is not None and entry.card.task != task:
            raise WrongTask(f"model {entry.name} does {entry.card.task}, not {task}")
        if entry.state == "loading":
            raise ModelNotReady.loading(entry.name)
        if entry.state == "unloaded":
            raise ModelNotReady(unloaded_message(entry.name))
        if entry.state == "failed" or entry.batcher is None:
            raise ModelNotReady(f"model {entry.name} failed to load: {entry.reason}")
        return entry


def unloaded_message(name: str) -> str:
    return f"model {name} is unloaded; POST /v2/repository/models/{name}/load serves it again"


def _check_signature(session: ort.InferenceSession, card: ModelCard) -> None:
    """The graph must take what the card says it takes and give the outputs it names."""
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ModelLoadError(f"the graph has {len(inputs)} inputs, expected 1")
    graph_input = inputs[0]
    expected = ["batch", card.input.height, card.input.width, 3]
    if graph_input.name != card.input.name or graph_input.type != "tensor(uint8)":
        raise ModelLoadError(f"graph input {graph_input.name} {graph_input.type} does not match the card")
    shape = list(graph_input.shape)
    if len(shape) != 4 or shape[1:] != expected[1:] or isinstance(shape[0], int):
        raise ModelLoadError(f"graph input shape {shape} does not match {expected} with a dynamic batch")
    names = {o.name for o in session.get_outputs()}
    missing = [o.name for o in card.outputs if o.name not in names]
    if missing:
        raise ModelLoadError(f"graph lacks the outputs {missing} named by the card")
