"""Bodies of the Open Inference Protocol ↔ tensors, knowing nothing of models.

A request body is a JSON header (`InferenceRequest`), optionally followed by the raw bytes of the
inputs that carry a `binary_data_size` parameter, in input order; the header's length is then in
`Inference-Header-Content-Length`. Responses are built the same way when any output goes binary.
A `Content-Encoding: gzip|deflate` body is inflated first, never beyond the body limit.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np
import orjson
from pydantic import ValidationError

from app.errors import BadRequest, BodyTooLarge, UnsupportedMediaType
from app.protocol.datamodels import (
    InferenceRequest,
    InferenceResponse,
    Parameters,
    RequestInput,
    ResponseOutput,
)

HEADER_LENGTH = "Inference-Header-Content-Length"

DATATYPES: dict[str, np.dtype] = {
    name: np.dtype(kind)
    for name, kind in {
        "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
        "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
        "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
    }.items()
}  # fmt: skip
_NAMES = {dtype: name for name, dtype in DATATYPES.items()}
BYTES = "BYTES"  # variable-length strings: in binary, each is a 4-byte little-endian length + bytes

# zlib's window bits: gzip's header and trailer, or the zlib wrapper that HTTP calls `deflate`.
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def datatype_of(dtype: np.dtype | str) -> str:
    """numpy dtype (or its name, as in a model card) → the protocol's datatype (`FP32`, ...)."""
    return _NAMES[np.dtype(dtype)]


def numpy_dtype(datatype: str) -> np.dtype:
    try:
        return DATATYPES[datatype]
    except KeyError:
        raise BadRequest(f"unsupported tensor datatype {datatype[:40]!r}") from None


# -- request bodies --------------------------------------------------------------------------------


def inflate(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body without its `Content-Encoding`, refused with 413 once it inflates past `limit`.

    Inflates with `max_length` so that a bomb costs at most `limit` bytes of memory, never its
    inflated size.
    """
    name = (encoding or "identity").strip().lower()
    if name == "identity":
        return body
    wbits = _WBITS.get(name)
    if wbits is None:
        raise UnsupportedMediaType(f"content encoding {name[:40]!r}; send gzip, deflate or none")
    out = bytearray()
    pending = body
    while True:  # once per gzip member: concatenated members are one valid gzip body
        inflater = zlib.decompressobj(wbits)
        try:
            while True:
                # Invariant: len(out) <= limit, so max_length >= 1 (0 would mean "unbounded").
                out += inflater.decompress(pending, limit + 1 - len(out))
                if len(out) > limit:
                    raise BodyTooLarge(f"the body inflates past {limit} bytes (MAX_BODY_BYTES)")
                pending = inflater.unconsumed_tail
                if inflater.eof or not pending:
                    break
        except zlib.error as exc:
            raise BadRequest(f"the {name} body is corrupt: {exc}") from exc
        if not inflater.eof:
            raise BadRequest(f"the {name} body is truncated")
        pending = inflater.unused_data
        if not pending or wbits == _WBITS["deflate"]:
            break
    if pending:
        raise BadRequest(f"{len(pending)} bytes follow the end of the {name} stream")
    return bytes(out)


def split_body(body: bytes, header_length: str | None) -> tuple[InferenceRequest, memoryview]:
    """The JSON header, parsed, and the binary tail after it (empty without the header length)."""
    size = len(body)
    if header_length is not None:
        text = header_length.strip()
        if not text.isdigit() or int(text) > size:
            raise BadRequest(
                f"{HEADER_LENGTH} is {text[:20]!r}; it must be a byte count within the body's {size}"
            )
        size = int(text)
    view = memoryview(body)
    try:
        request = InferenceRequest.model_validate_json(body if size == len(body) else view[:size].tobytes())
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise BadRequest(
            f"invalid inference request: {where + ': ' if where else ''}{first['msg']}"
        ) from None
    return request, view[size:]


def binary_parts(inputs: list[RequestInput], tail: memoryview) -> list[memoryview | None]:
    """Each input's slice of the binary tail (None for a JSON input). The sizes must fill the tail."""
    parts: list[memoryview | None] = []
    offset = 0
    for spec in inputs:
        size = (spec.parameters or {}).get("binary_data_size")
        if size is None:
            parts.append(None)
            continue
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise BadRequest(f"input {spec.name!r}: binary_data_size must be a byte count, got {size!r}")
        if spec.data is not None:
            raise BadRequest(f"input {spec.name!r} has both `data` and binary_data_size")
        parts.append(tail[offset : offset + size])
        offset += size
    if offset != len(tail):
        raise BadRequest(
            f"the body holds {len(tail)} bytes after the JSON header; the inputs' binary_data_size "
            f"add up to {offset}"
        )
    return parts


def to_array(spec: RequestInput, raw: memoryview | None) -> np.ndarray:
    """The input as an array of its declared datatype and shape (read-only when binary)."""
    dtype = numpy_dtype(spec.datatype)
    if any(dim < 0 for dim in spec.shape):
        raise BadRequest(f"input {spec.name!r} has a negative dimension in {spec.shape}")
    count = math.prod(spec.shape)
    if raw is not None:
        if len(raw) != count * dtype.itemsize:
            raise BadRequest(
                f"input {spec.name!r}: binary_data_size is {len(raw)} bytes; {spec.datatype} "
                f"{spec.shape} takes {count * dtype.itemsize}"
            )
        return np.frombuffer(raw, dtype).reshape(spec.shape)
    if spec.data is None:
        raise BadRequest(f"input {spec.name!r} has neither `data` nor a binary_data_size parameter")
    try:
        values = np.asarray(spec.data)
    except (ValueError, TypeError):
        raise BadRequest(f"input {spec.name!r}: `data` is not a regular array of numbers") from None
    if values.size != count:
        raise BadRequest(
            f"input {spec.name!r}: `data` holds {values.size} values; shape {spec.shape} takes {count}"
        )
    _check_values(spec, values, dtype)
    return values.astype(dtype).reshape(spec.shape)


def _check_values(spec: RequestInput, values: np.ndarray, dtype: np.dtype) -> None:
    """JSON numbers must fit the datatype exactly: no silent truncation or wrap-around."""
    fits = {"b": "b", "i": "iu", "u": "iu", "f": "iuf"}[dtype.kind]
    if values.size and values.dtype.kind not in fits:
        raise BadRequest(f"input {spec.name!r}: `data` holds values that are not {spec.datatype}")
    if dtype.kind in "iu" and values.size:
        info = np.iinfo(dtype)
        if values.min() < info.min or values.max() > info.max:
            raise BadRequest(f"input {spec.name!r}: `data` holds values outside {spec.datatype}'s range")


# -- response bodies -------------------------------------------------------------------------------


@dataclass
class OutputTensor:
    """One output to answer: numbers, or (BYTES) an object array of `bytes`."""

    name: str
    array: np.ndarray
    binary: bool
    datatype: str = field(default="")

    def __post_init__(self) -> None:
        if not self.datatype:
            self.datatype = BYTES if self.array.dtype == object else datatype_of(self.array.dtype)

    def raw(self) -> bytes:
        if self.datatype == BYTES:
            return b"".join(struct.pack("<I", len(item)) + item for item in self.array.ravel())
        return np.ascontiguousarray(self.array).tobytes()

    def json_data(self) -> np.ndarray | list[str]:
        if self.datatype == BYTES:
            return [item.decode("utf-8", "replace") for item in self.array.ravel()]
        return np.ascontiguousarray(self.array).ravel()


@dataclass
class EncodedResponse:
    body: bytes
    media_type: str
    headers: dict[str, str]


def encode_response(
    model_name: str, model_version: str, request_id: str | None, outputs: list[OutputTensor]
) -> EncodedResponse:
    """JSON alone, or the JSON header followed by the binary outputs in order."""
    described, raws = [], []
    for output in outputs:
        parameters: Parameters | None = None
        data: object = None
        if output.binary:
            raw = output.raw()
            raws.append(raw)
            parameters = {"binary_data_size": len(raw)}
        else:
            data = output.json_data()
        described.append(
            ResponseOutput(
                name=output.name,
                shape=list(output.array.shape),
                datatype=output.datatype,
                parameters=parameters,
                data=data,
            )
        )
    response = InferenceResponse(
        model_name=model_name, model_version=model_version, id=request_id, outputs=described
    )
    # orjson writes numpy arrays directly, and float32 in its shortest exact form.
    header = orjson.dumps(response.model_dump(exclude_none=True), option=orjson.OPT_SERIALIZE_NUMPY)
    if not raws:
        return EncodedResponse(header, "application/json", {})
    return EncodedResponse(
        b"".join([header, *raws]), "application/octet-stream", {HEADER_LENGTH: str(len(header))}
    )
