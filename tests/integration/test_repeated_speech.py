"""Speech that really repeats keeps its words on the REST and the live path.

The card clips said twice transcribe as text that compresses like a decoder loop (ratio ~2.8,
over the 2.4 limit): every window of it was thrown away (0 of 42 words, on REST and live).
Such a window is now decoded again in shorter pieces and kept when each piece reads as speech.
"""

from __future__ import annotations

import io
import wave

import httpx
import numpy as np

from kombain.loadtest.wer import normalize, wer
from tests.conftest import LiveServer, speech_clips
from tests.integration.helpers import clip_pcm16, open_session

CARDS = [(path, text) for path, text in speech_clips() if path.name.startswith("cards_")]
REFERENCE = " ".join(text for _, text in CARDS * 2)


def cards_twice(rate: int) -> bytes:
    """The five card clips, each after 0.3 s of silence, then all of them again: PCM16 mono."""
    return b"".join(clip_pcm16(path, rate, silence_s=0.0) for path, _ in CARDS) * 2


def assert_kept(transcript: str) -> None:
    assert len(normalize(transcript)) >= 0.9 * len(normalize(REFERENCE)), transcript
    assert wer([(REFERENCE, transcript)]) <= 0.2, transcript


def test_rest_keeps_speech_said_twice(live_server: LiveServer) -> None:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(cards_twice(16000))
    r = httpx.post(live_server.url + "/v1/audio/transcriptions", timeout=120,
                   files={"file": ("cards.wav", buf.getvalue(), "audio/wav")}, data={"model": "whisper-1"})
    assert r.status_code == 200, r.text
    assert_kept(r.json()["text"])


async def test_live_commit_keeps_speech_said_twice(live_server: LiveServer) -> None:
    s = await open_session(live_server.ws_url, turn_detection=None)
    await s.append(cards_twice(24000), 48000, speed=50, rate=24000)
    await s.send({"type": "input_audio_buffer.commit"})
    done = await s.wait_for("conversation.item.input_audio_transcription.completed", timeout=60)
    await s.close()
    assert_kept(done[0]["transcript"])


async def test_forced_commit_keeps_speech_said_twice(live_server: LiveServer) -> None:
    """A buffer never committed is committed at max_turn_s (30 s): past one live window, so this
    final goes through faster-whisper's segments rather than the short-window decoder."""
    pcm = cards_twice(24000)
    pcm += bytes(np.zeros(24000 * 31 - len(pcm) // 2, "<i2").tobytes())
    s = await open_session(live_server.ws_url, turn_detection=None)
    await s.append(pcm, 48000, speed=100, rate=24000)
    done = await s.wait_for("conversation.item.input_audio_transcription.completed", timeout=60)
    await s.close()
    assert_kept(done[0]["transcript"])
