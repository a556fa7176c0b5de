"""Phone calls over Twilio Media Streams and Asterisk chan_websocket, against the real server.

The callers (clients/phone_callers.py) behave as Twilio and Asterisk do: 20 ms mu-law frames at
real time, silence between words, marks echoed once played. What they hear is checked by an
independent recogniser in the test process.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import pytest
import soxr
import websockets

from kombain.clients.phone_callers import AsteriskCaller, PhoneCaller, TwilioCaller
from kombain.clients.realtime_client import read_wav
from kombain.server.transports.twilio.protocol import twilio_signature
from tests.conftest import SPEECH_DIR, start_server, stop_server

pytestmark = pytest.mark.asyncio


def clip8k(name: str) -> np.ndarray:
    audio, rate = read_wav(SPEECH_DIR / name)
    return (np.clip(soxr.resample(audio, rate, 8000), -1, 1) * 32767).astype(np.int16)


@pytest.fixture(scope="module")
def recogniser():
    from faster_whisper import WhisperModel

    from kombain.streaming.models import resolve_stt_model

    return WhisperModel(str(resolve_stt_model("tiny.en", SPEECH_DIR)), device="cpu", compute_type="int8")


def recognise(model, pcm8k: np.ndarray) -> str:
    audio = soxr.resample(pcm8k.astype(np.float32) / 32768, 8000, 16000)
    segments, _ = model.transcribe(audio, language="en", temperature=0)
    return " ".join(s.text for s in segments).lower()


async def wait_quiet(caller: PhoneCaller, quiet_s: float = 1.2, timeout: float = 30, since: float = 0.0) -> None:
    """Wait until the caller has heard audio after `since`, and then none for `quiet_s`."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        while True:
            voiced = [t for t, a in caller.heard.audio if t >= since and np.abs(a).max(initial=0) > 300]
            if voiced and loop.time() - voiced[-1] > quiet_s:
                return
            if caller.closed.is_set():
                return
            await asyncio.sleep(0.1)


def twilio(live_server, **params: str) -> TwilioCaller:
    return TwilioCaller(live_server.ws_url + "/v1/telephony/twilio", params)


def asterisk(live_server, json_control: bool = False, **params: str) -> AsteriskCaller:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return AsteriskCaller(live_server.ws_url + "/v1/telephony/asterisk" + (f"?{query}" if query else ""),
                          json_control=json_control)


@pytest.mark.parametrize("kind", ["twilio", "asterisk"])
async def test_echo_round_trip_is_understood(live_server, recogniser, kind):
    caller = twilio(live_server) if kind == "twilio" else asterisk(live_server)
    await caller.connect()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    caller.say(clip8k("arctic_a0009.wav"))
    await caller.wait_said()
    await wait_quiet(caller, since=t0)
    heard = await asyncio.to_thread(recognise, recogniser, caller.heard.pcm())
    assert "turned sharply" in heard and "table" in heard, heard
    assert caller.heard.marks, "marks were sent after reply chunks and echoed as played"
    await caller.stop()


@pytest.mark.parametrize("kind", ["twilio", "asterisk"])
async def test_interruption_clears_the_reply(live_server, kind):
    caller = twilio(live_server) if kind == "twilio" else asterisk(live_server)
    await caller.connect()
    caller.say(clip8k("arctic_a0009.wav"))
    await caller.wait_said()
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(20):  # the echo starts
        while caller.heard.first_audio_after(0) is None:
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.8)
    caller.say(clip8k("goforward.wav"))  # talk over it
    async with asyncio.timeout(10):
        while not caller.heard.clears:
            await asyncio.sleep(0.05)
    cleared_at = caller.heard.clears[0]
    speaking_from = caller.voice_sent[-1][0] if len(caller.voice_sent) > 1 else loop.time()
    assert cleared_at - speaking_from < 1.5
    await caller.stop()


@pytest.mark.parametrize("kind", ["twilio", "asterisk-json"])
async def test_keys_walk_the_example_ivr(live_server, recogniser, kind):
    if kind == "twilio":
        caller: TwilioCaller | AsteriskCaller = twilio(live_server, responder="script")
    else:
        caller = asterisk(live_server, json_control=True, responder="script")
    await caller.connect()
    await wait_quiet(caller, timeout=30)  # the welcome menu
    welcome = await asyncio.to_thread(recognise, recogniser, caller.heard.pcm())
    assert "press 1" in welcome or "press one" in welcome, welcome
    loop = asyncio.get_running_loop()
    t = loop.time()
    await caller.dtmf("1")
    await wait_quiet(caller, since=t)
    asked = await asyncio.to_thread(recognise, recogniser, caller.heard.pcm(t))
    assert "account" in asked, asked
    t = loop.time()
    for d in "4321#":
        await caller.dtmf(d)
        await asyncio.sleep(0.15)
    await wait_quiet(caller, since=t)
    balance = await asyncio.to_thread(recognise, recogniser, caller.heard.pcm(t))
    # The recogniser writes the digits as words or figures, and hears "two" as "to" now and then
    # over 8 kHz mu-law ("the count for 3 to 1"): compare digit strings.
    assert "balance" in balance and "321" in _digits(balance), balance
    t = loop.time()
    await caller.dtmf("2")  # "anything else?" -> no -> goodbye and hang up
    async with asyncio.timeout(30):
        if isinstance(caller, AsteriskCaller):
            await caller.hangup.wait()
        await caller.closed.wait()
    bye = await asyncio.to_thread(recognise, recogniser, caller.heard.pcm(t))
    # "Thank you for calling. Goodbye." (over 8 kHz the recogniser sometimes writes "bye-bye")
    assert "thank you for calling" in bye and "bye" in bye, bye
    await caller.close()


async def test_twiml_webhook_points_at_the_stream(live_server):
    async with httpx.AsyncClient() as http:
        r = await http.post(live_server.url + "/v1/telephony/twilio/twiml?responder=script&voice=x\"<y",
                            data={"CallSid": "CA1", "From": "+15551234567"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/xml")
    import xml.etree.ElementTree as ET

    stream = ET.fromstring(r.text).find("Connect/Stream")
    assert stream is not None and stream.get("url") == live_server.ws_url + "/v1/telephony/twilio"
    params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    assert params == {"responder": "script", "voice": 'x"<y', "caller": "+15551234567"}


async def test_bad_telephony_input_is_refused_and_the_call_goes_on(live_server, recogniser):
    caller = twilio(live_server)
    ws = await websockets.connect(live_server.ws_url + "/v1/telephony/twilio")
    # Before start: media is refused, the stream is still waiting for its start.
    await ws.send(json.dumps({"event": "media", "streamSid": "MZx", "media": {"payload": "AAAA"}}))
    await ws.send("{not json")
    await ws.send(b"\xff\xfe binary")
    await ws.close()
    await caller.connect()
    bad = [
        "{not json", "[]", json.dumps({"event": "nope"}), "x" * 300_000,
        json.dumps({"event": "media", "streamSid": caller.stream_sid, "media": {"payload": "!!not base64!!"}}),
        json.dumps({"event": "media", "streamSid": "MZ-someone-else", "media": {"payload": "AAAA"}}),
        json.dumps({"event": "dtmf", "streamSid": caller.stream_sid, "dtmf": {"digit": "X"}}),
        json.dumps({"event": "start", "streamSid": caller.stream_sid, "start": {}}),
    ]
    for msg in bad:
        await caller.ws.send(msg)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    caller.say(clip8k("arctic_a0009.wav"))
    await caller.wait_said()
    await wait_quiet(caller, since=t0)
    heard = await asyncio.to_thread(recognise, recogniser, caller.heard.pcm())
    assert "table" in heard, heard  # the call went on
    await caller.stop()
    # Asterisk: garbage control words and half samples; then a caller that never starts.
    ws = await websockets.connect(live_server.ws_url + "/v1/telephony/asterisk")
    await ws.send(b"\x00" * 160)  # media before MEDIA_START
    await ws.send("MEDIA_START connection_id:1 channel:x format:opus optimal_frame_size:0")
    await ws.send("MEDIA_START connection_id:1 channel:x format:slin16 optimal_frame_size:640")
    await ws.send(b"\x00" * 161)  # not whole 16-bit samples
    await ws.send("WHAT_IS_THIS now")
    await ws.send("DTMF_END digit:Z")
    await ws.send("{\"event\": ")
    await ws.send(b"\x00" * 640)
    await ws.close()
    async with httpx.AsyncClient() as http:
        assert (await http.get(live_server.url + "/healthz")).status_code == 200


async def test_twilio_signature_is_required_when_a_token_is_set(tmp_path):
    server = start_server(tmp_path, {"KOMBAIN_TWILIO_AUTH_TOKEN": "secret-token",
                                     "KOMBAIN_PUBLIC_URL": "https://voice.example.com"})
    try:
        url = "https://voice.example.com/v1/telephony/twilio/twiml"
        form = {"CallSid": "CA1", "From": "+15550001111"}
        async with httpx.AsyncClient() as http:
            r = await http.post(server.url + "/v1/telephony/twilio/twiml", data=form)
            assert r.status_code == 403 and r.json()["error"]["code"] == "invalid_signature"
            good = twilio_signature("secret-token", url, form)
            r = await http.post(server.url + "/v1/telephony/twilio/twiml", data=form,
                                headers={"X-Twilio-Signature": good})
            assert r.status_code == 200 and 'url="wss://voice.example.com/v1/telephony/twilio"' in r.text
        with pytest.raises(websockets.InvalidStatus):
            await websockets.connect(server.ws_url + "/v1/telephony/twilio")
        sig = twilio_signature("secret-token", "wss://voice.example.com/v1/telephony/twilio")
        caller = TwilioCaller(server.ws_url + "/v1/telephony/twilio", headers={"X-Twilio-Signature": sig})
        await caller.connect()
        await asyncio.sleep(0.5)
        assert not caller.closed.is_set()
        await caller.stop()
    finally:
        stop_server(server)
    assert "Traceback" not in server.log()


_NUMBER_WORDS = {"zero": "0", "oh": "0", "one": "1", "two": "2", "to": "2", "too": "2", "three": "3",
                 "four": "4", "for": "4", "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9"}


def _digits(text: str) -> str:
    """The text as a digit string: number words (and their homophones) become figures."""
    import re

    return "".join(_NUMBER_WORDS.get(t, t) for t in re.findall(r"[a-z]+|\d", text.lower()))
