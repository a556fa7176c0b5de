"""server.transports.sip_auth: digest challenges and verification (MD5, qop=auth)."""

from __future__ import annotations

import hashlib

import pytest

from kombain.server.transports.sip.auth import DigestAuth, digest_response, parse_auth_params

URI = "sip:kombain@192.0.2.10:5060"


class Clock:
    def __init__(self, now: float = 1_750_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def credentials(challenge: str, *, user: str = "alice", password: str = "secret",
                method: str = "INVITE", uri: str = URI, nc: str = "00000001",
                cnonce: str = "0a4f113b", realm: str | None = None) -> str:
    """What a UAC (baresip, a PBX) answers a challenge with, computed independently."""
    parsed = parse_auth_params(challenge)
    assert parsed is not None
    params = parsed[1]
    realm = realm or params["realm"]
    ha1 = md5(f"{user}:{realm}:{password}")
    ha2 = md5(f"{method}:{uri}")
    response = md5(f"{ha1}:{params['nonce']}:{nc}:{cnonce}:auth:{ha2}")
    return (f'Digest username="{user}", realm="{realm}", nonce="{params["nonce"]}", '
            f'uri="{uri}", response="{response}", algorithm=MD5, cnonce="{cnonce}", '
            f"qop=auth, nc={nc}")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def auth(clock: Clock) -> DigestAuth:
    return DigestAuth({"alice": "secret"}, "kombain", nonce_ttl_s=300, secret=b"k" * 32,
                      clock=clock)


def test_rfc2617_example_digest() -> None:
    # RFC 2617 section 3.5 (Mufasa / "Circle Of Life").
    assert digest_response(
        username="Mufasa", realm="testrealm@host.com", password="Circle Of Life", method="GET",
        uri="/dir/index.html", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", nc="00000001",
        cnonce="0a4f113b",
    ) == "6629fae49393a05397450978507c4ef1"


def test_challenge_shape(auth: DigestAuth) -> None:
    scheme, params = parse_auth_params(auth.challenge()) or ("", {})
    assert scheme == "Digest"
    assert params["realm"] == "kombain" and params["qop"] == "auth"
    assert params["algorithm"] == "MD5" and "stale" not in params
    assert params["nonce"] != parse_auth_params(auth.challenge())[1]["nonce"]  # type: ignore[index]
    assert parse_auth_params(auth.challenge(stale=True))[1]["stale"] == "TRUE"  # type: ignore[index]


def test_valid_credentials(auth: DigestAuth) -> None:
    assert auth.verify("INVITE", credentials(auth.challenge())) == "alice"
    assert auth.verify("INVITE", credentials(auth.challenge()), uri=URI) == "alice"


def test_wrong_password_unknown_user_wrong_method(auth: DigestAuth) -> None:
    challenge = auth.challenge()
    assert auth.verify("INVITE", credentials(challenge, password="guess")) is None
    assert auth.verify("INVITE", credentials(challenge, user="mallory")) is None
    assert auth.verify("BYE", credentials(challenge)) is None
    assert auth.verify("INVITE", credentials(challenge), uri="sip:other@192.0.2.10") is None


def test_stale_nonce(auth: DigestAuth, clock: Clock) -> None:
    challenge = auth.challenge()
    clock.now += 301
    result = auth.check("INVITE", credentials(challenge))
    assert result.username is None and result.stale
    # A wrong password on an old nonce is just wrong, not stale.
    assert not auth.check("INVITE", credentials(challenge, password="guess")).stale


def test_forged_or_foreign_nonce(auth: DigestAuth, clock: Clock) -> None:
    challenge = auth.challenge()
    nonce = parse_auth_params(challenge)[1]["nonce"]  # type: ignore[index]
    stamp, salt, mac = nonce.split(".")
    younger = f"{int(stamp, 16) + 1000:x}.{salt}.{mac}"
    result = auth.check("INVITE", credentials(challenge.replace(nonce, younger)))
    assert result.username is None and not result.stale
    other = DigestAuth({"alice": "secret"}, "kombain", secret=b"x" * 32, clock=clock)
    assert auth.verify("INVITE", credentials(other.challenge())) is None


def test_replayed_credentials_are_refused(auth: DigestAuth) -> None:
    challenge = auth.challenge()
    value = credentials(challenge)
    assert auth.verify("INVITE", value) == "alice"
    assert auth.verify("INVITE", value) is None
    assert auth.verify("INVITE", credentials(challenge, nc="00000002")) == "alice"


@pytest.mark.parametrize(
    "mutate",
    [
        lambda v: v.replace("qop=auth, ", ""),
        lambda v: v.replace("algorithm=MD5", "algorithm=SHA-256"),
        lambda v: v.replace("nc=00000001", "nc=1"),
        lambda v: v.replace('realm="kombain"', 'realm="other"'),
        lambda v: v.replace("Digest ", "Basic "),
        lambda v: v + ', username="bob"',
        lambda v: v.replace('response="', 'response="0'),
        lambda v: v[:-5],
        lambda v: "Digest",
        lambda v: "",
    ],
)
def test_unacceptable_authorization(auth: DigestAuth, mutate) -> None:  # noqa: ANN001
    assert auth.verify("INVITE", mutate(credentials(auth.challenge()))) is None


def test_parse_auth_params() -> None:
    scheme, params = parse_auth_params(
        'Digest username="bob", realm="biloxi.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
        'uri="sip:bob@biloxi.com", qop=auth, nc=00000001, cnonce="0a4f113b", '
        'response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    ) or ("", {})
    assert scheme == "Digest" and params["uri"] == "sip:bob@biloxi.com"
    assert params["qop"] == "auth" and len(params) == 9
    assert parse_auth_params('Digest realm="a \\"b\\", c"')[1]["realm"] == 'a "b", c'  # type: ignore[index]
    for bad in ('Digest realm="open', "Digest realm", "Digest =x", 'Digest a="1" b="2"',
                'Digest a=1, a=2', "Dig est"):
        assert parse_auth_params(bad) is None


def test_bad_realm_rejected() -> None:
    with pytest.raises(ValueError):
        DigestAuth({}, 'evil", stale=TRUE')
