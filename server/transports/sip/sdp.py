"""SDP offer/answer for a G.711 voice endpoint, sans I/O (RFC 4566 syntax, RFC 3264 rules).

Reads the caller's offer (first usable audio m-line, connection address, payload types, rtpmap,
fmtp, ptime, direction and telephone-event), picks PCMU or PCMA in the offer's order, and writes
the answer: one m-line per offered m-line, only audio accepted, the direction mirrored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# RFC 3551 static payload types (only the ones an offer may list without an rtpmap).
STATIC_PAYLOADS: dict[int, tuple[str, int]] = {
    0: ("PCMU", 8000),
    3: ("GSM", 8000),
    4: ("G723", 8000),
    8: ("PCMA", 8000),
    9: ("G722", 8000),
    13: ("CN", 8000),
    18: ("G729", 8000),
}
G711 = ("PCMU", "PCMA")
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
# RTP/AVPF is RTP/AVP plus feedback an endpoint may ignore; anything SAVP needs SRTP we lack.
_PROFILES = ("RTP/AVP", "RTP/AVPF")
_MIRROR = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly",
           "inactive": "inactive"}


_PTIME = re.compile(r"([0-9]{1,4})(?:\.[0-9]{0,3})?")


def _num(text: str, max_len: int) -> bool:
    """ASCII digits only, at most `max_len` of them (str.isdigit alone accepts '²')."""
    return 0 < len(text) <= max_len and text.isascii() and text.isdigit()


class SdpError(ValueError):
    """An offer we cannot use: `status` 400 (malformed) or 488 (nothing acceptable), `code`."""

    def __init__(self, message: str, *, status: int = 400, code: str = "malformed") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class SdpMedia:
    """One m-line as offered: media type, port, transport profile and format list."""

    kind: str
    port: int
    protocol: str
    formats: tuple[str, ...]


@dataclass
class SdpOffer:
    """The parts of an offer a G.711 answer needs, plus every m-line to mirror in the answer."""

    address: str
    port: int
    payloads: list[int]
    rtpmap: dict[int, tuple[str, int]]
    telephone_event: int | None
    ptime: int
    direction: str
    session_id: str
    session_version: int
    address_type: str = "IP4"
    protocol: str = "RTP/AVP"
    fmtp: dict[int, str] = field(default_factory=dict)
    media: list[SdpMedia] = field(default_factory=list)
    audio_index: int = 0

    @property
    def on_hold(self) -> bool:
        """True when the peer puts us on hold: sendonly/inactive, or the old c=0.0.0.0 style."""
        return self.direction in ("sendonly", "inactive") or self.address in ("0.0.0.0", "::")


def parse_offer(body: bytes, *, max_bytes: int = 16384) -> SdpOffer:
    """Parse an SDP offer; SdpError(400) if malformed, SdpError(488) if it has no usable audio."""
    if len(body) > max_bytes:
        raise SdpError(f"SDP of {len(body)} bytes exceeds {max_bytes}", code="too_large")
    text = bytes(body).decode("utf-8", errors="replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != "v=0":
        raise SdpError("SDP must start with v=0", code="bad_version")

    session_id, session_version = "0", 0
    session_conn: tuple[str, str] | None = None
    session_ptime: int | None = None
    session_dir: str | None = None
    media: list[SdpMedia] = []
    # Per m-line attributes, indexed like `media`.
    conns: list[tuple[str, str] | None] = []
    rtpmaps: list[dict[int, tuple[str, int]]] = []
    fmtps: list[dict[int, str]] = []
    ptimes: list[int | None] = []
    dirs: list[str | None] = []

    for line in lines[1:]:
        if len(line) < 2 or line[1] != "=":
            raise SdpError(f"bad SDP line {line[:40]!r}", code="bad_line")
        kind, value = line[0], line[2:].strip()
        in_media = bool(media)
        if kind == "o":
            parts = value.split()
            if len(parts) != 6:
                raise SdpError("bad o= line", code="bad_origin")
            session_id = parts[1]
            session_version = int(parts[2]) if _num(parts[2], 20) else 0
        elif kind == "c":
            conn = _connection(value)
            if in_media:
                conns[-1] = conn
            else:
                session_conn = conn
        elif kind == "m":
            media.append(_media_line(value))
            conns.append(None)
            rtpmaps.append({})
            fmtps.append({})
            ptimes.append(None)
            dirs.append(None)
        elif kind == "a":
            name, _, arg = value.partition(":")
            name = name.strip().lower()
            if name in DIRECTIONS:
                if in_media:
                    dirs[-1] = name
                else:
                    session_dir = name
            elif name == "ptime":
                ptime = _ptime(arg)
                if in_media:
                    ptimes[-1] = ptime if ptime is not None else ptimes[-1]
                elif ptime is not None:
                    session_ptime = ptime
            elif name == "rtpmap" and in_media:
                parsed = _rtpmap(arg)
                # A garbled rtpmap only loses that mapping: the static table still applies.
                if parsed is not None:
                    rtpmaps[-1].setdefault(parsed[0], parsed[1])
            elif name == "fmtp" and in_media:
                pt_text, _, params = arg.strip().partition(" ")
                if _num(pt_text, 3) and int(pt_text) < 128:
                    fmtps[-1].setdefault(int(pt_text), params.strip())

    if not media:
        raise SdpError("no m= line", status=488, code="no_audio")
    index = _usable_audio(media)
    audio = media[index]
    audio_conn = conns[index] or session_conn
    if audio_conn is None:
        raise SdpError("no c= line for the audio stream", code="no_connection")

    payloads: list[int] = []
    for fmt in audio.formats:
        if not _num(fmt, 3) or int(fmt) > 127:
            raise SdpError(f"bad RTP payload type {fmt!r}", code="bad_payload")
        if int(fmt) not in payloads:
            payloads.append(int(fmt))
    rtpmap = {pt: STATIC_PAYLOADS[pt] for pt in payloads if pt in STATIC_PAYLOADS}
    rtpmap.update({pt: enc for pt, enc in rtpmaps[index].items() if pt in payloads})
    telephone_event = next(
        (pt for pt in payloads
         if pt in rtpmap and rtpmap[pt][0].lower() == "telephone-event" and rtpmap[pt][1] == 8000),
        None,
    )
    ptime = ptimes[index] or session_ptime or 20
    return SdpOffer(
        address=audio_conn[1], port=audio.port, payloads=payloads, rtpmap=rtpmap,
        telephone_event=telephone_event, ptime=ptime,
        direction=dirs[index] or session_dir or "sendrecv",
        session_id=session_id, session_version=session_version, address_type=audio_conn[0],
        protocol=audio.protocol,
        fmtp={pt: params for pt, params in fmtps[index].items() if pt in payloads},
        media=media, audio_index=index,
    )


def _connection(value: str) -> tuple[str, str]:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError("bad c= line", code="bad_connection")
    # Multicast `addr/ttl[/n]`: keep the address alone.
    address = parts[2].split("/", 1)[0]
    if not address:
        raise SdpError("bad c= line", code="bad_connection")
    return parts[1], address


def _media_line(value: str) -> SdpMedia:
    parts = value.split()
    if len(parts) < 4:
        raise SdpError("bad m= line", code="bad_media")
    port_text = parts[1].split("/", 1)[0]
    if not _num(port_text, 5) or int(port_text) > 65535:
        raise SdpError("bad m= port", code="bad_media")
    return SdpMedia(kind=parts[0].lower(), port=int(port_text), protocol=parts[2],
                    formats=tuple(parts[3:]))


def _usable_audio(media: list[SdpMedia]) -> int:
    saw_audio = False
    for i, m in enumerate(media):
        if m.kind != "audio":
            continue
        saw_audio = True
        if m.port != 0 and m.protocol.upper() in _PROFILES:
            return i
    if saw_audio:
        raise SdpError("no plain RTP audio stream (SRTP or disabled)", status=488,
                       code="unsupported_transport")
    raise SdpError("no audio stream", status=488, code="no_audio")


def _ptime(arg: str) -> int | None:
    # Some offers write fractional ptimes ("20.0"); anything else is ignored.
    match = _PTIME.fullmatch(arg.strip())
    if not match:
        return None
    value = int(match.group(1))
    return value if 1 <= value <= 1000 else None


def _rtpmap(arg: str) -> tuple[int, tuple[str, int]] | None:
    pt_text, _, spec = arg.strip().partition(" ")
    parts = spec.strip().split("/")
    if not _num(pt_text, 3) or int(pt_text) > 127 or len(parts) < 2 or not _num(parts[1], 9):
        return None
    return int(pt_text), (parts[0], int(parts[1]))


def choose_codec(offer: SdpOffer) -> tuple[int, str]:
    """The first G.711 payload in the offer's order: (payload type, "PCMU" or "PCMA"); else 488."""
    for pt in offer.payloads:
        encoding, rate = offer.rtpmap.get(pt, ("", 0))
        if encoding.upper() in G711 and rate == 8000:
            return pt, encoding.upper()
    raise SdpError("no G.711 codec offered", status=488, code="no_common_codec")


def answer_direction(offer: SdpOffer) -> str:
    """The direction an answer must carry (RFC 3264 section 6.1): sendonly -> recvonly etc."""
    if offer.direction == "sendrecv" and offer.address in ("0.0.0.0", "::"):
        return "recvonly"  # RFC 2543 hold: the peer wants no media sent to it
    return _MIRROR.get(offer.direction, "sendrecv")


def build_answer(offer: SdpOffer, *, address: str, port: int, codec_pt: int, session_id: int,
                 version: int, direction: str | None = None) -> bytes:
    """The SDP answer: the chosen G.711 codec (+ telephone-event as offered), ptime 20;
    `direction` defaults to the mirror of the offer's (see `answer_direction`)."""
    if codec_pt not in offer.payloads:
        raise ValueError(f"payload type {codec_pt} was not offered")
    encoding, rate = offer.rtpmap.get(codec_pt, ("", 0))
    if encoding.upper() not in G711 or rate != 8000:
        raise ValueError(f"payload type {codec_pt} is not G.711")
    if not 0 < port < 65536:
        raise ValueError(f"bad RTP port {port}")
    chosen = direction or answer_direction(offer)
    if chosen not in DIRECTIONS:
        raise ValueError(f"bad direction {chosen!r}")
    addr_type = "IP6" if ":" in address else "IP4"
    lines = [
        "v=0",
        f"o=kombain {session_id} {version} IN {addr_type} {address}",
        "s=kombain",
        f"c=IN {addr_type} {address}",
        "t=0 0",
    ]
    media = offer.media or [SdpMedia("audio", offer.port, offer.protocol,
                                     tuple(str(pt) for pt in offer.payloads))]
    for i, m in enumerate(media):
        if i != offer.audio_index:
            # RFC 3264 section 6: every offered stream gets an m-line; port 0 declines it.
            lines.append(f"m={m.kind} 0 {m.protocol} {m.formats[0] if m.formats else '0'}")
            continue
        pts = [codec_pt]
        if offer.telephone_event is not None:
            pts.append(offer.telephone_event)
        lines.append(f"m=audio {port} {offer.protocol} {' '.join(str(pt) for pt in pts)}")
        lines.append(f"a=rtpmap:{codec_pt} {encoding.upper()}/8000")
        if offer.telephone_event is not None:
            lines.append(f"a=rtpmap:{offer.telephone_event} telephone-event/8000")
            lines.append(f"a=fmtp:{offer.telephone_event} 0-16")
        lines.append("a=ptime:20")
        lines.append(f"a={chosen}")
    return ("\r\n".join(lines) + "\r\n").encode("ascii")
