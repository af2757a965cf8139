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
        # Relative, as the demo's: behind a proxy that adds a path prefix they still resolve.
        assert not url.startswith("/") and ":" not in url, url
        asset = client.get("/" + url)  # resolved against /docs or /redoc, both at the root
        assert asset.status_code == 200, url
        expected = next(kind for suffix, kind in _TYPES.items() if url.endswith(suffix))
        assert asset.headers["content-type"].startswith(expected), url
        assert len(asset.content) > 1000, url  # the files themselves, not an error page
    assert 'openapi.json"' in response.text or "openapi.json'" in response.text
    assert client.get("/openapi.json").status_code == 200


def test_redoc_bundle_fetches_no_logo_from_a_cdn(client: httpx.Client) -> None:
    bundle = client.get("/docs/assets/redoc.standalone.js")
    assert bundle.status_code == 200 and len(bundle.content) > 1_000_000
    assert b"cdn.redoc.ly" not in bundle.content


def test_swagger_ui_loads_its_stylesheet_and_oauth2_redirect_page(client: httpx.Client) -> None:
    page = client.get("/docs").text
    assert any(url.endswith(".css") for url in _LOADED.findall(page))
    assert client.get("/docs/oauth2-redirect").status_code == 200


@pytest.mark.parametrize("name", ["nope.js", "RECORD", "..%2F__init__.py"])
def test_an_unknown_docs_asset_is_404(client: httpx.Client, name: str) -> None:
    assert client.get(f"/docs/assets/{name}").status_code == 404


def test_multipart_bodies_document_files_as_binary_so_swagger_ui_shows_a_file_picker(
    client: httpx.Client,
) -> None:
    """Swagger UI shows a text box for FastAPI's `contentMediaType` strings (Try it out then sends
    text and gets 422); `format: binary` is a file picker. The browser test clicks it."""
    spec = client.get("/openapi.json").json()
    bodies = spec["components"]["schemas"]
    for path in ("/v1/classify", "/v1/segment", "/v1/pose"):
        form = spec["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]
        body = bodies[form["schema"]["$ref"].rsplit("/", 1)[-1]]
        file = body["properties"]["file"]
        assert "file" in body["required"]
        assert (file if path == "/v1/pose" else file["items"]) == {"type": "string", "format": "binary"} | (
            {"description": file["description"]} if path == "/v1/pose" else {}
        )
        if path == "/v1/pose":
            assert body["properties"]["boxes"]["type"] == "string"  # a text box, no anyOf with null


def test_openapi_documents_the_statuses_the_layers_around_the_routes_answer(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path, operations in paths.items():
        for method, operation in operations.items():
            documented = set(operation["responses"])
            where = f"{method.upper()} {path}"
            assert {"400", "408", "431", "500"} <= documented, where  # connection layer, bugs
            if "requestBody" in operation:
                assert {"413", "415"} <= documented, where
            if path.startswith("/v2"):
                assert "422" not in documented, where  # the protocol answers 400
    for path in ("/v1/classify", "/v1/segment", "/v1/detect", "/v1/pose", "/v2/models/{name}/infer"):
        responses = paths[path]["post"]["responses"]
        for code in ("queue_full", "deadline_unreachable", "model_not_ready", "overloaded"):
            assert code in responses["503"]["description"], (path, code)
        assert "504" in responses
    assert "overloaded" in paths["/v1/models/{name}/reload"]["post"]["responses"]["503"]["description"]


def test_a_head_over_max_header_bytes_is_431_as_documented_even_on_a_health_route(
    client: httpx.Client,
) -> None:
    response = client.get("/healthz", headers={"x-padding": "a" * 70_000})
    assert response.status_code == 431
    assert response.json()["error"]["code"] == "header_too_large"
    assert "431" in client.get("/openapi.json").json()["paths"]["/healthz"]["get"]["responses"]
