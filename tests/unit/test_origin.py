"""The Origin check's pure part: who may open a WebSocket or post a WebRTC offer."""

from __future__ import annotations

import pytest

from kombain.server.origin import origin_allowed, parse_allowed, public_origin

NONE: frozenset[str] = frozenset()


@pytest.mark.parametrize(("origin", "host", "scheme"), [
    (None, "127.0.0.1:8000", "ws"),  # not a browser: SDKs, phones, PBXs
    ("http://127.0.0.1:8000", "127.0.0.1:8000", "ws"),  # the server's own page
    ("https://voice.example.com", "voice.example.com", "wss"),  # default ports on both sides
    ("https://voice.example.com:443", "voice.example.com", "wss"),
    ("http://[::1]:8000", "[::1]:8000", "http"),
    ("HTTP://127.0.0.1:8000", "127.0.0.1:8000", "ws"),
])
def test_same_origin_and_non_browsers_are_let_in(origin: str | None, host: str, scheme: str) -> None:
    assert origin_allowed(origin, host, scheme, NONE)


@pytest.mark.parametrize(("origin", "host", "scheme"), [
    ("https://evil.example", "127.0.0.1:8000", "ws"),
    ("http://127.0.0.1:9000", "127.0.0.1:8000", "ws"),  # another port is another origin
    ("https://127.0.0.1:8000", "127.0.0.1:8000", "ws"),  # and another scheme
    ("http://localhost:8000", "127.0.0.1:8000", "ws"),
    ("null", "127.0.0.1:8000", "ws"),  # sandboxed frames, file:// pages
    ("", "127.0.0.1:8000", "ws"),
    ("http://127.0.0.1:99999", "127.0.0.1:8000", "ws"),
    ("http://127.0.0.1:8000", None, "ws"),
    ("\u00a0", "127.0.0.1:8000", "http"),
])
def test_other_origins_are_refused(origin: str, host: str | None, scheme: str) -> None:
    assert not origin_allowed(origin, host, scheme, NONE)


def test_allow_list() -> None:
    allowed = parse_allowed(" https://app.example.com/, http://localhost:3000 ,")
    assert allowed == {"https://app.example.com", "http://localhost:3000"}
    assert origin_allowed("https://app.example.com", "127.0.0.1:8000", "ws", allowed)
    assert origin_allowed("https://app.example.com:443", "127.0.0.1:8000", "ws", allowed)
    assert origin_allowed("http://localhost:3000", "127.0.0.1:8000", "http", allowed)
    assert not origin_allowed("http://localhost:3001", "127.0.0.1:8000", "http", allowed)
    assert not origin_allowed("https://evil.example", "127.0.0.1:8000", "ws", allowed)
    assert origin_allowed("https://evil.example", "127.0.0.1:8000", "ws", parse_allowed("*"))
    assert origin_allowed("null", "127.0.0.1:8000", "ws", parse_allowed("null"))


@pytest.mark.parametrize("raw", ["app.example.com", "https://app.example.com/path", "ftp://x", "https://"])
def test_allow_list_entries_must_be_origins(raw: str) -> None:
    with pytest.raises(ValueError, match="KOMBAIN_ALLOWED_ORIGINS"):
        parse_allowed(raw)


def test_public_url_is_the_nodes_own_origin() -> None:
    assert public_origin("https://voice.example.com/") == {"https://voice.example.com"}
    assert public_origin("") == frozenset()
    allowed = public_origin("https://voice.example.com")
    assert origin_allowed("https://voice.example.com", "10.0.0.5:8000", "ws", allowed)  # behind a proxy
