"""Who may call: API keys, JWTs (jwt_auth.py) and client secrets (client_secrets.py), with scopes.

Off when no key or JWT key is configured (local use): every caller is then anonymous, keyed by
IP for the per-key limits (quotas.py). Scopes: `voice`, `lane`, `admin` (all); API keys have all.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocket

from kombain.server.client_secrets import PREFIX as CLIENT_SECRET_PREFIX
from kombain.server.client_secrets import ClientSecrets
from kombain.server.errors import ApiError, error_body
from kombain.server.jwt_auth import JwtVerifier, TokenError
from kombain.server.quotas import OverLimit
from kombain.server.settings import Settings

_SUBPROTOCOL_KEY = "openai-insecure-api-key."  # browsers cannot set headers on WebSockets


def _as_bytes(text: str) -> bytes:
    # Headers arrive as latin-1 text and query strings as UTF-8: either may hold any character,
    # and hmac.compare_digest refuses non-ASCII str (TypeError, a 500), so compare bytes.
    return text.encode("utf-8", "surrogatepass")


def _bearer(value: str | None) -> str | None:
    if value and value.lower().startswith("bearer "):
        return value[7:].strip()
    return None


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: `subject` keys the per-key limits; `session` comes with a client secret."""

    subject: str
    scopes: frozenset[str]
    kind: str  # "key" | "jwt" | "client_secret" | "anonymous"
    session: dict[str, Any] | None = None

    def allows(self, scope: str | None, *, realtime: bool = False) -> bool:
        if self.kind == "client_secret":
            return realtime  # voice entries that open a realtime session, nothing else
        return scope is None or "admin" in self.scopes or scope in self.scopes


class AuthFailed(Exception):
    """401 (no or bad credential) or 403 (a good one without the scope)."""

    def __init__(self, status: int, message: str, code: str, challenge: str) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.challenge = status, message, code, challenge


_ALL = frozenset({"admin"})
_MISSING = "missing or invalid API key (Authorization: Bearer KEY)"
_INVALID = 'Bearer error="invalid_token"'


class Authenticator:
    """API keys, JWTs and client secrets checked in one place (see docs/security.md)."""

    def __init__(self, settings: Settings) -> None:
        self.keys = settings.api_key_set
        self.jwt = JwtVerifier(secret=settings.jwt_secret, public_key=settings.jwt_public_key,
                               issuer=settings.jwt_issuer, audience=settings.jwt_audience,
                               leeway_s=settings.jwt_leeway_s)
        self.client_secrets = ClientSecrets(settings.client_secret_key)
        self.enabled = settings.auth_enabled

    def authenticate(self, token: str | None, client_ip: str, *, realtime: bool = False) -> Principal:
        """The caller behind `token` (anonymous, per IP, when auth is off); AuthFailed(401) if none."""
        if token is not None and token.startswith(CLIENT_SECRET_PREFIX) and (realtime or self.enabled):
            secret = self.client_secrets.verify(token)
            if secret is not None:
                return Principal(secret.subject, frozenset(), "client_secret", secret.session)
            if self.enabled:
                raise AuthFailed(401, "invalid or expired client secret", "invalid_api_key", _INVALID)
        if not self.enabled:
            return Principal(f"ip:{client_ip}", _ALL, "anonymous")
        if token is None:
            raise AuthFailed(401, _MISSING, "invalid_api_key", "Bearer")
        matched = _match(token, self.keys)
        if matched is not None:
            return Principal("key:" + hashlib.sha256(_as_bytes(matched)).hexdigest()[:12], _ALL, "key")
        if self.jwt.enabled and token.count(".") == 2:
            try:
                claims = self.jwt.verify(token)
            except TokenError as exc:
                raise AuthFailed(401, str(exc), "invalid_api_key", _INVALID) from None
            return Principal("jwt:" + claims.subject, claims.scopes, "jwt")
        raise AuthFailed(401, _MISSING, "invalid_api_key", _INVALID)

    def authorize(self, token: str | None, client_ip: str, scope: str | None, *,
                  realtime: bool = False) -> Principal:
        """`authenticate`, then the scope: AuthFailed(403) for a good credential without it."""
        principal = self.authenticate(token, client_ip, realtime=realtime)
        if not principal.allows(scope, realtime=realtime):
            need = scope or "a voice entry"
            raise AuthFailed(403, f"this credential does not grant the '{need}' scope", "insufficient_scope",
                             f'Bearer error="insufficient_scope", scope="{scope or "voice"}"')
        return principal


def _match(token: str, keys: frozenset[str]) -> str | None:
    """Constant-time in the token's content: every key is compared, whichever matches."""
    given = _as_bytes(token)
    found: str | None = None
    for key in keys:
        if hmac.compare_digest(given, _as_bytes(key)):
            found = key
    return found


def _ok(token: str | None, keys: frozenset[str]) -> bool:
    return token is not None and _match(token, keys) is not None


def _client_ip(conn: HTTPConnection) -> str:
    return conn.client.host if conn.client else "unknown"


def require(scope: str | None, *, realtime: bool = False) -> Callable[[Request], Awaitable[Principal]]:
    """FastAPI dependency: the caller, with `scope` (admin has all), under its request rate.

    `realtime`: the entry opens a realtime session, so a client secret is accepted too."""

    async def dependency(request: Request) -> Principal:  # async: run on the loop, not in a thread
        state = request.app.state.kombain
        try:
            principal = state.auth.authorize(_bearer(request.headers.get("authorization")), _client_ip(request),
                                             scope, realtime=realtime)
            await state.quotas.hit(principal.subject)
        except AuthFailed as exc:
            raise ApiError(exc.status, exc.message, exc.code, headers={"WWW-Authenticate": exc.challenge}) from None
        except OverLimit as exc:
            raise ApiError(429, exc.message, exc.code, type_="rate_limit_error",
                           headers={"Retry-After": str(exc.retry_after_s)}) from None
        request.state.principal = principal
        return principal

    return dependency


require_api_key = require(None)  # any valid credential (the v1 behaviour)
_require_admin = require("admin")


async def require_metrics(request: Request) -> None:
    """/metrics: open unless KOMBAIN_METRICS_AUTH is on, then admin only."""
    if request.app.state.kombain.settings.metrics_auth:
        await _require_admin(request)


def websocket_token(ws: WebSocket, query_keys: tuple[str, ...] = ("api_key",)) -> str | None:
    """The credential of a handshake: Authorization, the browser subprotocol, or the query."""
    token = _bearer(ws.headers.get("authorization"))
    if token is None:
        for proto in ws.headers.get("sec-websocket-protocol", "").split(","):
            proto = proto.strip()
            if proto.startswith(_SUBPROTOCOL_KEY):
                token = proto[len(_SUBPROTOCOL_KEY):]
    for name in query_keys:
        if token is None:
            token = ws.query_params.get(name)
    return token


async def authorize_websocket(ws: WebSocket, scope: str, *, realtime: bool = False,
                              query_keys: tuple[str, ...] = ("api_key",)) -> Principal | None:
    """Check a handshake before accept: the caller, or None once the refusal (401/403/429) is sent."""
    state = ws.app.state.kombain
    try:
        principal = state.auth.authorize(websocket_token(ws, query_keys), _client_ip(ws), scope, realtime=realtime)
        await state.quotas.hit(principal.subject)
    except AuthFailed as exc:
        await deny_websocket(ws, exc.status, exc.message, exc.code, {"WWW-Authenticate": exc.challenge})
        return None
    except OverLimit as exc:
        await deny_websocket(ws, 429, exc.message, exc.code, {"Retry-After": str(exc.retry_after_s)})
        return None
    return principal


async def deny_websocket(ws: WebSocket, status: int, message: str, code: str,
                         headers: dict[str, str] | None = None) -> None:
    """Refuse a handshake with an HTTP status in the error shape where the server supports denial
    responses, else uvicorn's plain 403 (a close before accept)."""
    if "websocket.http.response" in ws.scope.get("extensions", {}):
        type_ = "rate_limit_error" if status == 429 else "invalid_request_error"
        await ws.send_denial_response(JSONResponse(error_body(message, type_, code), status, headers=headers))
    else:
        await ws.close(code=1008 if status in (401, 403) else 1013, reason=message[:120])


async def refuse_websocket(ws: WebSocket) -> None:
    """401 for a handshake without a valid API key."""
    await deny_websocket(ws, 401, _MISSING, "invalid_api_key", {"WWW-Authenticate": "Bearer"})


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
