"""Fuzz every operation of the OpenAPI document with schemathesis against the running server: no
5xx, and every answer (status, content type, body, headers) as the document declares it.

The document is the app's own, taken at collection time (an app that is built but not started
has the same routes); the requests go to the session's real server. A few examples per
operation keep this under a minute. Longer runs:
    FUZZ_EXAMPLES=500 .venv/bin/pytest tests/app/test_fuzz.py
    .venv/bin/schemathesis run http://127.0.0.1:8000/openapi.json --max-examples 500   # `make serve` first
"""

from __future__ import annotations

import os
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from app.config import Settings
from app.main import create_app
from tests.app.conftest import RunningServer

MAX_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "12"))  # FUZZ_EXAMPLES=500 for a longer run

# The session server's settings where they shape the document (no API keys, so no 401s).
schema = schemathesis.openapi.from_dict(create_app(Settings(model_repository=Path("models"))).openapi())


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,  # the same examples every run: a failure here is reproducible
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_as_its_openapi_document_declares(
    case: schemathesis.Case, server: RunningServer
) -> None:
    # Not `positive_data_acceptance`: a schema can say "binary", not "an image this model can
    # read", so schema-valid random bytes rightly get 415/422.
    case.call_and_validate(base_url=server.url, timeout=120, excluded_checks=[positive_data_acceptance])
