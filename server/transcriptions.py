"""OpenAI-compatible `POST /v1/audio/transcriptions` and `POST /v1/audio/translations`."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse
from starlette.datastructures import FormData, UploadFile

from kombain.server import model_aliases
from kombain.server.auth import require
from kombain.server.errors import ApiError
from kombain.server.file_models import TRANSLATE_MODEL
from kombain.server.openapi import AUTH_ERRORS, errors, request_body
from kombain.server.services import SpeechToText
from kombain.server.transcript_render import FORMATS, GRANULARITIES, render
from kombain.server.upload_audio import decode_pieces
from kombain.streaming.decode_file import BadAudioFile
from kombain.streaming.long_file import Refine, transcribe_pieces
from kombain.streaming.speech_regions import refine_word_times
from kombain.streaming.whisper_runtime import (
    DecodeOptions,
    DecodeResult,
    RuntimeBusy,
    Segment,
    WhisperRuntime,
)

router = APIRouter(dependencies=[Depends(require("voice"))], tags=["audio"], responses=errors(*AUTH_ERRORS))

# Models that label speakers (response_format diarized_json): OpenAI's name, and kombain's own.
DIARIZE_MODELS = ("gpt-4o-transcribe-diarize", "kombain-diarize")

def _runtime(request: Request) -> WhisperRuntime:
    st = request.app.state.kombain
    if not st.ready.is_set():
        raise ApiError(503, "the server is still loading models; retry shortly", "server_not_ready",
                       headers={"Retry-After": "2"})
    stt: SpeechToText | None = st.services.stt
    if stt is None:
        raise ApiError(503, "speech recognition is not running on this node", "server_not_ready",
                       headers={"Retry-After": "5"})
    return stt.whisper


@router.post("/v1/audio/transcriptions", response_model=None, responses={
    200: {"content": {"application/json": {}, "text/plain": {}, "text/event-stream": {}},
          "description": "The transcript: JSON (json, verbose_json), text (text, srt, vtt) or, with stream, events"},
    **errors(400, 413, 503)}, openapi_extra=request_body({"multipart/form-data": {
        "type": "object", "required": ["file"], "properties": {
            "file": {"type": "string", "format": "binary", "description": "Audio: WAV, FLAC, MP3, Ogg, WebM, M4A..."},
            "model": {"type": "string", "description": "any name (GET /v1/models lists the usual ones): "
                      "the served Whisper model transcribes"},
            "language": {"type": "string", "description": "ISO-639-1, e.g. en"},
            "prompt": {"type": "string"},
            "response_format": {"type": "string", "enum": [*FORMATS, "diarized_json"]},
            "known_speaker_names[]": {"type": "array", "items": {"type": "string"}, "maxItems": 4},
            "known_speaker_references[]": {"type": "array", "items": {"type": "string"}, "maxItems": 4,
                                           "description": "data URLs of 2-10 s of each named speaker"},
            "chunking_strategy": {"type": "string", "description": "auto, or a server_vad object as JSON"},
            "timestamp_granularities[]": {"type": "array", "items": {"type": "string", "enum": list(GRANULARITIES)},
                                          "description": "verbose_json: words[] with `word`; srt/vtt: word cues"},
            "stream": {"type": "boolean"}}}}))
async def transcribe(request: Request) -> Response:
    st = request.app.state.kombain
    runtime = _runtime(request)
    form, data = await _read_form(request)
    model = model_aliases.check_name(form.get("model"), "whisper-1")  # any name: server/model_aliases.py
    fmt = str(form.get("response_format") or "json")
    if model in DIARIZE_MODELS:
        from kombain.server.diarization_api import diarize

        return await diarize(request, form, data, model, fmt)
    if fmt == "diarized_json":
        raise ApiError(400, f"response_format diarized_json needs a model that labels speakers "
                       f"({', '.join(DIARIZE_MODELS)}), not {model!r}", "invalid_value", "response_format")
    _check_format(fmt)
    language = str(form.get("language") or "") or None
    if language is not None and (len(language) > 8 or not language.isascii()
                                 or not language.replace("-", "").isalpha()):
        raise ApiError(400, "language must be an ISO-639-1 code such as 'en'", "invalid_value", "language")
    prompt = str(form.get("prompt") or "")[:2000] or None
    granularities = _granularities(form, fmt)
    stream = str(form.get("stream") or "false").lower() == "true"
    pieces = await decode_pieces(st, data)
    options = DecodeOptions(language=language, prompt=prompt, beam_size=5,
                            timestamps=fmt in ("verbose_json", "srt", "vtt"), vad_filter=True,
                            word_timestamps="word" in granularities)
    if stream:
        return StreamingResponse(_sse(runtime, pieces, options), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})
    vad = st.services.stt.vad
    refine = (lambda piece, segments: refine_word_times(vad, piece, segments)) if options.word_timestamps else None
    result = await _offline(st, runtime, pieces, options, refine)
    st.metrics.transcriptions_total.labels("ok").inc()
    return render(result, fmt, granularities)


@router.post("/v1/audio/translations", response_model=None, responses={
    200: {"content": {"application/json": {}, "text/plain": {}},
          "description": "The English translation: JSON (json, verbose_json) or text (text, srt, vtt)"},
    **errors(400, 413, 503)}, openapi_extra=request_body({"multipart/form-data": {
        "type": "object", "required": ["file"], "properties": {
            "file": {"type": "string", "format": "binary", "description": "Audio in any language Whisper knows"},
            "model": {"type": "string", "description": f"whisper-1 or {TRANSLATE_MODEL}"},
            "prompt": {"type": "string", "description": "in English"},
            "response_format": {"type": "string", "enum": list(FORMATS)},
            "temperature": {"type": "number"}}}}))
async def translate(request: Request) -> Response:
    """Speech in any language to English text: Whisper's translate task on the multilingual model
    (loaded on the first translation unless the live model is multilingual itself)."""
    st = request.app.state.kombain
    _runtime(request)
    form, data = await _read_form(request)
    model = str(form.get("model") or "whisper-1")
    if model not in ("whisper-1", TRANSLATE_MODEL):
        raise ApiError(400, f"model {model!r} cannot translate here; use whisper-1 or {TRANSLATE_MODEL!r}",
                       "model_not_found", "model")
    fmt = str(form.get("response_format") or "json")
    _check_format(fmt)
    prompt = str(form.get("prompt") or "")[:2000] or None
    pieces = await decode_pieces(st, data)
    try:
        runtime = await st.services.file_models.translator()
    except Exception as exc:
        raise ApiError(503, f"the translation model could not be loaded: {exc}", "model_unavailable") from None
    options = DecodeOptions(prompt=prompt, beam_size=5, timestamps=fmt in ("verbose_json", "srt", "vtt"),
                            vad_filter=True, task="translate")
    result = await _offline(st, runtime, pieces, options)
    st.metrics.transcriptions_total.labels("ok").inc()
    return render(dataclasses.replace(result, language="english"), fmt, task="translate")


async def _read_form(request: Request) -> tuple[FormData, bytes]:
    """The multipart form and its `file`, within the upload limit."""
    limit = request.app.state.kombain.settings.max_upload_bytes
    length = request.headers.get("content-length")
    if length and length.isascii() and length.isdigit() and int(length) > limit + 64 * 1024:
        raise ApiError(413, f"upload of {length} bytes exceeds the limit of {limit} bytes", "file_too_large", "file")
    try:
        form = await request.form(max_files=1, max_fields=32, max_part_size=limit)
    except Exception as exc:  # malformed multipart, or a part over the size limit
        raise ApiError(400, f"could not read the multipart form: {exc}", "invalid_form") from None
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise ApiError(400, "a 'file' field with the audio is required (multipart/form-data)", "missing_file", "file")
    data = await upload.read()
    if len(data) > limit:
        raise ApiError(413, f"file exceeds the limit of {limit} bytes", "file_too_large", "file")
    return form, data


async def _offline(st: Any, runtime: WhisperRuntime, pieces: Iterator[np.ndarray], options: DecodeOptions,
                   refine: Refine | None = None) -> DecodeResult:
    try:
        return await transcribe_pieces(runtime, pieces, options, refine=refine)
    except RuntimeBusy as exc:
        raise ApiError(503, str(exc), "server_busy", headers={"Retry-After": "1"}) from None
    except BadAudioFile as exc:  # past the first piece: a file cut short or corrupt further on
        st.metrics.transcriptions_total.labels("bad_audio").inc()
        raise ApiError(400, str(exc), "invalid_audio", "file") from None


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ApiError(400, f"response_format must be one of {', '.join(FORMATS)}", "invalid_value", "response_format")


def _granularities(form: Any, fmt: str) -> tuple[str, ...]:
    """`timestamp_granularities[]` (the SDK's spelling) or `timestamp_granularities`; as OpenAI,
    `word` needs a format with times (400 with json or text)."""
    values: list[str] = []
    for key in ("timestamp_granularities[]", "timestamp_granularities"):
        for v in form.getlist(key):
            values.extend(p.strip() for p in str(v).split(",") if p.strip())
    for v in values:
        if v not in GRANULARITIES:
            raise ApiError(400, f"timestamp_granularities: {v[:40]!r} is not one of {', '.join(GRANULARITIES)}",
                           "invalid_value", "timestamp_granularities")
    if "word" in values and fmt in ("json", "text"):
        raise ApiError(400, "timestamp_granularities 'word' needs response_format verbose_json, srt or vtt",
                       "invalid_value", "timestamp_granularities")
    return tuple(dict.fromkeys(values))


async def _sse(runtime: WhisperRuntime, pieces: Iterator[np.ndarray], options: DecodeOptions) -> AsyncIterator[bytes]:
    """Server-sent events as OpenAI streams them: transcript.text.delta ..., transcript.text.done."""
    queue: asyncio.Queue[Segment] = asyncio.Queue(maxsize=10_000)  # segments of <= 4 h of audio
    job = asyncio.ensure_future(transcribe_pieces(runtime, pieces, options, on_segment=queue.put_nowait))
    try:
        first = True
        while not (job.done() and queue.empty()):
            getter = asyncio.ensure_future(queue.get())
            await asyncio.wait({getter, job}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                continue
            seg = getter.result()
            delta = seg.text if first else " " + seg.text
            first = False
            yield _event({"type": "transcript.text.delta", "delta": delta})
        try:
            result = job.result()
        except Exception as exc:
            yield _event({"type": "error", "error": {"message": str(exc), "type": "server_error"}})
            return
        yield _event({"type": "transcript.text.done", "text": result.text})
    finally:
        job.cancel()


def _event(obj: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(obj)}\n\n".encode()
