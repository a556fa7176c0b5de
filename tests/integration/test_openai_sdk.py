"""The official `openai` SDK, pointed at kombain, for both realtime and REST transcription."""

from __future__ import annotations

import asyncio
import base64
import io

import av
import numpy as np
import openai
import pytest

from kombain.clients.realtime_client import read_wav
from tests.conftest import SPEECH_DIR
from tests.integration.helpers import clip_pcm16

pytestmark = pytest.mark.asyncio


async def test_sdk_realtime_transcription(live_server):
    client = openai.AsyncOpenAI(api_key="unused", base_url=live_server.url + "/v1",
                                websocket_base_url=live_server.ws_url + "/v1")
    pcm = clip_pcm16(SPEECH_DIR / "arctic_a0009.wav", 24000)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        created = await conn.recv()
        assert created.type == "session.created"
        await conn.session.update(session={"type": "transcription", "audio": {"input": {
            "format": {"type": "audio/pcm", "rate": 24000},
            "transcription": {"model": "whisper-1"},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 500}}}})
        for i in range(0, len(pcm), 9600):
            await conn.input_audio_buffer.append(audio=base64.b64encode(pcm[i:i + 9600]).decode())
            await asyncio.sleep(0.05)
        transcript = None
        async with asyncio.timeout(20):
            async for event in conn:
                if event.type == "conversation.item.input_audio_transcription.completed":
                    transcript = event.transcript
                    break
                assert event.type != "error", event
    assert transcript is not None and "across the table" in transcript.lower()


def _encode(fmt: str, codec: str) -> bytes:
    audio, rate = read_wav(SPEECH_DIR / "goforward.wav")
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate if codec != "libopus" else 48000, layout="mono")
        if codec == "libopus":
            import soxr

            audio, rate = soxr.resample(audio, 16000, 48000), 48000
        frame = av.AudioFrame.from_ndarray((audio * 32767).astype(np.int16)[None, :], format="s16", layout="mono")
        frame.rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


@pytest.mark.parametrize(("name", "fmt", "codec"), [
    ("speech.wav", None, None), ("speech.flac", "flac", "flac"), ("speech.mp3", "mp3", "libmp3lame"),
    ("speech.ogg", "ogg", "libopus"),
])
async def test_sdk_rest_transcription_formats(live_server, name, fmt, codec):
    client = openai.OpenAI(api_key="unused", base_url=live_server.url + "/v1")
    data = (SPEECH_DIR / "goforward.wav").read_bytes() if fmt is None else _encode(fmt, codec)
    result = await asyncio.to_thread(client.audio.transcriptions.create, model="whisper-1", file=(name, data))
    assert "forward" in result.text.lower()


async def test_sdk_rest_verbose_and_streaming(live_server):
    client = openai.OpenAI(api_key="unused", base_url=live_server.url + "/v1")
    data = (SPEECH_DIR / "cards_005.wav").read_bytes()
    verbose = await asyncio.to_thread(client.audio.transcriptions.create, model="whisper-1",
                                      file=("a.wav", data), response_format="verbose_json")
    assert verbose.duration > 3 and verbose.segments and "spades" in verbose.text.lower()
    srt = await asyncio.to_thread(client.audio.transcriptions.create, model="whisper-1", file=("a.wav", data),
                                  response_format="srt")
    assert "-->" in srt and "spades" in srt.lower()

    def stream() -> list:
        return list(client.audio.transcriptions.create(model="whisper-1", file=("a.wav", data), stream=True))

    events = await asyncio.to_thread(stream)
    assert events[-1].type == "transcript.text.done" and "spades" in events[-1].text.lower()
    assert any(e.type == "transcript.text.delta" for e in events)


async def test_sdk_rest_errors(live_server):
    client = openai.OpenAI(api_key="unused", base_url=live_server.url + "/v1", max_retries=0)
    for file in (("broken.wav", b"RIFF\x00\x00\x00\x00WAVEfmt garbage"), ("empty.wav", b"")):
        with pytest.raises(openai.BadRequestError) as err:
            await asyncio.to_thread(client.audio.transcriptions.create, model="whisper-1", file=file)
        assert err.value.body["code"] == "invalid_audio"
    with pytest.raises(openai.BadRequestError):  # any name is served; one that is no name is not
        await asyncio.to_thread(client.audio.transcriptions.create, model="no\nsuch\nmodel",
                                file=("a.wav", (SPEECH_DIR / "cards_001.wav").read_bytes()))
    with pytest.raises(openai.BadRequestError):
        await asyncio.to_thread(client.audio.transcriptions.create, model="whisper-1",
                                file=("a.wav", (SPEECH_DIR / "cards_001.wav").read_bytes()), response_format="xml")
    models = await asyncio.to_thread(client.models.list)
    assert "whisper-1" in [m.id for m in models.data]
