"""Transcripts with word times, translations and speakers, through the official `openai` SDK."""

from __future__ import annotations

import asyncio
import base64
import io
import shutil
import subprocess
import wave

import numpy as np
import openai
import pytest
import soxr

from kombain.clients.realtime_client import read_wav
from tests.conftest import SPEECH_DIR
from tests.integration.helpers import clip_pcm16

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


def espeak(voice: str, text: str) -> bytes:
    """Synthetic speech in `voice`'s language (plumbing only: recognisers score it unlike people)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    return subprocess.run([exe, "-v", voice, "-s", "140", "--stdout", text], capture_output=True, check=True).stdout


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK marks audio.translations deprecated
async def test_translation_to_english(live_server):
    c = client(live_server)
    data = espeak("de", "Guten Morgen. Ich habe heute einen Hund im Park gesehen, und er war sehr groß.")
    # The default server runs English-only tiny.en: the multilingual base model loads on this request.
    text = await asyncio.to_thread(c.audio.translations.create, model="whisper-1", file=("de.wav", data))
    english = text.text.lower()
    assert "park" in english and "today" in english and "heute" not in english, english
    verbose = await asyncio.to_thread(c.audio.translations.create, model="whisper-1", file=("de.wav", data),
                                      response_format="verbose_json")
    assert verbose.language == "english" and verbose.duration > 2 and verbose.segments
    assert verbose.model_extra and verbose.model_extra["task"] == "translate"
    with pytest.raises(openai.BadRequestError) as err:
        await asyncio.to_thread(c.audio.translations.create, model="tiny.en", file=("de.wav", data))
    assert err.value.body["param"] == "model"


def _clip(name: str) -> np.ndarray:
    return read_wav(SPEECH_DIR / name)[0]


def _data_url(audio: np.ndarray, mime: str = "audio/wav") -> str:
    return f"data:{mime};base64," + base64.b64encode(wav_bytes(audio)).decode()


def conversation() -> bytes:
    """The card reader, a CMU ARCTIC speaker, the card reader again (different recordings)."""
    gap = np.zeros(8000, np.float32)
    return wav_bytes(np.concatenate([_clip("cards_001.wav"), _clip("cards_003.wav"), gap, _clip("arctic_a0009.wav"),
                                     gap, _clip("cards_002.wav"), _clip("cards_004.wav")]))


async def test_diarized_transcript(live_server):
    c = client(live_server)
    dealer = _data_url(_clip("cards_005.wav"))  # a recording the conversation does not contain
    result = await asyncio.to_thread(
        c.audio.transcriptions.create, model="gpt-4o-transcribe-diarize", file=("talk.wav", conversation()),
        response_format="diarized_json", chunking_strategy="auto", known_speaker_names=["dealer"],
        known_speaker_references=[dealer])
    segs = result.segments
    assert [s.speaker for s in segs] == ["dealer", "A", "dealer"], segs
    assert "clubs" in segs[0].text.lower() and "table" in segs[1].text.lower()
    assert all(a.end <= b.start for a, b in zip(segs, segs[1:], strict=False)) and result.duration > 9
    assert result.text.lower().count("clubs") >= 2

    def stream() -> list:
        return list(c.audio.transcriptions.create(
            model="kombain-diarize", file=("talk.wav", conversation()), response_format="diarized_json", stream=True,
            chunking_strategy={"type": "server_vad", "threshold": 0.5, "silence_duration_ms": 100}))

    events = await asyncio.to_thread(stream)
    seg_events = [e for e in events if e.type == "transcript.text.segment"]
    assert [e.speaker for e in seg_events] == ["A", "B", "A"] and events[-1].type == "transcript.text.done"
    deltas = [e for e in events if e.type == "transcript.text.delta"]
    assert [d.segment_id for d in deltas] == [e.id for e in seg_events]


async def test_diarize_one_speaker_and_silence(live_server):
    c = client(live_server)
    one = await asyncio.to_thread(c.audio.transcriptions.create, model="gpt-4o-transcribe-diarize",
                                  file=("one.wav", wav_bytes(_clip("cards_005.wav"))), response_format="diarized_json")
    assert {s.speaker for s in one.segments} == {"A"}
    quiet = await asyncio.to_thread(c.audio.transcriptions.create, model="gpt-4o-transcribe-diarize",
                                    file=("quiet.wav", wav_bytes(np.zeros(32000, np.float32))),
                                    response_format="diarized_json")
    assert quiet.segments == [] and quiet.text == ""


async def test_diarize_bad_input(live_server):
    c = client(live_server)
    data = wav_bytes(_clip("cards_001.wav"))
    ok = _data_url(_clip("cards_005.wav"))
    long = _data_url(np.tile(_clip("cards_005.wav"), 4))  # 14 s
    cases = [
        ({"known_speaker_names": list("abcde"), "known_speaker_references": [ok] * 5}, "known_speaker_names"),
        ({"known_speaker_names": ["a", "b"], "known_speaker_references": [ok]}, "known_speaker_references"),
        ({"known_speaker_names": ["a"], "known_speaker_references": ["https://example.com/a.wav"]},
         "known_speaker_references"),
        ({"known_speaker_names": ["a"], "known_speaker_references": ["data:audio/wav;base64,@@not base64@@"]},
         "known_speaker_references"),
        ({"known_speaker_names": ["a"], "known_speaker_references": ["data:audio/wav," + "x" * 100]},
         "known_speaker_references"),
        ({"known_speaker_names": ["a"], "known_speaker_references": [_data_url(_clip("cards_001.wav"))]},
         "known_speaker_references"),  # 1.1 s: too short
        ({"known_speaker_names": ["a"], "known_speaker_references": [long]}, "known_speaker_references"),
        ({"known_speaker_names": ["a"], "known_speaker_references": [
            "data:audio/wav;base64," + base64.b64encode(b"not audio at all" * 100).decode()]},
         "known_speaker_references"),
        ({"known_speaker_names": ["a"], "known_speaker_references": [ok.replace("audio/wav", "text/plain")]},
         "known_speaker_references"),
        ({"response_format": "verbose_json"}, "response_format"),
        ({"chunking_strategy": {"type": "client_vad"}}, "chunking_strategy"),
        ({"timestamp_granularities": ["word"]}, "timestamp_granularities"),
    ]
    for extra, param in cases:
        kwargs = {"response_format": "diarized_json"} | extra
        with pytest.raises(openai.BadRequestError) as err:
            await asyncio.to_thread(c.audio.transcriptions.create, model="gpt-4o-transcribe-diarize",
                                    file=("a.wav", data), **kwargs)
        assert err.value.body["param"] == param, (extra, err.value.body)
    with pytest.raises(openai.BadRequestError) as err:  # a model that cannot diarize
        await asyncio.to_thread(c.audio.transcriptions.create, model="whisper-1", file=("a.wav", data),
                                response_format="diarized_json")
    assert err.value.body["param"] == "response_format"


async def _realtime_final(live_server, transcription: dict) -> object:
    aclient = openai.AsyncOpenAI(api_key="unused", base_url=live_server.url + "/v1",
                                 websocket_base_url=live_server.ws_url + "/v1")
    pcm = clip_pcm16(SPEECH_DIR / "goforward.wav", 24000)  # 0.3 s of silence, then the clip (speech from 0.5 s)
    async with aclient.realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "transcription", "audio": {"input": {
            "format": {"type": "audio/pcm", "rate": 24000}, "transcription": transcription,
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 500}}}})
        for i in range(0, len(pcm), 9600):
            await conn.input_audio_buffer.append(audio=base64.b64encode(pcm[i:i + 9600]).decode())
            await asyncio.sleep(0.02)
        async with asyncio.timeout(20):
            async for event in conn:
                assert event.type != "error", event
                if event.type == "session.updated":
                    updated = event.session.audio.input.transcription
                if event.type == "conversation.item.input_audio_transcription.completed":
                    return event, updated
    raise AssertionError("no final transcript")


async def test_realtime_word_times_opt_in(live_server):
    event, updated = await _realtime_final(live_server, {"model": "whisper-1", "kombain_word_timestamps": True})
    assert updated.model_extra.get("kombain_word_timestamps") is True
    words = event.model_extra["kombain_words"]
    assert [w["word"].lower().strip(".") for w in words][:2] == ["go", "forward"]
    assert 0.6 < words[0]["start"] < 1.1 and words[-1]["end"] <= event.model_extra["audio_end_ms"] / 1000 + 0.01
    assert all(a["start"] <= b["start"] for a, b in zip(words, words[1:], strict=False))
    plain, updated = await _realtime_final(live_server, {"model": "whisper-1"})
    assert "kombain_words" not in plain.model_extra and "kombain_word_timestamps" not in updated.model_extra


async def test_realtime_speaker_labels_opt_in(live_server):
    aclient = openai.AsyncOpenAI(api_key="unused", base_url=live_server.url + "/v1",
                                 websocket_base_url=live_server.ws_url + "/v1")
    turns = [("cards_001.wav", "cards_003.wav"), ("arctic_a0009.wav",), ("cards_002.wav", "cards_004.wav")]
    pause = np.zeros(2400, np.float32)  # 0.15 s inside a turn; 1.2 s of silence ends it
    audio = np.concatenate([np.concatenate([x for n in t for x in (_clip(n), pause)] + [np.zeros(19200, np.float32)])
                            for t in turns])
    pcm = (np.clip(soxr.resample(audio, 16000, 24000), -1, 1) * 32767).astype("<i2").tobytes()
    labels = []
    async with aclient.realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "transcription", "audio": {"input": {
            "format": {"type": "audio/pcm", "rate": 24000},
            "transcription": {"model": "whisper-1", "kombain_speaker_labels": True},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 500}}}})
        for i in range(0, len(pcm), 9600):
            await conn.input_audio_buffer.append(audio=base64.b64encode(pcm[i:i + 9600]).decode())
            await asyncio.sleep(0.02)
        async with asyncio.timeout(30):
            async for event in conn:
                assert event.type != "error", event
                if event.type == "conversation.item.input_audio_transcription.completed":
                    labels.append((event.model_extra["kombain_speaker"], event.transcript))
                    if len(labels) == len(turns):
                        break
    assert [s for s, _ in labels] == ["A", "B", "A"], labels
