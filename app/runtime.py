"""ONNX Runtime: which execution providers to ask for, and how a session is created.

`onnxruntime-gpu` lists CUDA in `get_available_providers()` even without a GPU (that list describes
the build), so the device is settled once at start by opening a tiny probe graph and reading
`session.get_providers()`: asking for CUDA on every model load would log the same failure each time.
The probe runs with ONNX Runtime's own logging silenced (on a machine without CUDA it printed three
red and yellow lines, `libcublasLt.so...: cannot open shared object file` among them, before the
service's line); the service logs one line instead: the provider its sessions use, and why.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnxruntime as ort

from app.config import Settings

logger = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"

# A float32[1] -> float32[1] Identity graph (opset 13, 71 bytes): enough to see whether CUDA loads.
_PROBE_MODEL = bytes.fromhex(
    "080812003a3b0a100a017812017922084964656e74697479120570726f62655a0f0a0178120a0a08080112040a"
    "020801620f0a0179120a0a08080112040a02080142040a00100d"
)

ProviderSpec = str | tuple[str, dict[str, Any]]

# ONNX Runtime's severities: 0 verbose, 1 info, 2 warning (its default), 3 error, 4 fatal.
_ORT_DEFAULT_SEVERITY, _ORT_FATAL = 2, 4


class DeviceUnavailable(RuntimeError):
    """DEVICE=cuda but the CUDA execution provider cannot be used on this machine."""


@dataclass(frozen=True)
class DevicePlan:
    """The providers every session asks for, in order of preference."""

    providers: list[ProviderSpec]
    uses_cuda: bool
    uses_tensorrt: bool = False


def cuda_options(settings: Settings) -> dict[str, Any]:
    options: dict[str, Any] = {
        "device_id": settings.cuda_device_id,
        "cudnn_conv_algo_search": settings.cudnn_conv_algo_search,
        "arena_extend_strategy": settings.arena_extend_strategy,
    }
    if settings.gpu_mem_limit_mb:
        options["gpu_mem_limit"] = settings.gpu_mem_limit_mb * 1024 * 1024
    if settings.cuda_graphs:  # untested on a GPU; needs I/O binding with fixed buffers (app.iobinding)
        options["enable_cuda_graph"] = "1"
    return options


@dataclass(frozen=True)
class InputProfile:
    """A model's input, for TensorRT's optimisation profile: (1..max_batch, height, width, 3)."""

    name: str
    height: int
    width: int
    max_batch: int

    def shape(self, batch: int) -> str:
        return f"{self.name}:{batch}x{self.height}x{self.width}x3"


def tensorrt_options(settings: Settings, profile: InputProfile | None = None) -> dict[str, Any]:
    """TensorRT execution provider options (untested on a GPU).

    With a profile, one engine covers every batch size up to the model's batch limit (built at the
    warm-up, cached in TRT_ENGINE_CACHE); without, TensorRT builds an engine per new shape.
    """
    options: dict[str, Any] = {
        "device_id": settings.cuda_device_id,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(settings.trt_engine_cache),
        "trt_timing_cache_enable": True,
        "trt_fp16_enable": settings.trt_fp16,
    }
    if settings.cuda_graphs:
        options["trt_cuda_graph_enable"] = True
    if profile is not None:
        options["trt_profile_min_shapes"] = profile.shape(1)
        options["trt_profile_opt_shapes"] = profile.shape(profile.max_batch)
        options["trt_profile_max_shapes"] = profile.shape(profile.max_batch)
    return options


def session_options(settings: Settings) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Parallel execution mode was 2–3× slower on 2 cores; one op at a time, threads inside it.
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = settings.intra_op_threads
    options.inter_op_num_threads = settings.inter_op_threads
    # Spinning workers steal the cores that decode images and run the event loop.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


@contextlib.contextmanager
def _ort_quiet() -> Iterator[None]:
    """Silence ONNX Runtime's default logger (where a provider's load failure is printed) meanwhile.

    A session's own `log_severity_level` does not reach those lines: they go to the default logger.
    """
    ort.set_default_logger_severity(_ORT_FATAL)
    try:
        yield
    finally:
        ort.set_default_logger_severity(_ORT_DEFAULT_SEVERITY)


def _probe(settings: Settings, providers: list[ProviderSpec]) -> list[str]:
    """The providers a tiny session actually gets when it asks for `providers`, quietly."""
    with _ort_quiet():
        probe = ort.InferenceSession(
            _PROBE_MODEL, sess_options=session_options(settings), providers=providers
        )
    return list(probe.get_providers())


def _cuda_failure() -> str:
    """Why the CUDA provider did not load, in a few words: the library it misses, where it can tell."""
    library = Path(ort.__file__).parent / "capi" / "libonnxruntime_providers_cuda.so"
    if library.is_file():
        try:
            ctypes.CDLL(str(library))
        except OSError as exc:  # e.g. "libcublasLt.so.13: cannot open shared object file: ..."
            return f"CUDA libraries missing ({exc})"
    return "no usable GPU, or CUDA/cuDNN libraries missing"


def plan_device(settings: Settings) -> DevicePlan:
    """Settle the execution providers once. Raises `DeviceUnavailable` for DEVICE=cuda without CUDA.

    Logs one line: which provider the sessions use, and why.
    """
    if settings.device == "cpu":
        logger.info("device cpu: sessions use %s (DEVICE=cpu)", CPU)
        return DevicePlan([CPU], uses_cuda=False)
    cuda: ProviderSpec = (CUDA, cuda_options(settings))
    reason = ""
    if CUDA not in ort.get_available_providers():
        reason = "this onnxruntime build has no CUDA execution provider"
    elif CUDA not in _probe(settings, [cuda, CPU]):
        reason = f"the CUDA execution provider failed to initialise: {_cuda_failure()}"
    if not reason and settings.tensorrt:
        return _plan_tensorrt(settings, cuda)
    if not reason:
        logger.info("device %s: sessions use %s on GPU %d", settings.device, CUDA, settings.cuda_device_id)
        return DevicePlan([cuda, CPU], uses_cuda=True)
    if settings.device == "cuda":
        raise DeviceUnavailable(f"DEVICE=cuda but {reason}")
    logger.info("device auto: sessions use %s, as %s", CPU, reason)
    return DevicePlan([CPU], uses_cuda=False)


def _plan_tensorrt(settings: Settings, cuda: ProviderSpec) -> DevicePlan:
    """TensorRT first, CUDA for what it does not take (untested on a GPU)."""
    if TENSORRT not in ort.get_available_providers():
        logger.warning("TENSORRT=true but this onnxruntime build has no TensorRT provider; using CUDA")
        return DevicePlan([cuda, CPU], uses_cuda=True)
    settings.trt_engine_cache.mkdir(parents=True, exist_ok=True)
    providers: list[ProviderSpec] = [(TENSORRT, tensorrt_options(settings)), cuda, CPU]
    if TENSORRT not in _probe(settings, providers):
        logger.warning("TENSORRT=true but the TensorRT provider failed to initialise; using CUDA")
        return DevicePlan([cuda, CPU], uses_cuda=True)
    logger.info("device %s: sessions use %s, then %s", settings.device, TENSORRT, CUDA)
    return DevicePlan(providers, uses_cuda=True, uses_tensorrt=True)


def create_session(
    path: Path, settings: Settings, plan: DevicePlan, profile: InputProfile | None = None
) -> ort.InferenceSession:
    """Open one session. Raises `DeviceUnavailable` if CUDA was planned but this session lacks it.

    `profile` gives TensorRT the model's input shapes (ignored without TENSORRT).
    """
    providers = plan.providers
    if plan.uses_tensorrt and profile is not None:
        providers = [(TENSORRT, tensorrt_options(settings, profile)), *providers[1:]]
    session = ort.InferenceSession(str(path), sess_options=session_options(settings), providers=providers)
    if plan.uses_cuda and settings.device == "cuda" and session.get_providers()[0] not in (CUDA, TENSORRT):
        raise DeviceUnavailable(f"DEVICE=cuda but the session of {path} got {session.get_providers()}")
    return session
