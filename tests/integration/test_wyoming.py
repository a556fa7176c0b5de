"""kombain as a Wyoming server, driven by the `wyoming` library's own client against the live
server: describe, transcribe (any format, streamed words), synthesize (one stream, and streamed
text with audio per sentence), handle, and bad input answered with `error` events."""

from __future__ import annotations

import asyncio
import re

import httpx
import numpy as np
import pytest
import soxr
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeVoice,
)

from kombain.clients.realtime_client import read_wav
from tests.conftest import SPEECH_DIR
from tests.integration.test_telephony import recogniser  # noqa: F401 - fixture

pytestmark = pytest.mark.asyncio
VOICE = "en_US-joe-medium"


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def client(live_server) -> AsyncTcpClient:
    return AsyncTcpClient("127.0.0.1", live_server.wyoming_port)


async def read(c: AsyncTcpClient, timeout: float = 30) -> Event:
    async with asyncio.timeout(timeout):
        ev = await c.read_event()
    assert ev is not None, "the server closed the connection"
    return ev


async def read_until(c: AsyncTcpClient, last: str, timeout: float = 30) -> list[Event]:
    out = []
    while True:
        ev = await read(c, timeout)
        out.append(ev)
        assert ev.type != "error", ev.data
        if ev.type == last:
            return out


def speech(name: str, rate: int, width: int = 2, channels: int = 1, silence_s: float = 0.8) -> bytes:
    audio, src = read_wav(SPEECH_DIR / name)
    audio = np.concatenate([soxr.resample(audio, src, rate), np.zeros(int(rate * silence_s), np.float32)])
    ints = (np.clip(audio, -1, 1 - 1e-6) * float(1 << (8 * width - 1))).astype(f"<i{width}")
    return np.repeat(ints[:, None], channels, axis=1).tobytes()


async def transcribe(c: AsyncTcpClient, pcm: bytes, rate: int, width: int = 2, channels: int = 1,
                     pace: float = 0.0, names: list[str] | None = None) -> tuple[list[Event], int]:
    """Send audio (at `pace` x real time, 0: at once); the events until transcript-stop, and how
    many transcript-chunks came before audio-stop was sent."""
    fmt = {"rate": rate, "width": width, "channels": channels}
    await c.write_event(Transcribe(language="en", transcript_names=names).event())
    await c.write_event(AudioStart(**fmt).event())
    step = rate // 10 * width * channels
    for i in range(0, len(pcm), step):
        await c.write_event(AudioChunk(audio=pcm[i:i + step], **fmt).event())
        if pace:
            await asyncio.sleep(0.1 / pace)
    early = 0
    if pace:  # what the server sent while the audio was arriving
        reader = c._reader
        assert reader is not None
        while reader._buffer:  # type: ignore[attr-defined]
            ev = await read(c)
            early += ev.type == "transcript-chunk"
            if ev.type == "transcript-stop":
                break
    await c.write_event(AudioStop().event())
    return await read_until(c, "transcript-stop"), early


async def test_describe_lists_asr_tts_and_handle(live_server):
    async with client(live_server) as c:
        await c.write_event(Describe().event())
        info = Info.from_event(await read(c))
    (asr,) = info.asr
    assert asr.supports_transcript_streaming and [m.name for m in asr.models] == ["tiny.en"]
    assert asr.models[0].languages == ["en"]
    (tts,) = info.tts
    assert tts.supports_synthesize_streaming and VOICE in [v.name for v in tts.voices]
    (handle,) = info.handle
    assert handle.supports_handled_streaming and handle.models[0].name == "echo"


async def test_transcribe_at_once_any_rate_width_and_channels(live_server):
    async with client(live_server) as c:
        for rate, width, channels in ((16000, 2, 1), (44100, 4, 2), (8000, 1, 1)):
            events, _ = await transcribe(c, speech("arctic_a0009.wav", rate, width, channels), rate, width, channels,
                                         names=["Gregson", "kitchen light"])  # Home Assistant's names: a prompt
            kinds = [e.type for e in events]
            assert kinds[0] == "transcript-start" and kinds[-2:] == ["transcript", "transcript-stop"], kinds
            text = Transcript.from_event(events[-2]).text
            assert "turned sharply" in text.lower() and "table" in text.lower(), (rate, width, text)
            chunks = "".join(e.data["text"] for e in events if e.type == "transcript-chunk")
            assert words(chunks) == words(text), (chunks, text)
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(f"{live_server.url}/metrics")).text
    assert re.search(r'kombain_sessions_total\{transport="wyoming"\} [1-9]', metrics)
    assert 'kombain_sessions_active{transport="wyoming"} 0.0' in metrics


async def test_words_stream_while_the_audio_arrives(live_server):
    async with client(live_server) as c:
        events, early = await transcribe(c, speech("arctic_a0009.wav", 16000, silence_s=0.2), 16000, pace=2.0)
    assert early >= 1, [e.type for e in events]  # partial words before audio-stop was sent
    text = Transcript.from_event(next(e for e in events if e.type == "transcript")).text
    assert "gregson" in text.lower(), text


async def test_silence_is_an_empty_transcript(live_server):
    async with client(live_server) as c:
        events, _ = await transcribe(c, bytes(16000 * 2), 16000)
    assert Transcript.from_event(events[-2]).text == ""


async def test_synthesize_speaks_the_text(live_server, recogniser):  # noqa: F811
    async with client(live_server) as c:
        await c.write_event(Synthesize(text="The quick brown fox jumps over the lazy dog.",
                                       voice=SynthesizeVoice(name=VOICE)).event())
        events = await read_until(c, "audio-stop")
    assert events[0].type == "audio-start" and events[0].data["rate"] == 22050
    pcm = b"".join(e.payload or b"" for e in events if e.type == "audio-chunk")
    audio = soxr.resample(np.frombuffer(pcm, "<i2").astype(np.float32) / 32768, 22050, 16000)
    segments, _ = await asyncio.to_thread(recogniser.transcribe, audio, language="en", temperature=0)
    heard = " ".join(s.text for s in segments).lower()
    assert "fox" in heard and "dog" in heard, heard


async def test_streamed_text_gets_audio_per_sentence_as_it_is_made(live_server):
    async with client(live_server) as c:
        await c.write_event(SynthesizeStart(voice=SynthesizeVoice(name=VOICE)).event())
        await c.write_event(SynthesizeChunk(text="Good morning to you. The ").event())
        first = await read_until(c, "audio-stop")  # the first sentence, before the text has ended
        assert first[0].type == "audio-start" and any(e.type == "audio-chunk" for e in first)
        await c.write_event(SynthesizeChunk(text="weather is fine today.").event())
        await c.write_event(Synthesize(text="Good morning to you. The weather is fine today.").event())
        await c.write_event(SynthesizeStop().event())
        rest = await read_until(c, "synthesize-stopped")
    kinds = [e.type for e in rest]
    assert kinds.count("audio-start") == kinds.count("audio-stop") >= 1, kinds  # the compat synthesize is not spoken twice
    assert kinds.count("audio-start") <= 2, kinds


async def test_handle_answers_with_the_responder(live_server):
    async with client(live_server) as c:
        await c.write_event(Transcript(text="turn on the kitchen light").event())
        events = await read_until(c, "handled-stop")
    kinds = [e.type for e in events]
    assert kinds[0] == "handled-start" and kinds[-2:] == ["handled", "handled-stop"], kinds
    assert events[-2].data["text"] == "You said: turn on the kitchen light"
    assert "".join(e.data["text"] for e in events if e.type == "handled-chunk") == events[-2].data["text"]


# --- bad input --------------------------------------------------------------------------------

async def expect_error(c: AsyncTcpClient, code: str) -> None:
    ev = await read(c)
    assert ev.type == "error" and ev.data["code"] == code, ev


async def test_bad_events_get_error_events_and_the_connection_goes_on(live_server):
    async with client(live_server) as c:
        for event, code in [
            (Event("no-such-event"), "unsupported_event"),
            (Event("synthesize", {"text": 5}), "bad_event"),
            (Event("synthesize", {"text": "hi", "voice": {"name": "nobody"}}), "voice_not_found"),
            (Event("transcribe", {"name": "large-v9"}), "model_not_found"),
            (Event("transcribe", {"language": "de"}), "language_not_supported"),
            (Event("transcribe", {"transcript_names": "Gregson"}), "bad_event"),
            (Event("audio-chunk", {"rate": 16000, "width": 2, "channels": 1}, b"\0\0"), "audio_not_started"),
            (Event("audio-stop"), "audio_not_started"),
            (Event("audio-start", {"rate": 16000, "width": 7, "channels": 1}), "bad_audio_format"),
            (Event("audio-start", {"rate": -5, "width": 2, "channels": 1}), "bad_audio_format"),
            (Event("synthesize-chunk", {"text": "hi"}), "synthesize_not_started"),
            (Event("transcript", {}), "bad_event"),
        ]:
            await c.write_event(event)
            await expect_error(c, code)
        await c.write_event(AudioStart(rate=16000, width=2, channels=2).event())
        await c.write_event(Event("audio-chunk", {"rate": 16000, "width": 2, "channels": 2}, b"\0" * 6))
        await expect_error(c, "bad_audio")  # not whole frames
        await c.write_event(AudioStop().event())
        await read_until(c, "transcript-stop")
        await c.write_event(Describe().event())
        assert (await read(c)).type == "info"  # still served


async def test_broken_frames_and_oversized_payloads_close_the_connection(live_server):
    for raw in (b"this is not json\n", b'{"type": "audio-chunk", "payload_length": 99999999}\n'):
        reader, writer = await asyncio.open_connection("127.0.0.1", live_server.wyoming_port)
        writer.write(raw)
        async with asyncio.timeout(10):
            line = await reader.readline()
            assert b'"error"' in line
            await reader.read()  # then the server closes
        writer.close()


async def test_a_flood_of_bad_events_is_cut_off_and_others_are_served(live_server):
    reader, writer = await asyncio.open_connection("127.0.0.1", live_server.wyoming_port)
    for _ in range(200):
        writer.write(b'{"type": "nonsense"}\n')
    async with asyncio.timeout(10):
        rest = await reader.read()  # to the close
    assert rest.count(b'"error"') < 30 and b"too_many_errors" in rest
    writer.close()
    # A client that floods describes without reading back blocks only itself.
    _, flooder = await asyncio.open_connection("127.0.0.1", live_server.wyoming_port)
    flooder.write(b'{"type": "describe"}\n' * 20000)
    async with client(live_server) as c:
        await c.write_event(Describe().event())
        assert (await read(c, timeout=5)).type == "info"
    flooder.close()
