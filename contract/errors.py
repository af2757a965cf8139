"""Plain exceptions for bad input, each with a stable machine-readable `code`.

They know nothing of HTTP: `app.errors` maps each code to its status (415, 413, 422).
"""

from __future__ import annotations


class InputError(ValueError):
    """Input a client sent that cannot be used."""

    code = "invalid_input"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(InputError):
    code = "invalid_input"


class NotAnImage(InputError):
    code = "not_an_image"


class ImageTooLarge(InputError):
    code = "image_too_large"


class CorruptImage(InputError):
    code = "corrupt_image"


class InvalidBoxes(InputError):
    code = "invalid_boxes"
