"""Checks on a WebRTC SDP offer before any socket is opened (sans-I/O): size, shape, audio, codecs."""

from __future__ import annotations

import re
from dataclasses import dataclass

# What aiortc can decode and encode for audio; Opus is preferred by both sides.
SUPPORTED_AUDIO_CODECS = ("opus", "PCMU", "PCMA")
_RTPMAP = re.compile(r"^a=rtpmap:(\d+) ([^/\s]+)/(\d+)", re.MULTILINE)
_LINE = re.compile(r"^[a-z]=.*$")
_TOKEN = re.compile(r"^[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]{1,64}$")  # RFC 4566 token: what a=mid may be
_KINDS = ("audio", "video", "application")


class SdpError(ValueError):
    """An offer we refuse, with a message fit for the caller and an error code."""

    def __init__(self, message: str, code: str = "invalid_sdp") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class OfferInfo:
    audio_codecs: tuple[str, ...]  # the offered audio codecs we can use, in the offer's order
    has_data_channel: bool


def check_offer(raw: bytes, max_bytes: int) -> tuple[str, OfferInfo]:
    """Validate an SDP offer; returns it as text and what it offers. Raises SdpError."""
    if not raw.strip():
        raise SdpError("the request body is empty; send the SDP offer (Content-Type: application/sdp)")
    if len(raw) > max_bytes:
        raise SdpError(f"SDP offer of {len(raw)} bytes exceeds {max_bytes}", "sdp_too_large")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SdpError("the SDP offer is not UTF-8 text") from None
    # str.splitlines() also splits at U+2028, U+001E...: SDP lines end at CRLF or LF only.
    lines = [ln.rstrip("\r") for ln in text.strip("\r\n\t ").split("\n")]
    if not lines or lines[0] != "v=0":
        raise SdpError("malformed SDP: an offer starts with the line 'v=0'")
    bad = next((ln for ln in lines if not _LINE.match(ln)), None)
    if bad is not None:
        raise SdpError(f"malformed SDP: line {bad[:60]!r} is not of the form 'x=value'")
    sections = _media_sections(lines)
    if not sections:
        raise SdpError("malformed SDP: the offer has no media sections (m= lines)")
    audio = [s for s in sections if s[0].startswith("m=audio ") and not s[0].startswith("m=audio 0 ")]
    if not audio:
        raise SdpError("the offer has no audio; add a microphone track (or an audio transceiver)", "no_audio")
    session_attrs = "\n".join(lines[: _first_media(lines)])
    for attr in ("ice-ufrag", "ice-pwd", "fingerprint"):
        if f"a={attr}:" not in session_attrs and not all(f"a={attr}:" in "\n".join(s) for s in sections):
            raise SdpError(f"malformed SDP: missing a={attr} (WebRTC needs ICE and DTLS)")
    offered: list[str] = []
    for section in audio:
        for _pt, name, _rate in _RTPMAP.findall("\n".join(section)):
            if name not in offered:
                offered.append(name)
    usable = tuple(n for n in offered if n.lower() in {c.lower() for c in SUPPORTED_AUDIO_CODECS})
    if not usable:
        raise SdpError(f"no supported audio codec offered (got {', '.join(offered) or 'none'}); "
                       f"offer one of {', '.join(SUPPORTED_AUDIO_CODECS)}", "unsupported_codec")
    has_dc = any(s[0].startswith("m=application ") and "webrtc-datachannel" in s[0] for s in sections)
    _check_for_aiortc(text)
    return text, OfferInfo(usable, has_dc)


def _check_for_aiortc(text: str) -> None:
    """What aiortc's parser and `setRemoteDescription` take for granted, checked on its own parse:
    an offer that fails here made aiortc fail half-way through building a connection (a 500)."""
    from aiortc.sdp import SessionDescription

    try:
        description = SessionDescription.parse(text)
    except Exception as exc:  # its parser asserts, indexes and int()s without checking
        raise SdpError(f"malformed SDP: {type(exc).__name__} {str(exc)[:80]}".rstrip()) from None
    mids: list[str] = []
    for i, media in enumerate(description.media):
        where = f"media section {i} ({media.kind})"
        if media.kind not in _KINDS:
            raise SdpError(f"malformed SDP: {where} is not one of {', '.join(_KINDS)}")
        mid = media.rtp.muxId
        if not mid or not _TOKEN.match(mid):
            raise SdpError(f"malformed SDP: {where} needs an a=mid that is a token, not {mid!r}")
        if mid in mids:
            raise SdpError(f"malformed SDP: a=mid:{mid} names two media sections")
        mids.append(mid)
        if media.dtls is None or not media.dtls.fingerprints:
            raise SdpError(f"malformed SDP: {where} needs a=fingerprint and a=setup (DTLS)")
        if media.ice is None or not media.ice.usernameFragment or not media.ice.password:
            raise SdpError(f"malformed SDP: {where} needs a=ice-ufrag and a=ice-pwd")
        if media.kind != "application" and not media.rtcp_mux:
            raise SdpError(f"malformed SDP: {where} needs a=rtcp-mux (WebRTC multiplexes RTCP)")
        if media.kind != "application" and media.direction is None:
            raise SdpError(f"malformed SDP: {where} needs its direction (a=sendrecv, a=sendonly...)")
        if media.kind == "application" and media.profile != "DTLS/SCTP" and media.sctp_port is None:
            raise SdpError(f"malformed SDP: {where} needs a=sctp-port")
    for group in description.group:
        unknown = [m for m in group.items if m not in mids]
        if unknown:
            raise SdpError(f"malformed SDP: a=group:{group.semantic} names unknown mid {str(unknown[0])[:40]!r}")


def _first_media(lines: list[str]) -> int:
    return next((i for i, ln in enumerate(lines) if ln.startswith("m=")), len(lines))


def _media_sections(lines: list[str]) -> list[list[str]]:
    sections: list[list[str]] = []
    for ln in lines[_first_media(lines):]:
        if ln.startswith("m="):
            sections.append([ln])
        elif sections:
            sections[-1].append(ln)
    return sections
