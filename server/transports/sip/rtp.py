"""RTP (RFC 3550) packets, an outgoing stream and RFC 4733 telephone-events, sans I/O.

The fixed header is 12 octets: V=2, P (padding), X (extension), CC (CSRC count), M (marker), PT,
a 16-bit sequence number, a 32-bit timestamp and the SSRC; CC 32-bit CSRCs follow, then one
header extension when X is set (16-bit profile, 16-bit length in 32-bit words, the words), then
the payload; when P is set the last octet counts the padding octets, itself included.

A telephone-event payload (RFC 4733 section 2.3) is 4 octets: event (0-9, * = 10, # = 11,
A-D = 12-15 for DTMF), E (end) bit, R bit, 6-bit volume (-dBm0) and a 16-bit duration in
timestamp units since the event's onset. Every packet of one event carries the onset's
timestamp, the first one the marker bit, and the final (E) packet is sent three times.
"""

from __future__ import annotations

import secrets
import struct
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DTMF_EVENTS",
    "RtpError",
    "RtpPacket",
    "RtpStream",
    "TelephoneEvent",
    "DtmfReceiver",
    "build_rtp",
    "build_telephone_event",
    "parse_rtp",
    "parse_telephone_event",
]

RTP_VERSION: Final = 2
HEADER_BYTES: Final = 12
DTMF_EVENTS: Final = "0123456789*#ABCD"  # index = RFC 4733 event code
_HEADER = struct.Struct("!BBHII")
_EVENT = struct.Struct("!BBH")
_END_REPEATS: Final = 3  # RFC 4733 2.5.1.4: the final packet is sent three times
_UPDATE_MS: Final = 20  # interval between the durations of successive event packets


class RtpError(ValueError):
    """A datagram that is not a well-formed RTP packet; `code` names why ('invalid_rtp', 'rtcp')."""

    code: str

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """One RTP packet; `csrcs` and `extension` ((profile, data)) are kept so that a packet round-trips."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    marker: bool
    payload: bytes
    csrcs: tuple[int, ...] = ()
    extension: tuple[int, bytes] | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.payload_type <= 0x7F:
            raise ValueError(f"payload type {self.payload_type} is outside 0-127")
        if not 0 <= self.sequence <= 0xFFFF:
            raise ValueError(f"sequence number {self.sequence} is outside 0-65535")
        if not 0 <= self.timestamp <= 0xFFFFFFFF or not 0 <= self.ssrc <= 0xFFFFFFFF:
            raise ValueError("timestamp and SSRC are 32-bit unsigned")
        if len(self.csrcs) > 15 or any(not 0 <= c <= 0xFFFFFFFF for c in self.csrcs):
            raise ValueError("at most 15 CSRCs, each 32-bit unsigned")
        if self.extension is not None:
            profile, data = self.extension
            if not 0 <= profile <= 0xFFFF or len(data) % 4 or len(data) > 0xFFFF * 4:
                raise ValueError("extension profile is 16-bit and its data whole 32-bit words")


def parse_rtp(data: bytes, *, max_bytes: int = 1500) -> RtpPacket:
    """Parse one RTP v2 datagram; RtpError('invalid_rtp') when malformed, RtpError('rtcp') for RTCP."""
    data = bytes(data)
    size = len(data)
    # RFC 5761 section 4: with rtcp-mux, a second octet of 192-223 is an RTCP packet type (an RTCP
    # packet may be as short as 8 bytes: a receiver report without report blocks).
    if 8 <= size <= max_bytes and data[0] >> 6 == RTP_VERSION and 192 <= data[1] <= 223:
        raise RtpError("rtcp", f"RTCP packet type {data[1]}")
    if size < HEADER_BYTES:
        raise RtpError("invalid_rtp", f"{size} bytes is shorter than the 12-byte header")
    if size > max_bytes:
        raise RtpError("invalid_rtp", f"{size} bytes is longer than {max_bytes}")
    first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
    if first >> 6 != RTP_VERSION:
        raise RtpError("invalid_rtp", f"version {first >> 6}")
    count = first & 0x0F
    offset = HEADER_BYTES + 4 * count
    if offset > size:
        raise RtpError("invalid_rtp", f"{count} CSRCs do not fit in {size} bytes")
    csrcs = struct.unpack_from(f"!{count}I", data, HEADER_BYTES)
    extension: tuple[int, bytes] | None = None
    if first & 0x10:
        if offset + 4 > size:
            raise RtpError("invalid_rtp", "header extension is truncated")
        profile, words = struct.unpack_from("!HH", data, offset)
        start, offset = offset + 4, offset + 4 + 4 * words
        if offset > size:
            raise RtpError("invalid_rtp", f"header extension of {words} words is truncated")
        extension = (profile, data[start:offset])
    end = size
    if first & 0x20:
        # The count includes itself, so 0 is invalid, and it may not eat into the header.
        padding = data[-1] if size > offset else 0
        if padding == 0 or padding > size - offset:
            raise RtpError("invalid_rtp", "padding count is zero or longer than the payload")
        end = size - padding
    return RtpPacket(second & 0x7F, sequence, timestamp, ssrc, bool(second & 0x80), data[offset:end],
                     csrcs, extension)


def build_rtp(pkt: RtpPacket) -> bytes:
    """The datagram for `pkt` (no padding: nothing we send needs block alignment)."""
    first = RTP_VERSION << 6 | (0x10 if pkt.extension is not None else 0) | len(pkt.csrcs)
    second = (0x80 if pkt.marker else 0) | pkt.payload_type
    parts = [_HEADER.pack(first, second, pkt.sequence, pkt.timestamp, pkt.ssrc)]
    if pkt.csrcs:
        parts.append(struct.pack(f"!{len(pkt.csrcs)}I", *pkt.csrcs))
    if pkt.extension is not None:
        profile, data = pkt.extension
        parts += [struct.pack("!HH", profile, len(data) // 4), data]
    parts.append(pkt.payload)
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """One RFC 4733 event report: code, end bit, volume (0-63, -dBm0), duration in timestamp units."""

    event: int
    end: bool
    volume: int
    duration: int

    @property
    def digit(self) -> str | None:
        return DTMF_EVENTS[self.event] if self.event < len(DTMF_EVENTS) else None


def parse_telephone_event(payload: bytes) -> TelephoneEvent:
    """The first event report in a telephone-event payload; RtpError('invalid_event') if under 4 bytes."""
    if len(payload) < _EVENT.size:
        raise RtpError("invalid_event", f"telephone-event payload of {len(payload)} bytes")
    event, flags, duration = _EVENT.unpack_from(payload)
    return TelephoneEvent(event, bool(flags & 0x80), flags & 0x3F, duration)  # the R bit is ignored


def build_telephone_event(event: TelephoneEvent) -> bytes:
    """The 4-byte payload for `event`."""
    if not 0 <= event.event <= 0xFF or not 0 <= event.volume <= 0x3F or not 0 <= event.duration <= 0xFFFF:
        raise ValueError(f"telephone-event field out of range: {event}")
    return _EVENT.pack(event.event, (0x80 if event.end else 0) | event.volume, event.duration)


class RtpStream:
    """Outgoing RTP: one SSRC, random initial sequence number and timestamp (RFC 3550 5.1)."""

    def __init__(self, payload_type: int, *, ssrc: int | None = None, clock_rate: int = 8000,
                 sequence: int | None = None, timestamp: int | None = None) -> None:
        if not 0 <= payload_type <= 0x7F:
            raise ValueError(f"payload type {payload_type} is outside 0-127")
        if clock_rate <= 0:
            raise ValueError("clock rate must be positive")
        self.payload_type = payload_type
        self.clock_rate = clock_rate
        self.ssrc = secrets.randbits(32) if ssrc is None else ssrc & 0xFFFFFFFF
        # Unpredictable starting points make known-plaintext attacks on SRTP harder (RFC 3550 5.1).
        self._sequence = secrets.randbits(16) if sequence is None else sequence & 0xFFFF
        self._timestamp = secrets.randbits(32) if timestamp is None else timestamp & 0xFFFFFFFF
        self._mark_next = True  # the first packet of a talkspurt carries the marker (RFC 3551 4.1)

    @property
    def sequence(self) -> int:
        """The sequence number the next packet will carry."""
        return self._sequence

    @property
    def timestamp(self) -> int:
        """The timestamp the next packet will carry."""
        return self._timestamp

    def _next(self, payload_type: int, timestamp: int, marker: bool, payload: bytes) -> bytes:
        pkt = RtpPacket(payload_type, self._sequence, timestamp, self.ssrc, marker, payload)
        self._sequence = (self._sequence + 1) & 0xFFFF
        return build_rtp(pkt)

    def packet(self, payload: bytes, samples: int, *, marker: bool = False) -> bytes:
        """The next media packet; advances the sequence number by 1 and the timestamp by `samples`."""
        if samples < 0:
            raise ValueError("samples must not be negative")
        data = self._next(self.payload_type, self._timestamp, marker or self._mark_next, payload)
        self._mark_next = False
        self._timestamp = (self._timestamp + samples) & 0xFFFFFFFF
        return data

    def skip(self, samples: int) -> None:
        """Leave a gap of `samples` (silence not sent); the next packet starts a talkspurt (marker)."""
        if samples < 0:
            raise ValueError("samples must not be negative")
        self._timestamp = (self._timestamp + samples) & 0xFFFFFFFF
        self._mark_next = True

    def dtmf_packets(self, digit: str, te_pt: int, duration_ms: int = 160, volume: int = 10) -> list[bytes]:
        """RFC 4733 packets for one digit, to send 20 ms apart in place of audio; the last 3 are the end.

        All carry the current timestamp (the onset), the first the marker; the stream's timestamp then
        moves on by the duration, as the event stands in for that much audio.
        """
        code = DTMF_EVENTS.find(digit.upper()) if len(digit) == 1 else -1
        if code < 0:
            raise ValueError(f"not a DTMF digit: {digit!r}")
        if not 0 <= te_pt <= 0x7F:
            raise ValueError(f"payload type {te_pt} is outside 0-127")
        if not 0 <= volume <= 0x3F:
            raise ValueError("volume is 0-63 (-dBm0)")
        total = duration_ms * self.clock_rate // 1000
        if not 0 < total <= 0xFFFF:
            raise ValueError(f"duration {duration_ms} ms does not fit the 16-bit duration field")
        step = _UPDATE_MS * self.clock_rate // 1000
        reports = [TelephoneEvent(code, False, volume, d) for d in range(step, total, step)]
        reports += [TelephoneEvent(code, True, volume, total)] * _END_REPEATS
        onset = self._timestamp
        packets = [self._next(te_pt, onset, i == 0, build_telephone_event(r)) for i, r in enumerate(reports)]
        self._timestamp = (onset + total) & 0xFFFFFFFF
        return packets


class DtmfReceiver:
    """RFC 4733 receive side: each DTMF event reported once, whichever of its packets arrives first."""

    def __init__(self, payload_type: int | None = None, *, memory: int = 64) -> None:
        self.payload_type = payload_type  # when set, packets of other payload types are ignored
        self._memory = memory
        # Events already reported, by (SSRC, onset timestamp): later updates and the repeated
        # end packets of the same event carry that same key.
        self._seen: OrderedDict[tuple[int, int], None] = OrderedDict()

    def feed(self, pkt: RtpPacket) -> str | None:
        """The digit ('0'-'9', '*', '#', 'A'-'D') when `pkt` is the first seen of a new event, else None."""
        if self.payload_type is not None and pkt.payload_type != self.payload_type:
            return None
        if len(pkt.payload) < _EVENT.size:
            return None
        key = (pkt.ssrc, pkt.timestamp)
        if key in self._seen:
            return None
        self._seen[key] = None
        while len(self._seen) > self._memory:
            self._seen.popitem(last=False)
        # Only the first report is read: senders put one event per packet in practice; packing
        # several (RFC 4733 2.5.1.5) is optional and not handled here.
        return parse_telephone_event(pkt.payload).digit
