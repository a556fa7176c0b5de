"""server.transports.sip.protocol: the UAS state machine, driven with datagrams and a fake clock."""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Iterable

import pytest

from kombain.server.transports.sip.auth import DigestAuth, parse_auth_params
from kombain.server.transports.sip.message import (
    SipMessage,
    parse_message,
    parse_name_addr,
    parse_via,
    response_for,
    serialize,
)
from kombain.server.transports.sip.protocol import (
    Action,
    CallEnded,
    CallEstablished,
    IncomingCall,
    InfoDtmf,
    Reoffer,
    Send,
    SipServerProtocol,
)
from kombain.server.transports.sip.sdp import build_answer, choose_codec

LOCAL = ("192.0.2.10", 5060)
NAT = ("203.0.113.7", 51847)  # where baresip's datagrams appear to come from
SIPP = ("127.0.0.1", 5061)
PROXY = ("140.143.203.122", 5060)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def wire(text: str, **fields: object) -> bytes:
    """A datagram from readable text: fields filled in, `{len}` set, CRLF line ends."""
    text = text.lstrip("\n")
    for key, value in fields.items():
        text = text.replace("{" + key + "}", str(value))
    head, _, body = text.partition("\n\n")
    body = body.replace("\n", "\r\n")
    head = head.replace("{len}", str(len(body.encode())))
    return (head.replace("\n", "\r\n") + "\r\n\r\n" + body).encode()


BARESIP_SDP = """\
v=0
o=- 1140145081 1649997976 IN IP4 10.0.2.15
s=-
c=IN IP4 {media_ip}
t=0 0
a=tool:baresip 0.6.3
m=audio 16906 RTP/AVP 0 8 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a={direction}
a=label:1
a=rtcp-rsize
a=ptime:20
"""

# baresip 0.6.3's INVITE (baresip issue #813), over UDP, straight to us from behind a NAT.
BARESIP_INVITE = """\
INVITE sip:kombain@192.0.2.10:5060 SIP/2.0
Via: SIP/2.0/UDP 10.0.2.15:38397;branch={branch};rport
Contact: <sip:alice-0x558d88079a80@10.0.2.15:38397>
Max-Forwards: 70
To: <sip:kombain@192.0.2.10>{to_tag}
From: "Alice" <sip:alice@example.com>;tag=ee03cef9bd5d5e10
Call-ID: 5bc8e228f70dc6be
CSeq: {cseq} INVITE
User-Agent: baresip v0.6.3 (x86_64/linux)
Allow: INVITE,ACK,BYE,CANCEL,OPTIONS,NOTIFY,SUBSCRIBE,INFO,MESSAGE,REFER
Supported:
Content-Type: application/sdp
Content-Length: {len}

""" + BARESIP_SDP

BARESIP_REQUEST = """\
{method} {uri} SIP/2.0
Via: SIP/2.0/UDP 10.0.2.15:38397;branch={branch};rport
Max-Forwards: 70
To: <sip:kombain@192.0.2.10>;tag={to_tag}
From: "Alice" <sip:alice@example.com>;tag=ee03cef9bd5d5e10
Call-ID: 5bc8e228f70dc6be
CSeq: {cseq} {method}
User-Agent: baresip v0.6.3 (x86_64/linux)
{extra}Content-Length: {len}

{body}"""

# SIPp's default uac scenario with its keywords filled in; no rport, so replies go to the Via.
SIPP_INVITE = """\
INVITE sip:service@192.0.2.10:5060 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-12345-1-0
From: sipp <sip:sipp@127.0.0.1:5061>;tag=12345SIPpTag001
To: service <sip:service@192.0.2.10:5060>
Call-ID: 1-12345@127.0.0.1
CSeq: 1 INVITE
Contact: sip:sipp@127.0.0.1:5061
Max-Forwards: 70
Subject: Performance Test
Content-Type: application/sdp
Content-Length: {len}

v=0
o=user1 53655765 2353687637 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio 6000 RTP/AVP 0
a=rtpmap:0 PCMU/8000
"""

SIPP_IN_DIALOG = """\
{method} sip:service@192.0.2.10:5060 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5061;branch={branch}
From: sipp <sip:sipp@127.0.0.1:5061>;tag=12345SIPpTag001
To: service <sip:service@192.0.2.10:5060>;tag={to_tag}
Call-ID: 1-12345@127.0.0.1
CSeq: {cseq} {method}
Contact: sip:sipp@127.0.0.1:5061
Max-Forwards: 70
Subject: Performance Test
Content-Length: 0

"""

# RFC 3665 section 3.8 style CANCEL (and the INVITE it cancels, F1 of section 3.1).
RFC3665_INVITE = """\
INVITE sip:bob@biloxi.example.com SIP/2.0
Via: SIP/2.0/UDP client.atlanta.example.com:5060;branch=z9hG4bK74bf9
Max-Forwards: 70
From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl
To: Bob <sip:bob@biloxi.example.com>
Call-ID: 3848276298220188511@atlanta.example.com
CSeq: 1 INVITE
Contact: <sip:alice@client.atlanta.example.com>
Content-Type: application/sdp
Content-Length: {len}

v=0
o=alice 2890844526 2890844526 IN IP4 client.atlanta.example.com
s=-
c=IN IP4 192.0.2.101
t=0 0
m=audio 49172 RTP/AVP 0
a=rtpmap:0 PCMU/8000
"""

RFC3665_CANCEL_OR_ACK = """\
{method} sip:bob@biloxi.example.com SIP/2.0
Via: SIP/2.0/UDP client.atlanta.example.com:5060;branch={branch}
Max-Forwards: 70
From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl
To: Bob <sip:bob@biloxi.example.com>{to_tag}
Call-ID: 3848276298220188511@atlanta.example.com
CSeq: 1 {method}
Content-Length: 0

"""
ALICE = ("192.0.2.101", 5060)

# A call through a proxy that record-routes (headers from Linphone via Kamailio, baresip #763).
PROXIED_INVITE = """\
INVITE sip:1003@192.0.2.10:5060 SIP/2.0
Record-Route: <sip:140.143.203.122;lr;nat=yes;did=ba4.1c17ef55>
Via: SIP/2.0/UDP 140.143.203.122:5060;branch=z9hG4bKa296.e3eea0f3.1
Via: SIP/2.0/UDP 10.66.52.212:49185;received=223.104.159.155;branch=z9hG4bK.-Otna5Gjp;rport=4944
From: <sip:1005@140.143.203.122>;tag=i7CZLYxIK
To: sip:1003@140.143.203.122
CSeq: 20 INVITE
Call-ID: LSoQVHiIbV
Max-Forwards: 69
Supported: replaces, outbound
Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, MESSAGE, SUBSCRIBE, INFO, UPDATE
Content-Type: application/sdp
Content-Length: {len}
Contact: <sip:1005@223.104.159.155:4944;transport=udp>;+sip.instance="<urn:uuid:e4b47e22>"
User-Agent: LinphoneAndroid/3.2.4 (belle-sip/1.5.0)

v=0
o=1005 3435 2813 IN IP4 140.143.203.122
s=Talk
c=IN IP4 140.143.203.122
t=0 0
m=audio 49933 RTP/AVP 8 101
a=rtpmap:101 telephone-event/8000
"""

PROXIED_IN_DIALOG = """\
{method} sip:kombain@192.0.2.10:5060 SIP/2.0
Via: SIP/2.0/UDP 140.143.203.122:5060;branch={branch}
Via: SIP/2.0/UDP 10.66.52.212:49185;received=223.104.159.155;branch=z9hG4bK.x{branch};rport=4944
From: <sip:1005@140.143.203.122>;tag=i7CZLYxIK
To: <sip:1003@140.143.203.122>;tag={to_tag}
CSeq: {cseq} {method}
Call-ID: LSoQVHiIbV
Max-Forwards: 69
Content-Length: 0

"""


# ---------------------------------------------------------------------------------------------
# Helpers


def make(**kwargs: object) -> tuple[SipServerProtocol, Clock]:
    clock = Clock()
    proto = SipServerProtocol(local_host=LOCAL[0], local_port=LOCAL[1], clock=clock,
                              **kwargs)  # type: ignore[arg-type]
    return proto, clock


def sent(actions: Iterable[Action]) -> list[tuple[SipMessage, tuple[str, int]]]:
    return [(parse_message(a.data), a.addr) for a in actions if isinstance(a, Send)]


def events(actions: Iterable[Action]) -> list[Action]:
    return [a for a in actions if not isinstance(a, Send)]


def statuses(actions: Iterable[Action]) -> list[tuple[int | None, str]]:
    return [(m.status, m.cseq[1]) for m, _ in sent(actions)]


def to_tag(msg: SipMessage) -> str | None:
    return parse_name_addr(msg.header("To") or "").tag


def answer_for(call: IncomingCall | Reoffer, version: int = 1) -> bytes:
    pt, _ = choose_codec(call.offer)
    return build_answer(call.offer, address=LOCAL[0], port=40000, codec_pt=pt,
                        session_id=7, version=version)


def baresip_invite(*, branch: str = "z9hG4bK5b5d987b82c08b17", cseq: int = 23629,
                   tag: str = "", direction: str = "sendrecv", media_ip: str = "10.0.2.15") -> bytes:
    return wire(BARESIP_INVITE, branch=branch, cseq=cseq, to_tag=f";tag={tag}" if tag else "",
                direction=direction, media_ip=media_ip)


def baresip_request(method: str, tag: str, cseq: int, *, branch: str | None = None,
                    body: str = "", content_type: str | None = None) -> bytes:
    extra = f"Content-Type: {content_type}\n" if content_type else ""
    body = body.replace("\n", "\r\n")
    uri = "sip:kombain@192.0.2.10:5060"
    return wire(BARESIP_REQUEST, method=method, uri=uri, branch=branch or f"z9hG4bK{method}{cseq}",
                to_tag=tag, cseq=cseq, extra=extra, body=body)


def established_baresip(proto: SipServerProtocol) -> str:
    """Run INVITE -> 200 -> ACK; return our To tag."""
    actions = proto.datagram_received(baresip_invite(), NAT)
    call = events(actions)[0]
    assert isinstance(call, IncomingCall)
    ok, _ = sent(proto.accept(call.call_id, answer_for(call)))[0]
    tag = to_tag(ok)
    assert tag
    assert events(proto.datagram_received(baresip_request("ACK", tag, 23629), NAT)) == \
        [CallEstablished("5bc8e228f70dc6be")]
    return tag


def run_timers(proto: SipServerProtocol, clock: Clock, until: float) -> list[Action]:
    """Advance the clock deadline by deadline up to `until`, collecting what the timers do."""
    out: list[Action] = []
    while (deadline := proto.next_deadline()) is not None and deadline <= until:
        clock.now = deadline
        out += proto.timer(deadline)
    clock.now = until
    return out


def reply_to(request: SipMessage, status: int, reason: str) -> bytes:
    return serialize(response_for(request, status, reason, to_tag="ee03cef9bd5d5e10"))


# ---------------------------------------------------------------------------------------------
# Calls


def test_full_call_from_baresip_behind_nat() -> None:
    proto, _ = make()
    actions = proto.datagram_received(baresip_invite(), NAT)
    (trying, addr), = sent(actions)
    # RFC 3581: rport -> reply to the datagram's source, recorded as received/rport.
    assert addr == NAT and trying.status == 100
    assert trying.header("Via") == ("SIP/2.0/UDP 10.0.2.15:38397;branch=z9hG4bK5b5d987b82c08b17;"
                                    "received=203.0.113.7;rport=51847")
    assert to_tag(trying) is None
    call, = events(actions)
    assert isinstance(call, IncomingCall)
    assert (call.call_id, call.from_uri, call.to_uri, call.source, call.from_display) == \
        ("5bc8e228f70dc6be", "sip:alice@example.com", "sip:kombain@192.0.2.10", NAT, "Alice")
    assert call.offer.telephone_event == 101
    assert proto.active_calls() == 1 and proto.call_state(call.call_id) == "offered"

    (ringing, _), = sent(proto.ringing(call.call_id))
    assert ringing.status == 180 and ringing.header("Contact") == "<sip:kombain@192.0.2.10:5060>"
    tag = to_tag(ringing)
    assert tag

    (ok, addr), = sent(proto.accept(call.call_id, answer_for(call)))
    assert (ok.status, addr, to_tag(ok)) == (200, NAT, tag)
    assert ok.header("Content-Type") == "application/sdp"
    assert b"m=audio 40000 RTP/AVP 0 101" in ok.body
    assert ok.header("CSeq") == "23629 INVITE"
    assert proto.call_state(call.call_id) == "answering"

    ack = baresip_request("ACK", tag, 23629, branch="z9hG4bK0c1b5a8e3f2d4c11")
    assert proto.datagram_received(ack, NAT) == [CallEstablished(call.call_id)]
    assert proto.call_state(call.call_id) == "confirmed"

    bye = baresip_request("BYE", tag, 23630)
    actions = proto.datagram_received(bye, NAT)
    (bye_ok, addr), = sent(actions)
    assert (bye_ok.status, bye_ok.cseq, addr) == (200, (23630, "BYE"), NAT)
    assert events(actions) == [CallEnded(call.call_id, "bye")]
    assert proto.active_calls() == 0
    # A retransmitted BYE gets the same 200 again, and no second CallEnded.
    again = proto.datagram_received(bye, NAT)
    assert [a.data for a in again if isinstance(a, Send)] == \
        [a.data for a in actions if isinstance(a, Send)]
    assert events(again) == []


def test_sipp_default_uac_scenario() -> None:
    proto, _ = make()
    actions = proto.datagram_received(wire(SIPP_INVITE), SIPP)
    (trying, addr), = sent(actions)
    assert addr == ("127.0.0.1", 5061)  # no rport: the Via's sent-by port
    assert trying.header("Via") == "SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-12345-1-0"
    call, = events(actions)
    assert isinstance(call, IncomingCall) and call.from_display == "sipp"
    (ok, _), = sent(proto.accept(call.call_id, answer_for(call)))
    tag = to_tag(ok)
    ack = wire(SIPP_IN_DIALOG, method="ACK", branch="z9hG4bK-12345-1-5", to_tag=tag, cseq=1)
    assert proto.datagram_received(ack, SIPP) == [CallEstablished("1-12345@127.0.0.1")]
    bye = wire(SIPP_IN_DIALOG, method="BYE", branch="z9hG4bK-12345-1-7", to_tag=tag, cseq=2)
    actions = proto.datagram_received(bye, SIPP)
    assert statuses(actions) == [(200, "BYE")]
    assert events(actions) == [CallEnded("1-12345@127.0.0.1", "bye")]


def test_hostname_via_without_rport_goes_to_source_ip_and_via_port() -> None:
    proto, _ = make()
    (trying, addr), = sent(proto.datagram_received(wire(RFC3665_INVITE), ("192.0.2.101", 40000)))
    assert addr == ("192.0.2.101", 5060)
    assert parse_via(trying.header("Via") or "").params["received"] == "192.0.2.101"


def test_force_rport_answers_the_source() -> None:
    proto, _ = make(force_rport=True)
    (_, addr), = sent(proto.datagram_received(wire(SIPP_INVITE), ("127.0.0.1", 40000)))
    assert addr == ("127.0.0.1", 40000)


def test_invite_retransmission_is_absorbed() -> None:
    proto, _ = make()
    first = proto.datagram_received(baresip_invite(), NAT)
    call = events(first)[0]
    assert isinstance(call, IncomingCall)
    again = proto.datagram_received(baresip_invite(), NAT)
    assert events(again) == [] and statuses(again) == [(100, "INVITE")]
    proto.ringing(call.call_id)
    assert statuses(proto.datagram_received(baresip_invite(), NAT)) == [(180, "INVITE")]
    proto.accept(call.call_id, answer_for(call))
    assert statuses(proto.datagram_received(baresip_invite(), NAT)) == [(200, "INVITE")]
    assert proto.active_calls() == 1


def test_2xx_retransmitted_with_timer_g_until_ack() -> None:
    proto, clock = make()
    call = events(proto.datagram_received(baresip_invite(), NAT))[0]
    assert isinstance(call, IncomingCall)
    start = clock.now
    (ok_action,) = proto.accept(call.call_id, answer_for(call))
    assert isinstance(ok_action, Send)
    times = []
    for _ in range(6):
        deadline = proto.next_deadline()
        assert deadline is not None
        clock.now = deadline
        resent = proto.timer(deadline)
        assert resent == [ok_action]
        times.append(round(deadline - start, 3))
    # T1, then doubling up to T2 = 4 s.
    assert times == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5]
    tag = to_tag(parse_message(ok_action.data))
    assert tag
    assert proto.datagram_received(baresip_request("ACK", tag, 23629), NAT) == \
        [CallEstablished(call.call_id)]
    assert run_timers(proto, clock, clock.now + 60) == []
    assert proto.active_calls() == 1
    assert proto.transaction_count() == 0  # the INVITE transaction left after Timer L


def test_no_ack_ends_the_call_with_a_bye() -> None:
    proto, clock = make()
    call = events(proto.datagram_received(baresip_invite(), NAT))[0]
    assert isinstance(call, IncomingCall)
    start = clock.now
    proto.accept(call.call_id, answer_for(call))
    actions = run_timers(proto, clock, start + 32.0)
    assert events(actions) == [CallEnded(call.call_id, "ack_timeout")]
    messages = sent(actions)
    assert [m.status for m, _ in messages[:-1]] == [200] * (len(messages) - 1)
    bye, addr = messages[-1]
    assert (bye.method, addr) == ("BYE", NAT)
    assert bye.uri == "sip:alice-0x558d88079a80@10.0.2.15:38397"
    assert bye.header("To") == '"Alice" <sip:alice@example.com>;tag=ee03cef9bd5d5e10'
    assert parse_name_addr(bye.header("From") or "").tag == to_tag(messages[0][0])
    assert bye.cseq == (1, "BYE") and bye.call_id == call.call_id
    assert proto.active_calls() == 0
    # The BYE's 200 is absorbed silently: the call already ended.
    assert proto.datagram_received(reply_to(bye, 200, "OK"), NAT) == []
    assert proto.datagram_received(baresip_request("ACK", "x", 23629), NAT) == []


def test_our_hangup_through_a_record_routing_proxy() -> None:
    proto, clock = make()
    actions = proto.datagram_received(wire(PROXIED_INVITE), PROXY)
    call = events(actions)[0]
    assert isinstance(call, IncomingCall)
    assert call.offer.payloads == [8, 101] and choose_codec(call.offer) == (8, "PCMA")
    (ok, addr), = sent(proto.accept(call.call_id, answer_for(call)))
    assert addr == PROXY  # no rport on the proxy's Via; its sent-by port
    assert ok.header("Record-Route") == "<sip:140.143.203.122;lr;nat=yes;did=ba4.1c17ef55>"
    assert len(ok.headers_all("Via")) == 2
    tag = to_tag(ok)
    ack = wire(PROXIED_IN_DIALOG, method="ACK", branch="z9hG4bKack1", to_tag=tag, cseq=20)
    assert proto.datagram_received(ack, PROXY) == [CallEstablished("LSoQVHiIbV")]

    (bye_action,) = proto.hangup(call.call_id)
    assert isinstance(bye_action, Send) and bye_action.addr == PROXY
    bye = parse_message(bye_action.data)
    assert bye.method == "BYE"
    assert bye.uri == "sip:1005@223.104.159.155:4944;transport=udp"  # the remote Contact
    assert bye.header("Route") == "<sip:140.143.203.122;lr;nat=yes;did=ba4.1c17ef55>"
    assert bye.header("To") == "<sip:1005@140.143.203.122>;tag=i7CZLYxIK"
    assert bye.header("From") == f"sip:1003@140.143.203.122;tag={tag}"
    via = parse_via(bye.header("Via") or "")
    assert via.branch.startswith("z9hG4bK") and (via.host, via.port) == LOCAL
    assert proto.call_state(call.call_id) == "terminating"
    assert proto.hangup(call.call_id) == []

    # Timer E: retransmitted at T1 until answered.
    clock.now += 0.5
    assert proto.timer(clock.now) == [bye_action]
    trying = serialize(response_for(bye, 100, "Trying"))
    assert proto.datagram_received(trying, PROXY) == []
    actions = proto.datagram_received(serialize(response_for(bye, 200, "OK", to_tag="x")), PROXY)
    assert actions == [CallEnded(call.call_id, "bye_sent")]
    assert proto.active_calls() == 0
    assert run_timers(proto, clock, clock.now + 40) == []


def test_unanswered_bye_times_out() -> None:
    proto, clock = make()
    established_baresip(proto)
    bye_action, = proto.hangup("5bc8e228f70dc6be")
    actions = run_timers(proto, clock, clock.now + 32.0)
    assert all(a == bye_action for a in actions[:-1])
    assert len(actions) > 5
    assert actions[-1] == CallEnded("5bc8e228f70dc6be", "bye_sent")


def test_peer_bye_crossing_ours() -> None:
    proto, _ = make()
    tag = established_baresip(proto)
    (bye_action,) = proto.hangup("5bc8e228f70dc6be")
    actions = proto.datagram_received(baresip_request("BYE", tag, 23630), NAT)
    assert statuses(actions) == [(200, "BYE")]
    assert events(actions) == [CallEnded("5bc8e228f70dc6be", "bye")]
    assert isinstance(bye_action, Send)
    assert proto.datagram_received(reply_to(parse_message(bye_action.data), 200, "OK"), NAT) == []


def test_hangup_before_ack_waits_for_it() -> None:
    proto, _ = make()
    call = events(proto.datagram_received(baresip_invite(), NAT))[0]
    assert isinstance(call, IncomingCall)
    (ok, _), = sent(proto.accept(call.call_id, answer_for(call)))
    assert proto.hangup(call.call_id) == []
    actions = proto.datagram_received(baresip_request("ACK", to_tag(ok) or "", 23629), NAT)
    (bye, _), = sent(actions)
    assert bye.method == "BYE" and events(actions) == []


def test_hangup_while_offered_declines() -> None:
    proto, _ = make()
    call = events(proto.datagram_received(baresip_invite(), NAT))[0]
    assert isinstance(call, IncomingCall)
    actions = proto.hangup(call.call_id)
    assert statuses(actions) == [(603, "INVITE")]
    assert events(actions) == [CallEnded(call.call_id, "rejected")]


def test_cancel_before_answer() -> None:
    proto, clock = make()
    actions = proto.datagram_received(wire(RFC3665_INVITE), ALICE)
    call = events(actions)[0]
    assert isinstance(call, IncomingCall)
    (ringing, _), = sent(proto.ringing(call.call_id))
    cancel = wire(RFC3665_CANCEL_OR_ACK, method="CANCEL", branch="z9hG4bK74bf9", to_tag="")
    actions = proto.datagram_received(cancel, ALICE)
    (cancel_ok, a1), (terminated, a2) = sent(actions)
    assert (cancel_ok.status, cancel_ok.cseq) == (200, (1, "CANCEL"))
    assert (terminated.status, terminated.reason, terminated.cseq) == \
        (487, "Request Terminated", (1, "INVITE"))
    assert to_tag(terminated) == to_tag(ringing) == to_tag(cancel_ok)
    assert a1 == a2 == ALICE
    assert events(actions) == [CallEnded(call.call_id, "cancel")]
    assert proto.accept(call.call_id, b"v=0\r\n") == []
    # The 487 is resent (Timer G) until the ACK, which is absorbed.
    clock.now += 0.5
    assert statuses(proto.timer(clock.now)) == [(487, "INVITE")]
    ack = wire(RFC3665_CANCEL_OR_ACK, method="ACK", branch="z9hG4bK74bf9",
               to_tag=f";tag={to_tag(terminated)}")
    assert proto.datagram_received(ack, ALICE) == []
    assert statuses(run_timers(proto, clock, clock.now + 10)) == []
    # A retransmitted CANCEL gets its 200 again.
    assert statuses(proto.datagram_received(cancel, ALICE)) == [(200, "CANCEL")]
    assert proto.active_calls() == 0


def test_cancel_without_a_transaction_is_481() -> None:
    proto, _ = make()
    cancel = wire(RFC3665_CANCEL_OR_ACK, method="CANCEL", branch="z9hG4bKnothere", to_tag="")
    assert statuses(proto.datagram_received(cancel, ALICE)) == [(481, "CANCEL")]


def test_cancel_after_answer_changes_nothing() -> None:
    proto, _ = make()
    call = events(proto.datagram_received(wire(RFC3665_INVITE), ALICE))[0]
    assert isinstance(call, IncomingCall)
    proto.accept(call.call_id, answer_for(call))
    cancel = wire(RFC3665_CANCEL_OR_ACK, method="CANCEL", branch="z9hG4bK74bf9", to_tag="")
    actions = proto.datagram_received(cancel, ALICE)
    assert statuses(actions) == [(200, "CANCEL")] and events(actions) == []
    assert proto.call_state(call.call_id) == "answering"


def test_reject_busy_and_unavailable() -> None:
    proto, clock = make()
    call = events(proto.datagram_received(baresip_invite(), NAT))[0]
    assert isinstance(call, IncomingCall)
    actions = proto.reject(call.call_id, 486, "Busy Here")
    (busy, _), = sent(actions)
    assert (busy.status, busy.reason) == (486, "Busy Here") and to_tag(busy)
    assert busy.header("Retry-After") is None
    assert events(actions) == [CallEnded(call.call_id, "rejected")]
    assert proto.reject(call.call_id, 486, "Busy Here") == []
    clock.now += 0.5
    assert statuses(proto.timer(clock.now)) == [(486, "INVITE")]
    # Unacknowledged, the 486 stops after Timer H and the transaction is forgotten.
    run_timers(proto, clock, clock.now + 40)
    assert proto.transaction_count() == 0

    call = events(proto.datagram_received(baresip_invite(branch="z9hG4bKsecond", cseq=23630),
                                          NAT))[0]
    assert isinstance(call, IncomingCall)
    (unavailable, _), = sent(proto.reject(call.call_id, 503, "Service Unavailable",
                                          retry_after=30))
    assert unavailable.status == 503 and unavailable.header("Retry-After") == "30"
    with pytest.raises(ValueError):
        proto.reject(call.call_id, 200, "OK")


def test_invite_without_g711_is_488() -> None:
    proto, _ = make()
    invite = baresip_invite().replace(b"RTP/AVP 0 8 101", b"RTP/AVP 9 101  ")
    actions = proto.datagram_received(invite, NAT)
    (refused, _), = sent(actions)
    assert refused.status == 488 and events(actions) == [] and proto.active_calls() == 0
    assert refused.header("Warning", ) is not None


def test_invite_without_sdp_or_with_other_body() -> None:
    proto, _ = make()
    text = SIPP_INVITE.split("\n\n")[0] + "\n\n"
    assert statuses(proto.datagram_received(wire(text), SIPP)) == [(488, "INVITE")]
    other = wire(RFC3665_INVITE.replace("application/sdp", "text/plain"))
    (refused, _), = sent(proto.datagram_received(other, ALICE))
    assert refused.status == 415 and refused.header("Accept") == "application/sdp"
    broken = wire(RFC3665_INVITE.replace("v=0", "v=9").replace("z9hG4bK74bf9", "z9hG4bK74bfa"))
    assert statuses(proto.datagram_received(broken, ALICE)) == [(400, "INVITE")]


def test_capacity_limit_answers_503() -> None:
    proto, _ = make(max_calls=1)
    proto.datagram_received(baresip_invite(), NAT)
    (busy, _), = sent(proto.datagram_received(wire(SIPP_INVITE), SIPP))
    assert busy.status == 503 and busy.header("Retry-After") == "5"
    assert proto.active_calls() == 1


def test_transaction_table_limit_answers_503_statelessly() -> None:
    proto, _ = make(max_transactions=1)
    proto.datagram_received(baresip_invite(), NAT)
    (busy, _), = sent(proto.datagram_received(wire(SIPP_INVITE), SIPP))
    assert busy.status == 503
    assert proto.transaction_count() == 1


def test_same_call_by_another_path_is_482() -> None:
    proto, _ = make()
    proto.datagram_received(baresip_invite(), NAT)
    looped = baresip_invite(branch="z9hG4bKotherpath")
    assert statuses(proto.datagram_received(looped, NAT)) == [(482, "INVITE")]
    assert proto.active_calls() == 1


# ---------------------------------------------------------------------------------------------
# In-dialog requests


def test_reinvite_hold_and_resume() -> None:
    proto, _ = make()
    tag = established_baresip(proto)
    hold = baresip_invite(branch="z9hG4bKhold", cseq=23630, tag=tag, direction="sendonly")
    actions = proto.datagram_received(hold, NAT)
    assert statuses(actions) == [(100, "INVITE")]
    reoffer, = events(actions)
    assert isinstance(reoffer, Reoffer) and reoffer.offer.on_hold
    (ok, _), = sent(proto.accept_reoffer(reoffer.call_id, answer_for(reoffer, version=2)))
    assert ok.status == 200 and b"a=recvonly" in ok.body and to_tag(ok) == tag
    assert proto.datagram_received(baresip_request("ACK", tag, 23630), NAT) == []

    # The RFC 2543 way: c=0.0.0.0.
    old_hold = baresip_invite(branch="z9hG4bKhold0", cseq=23631, tag=tag, media_ip="0.0.0.0")
    reoffer, = events(proto.datagram_received(old_hold, NAT))
    assert isinstance(reoffer, Reoffer) and reoffer.offer.on_hold
    proto.accept_reoffer(reoffer.call_id, answer_for(reoffer, version=3))
    proto.datagram_received(baresip_request("ACK", tag, 23631), NAT)

    resume = baresip_invite(branch="z9hG4bKresume", cseq=23632, tag=tag)
    reoffer, = events(proto.datagram_received(resume, NAT))
    assert isinstance(reoffer, Reoffer) and not reoffer.offer.on_hold
    (ok, _), = sent(proto.accept_reoffer(reoffer.call_id, answer_for(reoffer, version=4)))
    assert b"a=sendrecv" in ok.body
    assert proto.datagram_received(baresip_request("ACK", tag, 23632), NAT) == []
    assert proto.call_state("5bc8e228f70dc6be") == "confirmed"


def test_reinvite_rejected_by_the_app_keeps_the_call() -> None:
    proto, _ = make()
    tag = established_baresip(proto)
    reinvite = baresip_invite(branch="z9hG4bKre", cseq=23630, tag=tag)
    reoffer, = events(proto.datagram_received(reinvite, NAT))
    assert isinstance(reoffer, Reoffer)
    # A second re-INVITE while the first is pending: 500 with Retry-After (section 14.2).
    (overlap, _), = sent(proto.datagram_received(
        baresip_invite(branch="z9hG4bKre2", cseq=23631, tag=tag), NAT))
    assert overlap.status == 500 and overlap.header("Retry-After")
    assert statuses(proto.reject_reoffer(reoffer.call_id)) == [(488, "INVITE")]
    assert proto.call_state(reoffer.call_id) == "confirmed"


def test_hangup_during_a_pending_reinvite() -> None:
    proto, _ = make()
    tag = established_baresip(proto)
    reinvite = baresip_invite(branch="z9hG4bKre", cseq=23630, tag=tag, direction="inactive")
    reoffer, = events(proto.datagram_received(reinvite, NAT))
    assert isinstance(reoffer, Reoffer) and reoffer.offer.direction == "inactive"
    messages = sent(proto.hangup(reoffer.call_id))
    assert [(m.status, m.method) for m, _ in messages] == [(487, None), (None, "BYE")]
    assert proto.accept_reoffer(reoffer.call_id, b"v=0\r\n") == []


def test_cancel_of_a_reinvite_keeps_the_call() -> None:
    proto, _ = make()
    tag = established_baresip(proto)
    reinvite = baresip_invite(branch="z9hG4bKre", cseq=23630, tag=tag)
    reoffer, = events(proto.datagram_received(reinvite, NAT))
    cancel = baresip_request("CANCEL", tag, 23630, branch="z9hG4bKre")
    actions = proto.datagram_received(cancel, NAT)
    assert statuses(actions) == [(200, "CANCEL"), (487, "INVITE")] and events(actions) == []
    assert isinstance(reoffer, Reoffer) and proto.accept_reoffer(reoffer.call_id, b"v=0") == []
    assert proto.call_state(reoffer.call_id) == "confirmed"


def test_reinvite_before_our_2xx_is_acked_is_500() -> None:
    proto, _ = make()
    call = events(proto.datagram_received(baresip_invite(), NAT))[0]
    assert isinstance(call, IncomingCall)
    (ok, _), = sent(proto.accept(call.call_id, answer_for(call)))
    early = baresip_invite(branch="z9hG4bKearly", cseq=23630, tag=to_tag(ok) or "")
    (refused, _), = sent(proto.datagram_received(early, NAT))
    assert refused.status == 500 and refused.header("Retry-After")
    # An ACK with another CSeq does not confirm the call.
    assert proto.datagram_received(baresip_request("ACK", to_tag(ok) or "", 1), NAT) == []
    assert proto.call_state(call.call_id) == "answering"


def test_ipv6_contact() -> None:
    proto = SipServerProtocol(local_host="2001:db8::10", local_port=5070, clock=Clock())
    assert proto.contact == "<sip:kombain@[2001:db8::10]:5070>"


def test_offerless_reinvite_gets_the_current_session() -> None:
    proto, _ = make()
    tag = established_baresip(proto)
    refresh = baresip_request("INVITE", tag, 23630)
    actions = proto.datagram_received(refresh, NAT)
    (ok, _), = sent(actions)
    assert ok.status == 200 and ok.body.startswith(b"v=0") and events(actions) == []


def test_reinvite_for_unknown_dialog_is_481() -> None:
    proto, _ = make()
    stray = baresip_invite(branch="z9hG4bKstray", cseq=5, tag="nosuchtag")
    assert statuses(proto.datagram_received(stray, NAT)) == [(481, "INVITE")]


def test_bye_for_unknown_dialog_and_old_cseq() -> None:
    proto, _ = make()
    assert statuses(proto.datagram_received(baresip_request("BYE", "abc", 2), NAT)) == \
        [(481, "BYE")]
    tag = established_baresip(proto)
    assert statuses(proto.datagram_received(baresip_request("BYE", tag, 23629), NAT)) == \
        [(500, "BYE")]
    assert proto.active_calls() == 1


def test_bye_on_early_dialog_terminates_the_invite() -> None:
    proto, _ = make()
    call = events(proto.datagram_received(baresip_invite(), NAT))[0]
    assert isinstance(call, IncomingCall)
    (ringing, _), = sent(proto.ringing(call.call_id))
    actions = proto.datagram_received(baresip_request("BYE", to_tag(ringing) or "", 23630), NAT)
    assert statuses(actions) == [(200, "BYE"), (487, "INVITE")]
    assert events(actions) == [CallEnded(call.call_id, "bye")]


def test_bye_before_ack_stops_the_2xx() -> None:
    proto, clock = make()
    call = events(proto.datagram_received(baresip_invite(), NAT))[0]
    assert isinstance(call, IncomingCall)
    (ok, _), = sent(proto.accept(call.call_id, answer_for(call)))
    actions = proto.datagram_received(baresip_request("BYE", to_tag(ok) or "", 23630), NAT)
    assert events(actions) == [CallEnded(call.call_id, "bye")]
    assert run_timers(proto, clock, clock.now + 40) == []


@pytest.mark.parametrize(
    ("content_type", "body", "digit", "duration"),
    [
        ("application/dtmf-relay", "Signal=5\nDuration=160\n", "5", 160),
        ("application/dtmf-relay", "Signal= *\nDuration= 250\n", "*", 250),
        ("application/dtmf-relay", "Signal=11\nDuration=100\n", "#", 100),
        ("application/dtmf-relay", "signal=a\n", "A", None),
        ("application/dtmf", "#", "#", None),
    ],
)
def test_info_dtmf(content_type: str, body: str, digit: str, duration: int | None) -> None:
    proto, _ = make()
    tag = established_baresip(proto)
    info = baresip_request("INFO", tag, 23630, body=body, content_type=content_type)
    actions = proto.datagram_received(info, NAT)
    assert statuses(actions) == [(200, "INFO")]
    assert events(actions) == [InfoDtmf("5bc8e228f70dc6be", digit, duration)]


def test_info_other_cases() -> None:
    proto, _ = make()
    assert statuses(proto.datagram_received(
        baresip_request("INFO", "none", 3, body="Signal=1\n", content_type="application/dtmf-relay"),
        NAT)) == [(481, "INFO")]
    tag = established_baresip(proto)
    bad = baresip_request("INFO", tag, 23630, body="Signal=X\n", content_type="application/dtmf-relay")
    assert statuses(proto.datagram_received(bad, NAT)) == [(400, "INFO")]
    xml = baresip_request("INFO", tag, 23631, body="<media_control/>",
                          content_type="application/media_control+xml")
    (refused, _), = sent(proto.datagram_received(xml, NAT))
    assert refused.status == 415 and "application/dtmf-relay" in (refused.header("Accept") or "")
    empty = proto.datagram_received(baresip_request("INFO", tag, 23632), NAT)
    assert statuses(empty) == [(200, "INFO")] and events(empty) == []


# ---------------------------------------------------------------------------------------------
# Out-of-dialog requests


SIPP_OPTIONS = """\
OPTIONS sip:192.0.2.10:5060 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-options-{n}
From: sipp <sip:sipp@127.0.0.1:5061>;tag=opt{n}
To: <sip:192.0.2.10:5060>
Call-ID: options-{n}@127.0.0.1
CSeq: 1 OPTIONS
Max-Forwards: 70
Accept: application/sdp
Content-Length: 0

"""


def test_options() -> None:
    proto, clock = make()
    actions = proto.datagram_received(wire(SIPP_OPTIONS, n=1), SIPP)
    (ok, addr), = sent(actions)
    assert (ok.status, addr) == (200, SIPP)
    assert "INVITE" in (ok.header("Allow") or "") and "INFO" in (ok.header("Allow") or "")
    assert "application/sdp" in (ok.header("Accept") or "")
    assert to_tag(ok) and ok.header("Server") == "kombain"
    assert events(actions) == []
    # Timer J: the transaction absorbs retransmissions for 64*T1, then goes.
    assert proto.datagram_received(wire(SIPP_OPTIONS, n=1), SIPP) == actions
    run_timers(proto, clock, clock.now + 33)
    assert proto.transaction_count() == 0


def test_in_dialog_options() -> None:
    proto, _ = make()
    tag = established_baresip(proto)
    assert statuses(proto.datagram_received(baresip_request("OPTIONS", tag, 23630), NAT)) == \
        [(200, "OPTIONS")]
    assert statuses(proto.datagram_received(baresip_request("OPTIONS", "gone", 23631), NAT)) == \
        [(481, "OPTIONS")]


@pytest.mark.parametrize(("method", "status"), [("FOO", 501), ("PUBLISH", 405), ("REGISTER", 405),
                                                 ("SUBSCRIBE", 405), ("UPDATE", 405)])
def test_methods_we_do_not_serve(method: str, status: int) -> None:
    proto, _ = make()
    text = SIPP_OPTIONS.replace("OPTIONS", method)
    (refused, _), = sent(proto.datagram_received(wire(text, n=2), SIPP))
    assert refused.status == status
    assert refused.header("Allow") == "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO"


def test_required_extension_is_420() -> None:
    proto, _ = make()
    invite = baresip_invite().replace(b"Supported:\r\n", b"Require: 100rel, timer\r\n")
    (refused, _), = sent(proto.datagram_received(invite, NAT))
    assert (refused.status, refused.header("Unsupported")) == (420, "100rel, timer")


def test_compact_form_invite() -> None:
    proto, _ = make()
    compact = (wire(SIPP_INVITE).replace(b"Via:", b"v:").replace(b"From:", b"f:")
               .replace(b"To:", b"t:").replace(b"Call-ID:", b"i:").replace(b"Contact:", b"m:")
               .replace(b"Content-Type:", b"c:").replace(b"Content-Length:", b"l:"))
    actions = proto.datagram_received(compact, SIPP)
    (trying, _), = sent(actions)
    assert trying.header("Call-ID") == "1-12345@127.0.0.1"
    assert b"\r\nCall-ID: 1-12345@127.0.0.1\r\n" in serialize(trying)
    assert isinstance(events(actions)[0], IncomingCall)


# ---------------------------------------------------------------------------------------------
# Malformed input


def test_malformed_requests_get_400_when_addressable() -> None:
    proto, _ = make()
    no_call_id = wire(SIPP_OPTIONS, n=3).replace(b"Call-ID: options-3@127.0.0.1\r\n", b"")
    (bad,) = proto.datagram_received(no_call_id, ("127.0.0.1", 40000))
    assert isinstance(bad, Send) and bad.data.startswith(b"SIP/2.0 400 Bad Request\r\n")
    assert bad.addr == ("127.0.0.1", 40000)  # the source: the Via is not trusted here
    assert b"\r\nCSeq: 1 OPTIONS\r\n" in bad.data and b"z9hG4bK-options-3" in bad.data
    short = wire(SIPP_INVITE)[:-20]
    assert [m.status for m, _ in sent(proto.datagram_received(short, SIPP))] == [400]
    huge = wire(SIPP_INVITE.replace("a=rtpmap:0 PCMU/8000", "a=x:" + "y" * 9000))
    assert [m.status for m, _ in sent(proto.datagram_received(huge, SIPP))] == [513]
    bad_via = wire(SIPP_OPTIONS, n=4).replace(b"SIP/2.0/UDP 127.0.0.1:5061", b"SIP/2.0 nonsense")
    assert [m.status for m, _ in sent(proto.datagram_received(bad_via, SIPP))] == [400]
    bad_from = wire(SIPP_INVITE).replace(b"From: sipp <sip:sipp@127.0.0.1:5061>",
                                         b"From: sipp <sip:sipp")
    assert [m.status for m, _ in sent(proto.datagram_received(bad_from, SIPP))] == [400]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\r\n\r\n",
        b"\x00\x01\x02garbage",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"SIP/2.0 200 OK\r\nCall-ID: x\r\n\r\n",  # a broken response: never answered
        b"INVITE sip:a@b SIP/2.0\r\nCall-ID: x\r\n\r\n",  # no Via: nowhere to answer
        b"ACK sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4\r\n\r\n",  # ACK is never answered
        b"INVITE sip:a@b SIP/2.0\r\nVia: ,\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\n"
        b"Call-ID: 1\r\nCSeq: 1 INVITE\r\n\r\n",
    ],
)
def test_unaddressable_garbage_is_dropped(data: bytes, caplog: pytest.LogCaptureFixture) -> None:
    proto, _ = make()
    with caplog.at_level(logging.ERROR):
        actions = proto.datagram_received(data, SIPP)
    assert all(isinstance(a, Send) for a in actions)
    assert [m.status for m, _ in sent(actions)] in ([], [400])
    assert not caplog.records


def test_unknown_responses_are_ignored() -> None:
    proto, _ = make()
    stray = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKnope\r\n" \
            b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 BYE\r\n\r\n"
    assert proto.datagram_received(stray, SIPP) == []


# ---------------------------------------------------------------------------------------------
# Digest authentication


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def authorize(invite: bytes, challenge: str, password: str, *, cseq: int, branch: str) -> bytes:
    params = (parse_auth_params(challenge) or ("", {}))[1]
    uri = "sip:kombain@192.0.2.10:5060"
    response = md5(f"{md5('alice:' + params['realm'] + ':' + password)}:{params['nonce']}:"
                   f"00000001:8b3ac7f2:auth:{md5('INVITE:' + uri)}")
    header = (f'Authorization: Digest username="alice", realm="{params["realm"]}", '
              f'nonce="{params["nonce"]}", uri="{uri}", response="{response}", algorithm=MD5, '
              f'cnonce="8b3ac7f2", qop=auth, nc=00000001\r\n')
    return (invite.replace(b"z9hG4bK5b5d987b82c08b17", branch.encode())
            .replace(b"CSeq: 23629 INVITE", f"CSeq: {cseq} INVITE".encode())
            .replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\n" + header.encode()))


def test_digest_challenge_then_success() -> None:
    auth_clock = Clock()
    auth = DigestAuth({"alice": "secret"}, "kombain", clock=auth_clock, secret=b"s" * 32)
    proto, clock = make(auth=auth)
    actions = proto.datagram_received(baresip_invite(), NAT)
    (challenge, _), = sent(actions)
    assert challenge.status == 401 and events(actions) == [] and to_tag(challenge)
    www = challenge.header("WWW-Authenticate") or ""
    assert www.startswith('Digest realm="kombain"') and 'qop="auth"' in www
    # The ACK for the 401 is absorbed, and stops its retransmission.
    ack = baresip_request("ACK", to_tag(challenge) or "", 23629, branch="z9hG4bK5b5d987b82c08b17")
    assert proto.datagram_received(ack, NAT) == []
    assert statuses(run_timers(proto, clock, clock.now + 2)) == []

    # Wrong password: challenged again.
    wrong = authorize(baresip_invite(), www, "guess", cseq=23630, branch="z9hG4bKwrong")
    assert statuses(proto.datagram_received(wrong, NAT)) == [(401, "INVITE")]

    good = authorize(baresip_invite(), www, "secret", cseq=23631, branch="z9hG4bKgood")
    actions = proto.datagram_received(good, NAT)
    assert statuses(actions) == [(100, "INVITE")]
    assert isinstance(events(actions)[0], IncomingCall)


def test_digest_stale_nonce_and_options() -> None:
    auth_clock = Clock()
    auth = DigestAuth({"alice": "secret"}, "kombain", clock=auth_clock, nonce_ttl_s=60)
    proto, _ = make(auth=auth)
    (challenge, _), = sent(proto.datagram_received(baresip_invite(), NAT))
    www = challenge.header("WWW-Authenticate") or ""
    auth_clock.now += 120
    late = authorize(baresip_invite(), www, "secret", cseq=23630, branch="z9hG4bKlate")
    (again, _), = sent(proto.datagram_received(late, NAT))
    assert again.status == 401 and "stale=TRUE" in (again.header("WWW-Authenticate") or "")
    # OPTIONS from outside a dialog needs credentials too.
    assert statuses(proto.datagram_received(wire(SIPP_OPTIONS, n=9), SIPP)) == [(401, "OPTIONS")]


# ---------------------------------------------------------------------------------------------
# Robustness


def _mutations(seed: int, count: int) -> Iterable[bytes]:
    rng = random.Random(seed)
    corpus = [baresip_invite(), wire(SIPP_INVITE), wire(RFC3665_INVITE), wire(PROXIED_INVITE),
              wire(SIPP_OPTIONS, n=1), baresip_request("BYE", "x", 2),
              baresip_request("INFO", "x", 3, body="Signal=5\n", content_type="application/dtmf-relay")]
    for _ in range(count):
        data = bytearray(rng.choice(corpus))
        for _ in range(rng.randint(1, 8)):
            op = rng.randrange(4)
            pos = rng.randrange(len(data) or 1)
            if op == 0 and data:
                data[pos] = rng.randrange(256)
            elif op == 1:
                data[pos:pos] = rng.choice([b"\r\n", b":", b";", b",", b"<", b'"', b" ", b"\x00",
                                            b"\r\n ", b"=", b"\xff", b"9" * 20])
            elif op == 2:
                del data[pos:pos + rng.randint(1, 40)]
            else:
                data = data[:pos]
        yield bytes(data)


def test_mutated_messages_never_raise(caplog: pytest.LogCaptureFixture) -> None:
    proto, clock = make(max_calls=50)
    with caplog.at_level(logging.ERROR):
        for i, data in enumerate(_mutations(seed=3261, count=3000)):
            actions = proto.datagram_received(data, NAT)
            for call in events(actions):
                if isinstance(call, IncomingCall) and i % 2:
                    proto.accept(call.call_id, b"v=0\r\n")
            clock.now += 0.05
            proto.timer(clock.now)
    assert not caplog.records, caplog.records[0].getMessage() if caplog.records else ""


def test_random_bytes_never_raise(caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("hypothesis")
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    proto, _ = make()
    prefixes = st.sampled_from([b"", b"INVITE sip:a@b SIP/2.0\r\n", b"SIP/2.0 200 OK\r\n",
                                b"BYE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4;rport\r\n"])

    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                      HealthCheck.function_scoped_fixture])
    @given(prefix=prefixes, data=st.binary(max_size=1500))
    def check(prefix: bytes, data: bytes) -> None:
        actions = proto.datagram_received(prefix + data, ("198.51.100.1", 5060))
        assert all(isinstance(a, (Send, IncomingCall, CallEnded, CallEstablished, Reoffer,
                                  InfoDtmf)) for a in actions)

    with caplog.at_level(logging.ERROR):
        check()
    assert not caplog.records


def test_x_kombain_headers_become_call_options() -> None:
    proto, _ = make()
    invite = wire(SIPP_INVITE).replace(
        b"\r\nContent-Type:", b"\r\nX-Kombain-Responder: script\r\nx-kombain-VOICE: joe\r\n"
                              b"X-Kombain-Responder: echo\r\nX-Other: 1\r\nContent-Type:", 1)
    call, = events(proto.datagram_received(invite, SIPP))
    assert isinstance(call, IncomingCall)
    assert call.options == (("responder", "script"), ("voice", "joe"))  # the first of each wins
