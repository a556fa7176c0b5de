"""The `info` answer to `describe`: what this node serves, read from its loaded services."""

from __future__ import annotations

from typing import Any

from kombain.server.services import Services
from kombain.server.settings import Settings

URL = "https://github.com/kombain/kombain"
_ATTRIBUTION = {"name": "kombain", "url": URL}
STT_ALIASES = ("whisper-1",)  # accepted as the model of a transcribe besides the served model's name
ASR_PROGRAM, TTS_PROGRAM, HANDLE_PROGRAM = "kombain-whisper", "kombain-piper", "kombain-conversation"


def _artifact(name: str, description: str, version: str | None = None, **more: Any) -> dict[str, Any]:
    return {"name": name, "attribution": _ATTRIBUTION, "installed": True, "description": description,
            "version": version, **more}


def asr_languages(runtime: Any) -> list[str]:
    """Languages the Whisper model takes: English only for `.en` models, else Whisper's list."""
    if not getattr(runtime, "multilingual", False):
        return ["en"]
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    return sorted(_LANGUAGE_CODES)


def describe(settings: Settings, services: Services, version: str) -> dict[str, Any]:
    """The `info` event's data: an asr program (the Whisper model), a tts program (every voice,
    streaming synthesis), a handle program (the configured responder)."""
    info: dict[str, Any] = {"asr": [], "tts": [], "handle": [], "intent": [], "wake": [], "mic": [], "snd": []}
    runtime = services.stt.whisper if services.stt is not None else None
    if runtime is not None:
        from kombain.streaming.stt_engine import describe as describe_engine

        model = _artifact(runtime.name, describe_engine(runtime), languages=asr_languages(runtime))
        info["asr"].append(_artifact(ASR_PROGRAM, "kombain speech to text", version, models=[model],
                                     supports_transcript_streaming=True, requires_external_vad=True))
    pool = services.tts
    if pool is not None:
        voices = [_artifact(v.id, f"Piper {v.id} ({v.quality}, {v.sample_rate} Hz)", languages=[v.language],
                            speakers=None) for v in pool.voices()]
        info["tts"].append(_artifact(TTS_PROGRAM, "kombain text to speech", version, voices=voices,
                                     supports_synthesize_streaming=True))
    if settings.responder:
        languages = asr_languages(runtime) if runtime is not None else ["en"]
        model = _artifact(settings.responder, f"kombain's {settings.responder} responder", languages=languages)
        info["handle"].append(_artifact(HANDLE_PROGRAM, "kombain conversation", version, models=[model],
                                        supports_handled_streaming=True, supports_home_control=False))
    return info


def program_names(info: dict[str, Any]) -> set[str]:
    return {p["name"] for kind in ("asr", "tts", "handle") for p in info[kind]}
