"""/docs and /redoc work offline: every file they load is served by the service itself."""

from __future__ import annotations

import re

import httpx
import pytest

_LOADED = re.compile(r"""\b(?:src|href)\s*=\s*["']([^"']+)["']""")
_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_page_loads_only_same_origin_files_that_answer_with_their_type(
    client: httpx.Client, page: str
) -> None:
    response = client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "http://" not in response.text and "https://" not in response.text  # no CDN, no fonts
    loaded = _LOADED.findall(response.text)
    assert {url.rsplit(".", 1)[-1] for url in loaded} >= {"js", "png"}
    for url in loaded:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = client.get(url)
        assert asset.status_code == 200, url
        expected = next(kind for suffix, kind in _TYPES.items() if url.endswith(suffix))
        assert asset.headers["content-type"].startswith(expected), url
        assert len(asset.content) > 1000, url  # the files themselves, not an error page
    assert client.get("/openapi.json").status_code == 200


def test_swagger_ui_loads_its_stylesheet_and_oauth2_redirect_page(client: httpx.Client) -> None:
    page = client.get("/docs").text
    assert any(url.endswith(".css") for url in _LOADED.findall(page))
    assert client.get("/docs/oauth2-redirect").status_code == 200


@pytest.mark.parametrize("name", ["nope.js", "RECORD", "..%2F__init__.py"])
def test_an_unknown_docs_asset_is_404(client: httpx.Client, name: str) -> None:
    assert client.get(f"/docs/assets/{name}").status_code == 404
