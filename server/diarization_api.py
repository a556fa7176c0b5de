"""`POST /v1/audio/transcriptions` with a diarizing model: OpenAI's `diarized_json`, known
speakers named from reference samples, `chunking_strategy`, and `transcript.text.segment` events."""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from fastapi import Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.datastructures import FormData

from kombain.server.errors import ApiError
from kombain.server.upload_audio import decode_upload
from kombain.streaming.decode_file import BadAudioFile, decode_audio_file
from kombain.streaming.diarize import SpeakerSegment
from kombain.streaming.whisper_runtime import DecodeOptions, DecodeResult, RuntimeBusy

MAX_KNOWN_SPEAKERS = 4  # as OpenAI documents
REFERENCE_SECONDS = (2.0, 10.0)
MAX_REFERENCE_BYTES = 4 * 1024 * 1024  # 10 s of 48 kHz stereo 16-bit WAV is 1.9 MB
DIARIZED_FORMATS = ("json", "text", "diarized_json")
_DATA_URL = re.compile(r"data:(?P<type>[^;,]*)(?P<params>(;[^;,]*)*),", re.ASCII)


@dataclasses.dataclass(frozen=True, slots=True)
class Chunking:
    """`chunking_strategy`: the VAD that finds speech (and so the windows and turn edges)."""

    threshold: float = 0.5
    silence_s: float = 0.1


async def diarize(request: Request, form: FormData, data: bytes, model: str, fmt: str) -> Response:
    """The diarized transcript of the upload (the form is read, the model is a diarizing one)."""
    st = request.app.state.kombain
    if fmt not in DIARIZED_FORMATS:
        raise ApiError(400, f"with {model} response_format must be one of {', '.join(DIARIZED_FORMATS)}",
                       "invalid_value", "response_format")
    if form.getlist("timestamp_granularities[]") or form.getlist("timestamp_granularities"):
        raise ApiError(400, f"timestamp_granularities is not available with {model}", "invalid_value",
                       "timestamp_granularities")
    language = str(form.get("language") or "") or None
    if language is not None and (len(language) > 8 or not language.isascii()
                                 or not language.replace("-", "").isalpha()):
        raise ApiError(400, "language must be an ISO-639-1 code such as 'en'", "invalid_value", "language")
    chunking = parse_chunking(form)
    names, samples = parse_known_speakers(form)
    stream = str(form.get("stream") or "false").lower() == "true"
    audio = await decode_upload(st, data)
    references = [await asyncio.to_thread(_reference_audio, s, i) for i, s in enumerate(samples)]
    if st.services.file_models is None or st.services.stt is None:
        raise ApiError(503, "speech recognition is not running on this node", "server_not_ready")
    if not getattr(st.services.stt.whisper, "word_times", True):  # speakers are given per word
        raise ApiError(400, f"who spoke when needs word times, which the served model "
                       f"{st.services.stt.whisper.name!r} does not give (KOMBAIN_STT_MODEL)", "invalid_value", "model")
    try:
        encoder = await st.services.file_models.speaker_encoder()
    except Exception as exc:
        raise ApiError(503, f"the speaker encoder could not be loaded: {exc}", "model_unavailable") from None
    runtime = st.services.stt.whisper
    options = DecodeOptions(language=language, beam_size=5, timestamps=True, vad_filter=True, word_timestamps=True)
    if stream:
        return StreamingResponse(_events(st, runtime, encoder, audio, options, chunking, names, references),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    result, turns = await _run(st, runtime, encoder, audio, options, chunking, names, references)
    st.metrics.transcriptions_total.labels("ok").inc()
    return render_diarized(result, turns, fmt)


async def _run(st: Any, runtime: Any, encoder: Any, audio: np.ndarray, options: DecodeOptions, chunking: Chunking,
               names: list[str], references: list[np.ndarray]) -> tuple[DecodeResult, list[SpeakerSegment]]:
    from kombain.streaming import diarize as dz
    from kombain.streaming.speech_regions import snap_words, speech_probabilities, speech_regions

    async def regions() -> list[tuple[float, float]]:
        probs = await st.services.file_models.in_background(speech_probabilities, st.services.stt.vad, audio)
        return speech_regions(probs, on=chunking.threshold, off=max(0.05, chunking.threshold - 0.15),
                              min_silence_s=chunking.silence_s)

    async def transcript() -> DecodeResult:
        try:
            return await runtime.transcribe(audio, "offline", options)  # type: ignore[no-any-return]
        except RuntimeBusy as exc:
            raise ApiError(503, str(exc), "server_busy", headers={"Retry-After": "1"}) from None

    result, speech = await asyncio.gather(transcript(), regions())
    segments = snap_words(result.segments, speech)
    known = {}
    for name, ref in zip(names, references, strict=True):
        known[name] = await st.services.file_models.in_background(encoder.embed_utterance, ref)
    turns = await st.services.file_models.in_background(dz.diarize, encoder, audio, speech, segments, known)
    return dataclasses.replace(result, segments=segments), turns


async def _events(st: Any, runtime: Any, encoder: Any, audio: np.ndarray, options: DecodeOptions,
                  chunking: Chunking, names: list[str], references: list[np.ndarray]) -> AsyncIterator[bytes]:
    """OpenAI's diarized stream: per turn a `transcript.text.delta` carrying its `segment_id` and a
    `transcript.text.segment`, then `transcript.text.done`. Turns come once the whole file is
    diarized: speakers are found by clustering all of it."""
    try:
        result, turns = await _run(st, runtime, encoder, audio, options, chunking, names, references)
    except ApiError as exc:
        yield _event({"type": "error", "error": {"message": exc.message, "type": exc.type, "code": exc.code}})
        return
    except Exception as exc:
        yield _event({"type": "error", "error": {"message": str(exc), "type": "server_error"}})
        return
    text_parts = []
    for seg in _segments(turns):
        text_parts.append(seg["text"])
        yield _event({"type": "transcript.text.delta", "delta": (" " if len(text_parts) > 1 else "") + seg["text"],
                      "segment_id": seg["id"]})
        yield _event(seg)
    st.metrics.transcriptions_total.labels("ok").inc()
    yield _event({"type": "transcript.text.done", "text": " ".join(text_parts),
                  "usage": {"type": "duration", "seconds": round(result.duration, 3)}})


def _event(obj: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(obj)}\n\n".encode()


def _segments(turns: list[SpeakerSegment]) -> list[dict[str, Any]]:
    return [{"type": "transcript.text.segment", "id": f"seg_{i}", "start": round(t.start, 3), "end": round(t.end, 3),
             "text": t.text, "speaker": t.speaker} for i, t in enumerate(turns)]


def render_diarized(result: DecodeResult, turns: list[SpeakerSegment], fmt: str) -> Response:
    text = " ".join(t.text for t in turns) if turns else result.text
    usage = {"type": "duration", "seconds": round(result.duration, 3)}
    if fmt == "text":
        return PlainTextResponse(text + "\n")
    if fmt == "json":
        return JSONResponse({"text": text, "usage": usage})
    return JSONResponse({"task": "transcribe", "duration": round(result.duration, 3), "text": text,
                         "segments": _segments(turns), "usage": usage})


def parse_chunking(form: FormData) -> Chunking:
    """`chunking_strategy`: "auto", a server_vad object as JSON, or the SDK's bracketed fields
    (`chunking_strategy[type]=server_vad`, `chunking_strategy[threshold]=0.6`, ...)."""
    raw: Any = form.get("chunking_strategy")
    fields: Any = {k[len("chunking_strategy["):-1]: v for k, v in form.multi_items()
                   if k.startswith("chunking_strategy[") and k.endswith("]")}
    if raw is None and not fields:
        return Chunking()
    if raw is not None and not fields:
        raw = str(raw).strip()
        if raw == "auto":
            return Chunking()
        try:
            fields = json.loads(raw)
        except ValueError:
            fields = None
        if not isinstance(fields, dict):
            raise ApiError(400, "chunking_strategy must be \"auto\" or an object with type server_vad",
                           "invalid_value", "chunking_strategy")
    if fields.get("type") != "server_vad":
        raise ApiError(400, "chunking_strategy's type must be server_vad", "invalid_value", "chunking_strategy")
    try:
        threshold = float(fields.get("threshold", 0.5))
        silence_ms = float(fields.get("silence_duration_ms", 100))
        float(fields.get("prefix_padding_ms", 0))
    except (TypeError, ValueError):
        raise ApiError(400, "chunking_strategy's threshold, silence_duration_ms and prefix_padding_ms must be numbers",
                       "invalid_value", "chunking_strategy") from None
    if not 0 < threshold < 1 or not 0 <= silence_ms <= 10_000:
        raise ApiError(400, "chunking_strategy: threshold must be in (0, 1), silence_duration_ms in 0-10000",
                       "invalid_value", "chunking_strategy")
    return Chunking(threshold, max(0.032, silence_ms / 1000))


def parse_known_speakers(form: FormData) -> tuple[list[str], list[str]]:
    """(names, data URLs) of `known_speaker_names[]` and `known_speaker_references[]`, checked for count."""
    names = [str(v) for k in ("known_speaker_names[]", "known_speaker_names") for v in form.getlist(k)]
    refs = [str(v) for k in ("known_speaker_references[]", "known_speaker_references") for v in form.getlist(k)]
    if len(names) > MAX_KNOWN_SPEAKERS:
        raise ApiError(400, f"at most {MAX_KNOWN_SPEAKERS} known speakers are supported, got {len(names)}",
                       "invalid_value", "known_speaker_names")
    if len(refs) != len(names):
        raise ApiError(400, f"known_speaker_references must have one sample per name ({len(names)}), got {len(refs)}",
                       "invalid_value", "known_speaker_references")
    for n in names:
        if not n.strip() or len(n) > 64:
            raise ApiError(400, "each known speaker name must be 1-64 characters", "invalid_value",
                           "known_speaker_names")
    if len(set(names)) != len(names):
        raise ApiError(400, "known speaker names must be different", "invalid_value", "known_speaker_names")
    return names, refs


def _reference_audio(url: str, index: int) -> np.ndarray:
    """A known speaker's sample from its data URL: base64 audio of 2-10 s (blocking)."""
    param = f"known_speaker_references[{index}]"

    def bad(why: str) -> ApiError:
        return ApiError(400, f"{param}: {why}", "invalid_value", "known_speaker_references")

    m = _DATA_URL.match(url)
    if m is None:
        raise bad("must be a data URL (data:audio/wav;base64,...)")
    mime = m["type"].lower()
    if mime and not (mime.startswith("audio/") or mime in ("application/octet-stream", "video/webm", "video/mp4")):
        raise bad(f"{mime!r} is not audio")
    if ";base64" not in m["params"].lower():
        raise bad("the data URL must be base64 (data:audio/...;base64,...)")
    payload = url[m.end():]
    if len(payload) > MAX_REFERENCE_BYTES * 4 // 3 + 4:
        raise bad(f"the sample is over {MAX_REFERENCE_BYTES // (1024 * 1024)} MiB")
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise bad("the data is not valid base64") from None
    try:
        audio = decode_audio_file(raw, max_seconds=REFERENCE_SECONDS[1] + 0.5)
    except BadAudioFile as exc:
        if "longer than" in str(exc):
            raise bad(f"the sample is longer than {REFERENCE_SECONDS[1]:.0f} s") from None
        raise bad(f"not audio we can decode ({exc})") from None
    seconds = len(audio) / 16000
    lo, hi = REFERENCE_SECONDS
    if not lo <= seconds <= hi:
        raise bad(f"the sample is {seconds:.1f} s; it must be {lo:.0f}-{hi:.0f} s")
    return audio
