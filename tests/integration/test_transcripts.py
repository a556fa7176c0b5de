"""Transcripts with word times, translations and speakers, through the official `openai` SDK."""

from __future__ import annotations

import asyncio
import io
import wave

import numpy as np
import openai
import pytest

from kombain.clients.realtime_client import read_wav
from tests.conftest import SPEECH_DIR

pytestmark = pytest.mark.asyncio


def wav_bytes(audio: np.ndarray, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


def client(live_server) -> openai.OpenAI:  # type: ignore[no-untyped-def]
    return openai.OpenAI(api_key="unused", base_url=live_server.url + "/v1", max_retries=0)


async def test_word_timestamps(live_server):
    # cards_005 after 1.5 s of silence: its first word ('eight') starts near 1.5 + 0.21 s (energy).
    audio, _ = read_wav(SPEECH_DIR / "cards_005.wav")
    data = wav_bytes(np.concatenate([np.zeros(24000, np.float32), audio]))
    c = client(live_server)
    verbose = await asyncio.to_thread(c.audio.transcriptions.create, model="whisper-1", file=("a.wav", data),
                                      response_format="verbose_json", timestamp_granularities=["word"])
    words = verbose.words
    assert words and [w.word.lower().strip(",.") for w in words][:3] == ["eight", "of", "spades"]
    assert verbose.segments  # OpenAI keeps segments when only words are asked for
    assert all(w.start <= w.end for w in words)
    assert all(a.start <= b.start for a, b in zip(words, words[1:], strict=False))
    assert 1.5 < words[0].start < 1.9 and words[-1].end <= verbose.duration + 0.01

    srt = await asyncio.to_thread(c.audio.transcriptions.create, model="whisper-1", file=("a.wav", data),
                                  response_format="srt", timestamp_granularities=["word"])
    assert srt.count("-->") == len(words)
    vtt = await asyncio.to_thread(c.audio.transcriptions.create, model="whisper-1", file=("a.wav", data),
                                  response_format="vtt", timestamp_granularities=["word", "segment"])
    assert vtt.startswith("WEBVTT") and "<00:00:0" in vtt  # inline word times inside segment cues


async def test_granularity_errors(live_server):
    c = client(live_server)
    data = (SPEECH_DIR / "cards_001.wav").read_bytes()
    for fmt, grans in (("verbose_json", ["words"]), ("json", ["word"])):
        with pytest.raises(openai.BadRequestError) as err:
            await asyncio.to_thread(c.audio.transcriptions.create, model="whisper-1", file=("a.wav", data),
                                    response_format=fmt, timestamp_granularities=grans)
        assert err.value.body["param"] == "timestamp_granularities"
    plain = await asyncio.to_thread(c.audio.transcriptions.create, model="whisper-1", file=("a.wav", data),
                                    response_format="verbose_json", timestamp_granularities=["segment"])
    assert plain.segments and plain.words is None
