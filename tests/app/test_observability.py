"""Request IDs on every answer and every log line; logs as JSON lines that never hold image bytes."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import PngImagePlugin

from app.observability import JsonFormatter, RequestContextMiddleware, TextFormatter, access_logger, annotate
from tests.app.conftest import encode, scene
from tests.app.processes import run_app

PNG = {"content-type": "image/png"}


@pytest.mark.parametrize(
    ("method", "path", "content"),
    [
        ("GET", "/healthz", None),
        ("POST", "/v1/classify", encode(scene(64, 48))),
        ("POST", "/v1/classify", b"not an image"),
        ("GET", "/v1/models/nope", None),
        ("GET", "/no/such/route", None),
        ("POST", "/v1/segment", b"\0" * 2_000_001),
    ],
)
def test_every_answer_carries_the_clients_sane_request_id(
    client: httpx.Client, method: str, path: str, content: bytes | None
) -> None:
    response = client.request(
        method, path, content=content, headers={**PNG, "X-Request-ID": "client-id_42.a:b"}
    )
    assert response.headers["x-request-id"] == "client-id_42.a:b"


@pytest.mark.parametrize("sent", ["", "a" * 129, "bad id with spaces", "x\u00e9", "{json}", "a;b"])
def test_an_insane_or_missing_request_id_is_replaced_by_a_generated_one(
    client: httpx.Client, sent: str
) -> None:
    headers = {"X-Request-ID": sent.encode("utf-8")} if sent else {}
    response = client.get("/healthz", headers=headers)
    assert response.headers["x-request-id"] != sent
    assert uuid.UUID(response.headers["x-request-id"]).hex == response.headers["x-request-id"]


def test_logs_are_json_lines_with_request_ids_and_never_image_bytes(
    model_repository: Path, names: dict[str, str]
) -> None:
    marker = b"SECRET-PIXELS-7f3a"
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", marker.decode())
    good = encode(scene(64, 48), pnginfo=info)
    assert marker in good
    corrupt = good[: len(good) // 2]
    settings = {"models": names["classification"], "log_level": "debug"}
    with run_app(model_repository, **settings) as app, app.client() as client:
        ok = client.post("/v1/classify", content=good, headers={**PNG, "X-Request-ID": "req-ok"})
        bad = client.post("/v1/classify", content=corrupt, headers={**PNG, "X-Request-ID": "req-bad"})
        multipart = client.post("/v1/classify", files={"file": ("secret.png", good, "image/png")})
        log = app.log_once_it_holds("req-ok", "req-bad", multipart.headers["x-request-id"])
    assert (ok.status_code, bad.status_code, multipart.status_code) == (200, 422, 200)
    entries = [json.loads(line) for line in log.splitlines() if line.strip()]  # every line is JSON
    assert entries
    for entry in entries:
        assert {"time", "level", "message", "request_id"} <= set(entry)
    access = {e["request_id"]: e for e in entries if e.get("logger") == "app.access"}
    assert access["req-ok"] | {"latency_ms": 0} == access["req-ok"] | {
        "method": "POST", "path": "/v1/classify", "status": 200, "latency_ms": 0,
        "model": names["classification"], "version": 1,
    }  # fmt: skip
    assert access["req-ok"]["latency_ms"] > 0
    assert access["req-bad"]["status"] == 422
    assert multipart.headers["x-request-id"] in access
    assert any("model loaded" in e["message"] for e in entries)
    for needle in (marker, base64.b64encode(good[:300])[:40], b"secret.png"):
        assert needle.decode() not in log


def test_an_unhandled_error_answers_a_json_500_with_its_request_id() -> None:
    async def broken(scope: dict, receive: object, send: object) -> None:
        raise RuntimeError("a bug")

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "method": "GET", "path": "/x", "headers": [(b"x-request-id", b"r-500")]}
    asyncio.run(RequestContextMiddleware(broken)(scope, receive, send))  # type: ignore[arg-type]
    assert sent[0]["status"] == 500
    assert (b"x-request-id", b"r-500") in sent[0]["headers"]
    assert json.loads(sent[1]["body"])["error"]["code"] == "internal_error"


def test_the_access_line_is_one_json_object_with_every_field_and_the_answers_status() -> None:
    async def answer(scope: dict, receive: object, send: Any) -> None:
        annotate(model="m", version=3, huge=2**70)  # beyond orjson's 64-bit ints: json's fallback
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def ignore(message: dict) -> None:
        pass

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(JsonFormatter())
    access_logger.addHandler(handler)
    level = access_logger.level
    access_logger.setLevel(logging.INFO)
    scope = {"type": "http", "method": "POST", "path": "/v1/pose", "headers": [], "client": ("10.0.0.7", 5)}
    try:
        asyncio.run(RequestContextMiddleware(answer)(scope, receive, ignore))  # type: ignore[arg-type]
        access_logger.setLevel(logging.WARNING)  # LOG_LEVEL=warning: no line
        asyncio.run(RequestContextMiddleware(answer)(scope, receive, ignore))  # type: ignore[arg-type]
    finally:
        access_logger.removeHandler(handler)
        access_logger.setLevel(level)
    [line] = lines.getvalue().splitlines()
    entry = json.loads(line)
    assert entry | {"time": "", "latency_ms": 0, "request_id": ""} == {
        "time": "", "level": "INFO", "logger": "app.access", "message": "request", "request_id": "",
        "method": "POST", "path": "/v1/pose", "status": 201, "latency_ms": 0, "client": "10.0.0.7",
        "model": "m", "version": 3, "huge": 2**70,
    }  # fmt: skip
    assert len(entry["request_id"]) == 32 and entry["latency_ms"] >= 0
    assert entry["time"].endswith("+00:00") and len(entry["time"]) == len("2025-01-01T00:00:00.000+00:00")


def test_generated_request_ids_are_distinct_32_hex_digits() -> None:
    from app.observability import accept_request_id

    ids = [accept_request_id(None) for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and uuid.UUID(i).hex == i for i in ids)


@pytest.mark.parametrize("formatter", [TextFormatter(), JsonFormatter()], ids=["text", "json"])
def test_control_characters_in_a_logged_path_forge_no_line_and_no_escape_sequence(
    formatter: logging.Formatter,
) -> None:
    forged = "/v1/x\n2026-01-01 00:00:00 INFO app.access: request path=/admin status=200\r\x1b[31m"
    record = logging.makeLogRecord(
        {"name": "app.access", "msg": "request %s", "args": (forged,), "path": forged}
    )
    line = formatter.format(record)
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert "admin" in line  # kept, escaped, readable
