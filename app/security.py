"""Who may call: optional API keys (`Authorization: Bearer KEY`), checked by one ASGI middleware.

The middleware works on paths, before routing, so it covers every route of a protected prefix,
however it is written (/v2 included):
- open: /healthz, /readyz, /v2/health/*, the docs and the demo page; /metrics unless
  PROTECT_METRICS;
- admin: `POST /v1/models/{name}/reload` and /v2/repository/*: an ADMIN_API_KEYS key, always (403
  while none is configured);
- everything else under /v1 and /v2: any key of API_KEYS or ADMIN_API_KEYS, when any is set.
The gRPC server (app.grpc.server) applies the same rules to its methods, with the key in the
`authorization` metadata.

Keys are held only as SHA-256 digests (the settings hash them on load). A presented key is
hashed and compared with every stored digest by `hmac.compare_digest`, without stopping at a
match, so the time an answer takes says nothing about how near a guess came.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from typing import Literal

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from app.config import Settings
from app.traffic import refuse

Access = Literal["open", "client", "admin"]

_ADMIN_PATH = re.compile(r"^/v1/models/[^/]+/reload$|^/v2/repository(/|$)")
_OPEN_PATHS = frozenset({"/healthz", "/readyz", "/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"})
_MAX_KEY_CHARS = 1024
BEARER_CHALLENGE = 'Bearer realm="mnv2-serve"'


class KeySet:
    """SHA-256 digests of keys; `matches` takes the same time whichever digest (if any) matches."""

    def __init__(self, hex_digests: Iterable[str]) -> None:
        self._digests = [bytes.fromhex(d) for d in hex_digests]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def matches(self, key: str) -> bool:
        presented = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
        found = False
        for digest in self._digests:
            found |= hmac.compare_digest(presented, digest)
        return found


def access_for(path: str, protect_metrics: bool, method: str = "POST") -> Access:
    """Who may call `method path`. Only POST is admin on admin paths: other methods fall through
    to routing (and its 405) like any other call."""
    if path in _OPEN_PATHS or path.startswith("/v2/health/"):
        return "open"
    if path == "/metrics":
        return "client" if protect_metrics else "open"
    if _ADMIN_PATH.match(path) and method.upper() == "POST":
        return "admin"
    if path.startswith(("/v1/", "/v2/")) or path == "/v2":
        return "client"
    return "open"


def bearer_token(headers: Headers) -> str | None:
    return bearer_from(headers.get("authorization", ""))


def bearer_from(authorization: str) -> str | None:
    """The key of an `Authorization: Bearer KEY` value (an HTTP header or gRPC metadata)."""
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > _MAX_KEY_CHARS:
        return None
    return token


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.protect_metrics = settings.protect_metrics
        self.admin_keys = KeySet(settings.admin_api_keys)
        self.client_keys = KeySet([*settings.api_keys, *settings.admin_api_keys])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        access = access_for(scope["path"], self.protect_metrics, scope["method"])
        if access == "open" or (access == "client" and not self.client_keys):
            await self.app(scope, receive, send)
            return
        if access == "admin" and not self.admin_keys:
            await refuse(scope, receive, send, 403, "forbidden", "admin routes are off: set ADMIN_API_KEYS")
            return
        token = bearer_token(Headers(scope=scope))
        keys = self.admin_keys if access == "admin" else self.client_keys
        if token is not None and keys.matches(token):
            await self.app(scope, receive, send)
            return
        if token is not None and access == "admin" and self.client_keys.matches(token):
            await refuse(
                scope, receive, send, 403, "forbidden", "this route needs an admin key (ADMIN_API_KEYS)"
            )
            return
        challenge = BEARER_CHALLENGE if token is None else f'{BEARER_CHALLENGE}, error="invalid_token"'
        message = (
            "an API key is required: Authorization: Bearer KEY"
            if token is None
            else "the API key is not valid"
        )
        await refuse(scope, receive, send, 401, "unauthorized", message, {"WWW-Authenticate": challenge})
