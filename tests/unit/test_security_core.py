"""The pure parts of auth and limits: allow-lists, JWT checks, client secrets, per-key quotas."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from kombain.server.auth import Authenticator, AuthFailed
from kombain.server.client_secrets import ClientSecrets
from kombain.server.jwt_auth import JwtVerifier, TokenError
from kombain.server.peers import PeerAllowList
from kombain.server.quotas import OverLimit, Quotas
from kombain.server.settings import Settings

SECRET = "unit-test-secret-0123456789abcdefghij"


def test_peer_allow_list() -> None:
    allow = PeerAllowList("10.0.0.0/8, 192.168.1.7, 2001:db8::/32")
    assert allow.allows("10.1.2.3") and allow.allows("192.168.1.7") and allow.allows("2001:db8::1")
    assert allow.allows("::ffff:10.9.9.9")  # IPv4 seen through a dual-stack socket
    assert not allow.allows("127.0.0.1") and not allow.allows("192.168.1.8") and not allow.allows("junk")
    assert PeerAllowList("").allows("203.0.113.5")
    with pytest.raises(ValueError, match="sip_allow"):
        PeerAllowList("10.0.0.0/33", "sip_allow")


def test_jwt_hs256_scopes_and_claims() -> None:
    v = JwtVerifier(secret=SECRET, issuer="iss", audience="kombain")
    now = int(time.time())
    good = {"sub": "alice", "iss": "iss", "aud": "kombain", "exp": now + 60}
    claims = v.verify(jwt.encode({**good, "scope": "voice lane bogus"}, SECRET, algorithm="HS256"))
    assert claims.subject == "alice" and claims.scopes == {"voice", "lane"}
    assert v.verify(jwt.encode({**good, "scopes": ["admin"]}, SECRET, algorithm="HS256")).scopes == {"admin"}
    bad = [
        jwt.encode({**good, "exp": now - 60}, SECRET, algorithm="HS256"),  # expired
        jwt.encode({k: v for k, v in good.items() if k != "exp"}, SECRET, algorithm="HS256"),  # no exp
        jwt.encode(good, "o" * 40, algorithm="HS256"),  # signature
        jwt.encode({**good, "iss": "evil"}, SECRET, algorithm="HS256"),
        jwt.encode({**good, "aud": "other"}, SECRET, algorithm="HS256"),
        jwt.encode(good, SECRET * 2, algorithm="HS512"),  # an algorithm not configured
        "not.a.jwt",
    ]
    for token in bad:
        with pytest.raises(TokenError):
            v.verify(token)
    # Within the leeway an expired token still passes.
    assert v.verify(jwt.encode({**good, "exp": now - 2}, SECRET, algorithm="HS256")).subject == "alice"


def test_jwt_es256_public_key_from_a_file(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "pub.pem").write_bytes(pem)
    v = JwtVerifier(public_key=str(tmp_path / "pub.pem"))
    token = jwt.encode({"sub": "bob", "exp": int(time.time()) + 60, "scope": "voice"}, key, algorithm="ES256")
    assert v.verify(token).scopes == {"voice"}
    with pytest.raises(TokenError):  # HS256 signed with the public key text: the classic confusion attack
        v.verify(jwt.encode({"sub": "x", "exp": int(time.time()) + 60}, "k" * 32, algorithm="HS256"))
    with pytest.raises(ValueError):
        JwtVerifier(public_key="-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----")


def test_client_secret_round_trip_expiry_and_tampering() -> None:
    now = [1000.0]
    cs = ClientSecrets("shared", clock=lambda: now[0])
    value = cs.mint("key:abc", 60, {"instructions": "hi"})
    secret = cs.verify(value)
    assert secret is not None and secret.subject == "key:abc" and secret.session == {"instructions": "hi"}
    assert secret.expires_at == 1060
    assert ClientSecrets("shared", clock=lambda: now[0]).verify(value) is not None  # another node, same key
    assert ClientSecrets("other", clock=lambda: now[0]).verify(value) is None
    assert cs.verify(value[:-2] + ("AA" if value[-2:] != "AA" else "BB")) is None
    assert cs.verify("ek_garbage") is None and cs.verify("ek_.") is None
    now[0] = 1060.0
    assert cs.verify(value) is None
    with pytest.raises(ValueError):
        cs.mint("k", 60, {"instructions": "x" * 100_000 + __import__("secrets").token_hex(8000)})


def test_authenticator_scopes() -> None:
    auth = Authenticator(Settings(api_keys="k1", jwt_secret=SECRET, data_dir=Path("/tmp/x")))
    assert auth.authorize("k1", "1.2.3.4", "lane").kind == "key"
    voice = jwt.encode({"sub": "a", "exp": int(time.time()) + 60, "scope": "voice"}, SECRET, algorithm="HS256")
    assert auth.authorize(voice, "1.2.3.4", "voice").subject == "jwt:a"
    for token, scope, status in [(voice, "lane", 403), (None, "voice", 401), ("nope", "voice", 401)]:
        with pytest.raises(AuthFailed) as err:
            auth.authorize(token, "1.2.3.4", scope)
        assert err.value.status == status
    ek = auth.client_secrets.mint("jwt:a", 60, None)
    assert auth.authorize(ek, "1.2.3.4", "voice", realtime=True).kind == "client_secret"
    with pytest.raises(AuthFailed) as err:
        auth.authorize(ek, "1.2.3.4", "voice")  # a REST voice entry: not for client secrets
    assert err.value.status == 403
    open_auth = Authenticator(Settings(data_dir=Path("/tmp/x")))
    assert open_auth.authorize(None, "1.2.3.4", "admin").subject == "ip:1.2.3.4"


async def test_quotas() -> None:
    q = Quotas("2/minute", max_calls=1, max_queued_jobs=2)
    await q.hit("a")
    await q.hit("a")
    await q.hit("b")
    with pytest.raises(OverLimit) as err:
        await q.hit("a")
    assert err.value.code == "rate_limit_exceeded" and 1 <= err.value.retry_after_s <= 60
    release = await q.open_call("a")
    with pytest.raises(OverLimit):
        await q.open_call("a")
    await q.open_call("b")
    release()
    release()  # idempotent
    assert q.calls("a") == 0
    await q.open_call("a")
    await q.record_job("a", "j1")
    await q.record_job("a", "j2")
    with pytest.raises(OverLimit):
        await q.check_jobs("a", ["j1", "j2"], ["j1", "j2"])
    await q.check_jobs("a", ["j1", "j2"], ["j2"])  # j1 finished: forgotten
    assert await q.jobs_of("a") == ["j2"]
    with pytest.raises(ValueError):
        Quotas("lots")
    await Quotas().hit("anyone")  # off by default
