"""The Open Inference Protocol's operations on the registry's models, without HTTP or gRPC.

Raw tensors take the image endpoints' path from the batcher on: a request of N rows reserves N
slots of the model's batcher through `DataPlane.run_rows`, under the same limits (MAX_BODY_BYTES,
inflated bodies included; MAX_IMAGES rows; the bounded queue; the deadline). What a model takes
and gives comes from its card, which the registry checked against the ONNX graph when it loaded.

Triton's extensions answer here too, in Triton's JSON shapes (the gRPC messages have the same
fields): the model configuration (from the card and the batcher's settings), the statistics
(`app.metrics.ModelStats`, the batcher's own counters) and the repository (`app.reload`).
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.dataplane import DataPlane
from app.errors import BadRequest, ModelNotFound, ModelNotReady
from app.protocol import codec
from app.protocol.codec import EncodedResponse, OutputTensor
from app.protocol.datamodels import (
    InferenceRequest,
    MetadataTensor,
    ModelMetadataResponse,
    Parameters,
    ServerMetadataResponse,
)
from app.registry import ModelEntry, unloaded_message
from app.reload import ModelReloader
from app.schemas import ReloadResponse
from app.traffic import request_deadline
from contract.card import ModelCard
from contract.repository import MODEL_FILE
from contract.tasks import classification

SERVER_NAME = "mnv2-serve"
PLATFORM = "onnxruntime_onnx"
EXTENSIONS = ["binary_tensor_data", "classification", "model_configuration", "statistics", "model_repository"]
BACKEND = "onnxruntime"
# Parsing or encoding a message this small takes microseconds on the loop, less than the hop to a
# thread and back (a 224² image with a binary header: 1.2 → 0.9 CPU ms per request, 16 clients).
INLINE_BODY_BYTES = 1 << 20  # the whole body, with its binary part
INLINE_JSON_BYTES = 64 << 10  # its JSON header, or the answer's outputs
# registry state → Triton's model state in the repository index
_REPOSITORY_STATES = {
    "ready": "READY",
    "loading": "LOADING",
    "failed": "UNAVAILABLE",
    "unloaded": "UNAVAILABLE",
}


@dataclass
class _Wanted:
    """One output the request asked for: which card output, how to send it, and whether as top-k."""

    name: str
    index: int
    binary: bool
    classes: int = 0  # > 0: the classification extension's top-k strings instead of the tensor


@dataclass
class ParsedRequest:
    """An inference request checked against the model's card: its rows and the outputs to answer."""

    request: InferenceRequest
    rows: np.ndarray  # (N, H, W, 3) uint8
    wanted: list[_Wanted]


def _flag(parameters: Parameters, key: str, default: bool) -> bool:
    value = parameters.get(key, default)
    if not isinstance(value, bool):
        raise BadRequest(f"parameter {key} must be true or false, got {value!r}")
    return value


def triton_type(datatype: str) -> str:
    """The protocol's datatype (`FP32`, `BYTES`) → Triton's model-configuration enum (`TYPE_FP32`)."""
    return "TYPE_STRING" if datatype == codec.BYTES else f"TYPE_{datatype}"


class ProtocolPlane:
    def __init__(self, plane: DataPlane, server_version: str, reloader: ModelReloader | None = None) -> None:
        self.plane = plane
        self.settings = plane.settings
        self.registry = plane.registry
        self.server_version = server_version
        self.reloader = reloader

    # -- server and model state ------------------------------------------------------------------

    def server_metadata(self) -> ServerMetadataResponse:
        return ServerMetadataResponse(name=SERVER_NAME, version=self.server_version, extensions=EXTENSIONS)

    def server_ready(self) -> bool:
        return self.plane.readiness().ready  # the same answer as /readyz (draining included)

    def model_ready(self, name: str, version: str | None) -> bool:
        entry = self._entry(name, version)
        return entry.state == "ready" and entry.batcher is not None

    def model_metadata(self, name: str, version: str | None) -> ModelMetadataResponse:
        entry = self._entry(name, version)
        card = entry.card
        if card is None:  # the card is read first when loading; none means it is unreadable or not yet read
            raise ModelNotReady(f"model {entry.name} has no card yet: {entry.reason or 'still loading'}")
        spec = card.input
        return ModelMetadataResponse(
            name=entry.name,
            versions=[str(card.version)],
            platform=PLATFORM,
            inputs=[
                MetadataTensor(
                    name=spec.name,
                    datatype=codec.datatype_of(spec.dtype),
                    shape=[-1, spec.height, spec.width, 3],
                )
            ],
            outputs=[
                MetadataTensor(name=o.name, datatype=codec.datatype_of(o.dtype), shape=list(o.shape))
                for o in card.outputs
            ],
        )

    def model_config(self, name: str, version: str | None) -> dict[str, Any]:
        """Triton's model configuration (model_config.proto as JSON): what perf_analyzer reads first.

        `max_batch_size` is what one request may carry (MAX_IMAGES rows); the batches the batcher
        forms are at most `preferred_batch_size` rows (the batch limit split among the runs in
        flight, which are the instance group's `count`).
        """
        entry = self._entry(name, version)
        card = entry.card
        if card is None:
            raise ModelNotReady(f"model {entry.name} has no card yet: {entry.reason or 'still loading'}")
        s, spec = self.settings, card.input
        on_gpu = entry.provider is not None and entry.provider != "CPUExecutionProvider"
        return {
            "name": entry.name,
            "platform": PLATFORM,
            "backend": BACKEND,
            "version_policy": {"specific": {"versions": [card.version]}},
            "max_batch_size": s.max_images,
            "input": [
                {
                    "name": spec.name,
                    "data_type": triton_type(codec.datatype_of(spec.dtype)),
                    "format": "FORMAT_NHWC",
                    "dims": [spec.height, spec.width, 3],
                    "is_shape_tensor": False,
                    "allow_ragged_batch": False,
                    "optional": False,
                }
            ],
            "output": [
                {
                    "name": o.name,
                    "data_type": triton_type(codec.datatype_of(o.dtype)),
                    "dims": list(o.shape[1:]),
                    "label_filename": "",
                    "is_shape_tensor": False,
                }
                for o in card.outputs
            ],
            "instance_group": [
                {
                    "name": entry.name,
                    "kind": "KIND_GPU" if on_gpu else "KIND_CPU",
                    "count": entry.runs,
                    "gpus": [s.cuda_device_id] if on_gpu else [],
                }
            ],
            "default_model_filename": MODEL_FILE,
            "dynamic_batching": {
                "preferred_batch_size": [entry.rows_per_run],
                "max_queue_delay_microseconds": round(s.max_queue_delay_ms * 1e3),
                "preserve_ordering": False,
                "priority_levels": 0,
                "default_priority_level": 0,
                "default_queue_policy": {
                    "timeout_action": "REJECT",
                    "default_timeout_microseconds": round(s.request_timeout_ms * 1e3),
                    "allow_timeout_override": True,
                    "max_queue_size": s.max_queue_size,
                },
            },
        }

    def statistics(self, name: str | None, version: str | None) -> dict[str, Any]:
        """Triton's statistics: of one model, or (no name) of every model being served."""
        if name:
            entries = [self._entry(name, version)]
        else:
            entries = [e for e in self.registry.entries.values() if e.state == "ready"]
        return {"model_stats": [entry.metrics.stats.as_triton() for entry in entries]}

    # -- the repository (admin keys: app.security) -----------------------------------------------

    def repository_index(self, ready_only: bool = False) -> list[dict[str, str]]:
        """Triton's index: each model with its version, state and why it is not ready."""
        index = []
        for entry in self.registry.entries.values():
            if ready_only and entry.state != "ready":
                continue
            reason = "unloaded" if entry.state == "unloaded" else (entry.reason or "")
            index.append(
                {
                    "name": entry.name,
                    "version": "" if entry.version is None else str(entry.version),
                    "state": _REPOSITORY_STATES[entry.state],
                    "reason": reason,
                }
            )
        return index

    async def load(self, name: str, parameters: Parameters | None = None) -> ReloadResponse:
        """Serve the newest version of `name` (Triton's load; a reload when it already serves)."""
        if parameters:
            raise BadRequest(
                f"load parameters {sorted(parameters)[:5]} are not supported: the model's card is its configuration"
            )
        return await self._reloader().reload(name)

    async def unload(self, name: str) -> None:
        await self._reloader().unload(name)

    def _reloader(self) -> ModelReloader:
        if self.reloader is None:
            raise ModelNotReady("the repository cannot be changed while the server starts")
        return self.reloader

    def _entry(self, name: str, version: str | None) -> ModelEntry:
        """The model `name` (at `version`, when given). Raises 404."""
        entry = self.registry.entries.get(name)
        if entry is None:
            raise ModelNotFound(f"unknown model {name[:200]!r}")
        if version is not None and not (version.isdigit() and int(version) == entry.version):
            raise ModelNotFound(
                f"model {entry.name} has no version {version[:20]!r}; it serves version {entry.version}"
            )
        return entry

    def serving(self, name: str, version: str | None) -> tuple[ModelEntry, ModelCard]:
        """The model, ready to infer. Raises 404, or 503 while it loads or after it failed."""
        entry = self._entry(name, version)
        if entry.state == "loading":
            raise ModelNotReady.loading(entry.name)
        if entry.state == "unloaded":
            raise ModelNotReady(unloaded_message(entry.name))
        if entry.state == "failed" or entry.batcher is None or entry.card is None:
            raise ModelNotReady(f"model {entry.name} failed to load: {entry.reason}")
        return entry, entry.card

    # -- inference -------------------------------------------------------------------------------

    async def infer(
        self, name: str, version: str | None, body: bytes, header_length: str | None, encoding: str | None
    ) -> EncodedResponse:
        """Run one inference request body (as received) and encode its answer."""
        started = time.monotonic()
        entry, card = self.serving(name, version)
        # Inflating and parsing up to MAX_BODY_BYTES of JSON takes long enough to stall the loop.
        if _small_request(body, header_length, encoding):
            parsed = self._parse(card, body, header_length, encoding)
        else:
            parsed = await asyncio.to_thread(self._parse, card, body, header_length, encoding)
        # A reload may have swapped the model while the body was parsed, and the old version stops
        # once nothing holds it: this request holds nothing yet, so it goes to the new one.
        current, current_card = self.serving(name, version)
        if current is not entry and current_card.input == card.input:
            entry, card = current, current_card
        outputs = await self.run(entry, card, parsed, self.deadline(parsed.request, started))
        if sum(output.array.nbytes for output in outputs) <= INLINE_JSON_BYTES:
            return codec.encode_response(entry.name, str(card.version), parsed.request.id, outputs)
        return await asyncio.to_thread(
            codec.encode_response, entry.name, str(card.version), parsed.request.id, outputs
        )

    def deadline(self, request: InferenceRequest, started: float, remaining_s: float | None = None) -> float:
        """When the request must be answered (monotonic seconds): REQUEST_TIMEOUT_MS from its
        arrival, or sooner by its `timeout` parameter (Triton's, µs) or the caller's own deadline."""
        timeout_s = self.settings.request_timeout_ms / 1e3
        requested = (request.parameters or {}).get("timeout")
        if isinstance(requested, int) and not isinstance(requested, bool) and requested > 0:
            timeout_s = min(timeout_s, requested / 1e6)
        if remaining_s is not None:
            timeout_s = min(timeout_s, max(0.0, remaining_s))
        return min(started + timeout_s, request_deadline() or math.inf)  # the body's time counts (HTTP)

    async def run(
        self, entry: ModelEntry, card: ModelCard, parsed: ParsedRequest, deadline: float
    ) -> list[OutputTensor]:
        """The request's rows through the model's batcher; the outputs it asked for."""
        outcome = await self.plane.run_rows(entry, parsed.rows, deadline)
        return [self._output(w, outcome.outputs[w.index], card) for w in parsed.wanted]

    def _parse(
        self, card: ModelCard, body: bytes, header_length: str | None, encoding: str | None
    ) -> ParsedRequest:
        body = codec.inflate(body, encoding, self.settings.max_body_bytes)
        request, tail = codec.split_body(body, header_length)
        self._check_inputs(card, request)
        wanted = self._wanted(card, request)  # before the data: a bad output name costs no conversion
        [raw] = codec.binary_parts(request.inputs, tail)
        return ParsedRequest(request, codec.to_array(request.inputs[0], raw), wanted)

    def parse_tensors(
        self, card: ModelCard, request: InferenceRequest, raw: memoryview | None
    ) -> ParsedRequest:
        """A request whose input bytes came apart from it (gRPC's `raw_input_contents`), or None
        where the values are in the request's `data`."""
        self._check_inputs(card, request)
        wanted = self._wanted(card, request)
        return ParsedRequest(request, codec.to_array(request.inputs[0], raw), wanted)

    def _check_inputs(self, card: ModelCard, request: InferenceRequest) -> None:
        """One input, named as the card says, UINT8 [N, H, W, 3] with 1 ≤ N ≤ MAX_IMAGES."""
        spec = card.input
        names = [given.name for given in request.inputs]
        unexpected = [n for n in names if n != spec.name]
        if unexpected:
            raise BadRequest(
                f"unexpected input {unexpected[0][:100]!r}; model {card.name} takes {spec.name!r}"
            )
        if len(names) != 1:
            raise BadRequest(f"model {card.name} takes exactly one input {spec.name!r}, got {len(names)}")
        given = request.inputs[0]
        datatype = codec.datatype_of(spec.dtype)
        if given.datatype != datatype:
            raise BadRequest(
                f"input {spec.name!r} has datatype {given.datatype[:20]}; model {card.name} takes {datatype}"
            )
        if len(given.shape) != 4 or given.shape[1:] != [spec.height, spec.width, 3] or given.shape[0] < 1:
            raise BadRequest(
                f"input {spec.name!r} has shape {given.shape[:8]}; model {card.name} takes "
                f"[-1, {spec.height}, {spec.width}, 3]"
            )
        if given.shape[0] > self.settings.max_images:
            raise BadRequest(
                f"a batch of {given.shape[0]} images; at most {self.settings.max_images} per request (MAX_IMAGES)"
            )

    def _wanted(self, card: ModelCard, request: InferenceRequest) -> list[_Wanted]:
        """The outputs to answer: those requested, else all; binary per `binary_data(_output)`."""
        binary = _flag(request.parameters or {}, "binary_data_output", False)
        index = {output.name: i for i, output in enumerate(card.outputs)}
        if request.outputs is None:
            return [_Wanted(name, i, binary) for name, i in index.items()]
        wanted: list[_Wanted] = []
        for output in request.outputs:
            if output.name not in index:
                raise BadRequest(f"unknown output {output.name[:100]!r}; model {card.name} has {list(index)}")
            if any(w.name == output.name for w in wanted):
                raise BadRequest(f"output {output.name!r} is requested twice")
            parameters = output.parameters or {}
            classes = parameters.get("classification", 0)
            if isinstance(classes, bool) or not isinstance(classes, int) or classes < 0:
                raise BadRequest(
                    f"output {output.name!r}: classification must be a class count, got {classes!r}"
                )
            shape = card.outputs[index[output.name]].shape
            if classes and len(shape) != 2:
                raise BadRequest(
                    f"output {output.name!r} has shape {shape}; the classification extension needs [batch, classes]"
                )
            # As Triton, a count beyond the classes answers them all.
            classes = min(classes, shape[-1])
            wanted.append(
                _Wanted(output.name, index[output.name], _flag(parameters, "binary_data", binary), classes)
            )
        return wanted

    @staticmethod
    def _output(wanted: _Wanted, array: np.ndarray, card: ModelCard) -> OutputTensor:
        """The tensor in the card's datatype (what the metadata promised), or its top-k strings."""
        if not wanted.classes:
            dtype = card.outputs[wanted.index].dtype
            return OutputTensor(wanted.name, array.astype(dtype, copy=False), wanted.binary)
        # The same ranking as /v1/classify (score descending, ties by index), as Triton's
        # "score:index:label" strings with the score written like C++'s std::to_string.
        rows = classification.top_k(array, wanted.classes, card.labels)
        strings = np.array(
            [[f"{p.score:f}:{p.index}:{p.label}".encode() for p in row] for row in rows], dtype=object
        ).reshape(len(rows), wanted.classes)
        return OutputTensor(wanted.name, strings, wanted.binary)


def _small_request(body: bytes, header_length: str | None, encoding: str | None) -> bool:
    """Whether parsing the body costs too little to be worth a thread (see INLINE_BODY_BYTES)."""
    if (encoding or "identity").strip().lower() != "identity" or len(body) > INLINE_BODY_BYTES:
        return False
    json_bytes = int(header_length) if header_length and header_length.isdigit() else len(body)
    return json_bytes <= INLINE_JSON_BYTES
