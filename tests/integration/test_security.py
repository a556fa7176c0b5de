"""Production security against a real server: JWT scopes, client secrets, per-key limits,
telephony peer allow-lists and TLS (docs/security.md)."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import websockets
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from kombain.clients.phone_callers import TwilioCaller
from tests.conftest import LiveServer, start_server, stop_server
from tests.integration.helpers import RawSession

KEY = "security-test-key"
SECRET = "security-test-jwt-secret-0123456789abcdef"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def token(scope: str | list[str], *, sub: str = "alice", exp_in: float = 300, key: Any = SECRET,
          alg: str = "HS256", **claims: Any) -> str:
    body = {"sub": sub, "iss": "https://idp.example", "aud": "kombain", "exp": int(time.time() + exp_in),
            ("scopes" if isinstance(scope, list) else "scope"): scope, **claims}
    return jwt.encode(body, key, algorithm=alg)


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


@pytest.fixture(scope="module")
def secure_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("secure")
    model = tmp / "tiny-pipeline"
    model.mkdir()
    pub = tmp / "jwt.pub.pem"
    pub.write_bytes(RSA_KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo))
    server = start_server(tmp, {
        "KOMBAIN_API_KEYS": KEY, "KOMBAIN_JWT_SECRET": SECRET, "KOMBAIN_JWT_PUBLIC_KEY": str(pub),
        "KOMBAIN_JWT_ISSUER": "https://idp.example", "KOMBAIN_JWT_AUDIENCE": "kombain",
        "KOMBAIN_METRICS_AUTH": "1", "KOMBAIN_KEY_MAX_CALLS": "1", "KOMBAIN_KEY_MAX_QUEUED_JOBS": "1",
        "KOMBAIN_IMAGE_MODEL": str(model), "KOMBAIN_VIDEO_MODEL": str(model), "KOMBAIN_LANE_WORKERS": "0",
        "KOMBAIN_AUDIOSOCKET_ALLOW": "10.0.0.0/8", "KOMBAIN_SIP_ALLOW": "10.0.0.0/8, 192.0.2.1",
    })
    yield server
    stop_server(server)
    log = server.log()
    assert "Traceback" not in log, log[-5000:]
    assert KEY not in log and SECRET not in log


def _error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text)
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["code"] == code, err
    return err  # type: ignore[no-any-return]


async def _refused(url: str, status: int, **kwargs: Any) -> websockets.InvalidStatus:
    with pytest.raises(websockets.InvalidStatus) as err:
        async with websockets.connect(url, **kwargs):
            pass
    assert err.value.response.status_code == status, err.value.response.status_code
    return err.value


async def _session(url: str, **kwargs: Any) -> RawSession:
    s = RawSession(await websockets.connect(url, max_size=2**24, **kwargs))
    await s.wait_for("session.created")
    return s


# --- JWT and scopes ------------------------------------------------------------------------------

def test_jwt_scopes_on_http(secure_server: LiveServer) -> None:
    url = secure_server.url
    voice, lane = bearer(token("voice")), bearer(token(["lane"], sub="lane-user"))
    assert httpx.get(url + "/v1/models", headers=voice, timeout=10).status_code == 200
    err = _error(httpx.post(url + "/v1/videos", json={"prompt": "x", "size": "32x32"}, headers=voice, timeout=10),
                 403, "insufficient_scope")
    assert "lane" in err["message"]
    _error(httpx.post(url + "/v1/audio/speech", json={"input": "hi", "voice": "alloy"}, headers=lane, timeout=10),
           403, "insufficient_scope")
    rs256 = bearer(token("voice", key=RSA_KEY, alg="RS256"))
    assert httpx.get(url + "/v1/models", headers=rs256, timeout=10).status_code == 200
    for bad in (token("voice", exp_in=-120), token("voice", key="x" * 40), token("voice", iss="https://evil"),
                jwt.encode({"sub": "a", "scope": "voice", "iss": "https://idp.example", "aud": "kombain"}, SECRET,
                           algorithm="HS256")):
        r = httpx.get(url + "/v1/models", headers=bearer(bad), timeout=10)
        _error(r, 401, "invalid_api_key")
        assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    r = httpx.get(url + "/v1/models", timeout=10)
    _error(r, 401, "invalid_api_key")
    assert r.headers["www-authenticate"] == "Bearer"


def test_metrics_needs_admin_and_probes_stay_open(secure_server: LiveServer) -> None:
    url = secure_server.url
    assert httpx.get(url + "/healthz", timeout=10).status_code == 200
    assert httpx.get(url + "/readyz", timeout=10).status_code == 200
    _error(httpx.get(url + "/metrics", timeout=10), 401, "invalid_api_key")
    _error(httpx.get(url + "/metrics", headers=bearer(token("voice lane")), timeout=10), 403, "insufficient_scope")
    assert httpx.get(url + "/metrics", headers=bearer(token("admin")), timeout=10).status_code == 200
    assert httpx.get(url + "/metrics", headers=bearer(KEY), timeout=10).status_code == 200


async def test_websocket_handshakes_check_jwt_scopes(secure_server: LiveServer) -> None:
    ws = secure_server.ws_url
    s = await _session(ws + "/v1/realtime", additional_headers=bearer(token("voice", sub="ws-user")))
    await s.close()
    err = await _refused(ws + "/v1/realtime", 403, additional_headers=bearer(token("lane", sub="ws-user")))
    assert json.loads(err.response.body)["error"]["code"] == "insufficient_scope"
    await _refused(ws + "/v1/realtime", 401, additional_headers=bearer(token("voice", exp_in=-120)))
    await _refused(ws + "/v1/telephony/asterisk", 403, additional_headers=bearer(token("lane", sub="ws-user")))
    await _refused(ws + "/v1/telephony/asterisk", 401)


# --- client secrets ------------------------------------------------------------------------------

async def test_client_secret_opens_a_realtime_session_with_its_config(secure_server: LiveServer) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        await _client_secret_checks(secure_server, http)


async def _client_secret_checks(secure_server: LiveServer, http: httpx.AsyncClient) -> None:
    url = secure_server.url
    body = {"expires_after": {"anchor": "created_at", "seconds": 120},
            "session": {"type": "realtime", "instructions": "You are a test pirate."}}
    _error(await http.post(url + "/v1/realtime/client_secrets", json=body), 401, "invalid_api_key")
    _error(await http.post(url + "/v1/realtime/client_secrets", json=body, headers=bearer(token("lane"))),
           403, "insufficient_scope")
    _error(await http.post(url + "/v1/realtime/client_secrets", json={"expires_after": {"seconds": 5}},
                           headers=bearer(KEY)), 400, "invalid_value")
    r = await http.post(url + "/v1/realtime/client_secrets", json=body, headers=bearer(token("voice", sub="minter")))
    assert r.status_code == 200, r.text
    out = r.json()
    secret = out["value"]
    assert secret.startswith("ek_") and abs(out["expires_at"] - (time.time() + 120)) < 10
    assert out["session"]["instructions"] == "You are a test pirate."
    # The browser way: the secret as a subprotocol next to "realtime".
    ws = await websockets.connect(secure_server.ws_url + "/v1/realtime", max_size=2**24,
                                  subprotocols=["realtime", f"openai-insecure-api-key.{secret}"])  # type: ignore[list-item]
    assert ws.subprotocol == "realtime"
    s = RawSession(ws)
    created = (await s.wait_for("session.created"))[0]
    assert created["session"]["instructions"] == "You are a test pirate."
    await s.close()
    # Only for voice entries that open a realtime session; a forged one is refused.
    _error(await http.get(url + "/v1/models", headers=bearer(secret)), 403, "insufficient_scope")
    _error(await http.post(url + "/v1/realtime/client_secrets", json={}, headers=bearer(secret)),
           403, "insufficient_scope")
    await _refused(secure_server.ws_url + "/v1/telephony/asterisk", 403, additional_headers=bearer(secret))
    forged = secret[:-4] + ("AAAA" if not secret.endswith("AAAA") else "BBBB")
    await _refused(secure_server.ws_url + "/v1/realtime", 401, additional_headers=bearer(forged))


# --- per-key limits --------------------------------------------------------------------------------

async def test_concurrent_calls_per_key(secure_server: LiveServer) -> None:
    ws = secure_server.ws_url + "/v1/realtime"
    first = await _session(ws, additional_headers=bearer(KEY))
    try:
        err = await _refused(ws, 429, additional_headers=bearer(KEY))
        assert int(err.response.headers["retry-after"]) > 0
        assert json.loads(err.response.body)["error"]["code"] == "too_many_calls"
        other = await _session(ws, additional_headers=bearer(token("voice", sub="someone-else")))
        await other.close()
    finally:
        await first.close()
    for _ in range(50):  # the server notices the close, then the slot is free again
        try:
            again = await _session(ws, additional_headers=bearer(KEY))
            break
        except websockets.InvalidStatus:
            await asyncio.sleep(0.1)
    else:
        raise AssertionError("the call slot was not released")
    await again.close()


def test_queued_lane_jobs_per_key(secure_server: LiveServer) -> None:
    url = secure_server.url + "/v1/videos"
    mine, theirs = bearer(token("lane", sub="lane-a")), bearer(token("lane", sub="lane-b"))
    first = httpx.post(url, json={"prompt": "one", "size": "32x32"}, headers=mine, timeout=10)
    assert first.status_code == 200, first.text
    try:
        r = httpx.post(url, json={"prompt": "two", "size": "32x32"}, headers=mine, timeout=10)
        _error(r, 429, "too_many_queued_jobs")
        assert int(r.headers["retry-after"]) > 0
        other = httpx.post(url, json={"prompt": "three", "size": "32x32"}, headers=theirs, timeout=10)
        assert other.status_code == 200, other.text
        httpx.delete(f"{url}/{other.json()['id']}", headers=theirs, timeout=10)
    finally:
        httpx.delete(f"{url}/{first.json()['id']}", headers=mine, timeout=10)
    deadline = time.monotonic() + 10  # cancelled: the slot is free again
    while True:
        r = httpx.post(url, json={"prompt": "four", "size": "32x32"}, headers=mine, timeout=10)
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert r.status_code == 200, r.text
    httpx.delete(f"{url}/{r.json()['id']}", headers=mine, timeout=10)


def test_rate_limit_per_client_ip_without_auth(tmp_path: Path) -> None:
    server = start_server(tmp_path, {"KOMBAIN_RATE_LIMIT": "3/minute", "KOMBAIN_COMPONENTS_DISABLED": "speech-to-text"})
    try:
        for _ in range(3):
            assert httpx.get(server.url + "/v1/models", timeout=10).status_code == 200
        r = httpx.get(server.url + "/v1/models", timeout=10)
        _error(r, 429, "rate_limit_exceeded")
        assert 0 < int(r.headers["retry-after"]) <= 60
        assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200  # probes are not counted
        asyncio.run(_refused(server.ws_url + "/v1/realtime", 429))
    finally:
        stop_server(server)
    assert "Traceback" not in server.log()


# --- telephony ------------------------------------------------------------------------------------

async def test_twilio_stream_takes_a_token_in_the_query(secure_server: LiveServer) -> None:
    url = secure_server.ws_url + "/v1/telephony/twilio"
    await _refused(url, 401)
    await _refused(url + "?token=wrong", 401)
    caller = TwilioCaller(url + "?token=" + token("voice", sub="twilio-user"))
    await caller.connect()
    await asyncio.sleep(0.5)
    assert not caller.closed.is_set()
    await caller.stop()
    assert "token=REDACTED" in secure_server.log()


def test_audiosocket_peer_outside_the_allow_list_is_closed(secure_server: LiveServer) -> None:
    with socket.create_connection(("127.0.0.1", secure_server.audiosocket_port), timeout=5) as s:
        data = b""
        while chunk := s.recv(64):
            data += chunk
    assert data == b"\xff\x00\x01\x00"  # an error frame, then the close
    assert "KOMBAIN_AUDIOSOCKET_ALLOW" in secure_server.log()


def test_sip_source_outside_the_allow_list_gets_403(secure_server: LiveServer) -> None:
    request = (b"OPTIONS sip:kombain@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKsec1\r\n"
               b"From: <sip:probe@127.0.0.1>;tag=1\r\nTo: <sip:kombain@127.0.0.1>\r\nCall-ID: sec-1@127.0.0.1\r\n"
               b"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(request, ("127.0.0.1", secure_server.sip_port))
        reply, _ = s.recvfrom(65536)
    assert reply.startswith(b"SIP/2.0 403 Forbidden"), reply[:200]
    assert b"Call-ID: sec-1@127.0.0.1" in reply


# --- TLS ----------------------------------------------------------------------------------------

async def test_https_and_wss_with_a_trusted_certificate(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_path, cert_path, key_path = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    server = await asyncio.to_thread(start_server, tmp_path, {
        "KOMBAIN_SSL_CERTFILE": str(cert_path), "KOMBAIN_SSL_KEYFILE": str(key_path)}, 120, str(ca_path))
    try:
        assert server.url.startswith("https://") and server.ws_url.startswith("wss://")
        context = ssl.create_default_context(cafile=str(ca_path))
        async with httpx.AsyncClient(verify=context) as http:
            r = await http.get(server.url + "/healthz")
            assert r.status_code == 200 and r.json() == {"status": "ok"}
        with pytest.raises(httpx.ConnectError):  # not trusted without trustme's CA
            await asyncio.to_thread(httpx.get, server.url + "/healthz", timeout=10)
        s = await _session(server.ws_url + "/v1/realtime", ssl=context)
        await s.close()
    finally:
        stop_server(server)
    assert "Traceback" not in server.log()
