"""HTTP probes for docker/check.sh: the standard library only, so the host's python3 runs them.

Each command prints one PASS or FAIL line per behaviour it checks and exits 1 if any failed.
  probe.py ready URL SECONDS          /readyz answers 200 within SECONDS
  probe.py tasks URL                  one answer each from /v1/classify, /v1/segment, /v1/detect, /v1/pose
  probe.py classify URL [COUNT [ID]]  COUNT classifications, each sent with X-Request-ID ID-n
  probe.py too-large URL BYTES        a body over the limit: 413 in the service's JSON error shape
"""

from __future__ import annotations

import contextlib
import http.client
import json
import struct
import sys
import time
import urllib.parse
import zlib
from typing import Any

failures = 0


def report(ok: bool, what: str) -> bool:
    global failures
    print(f"{'PASS' if ok else 'FAIL'} {what}", flush=True)
    failures += not ok
    return ok


def png(width: int = 320, height: int = 240) -> bytes:
    """An RGB PNG with a gradient and a block, written with zlib alone."""
    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter: none
        for x in range(width):
            inside = width // 3 < x < 2 * width // 3 and height // 4 < y < 3 * height // 4
            rows += bytes((200, 40, 40) if inside else (x * 255 // width, y * 255 // height, 128))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(rows)))
        + chunk(b"IEND", b"")
    )


class Answer:
    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def header_values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self) -> dict[str, Any]:
        try:
            value = json.loads(self.body)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


def request(
    url: str, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None
) -> Answer:
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
    try:
        # The server may answer before reading the whole body (a 413): read that answer.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            connection.request(method, parts.path or "/", body=body, headers=headers or {})
        response = connection.getresponse()
        return Answer(response.status, response.getheaders(), response.read())
    finally:
        connection.close()


def ready(base: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            answer = request(base + "/readyz")
            if answer.status == 200:
                report(True, f"/readyz 200 ({base})")
                return
            last = f"{answer.status} {answer.body[:200]!r}"
        except OSError as exc:
            last = str(exc)
        time.sleep(2)
    report(False, f"/readyz not 200 within {seconds:g} s ({base}): {last}")


def post_image(url: str, request_id: str | None = None) -> Answer:
    headers = {"Content-Type": "image/png"}
    if request_id:
        headers["X-Request-ID"] = request_id
    return request(url, "POST", png(), headers)


def tasks(base: str) -> None:
    answers = ("/v1/classify", "results"), ("/v1/segment", "results"), ("/v1/detect", "results")
    for path, key in (*answers, ("/v1/pose", "people")):
        answer = post_image(base + path)
        body = answer.json()
        ok = answer.status == 200 and key in body
        report(
            ok,
            f"{path} answers 200 with {key!r}" + ("" if ok else f": {answer.status} {answer.body[:200]!r}"),
        )


def classify(base: str, count: int, prefix: str | None) -> None:
    ok = 0
    for n in range(count):
        sent = f"{prefix}-{n}" if prefix else None
        answer = post_image(base + "/v1/classify", sent)
        ids = answer.header_values("X-Request-ID")
        good = (
            answer.status == 200
            and "results" in answer.json()
            and len(ids) == 1
            and (sent is None or ids == [sent])
        )
        if not good:
            report(
                False,
                f"classification {n}: {answer.status}, X-Request-ID {ids} (sent {sent}): {answer.body[:160]!r}",
            )
        ok += good
    report(ok == count, f"{ok}/{count} classifications answered 200 with X-Request-ID exactly once")


def too_large(base: str, limit: int) -> None:
    answer = request(base + "/v1/classify", "POST", b"\0" * (limit + 1), {"Content-Type": "image/png"})
    error = answer.json().get("error", {})
    report(answer.status == 413, f"a body of {limit + 1} bytes gets 413 (got {answer.status})")
    report(
        isinstance(error, dict) and error.get("code") == "body_too_large" and bool(error.get("message")),
        f"the 413 has the service's JSON error shape: {answer.body[:160]!r}",
    )
    report(
        len(answer.header_values("X-Request-ID")) == 1,
        f"the 413 carries X-Request-ID once: {answer.header_values('X-Request-ID')}",
    )


def main(argv: list[str]) -> int:
    command, base = argv[0], argv[1].rstrip("/")
    if command == "ready":
        ready(base, float(argv[2]))
    elif command == "tasks":
        tasks(base)
    elif command == "classify":
        classify(base, int(argv[2]) if len(argv) > 2 else 1, argv[3] if len(argv) > 3 else None)
    elif command == "too-large":
        too_large(base, int(argv[2]))
    else:
        raise SystemExit(f"unknown probe {command!r}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
