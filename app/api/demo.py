"""The demo page at `/`: plain HTML, CSS and JS from `app/static/`, a client of the public /v1 API."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.exceptions import HTTPException

STATIC = Path(__file__).resolve().parent.parent / "static"

# Everything the page loads comes from this service (no CDN, no web font), so it works offline;
# the policy makes the browser hold it to that. data:/blob: carry the decoded mask and the upload.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)
_MEDIA_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
# The page changes with the service: browsers revalidate instead of keeping a stale copy.
_NO_CACHE = {"Cache-Control": "no-cache"}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def demo_page() -> FileResponse:
    return FileResponse(
        STATIC / "index.html",
        media_type="text/html; charset=utf-8",
        headers={**_NO_CACHE, "Content-Security-Policy": CONTENT_SECURITY_POLICY},
    )


@router.get("/static/{name}")
async def static_file(name: str) -> FileResponse:
    """The page's stylesheet and script. A route rather than a mount, so metrics name it."""
    path = STATIC / name  # `name` holds no `/` (the route's parameter stops there)
    if path.suffix not in _MEDIA_TYPES or not path.is_file():
        raise HTTPException(404, f"no static file {name[:100]!r}")
    return FileResponse(path, media_type=_MEDIA_TYPES[path.suffix], headers=_NO_CACHE)
