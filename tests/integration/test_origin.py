"""Origin checks against the live server (default settings: no KOMBAIN_ALLOWED_ORIGINS): a page of
another site can neither open a WebSocket nor post a WebRTC offer; the server's own page and
clients that send no Origin can."""

from __future__ import annotations

import httpx
import pytest
import websockets

from tests.conftest import LiveServer

EVIL = "https://evil.example"


@pytest.mark.parametrize("path", ["/v1/realtime", "/v1/telephony/twilio", "/v1/telephony/asterisk"])
async def test_websocket_from_another_origin_is_refused(live_server: LiveServer, path: str) -> None:
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(live_server.ws_url + path, origin=websockets.Origin(EVIL)):
            pass
    response = refused.value.response
    assert response.status_code == 403
    assert b"origin_not_allowed" in response.body


async def test_websocket_from_the_servers_own_page_is_let_in(live_server: LiveServer) -> None:
    async with websockets.connect(live_server.ws_url + "/v1/realtime",
                                  origin=websockets.Origin(live_server.url)) as ws:
        assert "session.created" in str(await ws.recv())


def test_webrtc_offer_from_another_origin_is_refused(live_server: LiveServer) -> None:
    r = httpx.post(live_server.url + "/v1/realtime/calls", content=b"v=0\r\n",
                   headers={"Content-Type": "application/sdp", "Origin": EVIL}, timeout=5)
    assert r.status_code == 403, r.text
    assert r.json()["error"]["code"] == "origin_not_allowed"
    # The same offer from the server's own page (or with no Origin) reaches the SDP checks.
    for headers in ({"Origin": live_server.url}, {}):
        r = httpx.post(live_server.url + "/v1/realtime/calls", content=b"v=0\r\n",
                       headers={"Content-Type": "application/sdp", **headers}, timeout=5)
        assert r.status_code == 400 and r.json()["error"]["param"] == "sdp", r.text


def test_other_http_requests_are_not_origin_checked(live_server: LiveServer) -> None:
    """Reading answers cross-origin is what CORS (not served) already stops; only entries that
    start something are checked."""
    assert httpx.get(live_server.url + "/healthz", headers={"Origin": EVIL}).status_code == 200
