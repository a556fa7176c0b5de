"""SIP digest authentication for a UAS, sans I/O: RFC 7616 / RFC 2617 with MD5 and qop=auth.

Nonces are stateless: a timestamp and a random salt signed with HMAC-SHA256, so any number of
challenges costs no memory. A small bounded cache of (nonce, cnonce, nc) triples refuses exact
replays of a credential while its nonce is still fresh.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_NC = re.compile(r"[0-9A-Fa-f]{8}")
_MAX_PARAMS = 32
_MAX_REPLAY_ENTRIES = 16384


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def digest_response(*, username: str, realm: str, password: str, method: str, uri: str,
                    nonce: str, nc: str, cnonce: str, qop: str = "auth") -> str:
    """The RFC 2617 section 3.2.2.1 request-digest for MD5 with qop=auth."""
    ha1 = _md5(f"{username}:{realm}:{password}")
    ha2 = _md5(f"{method}:{uri}")
    return _md5(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


def parse_auth_params(value: str) -> tuple[str, dict[str, str]] | None:
    """(scheme, params) of a `Digest k=v, k="v"` header value; None if it does not parse."""
    text = value.strip()
    scheme, _, rest = text.partition(" ")
    if not _TOKEN.fullmatch(scheme):
        return None
    params: dict[str, str] = {}
    i, n = 0, len(rest)
    while i < n:
        while i < n and rest[i] in " \t,":
            i += 1
        if i >= n:
            break
        match = _TOKEN.match(rest, i)
        if not match:
            return None
        name = match.group(0).lower()
        i = match.end()
        while i < n and rest[i] in " \t":
            i += 1
        if i >= n or rest[i] != "=":
            return None
        i += 1
        while i < n and rest[i] in " \t":
            i += 1
        if i < n and rest[i] == '"':
            i += 1
            buf: list[str] = []
            while i < n and rest[i] != '"':
                if rest[i] == "\\" and i + 1 < n:
                    i += 1
                buf.append(rest[i])
                i += 1
            if i >= n:
                return None  # unterminated quoted-string
            i += 1
            val = "".join(buf)
        else:
            match = _TOKEN.match(rest, i)
            if not match:
                return None
            val = match.group(0)
            i = match.end()
        # A repeated parameter is ambiguous; refusing it closes a confusion attack.
        if name in params or len(params) >= _MAX_PARAMS:
            return None
        params[name] = val
        while i < n and rest[i] in " \t":
            i += 1
        if i < n and rest[i] != ",":
            return None
    return scheme, params


@dataclass(frozen=True)
class DigestResult:
    """The outcome of checking credentials: the username when valid; `stale` for an old nonce."""

    username: str | None
    stale: bool = False


class DigestAuth:
    """Challenge and verify digest credentials against a static `{username: password}` table."""

    def __init__(self, users: Mapping[str, str], realm: str, *, nonce_ttl_s: float = 300.0,
                 secret: bytes | None = None, clock: Callable[[], float] = time.time) -> None:
        if not realm or '"' in realm or "\\" in realm or "\r" in realm or "\n" in realm:
            raise ValueError("realm must be non-empty, without quotes, backslashes or line breaks")
        if nonce_ttl_s <= 0:
            raise ValueError("nonce_ttl_s must be positive")
        self.realm = realm
        self._users = dict(users)
        self._ttl = float(nonce_ttl_s)
        # A per-process secret: nonces die with the process unless the caller shares one.
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        self._clock = clock
        self._seen: OrderedDict[tuple[str, str, str], float] = OrderedDict()

    # -- challenge -------------------------------------------------------------------------

    def _sign(self, stamp: str, salt: str) -> str:
        mac = hmac.new(self._secret, f"{stamp}.{salt}.{self.realm}".encode("utf-8", "replace"), hashlib.sha256)
        return mac.hexdigest()[:32]

    def make_nonce(self) -> str:
        """A fresh nonce: `<time hex>.<salt>.<hmac>`."""
        stamp = f"{max(0, int(self._clock())):x}"
        salt = secrets.token_hex(8)
        return f"{stamp}.{salt}.{self._sign(stamp, salt)}"

    def challenge(self, *, stale: bool = False) -> str:
        """A WWW-Authenticate value (`stale=TRUE` tells the client to retry with the new nonce)."""
        value = f'Digest realm="{self.realm}", nonce="{self.make_nonce()}", algorithm=MD5, qop="auth"'
        return value + (", stale=TRUE" if stale else "")

    def _nonce_state(self, nonce: str) -> str:
        """"fresh", "stale" (genuine but expired) or "bad" (not ours)."""
        parts = nonce.split(".")
        if len(parts) != 3 or len(parts[0]) > 16 or not parts[0]:
            return "bad"
        stamp, salt, mac = parts
        # Bytes: compare_digest raises TypeError on a str with non-ASCII characters.
        if not hmac.compare_digest(self._sign(stamp, salt).encode(), mac.encode("utf-8", "replace")):
            return "bad"
        try:
            issued = int(stamp, 16)
        except ValueError:
            return "bad"
        age = self._clock() - issued
        # A nonce from the future (clock stepped back, another process) is treated as expired.
        return "fresh" if -1.0 <= age <= self._ttl else "stale"

    # -- verify ----------------------------------------------------------------------------

    def check(self, method: str, authorization: str, *, uri: str | None = None) -> DigestResult:
        """Check one Authorization value for a request; see DigestResult. `uri`: the Request-URI."""
        parsed = parse_auth_params(authorization)
        if parsed is None or parsed[0].lower() != "digest":
            return DigestResult(None)
        p = parsed[1]
        username, realm, nonce = p.get("username"), p.get("realm"), p.get("nonce")
        digest_uri, response = p.get("uri"), p.get("response")
        qop, nc, cnonce = p.get("qop"), p.get("nc"), p.get("cnonce")
        if not (username and nonce and digest_uri and response) or realm != self.realm:
            return DigestResult(None)
        if p.get("algorithm", "MD5").upper() != "MD5":
            return DigestResult(None)
        # qop=auth is required: without it (RFC 2069) nothing binds a response to one request.
        if qop != "auth" or not cnonce or nc is None or not _NC.fullmatch(nc):
            return DigestResult(None)
        # RFC 2617 section 3.2.2.5: the digest must be for this request's URI.
        if uri is not None and digest_uri != uri:
            return DigestResult(None)
        state = self._nonce_state(nonce)
        if state == "bad":
            return DigestResult(None)
        known = username in self._users
        # An unknown user costs the same hashing, so timing does not reveal which names exist.
        password = self._users.get(username, "\x00unknown\x00")
        expected = digest_response(username=username, realm=self.realm, password=password,
                                   method=method, uri=digest_uri, nonce=nonce, nc=nc,
                                   cnonce=cnonce, qop=qop)
        if not hmac.compare_digest(expected.encode(), response.lower().encode()) or not known:
            return DigestResult(None)
        if state == "stale":
            return DigestResult(None, stale=True)
        if not self._remember(nonce, cnonce, nc.lower()):
            return DigestResult(None)
        return DigestResult(username)

    def verify(self, method: str, authorization: str, *, uri: str | None = None) -> str | None:
        """The username if `authorization` is valid and fresh for `method`, else None."""
        return self.check(method, authorization, uri=uri).username

    def _remember(self, nonce: str, cnonce: str, nc: str) -> bool:
        """Record a used credential; False if it was already used (a replay)."""
        now = self._clock()
        while self._seen:
            key, expires = next(iter(self._seen.items()))
            if expires > now and len(self._seen) < _MAX_REPLAY_ENTRIES:
                break
            del self._seen[key]
        triple = (nonce, cnonce, nc)
        if triple in self._seen:
            return False
        self._seen[triple] = now + self._ttl
        return True
