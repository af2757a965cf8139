"""The API docs, /docs (Swagger UI) and /redoc, with their scripts and styles served from here.

FastAPI's own pages load them from a CDN, and so are blank offline. The files come from the
`fastapi-offline` package (only its `static/` folder: the app stays a plain `FastAPI`), put
together with FastAPI's documented `get_swagger_ui_html` / `get_redoc_html`.

Every URL in the pages is relative (`openapi.json`, `docs/assets/...`, resolved against `/docs`
and `/redoc`), as the demo page's are, so they keep working behind a proxy that adds a path
prefix without telling the service (no ROOT_PATH). ReDoc's bundle would fetch Redocly's logo
from cdn.redoc.ly; the bundle is served with that address replaced by an empty `data:` image,
which ReDoc's own `onError` then hides.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse, Response
from starlette.exceptions import HTTPException

ASSETS = Path(fastapi_offline.__file__).resolve().parent / "static"
ASSETS_PATH = "/docs/assets"  # under /docs/: open and outside the concurrency limit, as the pages
_RELATIVE_ASSETS = ASSETS_PATH.lstrip("/")  # the pages are /docs and /redoc: relative to the root
_REDOC_BUNDLE = "redoc.standalone.js"
_REDOCLY_LOGO = b'src:"https://cdn.redoc.ly/redoc/logo-mini.svg"'
_MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
}
# The files change only with the installed package; a day's caching spares reloads the 2.8 MB.
_CACHE = {"Cache-Control": "public, max-age=86400"}

router = APIRouter(include_in_schema=False)


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="openapi.json",
        title=f"{request.app.title} - Swagger UI",
        # Swagger UI prefixes this one with window.location.origin: it cannot be relative.
        oauth2_redirect_url=f"{request.scope.get('root_path', '')}/docs/oauth2-redirect",
        swagger_js_url=f"{_RELATIVE_ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{_RELATIVE_ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{_RELATIVE_ASSETS}/favicon.png",
        swagger_ui_parameters={"validatorUrl": None},  # no badge fetched from validator.swagger.io
    )


@router.get("/docs/oauth2-redirect")
async def swagger_ui_oauth2_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    return get_redoc_html(
        openapi_url="openapi.json",
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=f"{_RELATIVE_ASSETS}/{_REDOC_BUNDLE}",
        redoc_favicon_url=f"{_RELATIVE_ASSETS}/favicon.png",
        with_google_fonts=False,
    )


@cache
def _redoc_bundle_without_cdn() -> bytes:
    return (ASSETS / _REDOC_BUNDLE).read_bytes().replace(_REDOCLY_LOGO, b'src:"data:,"')


@router.get(ASSETS_PATH + "/{name}")
async def asset(name: str) -> Response:
    """A script, stylesheet or icon of the docs. A route rather than a mount, so metrics name it."""
    path = ASSETS / name  # `name` holds no `/` (the route's parameter stops there)
    if path.suffix not in _MEDIA_TYPES or not path.is_file():
        raise HTTPException(404, f"no docs asset {name[:100]!r}")
    if name == _REDOC_BUNDLE:
        return Response(_redoc_bundle_without_cdn(), media_type=_MEDIA_TYPES[".js"], headers=_CACHE)
    return FileResponse(path, media_type=_MEDIA_TYPES[path.suffix], headers=_CACHE)
