"""`POST /v1/realtime/client_secrets`: ephemeral `ek_` secrets for browsers and apps, OpenAI's shape."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from kombain.server import strict_json
from kombain.server.auth import Principal, require
from kombain.server.client_secrets import ClientSecrets
from kombain.server.errors import ApiError
from kombain.server.openapi import AUTH_ERRORS, errors, request_body
from kombain.server.transports.openai_realtime.protocol import (
    ProtocolError,
    SessionConfig,
    apply_session_update,
    new_id,
    session_object,
)

MIN_TTL_S, MAX_TTL_S, DEFAULT_TTL_S = 10, 7200, 600
_MAX_BODY_BYTES = 64 * 1024

router = APIRouter(tags=["realtime"])


def parse_request(body: Any) -> tuple[int, dict[str, Any] | None, SessionConfig | None]:
    """TTL, session payload and the config it makes, from the request body (ApiError if invalid)."""
    if body is None:
        return DEFAULT_TTL_S, None, None
    if not isinstance(body, dict):
        raise ApiError(400, "body must be a JSON object", "invalid_json")
    ttl = DEFAULT_TTL_S
    after = body.get("expires_after")
    if after is not None:
        if not isinstance(after, dict):
            raise ApiError(400, "expires_after must be an object", "invalid_value", "expires_after")
        if after.get("anchor", "created_at") != "created_at":
            raise ApiError(400, "expires_after.anchor must be 'created_at'", "invalid_value", "expires_after.anchor")
        seconds = after.get("seconds", DEFAULT_TTL_S)
        if type(seconds) is not int or not MIN_TTL_S <= seconds <= MAX_TTL_S:
            raise ApiError(400, f"expires_after.seconds must be an integer from {MIN_TTL_S} to {MAX_TTL_S}",
                           "invalid_value", "expires_after.seconds")
        ttl = seconds
    session = body.get("session")
    if session is None:
        return ttl, None, None
    try:
        config = apply_session_update(SessionConfig(), session, "session.update")
    except ProtocolError as exc:
        raise ApiError(400, str(exc), exc.code, f"session.{exc.param}" if exc.param else "session") from None
    return ttl, session, config


@router.post("/v1/realtime/client_secrets", responses=errors(*AUTH_ERRORS, 400, 413),
             openapi_extra=request_body({"application/json": {"type": "object", "properties": {
                 "expires_after": {"type": "object", "properties": {
                     "anchor": {"type": "string", "enum": ["created_at"]},
                     "seconds": {"type": "integer", "minimum": MIN_TTL_S, "maximum": MAX_TTL_S}}},
                 "session": {"type": "object", "description": "A realtime session, as in session.update"}}}}))
async def create_client_secret(request: Request, principal: Annotated[Principal, Depends(require("voice"))],
                               ) -> JSONResponse:
    """An ephemeral secret for a browser or app: voice entries only (realtime WS, WebRTC), until it expires."""
    raw = await request.body()
    if len(raw) > _MAX_BODY_BYTES:
        raise ApiError(413, f"body over {_MAX_BODY_BYTES} bytes", "request_too_large")
    try:
        body = strict_json.loads(raw) if raw.strip() else None
    except strict_json.JsonInputError as exc:
        raise ApiError(400, f"body is not valid JSON: {exc}", exc.code) from None
    ttl, session, config = parse_request(body)
    minter: ClientSecrets = request.app.state.kombain.auth.client_secrets
    try:
        value = minter.mint(principal.subject, ttl, session)
    except ValueError as exc:
        raise ApiError(400, str(exc), "session_too_large", "session") from None
    secret = minter.verify(value)
    assert secret is not None
    shown = session_object(new_id("sess"), config or SessionConfig(), "")
    shown.setdefault("type", (config or SessionConfig()).kind)
    return JSONResponse({"value": value, "expires_at": secret.expires_at, "session": shown})
