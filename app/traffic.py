"""ASGI middleware that keeps the service answering under load and abuse (after BentoML's traffic.py).

- `ConcurrencyLimitMiddleware`: at most MAX_CONCURRENT_REQUESTS requests in the app at once; the
  next one is answered 503 with `Retry-After` at once, before its body is read, so a burst costs
  neither memory nor a queue. Health, metrics and the docs are let through.
- `ContentEncodingMiddleware`: a compressed body (`Content-Encoding: gzip`, ...) is refused with
  415 unread, so a zip bomb sent to /v1 is just a small body (the /v2 infer routes inflate
  gzip and deflate themselves, bounded by MAX_BODY_BYTES).
- `CancelOnDisconnectMiddleware`: a client that goes away while its request waits has the
  request's handler cancelled, which takes its rows out of the batcher's queue (see
  `Reservation.submit`), so an abandoned request costs no inference.

Their refusals use the error shape of the path's protocol: `{"error": {"code", "message"}}`
under /v1 and elsewhere, `{"error": "message"}` under /v2 (the Open Inference Protocol's).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import error_response, protocol_error_response

# Paths that must answer while the service is saturated: probes, metrics, the API description.
UNLIMITED_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/docs", "/openapi.json", "/redoc"})
_CLOSE = {"Connection": "close"}  # the unread body makes the connection unusable
CLIENT_CLOSED_REQUEST = 499  # nginx's status for "the client went away first"; never sent


def is_unlimited(path: str) -> bool:
    return path in UNLIMITED_PATHS or path.startswith(("/v2/health/", "/docs/"))


async def refuse(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    code: str,
    message: str,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Answer an error from middleware, in the error shape of the request's protocol."""
    if scope.get("path", "").startswith("/v2"):
        response = protocol_error_response(status, message, headers)
    else:
        response = error_response(status, code, message, headers)
    await response(scope, receive, send)


class ConcurrencyLimitMiddleware:
    """A non-blocking admission check: over the limit is answered at once, never queued."""

    def __init__(self, app: ASGIApp, limit: int, retry_after_s: int = 1) -> None:
        self.app = app
        self.limit = limit
        self.retry_after_s = retry_after_s
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_unlimited(scope["path"]):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            message = (
                f"{self.in_flight} requests in progress (MAX_CONCURRENT_REQUESTS={self.limit}); retry later"
            )
            headers = {"Retry-After": str(self.retry_after_s), **_CLOSE}
            await refuse(scope, receive, send, 503, "overloaded", message, headers)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


class ContentEncodingMiddleware:
    """Refuse compressed request bodies (415) instead of inflating them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The Open Inference Protocol's infer routes take gzip and deflate bodies (Triton's clients
        # send them) and inflate them themselves, never past MAX_BODY_BYTES (app/protocol/codec.py).
        path = scope.get("path", "")
        takes_compressed = path.startswith("/v2/models/") and path.endswith("/infer")
        if scope["type"] == "http" and not takes_compressed:
            encoding = Headers(scope=scope).get("content-encoding", "").strip().lower()
            if encoding not in ("", "identity"):
                message = f"Content-Encoding {encoding[:40]!r} is not accepted: send the body uncompressed"
                await refuse(scope, receive, send, 415, "unsupported_content_encoding", message, _CLOSE)
                return
        await self.app(scope, receive, send)


class CancelOnDisconnectMiddleware:
    """Cancel the request's handler when its client disconnects before the answer is complete.

    Once the body has been read, this middleware is the only reader of the server's `receive`:
    it waits there for `http.disconnect`, and the app's own later calls to `receive` wait for
    the same event. On a disconnect mid-request the handler task is cancelled and a 499 is
    "sent" (the server drops it; the metrics and the access log record it).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_read = asyncio.Event()
        disconnected = asyncio.Event()
        started = completed = False

        async def app_receive() -> Message:
            if body_read.is_set():
                await disconnected.wait()
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected.set()
            elif not message.get("more_body", False):
                body_read.set()
            return message

        async def app_send(message: Message) -> None:
            nonlocal started, completed
            if message["type"] == "http.response.start":
                started = True
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                completed = True
            await send(message)

        handler = asyncio.ensure_future(self.app(scope, app_receive, app_send))

        async def watch() -> None:
            await body_read.wait()
            while not handler.done():
                message = await receive()
                if message["type"] == "http.disconnect":
                    disconnected.set()
                    if not completed:
                        handler.cancel()
                    return

        watcher = asyncio.ensure_future(watch())
        try:
            await handler
        except asyncio.CancelledError:
            if not disconnected.is_set():  # cancelled from outside (the server), not by the client
                handler.cancel()
                raise
            if not started:
                with contextlib.suppress(Exception):
                    await send(
                        {"type": "http.response.start", "status": CLIENT_CLOSED_REQUEST, "headers": []}
                    )
                    await send({"type": "http.response.body", "body": b""})
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
