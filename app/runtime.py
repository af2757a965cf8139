"""ONNX Runtime: which execution providers to ask for, and how a session is created.

`onnxruntime-gpu` lists CUDA in `get_available_providers()` even without a GPU (that list describes
the build), so the device is settled once at start by opening a tiny probe graph and reading
`session.get_providers()`: asking for CUDA on every model load would log the same failure each time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnxruntime as ort

from app.config import Settings

logger = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

# A float32[1] -> float32[1] Identity graph (opset 13, 71 bytes): enough to see whether CUDA loads.
_PROBE_MODEL = bytes.fromhex(
    "080812003a3b0a100a017812017922084964656e74697479120570726f62655a0f0a0178120a0a08080112040a"
    "020801620f0a0179120a0a08080112040a02080142040a00100d"
)

ProviderSpec = str | tuple[str, dict[str, Any]]


class DeviceUnavailable(RuntimeError):
    """DEVICE=cuda but the CUDA execution provider cannot be used on this machine."""


@dataclass(frozen=True)
class DevicePlan:
    """The providers every session asks for, in order of preference."""

    providers: list[ProviderSpec]
    uses_cuda: bool


def cuda_options(settings: Settings) -> dict[str, Any]:
    options: dict[str, Any] = {
        "device_id": settings.cuda_device_id,
        "cudnn_conv_algo_search": settings.cudnn_conv_algo_search,
        "arena_extend_strategy": settings.arena_extend_strategy,
    }
    if settings.gpu_mem_limit_mb:
        options["gpu_mem_limit"] = settings.gpu_mem_limit_mb * 1024 * 1024
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


def plan_device(settings: Settings) -> DevicePlan:
    """Settle the execution providers once. Raises `DeviceUnavailable` for DEVICE=cuda without CUDA."""
    if settings.device == "cpu":
        return DevicePlan([CPU], uses_cuda=False)
    cuda: ProviderSpec = (CUDA, cuda_options(settings))
    reason = ""
    if CUDA not in ort.get_available_providers():
        reason = "this onnxruntime build has no CUDA execution provider"
    else:
        probe = ort.InferenceSession(
            _PROBE_MODEL, sess_options=session_options(settings), providers=[cuda, CPU]
        )
        if CUDA not in probe.get_providers():
            reason = (
                "the CUDA execution provider failed to initialise (no GPU, or CUDA/cuDNN libraries missing)"
            )
    if not reason:
        return DevicePlan([cuda, CPU], uses_cuda=True)
    if settings.device == "cuda":
        raise DeviceUnavailable(f"DEVICE=cuda but {reason}")
    logger.info("device auto: %s; sessions use the CPU", reason)
    return DevicePlan([CPU], uses_cuda=False)


def create_session(path: Path, settings: Settings, plan: DevicePlan) -> ort.InferenceSession:
    """Open one session. Raises `DeviceUnavailable` if CUDA was planned but this session lacks it."""
    session = ort.InferenceSession(
        str(path), sess_options=session_options(settings), providers=plan.providers
    )
    if plan.uses_cuda and settings.device == "cuda" and session.get_providers()[0] != CUDA:
        raise DeviceUnavailable(f"DEVICE=cuda but the session of {path} got {session.get_providers()}")
    return session
