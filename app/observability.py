"""Request IDs and logs: every answer carries `X-Request-ID`, every log line is one JSON object.

`RequestContextMiddleware` (the outermost middleware) takes the client's `X-Request-ID` when it is
sane (1–128 characters of `A-Z a-z 0-9 . _ : + = / -`) or makes one, puts it in a context
variable that the log formatter reads, adds it to the answer, and writes one access line per
request (method, path, status, latency, and the model that answered). Only request metadata is
ever logged: no bodies, no image bytes, no query strings (they may carry boxes), no headers.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import secrets
import sys
import time
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any

import orjson
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import error_response

REQUEST_ID_HEADER = "X-Request-ID"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:+=/-]{1,128}")
_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
_fields: ContextVar[dict[str, Any] | None] = ContextVar("log_fields", default=None)

access_logger = logging.getLogger("app.access")
logger = logging.getLogger(__name__)

# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "color_message",
}


def current_request_id() -> str | None:
    return _request_id.get()


def annotate(**fields: Any) -> None:
    """Add fields (e.g. model, version) to the current request's access line."""
    target = _fields.get()
    if target is not None:
        target.update(fields)


# Generated IDs: a random prefix per process, then a counter: unique across replicas and
# restarts like uuid4().hex (32 hex digits), without a getrandom() call per request.
_ID_PREFIX = secrets.token_hex(8)
_id_counter = itertools.count(int.from_bytes(secrets.token_bytes(4), "big"))


def accept_request_id(value: str | None) -> str:
    """The client's request ID if it is sane, else a new one (32 hex digits)."""
    if value and _SANE_REQUEST_ID.fullmatch(value):
        return value
    return f"{_ID_PREFIX}{next(_id_counter) & 0xFFFF_FFFF_FFFF_FFFF:016x}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, then any `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or _request_id.get(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        try:  # orjson: 0.3 µs an access line where json.dumps takes 4
            return orjson.dumps(entry, default=str).decode()
        except TypeError:  # what orjson refuses (ints beyond 64 bits, keys that are not strings)
            return json.dumps(entry, default=str, ensure_ascii=False)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def escape_controls(text: str) -> str:
    """Control characters as `\\xNN`: a logged path with %0A, %0D or %1B forges no line, no colour."""
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


class TextFormatter(logging.Formatter):
    """For people: one line a record (a traceback follows on its own lines), controls escaped."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        escaped = logging.makeLogRecord(
            {**record.__dict__, "msg": escape_controls(record.getMessage()), "args": None}
        )
        text = super().format(escaped)
        request_id = _request_id.get()
        extras = {k: v for k, v in record.__dict__.items() if k not in _STANDARD}
        tail = " ".join(f"{k}={escape_controls(str(v))}" for k, v in extras.items())
        return f"{text}{' ' + tail if tail else ''}{f' request_id={request_id}' if request_id else ''}"


def configure_logging(level: str, fmt: str = "json") -> None:
    """Send every logger (uvicorn's too) through one stderr handler in the chosen format."""
    # The formatters print none of these, which every LogRecord would otherwise look up.
    logging.logThreads, logging.logProcesses, logging.logMultiprocessing = False, False, False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True


class RequestContextMiddleware:
    """Request ID in, request ID out, one access line; an escaped exception becomes a JSON 500."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = accept_request_id(Headers(scope=scope).get(REQUEST_ID_HEADER))
        fields: dict[str, Any] = {}
        id_token, fields_token = _request_id.set(request_id), _fields.set(fields)
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            logger.exception("unhandled error")
            if status == 0:
                await error_response(500, "internal_error", "internal server error")(
                    scope, receive, send_with_id
                )
            else:
                status = 500
        finally:
            if access_logger.isEnabledFor(logging.INFO):
                # Made and handled directly: `info()` would first walk the stack for the caller's
                # file and line (3 µs a request), which no formatter here prints.
                line = access_logger.makeRecord(
                    access_logger.name,
                    logging.INFO,
                    __file__,
                    0,
                    "request",
                    (),
                    None,
                    extra={
                        "method": scope.get("method"),
                        "path": scope.get("path"),
                        "status": status or 499,  # no answer started: the client went away
                        "latency_ms": round((time.perf_counter() - started) * 1e3, 2),
                        "client": (scope.get("client") or ("", 0))[0],
                        **fields,
                    },
                )
                access_logger.handle(line)
            _request_id.reset(id_token)
            _fields.reset(fields_token)
