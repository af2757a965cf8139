"""HTTP connections as uvicorn serves them, with the bounds uvicorn leaves open.

uvicorn's httptools protocol has no deadline for a request's head and no bound on its size: 300
connections sending their headers a byte at a time were held open for 40 s, and a 50 MB header
was read whole. `BoundedHttpProtocol` adds:

- a head deadline (HEADER_TIMEOUT_S) from a connection's opening, or from the first byte of a
  request on a kept-alive one, to the end of its headers: past it the connection gets a 408 (or,
  if it sent nothing, is simply closed);
- a head size bound (MAX_HEADER_BYTES): the parser is fed at most that many bytes of a head; a
  longer one gets a 431, never buffered;
- JSON for the errors uvicorn answers itself (its 400 for bad HTTP was `text/plain` without
  `X-Request-ID`), in the shape of the request's protocol where that is known.

The body's deadline and the admission that follows it are `app.traffic.AdmissionMiddleware`'s.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from app.config import Settings
from app.observability import REQUEST_ID_HEADER, accept_request_id


def error_head(status: int, code: str, message: str, path: str = "") -> bytes:
    """A whole HTTP/1.1 error answer, JSON, closing the connection (the request was not read)."""
    body = orjson.dumps(
        {"error": message} if path.startswith("/v2") else {"error": {"code": code, "message": message}}
    )
    head = [
        STATUS_LINE[status],
        b"content-type: application/json\r\n",
        b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
        REQUEST_ID_HEADER.encode("ascii") + b": " + accept_request_id(None).encode("ascii") + b"\r\n",
        b"connection: close\r\n",
        b"\r\n",
        body,
    ]
    return b"".join(head)


class BoundedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline and a size bound for each request head."""

    header_timeout_s = 10.0
    max_header_bytes = 64 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._in_head = True  # the bytes arriving now belong to a request's head
        self._head_bytes = 0  # of the head being read

    # -- the head deadline -----------------------------------------------------------------------

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False  # a pipelined head behind an answer in progress: close after it
            return
        if self._head_bytes:
            message = (
                f"the request's head did not arrive within {self.header_timeout_s:g} s (HEADER_TIMEOUT_S)"
            )
            self.transport.write(error_head(408, "request_timeout", message))
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()  # a connection that never sends a byte is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        self._arm_head_timer()
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._disarm_head_timer()
        self._in_head, self._head_bytes = False, 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head = True  # what follows is the next request's head
        super().on_message_complete()

    # -- the head size bound ---------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        while data and self._in_head and not self.transport.is_closing():
            room = self.max_header_bytes - self._head_bytes
            piece, data = data[:room], data[room:]
            self._head_bytes += len(piece)
            super().data_received(piece)
            if (
                self._in_head
                and self._head_bytes >= self.max_header_bytes
                and not self.transport.is_closing()
            ):
                message = f"the request's head exceeds {self.max_header_bytes} bytes (MAX_HEADER_BYTES)"
                self.transport.write(error_head(431, "header_too_large", message))
                self.transport.close()
                return
        if data and not self.transport.is_closing():
            super().data_received(data)

    def send_400_response(self, msg: str) -> None:
        path = self.scope.get("path", "") if self.scope else ""
        self.transport.write(error_head(400, "bad_request", f"invalid HTTP request: {msg}", str(path)))
        self.transport.close()


def bounded_protocol(settings: Settings) -> type[BoundedHttpProtocol]:
    """`BoundedHttpProtocol` with the settings' bounds (uvicorn makes one instance a connection)."""
    return type(
        "BoundedHttpProtocol",
        (BoundedHttpProtocol,),
        {"header_timeout_s": settings.header_timeout_s, "max_header_bytes": settings.max_header_bytes},
    )


def server_config(app: FastAPI, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """The uvicorn configuration the service runs with (`python -m app`, and the tests' servers)."""
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "http": bounded_protocol(settings),
        "log_level": settings.log_level,
        "log_config": None,  # the service's own logging (app.observability)
        "access_log": False,  # app.observability writes the access lines, with request IDs
        "timeout_graceful_shutdown": int(settings.shutdown_grace_s) + 2,  # a backstop: see app.shutdown
    }
    return uvicorn.Config(app, **{**options, **overrides})
