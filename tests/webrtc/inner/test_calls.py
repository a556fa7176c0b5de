"""WebRTC calls from the Python caller (aiortc): transcripts, reply audio, barge-in, bad offers."""

from __future__ import annotations

import asyncio
import re

import httpx
import numpy as np
import pytest
from aiortc import RTCPeerConnection

from kombain.clients.webrtc_client import FRAME, WebRTCCaller, call
from tests.conftest import SPEECH_DIR
from tests.webrtc.inner.conftest import HOSTS, metric, webrtc_active

pytestmark = pytest.mark.asyncio

LONG = ("This is a long answer that keeps going for a while. It has several sentences, each of them "
        "spoken one after another. The caller will interrupt it before the end. Nobody should hear "
        "this last sentence, because the caller spoke first.")
SILENT_RMS = 0.003  # decoded Opus silence is ~0; speech from Piper is 0.03-0.1


def voiced_fraction(samples: np.ndarray) -> float:
    frames = samples[: len(samples) // FRAME * FRAME].reshape(-1, FRAME)
    return float(np.mean(np.sqrt(np.mean(frames**2, axis=1)) > 0.01)) if len(frames) else 0.0


async def wait_until(predicate, timeout: float, what: str) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.1)
    assert predicate(), what


async def test_call_transcribes_and_answers(rtc_server, tmp_path):
    result = await call(rtc_server.url, SPEECH_DIR / "arctic_a0009.wav", hosts=HOSTS, timeout=60,
                        record_to=tmp_path / "reply.wav")
    assert result.setup_s is not None and result.call_id
    final = " ".join(result.finals).lower()
    assert "turned sharply" in final and "table" in final, result.finals
    done = result.of("response.done")[0].event["response"]
    assert done["status"] == "completed"
    # The server owns the audio buffer over WebRTC: it says when the reply started playing.
    assert [e.event["response_id"] for e in result.of("output_audio_buffer.started")][:1] == [done["id"]]
    assert "table" in done["output"][0]["content"][0]["transcript"].lower()
    # The reply came back as audio on the track, not as JSON deltas.
    assert not result.of("response.output_audio.delta")
    created_t = result.of("response.created")[0].t
    reply = result.samples()
    speech = reply[np.abs(reply) > 0]
    assert len(speech) / result.rate > 1.5, "at least 1.5 s of reply audio"
    assert float(np.sqrt(np.mean(speech**2))) > 0.02
    assert voiced_fraction(reply) > 0.15
    # Before the reply starts the track carries silence.
    assert result.rms_between(0.0, created_t) < SILENT_RMS
    await wait_until(lambda: webrtc_active(rtc_server) == 0, 10, "session released after DELETE")


async def test_barge_in_silences_the_track(rtc_server):
    async with WebRTCCaller(rtc_server.url, hosts=HOSTS, session={"type": "realtime"}) as caller:
        await caller.connect()
        await caller.wait_for("session.updated", timeout=10)  # multipart session field applied
        caller.send({"type": "response.create", "response": {"instructions": LONG,
                                                              "metadata": {"kombain_say": "true"}}})
        await caller.wait_for("response.created", timeout=20)
        res = caller.result
        await wait_until(lambda: res.rms_between(caller.now() - 0.4, caller.now()) > 0.01, 20, "reply audible")
        await asyncio.sleep(0.6)
        loud = res.rms_between(caller.now() - 1.0, caller.now())
        caller.speak(SPEECH_DIR / "goforward.wav", lead_s=0.0, trail_s=1.0)
        started = (await caller.wait_for("input_audio_buffer.speech_started", timeout=15))[0].t
        done = (await caller.wait_for("response.done", timeout=15))[0]
        assert done.event["response"]["status"] == "cancelled"
        cleared = (await caller.wait_for("output_audio_buffer.cleared", timeout=5))[0]
        assert cleared.event["response_id"] == done.event["response"]["id"]
        # Give the window time to fill, but stop before the answer to the interruption starts.
        quiet_from = max(started, done.t) + 0.5
        await wait_until(lambda: caller.now() > quiet_from + 0.8 or res.of("response.created")[1:], 10, "window")
        nxt = res.of("response.created")[1:]
        quiet_to = min(quiet_from + 0.8, nxt[0].t if nxt else quiet_from + 0.8)
        after = res.rms_between(quiet_from, quiet_to)
        assert res.frames_between(quiet_from, quiet_to) >= 10, "the track keeps sending (silence)"
        assert loud > 0.02 and after < SILENT_RMS, (loud, after, quiet_from, quiet_to)
        second = await caller.wait_for("response.done", count=2, timeout=30)
        assert "forward" in second[1].event["response"]["output"][0]["content"][0]["transcript"].lower()


async def _offer(audio: bool = True, channel: bool = True) -> str:
    pc = RTCPeerConnection()
    if audio:
        pc.addTransceiver("audio", direction="sendrecv")
    if channel:
        pc.createDataChannel("oai-events")
    from kombain.server.transports.webrtc.ice import restrict_host_addresses

    with restrict_host_addresses(HOSTS):
        await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


async def _post(server, body: str | bytes, ctype: str = "application/sdp") -> httpx.Response:
    async with httpx.AsyncClient(timeout=20) as http:
        return await http.post(server.url + "/v1/realtime/calls", content=body, headers={"Content-Type": ctype})


@pytest.mark.parametrize("body,code,words", [
    ("hello, I am not SDP", "invalid_sdp", "v=0"),
    ("", "invalid_sdp", "empty"),
    ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n", "invalid_sdp", "no media"),
    ("v=0\r\nthis line is wrong\r\n", "invalid_sdp", "not of the form"),
])
async def test_malformed_offer_is_400(rtc_server, body, code, words):
    resp = await _post(rtc_server, body)
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert err["code"] == code and words in err["message"], err


async def test_offer_without_audio_is_400(rtc_server):
    resp = await _post(rtc_server, await _offer(audio=False))
    assert resp.status_code == 400
    err = resp.json()["error"]
    assert err["code"] == "no_audio" and "no audio" in err["message"], err


async def test_offer_with_only_unsupported_codecs_is_400(rtc_server):
    sdp = await _offer()
    sdp = re.sub(r"(a=rtpmap:\d+ )(opus|PCMU|PCMA)/", lambda m: m.group(1) + {"opus": "SILK", "PCMU": "G729",
                 "PCMA": "iLBC"}[m.group(2)] + "/", sdp)
    resp = await _post(rtc_server, sdp)
    assert resp.status_code == 400
    err = resp.json()["error"]
    assert err["code"] == "unsupported_codec", err
    assert "SILK" in err["message"] and "opus" in err["message"], err


async def test_wrong_content_type_and_unknown_call(rtc_server):
    resp = await _post(rtc_server, await _offer(), ctype="application/json")
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "unsupported_media_type"
    async with httpx.AsyncClient(timeout=10) as http:
        resp = await http.delete(rtc_server.url + "/v1/realtime/calls/rtc_nope")
    assert resp.status_code == 404


async def test_offer_that_never_connects_is_closed(rtc_server):
    before = metric(rtc_server, "kombain_webrtc_calls_ended_total", '{reason="connect_timeout"}')
    resp = await _post(rtc_server, await _offer())  # the offering peer is already gone
    assert resp.status_code == 201 and resp.headers["content-type"].startswith("application/sdp")
    assert resp.headers["location"].startswith("/v1/realtime/calls/rtc_")
    assert "a=fingerprint" in resp.text and "127.0.0.1" in resp.text
    await wait_until(lambda: metric(rtc_server, "kombain_webrtc_calls_ended_total",
                                    '{reason="connect_timeout"}') == before + 1, 15, "closed after the timeout")
    await wait_until(lambda: webrtc_active(rtc_server) == 0, 5, "session released")


async def test_offer_whose_codecs_differ_in_clock_rate_is_400(rtc_server):
    """Known names at rates the server does not speak: aiortc finds no codec in common (its
    OperationError was a 500)."""
    sdp = re.sub(r"(a=rtpmap:\d+ (?:opus|PCMU|PCMA|G722))/\d+", r"\1/16000", await _offer())
    resp = await _post(rtc_server, sdp)
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert err["code"] == "unsupported_codec" and "could not be applied" in err["message"], err
