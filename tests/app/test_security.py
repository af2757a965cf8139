"""Who may call: API keys on /v1 and /v2, admin keys on admin routes, open probes, CORS closed by default."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from app.config import Settings
from app.security import KeySet
from tests.app.conftest import RunningServer, encode, serve

PNG = {"content-type": "image/png"}
IMAGE = encode(np.full((40, 40, 3), 20, np.uint8))
USER, ADMIN = "user-key-0123", "admin-key-4567"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def keyed_server(tiny_repository: Path) -> Iterator[RunningServer]:
    user_digest = hashlib.sha256(USER.encode()).hexdigest()  # a key may be configured by its hash
    with serve(tiny_repository, api_keys=[f"sha256:{user_digest}"], admin_api_keys=[ADMIN]) as running:
        yield running


def test_settings_hold_only_sha256_digests_of_the_keys() -> None:
    settings = Settings(api_keys="first-key, second-key", admin_api_keys=["sha256:" + "AB" * 32])
    assert settings.api_keys == [hashlib.sha256(k).hexdigest() for k in (b"first-key", b"second-key")]
    assert settings.admin_api_keys == ["ab" * 32]
    assert "first-key" not in repr(settings) and "first-key" not in settings.model_dump_json()


def test_key_set_matches_only_its_keys() -> None:
    keys = KeySet([hashlib.sha256(b"a").hexdigest(), hashlib.sha256(b"b").hexdigest()])
    assert keys.matches("a") and keys.matches("b")
    assert not keys.matches("c") and not keys.matches("") and not keys.matches("a ")


def test_prediction_without_a_valid_key_answers_401_with_a_bearer_challenge(
    keyed_server: RunningServer,
) -> None:
    with keyed_server.client() as client:
        missing = client.post("/v1/classify", content=IMAGE, headers=PNG)
        wrong = client.post("/v1/classify", content=IMAGE, headers={**PNG, **bearer("guess")})
        basic = client.post("/v1/classify", content=IMAGE, headers={**PNG, "Authorization": f"Basic {USER}"})
        listing = client.get("/v1/models")
        v2_infer = client.post("/v2/models/tiny/infer", json={"inputs": []})
        v2_versioned = client.post("/v2/models/tiny/versions/1/infer", json={"inputs": []})
        user = client.post("/v1/classify", content=IMAGE, headers={**PNG, **bearer(USER)})
        admin = client.post("/v1/classify", content=IMAGE, headers={**PNG, **bearer(ADMIN)})
    for refused in (missing, wrong, basic, listing, v2_infer, v2_versioned):
        assert refused.status_code == 401, refused.request.url
        assert refused.headers["www-authenticate"].startswith("Bearer")
    assert missing.json()["error"]["code"] == "unauthorized"
    assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
    assert isinstance(v2_infer.json()["error"], str)  # the protocol's own error shape under /v2
    assert (user.status_code, admin.status_code) == (200, 200)


def test_health_and_metrics_stay_open_with_keys_on(keyed_server: RunningServer) -> None:
    with keyed_server.client() as client:
        for path in ("/healthz", "/readyz", "/metrics", "/v2/health/live", "/openapi.json"):
            assert client.get(path).status_code == 200, path


def test_reload_needs_an_admin_key(keyed_server: RunningServer) -> None:
    with keyed_server.client() as client:
        anonymous = client.post("/v1/models/tiny/reload")
        user = client.post("/v1/models/tiny/reload", headers=bearer(USER))
        admin = client.post("/v1/models/tiny/reload", headers=bearer(ADMIN))
    assert anonymous.status_code == 401
    assert (user.status_code, user.json()["error"]["code"]) == (403, "forbidden")
    assert (admin.status_code, admin.json()["reloaded"]) == (200, False)


def test_reload_is_off_without_admin_keys(server: RunningServer) -> None:
    with server.client() as client:
        answer = client.post("/v1/models/mobilenet-v2_8xb32_in1k/reload")
    assert (answer.status_code, answer.json()["error"]["code"]) == (403, "forbidden")
    assert "ADMIN_API_KEYS" in answer.json()["error"]["message"]


def test_openapi_declares_the_bearer_scheme_and_401_where_a_key_is_needed(
    keyed_server: RunningServer,
) -> None:
    with keyed_server.client() as client:
        spec = client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    classify = spec["paths"]["/v1/classify"]["post"]
    assert classify["security"] == [{"bearer": []}] and "401" in classify["responses"]
    assert {"401", "403"} <= set(spec["paths"]["/v1/models/{name}/reload"]["post"]["responses"])
    assert "security" not in spec["paths"]["/healthz"]["get"]


def test_metrics_need_a_key_with_protect_metrics(tiny_repository: Path) -> None:
    with serve(tiny_repository, api_keys=[USER], protect_metrics=True) as running, running.client() as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers=bearer(USER)).status_code == 200
        assert client.get("/healthz").status_code == 200


# -- CORS ----------------------------------------------------------------------------------------

PREFLIGHT = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}


def test_cross_origin_calls_are_refused_by_default(server: RunningServer) -> None:
    with server.client() as client:
        preflight = client.options(
            "/v1/classify", headers={"Origin": "https://elsewhere.example", **PREFLIGHT}
        )
        simple = client.get("/v1/models", headers={"Origin": "https://elsewhere.example"})
    assert "access-control-allow-origin" not in preflight.headers
    assert "access-control-allow-origin" not in simple.headers


def test_cors_origins_lets_exactly_those_origins_call(tiny_repository: Path) -> None:
    allowed = "https://app.example"
    with serve(tiny_repository, cors_origins=allowed) as running, running.client() as client:
        preflight = client.options("/v1/classify", headers={"Origin": allowed, **PREFLIGHT})
        simple = client.post("/v1/classify", content=IMAGE, headers={**PNG, "Origin": allowed})
        other = client.post("/v1/classify", content=IMAGE, headers={**PNG, "Origin": "https://evil.example"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == allowed
    assert simple.headers["access-control-allow-origin"] == allowed
    assert "x-request-id" in simple.headers["access-control-expose-headers"].lower()
    assert "access-control-allow-origin" not in other.headers
