"""server.transports.sip_sdp: SDP offer parsing, G.711 choice and the answer."""

from __future__ import annotations

import pytest

from kombain.server.transports.sip.sdp import (
    SdpError,
    answer_direction,
    build_answer,
    choose_codec,
    parse_offer,
)


def sdp(text: str) -> bytes:
    return text.strip("\n").replace("\n", "\r\n").encode() + b"\r\n"


# baresip 0.6.3's offer (baresip issue #813), with its session-level attributes.
BARESIP = sdp("""
v=0
o=- 1140145081 1649997976 IN IP4 10.0.2.15
s=-
c=IN IP4 10.0.2.15
t=0 0
a=tool:baresip 0.6.3
m=audio 16906 RTP/AVP 0 8 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=sendrecv
a=label:1
a=rtcp-rsize
a=ssrc:1613256890 cname:sip:12054849118@sip.ringcentral.com
a=ptime:20
""")

# An rtpengine-transcoded offer from baresip issue #718: PCMA first, opus too.
PCMA_FIRST = sdp("""
v=0
o=- 686726419 1742984825 IN IP4 192.168.43.99
s=-
c=IN IP4 192.168.43.99
t=0 0
m=audio 30244 RTP/AVP 8 0 101 96
c=IN IP4 192.168.43.99
a=rtpmap:8 PCMA/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=rtpmap:96 opus/48000/2
a=fmtp:101 0-15
""")

# SIPp's default uac scenario, and the same with the static payload's rtpmap left out.
SIPP = sdp("""
v=0
o=user1 53655765 2353687637 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio 6000 RTP/AVP 0
a=rtpmap:0 PCMU/8000
""")

OPUS_ONLY = sdp("""
v=0
o=- 335166208 1601566012 IN IP4 192.26.134.10
s=-
c=IN IP4 192.26.134.10
t=0 0
m=audio 30000 RTP/AVP 96
c=IN IP4 192.26.134.10
a=rtpmap:96 opus/48000/2
""")

# Linphone's DTLS-SRTP offer (baresip issue #763), trimmed.
LINPHONE_SRTP = sdp("""
v=0
o=1005 3435 2813 IN IP4 140.143.203.122
s=Talk
c=IN IP4 140.143.203.122
t=0 0
m=audio 49933 UDP/TLS/RTP/SAVP 8 101
a=rtpmap:101 telephone-event/8000
a=setup:actpass
""")

# baresip's audio + video offer (baresip issue #2073), shortened.
AUDIO_VIDEO = sdp("""
v=0
o=- 699470948 321978106 IN IP4 192.168.238.215
s=-
c=IN IP4 192.168.238.215
t=0 0
m=audio 11968 RTP/AVP 96 9 0 8 102
a=rtpmap:96 opus/48000/2
a=rtpmap:102 telephone-event/8000
a=fmtp:102 0-15
a=ptime:30
m=video 48188 RTP/AVP 96
a=rtpmap:96 VP8/90000
""")


def test_parses_baresip_offer() -> None:
    offer = parse_offer(BARESIP)
    assert (offer.address, offer.port, offer.address_type) == ("10.0.2.15", 16906, "IP4")
    assert offer.payloads == [0, 8, 101]
    assert offer.rtpmap[101] == ("telephone-event", 8000)
    assert offer.telephone_event == 101
    assert offer.fmtp == {101: "0-15"}
    assert (offer.ptime, offer.direction, offer.on_hold) == (20, "sendrecv", False)
    assert (offer.session_id, offer.session_version) == ("1140145081", 1649997976)
    assert choose_codec(offer) == (0, "PCMU")


def test_codec_choice_follows_the_offer_order() -> None:
    assert choose_codec(parse_offer(PCMA_FIRST)) == (8, "PCMA")
    assert choose_codec(parse_offer(AUDIO_VIDEO)) == (0, "PCMU")


def test_static_payloads_need_no_rtpmap() -> None:
    offer = parse_offer(SIPP.replace(b"a=rtpmap:0 PCMU/8000\r\n", b""))
    assert offer.rtpmap == {0: ("PCMU", 8000)}
    assert choose_codec(offer) == (0, "PCMU")
    assert parse_offer(SIPP).telephone_event is None
    # A dynamic payload type may carry G.711 too (names are case-insensitive).
    dynamic = parse_offer(SIPP.replace(b"RTP/AVP 0", b"RTP/AVP 97")
                          .replace(b"a=rtpmap:0 PCMU/8000", b"a=rtpmap:97 pcma/8000"))
    assert choose_codec(dynamic) == (97, "PCMA")


def test_no_g711_is_488() -> None:
    offer = parse_offer(OPUS_ONLY)
    with pytest.raises(SdpError) as info:
        choose_codec(offer)
    assert (info.value.status, info.value.code) == (488, "no_common_codec")


def test_srtp_only_is_488() -> None:
    with pytest.raises(SdpError) as info:
        parse_offer(LINPHONE_SRTP)
    assert (info.value.status, info.value.code) == (488, "unsupported_transport")


def test_answer_keeps_telephone_event_pt_and_ptime_20() -> None:
    offer = parse_offer(AUDIO_VIDEO)
    pt, _ = choose_codec(offer)
    answer = build_answer(offer, address="198.51.100.5", port=40000, codec_pt=pt,
                          session_id=42, version=1)
    lines = answer.decode().split("\r\n")
    assert lines[:5] == ["v=0", "o=kombain 42 1 IN IP4 198.51.100.5", "s=kombain",
                         "c=IN IP4 198.51.100.5", "t=0 0"]
    assert "m=audio 40000 RTP/AVP 0 102" in lines
    assert "a=rtpmap:0 PCMU/8000" in lines
    assert "a=rtpmap:102 telephone-event/8000" in lines and "a=fmtp:102 0-16" in lines
    assert "a=ptime:20" in lines and "a=sendrecv" in lines
    # RFC 3264 section 6: the video stream is declined, not left out.
    assert lines.index("m=video 0 RTP/AVP 96") > lines.index("m=audio 40000 RTP/AVP 0 102")
    assert answer.endswith(b"\r\n")
    # The answer is itself valid SDP.
    again = parse_offer(answer)
    assert (again.port, again.payloads, again.telephone_event) == (40000, [0, 102], 102)


def test_answer_without_telephone_event() -> None:
    offer = parse_offer(SIPP)
    answer = build_answer(offer, address="198.51.100.5", port=40002, codec_pt=0,
                          session_id=1, version=2).decode()
    assert "m=audio 40002 RTP/AVP 0\r\n" in answer
    assert "telephone-event" not in answer


def test_answer_refuses_what_was_not_offered() -> None:
    offer = parse_offer(PCMA_FIRST)
    with pytest.raises(ValueError):
        build_answer(offer, address="198.51.100.5", port=4000, codec_pt=18, session_id=1, version=1)
    with pytest.raises(ValueError):
        build_answer(offer, address="198.51.100.5", port=4000, codec_pt=96, session_id=1, version=1)
    with pytest.raises(ValueError):
        build_answer(offer, address="198.51.100.5", port=0, codec_pt=8, session_id=1, version=1)


@pytest.mark.parametrize(
    ("change", "direction", "answer"),
    [
        (b"a=sendrecv", "sendonly", "recvonly"),
        (b"a=sendrecv", "inactive", "inactive"),
        (b"a=sendrecv", "recvonly", "sendonly"),
    ],
)
def test_hold_directions(change: bytes, direction: str, answer: str) -> None:
    offer = parse_offer(BARESIP.replace(change, f"a={direction}".encode()))
    assert offer.direction == direction
    assert offer.on_hold is (direction in ("sendonly", "inactive"))
    assert answer_direction(offer) == answer
    built = build_answer(offer, address="198.51.100.5", port=4000, codec_pt=0, session_id=1,
                         version=2)
    assert f"a={answer}\r\n".encode() in built


def test_rfc2543_hold_with_zero_address() -> None:
    offer = parse_offer(BARESIP.replace(b"c=IN IP4 10.0.2.15", b"c=IN IP4 0.0.0.0"))
    assert offer.address == "0.0.0.0" and offer.on_hold
    assert answer_direction(offer) == "recvonly"


def test_session_level_direction_and_media_level_connection() -> None:
    text = PCMA_FIRST.replace(b"t=0 0\r\n", b"t=0 0\r\na=sendonly\r\n").replace(
        b"m=audio 30244 RTP/AVP 8 0 101 96\r\nc=IN IP4 192.168.43.99",
        b"m=audio 30244 RTP/AVP 8 0 101 96\r\nc=IN IP4 203.0.113.9")
    offer = parse_offer(text)
    assert offer.address == "203.0.113.9"
    assert offer.direction == "sendonly"


def test_ipv6_and_multicast_ttl() -> None:
    offer = parse_offer(SIPP.replace(b"c=IN IP4 127.0.0.1", b"c=IN IP6 2001:db8::1"))
    assert (offer.address, offer.address_type) == ("2001:db8::1", "IP6")
    assert parse_offer(SIPP.replace(b"c=IN IP4 127.0.0.1", b"c=IN IP4 224.2.1.1/127")).address \
        == "224.2.1.1"
    answer = build_answer(offer, address="2001:db8::5", port=4000, codec_pt=0, session_id=1,
                          version=1)
    assert b"c=IN IP6 2001:db8::5\r\n" in answer


def test_first_usable_audio_line_wins() -> None:
    text = SIPP.replace(b"m=audio 6000 RTP/AVP 0",
                        b"m=audio 0 RTP/AVP 0\r\nm=audio 6002 RTP/AVP 8")
    offer = parse_offer(text)
    assert (offer.port, offer.payloads, offer.audio_index) == (6002, [8], 1)
    answer = build_answer(offer, address="198.51.100.5", port=4000, codec_pt=8, session_id=1,
                          version=1).decode()
    assert answer.index("m=audio 0 RTP/AVP 0") < answer.index("m=audio 4000 RTP/AVP 8")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"", 400, "bad_version"),
        (SIPP.replace(b"v=0", b"v=1"), 400, "bad_version"),
        (SIPP.replace(b"c=IN IP4 127.0.0.1\r\n", b""), 400, "no_connection"),
        (SIPP.replace(b"c=IN IP4 127.0.0.1", b"c=IN XX 127.0.0.1"), 400, "bad_connection"),
        (SIPP.replace(b"m=audio 6000", b"m=audio 70000"), 400, "bad_media"),
        (SIPP.replace(b"m=audio 6000 RTP/AVP 0", b"m=audio 6000 RTP/AVP"), 400, "bad_media"),
        (SIPP.replace(b"RTP/AVP 0", b"RTP/AVP 0 x"), 400, "bad_payload"),
        (SIPP.replace(b"RTP/AVP 0", b"RTP/AVP 0 128"), 400, "bad_payload"),
        (SIPP.replace(b"s=-", b"garbage"), 400, "bad_line"),
        (SIPP.replace(b"o=user1 53655765 2353687637 IN IP4 127.0.0.1", b"o=x"), 400, "bad_origin"),
        (SIPP.replace(b"m=audio", b"m=video"), 488, "no_audio"),
        (b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\n", 488, "no_audio"),
        (SIPP + b"a=x:" + b"y" * 17000 + b"\r\n", 400, "too_large"),
    ],
)
def test_malformed_offers(body: bytes, status: int, code: str) -> None:
    with pytest.raises(SdpError) as info:
        parse_offer(body)
    assert (info.value.status, info.value.code) == (status, code)


def test_tolerates_odd_but_harmless_lines() -> None:
    text = BARESIP.replace(b"a=ptime:20", b"a=ptime:20.0").replace(
        b"a=rtpmap:8 PCMA/8000", b"a=rtpmap:8 garbage")
    offer = parse_offer(text.replace(b"\r\n", b"\n"))
    assert offer.ptime == 20
    assert offer.rtpmap[8] == ("PCMA", 8000)  # the static mapping survives a garbled rtpmap
    assert parse_offer(BARESIP.replace(b"a=ptime:20", b"a=ptime:\xb2")).ptime == 20
