"""Full-duplex conversation on /v1/realtime: replies spoken back, barge-in, responders."""

from __future__ import annotations

import asyncio
import base64

import httpx
import numpy as np
import pytest
import soxr

from tests.conftest import SPEECH_DIR, start_server, stop_server
from tests.integration.chat_standin import chat_server
from tests.integration.helpers import RawSession, clip_pcm16, open_session

pytestmark = pytest.mark.asyncio

LONG = ("This is a long answer that keeps going for a while. It has several sentences, each of them "
        "spoken one after another. The caller will interrupt it before the end. Nobody should hear "
        "this last sentence, because the caller spoke first.")


def reply_audio(s: RawSession, response_id: str) -> bytes:
    return b"".join(base64.b64decode(e["delta"]) for e in s.of("response.output_audio.delta")
                    if e["response_id"] == response_id)


@pytest.fixture(scope="module")
def recogniser():
    """An independent recogniser in the test process (not the server's runtime)."""
    from faster_whisper import WhisperModel

    from kombain.streaming.models import resolve_stt_model

    return WhisperModel(str(resolve_stt_model("tiny.en", SPEECH_DIR)), device="cpu", compute_type="int8")


def recognise(model, pcm24: bytes) -> str:
    audio = np.frombuffer(pcm24, "<i2").astype(np.float32) / 32768
    segments, _ = model.transcribe(soxr.resample(audio, 24000, 16000), language="en", temperature=0)
    return " ".join(s.text for s in segments).lower()


async def test_echo_round_trip_is_understood(live_server, recogniser):
    s = await open_session(live_server.ws_url)
    await s.append(clip_pcm16(SPEECH_DIR / "arctic_a0009.wav", 24000), 4800, speed=4.0, rate=24000)
    done = await s.wait_for("response.done", timeout=30)
    resp = done[0]["response"]
    assert resp["status"] == "completed"
    assert "across the table" in resp["output"][0]["content"][0]["transcript"].lower()
    heard = await asyncio.to_thread(recognise, recogniser, reply_audio(s, resp["id"]))
    assert "turned sharply" in heard and "table" in heard, heard
    types = [e["type"] for e in s.events]
    assert types.index("conversation.item.input_audio_transcription.completed") < types.index("response.created")
    assert types.index("response.output_audio.delta") < types.index("response.output_audio.done")
    timings = resp["kombain"]["timings_ms"]
    assert {"turn", "silence_wait", "stt", "responder", "tts"} <= set(timings)
    await s.close()


async def test_reply_is_paced_to_real_time(live_server):
    s = await open_session(live_server.ws_url)
    await s.send({"type": "response.create", "response": {"instructions": LONG[:160], "metadata": {"kombain_say": "true"}}})
    await s.wait_for("response.done", timeout=40)
    deltas = s.of("response.output_audio.delta")
    audio_s = sum(len(base64.b64decode(e["delta"])) for e in deltas) / 2 / 24000
    span = s.times[s.events.index(deltas[-1])] - s.times[s.events.index(deltas[0])]
    assert audio_s > 3
    # Paced to real time with at most 0.5 s lead: the last delta cannot come sooner than this.
    assert span >= audio_s - 0.5 - 0.15, (span, audio_s)
    kombain = s.of("response.done")[0]["response"]["kombain"]
    assert abs(kombain["audio_sent_ms"] - audio_s * 1000) < 50
    await s.close()


async def _speak_during_reply(s: RawSession) -> None:
    await s.send({"type": "response.create", "response": {"instructions": LONG, "metadata": {"kombain_say": "true"}}})
    await s.wait_for("response.output_audio.delta", count=10, timeout=30)  # about a second of reply
    await s.append(clip_pcm16(SPEECH_DIR / "goforward.wav", 24000, silence_s=1.0), 960, speed=1.0, rate=24000)


async def test_barge_in_stops_the_reply_and_truncates(live_server):
    s = await open_session(live_server.ws_url)
    await _speak_during_reply(s)
    done = await s.wait_for("response.done", timeout=30)
    first = done[0]["response"]
    assert first["status"] == "cancelled" and first["status_details"]["reason"] == "turn_detected"
    started = next(i for i, e in enumerate(s.events) if e["type"] == "input_audio_buffer.speech_started")
    stopped_at = s.events.index(done[0])
    late = [e for e in s.events[started:stopped_at] if e["type"] == "response.output_audio.delta"
            and e["response_id"] == first["id"]]
    assert late == [], "no reply audio after the caller's speech was confirmed"
    truncated = s.of("conversation.item.truncated")[0]
    assert truncated["audio_end_ms"] <= first["kombain"]["audio_sent_ms"]
    heard = first["output"][0]["content"][0]["transcript"]
    assert heard and len(heard) < len(LONG) and "last sentence" not in heard
    # The interruption itself is answered.
    second = await s.wait_for("response.done", count=2, timeout=30)
    assert "forward" in second[1]["response"]["output"][0]["content"][0]["transcript"].lower()
    await s.close()


async def test_barge_in_can_be_turned_off(live_server):
    s = await open_session(live_server.ws_url, turn_detection={"type": "server_vad", "interrupt_response": False,
                                                              "create_response": False})
    await _speak_during_reply(s)
    done = await s.wait_for("response.done", timeout=40)
    assert done[0]["response"]["status"] == "completed"
    await s.wait_for("conversation.item.input_audio_transcription.completed")
    await asyncio.sleep(1.0)
    assert len(s.of("response.created")) == 1  # create_response false: no automatic reply
    await s.close()


async def test_response_cancel(live_server):
    s = await open_session(live_server.ws_url)
    await s.send({"type": "response.cancel"})
    err = await s.wait_for("error")
    assert err[0]["error"]["code"] == "response_cancel_not_active"
    await s.send({"type": "response.create", "response": {"instructions": LONG, "metadata": {"kombain_say": "true"}}})
    await s.wait_for("response.output_audio.delta", count=3)
    await s.send({"type": "response.cancel"})
    done = await s.wait_for("response.done")
    assert done[0]["response"]["status"] == "cancelled"
    assert done[0]["response"]["status_details"]["reason"] == "client_cancelled"
    await s.send({"type": "response.create", "response": {"metadata": {"kombain_say": "true"}}})
    err = await s.wait_for("error", count=2)
    assert err[1]["error"]["param"] == "response.instructions"
    await s.close()


async def test_beta_names_and_mulaw_output(live_server):
    s = await open_session(live_server.ws_url, input_audio_format="pcm16", output_audio_format="g711_ulaw")
    await s.send({"type": "response.create", "response": {"instructions": "Hello there.", "metadata": {"kombain_say": "true"}}})
    await s.wait_for("response.done", timeout=20)
    deltas = s.of("response.audio.delta")
    assert deltas and not s.of("response.output_audio.delta")
    ulaw = b"".join(base64.b64decode(e["delta"]) for e in deltas)
    assert 0.3 < len(ulaw) / 8000 < 3  # one byte per sample at 8 kHz
    assert s.of("response.audio_transcript.done")[0]["transcript"] == "Hello there."
    await s.close()


async def _tts_pcm(url: str, text: str) -> bytes:
    async with httpx.AsyncClient() as c:
        r = await c.post(url + "/v1/audio/speech", json={"model": "tts-1", "voice": "alloy", "input": text,
                                                        "response_format": "pcm"}, timeout=30)
    r.raise_for_status()
    return bytes(24000) + r.content + bytes(24000 * 2)


async def test_script_responder_ivr(tmp_path):
    server = await asyncio.to_thread(start_server, tmp_path, {"KOMBAIN_RESPONDER": "script"})
    try:
        s = await open_session(server.ws_url)
        greeting = await s.wait_for("response.done", timeout=30)
        assert "welcome" in greeting[0]["response"]["output"][0]["content"][0]["transcript"].lower()
        await s.append(await _tts_pcm(server.url, "I want to talk to an agent."), 9600, speed=4, rate=24000)
        done = await s.wait_for("response.done", count=2, timeout=40)
        assert "agent" in done[1]["response"]["output"][0]["content"][0]["transcript"].lower()
        assert done[1]["response"]["kombain"]["hangup"] is True
        async with asyncio.timeout(10):
            await s._task  # the server hangs up: the socket closes
    finally:
        await asyncio.to_thread(stop_server, server)
    assert "Traceback" not in server.log()


async def test_openai_responder_and_endpoint_down(tmp_path):
    with chat_server() as (url, app):
        server = await asyncio.to_thread(start_server, tmp_path, {
            "KOMBAIN_RESPONDER": "openai", "KOMBAIN_RESPONDER_URL": url, "KOMBAIN_RESPONDER_TIMEOUT_S": "3"})
        try:
            s = await open_session(server.ws_url)
            await s.append(clip_pcm16(SPEECH_DIR / "goforward.wav", 24000), 4800, speed=4.0, rate=24000)
            done = await s.wait_for("response.done", timeout=30)
            said = done[0]["response"]["output"][0]["content"][0]["transcript"].lower()
            assert "the assistant heard" in said and "forward" in said
            assert app.state.requests[0]["stream"] is True
            assert app.state.requests[0]["messages"][-1]["role"] == "user"
            await s.close()
        finally:
            await asyncio.to_thread(stop_server, server)
    # Same server config, endpoint now gone: a spoken apology and a failed response, no hang.
    server = await asyncio.to_thread(start_server, tmp_path / "down", {
        "KOMBAIN_RESPONDER": "openai", "KOMBAIN_RESPONDER_URL": url, "KOMBAIN_RESPONDER_TIMEOUT_S": "3"})
    try:
        s = await open_session(server.ws_url)
        await s.append(clip_pcm16(SPEECH_DIR / "goforward.wav", 24000), 4800, speed=4.0, rate=24000)
        done = await s.wait_for("response.done", timeout=30)
        resp = done[0]["response"]
        assert resp["status"] == "failed" and resp["status_details"]["error"]["code"] == "responder_failed"
        assert "failed" in resp["status_details"]["error"]["message"]
        assert "sorry" in resp["output"][0]["content"][0]["transcript"].lower()
        assert not s.of("error")
        await s.close()
    finally:
        await asyncio.to_thread(stop_server, server)




async def test_client_vanishing_mid_reply_leaks_nothing(live_server):
    for _ in range(3):
        s = await open_session(live_server.ws_url)
        await s.send({"type": "response.create", "response": {"instructions": LONG, "metadata": {"kombain_say": "true"}}})
        await s.wait_for("response.output_audio.delta", count=2)
        s.ws.transport.abort()
        s._task.cancel()

    def gauge(text: str, name: str) -> float:
        return sum(float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith(name))

    async with asyncio.timeout(20):
        while True:
            m = httpx.get(live_server.url + "/metrics").text
            if (gauge(m, 'kombain_sessions_active{transport="websocket"}') == 0
                    and gauge(m, "kombain_tts_queue_depth") == 0):
                break
            await asyncio.sleep(0.2)
    s = await open_session(live_server.ws_url)  # still serving
    await s.close()


def _speculative(live_server, outcome: str) -> float:
    line = f'kombain_speculative_replies_total{{outcome="{outcome}",transport="websocket"}}'
    text = httpx.get(live_server.url + "/metrics").text
    return sum(float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith(line))


async def test_a_reply_prepared_at_the_pause_is_used_or_dropped_unseen(live_server):
    """At 1x, the reply is made during the end-of-turn silence and released with the turn; a caller
    who goes on after a long pause drops it, and only the reply to the whole turn is ever seen."""
    used, resumed = _speculative(live_server, "used"), _speculative(live_server, "speech_resumed")
    s = await open_session(live_server.ws_url)
    await s.append(clip_pcm16(SPEECH_DIR / "goforward.wav", 24000), 2400, speed=1.0, rate=24000)
    done = await s.wait_for("response.done", timeout=30)
    assert done[0]["response"]["status"] == "completed"
    assert _speculative(live_server, "used") == used + 1
    await s.close()

    s = await open_session(live_server.ws_url, type="realtime", audio={"input": {"turn_detection": {
        "type": "server_vad", "silence_duration_ms": 2500}}})
    first = clip_pcm16(SPEECH_DIR / "cards_001.wav", 24000, silence_s=1.5)  # a pause, shorter than 2.5 s
    await s.append(first + clip_pcm16(SPEECH_DIR / "goforward.wav", 24000, silence_s=3.0), 2400, speed=1.0,
                   rate=24000)
    done = await s.wait_for("response.done", timeout=30)
    assert _speculative(live_server, "speech_resumed") >= resumed + 1
    assert len(s.of("response.created")) == 1 and len(s.of("conversation.item.input_audio_transcription.completed")) == 1
    said = done[0]["response"]["output"][0]["content"][0]["transcript"].lower()
    assert "forward" in said, said  # the reply answers the whole turn, not the words before the pause
    await s.close()
