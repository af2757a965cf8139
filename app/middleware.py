"""ASGI middleware that bounds a request body while it is received (never buffered unbounded).

A declared `Content-Length` over the limit fails the first read, before any byte is taken; a
chunked or lying body fails at the first chunk past the limit. Either way `BodyTooLarge` is raised
inside whatever reads the body (the multipart parser or a handler), so it becomes the usual JSON
413 through the app's error handlers, counted under its route.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import BodyTooLarge

_CLOSE = {"Connection": "close"}  # the unread rest of the body makes the connection unusable


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        declared = Headers(scope=scope).get("content-length", "")
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            if declared.isdigit() and int(declared) > limit:
                raise BodyTooLarge(
                    f"the body has {declared} bytes; the limit is {limit} (MAX_BODY_BYTES)", _CLOSE
                )
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(f"the body exceeds {limit} bytes (MAX_BODY_BYTES)", _CLOSE)
            return message

        await self.app(scope, limited_receive, send)
