"""JWT bearer tokens: HS256 with a shared secret, RS256/ES256 with a public key (PyJWT)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

SCOPES = frozenset({"voice", "lane", "admin"})
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


class TokenError(Exception):
    """The token is not acceptable (bad signature, expired, wrong issuer...): a 401."""


@dataclass(frozen=True, slots=True)
class Claims:
    subject: str
    scopes: frozenset[str]


def load_public_key(value: str) -> tuple[Any, str]:
    """A PEM public key given inline or as a file path, and the algorithm it verifies."""
    pem = value if "-----BEGIN" in value else Path(value).expanduser().read_text()
    try:
        key = load_pem_public_key(pem.encode())
    except ValueError as exc:
        raise ValueError(f"jwt_public_key: not a PEM public key ({exc})") from None
    if isinstance(key, rsa.RSAPublicKey):
        return key, "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _EC_ALGORITHMS:
        return key, _EC_ALGORITHMS[key.curve.name]
    raise ValueError("jwt_public_key: only RSA and NIST P-256/384/521 EC keys are supported")


class JwtVerifier:
    """Verifies signature, `exp` (required), and `iss`/`aud` when configured; returns the claims."""

    def __init__(self, *, secret: str = "", public_key: str = "", issuer: str = "", audience: str = "",
                 leeway_s: float = 10.0) -> None:
        self._keys: dict[str, Any] = {}
        if secret:
            self._keys["HS256"] = secret
        if public_key:
            key, alg = load_public_key(public_key)
            self._keys[alg] = key
        self.issuer, self.audience, self.leeway_s = issuer or None, audience or None, leeway_s

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def verify(self, token: str) -> Claims:
        try:
            alg = jwt.get_unverified_header(token).get("alg")
            key = self._keys.get(alg) if isinstance(alg, str) else None
            if key is None:
                raise TokenError(f"token algorithm {alg!r} is not accepted here")
            claims = jwt.decode(token, key, algorithms=[str(alg)], issuer=self.issuer, audience=self.audience,
                                leeway=self.leeway_s,
                                options={"require": ["exp"], "verify_aud": self.audience is not None})
        except jwt.ExpiredSignatureError:
            raise TokenError("token expired") from None
        except jwt.PyJWTError as exc:
            raise TokenError(f"invalid token: {exc}") from None
        return Claims(subject=str(claims.get("sub") or "")[:200], scopes=_scopes(claims))


def _scopes(claims: dict[str, Any]) -> frozenset[str]:
    raw = claims.get("scope", claims.get("scopes", ()))
    items = raw.split() if isinstance(raw, str) else raw if isinstance(raw, list) else ()
    return frozenset(s for s in items if isinstance(s, str) and s in SCOPES)
