"""Asterisk AudioSocket over TCP against the real server: a caller that behaves as Asterisk does
(UUID first, 20 ms slin frames at its rate, silence between words), checked by an independent
recogniser; keys walk the IVR; the IVR's hang-up sends a hang-up frame; garbage is refused."""

from __future__ import annotations

import asyncio
import socket
import uuid

import httpx
import numpy as np
import pytest
import soxr

from kombain.clients.phone_callers import AudioSocketCaller
from kombain.clients.realtime_client import read_wav
from tests.conftest import SPEECH_DIR
from tests.integration.test_telephony import recogniser, wait_quiet  # noqa: F401 - fixture

pytestmark = pytest.mark.asyncio


def clip(name: str, rate: int) -> np.ndarray:
    audio, src = read_wav(SPEECH_DIR / name)
    return (np.clip(soxr.resample(audio, src, rate), -1, 1) * 32767).astype(np.int16)


def hear(model, pcm: np.ndarray, rate: int) -> str:
    audio = soxr.resample(pcm.astype(np.float32) / 32768, rate, 16000)
    segments, _ = model.transcribe(audio, language="en", temperature=0)
    return " ".join(s.text for s in segments).lower()


@pytest.mark.parametrize("rate", [8000, 16000])
async def test_echo_round_trip_at_the_callers_rate(live_server, recogniser, rate):  # noqa: F811
    caller = AudioSocketCaller("127.0.0.1", live_server.audiosocket_port, rate=rate)
    await caller.connect()
    t0 = asyncio.get_running_loop().time()
    caller.say(clip("arctic_a0009.wav", rate))
    await caller.wait_said()
    await wait_quiet(caller, since=t0)
    sizes = {len(a) for _, a in caller.heard.audio}
    assert sizes == {rate // 50}, sizes  # 20 ms frames at the caller's own rate
    heard = await asyncio.to_thread(hear, recogniser, caller.heard.pcm(), rate)
    assert "turned sharply" in heard and "table" in heard, heard
    await caller.stop()


async def test_interruption_stops_the_reply_at_once(live_server):
    caller = AudioSocketCaller("127.0.0.1", live_server.audiosocket_port)
    await caller.connect()
    caller.say(clip("arctic_a0009.wav", 8000))
    await caller.wait_said()
    async with asyncio.timeout(20):
        while caller.heard.first_audio_after(0) is None:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.8)
    caller.say(clip("goforward.wav", 8000))
    await caller.wait_said()
    started = caller.voice_sent[-1][0]
    assert caller.heard.last_audio_before(started) is not None, "the reply had not started"
    # The interrupted reply ends at its first 0.3 s of silence: what follows is the answer to the
    # interruption, which (with the synthesis cache) can start inside the caller's own pause.
    last = started
    for at, pcm in caller.heard.audio:
        if at < started or np.abs(pcm).max(initial=0) <= 300:
            continue
        if at - last > 0.3:
            break
        last = at
    assert last - started < 1.0, last - started  # sending stopped within a second


async def test_preconfigured_call_walks_the_ivr_by_keys_and_is_hung_up(live_server, recogniser):  # noqa: F811
    call_uuid = str(uuid.uuid4())
    async with httpx.AsyncClient() as http:
        r = await http.put(f"{live_server.url}/v1/telephony/audiosocket/{call_uuid}", json={"responder": "script"})
        assert r.status_code == 204
        bad = await http.put(f"{live_server.url}/v1/telephony/audiosocket/not-a-uuid", json={})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_value"
        bad = await http.put(f"{live_server.url}/v1/telephony/audiosocket/{uuid.uuid4()}", json={"nope": 1})
        assert bad.status_code in (400, 422)
    caller = AudioSocketCaller("127.0.0.1", live_server.audiosocket_port, call_uuid=call_uuid)
    await caller.connect()
    await wait_quiet(caller, timeout=30)
    welcome = await asyncio.to_thread(hear, recogniser, caller.heard.pcm(), 8000)
    assert "welcome" in welcome, welcome
    loop = asyncio.get_running_loop()
    t = loop.time()
    await caller.dtmf("0")  # agent: "Connecting you to an agent. Goodbye." and hang up
    async with asyncio.timeout(30):
        await caller.hangup.wait()
    bye = await asyncio.to_thread(hear, recogniser, caller.heard.pcm(t), 8000)
    assert "agent" in bye, bye
    await caller.close()


async def test_garbage_streams_are_refused_and_the_listener_lives(live_server):
    for junk in (b"GET / HTTP/1.1\r\n\r\n", b"\x10\x00\x04abcd", b"\x01\x00\x03abc", b"\x01\xff\xff" + b"x" * 100,
                 b"\x01\x00\x10" + uuid.uuid4().bytes + b"\x10\x00\x03abc", b"\x77\x00\x00"):
        r, w = await asyncio.open_connection("127.0.0.1", live_server.audiosocket_port)
        w.write(junk)
        await w.drain()
        data = await asyncio.wait_for(r.read(100), 12)
        assert data[:1] in (b"\xff", b""), data  # an error frame, then the close
        w.close()
    with socket.create_connection(("127.0.0.1", live_server.audiosocket_port), timeout=2):
        pass  # still listening
    caller = AudioSocketCaller("127.0.0.1", live_server.audiosocket_port)
    await caller.connect()
    await asyncio.sleep(0.5)
    assert not caller.closed.is_set()
    await caller.stop()
