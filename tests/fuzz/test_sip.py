"""Fuzz the SIP stack: message parsing and header helpers, SDP offers, digest credentials, and the
UAS state machine (with digest auth on) fed mutated valid datagrams."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kombain.server.transports.sip.auth import DigestAuth, parse_auth_params
from kombain.server.transports.sip.message import (
    LIST_HEADERS,
    SipError,
    parse_message,
    parse_name_addr,
    parse_params,
    parse_via,
    serialize,
    split_list,
    stamp_via,
)
from kombain.server.transports.sip.protocol import (
    CallEnded,
    CallEstablished,
    IncomingCall,
    InfoDtmf,
    Reoffer,
    Send,
)
from kombain.server.transports.sip.sdp import SdpError, build_answer, choose_codec, parse_offer
from tests.fuzz.strategies import KIB64, fuzz, mutated, timed
from tests.unit.transports.sip.test_sip_protocol import (
    NAT,
    PROXIED_INVITE,
    RFC3665_INVITE,
    SIPP_INVITE,
    SIPP_OPTIONS,
    Clock,
    baresip_invite,
    baresip_request,
    make,
    wire,
)
from tests.unit.transports.sip.test_sip_sdp import BARESIP

CORPUS = [baresip_invite(), wire(SIPP_INVITE), wire(RFC3665_INVITE), wire(PROXIED_INVITE),
          wire(SIPP_OPTIONS, n=1), baresip_request("BYE", "x", 2),
          baresip_request("INFO", "x", 3, body="Signal=5\n", content_type="application/dtmf-relay"),
          b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\n"
          b"To: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"]
datagrams = st.one_of(mutated(CORPUS), st.binary(max_size=600))
header_text = st.one_of(st.text(max_size=120),
                        st.lists(st.sampled_from(['"', "\\", "<", ">", ";", ",", "=", " ", "sip:a@b", "tag",
                                                  "SIP/2.0/UDP", "[::1]", ":5060", "é", "\t"]),
                                 max_size=30).map("".join))


@fuzz(500)
@given(data=datagrams)
def test_parse_message_raises_only_sip_error(data: bytes) -> None:
    try:
        msg = parse_message(data)
    except SipError as exc:
        assert 400 <= exc.status < 600
        return
    # Every header of a parsed message goes through the helpers the UAS uses on it.
    for name, value in msg.headers:
        for fn in (parse_name_addr, parse_via, stamp_via_any):
            try:
                fn(value)
            except SipError:
                pass
        parse_params(value)
        if name in LIST_HEADERS:
            split_list(value)
    msg.call_id  # noqa: B018 - may be absent: a property, not a parser
    try:
        serialize(msg)
    except ValueError:
        pass


def stamp_via_any(value: str) -> str:
    return stamp_via(value, ("198.51.100.1", 5060))


@fuzz(400)
@given(value=header_text)
def test_header_helpers_raise_only_sip_error(value: str) -> None:
    for fn in (parse_name_addr, parse_via, stamp_via_any):
        try:
            fn(value)
        except SipError:
            pass
    assert isinstance(parse_params(value), dict)
    assert all(part for part in split_list(value))


@fuzz(500)
@given(body=st.one_of(mutated([BARESIP, wire(SIPP_INVITE).partition(b"\r\n\r\n")[2]]), st.binary(max_size=300)))
def test_parse_offer_raises_only_sdp_error(body: bytes) -> None:
    try:
        offer = parse_offer(body)
    except SdpError as exc:
        assert exc.status in (400, 488)
        return
    try:
        pt, _ = choose_codec(offer)
    except SdpError:
        return
    build_answer(offer, address="192.0.2.10", port=40000, codec_pt=pt, session_id=1, version=1)


_CHALLENGE_AUTH = DigestAuth({"alice": "secret"}, "kombain", clock=Clock())
_VALID_AUTH = ('Digest username="alice", realm="kombain", nonce="{n}", uri="sip:a@b", '
               'response="0123456789abcdef0123456789abcdef", algorithm=MD5, cnonce="8b3ac7f2", qop=auth, '
               'nc=00000001')


@fuzz(500)
@given(value=st.one_of(header_text, mutated([_VALID_AUTH.format(n=_CHALLENGE_AUTH.make_nonce()).encode()])
                       .map(lambda b: b.decode("utf-8", "replace"))))
def test_digest_parsing_never_raises(value: str) -> None:
    parsed = parse_auth_params(value)
    assert parsed is None or isinstance(parsed[1], dict)
    result = _CHALLENGE_AUTH.check("INVITE", value, uri="sip:a@b")
    assert result.username is None  # a random or mutated response never matches the digest


_ACTIONS = (Send, IncomingCall, CallEnded, CallEstablished, Reoffer, InfoDtmf)


def test_uas_with_digest_auth_survives_mutated_datagrams(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    proto, _ = make(auth=DigestAuth({"alice": "secret"}, "kombain", clock=clock), max_calls=20)
    nonce = _CHALLENGE_AUTH.make_nonce()
    header = _VALID_AUTH.format(n=nonce).encode()
    corpus = CORPUS + [CORPUS[0].replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\nAuthorization: "
                                         + header + b"\r\n")]

    @fuzz(400)
    @given(data=st.one_of(mutated(corpus), st.binary(max_size=600)))
    def check(data: bytes) -> None:
        actions = proto.datagram_received(data, NAT)
        assert all(isinstance(a, _ACTIONS) for a in actions)
        clock.now += 0.5
        proto.timer(clock.now)

    with caplog.at_level(logging.ERROR):
        check()
    assert not caplog.records, caplog.records[0].getMessage()


def test_bounded_work_on_64k_inputs() -> None:
    big_headers = (b"INVITE sip:a@b SIP/2.0\r\n" + b"Via: SIP/2.0/UDP h;branch=" + b";x" * 900 + b"\r\n") * 1
    hostile = [
        b"INVITE sip:a@b SIP/2.0\r\n" + b"X: y\r\n" * (KIB64 // 6),
        b"INVITE sip:a@b SIP/2.0\r\n" + b"X: y\r\n " * (KIB64 // 7),  # folded continuations
        b"\r\n" * (KIB64 // 2),
        b"A" * KIB64,
        big_headers + b"\r\n" * 10,
    ]
    for data in hostile:
        timed(lambda data=data: parse_message(data, max_bytes=1 << 20, max_line=1 << 20), 0.5)
    proto, _ = make()
    for data in hostile + [CORPUS[0] + b"x" * KIB64]:
        timed(lambda data=data: proto.datagram_received(data, NAT), 0.5)
    texts = ['"' + "\\" * KIB64, "<" * KIB64, ";" * KIB64, ",a" * (KIB64 // 2), '"a" <' + "sip:x" * 10000,
             "SIP/2.0/UDP " + " " * KIB64 + "x", "SIP / 2.0 / UDP" + "\t" * KIB64, "a=" * (KIB64 // 2)]
    for text in texts:
        for fn in (parse_name_addr, parse_via, parse_params, split_list, stamp_via_any):
            timed(lambda fn=fn, text=text: fn(text), 0.5)
        timed(lambda text=text: parse_auth_params("Digest " + text), 0.5)
        timed(lambda text=text: _CHALLENGE_AUTH.check("INVITE", "Digest " + text), 0.5)
    sdp = [b"v=0\r\n" + b"a=rtpmap:0 PCMU/8000\r\n" * (KIB64 // 22), b"v=0\r\n" + b"m=audio 1 RTP/AVP 0\r\n" * 3000,
           b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 1 RTP/AVP " + b"0 " * (KIB64 // 2) + b"\r\n"]
    for body in sdp:
        timed(lambda body=body: parse_offer(body, max_bytes=1 << 20), 0.5)
