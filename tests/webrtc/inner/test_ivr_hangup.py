"""The bot hangs up (IVR script): the goodbye is played, then the server ends the WebRTC call."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from kombain.clients.webrtc_client import WebRTCCaller
from tests.conftest import start_server, stop_server
from tests.webrtc.inner.conftest import HOSTS, SERVER_ENV, metric, webrtc_active

pytestmark = pytest.mark.asyncio


async def test_ivr_hangup_ends_the_call(tmp_path):
    server = await asyncio.to_thread(start_server, tmp_path, {**SERVER_ENV, "KOMBAIN_RESPONDER": "script"})
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            speech = await http.post(server.url + "/v1/audio/speech", json={
                "model": "tts-1", "voice": "alloy", "input": "I want to talk to an agent.", "response_format": "wav"})
        (tmp_path / "agent.wav").write_bytes(speech.content)
        async with WebRTCCaller(server.url, hosts=HOSTS) as caller:
            await caller.connect()
            greeting = await caller.wait_for("response.done", timeout=30)
            assert "welcome" in greeting[0].event["response"]["output"][0]["content"][0]["transcript"].lower()
            caller.speak(tmp_path / "agent.wav")
            done = (await caller.wait_for("response.done", count=2, timeout=40))[1]
            assert done.event["response"]["kombain"]["hangup"] is True
            async with asyncio.timeout(15):  # the goodbye drains from the track, then the call ends
                while caller.pc.connectionState not in ("closed", "failed"):
                    await asyncio.sleep(0.1)
            # The goodbye was heard before the end.
            assert caller.result.rms_between(done.t - 1.0, done.t) > 0.01
        assert metric(server, "kombain_webrtc_calls_ended_total", '{reason="hangup"}') == 1
        assert webrtc_active(server) == 0
    finally:
        await asyncio.to_thread(stop_server, server)
    assert "Traceback" not in server.log()
