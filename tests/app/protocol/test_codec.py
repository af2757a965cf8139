"""Protocol bodies ↔ tensors, without a server: inflation limits, binary layout, JSON data."""

from __future__ import annotations

import gzip
import json
import tracemalloc
import zlib

import numpy as np
import pytest

from app.errors import BadRequest, BodyTooLarge
from app.protocol import codec
from app.protocol.datamodels import RequestInput


def bomb(mebibytes: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    return b"".join(packer.compress(zeros) for _ in range(mebibytes)) + packer.flush()


def test_a_gzip_bomb_is_refused_having_inflated_no_more_than_the_limit() -> None:
    body = bomb(256)
    tracemalloc.start()
    try:
        with pytest.raises(BodyTooLarge):
            codec.inflate(body, "gzip", limit=1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20  # 256 MiB inflated would need 64 times more


def test_inflate_reads_gzip_with_several_members_and_zlib_deflate() -> None:
    assert codec.inflate(gzip.compress(b"ab") + gzip.compress(b"cd"), "gzip", 10) == b"abcd"
    assert codec.inflate(zlib.compress(b"abcd"), "Deflate", 4) == b"abcd"
    with pytest.raises(BadRequest, match="truncated"):
        codec.inflate(gzip.compress(b"abcd" * 100)[:-12], "gzip", 1000)


def test_binary_tail_is_split_by_binary_data_size_in_input_order() -> None:
    header = {"inputs": [
        {"name": "a", "shape": [2], "datatype": "UINT8", "parameters": {"binary_data_size": 2}},
        {"name": "b", "shape": [1], "datatype": "FP32", "data": [0.5]},
        {"name": "c", "shape": [1], "datatype": "INT16", "parameters": {"binary_data_size": 2}},
    ]}  # fmt: skip
    head = json.dumps(header).encode()
    request, tail = codec.split_body(head + b"\x01\x02\x03\x00", str(len(head)))
    arrays = [
        codec.to_array(spec, raw)
        for spec, raw in zip(request.inputs, codec.binary_parts(request.inputs, tail), strict=True)
    ]
    assert [a.tolist() for a in arrays] == [[1, 2], [0.5], [3]]
    assert [a.dtype for a in arrays] == [np.uint8, np.float32, np.int16]


def test_json_data_nested_or_flat_gives_the_same_tensor() -> None:
    values = np.arange(12, dtype=np.uint8).reshape(1, 2, 2, 3)
    nested = RequestInput(name="image", shape=[1, 2, 2, 3], datatype="UINT8", data=values.tolist())
    flat = RequestInput(name="image", shape=[1, 2, 2, 3], datatype="UINT8", data=values.ravel().tolist())
    assert np.array_equal(codec.to_array(nested, None), values)
    assert np.array_equal(codec.to_array(flat, None), values)


@pytest.mark.parametrize("data", [[1.5, 2], [True, False], ["1", "2"], [[1], [2, 3]], [-1, 2]])
def test_json_data_that_does_not_fit_uint8_exactly_is_refused(data: list[object]) -> None:
    with pytest.raises(BadRequest):
        codec.to_array(RequestInput(name="x", shape=[2], datatype="UINT8", data=data), None)


def test_bytes_outputs_are_length_prefixed_in_binary_and_strings_in_json() -> None:
    strings = np.array([[b"0.5:1:cat", b"0.25:0:dog"]], dtype=object)
    binary = codec.encode_response("m", "1", "r", [codec.OutputTensor("top", strings, binary=True)])
    length = int(binary.headers[codec.HEADER_LENGTH])
    assert binary.body[length:] == b"\x09\0\0\x000.5:1:cat\x0a\0\0\x000.25:0:dog"
    header = json.loads(binary.body[:length])
    assert header["outputs"][0] == {
        "name": "top",
        "shape": [1, 2],
        "datatype": "BYTES",
        "parameters": {"binary_data_size": 27},
    }
    answer = codec.encode_response("m", "1", None, [codec.OutputTensor("top", strings, binary=False)])
    assert json.loads(answer.body)["outputs"][0]["data"] == ["0.5:1:cat", "0.25:0:dog"]
