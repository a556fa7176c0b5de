"""Bearer-token auth for the API (off when no keys are configured)."""

from __future__ import annotations

import hmac
import logging
import re

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.websockets import WebSocket

from kombain.server.errors import error_body

_SUBPROTOCOL_KEY = "openai-insecure-api-key."  # browsers cannot set headers on WebSockets


def _as_bytes(text: str) -> bytes:
    # Headers arrive as latin-1 text and query strings as UTF-8: either may hold any character,
    # and hmac.compare_digest refuses non-ASCII str (TypeError, a 500), so compare bytes.
    return text.encode("utf-8", "surrogatepass")


def _ok(token: str | None, keys: frozenset[str]) -> bool:
    """Constant-time in the token's content: every key is compared, whichever matches."""
    if token is None:
        return False
    given = _as_bytes(token)
    found = False
    for key in keys:
        found |= hmac.compare_digest(given, _as_bytes(key))
    return found


def _bearer(value: str | None) -> str | None:
    if value and value.lower().startswith("bearer "):
        return value[7:].strip()
    return None


def require_api_key(request: Request) -> None:
    """FastAPI dependency: 401 unless a configured key is presented (or none are configured)."""
    keys = request.app.state.kombain.settings.api_key_set
    if keys and not _ok(_bearer(request.headers.get("authorization")), keys):
        raise HTTPException(401, detail=_MISSING, headers={"WWW-Authenticate": "Bearer"})


_MISSING = "missing or invalid API key (Authorization: Bearer KEY)"


async def refuse_websocket(ws: WebSocket) -> None:
    """Answer an unauthorised WebSocket handshake: HTTP 401 in the error shape where the server
    supports denial responses, else uvicorn's plain 403 (a close before accept)."""
    if "websocket.http.response" in ws.scope.get("extensions", {}):
        await ws.send_denial_response(JSONResponse(error_body(_MISSING, "invalid_request_error", "invalid_api_key"),
                                                   401, headers={"WWW-Authenticate": "Bearer"}))
    else:
        await ws.close(code=1008, reason="missing or invalid API key")


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


_KEY_IN_QUERY = re.compile(r"([?&](?:api_key|key|token)=)[^&\s\"]*", re.IGNORECASE)


class RedactKeysFilter(logging.Filter):
    """Replaces `?api_key=...` in access-log lines (uvicorn logs the path with its query)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, str) and "=" in a for a in record.args):
            record.args = tuple(_KEY_IN_QUERY.sub(r"\1REDACTED", a) if isinstance(a, str) else a
                                for a in record.args)
        elif isinstance(record.msg, str) and "=" in record.msg and not record.args:
            record.msg = _KEY_IN_QUERY.sub(r"\1REDACTED", record.msg)
        return True


def redact_keys_in_logs() -> None:
    """Install the redaction on uvicorn's access and connection loggers (after uvicorn configured them)."""
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactKeysFilter) for f in logger.filters):
            logger.addFilter(RedactKeysFilter())
