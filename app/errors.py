"""Exception types → status codes, and the one JSON error shape: `{"error": {"code", "message"}}`.

Service errors subclass Starlette's `HTTPException` so that FastAPI lets them pass through its
body parsing untouched (a body-limit error raised while the multipart form is read stays a 413).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from contract.errors import InputError

logger = logging.getLogger(__name__)


class ServiceError(StarletteHTTPException):
    """An answer other than success: HTTP status, a stable machine-readable code and a message."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code=self.status, detail=message, headers=headers)
        self.message = message


class BadRequest(ServiceError):
    status, code = 400, "bad_request"


class WrongTask(ServiceError):
    status, code = 400, "wrong_task"


class ModelNotFound(ServiceError):
    status, code = 404, "model_not_found"


class BodyTooLarge(ServiceError):
    status, code = 413, "body_too_large"


class ImageTooLarge(ServiceError):
    status, code = 413, "image_too_large"


class UnsupportedMediaType(ServiceError):
    status, code = 415, "unsupported_media_type"


class NotAnImage(ServiceError):
    status, code = 415, "not_an_image"


class InvalidInput(ServiceError):
    """Well-formed HTTP whose content cannot be used: missing image, bad boxes, bad top_k."""

    status, code = 422, "invalid_input"


class CorruptImage(ServiceError):
    status, code = 422, "corrupt_image"


class InvalidBoxes(ServiceError):
    status, code = 422, "invalid_boxes"


class InferenceFailed(ServiceError):
    status, code = 500, "inference_failed"


class ModelNotReady(ServiceError):
    status, code = 503, "model_not_ready"

    # A model loads and warms in seconds: the client should come back then, not in 1 s.
    LOADING_RETRY_AFTER_S = 5

    @classmethod
    def loading(cls, name: str) -> ModelNotReady:
        return cls(f"model {name} is still loading", headers={"Retry-After": str(cls.LOADING_RETRY_AFTER_S)})


class QueueFull(ServiceError):
    status, code = 503, "queue_full"


class DeadlineUnreachable(ServiceError):
    """The work already ahead of a request would make it miss its deadline, whether or not the queue
    is full: refused at once (503) instead of a 504 after the wait, with Retry-After the estimated
    seconds until that work is done."""

    status, code = 503, "deadline_unreachable"


class Overloaded(ServiceError):
    """Past MAX_CONCURRENT_REQUESTS or MAX_INFLIGHT_BYTES: 503, with Retry-After."""

    status, code = 503, "overloaded"


class DeadlineExceeded(ServiceError):
    status, code = 504, "deadline_exceeded"


_BY_INPUT_CODE: dict[str, type[ServiceError]] = {
    kind.code: kind for kind in (InvalidInput, NotAnImage, ImageTooLarge, CorruptImage, InvalidBoxes)
}


def from_input_error(exc: InputError) -> ServiceError:
    """The service's answer to a `contract` input error: the same code, with its HTTP status."""
    return _BY_INPUT_CODE.get(exc.code, InvalidInput)(exc.message)


_CODES_BY_STATUS = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    503: "unavailable",
}


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return {"error": error}


def protocol_error_response(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The Open Inference Protocol's error shape (`/v2`): `{"error": "message"}`."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None, details: Any = None
) -> JSONResponse:
    return JSONResponse(error_body(code, message, details), status_code=status, headers=headers)


def _is_v2(request: Request) -> bool:
    """Under /v2 every error has the protocol's shape, the routes' own and unknown paths alike."""
    return request.url.path.startswith("/v2")


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if _is_v2(request):
        message = exc.message if isinstance(exc, ServiceError) else str(exc.detail)
        return protocol_error_response(exc.status_code, message, exc.headers)
    if isinstance(exc, ServiceError):
        return error_response(exc.status_code, exc.code, exc.message, exc.headers)
    code = _CODES_BY_STATUS.get(exc.status_code, "error")
    return error_response(exc.status_code, code, str(exc.detail), exc.headers)


async def _input_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InputError)
    error = from_input_error(exc)
    return error_response(error.status_code, error.code, error.message)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = [
        {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
        for err in exc.errors()
    ]
    first = details[0] if details else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(part) for part in first["loc"])
    message = f"{where}: {first['msg']}" if where else str(first["msg"])
    if _is_v2(request):  # the protocol answers a bad request 400
        return protocol_error_response(400, message)
    return error_response(422, "invalid_request", message, details=details)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error", exc_info=exc)
    if _is_v2(request):
        return protocol_error_response(500, "internal server error")
    return error_response(500, "internal_error", "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(InputError, _input_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
