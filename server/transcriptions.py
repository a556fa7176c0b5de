"""OpenAI-compatible `POST /v1/audio/transcriptions` and `GET /v1/models`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.datastructures import UploadFile

from kombain.server.auth import require
from kombain.server.errors import ApiError
from kombain.server.openapi import AUTH_ERRORS, errors, request_body
from kombain.streaming.decode_file import BadAudioFile, decode_audio_file
from kombain.streaming.whisper_runtime import (
    DecodeOptions,
    DecodeResult,
    RuntimeBusy,
    Segment,
    WhisperRuntime,
)

router = APIRouter(dependencies=[Depends(require("voice"))], tags=["audio"], responses=errors(*AUTH_ERRORS))

STT_ALIASES = ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe")
_FORMATS = ("json", "text", "verbose_json", "srt", "vtt")


def _runtime(request: Request) -> WhisperRuntime:
    st = request.app.state.kombain
    if not st.ready.is_set():
        raise ApiError(503, "the server is still loading models; retry shortly", "server_not_ready",
                       headers={"Retry-After": "2"})
    return st.services["whisper"]  # type: ignore[no-any-return]


@router.post("/v1/audio/transcriptions", response_model=None, responses={
    200: {"content": {"application/json": {}, "text/plain": {}, "text/event-stream": {}},
          "description": "The transcript: JSON (json, verbose_json), text (text, srt, vtt) or, with stream, events"},
    **errors(400, 413, 503)}, openapi_extra=request_body({"multipart/form-data": {
        "type": "object", "required": ["file"], "properties": {
            "file": {"type": "string", "format": "binary", "description": "Audio: WAV, FLAC, MP3, Ogg, WebM, M4A..."},
            "model": {"type": "string", "description": "whisper-1 or the served model's name"},
            "language": {"type": "string", "description": "ISO-639-1, e.g. en"},
            "prompt": {"type": "string"},
            "response_format": {"type": "string", "enum": list(_FORMATS)},
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
    model = str(form.get("model") or "whisper-1")
    if model not in (*STT_ALIASES, runtime.name):
        raise ApiError(400, f"model {model!r} is not served here; use {runtime.name!r} or whisper-1", "model_not_found", "model")
    fmt = str(form.get("response_format") or "json")
    if fmt not in _FORMATS:
        raise ApiError(400, f"response_format must be one of {', '.join(_FORMATS)}", "invalid_value", "response_format")
    language = str(form.get("language") or "") or None
    if language is not None and (len(language) > 8 or not language.isascii()
                                 or not language.replace("-", "").isalpha()):
        raise ApiError(400, "language must be an ISO-639-1 code such as 'en'", "invalid_value", "language")
    prompt = str(form.get("prompt") or "")[:2000] or None
    stream = str(form.get("stream") or "false").lower() == "true"
    try:
        audio = await asyncio.to_thread(decode_audio_file, data)
    except BadAudioFile as exc:
        st.metrics.transcriptions_total.labels("bad_audio").inc()
        raise ApiError(400, str(exc), "invalid_audio", "file") from None
    options = DecodeOptions(language=language, prompt=prompt, beam_size=5,
                            timestamps=fmt in ("verbose_json", "srt", "vtt"), vad_filter=True)
    if stream:
        return StreamingResponse(_sse(runtime, audio, options), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})
    try:
        result = await runtime.transcribe(audio, "offline", options)
    except RuntimeBusy as exc:
        raise ApiError(503, str(exc), "server_busy", headers={"Retry-After": "1"}) from None
    st.metrics.transcriptions_total.labels("ok").inc()
    return _render(result, fmt)


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


def _render(result: DecodeResult, fmt: str) -> Response:
    if fmt == "json":
        return JSONResponse({"text": result.text, "usage": {"type": "duration", "seconds": round(result.duration, 3)}})
    if fmt == "text":
        return PlainTextResponse(result.text + "\n")
    if fmt == "verbose_json":
        return JSONResponse({
            "task": "transcribe", "language": result.language, "duration": round(result.duration, 3),
            "text": result.text,
            "segments": [
                {"id": i, "seek": 0, "start": round(s.start, 3), "end": round(s.end, 3), "text": s.text, "tokens": [],
                 "temperature": 0.0, "avg_logprob": s.avg_logprob, "compression_ratio": s.compression_ratio,
                 "no_speech_prob": s.no_speech_prob}
                for i, s in enumerate(result.segments)
            ],
        })
    if fmt == "srt":
        blocks = [f"{i}\n{_ts(s.start, ',')} --> {_ts(s.end, ',')}\n{s.text}\n" for i, s in enumerate(result.segments, 1)]
        return PlainTextResponse("\n".join(blocks), media_type="application/x-subrip")
    blocks = [f"{_ts(s.start, '.')} --> {_ts(s.end, '.')}\n{s.text}\n" for s in result.segments]
    return PlainTextResponse("WEBVTT\n\n" + "\n".join(blocks), media_type="text/vtt")


def _ts(seconds: float, sep: str) -> str:
    ms = int(round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"
