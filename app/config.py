"""Every setting of the service, read from the environment by one pydantic-settings object.

The environment variable of a field is its name upper-cased (`max_batch_size` → `MAX_BATCH_SIZE`);
`python -m app --help` prints this table from the model itself so names cannot drift.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from contract import repository

Device = Literal["auto", "cuda", "cpu"]


def _split_list(value: Any) -> Any:
    """Accept `a,b` or a JSON list for list settings (pydantic-settings only reads JSON)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


_HASHED_KEY = re.compile(r"^sha256:([0-9a-fA-F]{64})$")


def key_digest(key: str) -> str:
    """SHA-256 hex digest of an API key; `sha256:HEX` is taken as the digest itself."""
    hashed = _HASHED_KEY.match(key)
    if hashed:
        return hashed.group(1).lower()
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", validate_default=True)

    # Model repository
    model_repository: Path = Field(
        default=Path("models"), description="folder holding <name>/<version>/{model.onnx, card.json}"
    )
    models: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="models to serve, comma-separated `name` or `name:version`; empty = newest version of every model",
    )
    default_classification_model: str = Field(
        default="mobilenet-v2_8xb32_in1k", description="model of /v1/classify when `model` is not given"
    )
    default_segmentation_model: str = Field(
        default="mobilenet-v2-d8_fcn_4xb2-80k_cityscapes-512x1024",
        description="model of /v1/segment when `model` is not given",
    )
    default_pose_model: str = Field(
        default="td-hm_mobilenetv2_8xb64-210e_coco-256x192",
        description="model of /v1/pose when `model` is not given",
    )
    default_detection_model: str = Field(
        default="ssdlite_mobilenetv2-scratch_8xb24-600e_coco",
        description="model of /v1/detect when `model` is not given; /v1/pose finds its people with it",
    )

    # Runtime
    device: Device = Field(
        default="auto",
        description="auto (CUDA when usable, else CPU), cuda (refuse to start without it) or cpu",
    )
    intra_op_threads: int = Field(
        default=0, ge=0, description="ONNX Runtime intra-op threads per session; 0 = one per physical core"
    )
    inter_op_threads: int = Field(
        default=1, ge=0, description="ONNX Runtime inter-op threads (sequential execution uses one)"
    )
    cuda_device_id: int = Field(default=0, ge=0, description="GPU used by the CUDA execution provider")
    cudnn_conv_algo_search: Literal["EXHAUSTIVE", "HEURISTIC", "DEFAULT"] = Field(
        default="HEURISTIC",
        description="cuDNN convolution algorithm search; EXHAUSTIVE re-searches for every new batch shape",
    )
    arena_extend_strategy: Literal["kNextPowerOfTwo", "kSameAsRequested"] = Field(
        default="kNextPowerOfTwo", description="how the CUDA memory arena grows"
    )
    gpu_mem_limit_mb: int = Field(
        default=0, ge=0, description="cap of the CUDA memory arena per session in MiB; 0 = no cap"
    )
    # GPU options below are written to ONNX Runtime's documented API but untested on hardware.
    io_binding: bool = Field(
        default=False,
        description="CUDA: copy each batch into device buffers kept per batch size and run with I/O binding (untested on a GPU)",
    )
    cuda_graphs: bool = Field(
        default=False,
        description="CUDA, with IO_BINDING: capture a CUDA graph per batch size at warm-up and replay it (untested on a GPU)",
    )
    tensorrt: bool = Field(
        default=False,
        description="try the TensorRT execution provider before CUDA; engines are built at warm-up (untested on a GPU)",
    )
    trt_engine_cache: Path = Field(
        default=Path("/tmp/trt-cache"),  # writable by any uid, also under a read-only root
        description="folder where TensorRT keeps its built engines across restarts (with TENSORRT=true)",
    )
    trt_fp16: bool = Field(default=False, description="let TensorRT run in float16 (with TENSORRT=true)")
    warmup_batch_sizes: Annotated[list[int], NoDecode] = Field(
        default_factory=list,
        description="batch sizes run once at load, each at most the model's largest batch (MAX_BATCH_SIZE, "
        "less where MAX_BATCH_PIXELS caps it, divided among INFERENCE_RUNS: 4 for the default 8 and 2 runs on "
        "the CPU); empty = 1 and that largest batch on the CPU, every size up to it on CUDA",
    )

    # Batching
    max_batch_size: int = Field(
        default=8, ge=1, description="most images (or person crops) in one session.run"
    )
    max_batch_pixels: int = Field(
        default=1 << 20,
        ge=0,
        description="most input pixels (rows × height × width) in one session.run, so models with large inputs get smaller batches (at least 1); 0 = no cap",
    )
    inference_runs: int = Field(
        default=0,
        ge=0,
        description="session.run calls in flight per model, sharing its batch limit (2 runs of 4 rows for a limit of 8); 0 = auto: 2 on the CPU, 1 on CUDA",
    )
    inline_lone_requests: bool = Field(
        default=True,
        description="a request of one image that finds its model idle (nothing else queued or decoding, a run free besides the batcher's) is decoded and run on one thread, skipping the queue; needs INFERENCE_RUNS of 2 or more, so the CPU's default",
    )
    max_queue_delay_ms: float = Field(
        default=5.0, ge=0, description="longest a batch waits to grow while more requests are on their way"
    )
    max_queue_size: int = Field(
        default=64,
        ge=1,
        description="images waiting per model (decoding or queued) before new requests get 503",
    )
    request_timeout_ms: float = Field(
        default=30_000.0,
        gt=0,
        description="deadline of a request from the end of its head: its body must be in by then (else 408), its answer too (else 504)",
    )

    # Inputs
    max_body_bytes: int = Field(
        default=20 * 1024 * 1024, ge=1, description="largest request body; 413 beyond, checked while reading"
    )
    max_image_pixels: int = Field(
        default=40_000_000,
        ge=1,
        description="largest image (width × height, read from its header); 413 beyond",
    )
    max_images: int = Field(default=16, ge=1, description="most images in one request")
    max_boxes: int = Field(default=100, ge=1, description="most person boxes in one pose request; 422 beyond")
    decode_threads: int = Field(default=2, ge=1, description="threads decoding, resizing and encoding images")
    pose_flip_test: bool = Field(
        default=False, description="average each crop's heatmaps with those of its mirror image"
    )

    # Server
    host: str = Field(default="0.0.0.0", description="address uvicorn binds")
    port: int = Field(default=8000, ge=0, le=65535, description="port uvicorn binds")
    grpc_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="port of the Open Inference Protocol over gRPC (KServe's GRPCInferenceService, Triton's 8001), bound on HOST; 0 = off",
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        default="info", description="log level"
    )
    log_format: Literal["json", "text"] = Field(
        default="json", description="json: one JSON object per log line (with request_id); text: for people"
    )

    # Reliability
    max_concurrent_requests: int = Field(
        default=64,
        ge=1,
        description="requests handled at once, counted once their body is in (health and metrics excepted); 503 with Retry-After beyond",
    )
    max_inflight_bytes: int = Field(
        default=128 * 1024 * 1024,
        ge=1,
        description="bytes requests hold at once: bodies being received or handled, and the pixels kept while they wait (model rows, overlay canvases); a request that would go past it gets 503 with Retry-After (one is always let in)",
    )
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="seconds a connection may take to send a request's head (from its first byte, or from the connection's opening); 408 and closed after. The body must then arrive within REQUEST_TIMEOUT_MS",
    )
    max_header_bytes: int = Field(
        default=64 * 1024, ge=1024, description="largest request head (request line and headers); 431 beyond"
    )
    shutdown_drain_s: float = Field(
        default=0.0,
        ge=0,
        description="after SIGTERM, seconds /readyz answers 503 while requests are still accepted (for a load balancer to notice)",
    )
    shutdown_grace_s: float = Field(
        default=10.0,
        ge=0,
        description="then, seconds to finish the requests already accepted; what is still queued after it gets 503",
    )
    reload_interval_s: float = Field(
        default=0.0,
        ge=0,
        description="seconds between looks at the repository for newer versions of served models; 0 = off",
    )

    # Security
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="keys for /v1 and /v2 (Authorization: Bearer KEY), comma-separated, or sha256:HEX of a key; empty = open. Held only as SHA-256",
    )
    admin_api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="keys for admin routes (POST /v1/models/NAME/reload), which also serve as API keys; empty = admin routes answer 403",
    )
    protect_metrics: bool = Field(
        default=False, description="require an API key for /metrics too (health stays open)"
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="origins browsers may call from (CORS), comma-separated, or *; empty = no cross-origin calls",
    )

    @field_validator("models", "warmup_batch_sizes", "cors_origins", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("models")
    @classmethod
    def _model_specs(cls, value: list[str]) -> list[str]:
        for spec in value:
            repository.parse_model_spec(spec)  # `name:abc` or `name:²` is refused at start
        return value

    @field_validator("api_keys", "admin_api_keys", mode="before")
    @classmethod
    def _key_digests(cls, value: Any) -> Any:
        """Keys become SHA-256 hex digests here, so the plain keys are never held by the service."""
        keys = _split_list(value)
        if not isinstance(keys, list):
            return keys
        return [key_digest(str(key)) for key in keys]

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _warmup_within_batch(self) -> Settings:
        if any(size < 1 or size > self.max_batch_size for size in self.warmup_batch_sizes):
            sizes = ",".join(map(str, self.warmup_batch_sizes))
            raise ValueError(
                f"WARMUP_BATCH_SIZES={sizes} must lie between 1 and MAX_BATCH_SIZE={self.max_batch_size}"
            )
        if self.cuda_graphs and not self.io_binding:
            raise ValueError("CUDA_GRAPHS needs IO_BINDING=true (a graph replays fixed device buffers)")
        return self

    def default_model(self, task: str) -> str:
        return {
            "classification": self.default_classification_model,
            "segmentation": self.default_segmentation_model,
            "pose": self.default_pose_model,
            "detection": self.default_detection_model,
        }[task]


def settings_help() -> str:
    """The settings table: environment variable, default and description, from the model itself."""
    lines = ["Settings (environment variables):", ""]
    for name, field in Settings.model_fields.items():
        if field.default_factory is not None:
            default: Any = field.default_factory()  # type: ignore[call-arg]
        else:
            default = field.default
        if isinstance(default, list):
            default = ",".join(str(v) for v in default)
        lines.append(f"  {name.upper()}={default}\n      {field.description or ''}")
    return "\n".join(lines)


_KINDS = {int: "an integer", float: "a number", bool: "true or false", str: "text", Path: "a path"}


def allowed_values(name: str) -> str:
    """What the setting `name` takes, for a person: `one of auto, cuda, cpu`, `an integer ≥ 1`."""
    field = Settings.model_fields[name]
    annotation = field.annotation
    if get_origin(annotation) is Literal:
        return "one of " + ", ".join(str(option) for option in get_args(annotation))
    if get_origin(annotation) is list:
        (item,) = get_args(annotation)
        return f"a comma-separated list of {'integers' if item is int else 'names'}"
    kind = _KINDS.get(annotation, str(annotation))  # type: ignore[arg-type]
    bounds = [
        f"{symbol} {getattr(rule, attribute)}"
        for rule in field.metadata
        for attribute, symbol in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"))
        if getattr(rule, attribute, None) is not None
    ]
    return f"{kind} {' and '.join(bounds)}" if bounds else kind


def settings_error(exc: ValidationError) -> str:
    """One line per bad setting: its variable, the value given and what it takes (for `python -m app`)."""
    lines = []
    for error in exc.errors():
        loc = error.get("loc", ())
        message = str(error.get("msg", "")).removeprefix("Value error, ")
        if not loc or str(loc[0]) not in Settings.model_fields:  # a check across settings
            lines.append(f"invalid settings: {message}")
            continue
        name, value = str(loc[0]), error.get("input")
        item = f" (item {loc[1]})" if len(loc) > 1 else ""
        why = f"{message}; " if error.get("type") == "value_error" else ""  # a validator's own words
        lines.append(
            f"invalid setting {name.upper()}={repr(value)[:200]}{item}: {why}allowed: "
            f"{allowed_values(name)} (see python -m app --help)"
        )
    return "\n".join(lines)
