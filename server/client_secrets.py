"""Short-lived client secrets for `POST /v1/realtime/client_secrets`: minting and checking, sans I/O.

A secret is self-contained and HMAC-signed: `ek_<zlib+base64url JSON>.<base64url MAC>`, holding
the minting subject, the expiry and the initial session. Nothing is stored, so any node that
shares `KOMBAIN_CLIENT_SECRET_KEY` accepts it; without that key each process signs with a random
one (secrets then work only on the node that made them, until it restarts).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

PREFIX = "ek_"
MAX_TOKEN_CHARS = 6000  # it travels in a WebSocket subprotocol header: keep it under header limits
_MAX_JSON_BYTES = 64 * 1024  # the decompressed payload
_MAC_BYTES = 24


@dataclass(frozen=True, slots=True)
class ClientSecret:
    subject: str
    expires_at: int
    session: dict[str, Any] | None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class ClientSecrets:
    """Mints and checks `ek_` secrets; `clock` is injectable for tests."""

    def __init__(self, key: str = "", clock: Callable[[], float] = time.time) -> None:
        self._key = key.encode() if key else secrets.token_bytes(32)
        self._clock = clock

    def mint(self, subject: str, ttl_s: int, session: dict[str, Any] | None) -> str:
        """The secret's value; ValueError if the session makes it too large."""
        expires_at = int(self._clock()) + ttl_s
        payload = json.dumps({"sub": subject, "exp": expires_at, "session": session, "n": secrets.token_hex(4)},
                             separators=(",", ":")).encode()
        body = _b64(zlib.compress(payload, 9))
        value = f"{PREFIX}{body}.{_b64(self._mac(body))}"
        if len(value) > MAX_TOKEN_CHARS:
            raise ValueError(f"the session is too large for a client secret (over {MAX_TOKEN_CHARS} characters)")
        return value

    def verify(self, value: str) -> ClientSecret | None:
        """What a valid, unexpired secret carries; None for anything else."""
        if not value.startswith(PREFIX) or len(value) > MAX_TOKEN_CHARS or not value.isascii():
            return None
        body, _, mac = value[len(PREFIX):].rpartition(".")
        try:
            if not hmac.compare_digest(_unb64(mac), self._mac(body)):
                return None
            inflater = zlib.decompressobj()
            raw = inflater.decompress(_unb64(body), _MAX_JSON_BYTES)
            data = json.loads(raw)
        except (binascii.Error, zlib.error, ValueError):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("exp"), int) or data["exp"] <= self._clock():
            return None
        session = data.get("session")
        return ClientSecret(str(data.get("sub", "")), data["exp"], session if isinstance(session, dict) else None)

    def _mac(self, body: str) -> bytes:
        return hmac.new(self._key, body.encode(), hashlib.sha256).digest()[:_MAC_BYTES]
