"""Asterisk chan_websocket media WebSocket, sans I/O: parse what Asterisk sends, build commands.

The protocol, as read in asterisk/asterisk channels/chan_websocket.c and the asterisk/documentation
page Configuration/Channel-Drivers/WebSocket.md (driver in Asterisk 20.16+, 21.11+, 22.6+, 23):

* BINARY frames carry raw media in the channel's format, no header. Asterisk sends one core frame
  per message (160 bytes of ulaw every 20 ms). slin* is 16-bit signed PCM in Asterisk's host byte
  order: the driver writes the frame buffer untouched, so little-endian on x86-64 and aarch64.
* TEXT frames carry one control message each, in the format Asterisk is configured with
  (chan_websocket.conf `control_message_format`, or the dial string option `f(json|plain-text)`,
  both from 20.18/22.8/23.2): plain text `WORD key:value ...`, or JSON `{"event": "WORD", ...}`
  from Asterisk and `{"command": "WORD", ...}` to it. Commands must be written in that same format.
* When Asterisk hangs up it closes the WebSocket; stock chan_websocket sends no HANGUP text event.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Final, Literal, TypeAlias

__all__ = [
    "DTMF_DIGITS",
    "ERROR_CODES",
    "FORMATS",
    "AsteriskEvent",
    "AsteriskProtocolError",
    "AsteriskWsProtocol",
    "DtmfEnd",
    "ErrorReport",
    "Hangup",
    "MarkProcessed",
    "Media",
    "MediaStart",
    "MediaXoff",
    "MediaXon",
    "OtherControl",
    "Status",
]

# Asterisk format name -> (our encoding, sample rate). Names as registered in main/codec_builtin.c;
# slin44 is 44.1 kHz. Other codecs (opus, g722, gsm, ...) need a decoder we do not carry.
FORMATS: Final[dict[str, tuple[str, int]]] = {
    "ulaw": ("mulaw", 8000),
    "alaw": ("alaw", 8000),
    "slin": ("pcm16", 8000),
    "slin12": ("pcm16", 12000),
    "slin16": ("pcm16", 16000),
    "slin24": ("pcm16", 24000),
    "slin32": ("pcm16", 32000),
    "slin44": ("pcm16", 44100),
    "slin48": ("pcm16", 48000),
    "slin96": ("pcm16", 96000),
    "slin192": ("pcm16", 192000),
}
DTMF_DIGITS: Final = frozenset("0123456789*#ABCD")
ERROR_CODES: Final = frozenset({
    "message_too_large", "invalid_control", "unknown_control", "unsupported_format",
    "already_started", "invalid_dtmf", "not_started", "frame_too_large", "partial_sample",
    "invalid_mark", "invalid_direction",
})

_SAMPLE_WIDTH: Final = {"mulaw": 1, "alaw": 1, "pcm16": 2}
_DEFAULT_PTIME_MS: Final = 20  # every format above has default_ms 20 in codec_builtin.c
_START_KEYS: Final = frozenset(
    {"connection_id", "channel", "channel_id", "format", "optimal_frame_size", "ptime"})
# Events that carry one bare id in plain text: `MEDIA_MARK_PROCESSED <id>` (the driver echoes the
# rest of the MARK_MEDIA / STOP_MEDIA_BUFFERING line), `correlation_id` in JSON.
_ID_EVENTS: Final = frozenset({"MEDIA_MARK_PROCESSED", "MEDIA_BUFFERING_COMPLETED"})
# Known events we surface as OtherControl: nothing to act on, but not worth a warning either.
_OTHER_EVENTS: Final = frozenset({"MEDIA_BUFFERING_COMPLETED", "QUEUE_DRAINED"})
_KNOWN_EVENTS: Final = frozenset({
    "MEDIA_START", "DTMF_END", "MEDIA_XOFF", "MEDIA_XON", "HANGUP", "MEDIA_MARK_PROCESSED",
    "STATUS", "ERROR",
}) | _OTHER_EVENTS
_DIRECTIONS: Final = frozenset({"both", "in", "out"})

_WORD = re.compile(r"[A-Z][A-Z0-9_]*")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_UINT = re.compile(r"[0-9]{1,9}")  # not int(): that also takes "1_0" and non-ASCII digits
# Mark / correlation ids we send: short and plain, so the command stays one token and well under
# the 128 bytes chan_websocket accepts in a TEXT frame (MAX_TEXT_MESSAGE_LEN; longer is dropped).
_MARK = re.compile(r"[A-Za-z0-9._~-]{1,64}")
_ERROR_TEXT = re.compile(r"(?:^|\s)error_text:")


class AsteriskProtocolError(ValueError):
    """A frame we cannot use; `.code` (snake_case) says why. The connection can go on after it."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class MediaStart:
    """First message on the socket: which channel this is and the media format both ways."""

    connection_id: str
    channel: str
    channel_id: str  # the channel's uniqueid; "" from the first releases, which did not send it
    format: str  # the Asterisk format name, e.g. "ulaw", "slin16"
    rate: int
    optimal_frame_size: int  # bytes per frame: Asterisk's, or 20 ms of audio if it sent 0/none
    ptime_ms: int
    extra: dict[str, str]  # fields we do not know, as text
    variables: dict[str, str] = field(default_factory=dict)  # channel_variables (JSON format only)


@dataclass(frozen=True, slots=True)
class Media:
    """One binary frame as received, encoded in the channel's format."""

    data: bytes


@dataclass(frozen=True, slots=True)
class DtmfEnd:
    """The caller pressed a key: one of 0-9, *, #, A-D."""

    digit: str


@dataclass(frozen=True, slots=True)
class MediaXoff:
    """Asterisk's queue of media from us reached its high-water mark: stop sending media."""


@dataclass(frozen=True, slots=True)
class MediaXon:
    """Asterisk's queue drained below its low-water mark: media may flow again."""


@dataclass(frozen=True, slots=True)
class Hangup:
    """A HANGUP text event. Stock Asterisk signals hangup by closing the socket instead."""


@dataclass(frozen=True, slots=True)
class MarkProcessed:
    """A mark we placed with MARK_MEDIA reached the front of Asterisk's queue: all before played."""

    name: str


@dataclass(frozen=True, slots=True)
class Status:
    """Reply to GET_STATUS (queue_length, xon_level, xoff_level, queue_full, ...) as text."""

    fields: dict[str, str]


@dataclass(frozen=True, slots=True)
class ErrorReport:
    """Asterisk rejected a command of ours (e.g. FLUSH_MEDIA in passthrough mode): log it."""

    text: str
    fields: dict[str, str]


@dataclass(frozen=True, slots=True)
class OtherControl:
    """A known message we do not act on (MEDIA_BUFFERING_COMPLETED, QUEUE_DRAINED)."""

    name: str
    fields: dict[str, str]


AsteriskEvent: TypeAlias = (
    MediaStart | Media | DtmfEnd | MediaXoff | MediaXon | Hangup | MarkProcessed | Status
    | ErrorReport | OtherControl
)


class AsteriskWsProtocol:
    """One chan_websocket media connection: feed it frames, get events; ask it for commands."""

    def __init__(self, *, max_text_bytes: int = 16 * 1024, max_frame_bytes: int = 64 * 1024,
                 max_fields: int = 64) -> None:
        for name, value in (("max_text_bytes", max_text_bytes),
                            ("max_frame_bytes", max_frame_bytes), ("max_fields", max_fields)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.max_text_bytes = max_text_bytes
        self.max_frame_bytes = max_frame_bytes
        self.max_fields = max_fields
        self.started: bool = False
        self.format: str | None = None
        self.encoding: str | None = None  # "mulaw" | "alaw" | "pcm16"
        self.rate: int | None = None
        # Asterisk picks the control format; we follow it once it has spoken JSON. Before that
        # (i.e. before MEDIA_START, the first message) commands are plain text.
        self.json_mode: bool = False
        self.paused: bool = False  # between MEDIA_XOFF and MEDIA_XON
        self.media_start: MediaStart | None = None
        self._frame_bytes = 0

    # --- from Asterisk ---------------------------------------------------------------------------

    def receive_text(self, text: str) -> AsteriskEvent:
        """Parse one TEXT frame. Raises AsteriskProtocolError; the connection may go on after it."""
        # Characters never outnumber UTF-8 bytes, so this bounds the encode below.
        if len(text) > self.max_text_bytes:
            raise _too_large(len(text), self.max_text_bytes)
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:  # lone surrogates: not text any WebSocket peer can send
            raise AsteriskProtocolError("control message is not valid UTF-8 text",
                                        "invalid_control") from None
        if size > self.max_text_bytes:
            raise _too_large(size, self.max_text_bytes)
        body = text.strip()
        if not body:
            raise AsteriskProtocolError("empty control message", "invalid_control")
        if body.startswith("{"):
            name, fields, variables = self._parse_json(body)
        else:
            name, fields = self._parse_plain(body)
            variables = {}
        return self._dispatch(name, fields, variables)

    def receive_binary(self, data: bytes) -> Media:
        """Check one BINARY frame (media in the channel's format) and wrap it."""
        if not self.started:
            raise AsteriskProtocolError("media before MEDIA_START", "not_started")
        if len(data) > self.max_frame_bytes:
            raise AsteriskProtocolError(
                f"media frame of {len(data)} bytes exceeds {self.max_frame_bytes}",
                "frame_too_large")
        if self.encoding == "pcm16" and len(data) % 2:
            raise AsteriskProtocolError(
                f"{self.format} frame of {len(data)} bytes splits a 16-bit sample",
                "partial_sample")
        return Media(bytes(data))

    def frame_bytes(self) -> int:
        """Bytes of one optimal outgoing frame: optimal_frame_size, or 20 ms of the format."""
        if not self.started:
            raise AsteriskProtocolError("no MEDIA_START yet, so no format", "not_started")
        return self._frame_bytes

    # --- to Asterisk (text to send in a TEXT frame) ----------------------------------------------

    def answer(self) -> str:
        """ANSWER: answer the channel (needed when it was dialled with the `n` option)."""
        return self._command("ANSWER")

    def hangup(self) -> str:
        """HANGUP: Asterisk hangs up the channel and closes the socket."""
        return self._command("HANGUP")

    def flush_media(self) -> str:
        """FLUSH_MEDIA: drop all media queued in Asterisk (barge-in); also ends buffering/pause."""
        return self._command("FLUSH_MEDIA")

    def mark_media(self, name: str) -> str:
        """MARK_MEDIA: a mark after the media sent so far; MEDIA_MARK_PROCESSED comes back."""
        return self._command("MARK_MEDIA", {"correlation_id": _checked_id(name)})

    def start_buffering(self) -> str:
        """START_MEDIA_BUFFERING: Asterisk joins our messages into whole frames until STOP."""
        return self._command("START_MEDIA_BUFFERING")

    def stop_buffering(self, correlation_id: str | None = None) -> str:
        """STOP_MEDIA_BUFFERING: pad the rest to a frame; MEDIA_BUFFERING_COMPLETED comes back."""
        if correlation_id is None:
            return self._command("STOP_MEDIA_BUFFERING")
        return self._command("STOP_MEDIA_BUFFERING",
                             {"correlation_id": _checked_id(correlation_id)})

    def get_status(self) -> str:
        """GET_STATUS: Asterisk replies with a STATUS event."""
        return self._command("GET_STATUS")

    def pause_media(self) -> str:
        """PAUSE_MEDIA: Asterisk plays silence but keeps our queued media."""
        return self._command("PAUSE_MEDIA")

    def continue_media(self) -> str:
        """CONTINUE_MEDIA: resume playing the queued media after PAUSE_MEDIA."""
        return self._command("CONTINUE_MEDIA")

    def report_queue_drained(self) -> str:
        """REPORT_QUEUE_DRAINED: one QUEUE_DRAINED event when Asterisk's queue next runs empty."""
        return self._command("REPORT_QUEUE_DRAINED")

    def set_media_direction(self, direction: Literal["both", "in", "out"]) -> str:
        """SET_MEDIA_DIRECTION (newest releases): "in" drops our media, "out" sends us none."""
        if direction not in _DIRECTIONS:
            raise AsteriskProtocolError(f"media direction {direction!r} is not both, in or out",
                                        "invalid_direction")
        # Plain-text form is a guess by analogy with MARK_MEDIA (bare parameter after the word);
        # the docs only show JSON for it and say new features may be JSON-only.
        return self._command("SET_MEDIA_DIRECTION", {"direction": direction})

    # --- internals -------------------------------------------------------------------------------

    def _command(self, name: str, params: dict[str, str] | None = None) -> str:
        params = params or {}
        if self.json_mode:
            return json.dumps({"command": name, **params}, separators=(",", ":"))
        # chan_websocket hands a plain command everything after the first space as its one
        # parameter (documented as `STOP_MEDIA_BUFFERING <correlation_id>`): no key: prefix.
        return " ".join([name, *params.values()])

    def _check_name(self, name: str) -> None:
        if not _WORD.fullmatch(name):
            raise AsteriskProtocolError(f"control word {name[:40]!r} is not an UPPER_CASE word",
                                        "invalid_control")
        if name not in _KNOWN_EVENTS:
            raise AsteriskProtocolError(f"unknown control message {name[:40]!r}",
                                        "unknown_control")

    def _parse_plain(self, body: str) -> tuple[str, dict[str, str]]:
        parts = body.split(None, 1)
        name, rest = parts[0], (parts[1] if len(parts) > 1 else "")
        self._check_name(name)
        if name in _ID_EVENTS:
            value = rest.strip()
            # Tolerate an id written as correlation_id:<id>, which a sender may have chosen.
            if value.startswith("correlation_id:"):
                value = value[len("correlation_id:"):]
            return name, {"correlation_id": value}
        if name == "ERROR":
            # `ERROR channel_id:<id> error_text:<free text with spaces>`: the text runs to the end.
            match = _ERROR_TEXT.search(rest)
            if match:
                fields = self._plain_fields(rest[:match.start()])
                fields["error_text"] = rest[match.end():].strip()
                return name, fields
        return name, self._plain_fields(rest)

    def _plain_fields(self, rest: str) -> dict[str, str]:
        tokens = rest.split()
        if len(tokens) > self.max_fields:
            raise AsteriskProtocolError(f"{len(tokens)} fields exceed {self.max_fields}",
                                        "invalid_control")
        fields: dict[str, str] = {}
        for token in tokens:
            # Split on the first ':' only: values such as channel names may contain ':'.
            key, sep, value = token.partition(":")
            if not sep or not _KEY.fullmatch(key):
                raise AsteriskProtocolError(f"field {token[:40]!r} is not key:value",
                                            "invalid_control")
            fields[key] = value
        return fields

    def _parse_json(self, body: str) -> tuple[str, dict[str, str], dict[str, str]]:
        try:
            obj = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
            raise AsteriskProtocolError("malformed JSON control message",
                                        "invalid_control") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("event"), str):
            raise AsteriskProtocolError(
                'a JSON control message is an object with an "event" string', "invalid_control")
        self.json_mode = True
        name: str = obj["event"]
        self._check_name(name)
        if len(obj) - 1 > self.max_fields:
            raise AsteriskProtocolError(f"{len(obj) - 1} fields exceed {self.max_fields}",
                                        "invalid_control")
        fields: dict[str, str] = {}
        variables: dict[str, str] = {}
        try:
            for key, value in obj.items():
                if key == "event":
                    continue
                if key == "channel_variables" and name == "MEDIA_START" and isinstance(value, dict):
                    variables = {str(k): _as_text(v) for k, v in value.items()}
                else:
                    fields[key] = _as_text(value)
        except RecursionError:
            raise AsteriskProtocolError("JSON control message nests too deeply",
                                        "invalid_control") from None
        return name, fields, variables

    def _dispatch(self, name: str, fields: dict[str, str],
                  variables: dict[str, str]) -> AsteriskEvent:
        if name == "MEDIA_START":
            return self._media_start(fields, variables)
        if name == "DTMF_END":
            return DtmfEnd(_checked_digit(fields.get("digit")))
        if name == "MEDIA_XOFF":
            self.paused = True
            return MediaXoff()
        if name == "MEDIA_XON":
            self.paused = False
            return MediaXon()
        if name == "HANGUP":
            return Hangup()
        if name == "MEDIA_MARK_PROCESSED":
            return MarkProcessed(fields.get("correlation_id", ""))
        if name == "STATUS":
            return Status(fields)
        if name == "ERROR":
            return ErrorReport(fields.get("error_text", ""), fields)
        return OtherControl(name, fields)

    def _media_start(self, fields: dict[str, str], variables: dict[str, str]) -> MediaStart:
        if self.started:
            raise AsteriskProtocolError("a second MEDIA_START on one connection", "already_started")
        fmt = fields.get("format", "")
        if not fmt:
            raise AsteriskProtocolError("MEDIA_START without a format", "invalid_control")
        if fmt not in FORMATS:
            raise AsteriskProtocolError(
                f"format {fmt[:40]!r} is not one we decode; dial with c(ulaw), c(alaw) or "
                f"c(slin16) (any slinNN works)", "unsupported_format")
        encoding, rate = FORMATS[fmt]
        width = _SAMPLE_WIDTH[encoding]
        ptime = _uint_field(fields, "ptime", _DEFAULT_PTIME_MS)
        if not 1 <= ptime <= 1000:
            raise AsteriskProtocolError(f"MEDIA_START ptime {ptime} is out of range",
                                        "invalid_control")
        frame = _uint_field(fields, "optimal_frame_size", 0)
        if frame == 0:  # 0 means passthrough mode; none came from the first releases
            frame = rate * ptime // 1000 * width
        if frame > self.max_frame_bytes or frame % width:
            raise AsteriskProtocolError(
                f"MEDIA_START optimal_frame_size {frame} does not fit {fmt} frames",
                "invalid_control")
        start = MediaStart(
            connection_id=fields.get("connection_id", ""), channel=fields.get("channel", ""),
            channel_id=fields.get("channel_id", ""), format=fmt, rate=rate,
            optimal_frame_size=frame, ptime_ms=ptime,
            extra={k: v for k, v in fields.items() if k not in _START_KEYS}, variables=variables)
        self.started = True
        self.format, self.encoding, self.rate = fmt, encoding, rate
        self._frame_bytes = frame
        self.media_start = start
        return start


def _too_large(size: int, limit: int) -> AsteriskProtocolError:
    return AsteriskProtocolError(f"control message of {size} bytes exceeds {limit}",
                                 "message_too_large")


def _as_text(value: object) -> str:
    # JSON values as the plain-text format writes them (STATUS sends true/false, numbers as digits).
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _uint_field(fields: dict[str, str], key: str, default: int) -> int:
    value = fields.get(key)
    if value is None:
        return default
    if not _UINT.fullmatch(value):
        raise AsteriskProtocolError(f"MEDIA_START {key} {value[:20]!r} is not a whole number",
                                    "invalid_control")
    return int(value)


def _checked_digit(digit: str | None) -> str:
    # Asterisk passes the core's digit through; accept a-d from endpoints that send lower case.
    if digit is None or len(digit) != 1 or digit.upper() not in DTMF_DIGITS:
        raise AsteriskProtocolError(f"DTMF digit {str(digit)[:10]!r} is not 0-9, *, # or A-D",
                                    "invalid_dtmf")
    return digit.upper()


def _checked_id(value: str) -> str:
    if not isinstance(value, str) or not _MARK.fullmatch(value):
        raise AsteriskProtocolError(
            f"mark id {str(value)[:70]!r} must be 1-64 of A-Z a-z 0-9 . _ ~ -", "invalid_mark")
    return value
