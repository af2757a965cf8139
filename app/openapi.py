"""The OpenAPI document says every status a route can answer, in the shape it really has.

FastAPI documents what the routes declare; the layers around them answer more, before any route
runs: the connection layer (app.connections) 400 for bad HTTP, 408 for a slow head and 431 for a
large one on every operation; the middleware 408 (a slow body), 413 (MAX_BODY_BYTES) and 415 (a
compressed body) on every operation that takes a body, 503 (MAX_CONCURRENT_REQUESTS,
MAX_INFLIGHT_BYTES) on every operation those limits cover, 401/403 where a key is needed; the
error handlers 500 for a bug anywhere. The batchers' 503s (queue_full, deadline_unreachable,
model_not_ready) are named on the operations that run a model. FastAPI's default 422
(`HTTPValidationError`, `{"detail": [...]}`) is replaced by the error shape the service really
answers. Checked by fuzzing the API from this document (tests/app/test_fuzz.py).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from app.config import Settings
from app.security import access_for
from app.traffic import is_unlimited

_DEFAULT_422 = "#/components/schemas/HTTPValidationError"

# Answered on any request by the connection layer (app.connections) or the error handlers.
_EVERY_REQUEST = {
    "400": "bad_request: bytes that are not HTTP (answered by the connection layer)",
    "408": "request_timeout: the request's head took over HEADER_TIMEOUT_S, or its body was not in "
    "within REQUEST_TIMEOUT_MS; the connection is closed",
    "431": "header_too_large: the request's head is over MAX_HEADER_BYTES; the connection is closed",
    "500": "internal_error: a bug (logged with the request ID)",
}
# 408 and 431 are written before the request's path is known: always the service's error shape.
_SERVICE_SHAPED = {"408", "431"}
_OVERLOADED = "overloaded: MAX_CONCURRENT_REQUESTS or MAX_INFLIGHT_BYTES reached; see Retry-After"
_MODEL_503 = (
    "queue_full (MAX_QUEUE_SIZE); deadline_unreachable (the work ahead would make the request miss "
    "its deadline); model_not_ready (loading, unloaded, failed, or shutting down); " + _OVERLOADED
)
_NOT_READY = "not ready: a model not loaded (loading or failed), or shutting down (from SIGTERM on)"
_MODEL_RUNS = ("/v1/classify", "/v1/segment", "/v1/detect", "/v1/pose")


def _runs_a_model(path: str, method: str) -> bool:
    return method == "post" and (path in _MODEL_RUNS or path.endswith("/infer"))


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
            if path.startswith("/v2"):  # the protocol answers a bad request 400 (app.api.v2)
                del responses["422"]
                responses.setdefault("400", {"description": "invalid request", "content": error})
            else:
                responses["422"] = {"description": "invalid parameters", "content": error}
        if "requestBody" in operation:
            responses.setdefault("413", {"description": "body too large (MAX_BODY_BYTES)", "content": error})
            responses.setdefault(
                "415", {"description": "unsupported content type or encoding", "content": error}
            )
        for status, description in _EVERY_REQUEST.items():
            content = service_error if status in _SERVICE_SHAPED else error
            responses.setdefault(status, {"description": description, "content": content})
        if _runs_a_model(path, method):
            responses.setdefault("503", {"content": error})["description"] = _MODEL_503
        elif is_unlimited(path):
            if responses.get("503", {}).get("description") == "Service Unavailable":  # FastAPI's text
                responses["503"]["description"] = _NOT_READY
        else:
            declared = responses.setdefault("503", {"description": _OVERLOADED, "content": error})
            if "overloaded" not in declared.get("description", ""):  # the route's own 503, and the limits'
                own = declared.get("description") or "model_not_ready"
                own = "model_not_ready" if own == "Service Unavailable" else own  # FastAPI's default text
                declared["description"] = f"{own}; or {_OVERLOADED}"
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
