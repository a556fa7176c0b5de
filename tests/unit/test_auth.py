"""API-key checks, access-log redaction and Retry-After defaults (no server)."""

from __future__ import annotations

import logging

import pytest

from kombain.server.auth import RedactKeysFilter, _ok
from kombain.server.errors import ApiError, with_retry_after

KEYS = frozenset({"sekrit", "clé-é"})


@pytest.mark.parametrize("token", ["sekrit", "clé-é"])
def test_configured_keys_match(token: str) -> None:
    assert _ok(token, KEYS)


@pytest.mark.parametrize("token", [None, "", "wrong", "sekri", "sekrit\x00", "\xff\xfe", "sékrit", "\udcff", "中文"])
def test_anything_else_is_refused_without_raising(token: str | None) -> None:
    assert not _ok(token, KEYS)


def test_api_key_in_a_logged_path_is_redacted() -> None:
    record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d',
                               ("1.2.3.4:5", "GET", "/v1/models?x=1&api_key=sekrit&y=2", "1.1", 401), None)
    RedactKeysFilter().filter(record)
    assert record.getMessage() == '1.2.3.4:5 - "GET /v1/models?x=1&api_key=REDACTED&y=2 HTTP/1.1" 401'


@pytest.mark.parametrize(("status", "has"), [(429, True), (503, True), (400, False), (500, False)])
def test_retry_after_on_every_429_and_503(status: int, has: bool) -> None:
    assert ("Retry-After" in (ApiError(status, "m").response().headers)) is has
    assert with_retry_after(503, {"retry-after": "9"}) == {"retry-after": "9"}  # an explicit one is kept
