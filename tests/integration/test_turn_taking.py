"""Turn-taking on held-back recorded speech: semantic_vad answers a finished sentence sooner than
server_vad at 500 ms and waits through a pause mid-sentence; a short sound during a reply only
pauses it. Timing goals live in `python -m kombain.loadtest turns`; here, only the behaviour."""

from __future__ import annotations

import numpy as np
import pytest

from kombain.clients.realtime_client import read_wav
from tests.conftest import SPEECH_DIR
from tests.integration.helpers import RawSession, open_session

pytestmark = pytest.mark.asyncio

RATE = 24000
SEMANTIC = {"type": "realtime", "audio": {"input": {"turn_detection": {"type": "semantic_vad", "eagerness": "auto"}}}}
SERVER_500 = {"type": "realtime", "audio": {"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 500}}}}


def pcm24(name: str) -> np.ndarray:
    import soxr

    audio, rate = read_wav(SPEECH_DIR / name)
    return soxr.resample(audio, rate, RATE).astype(np.float32)


def to_bytes(*parts: np.ndarray) -> bytes:
    return (np.clip(np.concatenate(parts), -1, 1) * 32767).astype("<i2").tobytes()


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), np.float32)


async def say(s: RawSession, audio: bytes) -> None:
    await s.append(audio, 4800, speed=1.0, rate=RATE)


async def test_semantic_vad_waits_through_a_pause_mid_sentence(live_server):
    audio = pcm24("arctic_a0007.wav")  # "and you always want to | see it in the superlative degree"
    cut = int(1.66 * RATE)  # after "want to": faster-whisper (tiny.en) word times put "to" at 1.44-1.66 s
    s = await open_session(live_server.ws_url, **SEMANTIC)
    await say(s, to_bytes(silence(0.3), audio[:cut], silence(0.8), audio[cut:], silence(2.0)))
    await s.wait_for("response.done", timeout=30)
    finals = s.of("conversation.item.input_audio_transcription.completed")
    assert len(finals) == 1, [f["transcript"] for f in finals]
    assert "superlative" in finals[0]["transcript"].lower()
    await s.close()


async def test_a_short_sound_during_a_reply_only_pauses_it(live_server):
    s = await open_session(live_server.ws_url, type="realtime", audio={"input": {"turn_detection": {
        "type": "server_vad", "kombain_interrupt_min_speech_ms": 600}}})
    await say(s, to_bytes(silence(0.3), pcm24("arctic_a0009.wav"), silence(0.8)))
    await s.wait_for("response.output_audio.delta", timeout=30)
    word = pcm24("cards_001.wav")  # "ten of clubs": its first word only, ~0.35 s of real speech
    start = int(np.argmax(np.abs(word) > 0.05))
    await say(s, to_bytes(word[start:start + int(0.35 * RATE)], silence(1.2)))
    done = await s.wait_for("response.done", timeout=30)
    assert done[0]["response"]["status"] == "completed", done[0]["response"]["status_details"]
    # A real interruption still cancels.
    await s.send({"type": "response.create", "response": {"instructions": "This is a long reply. " * 12,
                                                          "metadata": {"kombain_say": "true"}}})
    await s.wait_for("response.output_audio.delta", count=len(s.of("response.output_audio.delta")) + 1)
    await say(s, to_bytes(pcm24("goforward.wav"), silence(1.0)))
    done = await s.wait_for("response.done", count=2, timeout=30)
    assert done[1]["response"]["status"] == "cancelled"
    await s.close()


async def test_bad_turn_detection_settings_name_the_field(live_server):
    s = await open_session(live_server.ws_url)
    await s.send({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
        "turn_detection": {"type": "semantic_vad", "eagerness": "very"}}}}})
    err = await s.wait_for("error")
    assert err[0]["error"]["param"] == "session.audio.input.turn_detection.eagerness"
    await s.close()


async def test_a_client_that_stops_sending_mid_turn_is_answered(live_server):
    """Media that stops counts as silence: speech, then no audio at all (a client that sends only
    while someone speaks, as DTX or silence suppression would): the turn still ends and is answered."""
    audio = pcm24("goforward.wav")
    audio = audio[:int(np.flatnonzero(np.abs(audio) > 0.02)[-1]) + RATE // 20]  # the file's trailing silence cut
    s = await open_session(live_server.ws_url, **SERVER_500)
    await say(s, to_bytes(silence(0.3), audio))  # and then nothing
    await s.wait_for("input_audio_buffer.speech_stopped", timeout=15)
    done = await s.wait_for("response.done", timeout=30)
    assert done[0]["response"]["status"] == "completed"
    assert "forward" in s.of("conversation.item.input_audio_transcription.completed")[0]["transcript"].lower()
    await s.close()
