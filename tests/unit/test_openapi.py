"""The OpenAPI document the server serves: every error answer documented with the error object,
every entry behind authentication listing what authentication answers, no FastAPI 422 (this
server answers 400 for a bad request). The live server is held to it in tests/fuzz/test_http.py."""

from __future__ import annotations

from typing import Any

import pytest

from kombain.server.app import create_app
from kombain.server.openapi import AUTH_ERRORS
from kombain.server.settings import Settings

# Entries open to anyone: probes, and Twilio's webhook (it signs requests instead).
OPEN = {"/healthz", "/readyz", "/v1/telephony/twilio/twiml"}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return create_app(Settings()).openapi()  # the lifespan (model loading) does not run


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, ops in doc["paths"].items() for method, op in ops.items()]


def test_no_validation_422_anywhere(doc: dict[str, Any]) -> None:
    for path, method, op in operations(doc):
        assert "422" not in op["responses"], (method, path)
    assert "HTTPValidationError" not in doc["components"]["schemas"]


def test_every_error_answer_is_the_error_object(doc: dict[str, Any]) -> None:
    checked = 0
    for path, method, op in operations(doc):
        for status, response in op["responses"].items():
            if int(status) < 400 or path == "/readyz":
                continue
            schema = response["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, status)
            checked += 1
    assert checked > 60
    detail = doc["components"]["schemas"]["ErrorDetail"]
    assert set(detail["required"]) == {"message", "type", "param", "code"}


def test_authenticated_entries_list_what_authentication_answers(doc: dict[str, Any]) -> None:
    for path, method, op in operations(doc):
        if path in OPEN:
            assert "401" not in op["responses"], (method, path)
            continue
        missing = {str(c) for c in AUTH_ERRORS} - set(op["responses"])
        assert not missing, f"{method.upper()} {path} does not document {sorted(missing)}"


def test_operation_ids_are_unique(doc: dict[str, Any]) -> None:
    ids = [op["operationId"] for _, _, op in operations(doc)]
    assert len(ids) == len(set(ids)) > 20


def test_media_types_are_the_ones_sent(doc: dict[str, Any]) -> None:
    def types(path: str, method: str, status: str) -> set[str]:
        return set(doc["paths"][path][method]["responses"][status]["content"])

    assert types("/metrics", "get", "200") == {"text/plain"}
    assert types("/v1/jobs/{job_id}/events", "get", "200") == {"text/event-stream"}
    assert types("/v1/videos/{video_id}/content", "get", "200") == {"video/mp4"}
    assert "application/sdp" in types("/v1/realtime/calls", "post", "201")


def test_entries_that_read_their_own_body_document_it(doc: dict[str, Any]) -> None:
    """Clients generate code from these, and schemathesis fuzzes them with bodies of that shape."""
    def body(path: str) -> dict[str, Any]:
        return doc["paths"][path]["post"]["requestBody"]["content"]  # type: ignore[no-any-return]

    assert body("/v1/images/generations")["application/json"]["schema"]["required"] == ["prompt"]
    assert "seconds" in body("/v1/videos")["application/json"]["schema"]["properties"]
    assert body("/v1/audio/transcriptions")["multipart/form-data"]["schema"]["required"] == ["file"]
    assert set(body("/v1/realtime/calls")) == {"application/sdp", "multipart/form-data"}
    assert "expires_after" in body("/v1/realtime/client_secrets")["application/json"]["schema"]["properties"]
    assert "input" in body("/v1/audio/speech")["application/json"]["schema"]["properties"]
