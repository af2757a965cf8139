"""ASGI middleware that keeps the service answering under load and abuse (after BentoML's traffic.py).

- `AdmissionMiddleware`: reads a request's body first, within the request's deadline
  (REQUEST_TIMEOUT_MS from the end of its head: 408 and closed after) and within a budget of
  bytes held by all requests (MAX_INFLIGHT_BYTES), and only then counts it against
  MAX_CONCURRENT_REQUESTS: 64 bodies trickling in at 1 byte/s held every slot before. Over the
  limit is answered 503 with `Retry-After` at once, never queued. Health, metrics and the docs
  are let through.
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
import time
from collections.abc import Mapping
from contextvars import ContextVar

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import error_response, protocol_error_response

# Paths that must answer while the service is saturated: probes, metrics, the API description.
UNLIMITED_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/docs", "/openapi.json", "/redoc"})
_CLOSE = {"Connection": "close"}  # the unread body makes the connection unusable
CLIENT_CLOSED_REQUEST = 499  # nginx's status for "the client went away first"; never sent
_deadline: ContextVar[float | None] = ContextVar("request_deadline", default=None)


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


class ByteBudget:
    """Bytes that requests hold at once: their bodies (`AdmissionMiddleware`) and the pixels they
    keep while they wait (`DataPlane`). Used on the event loop only, so no lock.

    `take` refuses what would go past `limit`, except into an empty budget: a request larger
    than the whole budget is not refused forever.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, size: int, own: int = 0) -> bool:
        """Hold `size` more bytes if they fit; `own` of those held already are the caller's."""
        if self.held > own and self.held + size > self.limit:
            return False
        self.held += size
        return True

    def grow(self, size: int) -> None:
        """Take `size` more bytes for what is already being received (checked by `over`)."""
        self.held += size

    def give(self, size: int) -> None:
        self.held -= size

    @property
    def over(self) -> bool:
        return self.held > self.limit


def request_deadline() -> float | None:
    """Monotonic seconds at which the current request's time is up (set by `AdmissionMiddleware`)."""
    return _deadline.get()


class AdmissionMiddleware:
    """Body first, within a deadline and a byte budget; then a non-blocking count of requests.

    Invariants: `budget` holds the bodies (declared, or received so far) of the requests inside
    this middleware; `in_flight` counts those whose body is in and that are being handled.
    A refusal before the body is in reads and drops the rest of it (within the deadline), so the
    client reads its 503 instead of a connection reset.
    """

    def __init__(
        self,
        app: ASGIApp,
        limit: int,
        max_body_bytes: int,
        budget: ByteBudget,
        timeout_s: float,
        retry_after_s: int = 1,
    ) -> None:
        self.app = app
        self.limit = limit
        self.max_body_bytes = max_body_bytes
        self.budget = budget
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s
        self.in_flight = 0

    def _overloaded(self, why: str) -> tuple[str, dict[str, str]]:
        return f"{why}; retry later", {"Retry-After": str(self.retry_after_s)}

    def _over_budget(self) -> tuple[str, dict[str, str]]:
        return self._overloaded(
            f"{self.budget.held} bytes held by requests in progress (MAX_INFLIGHT_BYTES={self.budget.limit})"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_unlimited(scope["path"]):
            await self.app(scope, receive, send)
            return
        deadline = time.monotonic() + self.timeout_s
        token = _deadline.set(deadline)
        declared = Headers(scope=scope).get("content-length", "")
        held = 0
        try:
            if declared.isdigit() and int(declared) > self.max_body_bytes:
                await self.app(scope, receive, send)  # BodyLimitMiddleware answers 413 at the first read
                return
            expected = int(declared) if declared.isdigit() else 0
            if not self.budget.take(expected):
                text, headers = self._over_budget()
                await self._refuse_after_draining(scope, receive, send, deadline, text, headers)
                return
            held = expected
            chunks: list[bytes] = []
            received = 0
            while True:
                try:
                    message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
                except TimeoutError:
                    text = f"the body did not arrive within {self.timeout_s:g} s (REQUEST_TIMEOUT_MS)"
                    await refuse(scope, receive, send, 408, "request_timeout", text, _CLOSE)
                    return
                if message["type"] == "http.disconnect":  # gone mid-upload: nothing to answer
                    await _client_gone(send)
                    return
                chunk = message.get("body", b"")
                if chunk:
                    chunks.append(chunk)
                    received += len(chunk)
                    if received > held:  # chunked, or more than declared
                        self.budget.grow(received - held)
                        held = received
                if received > self.max_body_bytes:  # BodyLimitMiddleware answers the 413
                    await self.app(scope, _replaying(chunks, False, receive), send)
                    return
                if not message.get("more_body", False):
                    break
                if self.budget.over and self.budget.held > held:
                    chunks.clear()
                    text, headers = self._over_budget()
                    await self._refuse_after_draining(scope, receive, send, deadline, text, headers)
                    return
            if self.in_flight >= self.limit:
                text, headers = self._overloaded(
                    f"{self.in_flight} requests in progress (MAX_CONCURRENT_REQUESTS={self.limit})"
                )
                await refuse(scope, receive, send, 503, "overloaded", text, headers)
                return
            body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            chunks.clear()
            self.in_flight += 1
            try:
                await self.app(scope, _replaying([body], True, receive), send)
            finally:
                self.in_flight -= 1
        finally:
            self.budget.give(held)
            _deadline.reset(token)

    async def _refuse_after_draining(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        deadline: float,
        message: str,
        headers: dict[str, str],
    ) -> None:
        """Read and drop the rest of the body (bounded in bytes and time), then answer 503."""
        dropped = 0
        complete = False
        with contextlib.suppress(TimeoutError):
            while dropped <= self.max_body_bytes:
                event = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
                if event["type"] == "http.disconnect":
                    await _client_gone(send)
                    return
                dropped += len(event.get("body", b""))
                if not event.get("more_body", False):
                    complete = True
                    break
        await refuse(
            scope, receive, send, 503, "overloaded", message, headers if complete else {**headers, **_CLOSE}
        )


def _replaying(chunks: list[bytes], complete: bool, receive: Receive) -> Receive:
    """A `receive` that gives the body already read (whole when `complete`), then the server's."""
    pending: list[Message] = [{"type": "http.request", "body": chunk, "more_body": True} for chunk in chunks]
    if complete and pending:
        pending[-1]["more_body"] = False

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


async def _client_gone(send: Send) -> None:
    """Record a 499 (the server drops it: the client is gone) for the metrics and the access log."""
    with contextlib.suppress(Exception):
        await send({"type": "http.response.start", "status": CLIENT_CLOSED_REQUEST, "headers": []})
        await send({"type": "http.response.body", "body": b""})


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
