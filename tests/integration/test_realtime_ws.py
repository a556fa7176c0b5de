"""/v1/realtime over a real socket with recorded speech and the bundled Whisper model."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from kombain.clients.realtime_client import stream_file
from kombain.loadtest.stt import load_corpus
from kombain.loadtest.wer import wer
from tests.conftest import SPEECH_DIR, speech_clips
from tests.integration.helpers import clip_mulaw, clip_pcm16, open_session

pytestmark = pytest.mark.asyncio


def _offline_wer(url: str) -> float:
    pairs = []
    for path, ref in speech_clips():
        with open(path, "rb") as f:
            r = httpx.post(url + "/v1/audio/transcriptions", files={"file": f}, data={"model": "whisper-1"}, timeout=60)
        r.raise_for_status()
        pairs.append((ref, r.json()["text"]))
    return wer(pairs)


async def test_streamed_speech_meets_offline_accuracy(live_server, tmp_path):
    """All recorded clips streamed as one call: every turn finalised, WER within offline + 0.03."""
    import wave

    audio, refs = load_corpus(SPEECH_DIR)
    wav = tmp_path / "corpus.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((audio * 32767).astype("<i2").tobytes())
    result = await stream_file(live_server.url, wav, speed=3.0, settle_s=15)
    assert not result.of("error"), result.of("error")
    assert len(result.of("input_audio_buffer.speech_started")) == len(refs)
    assert len(result.finals) == len(refs), result.finals
    streamed = wer(list(zip(refs, result.finals, strict=True)))
    offline = await asyncio.to_thread(_offline_wer, live_server.url)
    assert streamed <= offline + 0.03, (streamed, offline, result.finals)
    # Partials arrive while speaking, before the final of the same item (short clips may have none).
    finals = {e.event["item_id"]: e.t for e in result.of("conversation.item.input_audio_transcription.completed")}
    deltas = result.of("conversation.item.input_audio_transcription.delta")
    assert deltas and all(d.t < finals[d.event["item_id"]] for d in deltas)


async def test_event_order_of_a_turn(live_server):
    s = await open_session(live_server.ws_url, type="transcription")
    pcm = clip_pcm16(SPEECH_DIR / "goforward.wav", 24000)
    await s.append(pcm, 4800, speed=4.0, rate=24000)
    done = await s.wait_for("conversation.item.input_audio_transcription.completed")
    types = [e["type"] for e in s.events if e["type"] != "conversation.item.input_audio_transcription.delta"]
    assert types == ["session.created", "session.updated", "input_audio_buffer.speech_started",
                     "input_audio_buffer.speech_stopped", "input_audio_buffer.committed",
                     "conversation.item.input_audio_transcription.completed"]
    item = s.of("input_audio_buffer.speech_started")[0]["item_id"]
    assert done[0]["item_id"] == item and s.of("input_audio_buffer.committed")[0]["item_id"] == item
    assert "forward" in done[0]["transcript"].lower()
    await s.close()


@pytest.mark.parametrize("binary", [False, True])
async def test_16khz_pcm_and_binary_frames(live_server, binary):
    s = await open_session(live_server.ws_url, audio={"input": {"format": {"type": "audio/pcm", "rate": 16000}}})
    assert s.of("session.updated")[0]["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 16000}
    await s.append(clip_pcm16(SPEECH_DIR / "arctic_a0009.wav", 16000), 3200, speed=4.0, rate=16000, binary=binary)
    done = await s.wait_for("conversation.item.input_audio_transcription.completed")
    assert "sharply" in done[0]["transcript"].lower()
    await s.close()


async def test_mulaw_8khz_beta_format(live_server):
    s = await open_session(live_server.ws_url, input_audio_format="g711_ulaw")
    assert s.of("session.updated")[0]["session"]["input_audio_format"] == "g711_ulaw"
    ulaw = clip_mulaw(SPEECH_DIR / "arctic_a0007.wav")
    for i in range(0, len(ulaw), 1600):
        import base64

        await s.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(ulaw[i:i + 1600]).decode()})
        await asyncio.sleep(0.05)
    done = await s.wait_for("conversation.item.input_audio_transcription.completed")
    assert "superlative" in done[0]["transcript"].lower()
    await s.close()


async def test_manual_commit_without_turn_detection(live_server):
    s = await open_session(live_server.ws_url, turn_detection=None)
    await s.send({"type": "input_audio_buffer.commit"})
    err = await s.wait_for("error")
    assert err[0]["error"]["code"] == "input_audio_buffer_commit_empty"
    await s.append(clip_pcm16(SPEECH_DIR / "cards_005.wav", 24000, silence_s=0.2), 48000, speed=50, rate=24000)
    assert not s.of("input_audio_buffer.speech_started")  # no server VAD
    await s.send({"type": "input_audio_buffer.commit"})
    done = await s.wait_for("conversation.item.input_audio_transcription.completed")
    assert "spades" in done[0]["transcript"].lower()
    assert s.of("input_audio_buffer.committed")
    await s.close()


async def test_clear_drops_the_buffer(live_server):
    s = await open_session(live_server.ws_url, turn_detection=None)
    await s.append(clip_pcm16(SPEECH_DIR / "cards_001.wav", 24000), 48000, speed=50, rate=24000)
    await s.send({"type": "input_audio_buffer.clear"})
    await s.wait_for("input_audio_buffer.cleared")
    await s.send({"type": "input_audio_buffer.commit"})
    err = await s.wait_for("error")
    assert err[0]["error"]["code"] == "input_audio_buffer_commit_empty"
    await s.close()


async def test_silence_and_noise_give_no_transcript(live_server):
    import numpy as np

    s = await open_session(live_server.ws_url, turn_detection=None)
    rng = np.random.default_rng(0)
    noise = (rng.normal(0, 0.03, 24000 * 3) * 32767).astype("<i2").tobytes()
    await s.append(bytes(24000 * 2 * 2) + noise, 48000, speed=50, rate=24000)
    await s.send({"type": "input_audio_buffer.commit"})
    done = await s.wait_for("conversation.item.input_audio_transcription.completed")
    assert done[0]["transcript"] == ""
    await s.close()


async def test_manual_buffer_is_committed_at_the_turn_limit(live_server):
    """A client that never commits does not buffer without bound: at max_turn_s (30 s) the buffer
    is committed as a server-VAD turn would be, and the audio after it starts a new one."""
    s = await open_session(live_server.ws_url, turn_detection=None)
    speech = clip_pcm16(SPEECH_DIR / "cards_005.wav", 24000, silence_s=0.2)
    audio = bytes(24000 * 2 * 29) + speech + bytes(24000 * 2 * 5)  # the words end past the 30 s mark
    await s.append(audio, 48000, speed=100, rate=24000)
    committed = await s.wait_for("input_audio_buffer.committed")
    assert len(committed) == 1
    await s.send({"type": "input_audio_buffer.commit"})  # what came after the limit is its own item
    await s.wait_for("input_audio_buffer.committed", count=2)
    done = await s.wait_for("conversation.item.input_audio_transcription.completed", count=2)
    assert len({d["item_id"] for d in done}) == 2
    await s.close()
