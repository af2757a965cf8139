"""Which Open Inference Protocol bodies are parsed on the loop: small ones, never compressed ones."""

from __future__ import annotations

from app.protocol.dataplane import INLINE_BODY_BYTES, INLINE_JSON_BYTES, _small_request


def test_a_small_binary_or_json_body_is_parsed_inline_and_a_large_or_compressed_one_is_not() -> None:
    image = b"{}" + bytes(224 * 224 * 3)  # one 224² image after a short JSON header
    assert _small_request(image, "2", None)
    assert _small_request(image, "2", "identity")
    assert not _small_request(image, "2", "gzip")  # inflating is work of unknown size
    assert not _small_request(b"{}" + bytes(INLINE_BODY_BYTES), "2", None)
    assert _small_request(b"x" * INLINE_JSON_BYTES, None, None)  # all JSON, at the limit
    assert not _small_request(b"x" * (INLINE_JSON_BYTES + 1), None, None)
    assert not _small_request(image, str(INLINE_JSON_BYTES + 1), None)  # a long JSON header
    assert _small_request(b"{}", "not a number", None)  # refused by the parser at once, on the loop
