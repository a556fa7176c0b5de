"""Malformed WebRTC offers against the live server: every one gets a 400 in OpenAI's error shape
within a second, whether sent as application/sdp or as the multipart `sdp` field, on a fresh
connection or on one reused after earlier bad offers; the valid ones still get their answer.
(The session-wide server asserts at the end that its log holds no traceback.)"""

from __future__ import annotations

import time

import httpx
import pytest

from kombain.loadtest.webrtc_offers import NAMED, OFFER, cases
from kombain.server.metrics import Metrics
from kombain.server.settings import Settings
from kombain.server.transports.webrtc.call import WebRTCCall
from kombain.server.transports.webrtc.sdp import SdpError
from tests.conftest import LiveServer

SEED, COUNT = 25, 40  # seeded mutations besides the named ones: a few seconds against the server
WHITESPACE = ("nbsp", "line separator", "record separator", "nbsp lines")


def post(client: httpx.Client, url: str, text: str, multipart: bool = False) -> tuple[httpx.Response, float]:
    t0 = time.monotonic()
    if multipart:
        r = client.post(url + "/v1/realtime/calls", files={"sdp": (None, text.encode())})
    else:
        r = client.post(url + "/v1/realtime/calls", content=text.encode(), headers={"Content-Type": "application/sdp"})
    took = time.monotonic() - t0
    if r.status_code == 201:  # a mutation that is still a valid offer: hang up at once
        assert client.delete(url + r.headers["location"]).status_code == 204
    return r, took


def check(r: httpx.Response, took: float, name: str) -> None:
    assert r.status_code in (201, 400), (name, r.status_code, r.text[:200])
    if r.status_code == 400:
        error = r.json()["error"]
        assert error["type"] == "invalid_request_error" and error["message"] and error["code"], (name, error)
        assert error["param"] == "sdp", (name, error)
    assert took < 1.0, (name, took)  # an answer, not a hang


@pytest.mark.parametrize("multipart", [False, True], ids=["sdp", "multipart"])
def test_mutated_offers_get_400_on_fresh_connections(live_server: LiveServer, multipart: bool) -> None:
    chosen = cases(SEED, COUNT) if not multipart else [(n, NAMED[n]) for n in WHITESPACE] + cases(SEED, 10)
    statuses = []
    for name, text in chosen:
        with httpx.Client(timeout=5) as client:
            r, took = post(client, live_server.url, text, multipart)
        check(r, took, name)
        statuses.append(r.status_code)
    assert statuses.count(400) >= len(NAMED) // 2 if not multipart else statuses.count(400) >= 4


def test_a_connection_reused_after_bad_offers_still_gets_answers(live_server: LiveServer) -> None:
    with httpx.Client(timeout=5) as client:
        for name, text in list(NAMED.items())[:12]:
            r, took = post(client, live_server.url, text)
            check(r, took, name)
            assert r.status_code == 400 or name == "bundle empty", name
        r, _ = post(client, live_server.url, OFFER)
        assert r.status_code == 201, r.text
        assert r.headers["content-type"].startswith("application/sdp") and r.text.startswith("v=0")


@pytest.mark.parametrize("name", ["mid nan", "mid deleted", "setup garbled"])
async def test_offer_past_the_checks_fails_as_sdp_error_and_closes_quietly(name: str) -> None:
    """The second line of defence, without the first: an offer aiortc trips on half-way (fed to the
    call directly, past sdp.check_offer) is an SdpError, and closing the half-built peer connection
    (which raised again in the error path) raises nothing."""
    call = WebRTCCall(Settings(), Metrics(), [])
    with pytest.raises(SdpError):
        await call.answer(NAMED[name])
    await call.discard()
