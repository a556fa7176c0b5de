"""SIGTERM during live calls of every WebSocket transport (delivered twice, as a process group
and `make serve` deliver it): refuse new calls at once, let live ones go on, then tell each in its own protocol (error + close 1001; a spoken goodbye and a hang-up on
phone calls), and exit 0. WebRTC's drain is tested in tests/webrtc/inner/test_drain.py."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import httpx
import numpy as np
import pytest
import websockets

from kombain.clients.phone_callers import AsteriskCaller, TwilioCaller
from tests.conftest import SPEECH_DIR, start_server, stop_server
from tests.integration.helpers import clip_pcm16, open_session

pytestmark = pytest.mark.asyncio

DRAIN_S = 4.0


async def test_sigterm_drains_live_calls_of_every_transport(tmp_path):
    server = await asyncio.to_thread(start_server, tmp_path, {"KOMBAIN_DRAIN_SECONDS": str(DRAIN_S),
                                                              "KOMBAIN_LANE_WORKERS": "0"})
    try:
        rt = await open_session(server.ws_url)
        tw = TwilioCaller(server.ws_url + "/v1/telephony/twilio")
        ast = AsteriskCaller(server.ws_url + "/v1/telephony/asterisk")
        await tw.connect()
        await ast.connect()
        async with httpx.AsyncClient(timeout=5) as http:
            assert (await http.get(server.url + "/readyz")).status_code == 200
            await asyncio.sleep(0.5)
            signalled = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            # The same stop delivered again at once (Ctrl-C reaches the whole process group, and
            # `make serve` forwards a SIGTERM): it must not cut the drain short.
            await asyncio.sleep(0.05)
            server.proc.send_signal(signal.SIGINT)
            async with asyncio.timeout(2):  # /readyz turns 503 at once
                while (await http.get(server.url + "/readyz")).status_code != 503:
                    await asyncio.sleep(0.05)
            assert (await http.get(server.url + "/readyz")).json()["status"] == "draining"
            # New calls are refused with a reason, on every entry.
            r = await http.post(server.url + "/v1/realtime/calls", content=b"v=0", headers={"Content-Type": "application/sdp"})
            assert r.status_code == 503 and r.json()["error"]["code"] == "server_draining" and "Retry-After" in r.headers
            async with websockets.connect(server.ws_url + "/v1/realtime") as ws:
                refusal = json.loads(await ws.recv())
                assert refusal["type"] == "error" and refusal["error"]["code"] == "server_draining"
                with pytest.raises(websockets.ConnectionClosed):
                    await ws.recv()
                assert ws.close_code == 1013
            late = TwilioCaller(server.ws_url + "/v1/telephony/twilio")
            await late.connect()
            async with asyncio.timeout(5):
                await late.closed.wait()
            assert late.heard.close_code == 1013
        # The live realtime call still works during the drain: a turn is transcribed.
        await rt.append(clip_pcm16(SPEECH_DIR / "goforward.wav", 24000), 4800, speed=2.0, rate=24000)
        done = await rt.wait_for("conversation.item.input_audio_transcription.completed", timeout=DRAIN_S)
        assert done[0]["transcript"].strip()
        # At the deadline: an error event and close 1001 on the realtime socket ...
        err = await rt.wait_for("error", timeout=DRAIN_S + 10)
        assert err[-1]["error"]["code"] == "server_shutting_down"
        assert time.monotonic() - signalled >= DRAIN_S - 0.5
        async with asyncio.timeout(5):
            await rt._task
        assert rt.ws.close_code == 1001
        # ... and a spoken goodbye, then a hang-up, on the phone calls.
        async with asyncio.timeout(20):
            await tw.closed.wait()
            await ast.hangup.wait()
        for caller in (tw, ast):
            goodbye = caller.heard.pcm(signalled + DRAIN_S - 0.5)
            assert len(goodbye) > 8000 and np.abs(goodbye).max() > 1000, "the goodbye was spoken"
        await tw.close()
        await ast.close()
        code = await asyncio.to_thread(server.proc.wait, 30)
        assert code == 0, server.log()[-3000:]
    finally:
        if server.proc.poll() is None:
            await asyncio.to_thread(stop_server, server)
    log = server.log()
    assert "Traceback" not in log, log[-5000:]
    assert "draining" in log and "drained" in log
    assert log.count("kombain.drain: signal") == 1, log[-3000:]  # one line for the stop
