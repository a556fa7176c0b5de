"""server.transports.sip_message: SIP parsing, serializing and response building."""

from __future__ import annotations

import pytest

from kombain.server.transports.sip.message import (
    SipError,
    SipMessage,
    canonical_name,
    parse_cseq,
    parse_message,
    parse_name_addr,
    parse_params,
    parse_via,
    response_for,
    serialize,
    split_list,
    stamp_via,
)


def wire(text: str, *, eol: str = "\r\n") -> bytes:
    """A message from readable text: `{len}` becomes the body's length, lines end with `eol`."""
    head, _, body = text.lstrip("\n").partition("\n\n")
    body = body.replace("\n", eol)
    head = head.replace("{len}", str(len(body.encode())))
    return (head.replace("\n", eol) + eol + eol + body).encode()


# RFC 3665 section 3.1, F1 (the RFC sends it over TCP; here it is the UDP flavour).
RFC3665_INVITE = """\
INVITE sip:bob@biloxi.example.com SIP/2.0
Via: SIP/2.0/UDP client.atlanta.example.com:5060;branch=z9hG4bK74bf9
Max-Forwards: 70
From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl
To: Bob <sip:bob@biloxi.example.com>
Call-ID: 3848276298220188511@atlanta.example.com
CSeq: 1 INVITE
Contact: <sip:alice@client.atlanta.example.com;transport=udp>
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

# The same request written with compact header names (RFC 3261 section 7.3.3).
COMPACT_INVITE = """\
INVITE sip:bob@biloxi.example.com SIP/2.0
v: SIP/2.0/UDP client.atlanta.example.com:5060;branch=z9hG4bK74bf9
Max-Forwards: 70
f: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl
t: Bob <sip:bob@biloxi.example.com>
i: 3848276298220188511@atlanta.example.com
CSeq: 1 INVITE
m: <sip:alice@client.atlanta.example.com>
k: replaces
s: compact
c: application/sdp
l: {len}

v=0
"""


def test_parses_rfc3665_invite() -> None:
    msg = parse_message(wire(RFC3665_INVITE))
    assert msg.is_request
    assert (msg.method, msg.uri) == ("INVITE", "sip:bob@biloxi.example.com")
    assert msg.header("call-id") == "3848276298220188511@atlanta.example.com"
    assert msg.header("i") == msg.call_id
    assert msg.cseq == (1, "INVITE")
    assert msg.header("Max-Forwards") == "70"
    assert msg.body.startswith(b"v=0\r\n") and msg.body.endswith(b"a=rtpmap:0 PCMU/8000\r\n")
    assert [name for name, _ in msg.headers][:3] == ["Via", "Max-Forwards", "From"]


def test_compact_headers_get_their_long_names() -> None:
    msg = parse_message(wire(COMPACT_INVITE))
    names = [name for name, _ in msg.headers]
    assert names == ["Via", "Max-Forwards", "From", "To", "Call-ID", "CSeq", "Contact",
                     "Supported", "Subject", "Content-Type", "Content-Length"]
    assert msg.header("Content-Type") == "application/sdp"
    assert msg.body == b"v=0\r\n"
    assert canonical_name("cseq") == "CSeq" and canonical_name("www-authenticate") == \
        "WWW-Authenticate"
    assert canonical_name("X-Custom") == "X-Custom"


def test_folded_headers_are_joined() -> None:
    # Folding as in RFC 4475's torture tests: continuation lines start with SP or HT.
    text = RFC3665_INVITE.replace(
        "Max-Forwards: 70\n",
        "Max-Forwards: 70\nSubject: I know you're there,\n  pick up the phone\n\t and talk to me!\n",
    ).replace("Via: SIP/2.0/UDP client.atlanta.example.com:5060;branch=z9hG4bK74bf9",
              "Via: SIP/2.0/UDP client.atlanta.example.com:5060\n ;branch=z9hG4bK74bf9")
    msg = parse_message(wire(text))
    assert msg.header("Subject") == "I know you're there, pick up the phone and talk to me!"
    assert parse_via(msg.header("Via") or "").branch == "z9hG4bK74bf9"


def test_bare_lf_and_leading_crlf_are_tolerated() -> None:
    data = b"\r\n\r\n" + wire(RFC3665_INVITE, eol="\n")
    msg = parse_message(data)
    assert msg.method == "INVITE"
    assert msg.body.startswith(b"v=0\n")


def test_content_length_frames_the_body() -> None:
    base = wire(RFC3665_INVITE)
    # Section 18.3: bytes past Content-Length are discarded...
    assert parse_message(base + b"\r\njunk").body == parse_message(base).body
    # ...a datagram shorter than it is an error that still names the Via to answer.
    with pytest.raises(SipError) as info:
        parse_message(base[:-10])
    assert (info.value.status, info.value.code) == (400, "short_body")
    assert info.value.partial is not None and info.value.partial.header("Via")


def test_missing_content_length_means_rest_of_datagram() -> None:
    text = RFC3665_INVITE.replace("Content-Length: {len}\n", "")
    msg = parse_message(wire(text))
    assert msg.body.endswith(b"PCMU/8000\r\n")
    assert msg.header("Content-Length") is None


@pytest.mark.parametrize("value", ["abc", "-1", "1" * 12, "²", "12 3"])
def test_bad_content_length(value: str) -> None:
    data = wire(RFC3665_INVITE).replace(b"Content-Length: 151", f"Content-Length: {value}".encode())
    with pytest.raises(SipError) as info:
        parse_message(data)
    assert info.value.code == "bad_content_length"


def test_conflicting_content_lengths() -> None:
    data = wire(RFC3665_INVITE.replace("CSeq: 1 INVITE\n", "CSeq: 1 INVITE\nl: 3\n"))
    with pytest.raises(SipError, match="Content-Length"):
        parse_message(data)


def test_oversize_raises_513_with_partial() -> None:
    data = wire(RFC3665_INVITE.replace("a=rtpmap:0 PCMU/8000", "a=x:" + "y" * 9000))
    with pytest.raises(SipError) as info:
        parse_message(data, max_bytes=8192)
    assert (info.value.status, info.value.code) == (513, "too_large")
    assert info.value.partial is not None and info.value.partial.method == "INVITE"


def test_limits_on_headers_and_lines() -> None:
    many = RFC3665_INVITE.replace("CSeq: 1 INVITE\n", "CSeq: 1 INVITE\n" + "X-Pad: 1\n" * 70)
    with pytest.raises(SipError) as info:
        parse_message(wire(many), max_headers=64)
    assert info.value.code == "too_many_headers"
    assert info.value.partial is not None and info.value.partial.header("Via")
    long_line = RFC3665_INVITE.replace("CSeq: 1 INVITE\n", "CSeq: 1 INVITE\nX-Long: " + "a" * 3000 + "\n")
    with pytest.raises(SipError) as info:
        parse_message(wire(long_line), max_line=2048)
    assert info.value.code == "line_too_long"


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda t: t.replace("Call-ID: 3848276298220188511@atlanta.example.com\n", ""), "missing_header"),
        (lambda t: t.replace("CSeq: 1 INVITE", "CSeq: 1 BYE"), "bad_cseq"),
        (lambda t: t.replace("CSeq: 1 INVITE", "CSeq: 4294967296 INVITE"), "bad_cseq"),
        (lambda t: t.replace("Max-Forwards: 70", "Max-Forwards: many"), "bad_header"),
        (lambda t: t.replace("Max-Forwards: 70", "Max Forwards 70"), "bad_header"),
        (lambda t: t.replace("Max-Forwards: 70", "Max-Forwards: 7\x010"), "bad_line"),
        (lambda t: t.replace("INVITE sip:bob@biloxi.example.com SIP/2.0", "INVITE  SIP/2.0"),
         "bad_start_line"),
        (lambda t: t.replace("SIP/2.0\n", "SIP/3.0\n", 1), "bad_start_line"),
        (lambda t: " folded first\n" + t.split("\n", 1)[1], "bad_start_line"),
    ],
)
def test_malformed_requests(mutate, code: str) -> None:  # noqa: ANN001 - a lambda
    with pytest.raises(SipError) as info:
        parse_message(wire(mutate(RFC3665_INVITE)))
    assert info.value.code == code
    assert info.value.status == 400


def test_malformed_with_no_start_line_has_no_partial() -> None:
    with pytest.raises(SipError) as info:
        parse_message(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 hello")
    assert info.value.partial is None
    with pytest.raises(SipError) as info:
        parse_message(b"\r\n\r\n")
    assert info.value.code == "empty"


def test_parses_responses() -> None:
    ringing = parse_message(wire("""\
SIP/2.0 180 Ringing
Via: SIP/2.0/UDP client.atlanta.example.com:5060;branch=z9hG4bK74bf9;received=192.0.2.101
From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl
To: Bob <sip:bob@biloxi.example.com>;tag=8321234356
Call-ID: 3848276298220188511@atlanta.example.com
CSeq: 1 INVITE
Contact: <sip:bob@client.biloxi.example.com;transport=tcp>
Content-Length: 0
"""))
    assert not ringing.is_request
    assert (ringing.status, ringing.reason) == (180, "Ringing")
    bare = parse_message(serialize(SipMessage(status=200, reason="", headers=ringing.headers)))
    assert (bare.status, bare.reason) == (200, "")


def test_serialize_round_trip_and_content_length() -> None:
    msg = parse_message(wire(RFC3665_INVITE))
    msg.body = b"v=0\r\n"
    data = serialize(msg)
    assert b"Content-Length: 5\r\n\r\nv=0\r\n" in data
    assert data.count(b"Content-Length") == 1
    again = parse_message(data)
    assert again.headers[:-1] == msg.headers[:-1] and again.body == b"v=0\r\n"


def test_serialize_refuses_header_injection() -> None:
    msg = SipMessage(status=200, reason="OK", headers=[("Subject", "hi\r\nX-Evil: 1")])
    with pytest.raises(ValueError):
        serialize(msg)


def test_response_for_copies_the_dialog_headers() -> None:
    text = RFC3665_INVITE.replace(
        "Max-Forwards: 70\n",
        "Via: SIP/2.0/UDP ss1.atlanta.example.com:5060;branch=z9hG4bK2d4790.1, "
        "SIP/2.0/UDP 10.0.0.1\nMax-Forwards: 70\n"
        "Record-Route: <sip:ss1.atlanta.example.com;lr>\n",
    )
    request = parse_message(wire(text))
    ok = response_for(request, 200, "OK", to_tag="314159", headers=[("Contact", "<sip:b@h>")],
                      body=b"v=0\r\n", content_type="application/sdp")
    assert ok.headers_all("Via") == request.headers_all("Via")
    assert len(ok.header_list("Via")) == 3
    assert ok.header("To") == "Bob <sip:bob@biloxi.example.com>;tag=314159"
    assert ok.header("From") == request.header("From")
    assert ok.header("CSeq") == "1 INVITE" and ok.call_id == request.call_id
    assert ok.header("Record-Route") == "<sip:ss1.atlanta.example.com;lr>"
    assert ok.header("Content-Type") == "application/sdp"
    busy = response_for(request, 486, "Busy Here", to_tag="314159")
    assert busy.header("Record-Route") is None
    # A To that already carries a tag keeps it.
    again = response_for(parse_message(serialize(ok).replace(b"SIP/2.0 200 OK", b"BYE sip:x SIP/2.0")
                                       .replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE")),
                         200, "OK", to_tag="other")
    assert again.header("To") == "Bob <sip:bob@biloxi.example.com>;tag=314159"


def test_name_addr_forms() -> None:
    quoted = parse_name_addr('"Smith, \\"Bob\\"" <sip:bob@example.com;transport=udp>;tag=a6c85cf')
    assert quoted.display == 'Smith, "Bob"'
    assert quoted.uri == "sip:bob@example.com;transport=udp"
    assert quoted.tag == "a6c85cf"
    bare = parse_name_addr("sip:sipp@127.0.0.1:5061;tag=1234SIPpTag001")
    assert (bare.uri, bare.tag) == ("sip:sipp@127.0.0.1:5061", "1234SIPpTag001")
    token = parse_name_addr("Bob <sip:bob@biloxi.example.com>")
    assert (token.display, token.tag) == ("Bob", None)
    for bad in ("", "<sip:unterminated", '"open <sip:a@b>', "<nocolon>", "<sip:a@b> junk"):
        with pytest.raises(SipError):
            parse_name_addr(bad)


def test_via_parsing_and_stamping() -> None:
    via = parse_via("SIP/2.0/UDP 10.0.2.15:38397;branch=z9hG4bK5b5d987b82c08b17;rport")
    assert (via.transport, via.host, via.port) == ("UDP", "10.0.2.15", 38397)
    assert via.params == {"branch": "z9hG4bK5b5d987b82c08b17", "rport": None}
    v6 = parse_via("SIP/2.0/UDP [2001:db8::9]:5061;branch=z9hG4bKx")
    assert (v6.host, v6.port, v6.sent_by) == ("2001:db8::9", 5061, "2001:db8::9:5061")
    # RFC 3581 section 4: rport filled in and received added even when it equals sent-by.
    assert stamp_via("SIP/2.0/UDP 10.0.2.15:38397;branch=z9hG4bK5b;rport", ("203.0.113.7", 51847)) \
        == "SIP/2.0/UDP 10.0.2.15:38397;branch=z9hG4bK5b;received=203.0.113.7;rport=51847"
    assert stamp_via("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1", ("10.0.0.1", 5060)) == \
        "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1"
    assert stamp_via("SIP/2.0/UDP pc33.example.com;branch=z9hG4bK1;received=6.6.6.6",
                     ("192.0.2.4", 5060)) == \
        "SIP/2.0/UDP pc33.example.com;branch=z9hG4bK1;received=192.0.2.4"
    for bad in ("SIP/2.0 10.0.0.1", "SIP/2.0/UDP", "SIP/2.0/UDP host:99999", "HTTP/1.1 x"):
        with pytest.raises(SipError):
            parse_via(bad)


def test_list_and_param_helpers() -> None:
    assert split_list('"A, B" <sip:a@b>, <sip:c@d;x=1,2>, sip:e@f') == \
        ['"A, B" <sip:a@b>', "<sip:c@d;x=1,2>", "sip:e@f"]
    assert parse_params(';tag=1;lr;Name="x;y"') == {"tag": "1", "lr": None, "name": "x;y"}
    assert parse_cseq("101 INVITE") == (101, "INVITE")
    for bad in ("INVITE", "1", "2147483648 INVITE", "²1 INVITE", "1 IN VITE"):
        with pytest.raises(SipError):
            parse_cseq(bad)
