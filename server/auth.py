"""Bearer-token auth for the API (off when no keys are configured)."""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request
from starlette.websockets import WebSocket

_SUBPROTOCOL_KEY = "openai-insecure-api-key."  # browsers cannot set headers on WebSockets


def _ok(token: str | None, keys: frozenset[str]) -> bool:
    return token is not None and any(hmac.compare_digest(token, k) for k in keys)


def _bearer(value: str | None) -> str | None:
    if value and value.lower().startswith("bearer "):
        return value[7:].strip()
    return None


def require_api_key(request: Request) -> None:
    """FastAPI dependency: 401 unless a configured key is presented (or none are configured)."""
    keys = request.app.state.kombain.settings.api_key_set
    if keys and not _ok(_bearer(request.headers.get("authorization")), keys):
        raise HTTPException(401, detail="missing or invalid API key (Authorization: Bearer KEY)")


def websocket_authorized(ws: WebSocket, keys: frozenset[str]) -> bool:
    if not keys:
        return True
    token = _bearer(ws.headers.get("authorization"))
    if token is None:
        for proto in ws.headers.get("sec-websocket-protocol", "").split(","):
            proto = proto.strip()
            if proto.startswith(_SUBPROTOCOL_KEY):
                token = proto[len(_SUBPROTOCOL_KEY):]
    if token is None:
        token = ws.query_params.get("api_key")
    return _ok(token, keys)
