"""Wyoming events on the wire, sans I/O: bytes in, typed requests out; events to bytes.

An event is one line of JSON (`type`, optional `data`, `data_length`, `payload_length`), then
`data_length` bytes of JSON merged into `data`, then `payload_length` bytes of payload (audio).
Every length a peer sends is bounded here, where it is parsed (`Limits`); a frame that breaks
the framing raises `FramingError` (the stream cannot be resynchronised: the connection ends),
an event with missing or wrong-typed data raises `BadEvent` (answered with an `error` event).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

VERSION = "1.8.0"  # the Wyoming protocol version this server speaks (written into each event)


@dataclass(frozen=True, slots=True)
class Limits:
    """Largest header line, data section and payload accepted, in bytes; longest text in characters."""

    line: int = 64 * 1024
    data: int = 256 * 1024
    payload: int = 1024 * 1024
    text: int = 20_000


class FramingError(ValueError):
    """The byte stream is not Wyoming events (or breaks a limit): the connection cannot go on."""

    def __init__(self, message: str, code: str = "bad_frame") -> None:
        super().__init__(message)
        self.code = code


class BadEvent(ValueError):
    """A well-framed event whose data is missing or of the wrong type: answered, not fatal."""

    def __init__(self, message: str, code: str = "bad_event") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Event:
    type: str
    data: dict[str, Any]
    payload: bytes = b""


class WyomingProtocol:
    """Feed bytes as they arrive; get every complete event. Bounded: no length a peer sends is
    trusted past `limits`."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._buf = bytearray()
        self._header: dict[str, Any] | None = None
        self._data_len = 0
        self._payload_len = 0

    def feed(self, data: bytes) -> list[Event]:
        self._buf += data
        out: list[Event] = []
        while True:
            if self._header is None:
                end = self._buf.find(b"\n")
                if end < 0:
                    if len(self._buf) > self.limits.line:
                        raise FramingError(f"event header longer than {self.limits.line} bytes", "frame_too_large")
                    return out
                if end > self.limits.line:
                    raise FramingError(f"event header longer than {self.limits.line} bytes", "frame_too_large")
                line = bytes(self._buf[:end])
                del self._buf[:end + 1]
                if not line.strip():
                    continue  # a blank line between events is harmless
                self._header = self._parse_header(line)
            need = self._data_len + self._payload_len
            if len(self._buf) < need:
                return out
            header, self._header = self._header, None
            fields = dict(header.get("data") or {})
            if self._data_len:
                fields.update(_json_object(bytes(self._buf[:self._data_len]), "data section"))
            payload = bytes(self._buf[self._data_len:need])
            del self._buf[:need]
            out.append(Event(header["type"], fields, payload))

    def _parse_header(self, line: bytes) -> dict[str, Any]:
        header = _json_object(line, "event header")
        kind = header.get("type")
        if not isinstance(kind, str) or not kind or len(kind) > 64:
            raise FramingError("an event header needs a 'type' string (at most 64 characters)")
        if "data" in header and header["data"] is not None and not isinstance(header["data"], dict):
            raise FramingError("an event's 'data' must be a JSON object")
        self._data_len = _length(header, "data_length", self.limits.data)
        self._payload_len = _length(header, "payload_length", self.limits.payload)
        return header


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        raise FramingError(f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise FramingError(f"{what} is not a JSON object")
    return value


def _length(header: dict[str, Any], key: str, limit: int) -> int:
    value = header.get(key)
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise FramingError(f"{key} must be a non-negative integer")
    if value > limit:
        raise FramingError(f"{key} {value} is over the limit of {limit} bytes", "frame_too_large")
    return value


def encode(kind: str, data: dict[str, Any] | None = None, payload: bytes = b"") -> bytes:
    """One event as bytes, framed as the `wyoming` library writes it (data in its own section)."""
    header: dict[str, Any] = {"type": kind, "version": VERSION}
    body = json.dumps(data, ensure_ascii=False).encode() if data else b""
    if body:
        header["data_length"] = len(body)
    if payload:
        header["payload_length"] = len(payload)
    return json.dumps(header).encode() + b"\n" + body + payload


def error(text: str, code: str) -> bytes:
    return encode("error", {"text": text, "code": code})


# --- audio ------------------------------------------------------------------------------------

MIN_RATE, MAX_RATE = 1000, 192_000
MAX_CHANNELS = 8


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """Signed little-endian PCM: `width` bytes a sample (1-4), `channels` interleaved."""

    rate: int
    width: int
    channels: int

    @property
    def frame_bytes(self) -> int:
        return self.width * self.channels

    def to_mono_float(self, pcm: bytes) -> np.ndarray:
        """float32 mono samples in [-1, 1) (channels averaged). Raises BadEvent on a partial frame."""
        if len(pcm) % self.frame_bytes:
            raise BadEvent(f"audio of {len(pcm)} bytes is not whole frames of {self.frame_bytes} bytes "
                           f"(width {self.width}, channels {self.channels})", "bad_audio")
        if self.width == 3:
            raw = np.frombuffer(pcm, np.uint8).reshape(-1, 3).astype(np.int32)
            ints = (raw[:, 0] | (raw[:, 1] << 8) | (raw[:, 2] << 16)) << 8 >> 8  # sign-extend 24 bits
            samples = ints.astype(np.float32) / float(1 << 23)
        else:
            dtype = {1: "<i1", 2: "<i2", 4: "<i4"}[self.width]
            samples = np.frombuffer(pcm, dtype).astype(np.float32) / float(1 << (8 * self.width - 1))
        if self.channels > 1:
            samples = samples.reshape(-1, self.channels).mean(axis=1)
        return samples.astype(np.float32, copy=False)


def audio_format(data: dict[str, Any]) -> AudioFormat:
    """The format an audio-start or audio-chunk names; BadEvent if it is missing or impossible."""
    values = []
    for key, lo, hi in (("rate", MIN_RATE, MAX_RATE), ("width", 1, 4), ("channels", 1, MAX_CHANNELS)):
        v = data.get(key)
        if not isinstance(v, int) or isinstance(v, bool):
            raise BadEvent(f"audio needs an integer '{key}'", "bad_audio_format")
        if not lo <= v <= hi:
            raise BadEvent(f"audio {key} {v} is not supported ({lo} to {hi})", "bad_audio_format")
        values.append(v)
    return AudioFormat(*values)


# --- requests ---------------------------------------------------------------------------------

def text_field(event: Event, key: str, limits: Limits, *, required: bool = True) -> str | None:
    """A string field of an event's data, bounded; BadEvent if missing (when required) or not a string."""
    value = event.data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise BadEvent(f"'{event.type}' needs a string '{key}'", "bad_event")
    if len(value) > limits.text:
        raise BadEvent(f"'{key}' is longer than {limits.text} characters", "text_too_long")
    return value


def name_field(data: dict[str, Any], key: str, what: str) -> str | None:
    """An optional short name (model, language, voice, speaker): None, or a string of <= 200 characters."""
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 200:
        raise BadEvent(f"{what} must be a string of at most 200 characters", "bad_event")
    return value or None


@dataclass(frozen=True, slots=True)
class VoiceChoice:
    name: str | None = None
    speaker: str | None = None
    language: str | None = None


def voice_choice(event: Event) -> VoiceChoice:
    """The `voice` object of a synthesize or synthesize-start (all of it optional)."""
    voice = event.data.get("voice")
    if voice is None:
        return VoiceChoice()
    if not isinstance(voice, dict):
        raise BadEvent("'voice' must be an object with 'name', 'speaker' or 'language'", "bad_event")
    return VoiceChoice(name_field(voice, "name", "voice name"), name_field(voice, "speaker", "speaker"),
                       name_field(voice, "language", "voice language"))
