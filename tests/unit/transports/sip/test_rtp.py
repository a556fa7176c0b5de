"""server.transports.rtp: RTP packets (RFC 3550), the sender stream and RFC 4733 telephone-events."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from kombain.server.transports.sip.rtp import (
    DtmfReceiver,
    RtpError,
    RtpPacket,
    RtpStream,
    TelephoneEvent,
    build_rtp,
    build_telephone_event,
    parse_rtp,
    parse_telephone_event,
)

TE_PT = 101
SILENCE = b"\xff" * 160


def header(*, version: int = 2, padding: bool = False, extension: bool = False, cc: int = 0,
           marker: bool = False, pt: int = 0, seq: int = 1, ts: int = 160, ssrc: int = 0x1234) -> bytes:
    first = version << 6 | padding << 5 | extension << 4 | cc
    return struct.pack("!BBHII", first, marker << 7 | pt, seq, ts, ssrc)


# --- packets --------------------------------------------------------------------------------

def test_round_trip() -> None:
    pkt = RtpPacket(payload_type=0, sequence=65535, timestamp=0xFFFFFFFF, ssrc=0xDEADBEEF, marker=True,
                    payload=SILENCE)
    data = build_rtp(pkt)
    assert len(data) == 12 + 160
    assert data[:2] == b"\x80\x80"
    assert parse_rtp(data) == pkt


def test_round_trip_with_csrcs_and_extension() -> None:
    pkt = RtpPacket(8, 7, 1234, 99, False, b"\xd5" * 10, csrcs=(1, 2, 3),
                    extension=(0xBEDE, b"\x10\xff\x00\x00"))
    data = build_rtp(pkt)
    assert data[0] == 0x80 | 0x10 | 3
    assert parse_rtp(data) == pkt


def test_parse_csrcs() -> None:
    data = header(cc=2, pt=8) + struct.pack("!II", 11, 22) + b"audio"
    pkt = parse_rtp(data)
    assert pkt.csrcs == (11, 22)
    assert pkt.payload == b"audio"
    assert pkt.payload_type == 8


def test_parse_header_extension_is_skipped_from_payload() -> None:
    ext = struct.pack("!HH", 0xBEDE, 2) + b"\x22\x01\x02\x03" + b"\x00" * 4
    pkt = parse_rtp(header(extension=True, cc=1) + struct.pack("!I", 5) + ext + b"payload")
    assert pkt.payload == b"payload"
    assert pkt.csrcs == (5,)
    assert pkt.extension == (0xBEDE, b"\x22\x01\x02\x03" + b"\x00" * 4)


def test_parse_padding_is_removed() -> None:
    pkt = parse_rtp(header(padding=True, marker=True) + b"abcde" + b"\x00\x00\x03")
    assert pkt.payload == b"abcde"
    assert pkt.marker
    # Padding may take the whole payload (the count includes itself).
    assert parse_rtp(header(padding=True) + b"\x00\x00\x00\x04").payload == b""


def test_parse_accepts_bytearray_and_memoryview() -> None:
    data = build_rtp(RtpPacket(0, 1, 2, 3, False, b"x"))
    assert parse_rtp(bytearray(data)).payload == b"x"
    assert parse_rtp(memoryview(data)).payload == b"x"


@pytest.mark.parametrize("data", [
    b"",
    header()[:11],  # shorter than the fixed header
    header(version=1) + SILENCE,
    header(version=0) + SILENCE,
    header(version=3) + SILENCE,
    header(padding=True) + b"ab\x05",  # padding longer than the payload
    header(padding=True) + b"ab\x00",  # a zero padding count
    header(padding=True),  # padding bit with no room for the count
    header(cc=3) + b"\x00" * 8,  # CSRCs past the end
    header(extension=True) + b"\xbe\xde",  # extension header truncated
    header(extension=True) + struct.pack("!HH", 0xBEDE, 3) + b"\x00" * 8,  # extension data truncated
    header(extension=True, padding=True) + struct.pack("!HH", 1, 0) + b"\x09",  # padding into extension
])
def test_malformed_raises_invalid_rtp(data: bytes) -> None:
    with pytest.raises(RtpError) as err:
        parse_rtp(data)
    assert err.value.code == "invalid_rtp"
    assert isinstance(err.value, ValueError)


def test_too_large_raises() -> None:
    data = build_rtp(RtpPacket(0, 1, 2, 3, False, b"\x00" * 1489))
    assert len(data) == 1501
    with pytest.raises(RtpError, match="invalid_rtp"):
        parse_rtp(data)
    assert len(parse_rtp(data, max_bytes=2000).payload) == 1489


def test_a_short_rtcp_receiver_report_is_rtcp_not_malformed_rtp() -> None:
    rr = bytes([0x80, 201, 0, 1]) + (1234).to_bytes(4, "big")  # RR without report blocks: 8 bytes
    with pytest.raises(RtpError) as err:
        parse_rtp(rr)
    assert err.value.code == "rtcp"
    with pytest.raises(RtpError) as err:
        parse_rtp(rr[:7])
    assert err.value.code == "invalid_rtp"


def test_rtcp_is_told_apart() -> None:
    # An RTCP receiver report (PT 201) on a muxed port (RFC 5761).
    rr = struct.pack("!BBHI", 0x80, 201, 1, 0x1234)
    with pytest.raises(RtpError) as err:
        parse_rtp(rr + b"\x00" * 4)
    assert err.value.code == "rtcp"


@pytest.mark.parametrize("kwargs", [
    {"payload_type": 128}, {"sequence": 65536}, {"timestamp": -1}, {"ssrc": 1 << 32},
    {"csrcs": tuple(range(16))}, {"extension": (1, b"abc")},
])
def test_packet_fields_are_validated(kwargs: dict[str, object]) -> None:
    fields: dict[str, object] = {"payload_type": 0, "sequence": 0, "timestamp": 0, "ssrc": 0, "marker": False,
                                 "payload": b""}
    fields.update(kwargs)
    with pytest.raises(ValueError):
        RtpPacket(**fields)  # type: ignore[arg-type]


# --- the sending stream ---------------------------------------------------------------------

def test_stream_sequence_and_timestamp_wrap() -> None:
    stream = RtpStream(0, ssrc=42, sequence=65534, timestamp=0xFFFFFF00)
    pkts = [parse_rtp(stream.packet(SILENCE, 160)) for _ in range(4)]
    assert [p.sequence for p in pkts] == [65534, 65535, 0, 1]
    assert [p.timestamp for p in pkts] == [0xFFFFFF00, 0xFFFFFFA0, 0x40, 0xE0]
    assert {p.ssrc for p in pkts} == {42}
    assert {p.payload_type for p in pkts} == {0}


def test_stream_marker_on_first_packet_after_skip_and_on_request() -> None:
    stream = RtpStream(8, sequence=10, timestamp=1000)
    first, second = parse_rtp(stream.packet(SILENCE, 160)), parse_rtp(stream.packet(SILENCE, 160))
    assert first.marker and not second.marker
    stream.skip(800)
    after_gap = parse_rtp(stream.packet(SILENCE, 160))
    assert after_gap.marker
    assert after_gap.timestamp == 1000 + 320 + 800
    assert after_gap.sequence == 12  # a gap leaves the sequence numbers contiguous
    assert parse_rtp(stream.packet(SILENCE, 160, marker=True)).marker
    assert not parse_rtp(stream.packet(SILENCE, 160)).marker


def test_stream_starts_at_random_points() -> None:
    streams = [RtpStream(0) for _ in range(8)]
    assert len({(s.ssrc, s.sequence, s.timestamp) for s in streams}) == 8
    assert all(0 <= s.ssrc < 1 << 32 and 0 <= s.sequence < 1 << 16 for s in streams)


def test_stream_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        RtpStream(200)
    stream = RtpStream(0)
    with pytest.raises(ValueError):
        stream.packet(b"", -1)
    with pytest.raises(ValueError):
        stream.skip(-160)


# --- RFC 4733 -------------------------------------------------------------------------------

def test_telephone_event_payload() -> None:
    event = TelephoneEvent(event=11, end=True, volume=10, duration=1280)
    payload = build_telephone_event(event)
    assert payload == bytes([11, 0x80 | 10]) + (1280).to_bytes(2, "big")
    assert parse_telephone_event(payload) == event
    assert event.digit == "#"
    assert parse_telephone_event(bytes([16, 0x40 | 5, 0, 1])) == TelephoneEvent(16, False, 5, 1)  # R ignored
    assert TelephoneEvent(16, False, 0, 0).digit is None
    with pytest.raises(RtpError):
        parse_telephone_event(b"\x01\x02")


def test_dtmf_packets_follow_rfc4733() -> None:
    stream = RtpStream(0, ssrc=7, sequence=65530, timestamp=5000)
    stream.packet(SILENCE, 160)
    pkts = [parse_rtp(p) for p in stream.dtmf_packets("5", TE_PT)]
    events = [parse_telephone_event(p.payload) for p in pkts]
    assert len(pkts) == 7 + 3  # updates every 20 ms up to 160 ms, then the end packet three times
    assert {p.payload_type for p in pkts} == {TE_PT}
    assert {p.timestamp for p in pkts} == {5160}  # one timestamp: the event's onset
    assert [p.marker for p in pkts] == [True] + [False] * 9
    assert [p.sequence for p in pkts] == [65531, 65532, 65533, 65534, 65535, 0, 1, 2, 3, 4]
    assert [e.duration for e in events] == [160, 320, 480, 640, 800, 960, 1120, 1280, 1280, 1280]
    assert [e.end for e in events] == [False] * 7 + [True] * 3
    assert {(e.event, e.volume) for e in events} == {(5, 10)}
    # The event stands in for 160 ms of audio: the next audio packet follows it.
    after = parse_rtp(stream.packet(SILENCE, 160))
    assert (after.sequence, after.timestamp, after.payload_type) == (5, 5160 + 1280, 0)


def test_dtmf_packets_short_event_and_letters() -> None:
    stream = RtpStream(0, timestamp=0)
    pkts = [parse_rtp(p) for p in stream.dtmf_packets("d", TE_PT, duration_ms=20, volume=0)]
    assert [parse_telephone_event(p.payload) for p in pkts] == [TelephoneEvent(15, True, 0, 160)] * 3
    assert [p.marker for p in pkts] == [True, False, False]


@pytest.mark.parametrize("kwargs", [
    {"digit": "E"}, {"digit": "12"}, {"digit": ""}, {"duration_ms": 0}, {"duration_ms": 9000},
    {"volume": 64}, {"te_pt": 128},
])
def test_dtmf_packets_rejects_bad_arguments(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"digit": "1", "te_pt": TE_PT}
    args.update(kwargs)
    with pytest.raises(ValueError):
        RtpStream(0).dtmf_packets(**args)  # type: ignore[arg-type]


def received(stream: RtpStream, digit: str, **kwargs: int) -> list[RtpPacket]:
    return [parse_rtp(p) for p in stream.dtmf_packets(digit, TE_PT, **kwargs)]


def digits(receiver: DtmfReceiver, pkts: list[RtpPacket]) -> list[str]:
    return [d for d in map(receiver.feed, pkts) if d is not None]


def test_receiver_reports_one_digit_per_event() -> None:
    stream, receiver = RtpStream(0), DtmfReceiver(TE_PT)
    pkts = received(stream, "7")
    assert receiver.feed(pkts[0]) == "7"  # reported on the first packet, not at the end
    assert digits(receiver, pkts[1:]) == []


def test_receiver_ignores_retransmitted_end_packets() -> None:
    stream, receiver = RtpStream(0), DtmfReceiver(TE_PT)
    pkts = received(stream, "*")
    ends = pkts[-3:]
    assert digits(receiver, pkts + ends + ends + ends + pkts[:2]) == ["*"]


def test_receiver_two_identical_digits_in_a_row() -> None:
    stream, receiver = RtpStream(0), DtmfReceiver(TE_PT)
    first, second = received(stream, "3"), received(stream, "3")
    assert first[0].timestamp != second[0].timestamp
    assert digits(receiver, first + second) == ["3", "3"]


def test_receiver_digit_from_end_packet_when_earlier_ones_are_lost() -> None:
    stream, receiver = RtpStream(0), DtmfReceiver(TE_PT)
    pkts = received(stream, "#")
    assert digits(receiver, pkts[-3:]) == ["#"]  # only the end packets got through
    pkts = received(stream, "9")
    assert digits(receiver, pkts[1:]) == ["9"]  # the first (marker) packet lost


def test_receiver_reordered_events() -> None:
    stream, receiver = RtpStream(0), DtmfReceiver(TE_PT)
    one, two = received(stream, "1"), received(stream, "2")
    assert digits(receiver, [two[0], one[0], *one[1:], *two[1:]]) == ["2", "1"]


def test_receiver_keys_events_by_ssrc_too() -> None:
    a = RtpStream(0, ssrc=1, timestamp=800)
    b = RtpStream(0, ssrc=2, timestamp=800)
    receiver = DtmfReceiver()
    assert digits(receiver, received(a, "4") + received(b, "4")) == ["4", "4"]


def test_receiver_ignores_other_payload_types_non_dtmf_events_and_short_payloads() -> None:
    stream, receiver = RtpStream(0), DtmfReceiver(TE_PT)
    assert receiver.feed(parse_rtp(stream.packet(SILENCE, 160))) is None  # audio, PT 0
    flash_event = build_telephone_event(TelephoneEvent(16, True, 10, 800))
    flash = RtpPacket(TE_PT, 1, 5000, stream.ssrc, True, flash_event)
    assert receiver.feed(flash) is None  # event 16 (hook flash) is not a digit
    assert receiver.feed(RtpPacket(TE_PT, 2, 6000, stream.ssrc, True, b"\x01")) is None
    assert digits(receiver, received(stream, "A")) == ["A"]


def test_receiver_memory_is_bounded() -> None:
    stream, receiver = RtpStream(0), DtmfReceiver(TE_PT, memory=4)
    for _ in range(10):
        assert digits(receiver, received(stream, "0", duration_ms=40)) == ["0"]
    assert len(receiver._seen) == 4


# --- fuzz -----------------------------------------------------------------------------------

def test_hypothesis_parse_rtp_raises_only_rtp_errors() -> None:
    hypothesis = pytest.importorskip("hypothesis")
    st = pytest.importorskip("hypothesis.strategies")

    valid = build_rtp(RtpPacket(0, 1, 2, 3, True, SILENCE[:20], csrcs=(9,), extension=(1, b"\x00" * 4)))

    @st.composite
    def mutated(draw: Any) -> bytes:
        data = bytearray(valid)
        for _ in range(draw(st.integers(0, 4))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return bytes(data[: draw(st.integers(0, len(data)))])

    @hypothesis.settings(max_examples=500, deadline=None)
    @hypothesis.given(st.one_of(st.binary(max_size=64), mutated()))
    def check(data: bytes) -> None:
        try:
            pkt = parse_rtp(data)
        except RtpError as err:
            assert err.code in ("invalid_rtp", "rtcp")
            return
        assert len(pkt.payload) <= len(data) - 12
        assert parse_rtp(build_rtp(pkt)) == pkt

    check()
