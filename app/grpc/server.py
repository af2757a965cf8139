"""The Open Inference Protocol over gRPC: KServe's `GRPCInferenceService` with Triton's model
configuration, statistics and repository methods, on GRPC_PORT, beside the HTTP server.

The same `ProtocolPlane` as /v2 answers, so a gRPC request takes slots of the same batcher under
the same limits: a message of at most MAX_BODY_BYTES (gRPC answers RESOURCE_EXHAUSTED beyond),
at most MAX_CONCURRENT_REQUESTS calls at once (RESOURCE_EXHAUSTED beyond, from gRPC itself), the
earlier of REQUEST_TIMEOUT_MS and the call's own gRPC deadline, and a full queue answered at once
with UNAVAILABLE, as Triton answers it. Keys go in the `authorization` metadata
(`Bearer KEY`), checked as app.security checks the HTTP routes: ServerLive and ServerReady are
open, the repository methods need an admin key, the rest any key (when keys are set).

Messages are `app.grpc.inference_pb2` (generated from `inference.proto`); the service is
registered under the protocol's name, so `tritonclient.grpc` and KServe's clients call it as is.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Literal

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from app.config import Settings
from app.dataplane import DataPlane
from app.errors import BadRequest, ServiceError
from app.grpc import inference_pb2 as pb
from app.metrics import Metrics
from app.protocol.datamodels import InferenceRequest, InferParameter, RequestInput, RequestOutput
from app.protocol.dataplane import ProtocolPlane
from app.reload import ModelReloader
from app.security import KeySet, bearer_from

logger = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"  # the protocol's name: what travels in each call's path
GRACE_S = 5.0  # calls in flight at shutdown get this long to finish

Access = Literal["open", "client", "admin"]
_OPEN = {"ServerLive", "ServerReady"}
_ADMIN = {"RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload"}

# HTTP status of a ServiceError → the gRPC code Triton gives for the same condition.
_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}

# Which repeated field of InferTensorContents holds each datatype's values.
_CONTENTS = {
    "BOOL": "bool_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
    "UINT32": "uint_contents", "UINT64": "uint64_contents", "INT8": "int_contents",
    "INT16": "int_contents", "INT32": "int_contents", "INT64": "int64_contents",
    "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}  # fmt: skip


class _Refused(Exception):
    """A call refused before it reached the data plane (authentication)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def _parameters(parameters: Any) -> dict[str, InferParameter] | None:
    """A map of InferParameter → the plain values the HTTP side's pydantic models carry."""
    values: dict[str, InferParameter] = {}
    for key, parameter in parameters.items():
        choice = parameter.WhichOneof("parameter_choice")
        if choice is not None:
            values[key] = getattr(parameter, choice)
    return values or None


def _request(message: pb.ModelInferRequest) -> tuple[InferenceRequest, memoryview | None]:
    """The request as /v2's datamodel, and the input's bytes when they came as raw contents."""
    raws = message.raw_input_contents
    if raws and len(raws) != len(message.inputs):
        raise BadRequest(f"{len(raws)} raw_input_contents for {len(message.inputs)} inputs")
    inputs = []
    for given in message.inputs:
        data = None
        if given.HasField("contents"):
            if raws:
                raise BadRequest(f"input {given.name!r} has both contents and raw_input_contents")
            field = _CONTENTS.get(given.datatype)
            data = list(getattr(given.contents, field)) if field else []
        elif not raws:
            raise BadRequest(f"input {given.name!r} has neither contents nor raw_input_contents")
        inputs.append(
            RequestInput(
                name=given.name,
                shape=list(given.shape),
                datatype=given.datatype,
                parameters=_parameters(given.parameters),
                data=data,
            )
        )
    request = InferenceRequest(
        id=message.id or None,
        parameters=_parameters(message.parameters),
        inputs=inputs,
        outputs=[RequestOutput(name=o.name, parameters=_parameters(o.parameters)) for o in message.outputs]
        or None,
    )
    return request, (memoryview(raws[0]) if raws else None)


class InferenceService:
    """The methods of `inference.GRPCInferenceService`, each `(request, context) -> response`."""

    def __init__(
        self, plane: DataPlane, reloader: ModelReloader, metrics: Metrics, server_version: str
    ) -> None:
        settings = plane.settings
        self.protocol = ProtocolPlane(plane, server_version, reloader)
        self.metrics = metrics
        self.admin_keys = KeySet(settings.admin_api_keys)
        self.client_keys = KeySet([*settings.api_keys, *settings.admin_api_keys])

    # -- server and models -----------------------------------------------------------------------

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.protocol.server_ready())

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        # As Triton over gRPC: an unknown model (or version) is not ready, not an error.
        try:
            ready = self.protocol.model_ready(request.name, request.version or None)
        except ServiceError:
            ready = False
        return pb.ModelReadyResponse(ready=ready)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Any
    ) -> pb.ServerMetadataResponse:
        metadata = self.protocol.server_metadata()
        return pb.ServerMetadataResponse(
            name=metadata.name, version=metadata.version, extensions=metadata.extensions
        )

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        metadata = self.protocol.model_metadata(request.name, request.version or None)
        return json_format.ParseDict(metadata.model_dump(), pb.ModelMetadataResponse())

    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Any) -> pb.ModelConfigResponse:
        config = self.protocol.model_config(request.name, request.version or None)
        return pb.ModelConfigResponse(config=json_format.ParseDict(config, pb.ModelConfig()))

    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: Any
    ) -> pb.ModelStatisticsResponse:
        stats = self.protocol.statistics(request.name or None, request.version or None)
        return json_format.ParseDict(stats, pb.ModelStatisticsResponse())

    # -- inference -------------------------------------------------------------------------------

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        started = time.monotonic()
        protocol = self.protocol
        entry, card = protocol.serving(request.model_name, request.model_version or None)
        if request.raw_input_contents:
            parsed = protocol.parse_tensors(card, *_request(request))
        else:  # values in repeated fields: converting up to MAX_BODY_BYTES of them stalls the loop
            parsed = await asyncio.to_thread(lambda: protocol.parse_tensors(card, *_request(request)))
        deadline = protocol.deadline(parsed.request, started, context.time_remaining())
        outputs = await protocol.run(entry, card, parsed, deadline)
        return pb.ModelInferResponse(
            model_name=entry.name,
            model_version=str(card.version),
            id=request.id,
            outputs=[
                pb.ModelInferResponse.InferOutputTensor(
                    name=o.name, datatype=o.datatype, shape=list(o.array.shape)
                )
                for o in outputs
            ],
            raw_output_contents=[o.raw() for o in outputs],
        )

    # -- the repository --------------------------------------------------------------------------

    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: Any
    ) -> pb.RepositoryIndexResponse:
        models = self.protocol.repository_index(request.ready)
        return pb.RepositoryIndexResponse(
            models=[pb.RepositoryIndexResponse.ModelIndex(**model) for model in models]
        )

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Any
    ) -> pb.RepositoryModelLoadResponse:
        parameters = {key: value.WhichOneof("parameter_choice") for key, value in request.parameters.items()}
        await self.protocol.load(request.model_name, parameters or None)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Any
    ) -> pb.RepositoryModelUnloadResponse:
        await self.protocol.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    # -- every call ------------------------------------------------------------------------------

    def _check_key(self, method: str, metadata: Iterable[tuple[str, str | bytes]]) -> None:
        access: Access = "open" if method in _OPEN else "admin" if method in _ADMIN else "client"
        if access == "open" or (access == "client" and not self.client_keys):
            return
        if access == "admin" and not self.admin_keys:
            raise _Refused(grpc.StatusCode.PERMISSION_DENIED, "admin methods are off: set ADMIN_API_KEYS")
        values = [v for k, v in metadata if k == "authorization" and isinstance(v, str)]
        token = bearer_from(values[0]) if values else None
        keys = self.admin_keys if access == "admin" else self.client_keys
        if token is not None and keys.matches(token):
            return
        if token is not None and access == "admin" and self.client_keys.matches(token):
            raise _Refused(
                grpc.StatusCode.PERMISSION_DENIED, "this method needs an admin key (ADMIN_API_KEYS)"
            )
        raise _Refused(
            grpc.StatusCode.UNAUTHENTICATED,
            "an API key is required: authorization metadata `Bearer KEY`"
            if token is None
            else "the API key is not valid",
        )

    def handler(self, method: str) -> Callable[[Message, Any], Awaitable[Message]]:
        """`method` with the key check, and every failure answered as its gRPC status."""
        call: Callable[[Any, Any], Awaitable[Message]] = getattr(self, method)
        counter = self.metrics.grpc_requests

        async def answer(request: Message, context: Any) -> Message:
            code = grpc.StatusCode.OK
            try:
                self._check_key(method, context.invocation_metadata() or ())
                return await call(request, context)
            except _Refused as exc:
                code = exc.code
                await context.abort(code, str(exc))
            except ServiceError as exc:
                code = _CODES.get(exc.status_code, grpc.StatusCode.INTERNAL)
                retry_after = (exc.headers or {}).get("Retry-After")
                trailers = (("retry-after", retry_after),) if retry_after else ()
                await context.abort(code, exc.message, trailers)
            except asyncio.CancelledError:  # the client went away or its deadline passed
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception as exc:
                if isinstance(exc, grpc.aio.AbortError):
                    raise
                code = grpc.StatusCode.INTERNAL
                logger.exception("unhandled error in gRPC %s", method)
                await context.abort(code, "internal server error")
            finally:
                counter.labels(method, code.name).inc()
            raise AssertionError("unreachable: abort raises")

        return answer


_METHODS: dict[str, tuple[type[Message], type[Message]]] = {
    "ServerLive": (pb.ServerLiveRequest, pb.ServerLiveResponse),
    "ServerReady": (pb.ServerReadyRequest, pb.ServerReadyResponse),
    "ModelReady": (pb.ModelReadyRequest, pb.ModelReadyResponse),
    "ServerMetadata": (pb.ServerMetadataRequest, pb.ServerMetadataResponse),
    "ModelMetadata": (pb.ModelMetadataRequest, pb.ModelMetadataResponse),
    "ModelInfer": (pb.ModelInferRequest, pb.ModelInferResponse),
    "ModelConfig": (pb.ModelConfigRequest, pb.ModelConfigResponse),
    "ModelStatistics": (pb.ModelStatisticsRequest, pb.ModelStatisticsResponse),
    "RepositoryIndex": (pb.RepositoryIndexRequest, pb.RepositoryIndexResponse),
    "RepositoryModelLoad": (pb.RepositoryModelLoadRequest, pb.RepositoryModelLoadResponse),
    "RepositoryModelUnload": (pb.RepositoryModelUnloadRequest, pb.RepositoryModelUnloadResponse),
}  # the protocol's other methods (streaming, shared memory, tracing) answer UNIMPLEMENTED


def service_handler(service: InferenceService) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            name: grpc.unary_unary_rpc_method_handler(
                service.handler(name),
                request_deserializer=request.FromString,
                response_serializer=response.SerializeToString,
            )
            for name, (request, response) in _METHODS.items()
        },
    )


async def start_grpc(
    settings: Settings, plane: DataPlane, reloader: ModelReloader, metrics: Metrics, server_version: str
) -> grpc.aio.Server:
    """Serve on HOST:GRPC_PORT on the running event loop (the one the HTTP server runs on)."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", settings.max_body_bytes),
            ("grpc.max_send_message_length", -1),
        ],
        maximum_concurrent_rpcs=settings.max_concurrent_requests,
    )
    server.add_generic_rpc_handlers(
        (service_handler(InferenceService(plane, reloader, metrics, server_version)),)
    )
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    if server.add_insecure_port(f"{host}:{settings.grpc_port}") == 0:  # older grpcio: 0, not an error
        raise RuntimeError(f"the gRPC server cannot bind {host}:{settings.grpc_port} (GRPC_PORT)")
    await server.start()
    logger.info("gRPC server listening host=%s port=%d", settings.host, settings.grpc_port)
    return server
