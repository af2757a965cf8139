"""The contract's tests share the model repository fixtures of the service's tests."""

from tests.app.conftest import names

__all__ = ["names"]
