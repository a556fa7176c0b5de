"""OpenAI-compatible `POST /v1/audio/transcriptions` and `GET /v1/models`."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse
from starlette.datastructures import UploadFile

from kombain.server import model_aliases
from kombain.server.auth import require
from kombain.server.errors import ApiError
from kombain.server.openapi import AUTH_ERRORS, errors, request_body
from kombain.server.services import SpeechToText
from kombain.server.transcript_render import FORMATS, GRANULARITIES, render
from kombain.streaming.decode_file import BadAudioFile, decode_audio_file
from kombain.streaming.speech_regions import refine_word_times
from kombain.streaming.whisper_runtime import (
    DecodeOptions,
    RuntimeBusy,
    Segment,
    WhisperRuntime,
)

router = APIRouter(dependencies=[Depends(require("voice"))], tags=["audio"], responses=errors(*AUTH_ERRORS))


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
            "response_format": {"type": "string", "enum": list(FORMATS)},
            "timestamp_granularities[]": {"type": "array", "items": {"type": "string", "enum": list(GRANULARITIES)},
                                          "description": "verbose_json: words[] with `word`; srt/vtt: word cues"},
            "stream": {"type": "boolean"}}}}))
async def transcribe(request: Request) -> Response:
    st = request.app.state.kombain
    limit = st.settings.max_upload_bytes
    length = request.headers.get("content-length")
    if length and length.isascii() and length.isdigit() and int(length) > limit + 64 * 1024:
        raise ApiError(413, f"upload of {length} bytes exceeds the limit of {limit} bytes", "file_too_large", "file")
    runtime = _runtime(request)
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
    model_aliases.check_name(form.get("model"), "whisper-1")  # any name: the served model
    fmt = str(form.get("response_format") or "json")
    if fmt not in FORMATS:
        raise ApiError(400, f"response_format must be one of {', '.join(FORMATS)}", "invalid_value", "response_format")
    language = str(form.get("language") or "") or None
    if language is not None and (len(language) > 8 or not language.isascii()
                                 or not language.replace("-", "").isalpha()):
        raise ApiError(400, "language must be an ISO-639-1 code such as 'en'", "invalid_value", "language")
    prompt = str(form.get("prompt") or "")[:2000] or None
    granularities = _granularities(form, fmt)
    stream = str(form.get("stream") or "false").lower() == "true"
    try:
        audio = await asyncio.to_thread(decode_audio_file, data)
    except BadAudioFile as exc:
        st.metrics.transcriptions_total.labels("bad_audio").inc()
        raise ApiError(400, str(exc), "invalid_audio", "file") from None
    options = DecodeOptions(language=language, prompt=prompt, beam_size=5,
                            timestamps=fmt in ("verbose_json", "srt", "vtt"), vad_filter=True,
                            word_timestamps="word" in granularities)
    if stream:
        return StreamingResponse(_sse(runtime, audio, options), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})
    try:
        result = await runtime.transcribe(audio, "offline", options)
    except RuntimeBusy as exc:
        raise ApiError(503, str(exc), "server_busy", headers={"Retry-After": "1"}) from None
    if options.word_timestamps:
        segments = await asyncio.to_thread(refine_word_times, st.services.stt.vad, audio, result.segments)
        result = dataclasses.replace(result, segments=segments)
    st.metrics.transcriptions_total.labels("ok").inc()
    return render(result, fmt, granularities)


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


async def _sse(runtime: WhisperRuntime, audio: Any, options: DecodeOptions) -> AsyncIterator[bytes]:
    """Server-sent events as OpenAI streams them: transcript.text.delta ..., transcript.text.done."""
    queue: asyncio.Queue[Segment] = asyncio.Queue(maxsize=10_000)  # segments of <= 4 h of audio
    job = asyncio.ensure_future(runtime.transcribe(audio, "offline", options, on_segment=queue.put_nowait))
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
