"""The OpenAPI document says every status a route can answer, in the shape it really has.

FastAPI documents what the routes declare; the middleware answers more, before any route runs:
413 (MAX_BODY_BYTES) and 415 (a compressed body) on every operation that takes a body, 503
(MAX_CONCURRENT_REQUESTS) on every operation the concurrency limit covers, 401/403 where a key
is needed. FastAPI's default 422 (`HTTPValidationError`, `{"detail": [...]}`) is replaced by the
error shape the service really answers. Checked by fuzzing the API from this document
(tests/app/test_fuzz.py).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from app.config import Settings
from app.security import access_for
from app.traffic import is_unlimited

_DEFAULT_422 = "#/components/schemas/HTTPValidationError"


def install_openapi(app: FastAPI, settings: Settings) -> None:
    """Wrap `app.openapi` so the generated document is completed once, on first use."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            complete(schema, settings)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, operations in schema.get("paths", {}).items()
        for method, operation in operations.items()
        if isinstance(operation, dict) and "responses" in operation
    ]


def _service_error(schema: dict[str, Any]) -> dict[str, Any]:
    """JSON content of `app.schemas.ErrorResponse` (FastAPI qualifies the name when another model
    of the same name exists)."""
    names = schema.get("components", {}).get("schemas", {})
    name = next((n for n in names if n == "ErrorResponse" or n.endswith("schemas__ErrorResponse")), None)
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{name or 'ErrorResponse'}"}}}


def _error_content(operation: dict[str, Any], fallback: dict[str, Any]) -> dict[str, Any]:
    """The content of the operation's own declared errors, else the service's error shape."""
    for code, response in operation["responses"].items():
        content = response.get("content", {}).get("application/json")
        if str(code)[0] in "45" and content and content.get("schema", {}).get("$ref") != _DEFAULT_422:
            return {"application/json": content}
    return fallback


def complete(schema: dict[str, Any], settings: Settings) -> None:
    service_error = _service_error(schema)
    for path, method, operation in _operations(schema):
        responses = operation["responses"]
        error = _error_content(operation, service_error)
        default_422 = responses.get("422", {}).get("content", {}).get("application/json", {})
        if default_422.get("schema", {}).get("$ref") == _DEFAULT_422:
            responses["422"] = {"description": "invalid parameters", "content": error}
        if "requestBody" in operation:
            responses.setdefault("413", {"description": "body too large (MAX_BODY_BYTES)", "content": error})
            responses.setdefault(
                "415", {"description": "unsupported content type or encoding", "content": error}
            )
        if not is_unlimited(path):
            responses.setdefault(
                "503",
                {"description": "overloaded (MAX_CONCURRENT_REQUESTS); see Retry-After", "content": error},
            )
        _document_security(operation, path, method, settings, error)
        _require_uploaded_files(operation, schema, 1 if path == "/v1/pose" else settings.max_images)
    if settings.api_keys or settings.admin_api_keys:
        schema.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = {
            "type": "http",
            "scheme": "bearer",
            "description": "an API key (API_KEYS; ADMIN_API_KEYS for admin routes)",
        }
    _drop_unused(schema, ("HTTPValidationError", "ValidationError"))


def _document_security(
    operation: dict[str, Any], path: str, method: str, settings: Settings, error: dict[str, Any]
) -> None:
    """401 (and 403 on admin routes) where a key is needed; the bearer scheme when keys are on."""
    keys_on = bool(settings.api_keys or settings.admin_api_keys)
    access = access_for(path, settings.protect_metrics, method)
    if access == "open" or (access == "client" and not keys_on):
        return
    responses = operation["responses"]
    if keys_on:
        operation["security"] = [{"bearer": []}]
        responses.setdefault(
            "401", {"description": "no valid API key (WWW-Authenticate: Bearer)", "content": error}
        )
    if access == "admin":
        responses.setdefault(
            "403", {"description": "not an admin key, or ADMIN_API_KEYS unset", "content": error}
        )


_BINARY = {"type": "string", "format": "binary"}


def _require_uploaded_files(operation: dict[str, Any], schema: dict[str, Any], most: int) -> None:
    """In a multipart body the `file` field is required (1..`most` files); FastAPI documents it as
    optional because the same route also takes a raw image/* body instead of the form.

    FastAPI writes the files as OpenAPI 3.1's `contentMediaType` strings, which Swagger UI shows as
    text boxes (its Try it out then sends text, answered 422); `format: binary` gets a file picker.
    One file at most (pose) is one picker; several are an array of them. The other form fields
    (pose's `boxes`) lose their `anyOf` with null, so Swagger UI shows them as a text box.
    """
    form = operation.get("requestBody", {}).get("content", {}).get("multipart/form-data", {})
    ref = form.get("schema", {}).get("$ref", "")
    body = schema.get("components", {}).get("schemas", {}).get(ref.rsplit("/", 1)[-1], {})
    properties = body.get("properties", {})
    field = properties.get("file")
    if field is None:
        return
    description = field.get("description", "")
    if most == 1:
        properties["file"] = {
            **_BINARY,
            "description": description.replace("(s); repeat the field for several", ""),
        }
    else:
        properties["file"] = {
            "type": "array",
            "items": dict(_BINARY),
            "minItems": 1,
            "maxItems": most,
            "description": description,
        }
    body["required"] = sorted({*body.get("required", []), "file"})
    for name, other in properties.items():
        options = other.get("anyOf", [])
        strings = [option for option in options if option.get("type") == "string"]
        if name != "file" and len(strings) == 1 and len(options) == 2:
            properties[name] = {**{k: v for k, v in other.items() if k != "anyOf"}, **strings[0]}


def _drop_unused(schema: dict[str, Any], names: tuple[str, ...]) -> None:
    components = schema.get("components", {}).get("schemas", {})
    for name in names:
        others = {key: value for key, value in components.items() if key != name}
        if name in components and f"/{name}'" not in str(schema.get("paths")) + str(others):
            del components[name]
