"""`POST /v1/audio/speech` (OpenAI-compatible, streamed) and `GET /v1/audio/voices`."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import Gauge
from pydantic import BaseModel, Field, ValidationError
from starlette.types import Receive, Scope, Send

from kombain.server import model_aliases, strict_json
from kombain.server.auth import require
from kombain.server.errors import ApiError
from kombain.server.openapi import AUTH_ERRORS, errors
from kombain.streaming.chunker import speakable
from kombain.streaming.encoders import FORMATS, AudioEncoder, PcmEncoder, WavEncoder, make_encoder
from kombain.streaming.tts import (
    MAX_SPEED,
    MIN_SPEED,
    Overloaded,
    SpeechStream,
    UnknownVoice,
    VoicePool,
)

log = logging.getLogger("kombain.speech")
router = APIRouter(tags=["speech"], dependencies=[Depends(require("voice"))], responses=errors(*AUTH_ERRORS))

# OpenAI's voice names: all spoken by the default voice, so OpenAI clients work unchanged.
OPENAI_VOICES = (
    "alloy", "ash", "ballad", "cedar", "coral", "echo", "fable", "marin", "nova", "onyx", "sage",
    "shimmer", "verse",
)
OUTPUT_RATE = 24000  # what OpenAI sends for every format ("pcm" is raw 24 kHz 16-bit mono)
_JSON_OVERHEAD = 16 * 1024  # body bytes allowed beyond the text itself
STREAM_FORMATS = ("audio", "sse")
SSE_DELTA_BYTES = 12 * 1024  # encoded audio per speech.audio.delta: 16 KiB of base64, a short line
# speech.audio.done usage is an estimate (Piper counts no tokens): text at 4 characters a token,
# audio at 20 tokens a second (what OpenAI documents for the audio its models speak).
CHARS_PER_TOKEN = 4
AUDIO_TOKENS_PER_SECOND = 20


class SpeechRequest(BaseModel):
    """Body of POST /v1/audio/speech, as OpenAI defines it."""

    model: str = Field("tts-1", description=f"any name (such as {', '.join(model_aliases.TTS_ALIASES)}): all use Piper")
    input: str = Field(..., description="text to speak (at most KOMBAIN_TTS_MAX_CHARS characters)")
    voice: str = Field(..., description='a voice id from GET /v1/audio/voices, or an OpenAI voice name (also as {"id": ...})')
    response_format: str = Field("mp3", description=f"one of {', '.join(FORMATS)}")
    speed: float = Field(1.0, description=f"{MIN_SPEED} to {MAX_SPEED}")
    instructions: str | None = Field(None, description="accepted for compatibility; ignored")
    stream_format: str = Field("audio", description="'audio' (the encoded audio as the body) or 'sse' "
                               "(speech.audio.delta events with base64 audio, then speech.audio.done)")


def _pool(request: Request) -> VoicePool:
    pool = request.app.state.kombain.services.tts
    if pool is None:
        raise ApiError(503, "speech synthesis is still loading; try again shortly", "model_not_ready", type_="server_error")
    return pool


@router.post(
    "/v1/audio/speech",
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": SpeechRequest.model_json_schema()}}}
    },
    responses={200: {"content": {t: {} for t in ("audio/mpeg", "audio/ogg", "audio/flac", "audio/wav", "audio/pcm",
                                                 "text/event-stream")}},
               **errors(400, 404, 413, 503)},
)
async def create_speech(request: Request) -> Response:
    """Speak `input`; audio streams back while the rest is still being synthesised."""
    st = request.app.state.kombain
    try:
        pool = _pool(request)
        body = await _parse(request, st.settings.tts_max_chars)
        stream = pool.stream(_voice_id(pool, body.voice), OUTPUT_RATE, body.speed)
        encoder = make_encoder(body.response_format, OUTPUT_RATE)
    except ApiError as exc:
        st.metrics.speech_requests_total.labels(str(exc.status)).inc()
        return exc.response()
    stream.push_text(body.input)
    stream.end_input()
    st.metrics.speech_requests_total.labels("200").inc()
    progress = _Progress()
    audio = _audio(stream, encoder, progress)
    if body.stream_format == "sse":
        return _SpeechResponse(_sse(audio, body.input, progress), stream, "text/event-stream",
                               st.metrics.tts_streams_active)
    return _SpeechResponse(audio, stream, encoder.content_type, st.metrics.tts_streams_active)


@router.get("/v1/audio/voices", responses=errors(503))
async def list_voices(request: Request) -> JSONResponse:
    """The voices POST /v1/audio/speech speaks with (a kombain extension; OpenAI has no such route).

    Each entry: `id` (pass it as `voice`), `language`, `sample_rate` (native; speech is sent at
    24 kHz), `quality`, `default`. `aliases` lists the OpenAI voice names, which all map to the
    default voice.
    """
    try:
        pool = _pool(request)
    except ApiError as exc:
        return exc.response()
    return JSONResponse({"object": "list", "data": voice_entries(pool), "aliases": list(OPENAI_VOICES)})


def voice_entries(pool: VoicePool) -> list[dict[str, Any]]:
    """One JSON object per voice, default first."""
    return [
        {
            "id": v.id, "object": "voice", "language": v.language, "sample_rate": v.sample_rate,
            "quality": v.quality, "default": v.id == pool.default_voice,
        }
        for v in pool.voices()
    ]


# --- request parsing ------------------------------------------------------------------------


async def _parse(request: Request, max_chars: int) -> SpeechRequest:
    limit = _JSON_OVERHEAD + 6 * max_chars  # a JSON \\uXXXX escape is 6 bytes per character
    declared = request.headers.get("content-length")
    if declared and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body too large (limit {limit} bytes)", "request_too_large")
    raw = bytearray()
    async for part in request.stream():
        raw += part
        if len(raw) > limit:
            raise ApiError(413, f"request body too large (limit {limit} bytes)", "request_too_large")
    try:
        data = strict_json.loads(raw)
    except strict_json.JsonInputError as exc:
        raise ApiError(400, f"request body: {exc}", exc.code) from None
    if not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object", "invalid_json")
    if isinstance(data.get("speed"), bool):  # pydantic's lax mode would read true as 1.0
        raise ApiError(400, "speed must be a number", "invalid_value", "speed")
    voice = data.get("voice")
    if isinstance(voice, dict) and isinstance(voice.get("id"), str):  # the SDK's custom-voice shape
        data["voice"] = voice["id"]
    if data.get("model") is None:  # absent and null both mean the default
        data.pop("model", None)
    try:
        body = SpeechRequest.model_validate(data, strict=False)
    except ValidationError as exc:
        err = exc.errors()[0]
        param = ".".join(str(p) for p in err["loc"]) or None
        raise ApiError(400, f"{param}: {err['msg']}", "invalid_value", param) from None
    model_aliases.check_name(body.model, "tts-1")  # any name: all are Piper
    if not speakable(body.input).strip():
        raise ApiError(400, "input is empty (or only control characters)", "string_too_short", "input")
    if len(body.input) > max_chars:
        raise ApiError(400, f"input is {len(body.input)} characters; the limit is {max_chars}", "string_above_max_length", "input")
    if body.response_format not in FORMATS:
        raise ApiError(400, f"unsupported response_format {body.response_format!r}; use one of {', '.join(FORMATS)}", "invalid_value", "response_format")
    if not MIN_SPEED <= body.speed <= MAX_SPEED:
        raise ApiError(400, f"speed must be between {MIN_SPEED} and {MAX_SPEED}", "invalid_value", "speed")
    if body.stream_format not in STREAM_FORMATS:
        raise ApiError(400, f"stream_format must be one of {', '.join(STREAM_FORMATS)}", "invalid_value", "stream_format")
    return body


def _voice_id(pool: VoicePool, voice: str) -> str:
    if voice.lower() in OPENAI_VOICES:
        return pool.default_voice
    try:
        return pool.resolve(voice)
    except UnknownVoice as exc:
        raise ApiError(400, str(exc), "invalid_value", "voice") from None


# --- streaming the audio --------------------------------------------------------------------


class _Progress:
    """What a response has spoken so far: seconds of audio, and whether all of it was spoken."""

    __slots__ = ("complete", "seconds")

    def __init__(self) -> None:
        self.seconds = 0.0
        self.complete = False


async def _audio(stream: SpeechStream, encoder: AudioEncoder, progress: _Progress) -> AsyncIterator[bytes]:
    """Encoded audio as it is synthesised; FFmpeg encoders run off the event loop."""
    inline = isinstance(encoder, PcmEncoder | WavEncoder)
    # FFmpeg encoders are not thread-safe: a client that disconnects mid-encode must not have the
    # encoder closed under the worker thread (that crashed the process in libavformat).
    lock = threading.Lock()

    def locked(fn: Callable[..., bytes | None], *args: Any) -> bytes | None:
        with lock:
            return fn(*args)

    finished = False
    try:
        async for chunk in stream:
            progress.seconds += chunk.duration
            data = encoder.encode(chunk.pcm) if inline else await asyncio.to_thread(locked, encoder.encode, chunk.pcm)
            if data:
                yield data
        tail = encoder.finish() if inline else await asyncio.to_thread(locked, encoder.finish)
        finished = True
        if tail:
            yield tail
        progress.complete = True
    except Overloaded:
        log.warning("speech synthesis overloaded; response cut short")
    finally:
        await stream.aclose()
        if not finished and hasattr(encoder, "close"):
            await asyncio.to_thread(locked, encoder.close)


async def _sse(audio: AsyncIterator[bytes], text: str, progress: _Progress) -> AsyncIterator[bytes]:
    """`stream_format: "sse"`: the same encoded audio as base64 `speech.audio.delta` events, then
    `speech.audio.done` with (estimated) usage. A response cut short ends without the done event."""
    try:
        async for data in audio:
            for i in range(0, len(data), SSE_DELTA_BYTES):
                piece = base64.b64encode(data[i:i + SSE_DELTA_BYTES]).decode("ascii")
                yield _event({"type": "speech.audio.delta", "audio": piece})
        if progress.complete:
            yield _event({"type": "speech.audio.done", "usage": usage(text, progress.seconds)})
    finally:
        aclose = getattr(audio, "aclose", None)
        if aclose is not None:  # stop synthesis and encoding now, not when the generator is collected
            await aclose()


def usage(text: str, seconds: float) -> dict[str, int]:
    """Token usage as OpenAI reports it, estimated: Piper counts no tokens (see AUDIO_TOKENS_PER_SECOND)."""
    input_tokens = max(1, math.ceil(len(text) / CHARS_PER_TOKEN))
    output_tokens = math.ceil(seconds * AUDIO_TOKENS_PER_SECOND)
    return {"input_tokens": input_tokens, "output_tokens": output_tokens, "total_tokens": input_tokens + output_tokens}


def _event(obj: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(obj)}\n\n".encode()


class _SpeechResponse(StreamingResponse):
    """A streamed body whose synthesis stops as soon as the response ends, however it ends."""

    def __init__(self, content: AsyncIterator[bytes], stream: SpeechStream, media_type: str, active: Gauge) -> None:
        super().__init__(content, media_type=media_type, headers={"Cache-Control": "no-store"})
        self._content = content
        self._speech = stream
        self._active = active

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._active.inc()
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._speech.cancel()  # a client that went away stops synthesis now
            aclose = getattr(self._content, "aclose", None)
            if aclose is not None:
                await aclose()
            self._active.dec()
