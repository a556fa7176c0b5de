"""Twilio Media Streams, sans I/O: the bidirectional `<Connect><Stream>` WebSocket protocol.

Parses the JSON text frames Twilio sends (connected, start, media, dtmf, mark, stop), builds the
ones we send back (media, mark, clear), checks `X-Twilio-Signature` and writes the TwiML that
opens the stream. No sockets and no event loop: the transport feeds text in and sends text out.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias
from xml.sax.saxutils import escape


class TwilioProtocolError(ValueError):
    """A message we cannot act on; `code` is a short snake_case reason. The stream goes on."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class TwilioConnected:
    """The first message on the socket: which protocol and version follow."""

    protocol: str
    version: str


@dataclass(frozen=True, slots=True)
class TwilioStart:
    """The stream's metadata: its ids, tracks, audio format and the TwiML custom parameters."""

    stream_sid: str
    call_sid: str
    account_sid: str
    tracks: tuple[str, ...]
    encoding: str
    sample_rate: int
    channels: int
    custom_parameters: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TwilioMedia:
    """One chunk of the caller's audio: raw mu-law, 8 kHz mono, already base64-decoded."""

    payload: bytes
    track: str
    chunk: int
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class TwilioDtmf:
    """A key the caller pressed."""

    digit: str


@dataclass(frozen=True, slots=True)
class TwilioMark:
    """Twilio's echo of a mark we sent: the audio queued before it has played (or was cleared)."""

    name: str


@dataclass(frozen=True, slots=True)
class TwilioStop:
    """The stream ended (the call hung up or the stream was stopped)."""


TwilioEvent: TypeAlias = (
    TwilioConnected | TwilioStart | TwilioMedia | TwilioDtmf | TwilioMark | TwilioStop
)

_ENCODING = "audio/x-mulaw"
_SAMPLE_RATE = 8000
_CHANNELS = 1
_DTMF_DIGITS = frozenset("0123456789*#ABCD")
_INBOUND_TRACKS = frozenset({"inbound", "inbound_track"})
# Twilio sends chunk/timestamp as decimal strings; anything longer than this is not a counter.
_MAX_COUNTER_DIGITS = 20
_EVENTS = frozenset({"connected", "start", "media", "dtmf", "mark", "stop"})


class TwilioStreamProtocol:
    """State of one Media Streams WebSocket: parses what Twilio sends, builds what we send."""

    __slots__ = (
        "_max_message_bytes", "_max_payload_bytes", "_max_b64_chars", "_max_parameters",
        "_max_parameter_chars", "stream_sid", "call_sid", "started", "stopped",
    )

    def __init__(self, *, max_message_bytes: int = 256 * 1024, max_payload_bytes: int = 16000,
                 max_parameters: int = 64, max_parameter_chars: int = 1024) -> None:
        for name, value in (("max_message_bytes", max_message_bytes),
                            ("max_payload_bytes", max_payload_bytes),
                            ("max_parameters", max_parameters),
                            ("max_parameter_chars", max_parameter_chars)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, not {value!r}")
        self._max_message_bytes = max_message_bytes
        self._max_payload_bytes = max_payload_bytes
        # Lets us refuse an oversized payload before spending time decoding it.
        self._max_b64_chars = 4 * -(-max_payload_bytes // 3)
        self._max_parameters = max_parameters
        self._max_parameter_chars = max_parameter_chars
        self.stream_sid: str | None = None
        self.call_sid: str | None = None
        self.started = False
        self.stopped = False

    # --- inbound ---------------------------------------------------------------------------------

    def receive(self, text: str | bytes) -> TwilioEvent | None:
        """Parse one WebSocket message; None when it needs no action. Raises TwilioProtocolError."""
        if self.stopped:
            raise TwilioProtocolError("the stream has stopped", "stopped")
        message = self._load(text)
        event = message.get("event")
        if not isinstance(event, str) or event not in _EVENTS:
            shown = event[:40] if isinstance(event, str) else type(event).__name__
            raise TwilioProtocolError(f"unknown event {shown!r}", "unknown_event")
        # Every handler validates fully before it touches state, so an error leaves us as we were.
        if event == "connected":
            return TwilioConnected(_opt_str(message, "protocol", ""),
                                   _opt_str(message, "version", ""))
        if event == "start":
            return self._start(message)
        if event == "stop":
            if self.started:
                self._check_stream(message)
            self.stopped = True
            return TwilioStop()
        if not self.started:
            raise TwilioProtocolError(f"{event} before start", "not_started")
        self._check_stream(message)
        if event == "media":
            return self._media(message)
        if event == "dtmf":
            return self._dtmf(message)
        return self._mark(message)

    def _load(self, text: str | bytes) -> dict[str, Any]:
        limit = self._max_message_bytes
        if isinstance(text, (bytes, bytearray, memoryview)):
            raw = bytes(text)
            if len(raw) > limit:
                raise TwilioProtocolError(f"message over {limit} bytes", "message_too_large")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise TwilioProtocolError("message is not valid UTF-8", "invalid_json") from None
        elif isinstance(text, str):
            # A character is at least one byte: encode only when the length alone does not decide.
            if len(text) > limit:
                raise TwilioProtocolError(f"message over {limit} bytes", "message_too_large")
            try:
                size = len(text.encode("utf-8"))
            except UnicodeEncodeError:
                raise TwilioProtocolError("message is not valid UTF-8", "invalid_json") from None
            if size > limit:
                raise TwilioProtocolError(f"message over {limit} bytes", "message_too_large")
        else:
            raise TwilioProtocolError("a message must be text or bytes", "invalid_json")
        try:
            message = json.loads(text)
        except (ValueError, RecursionError):
            # ValueError also covers integer literals too long to convert; RecursionError, deep
            # nesting that fits under the size limit.
            raise TwilioProtocolError("malformed JSON", "invalid_json") from None
        if not isinstance(message, dict):
            raise TwilioProtocolError("a message must be a JSON object", "invalid_json")
        return message

    def _check_stream(self, message: dict[str, Any]) -> None:
        sid = message.get("streamSid")
        if sid != self.stream_sid:
            raise TwilioProtocolError("message for another stream", "unknown_stream")

    def _start(self, message: dict[str, Any]) -> TwilioStart:
        if self.started:
            raise TwilioProtocolError("a second start on one stream", "already_started")
        start = message.get("start")
        if not isinstance(start, dict):
            raise TwilioProtocolError("start needs a 'start' object", "invalid_message")
        outer_sid = message.get("streamSid")
        stream_sid = start.get("streamSid", outer_sid)
        if not isinstance(stream_sid, str) or not stream_sid:
            raise TwilioProtocolError("start needs a streamSid", "invalid_message")
        if outer_sid is not None and outer_sid != stream_sid:
            raise TwilioProtocolError("start names two different streams", "unknown_stream")
        call_sid = start.get("callSid")
        if not isinstance(call_sid, str) or not call_sid:
            raise TwilioProtocolError("start needs a callSid", "invalid_message")
        account_sid = _opt_str(start, "accountSid", "")
        tracks = start.get("tracks", ["inbound"])
        if not isinstance(tracks, list) or not all(isinstance(t, str) for t in tracks):
            raise TwilioProtocolError("start.tracks must be a list of strings", "invalid_message")
        encoding, sample_rate, channels = _media_format(start.get("mediaFormat"))
        parameters = self._parameters(start.get("customParameters"))
        self.stream_sid = stream_sid
        self.call_sid = call_sid
        self.started = True
        return TwilioStart(stream_sid, call_sid, account_sid, tuple(tracks), encoding,
                           sample_rate, channels, parameters)

    def _parameters(self, value: object) -> dict[str, str]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise TwilioProtocolError("customParameters must be an object", "invalid_parameters")
        if len(value) > self._max_parameters:
            raise TwilioProtocolError(f"more than {self._max_parameters} custom parameters",
                                      "invalid_parameters")
        limit = self._max_parameter_chars
        for key, item in value.items():
            if not isinstance(item, str):
                raise TwilioProtocolError("custom parameter values must be strings",
                                          "invalid_parameters")
            if len(key) > limit or len(item) > limit:
                raise TwilioProtocolError(f"a custom parameter is over {limit} characters",
                                          "invalid_parameters")
        return dict(value)

    def _media(self, message: dict[str, Any]) -> TwilioMedia | None:
        media = message.get("media")
        if not isinstance(media, dict):
            raise TwilioProtocolError("media needs a 'media' object", "invalid_message")
        track = media.get("track", "inbound")
        if not isinstance(track, str):
            raise TwilioProtocolError("media.track must be a string", "invalid_message")
        if track not in _INBOUND_TRACKS:
            # Only the caller's audio is ours to hear; anything else would be our own echo.
            return None
        chunk = _counter(media, "chunk")
        timestamp_ms = _counter(media, "timestamp")
        encoded = media.get("payload")
        if not isinstance(encoded, str):
            raise TwilioProtocolError("media.payload must be a base64 string", "invalid_payload")
        if len(encoded) > self._max_b64_chars:
            raise TwilioProtocolError(f"payload over {self._max_payload_bytes} bytes",
                                      "invalid_payload")
        try:
            payload = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise TwilioProtocolError("payload is not valid base64", "invalid_payload") from None
        if len(payload) > self._max_payload_bytes:
            raise TwilioProtocolError(f"payload over {self._max_payload_bytes} bytes",
                                      "invalid_payload")
        if not payload:
            return None
        return TwilioMedia(payload, track, chunk, timestamp_ms)

    def _dtmf(self, message: dict[str, Any]) -> TwilioDtmf:
        dtmf = message.get("dtmf")
        if not isinstance(dtmf, dict):
            raise TwilioProtocolError("dtmf needs a 'dtmf' object", "invalid_message")
        digit = dtmf.get("digit")
        if not isinstance(digit, str) or digit.upper() not in _DTMF_DIGITS:
            raise TwilioProtocolError("dtmf digit must be one of 0-9 * # A-D", "invalid_dtmf")
        return TwilioDtmf(digit.upper())

    def _mark(self, message: dict[str, Any]) -> TwilioMark:
        mark = message.get("mark")
        if not isinstance(mark, dict) or not isinstance(mark.get("name"), str):
            raise TwilioProtocolError("mark needs a 'mark' object with a name", "invalid_message")
        return TwilioMark(mark["name"])

    # --- outbound --------------------------------------------------------------------------------

    def media(self, mulaw: bytes) -> str:
        """The message that plays raw mu-law (8 kHz mono, no header) to the caller."""
        if not isinstance(mulaw, (bytes, bytearray, memoryview)):
            raise TypeError("media() takes raw mu-law bytes")
        payload = base64.b64encode(mulaw).decode("ascii")
        return self._outbound({"event": "media", "streamSid": self._sid(),
                               "media": {"payload": payload}})

    def mark(self, name: str) -> str:
        """The message Twilio echoes back once everything sent before it has played."""
        if not isinstance(name, str) or not name:
            raise TwilioProtocolError("a mark needs a non-empty name", "invalid_mark")
        return self._outbound({"event": "mark", "streamSid": self._sid(), "mark": {"name": name}})

    def clear(self) -> str:
        """The message that drops the audio Twilio has buffered (barge-in); pending marks echo."""
        return self._outbound({"event": "clear", "streamSid": self._sid()})

    def _sid(self) -> str:
        if self.stopped:
            raise TwilioProtocolError("the stream has stopped", "stopped")
        if self.stream_sid is None:
            raise TwilioProtocolError("nothing can be sent before start", "not_started")
        return self.stream_sid

    @staticmethod
    def _outbound(message: dict[str, Any]) -> str:
        return json.dumps(message, separators=(",", ":"))


def _opt_str(obj: Mapping[str, Any], key: str, default: str) -> str:
    value = obj.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise TwilioProtocolError(f"{key} must be a string", "invalid_message")
    return value


def _counter(media: Mapping[str, Any], key: str) -> int:
    value = media.get(key)
    if value is None:
        return 0
    if isinstance(value, str) and 0 < len(value) <= _MAX_COUNTER_DIGITS \
            and value.isascii() and value.isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise TwilioProtocolError(f"media.{key} must be a non-negative integer", "invalid_message")


def _media_format(value: object) -> tuple[str, int, int]:
    # Twilio documents the format as fixed; a missing field means the documented value.
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise TwilioProtocolError("mediaFormat must be an object", "unsupported_media_format")
    encoding = value.get("encoding", _ENCODING)
    sample_rate = _format_int(value.get("sampleRate", _SAMPLE_RATE))
    channels = _format_int(value.get("channels", _CHANNELS))
    if not isinstance(encoding, str) or encoding.lower() != _ENCODING \
            or sample_rate != _SAMPLE_RATE or channels != _CHANNELS:
        raise TwilioProtocolError(
            f"only {_ENCODING} {_SAMPLE_RATE} Hz mono is supported", "unsupported_media_format")
    return _ENCODING, sample_rate, channels


def _format_int(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and 0 < len(value) <= 10 and value.isascii() and value.isdigit():
        return int(value)
    return None


# --- webhook signatures -------------------------------------------------------------------------

_DEFAULT_PORTS = {"https": "443", "wss": "443", "http": "80", "ws": "80"}
_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)(.*)", re.DOTALL)


def twilio_signature(auth_token: str, url: str, params: dict[str, str] | None = None) -> str:
    """X-Twilio-Signature: base64 HMAC-SHA1 of the URL followed by each sorted key and value."""
    fields = params or {}
    data = url + "".join(key + fields[key] for key in sorted(fields))
    digest = hmac.new(auth_token.encode("utf-8"), data.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def valid_twilio_signature(auth_token: str, url: str, params: dict[str, str] | None,
                           signature: str) -> bool:
    """Whether `signature` signs this request; also tries the URL with/without its port."""
    if not isinstance(signature, str) or not signature.isascii():
        return False
    given = signature.encode("ascii")
    valid = False
    for candidate in _url_variants(url):
        expected = twilio_signature(auth_token, candidate, params).encode("ascii")
        valid |= hmac.compare_digest(expected, given)
    return valid


def _url_variants(url: str) -> list[str]:
    # Twilio's own validators check the URL as given plus one variant, because Twilio's signer
    # is inconsistent about ports: with a port they also try it stripped (any port, as
    # twilio-python does), without one they also try the scheme's default port.
    variants = [url]
    match = _URL.fullmatch(url)
    if match is None:
        return variants
    scheme, netloc, rest = match.groups()
    userinfo, at, hostport = netloc.rpartition("@")
    host, port = _split_port(hostport)
    if port is not None:
        variants.append(f"{scheme}://{userinfo}{at}{host}{rest}")
    elif scheme.lower() in _DEFAULT_PORTS and host:
        variants.append(f"{scheme}://{userinfo}{at}{host}:{_DEFAULT_PORTS[scheme.lower()]}{rest}")
    return variants


def _split_port(hostport: str) -> tuple[str, str | None]:
    if hostport.startswith("["):  # IPv6 literal: its colons are not a port separator
        end = hostport.find("]")
        if end != -1 and hostport[end + 1:end + 2] == ":":
            return hostport[:end + 1], hostport[end + 2:]
        return hostport, None
    host, colon, port = hostport.rpartition(":")
    return (host, port) if colon else (hostport, None)


# --- TwiML ---------------------------------------------------------------------------------------

# XML 1.0 cannot carry these at all, not even as character references.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
# Newlines and tabs are escaped so that attribute-value normalisation keeps them.
_ATTR_ENTITIES = {'"': "&quot;", "'": "&apos;", "\n": "&#10;", "\r": "&#13;", "\t": "&#9;"}


def _attr(value: str, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, not {type(value).__name__}")
    if _XML_INVALID.search(value):
        raise ValueError(f"{what} contains a character XML cannot carry")
    return '"' + escape(value, _ATTR_ENTITIES) + '"'


def connect_stream_twiml(stream_url: str, parameters: dict[str, str] | None = None, *,
                         status_callback: str | None = None) -> str:
    """TwiML that connects the call to a bidirectional Media Stream at `stream_url`."""
    if not isinstance(stream_url, str) or not stream_url:
        raise ValueError("stream_url must be a non-empty string")
    if "?" in stream_url:
        # Twilio drops a query string from the Stream url; custom parameters carry such values.
        raise ValueError("Twilio ignores a query string in the Stream url; use parameters")
    attributes = f" url={_attr(stream_url, 'stream_url')}"
    if status_callback is not None:
        attributes += f" statusCallback={_attr(status_callback, 'status_callback')}"
    children = "".join(
        f"<Parameter name={_attr(name, 'parameter name')} "
        f"value={_attr(value, 'parameter value')}/>"
        for name, value in (parameters or {}).items()
    )
    stream = f"<Stream{attributes}>{children}</Stream>" if children else f"<Stream{attributes}/>"
    return ('<?xml version="1.0" encoding="UTF-8"?>'
            f"<Response><Connect>{stream}</Connect></Response>")
