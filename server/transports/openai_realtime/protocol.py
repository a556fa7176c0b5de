"""OpenAI Realtime event protocol, sans I/O: parse client events, build server events.

Accepts both the GA shape (`session.audio.input.format = {"type": "audio/pcm", "rate": 24000}`) and
the beta shape (`input_audio_format = "pcm16"`), and `transcription_session.update`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from kombain.server import strict_json
from kombain.server.ids import new_id
from kombain.streaming.audio import AudioFormat, AudioFormatError
from kombain.streaming.endpointer import EAGERNESS_MAX_MS, TurnDetection
from kombain.streaming.responders import Tool


class ProtocolError(ValueError):
    """A client event we cannot act on; becomes an `error` event, the session goes on."""

    def __init__(self, message: str, code: str = "invalid_request_error", param: str | None = None,
                 event_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.param = param
        self.event_id = event_id


# Beta format names, plus our documented extensions for other PCM rates.
_BETA_FORMATS = {
    "pcm16": AudioFormat("pcm16", 24000),
    "g711_ulaw": AudioFormat("mulaw", 8000),
    "g711_alaw": AudioFormat("alaw", 8000),
    "pcm16_8000": AudioFormat("pcm16", 8000),
    "pcm16_16000": AudioFormat("pcm16", 16000),
    "pcm16_22050": AudioFormat("pcm16", 22050),
    "pcm16_24000": AudioFormat("pcm16", 24000),
    "pcm16_48000": AudioFormat("pcm16", 48000),
}
_GA_TYPES = {"audio/pcm": "pcm16", "audio/pcmu": "mulaw", "audio/pcma": "alaw"}


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """What a session is set to; changed by session.update, reported in session.created/updated."""

    kind: str = "realtime"  # "realtime" (conversation) or "transcription"
    input_format: AudioFormat = AudioFormat("pcm16", 24000)
    output_format: AudioFormat = AudioFormat("pcm16", 24000)
    transcription_model: str = "whisper-1"
    language: str | None = None
    prompt: str | None = None
    turn_detection: TurnDetection | None = field(default_factory=TurnDetection)
    instructions: str = ""
    voice: str = "alloy"
    create_response: bool = True  # reply automatically after each turn (server VAD)
    interrupt_response: bool = True  # barge-in: the caller's speech stops the reply
    interrupt_min_speech_ms: int = 0  # extension: speech shorter than this only pauses the reply
    interrupt_min_words: int = 0  # extension: words (not backchannels) needed before a cancel
    beta_names: bool = False  # the client spoke the beta dialect; answer in it
    modalities: tuple[str, ...] = ("audio",)  # output_modalities: ("audio",) or ("text",)
    tools: tuple[Tool, ...] = ()
    tool_choice: str = "auto"  # auto | none | required | function (then tool_name)
    tool_name: str | None = None
    max_output_tokens: int | None = None  # None: "inf"
    idle_timeout_ms: int | None = None  # server_vad: reply after this long without the caller speaking
    word_timestamps: bool = False  # extension: transcription.kombain_word_timestamps
    speaker_labels: bool = False  # extension: transcription.kombain_speaker_labels


def parse_event(raw: str | bytes, max_bytes: int) -> dict[str, Any]:
    """One client event: a JSON object with a string `type`, bounded in size and nesting depth."""
    # Characters are a lower bound on bytes: only encode when the count alone does not decide.
    size = len(raw) if isinstance(raw, bytes) or len(raw) > max_bytes or raw.isascii() \
        else len(raw.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise ProtocolError(f"message of {size} bytes exceeds the limit of {max_bytes}", "message_too_large")
    try:
        event = strict_json.loads(raw)
    except strict_json.JsonInputError as exc:
        raise ProtocolError(str(exc), exc.code) from None
    if not isinstance(event, dict):
        raise ProtocolError("an event must be a JSON object", "invalid_event")
    if not isinstance(event.get("type"), str):
        raise ProtocolError("an event needs a string 'type'", "invalid_event", "type", _event_id(event))
    eid = event.get("event_id")
    if eid is not None and not (isinstance(eid, str) and len(eid) <= _MAX_EVENT_ID):
        # It is echoed in error events: only a short string may come back.
        raise ProtocolError(f"event_id must be a string of at most {_MAX_EVENT_ID} characters", "invalid_value",
                            "event_id")
    return event


_MAX_EVENT_ID = 256


def _event_id(event: dict[str, Any]) -> str | None:
    eid = event.get("event_id")
    return eid if isinstance(eid, str) else None


def decode_audio_b64(event: dict[str, Any]) -> bytes:
    data = event.get("audio")
    if not isinstance(data, str):
        raise ProtocolError("input_audio_buffer.append needs 'audio' as a base64 string", "invalid_value", "audio", _event_id(event))
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("'audio' is not valid base64", "invalid_audio", "audio", _event_id(event)) from None


def _format(value: Any, param: str) -> AudioFormat:
    try:
        if isinstance(value, str):
            if value not in _BETA_FORMATS:
                raise ProtocolError(
                    f"unsupported audio format {value!r}; use one of {', '.join(_BETA_FORMATS)}", "invalid_value", param
                )
            return _BETA_FORMATS[value]
        if isinstance(value, dict):
            kind = value.get("type", "")
            # A list or object here is unhashable: it must be an error event, not a TypeError.
            encoding = _GA_TYPES.get(kind) if isinstance(kind, str) else None
            if encoding is None:
                raise ProtocolError(
                    f"unsupported audio format type {value.get('type')!r}; use audio/pcm, audio/pcmu or audio/pcma",
                    "invalid_value", param,
                )
            rate = value.get("rate", 24000 if encoding == "pcm16" else 8000)
            if isinstance(rate, bool) or not isinstance(rate, int):
                raise ProtocolError("audio format 'rate' must be an integer", "invalid_value", param)
            return AudioFormat(encoding, rate)
    except AudioFormatError as exc:
        raise ProtocolError(str(exc), "invalid_value", param) from None
    raise ProtocolError("audio format must be a string or an object", "invalid_value", param)


def _turn_flags(cfg: SessionConfig, value: Any, param: str) -> SessionConfig:
    if not isinstance(value, dict):
        return cfg
    flags = {}
    for key in ("create_response", "interrupt_response"):
        if key in value:
            if not isinstance(value[key], bool):
                raise ProtocolError(f"turn_detection.{key} must be true or false", "invalid_value", param)
            flags[key] = value[key]
    return replace(cfg, **flags)


def _turn_detection(value: Any, current: TurnDetection | None, param: str) -> TurnDetection | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ProtocolError("turn_detection must be an object or null", "invalid_value", param)
    kind = value.get("type", "server_vad")
    if kind not in ("server_vad", "semantic_vad"):
        raise ProtocolError(f"unsupported turn_detection type {kind!r}; use server_vad or semantic_vad",
                            "invalid_value", f"{param}.type")
    base = current or TurnDetection()
    if kind == "semantic_vad":
        eagerness = value.get("eagerness", base.eagerness if base.semantic else "auto")
        if not isinstance(eagerness, str) or eagerness not in EAGERNESS_MAX_MS:
            raise ProtocolError(f"unsupported eagerness {eagerness!r}; use low, medium, high or auto",
                                "invalid_value", f"{param}.eagerness")
        for key in ("silence_duration_ms", "threshold", "prefix_padding_ms"):
            if key in value:  # OpenAI's semantic_vad takes none of these
                raise ProtocolError(f"turn_detection.{key} is not a semantic_vad setting", "invalid_value",
                                    f"{param}.{key}")
        return TurnDetection.semantic_vad(eagerness, threshold=base.threshold,
                                          prefix_padding_ms=base.prefix_padding_ms, min_speech_ms=base.min_speech_ms)
    if "eagerness" in value:
        raise ProtocolError("turn_detection.eagerness is a semantic_vad setting", "invalid_value", f"{param}.eagerness")
    was_semantic = base.semantic
    try:
        return TurnDetection(
            threshold=_number(value, "threshold", base.threshold, param),
            silence_ms=int(_number(value, "silence_duration_ms", 500 if was_semantic else base.silence_ms, param)),
            prefix_padding_ms=int(_number(value, "prefix_padding_ms", base.prefix_padding_ms, param)),
            min_speech_ms=base.min_speech_ms,
        )
    except ProtocolError:
        raise
    except ValueError as exc:  # out of range: the message starts with the field's name
        key = str(exc).split(" ", 1)[0].removeprefix("turn_detection.")
        where = f"{param}.{key}" if key in ("threshold", "silence_duration_ms", "prefix_padding_ms") else param
        raise ProtocolError(f"invalid turn_detection: {exc}", "invalid_value", where) from None


IDLE_TIMEOUT_MS = (1000, 300_000)


def _idle_timeout(value: Any, cfg: SessionConfig, param: str) -> int | None:
    """server_vad's `idle_timeout_ms`: null (off) or a whole number of milliseconds."""
    if not isinstance(value, dict) or cfg.turn_detection is None:
        return None
    if value.get("type", "server_vad") != "server_vad":
        if value.get("idle_timeout_ms") is not None:
            raise ProtocolError("turn_detection.idle_timeout_ms is a server_vad setting", "invalid_value",
                                f"{param}.idle_timeout_ms")
        return None
    ms = value.get("idle_timeout_ms", cfg.idle_timeout_ms)
    low, high = IDLE_TIMEOUT_MS
    if ms is not None and (isinstance(ms, bool) or not isinstance(ms, int) or not low <= ms <= high):
        raise ProtocolError(f"turn_detection.idle_timeout_ms must be null or an integer from {low} to {high}",
                            "invalid_value", f"{param}.idle_timeout_ms")
    return ms


def _number(value: dict[str, Any], key: str, default: float, param: str) -> float:
    v = value.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int | float) or v != v or v in (float("inf"), float("-inf")):
        raise ProtocolError(f"turn_detection.{key} must be a finite number", "invalid_value", f"{param}.{key}")
    return float(v)


def _interruption(cfg: SessionConfig, value: Any, param: str) -> SessionConfig:
    """kombain extensions: what it takes for the caller's speech to cancel a reply."""
    if not isinstance(value, dict):
        return cfg
    out: dict[str, Any] = {}
    for key, field_name, top in (("kombain_interrupt_min_speech_ms", "interrupt_min_speech_ms", 5000),
                                 ("kombain_interrupt_min_words", "interrupt_min_words", 20)):
        if key in value:
            v = value[key]
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= top:
                raise ProtocolError(f"turn_detection.{key} must be an integer from 0 to {top}", "invalid_value",
                                    f"{param}.{key}")
            out[field_name] = v
    return replace(cfg, **out)


def _transcription(value: Any, cfg: SessionConfig, param: str) -> SessionConfig:
    if value is None:
        return cfg
    if not isinstance(value, dict):
        raise ProtocolError("transcription settings must be an object", "invalid_value", param)
    language = value.get("language", cfg.language)
    prompt = value.get("prompt", cfg.prompt)
    if language is not None and not isinstance(language, str) or prompt is not None and not isinstance(prompt, str):
        raise ProtocolError("transcription language and prompt must be strings", "invalid_value", param)
    if prompt and len(prompt) > 2000:
        raise ProtocolError("transcription prompt is longer than 2000 characters", "invalid_value", param)
    model = value.get("model", cfg.transcription_model)
    if not isinstance(model, str) or len(model) > 200:
        raise ProtocolError("transcription model must be a string", "invalid_value", f"{param}.model")
    if language is not None and len(language) > 32:
        raise ProtocolError("transcription language must be a language code", "invalid_value", f"{param}.language")
    words = value.get("kombain_word_timestamps", cfg.word_timestamps)
    if not isinstance(words, bool):
        raise ProtocolError("transcription.kombain_word_timestamps must be true or false", "invalid_value",
                            f"{param}.kombain_word_timestamps")
    speakers = value.get("kombain_speaker_labels", cfg.speaker_labels)
    if not isinstance(speakers, bool):
        raise ProtocolError("transcription.kombain_speaker_labels must be true or false", "invalid_value",
                            f"{param}.kombain_speaker_labels")
    return replace(cfg, transcription_model=model, language=language or None, prompt=prompt or None,
                   word_timestamps=words, speaker_labels=speakers)


def _set_voice(cfg: SessionConfig, value: Any, param: str) -> SessionConfig:
    return replace(cfg, voice=value) if isinstance(value, str) else cfg


def _set_turn_detection(cfg: SessionConfig, value: Any, param: str) -> SessionConfig:
    cfg = replace(cfg, turn_detection=_turn_detection(value, cfg.turn_detection, param))
    cfg = replace(cfg, idle_timeout_ms=_idle_timeout(value, cfg, param))
    return _interruption(_turn_flags(cfg, value, param), value, param)


_APPLY: dict[str, Callable[[SessionConfig, Any, str], SessionConfig]] = {
    "input_format": lambda cfg, v, p: replace(cfg, input_format=_format(v, p)),
    "output_format": lambda cfg, v, p: replace(cfg, output_format=_format(v, p)),
    "transcription": lambda cfg, v, p: _transcription(v, cfg, p),
    "turn_detection": _set_turn_detection,
    "voice": _set_voice,
}
_BETA_KEYS = (("input_format", "input_audio_format"), ("output_format", "output_audio_format"),
              ("transcription", "input_audio_transcription"), ("turn_detection", "turn_detection"),
              ("voice", "voice"))
_GA_INPUT_KEYS = (("input_format", "format"), ("transcription", "transcription"),
                  ("turn_detection", "turn_detection"))
_GA_OUTPUT_KEYS = (("output_format", "format"), ("voice", "voice"))


def apply_session_update(cfg: SessionConfig, session: Any, event_type: str) -> SessionConfig:
    """Return the config after a session.update / transcription_session.update payload."""
    if not isinstance(session, dict):
        raise ProtocolError("'session' must be an object", "invalid_value", "session")
    beta = event_type == "transcription_session.update" or any(
        k in session for k in ("input_audio_format", "input_audio_transcription", "modalities")
    )
    if event_type == "transcription_session.update":
        cfg = replace(cfg, kind="transcription")
    if "type" in session:
        if session["type"] not in ("realtime", "transcription"):
            raise ProtocolError("session.type must be 'realtime' or 'transcription'", "invalid_value", "session.type")
        cfg = replace(cfg, kind=session["type"])
    cfg = replace(cfg, beta_names=beta or cfg.beta_names)
    if isinstance(session.get("instructions"), str):
        cfg = replace(cfg, instructions=session["instructions"][:20000])
    audio = session.get("audio")
    if audio is not None and not isinstance(audio, dict):
        raise ProtocolError("session.audio must be an object", "invalid_value", "session.audio")
    inp = (audio or {}).get("input") or {}
    out = (audio or {}).get("output") or {}
    if not isinstance(inp, dict) or not isinstance(out, dict):
        raise ProtocolError("session.audio.input/output must be objects", "invalid_value", "session.audio")
    # The same settings live at a beta key and at a GA path; beta first, as clients send one or the other.
    places = [(setting, session, key, f"session.{key}") for setting, key in _BETA_KEYS]
    places += [(setting, inp, key, f"session.audio.input.{key}") for setting, key in _GA_INPUT_KEYS]
    places += [(setting, out, key, f"session.audio.output.{key}") for setting, key in _GA_OUTPUT_KEYS]
    for setting, where, key, param in places:
        if key in where:
            cfg = _APPLY[setting](cfg, where[key], param)
    return _apply_response_settings(cfg, session)


def _apply_response_settings(cfg: SessionConfig, session: dict[str, Any]) -> SessionConfig:
    """Tools, tool_choice, output modalities and the token limit of the session's responses."""
    from kombain.server.transports.openai_realtime import items  # items imports this module

    if session.get("tools") is not None:
        cfg = replace(cfg, tools=items.parse_tools(session["tools"], "session.tools"))
        if cfg.tool_name is not None and not any(t.name == cfg.tool_name for t in cfg.tools):
            cfg = replace(cfg, tool_choice="auto", tool_name=None)
    if session.get("tool_choice") is not None:
        choice, name = items.parse_tool_choice(session["tool_choice"], "session.tool_choice", cfg.tools)
        cfg = replace(cfg, tool_choice=choice, tool_name=name)
    modalities = session.get("output_modalities", session.get("modalities"))
    if modalities is not None:
        if modalities in (["audio", "text"], ["text", "audio"]):
            modalities = ["audio"]  # the beta pair means speech with its transcript
        cfg = replace(cfg, modalities=items.parse_modalities(modalities, "session.output_modalities"))
    limit = session.get("max_output_tokens", session.get("max_response_output_tokens"))
    if limit is not None:
        cfg = replace(cfg, max_output_tokens=items.parse_max_tokens(limit, "session.max_output_tokens"))
    return cfg


def _tools_out(cfg: SessionConfig) -> dict[str, Any]:
    choice: Any = cfg.tool_choice if cfg.tool_name is None else {"type": "function", "name": cfg.tool_name}
    return {"tools": [{"type": "function", "name": t.name, "description": t.description, "parameters": t.parameters}
                      for t in cfg.tools],
            "tool_choice": choice,
            "max_output_tokens" if not cfg.beta_names else "max_response_output_tokens":
                cfg.max_output_tokens if cfg.max_output_tokens is not None else "inf"}


def _format_out(fmt: AudioFormat, beta: bool) -> Any:
    if beta:
        if fmt.encoding == "mulaw":
            return "g711_ulaw"
        if fmt.encoding == "alaw":
            return "g711_alaw"
        return "pcm16" if fmt.rate == 24000 else f"pcm16_{fmt.rate}"
    if fmt.encoding == "pcm16":
        return {"type": "audio/pcm", "rate": fmt.rate}
    return {"type": "audio/pcmu" if fmt.encoding == "mulaw" else "audio/pcma"}


def _turn_out(cfg: SessionConfig) -> dict[str, Any] | None:
    td = cfg.turn_detection
    if td is None:
        return None
    ext = {"kombain_interrupt_min_speech_ms": cfg.interrupt_min_speech_ms,
           "kombain_interrupt_min_words": cfg.interrupt_min_words}
    if td.semantic:
        return {"type": "semantic_vad", "eagerness": td.eagerness, "create_response": cfg.create_response,
                "interrupt_response": cfg.interrupt_response, **ext}
    return {"type": "server_vad", "threshold": td.threshold, "prefix_padding_ms": td.prefix_padding_ms,
            "silence_duration_ms": td.silence_ms, "idle_timeout_ms": cfg.idle_timeout_ms,
            "create_response": cfg.create_response,
            "interrupt_response": cfg.interrupt_response, **ext}


def session_object(session_id: str, cfg: SessionConfig, model: str) -> dict[str, Any]:
    """The session as OpenAI reports it, in the dialect the client speaks."""
    transcription: dict[str, Any] = {"model": cfg.transcription_model, "language": cfg.language,
                                     "prompt": cfg.prompt or ""}
    if cfg.word_timestamps:  # an extension is reported only to a session that asked for it
        transcription["kombain_word_timestamps"] = True
    if cfg.speaker_labels:
        transcription["kombain_speaker_labels"] = True
    if cfg.beta_names:
        return {
            "id": session_id, "object": "realtime.session" if cfg.kind == "realtime" else "realtime.transcription_session",
            "model": model, "modalities": ["audio", "text"] if cfg.kind == "realtime" else ["text"],
            "input_audio_format": _format_out(cfg.input_format, True),
            "output_audio_format": _format_out(cfg.output_format, True),
            "input_audio_transcription": transcription, "turn_detection": _turn_out(cfg),
            "instructions": cfg.instructions, "voice": cfg.voice, **_tools_out(cfg),
        }
    audio: dict[str, Any] = {"input": {"format": _format_out(cfg.input_format, False), "transcription": transcription,
                                       "turn_detection": _turn_out(cfg), "noise_reduction": None}}
    if cfg.kind == "realtime":
        audio["output"] = {"format": _format_out(cfg.output_format, False), "voice": cfg.voice, "speed": 1.0}
    out = {"type": cfg.kind, "object": "realtime.session", "id": session_id, "model": model,
           "output_modalities": list(cfg.modalities) if cfg.kind == "realtime" else ["text"],
           "instructions": cfg.instructions, "audio": audio}
    if cfg.kind == "realtime":
        out.update(_tools_out(cfg))
    return out


def server_event(type_: str, **fields: Any) -> dict[str, Any]:
    return {"event_id": new_id("event"), "type": type_, **fields}


def error_event(message: str, code: str, param: str | None = None, event_id: str | None = None,
                type_: str = "invalid_request_error") -> dict[str, Any]:
    return server_event("error", error={"type": type_, "code": code, "message": message, "param": param,
                                        "event_id": event_id})
