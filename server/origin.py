"""Browsers only from where they should be: the `Origin` check on WebSocket handshakes and WebRTC offers.

A page on any site, open in a browser on the server's machine or network, may open a WebSocket to
`ws://127.0.0.1:8000` or post an offer: browsers send no CORS preflight for either, and with no
keys set (the default on loopback) nothing else stops it. Browsers always say where such a request
comes from (`Origin`); other clients (SDKs, phones, PBXs) send none. So: no `Origin`, or the
server's own (same scheme family, host and port as the request's `Host`), is let in; any other
only when listed in KOMBAIN_ALLOWED_ORIGINS (`*` lets every origin in); the rest get a 403.
"""

from __future__ import annotations

import json
import logging
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from kombain.server.errors import error_body

log = logging.getLogger("kombain.http")

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_SECURE = {"http": False, "ws": False, "https": True, "wss": True}
# Only the WebRTC offer and its hang-up among plain HTTP requests: every WebSocket is checked.
_HTTP_PREFIXES = ("/v1/realtime/calls",)


def parse_allowed(raw: str) -> frozenset[str]:
    """KOMBAIN_ALLOWED_ORIGINS: comma-separated origins (`https://app.example.com`), or `*`."""
    out = set()
    for item in raw.split(","):
        item = item.strip().rstrip("/")
        if not item:
            continue
        if item != "*" and item != "null":
            parts = urlsplit(item)
            if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or parts.path or parts.query:
                raise ValueError(f"KOMBAIN_ALLOWED_ORIGINS: {item!r} is not an origin like https://app.example.com")
            item = _normal(parts.scheme, parts.hostname, parts.port)
        out.add(item)
    return frozenset(out)


def public_origin(public_url: str) -> frozenset[str]:
    """The origin of KOMBAIN_PUBLIC_URL (the node's own, seen through a proxy), if set."""
    parts = urlsplit(public_url.strip())
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        return frozenset()
    return frozenset({_normal(parts.scheme, parts.hostname, parts.port)})


def origin_allowed(origin: str | None, host: str | None, scheme: str, allowed: frozenset[str]) -> bool:
    """Whether a request with this `Origin` header may go on (pure; see the module's docstring).
    `host` is the request's Host header, `scheme` its own (http, https, ws, wss)."""
    if origin is None:
        return True  # not a browser
    origin = origin.strip()
    if "*" in allowed or origin in allowed:
        return True
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return False
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        return False  # "null" (a sandboxed frame, a file:// page) unless listed, or garbage
    normal = _normal(parts.scheme, parts.hostname, port)
    if normal in allowed:
        return True
    if not host:
        return False
    try:
        own = urlsplit(f"//{host.strip()}")
        own_port = own.port
    except ValueError:
        return False
    return (_SECURE[parts.scheme] == _SECURE.get(scheme, False) and own.hostname is not None
            and own.hostname == parts.hostname
            and (own_port or _DEFAULT_PORTS[scheme]) == (port or _DEFAULT_PORTS[parts.scheme]))


def _normal(scheme: str, hostname: str, port: int | None) -> str:
    port = port if port not in (None, _DEFAULT_PORTS[scheme]) else None
    host = f"[{hostname}]" if ":" in hostname else hostname
    return f"{scheme}://{host}" + (f":{port}" if port else "")


class OriginCheck:
    """ASGI middleware: a WebSocket handshake or a WebRTC offer from a browser page of another
    origin is refused with 403 (an OpenAI-style error body) before any handler runs."""

    def __init__(self, app: ASGIApp, allowed: frozenset[str]) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        checked = kind == "websocket" or (
            kind == "http" and scope.get("method") != "GET" and scope.get("path", "").startswith(_HTTP_PREFIXES))
        if not checked:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        origin = headers.get("origin")
        if origin_allowed(origin, headers.get("host"), scope.get("scheme", "http"), self.allowed):
            await self.app(scope, receive, send)
            return
        log.warning("%s %s refused: Origin %r is not allowed (KOMBAIN_ALLOWED_ORIGINS)",
                    "WebSocket" if kind == "websocket" else scope.get("method"), scope.get("path"), origin[:100] if origin else origin)
        body = json.dumps(error_body(
            "this origin may not use the server; list it in KOMBAIN_ALLOWED_ORIGINS", "invalid_request_error",
            "origin_not_allowed")).encode()
        head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if kind == "http":
            await send({"type": "http.response.start", "status": 403, "headers": head})
            await send({"type": "http.response.body", "body": body})
        elif "websocket.http.response" in scope.get("extensions", {}):
            await send({"type": "websocket.http.response.start", "status": 403, "headers": head})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008})  # before accept: a 403
