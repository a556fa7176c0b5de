"""Asterisk AudioSocket, sans I/O: a TCP byte stream in, typed frames out, frames to send built.

Each message is a 1-byte type, a 2-byte big-endian payload length and the payload
(docs.asterisk.org, Configuration/Channel-Drivers/AudioSocket): 0x00 hang-up, 0x01 the call's
UUID (16 bytes, always first), 0x03 a DTMF digit (1 ASCII byte), 0x10 audio as signed linear
16-bit little-endian mono at 8 kHz and 0x11-0x18 the same at 12, 16, 24, 32, 44.1, 48, 96 and
192 kHz, 0xff an error (optional 1-byte code).
"""

from __future__ import annotations

import uuid as uuidlib
from dataclasses import dataclass
from typing import Final, TypeAlias

KIND_HANGUP: Final = 0x00
KIND_UUID: Final = 0x01
KIND_DTMF: Final = 0x03
KIND_ERROR: Final = 0xFF
AUDIO_KINDS: Final[dict[int, int]] = {
    0x10: 8000, 0x11: 12000, 0x12: 16000, 0x13: 24000, 0x14: 32000,
    0x15: 44100, 0x16: 48000, 0x17: 96000, 0x18: 192000,
}
KIND_FOR_RATE: Final[dict[int, int]] = {rate: kind for kind, rate in AUDIO_KINDS.items()}
DTMF_DIGITS: Final = frozenset("0123456789*#ABCD")
# Asterisk's error codes (payload of a 0xff frame).
ERRORS: Final[dict[int, str]] = {0x00: "none", 0x01: "hangup", 0x02: "frame_forwarding", 0x04: "memory"}


class AudioSocketError(ValueError):
    """The stream cannot be parsed; `code` is short snake_case. The connection should be closed."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class CallUuid:
    uuid: str


@dataclass(frozen=True, slots=True)
class Audio:
    pcm: bytes  # signed 16-bit little-endian mono
    rate: int


@dataclass(frozen=True, slots=True)
class Dtmf:
    digit: str


@dataclass(frozen=True, slots=True)
class HangupFrame:
    pass


@dataclass(frozen=True, slots=True)
class ErrorFrame:
    code: int
    name: str


AudioSocketEvent: TypeAlias = CallUuid | Audio | Dtmf | HangupFrame | ErrorFrame


class AudioSocketProtocol:
    """One AudioSocket connection: `feed(bytes)` as they arrive, get the complete frames."""

    def __init__(self, *, max_payload: int = 16 * 1024, max_buffer: int = 256 * 1024) -> None:
        self.max_payload = max_payload
        self.max_buffer = max_buffer
        self._buf = bytearray()
        self.uuid: str | None = None
        self.rate: int | None = None  # of the last audio received: replies use the caller's format
        self.closed = False

    def feed(self, data: bytes) -> list[AudioSocketEvent]:
        """Parse what arrived. Raises AudioSocketError on a stream that is not AudioSocket."""
        if self.closed:
            return []
        self._buf += data
        if len(self._buf) > self.max_buffer:
            self._buf.clear()  # the stream is refused; hold nothing more for it
            raise AudioSocketError(f"more than {self.max_buffer} bytes buffered", "buffer_overflow")
        out: list[AudioSocketEvent] = []
        while len(self._buf) >= 3:
            kind, length = self._buf[0], int.from_bytes(self._buf[1:3], "big")
            if kind not in AUDIO_KINDS and kind not in (KIND_HANGUP, KIND_UUID, KIND_DTMF, KIND_ERROR):
                raise AudioSocketError(f"unknown message type 0x{kind:02x}", "unknown_type")
            if length > self.max_payload:
                raise AudioSocketError(f"payload of {length} bytes exceeds {self.max_payload}", "frame_too_large")
            if len(self._buf) < 3 + length:
                break
            payload = bytes(self._buf[3:3 + length])
            del self._buf[:3 + length]
            ev = self._frame(kind, payload)
            out.append(ev)
            if isinstance(ev, HangupFrame):
                self.closed = True
                break
        return out

    def _frame(self, kind: int, payload: bytes) -> AudioSocketEvent:
        if kind == KIND_UUID:
            if len(payload) != 16:
                raise AudioSocketError(f"UUID payload of {len(payload)} bytes, not 16", "invalid_uuid")
            if self.uuid is not None:
                raise AudioSocketError("a second UUID on one connection", "duplicate_uuid")
            self.uuid = str(uuidlib.UUID(bytes=payload))
            return CallUuid(self.uuid)
        if kind == KIND_HANGUP:
            return HangupFrame()
        if kind == KIND_ERROR:
            code = payload[0] if payload else 0
            return ErrorFrame(code, ERRORS.get(code, f"application_{code}"))
        if self.uuid is None:
            raise AudioSocketError("audio or DTMF before the UUID", "not_started")
        if kind == KIND_DTMF:
            digit = payload[:1].decode("ascii", "replace").upper()
            if len(payload) != 1 or digit not in DTMF_DIGITS:
                raise AudioSocketError(f"invalid DTMF payload {payload[:8]!r}", "invalid_dtmf")
            return Dtmf(digit)
        if len(payload) % 2:
            raise AudioSocketError(f"audio payload of {len(payload)} bytes splits a 16-bit sample", "partial_sample")
        self.rate = AUDIO_KINDS[kind]
        return Audio(payload, self.rate)


def audio_frame(pcm: bytes, rate: int) -> bytes:
    """An audio message at one of the AudioSocket rates."""
    kind = KIND_FOR_RATE.get(rate)
    if kind is None:
        raise ValueError(f"AudioSocket has no audio type for {rate} Hz")
    if len(pcm) > 0xFFFF:
        raise ValueError("audio payload longer than 65535 bytes")
    return bytes([kind]) + len(pcm).to_bytes(2, "big") + pcm


def hangup_frame() -> bytes:
    return b"\x00\x00\x00"


def error_frame(code: int = 0) -> bytes:
    return b"\xff\x00\x01" + bytes([code & 0xFF])


def uuid_frame(value: str) -> bytes:
    return b"\x01\x00\x10" + uuidlib.UUID(value).bytes


def dtmf_frame(digit: str) -> bytes:
    return b"\x03\x00\x01" + digit.encode("ascii")
