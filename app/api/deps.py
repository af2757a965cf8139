"""Dependencies shared by the routes: the data plane, and the image(s) of a request."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, File, Request, UploadFile

from app.dataplane import DataPlane
from app.errors import InvalidInput, UnsupportedMediaType

RAW_BODY_TYPES = ("image/", "application/octet-stream")


async def get_dataplane(request: Request) -> DataPlane:
    # async: FastAPI runs a plain `def` dependency on its thread pool, a hop per request.
    plane: DataPlane = request.app.state.dataplane
    return plane


DataPlaneDep = Annotated[DataPlane, Depends(get_dataplane)]

FilesParam = Annotated[
    list[UploadFile] | None,
    File(
        description="the image(s); repeat the field for several. Instead, the body may be one raw image/* file"
    ),
]

# The raw-body alternative to the multipart form, for the OpenAPI page.
RAW_IMAGE_BODY = {
    "requestBody": {
        "content": {
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        }
    }
}


async def read_images(request: Request, files: list[UploadFile] | None) -> list[bytes]:
    """The request's images: the `file` parts of a multipart form, or the whole raw body.

    The body was already limited to MAX_BODY_BYTES while it was received.
    """
    if files:
        return [await upload.read() for upload in files]
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        raise InvalidInput("the multipart form has no `file` field")
    if not content_type.startswith(RAW_BODY_TYPES):
        shown = content_type or "none"
        raise UnsupportedMediaType(
            f"content type {shown[:100]!r}: send multipart/form-data with a `file` field, or an image/* body"
        )
    body = await request.body()
    if not body:
        raise InvalidInput("the body is empty")
    return [body]
