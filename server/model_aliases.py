"""The model names the OpenAI-compatible REST entries accept, and what each one is served by.

Client libraries send their own default names (pipecat `gpt-transcribe` and `gpt-4o-mini-tts`,
livekit `gpt-4o-mini-transcribe` and `gpt-4o-mini-tts`, OpenAI's examples `whisper-1` and
`tts-1`) and every release brings new ones. kombain serves one speech recogniser (the Whisper
model it was started with) and one synthesiser (Piper), so any name is accepted and means that
model: the names below are the ones `GET /v1/models` lists, each with `served_by`; any other
well-formed name works the same way. A name only bounds what it may be (`check_name`).
"""

from __future__ import annotations

from typing import Any

from kombain.server.errors import ApiError

# Transcription: every name is transcribed by the served Whisper model. The diarize names also
# ask for speaker labels (server/transcriptions.py DIARIZE_MODELS); the others differ only in name.
STT_ALIASES = (
    "whisper-1",
    "gpt-4o-transcribe",
    "gpt-4o-mini-transcribe",
    "gpt-transcribe",
    "gpt-4o-transcribe-diarize",
    "kombain-diarize",
)
# Speech: every name is spoken by Piper with the voice the request names.
TTS_ALIASES = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts", "piper")
TTS_SERVED_BY = "piper"
MAX_NAME_CHARS = 256


def check_name(value: object, default: str) -> str:
    """The `model` a request named (`default` when absent or empty); a 400 for a name that is no
    short printable string. Any such name is accepted: it is not looked up."""
    if value is None or value == "":
        return default
    if not isinstance(value, str):
        raise ApiError(400, "model must be a string", "invalid_value", "model")
    if len(value) > MAX_NAME_CHARS or not value.isprintable() or not value.strip():
        raise ApiError(400, f"model must be 1 to {MAX_NAME_CHARS} printable characters", "invalid_value", "model")
    return value


def entries(stt_name: str | None, voice_ids: list[str] | None, created: int) -> list[dict[str, Any]]:
    """`GET /v1/models` data: the served STT model and its aliases (when it is loaded), the speech
    names and one `piper/<voice>` entry per voice (when the voices are loaded)."""
    data: list[dict[str, Any]] = []
    if stt_name is not None:
        data.append(_entry(stt_name, "transcription", stt_name, created))
        data += [_entry(a, "transcription", stt_name, created) for a in STT_ALIASES if a != stt_name]
    if voice_ids is not None:
        data += [_entry(a, "speech", TTS_SERVED_BY, created) for a in TTS_ALIASES]
        data += [_entry(f"piper/{v}", "voice", TTS_SERVED_BY, created) for v in voice_ids]
    return data


def _entry(model_id: str, kind: str, served_by: str, created: int) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": "kombain",
            "kind": kind, "served_by": served_by}
