"""Fuzz the media parsers: RFC 4733 events, AudioSocket frames, G.711 and PCM decoding, uploaded
audio files (WAV headers), and bounded work of the Twilio / Asterisk / jitter parsers on 64 KiB.
(parse_rtp, the jitter buffer and the Twilio / Asterisk messages have their own hypothesis tests
in tests/unit/transports.)"""

from __future__ import annotations

import base64
import json
import struct

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from kombain.server.transports.asterisk_ws.protocol import AsteriskProtocolError, AsteriskWsProtocol
from kombain.server.transports.audiosocket.protocol import (
    Audio,
    AudioSocketError,
    AudioSocketProtocol,
    CallUuid,
    audio_frame,
    dtmf_frame,
    hangup_frame,
    uuid_frame,
)
from kombain.server.transports.sip.jitter import JitterBuffer
from kombain.server.transports.sip.rtp import (
    DtmfReceiver,
    RtpError,
    RtpPacket,
    RtpStream,
    parse_rtp,
    parse_telephone_event,
)
from kombain.server.transports.twilio.protocol import TwilioProtocolError, TwilioStreamProtocol
from kombain.streaming.audio import AudioFormat, AudioFormatError, alaw_decode, decode, mulaw_decode
from kombain.streaming.decode_file import BadAudioFile, decode_audio_file
from tests.fuzz.strategies import KIB64, fuzz, mutated, timed

UUID = "0b0e0f10-1112-4314-9516-17181a1b1c1d"


@fuzz(300)
@given(payload=st.binary(max_size=16), pt=st.sampled_from([0, 101, 127]), ssrc=st.integers(0, 3),
       ts=st.integers(0, 5))
def test_telephone_events_raise_only_rtp_error(payload: bytes, pt: int, ssrc: int, ts: int) -> None:
    try:
        event = parse_telephone_event(payload)
    except RtpError as exc:
        assert exc.code == "invalid_event" and len(payload) < 4
    else:
        assert event.digit is None or event.digit in "0123456789*#ABCD"
    receiver = DtmfReceiver(101, memory=4)
    digit = receiver.feed(RtpPacket(pt, 1, ts, ssrc, False, payload))
    assert digit is None or digit in "0123456789*#ABCD"


def test_dtmf_receiver_on_parsed_arbitrary_packets() -> None:
    valid = RtpStream(0).dtmf_packets("5", 101)

    @fuzz(300)
    @given(packets=st.lists(st.one_of(mutated(valid, max_ops=3), st.binary(max_size=40)), max_size=20))
    def check(packets: list[bytes]) -> None:
        receiver = DtmfReceiver(101, memory=8)
        for data in packets:
            try:
                pkt = parse_rtp(data)
            except RtpError:
                continue
            digit = receiver.feed(pkt)
            assert digit is None or digit in "0123456789*#ABCD"
        assert len(receiver._seen) <= 8

    check()


_FRAMES = [uuid_frame(UUID), audio_frame(b"\x01\x00" * 160, 8000), audio_frame(b"\x00" * 640, 16000),
           dtmf_frame("5"), hangup_frame(), b"\xff\x00\x01\x02"]


@fuzz(400)
@given(stream=st.one_of(st.lists(st.sampled_from(_FRAMES), max_size=8).map(b"".join).flatmap(
    lambda s: mutated([s or b"\x00"], max_ops=3)), st.binary(max_size=200)),
       cuts=st.lists(st.integers(0, 400), max_size=6))
def test_audiosocket_feed_raises_only_audiosocket_error(stream: bytes, cuts: list[int]) -> None:
    proto = AudioSocketProtocol(max_payload=1024, max_buffer=4096)
    bounds = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    try:
        for a, b in zip(bounds, bounds[1:], strict=False):
            for event in proto.feed(stream[a:b]):
                if isinstance(event, Audio):
                    assert len(event.pcm) % 2 == 0 and event.rate in (8000, 16000, 24000, 48000)
                elif isinstance(event, CallUuid):
                    assert proto.uuid == event.uuid
    except AudioSocketError as exc:
        assert exc.code
    assert len(proto._buf) <= proto.max_buffer


@fuzz(200)
@given(data=st.binary(max_size=400), encoding=st.sampled_from(["pcm16", "mulaw", "alaw"]),
       rate=st.sampled_from([8000, 16000, 24000, 11025, 0, -1]))
def test_pcm_and_g711_decode(data: bytes, encoding: str, rate: int) -> None:
    try:
        fmt = AudioFormat(encoding, rate)
    except AudioFormatError:
        return
    try:
        samples = decode(data, fmt)
    except AudioFormatError:
        assert encoding == "pcm16" and len(data) % 2
        return
    assert samples.dtype == np.float32 and np.all(np.abs(samples) <= 1.0)
    assert len(samples) == (len(data) // 2 if encoding == "pcm16" else len(data))


def test_g711_decode_is_total_and_linear_time() -> None:
    every = bytes(range(256))
    for fn in (mulaw_decode, alaw_decode):
        out = fn(every)
        assert len(out) == 256 and np.isfinite(out).all()
        timed(lambda fn=fn: fn(every * (KIB64 // 256) * 16), 0.2)  # 1 MiB


def wav(rate: int, data: bytes, *, bits: int = 16, channels: int = 1, fmt_tag: int = 1,
        data_len: int | None = None) -> bytes:
    """A RIFF/WAVE file whose header may lie (`data_len`, a 1 Hz `rate`)."""
    align = channels * bits // 8
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, rate, (rate * align) & 0xFFFFFFFF, align, bits)
    body = (b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data"
            + struct.pack("<I", len(data) if data_len is None else data_len) + data)
    return b"RIFF" + struct.pack("<I", len(body)) + body


_WAVS = [wav(16000, b"\x00\x01" * 100), wav(8000, b"\x80" * 200, bits=8), wav(48000, b"\x00" * 400, channels=2)]


@fuzz(150)
@given(data=st.one_of(mutated(_WAVS, max_ops=4), st.binary(max_size=300),
                      st.builds(wav, st.integers(0, 2**32 - 1), st.binary(max_size=200),
                                bits=st.sampled_from([8, 16, 24, 32, 0, 7]), channels=st.integers(0, 9),
                                fmt_tag=st.sampled_from([1, 3, 6, 7, 0xFFFE, 0]),
                                data_len=st.none() | st.integers(0, 2**32 - 1))))
def test_uploaded_audio_decode_raises_only_bad_audio_file(data: bytes) -> None:
    try:
        audio = decode_audio_file(data, max_seconds=600)
    except BadAudioFile:
        return
    assert audio.dtype == np.float32 and 0 < len(audio) <= 600 * 16000 + 16000


def test_uploaded_audio_bombs_are_refused_quickly() -> None:
    # Each byte of a 1 Hz WAV was a second of decoded audio: 4 KiB became 68 minutes, 800 MB.
    timed(lambda: decode_audio_file(wav(1, b"\x80" * 4096, bits=8)), 0.5)
    for rate in (1, 100, 3999, 10**9):
        try:
            decode_audio_file(wav(rate, b"\x80" * 4096, bits=8))
        except BadAudioFile as exc:
            assert "sample rate" in str(exc) or "could not decode" in str(exc)
        else:
            raise AssertionError(f"{rate} Hz accepted")
    # A header claiming 4 GiB of data over a 2 KiB file decodes what is there.
    audio = decode_audio_file(wav(16000, b"\x00" * 2048, data_len=2**32 - 2))
    assert len(audio) == 1024
    # A declared duration past the limit is refused before decoding.
    try:
        timed(lambda: decode_audio_file(wav(8000, b"\x80" * 16000, bits=8), max_seconds=1), 0.2)
        decode_audio_file(wav(8000, b"\x80" * 16000, bits=8), max_seconds=1)
    except BadAudioFile as exc:
        assert "longer than" in str(exc)
    else:
        raise AssertionError("2 s accepted with a 1 s limit")


def test_twilio_asterisk_jitter_bounded_work_on_64k() -> None:
    media = {"event": "media", "streamSid": "MZ1", "media": {"payload": "A" * KIB64}}
    for raw in (json.dumps(media), "[" * KIB64, '{"event":"start","start":' + "{" * 5000 + "}" * 5000 + "}",
                "é" * KIB64, b"\xff" * KIB64):
        proto = TwilioStreamProtocol()
        timed(lambda raw=raw, proto=proto: proto.receive(raw), 0.5)
        proto = AsteriskWsProtocol()
        if isinstance(raw, str):
            timed(lambda raw=raw, proto=proto: proto.receive_text(raw), 0.5)
        timed(lambda raw=raw, proto=proto: proto.receive_binary(raw if isinstance(raw, bytes) else raw.encode()), 0.5)
    for bad in ('{"event":"media"}', base64.b64encode(b"x").decode()):
        try:
            TwilioStreamProtocol().receive(bad)
        except TwilioProtocolError:
            pass
        try:
            AsteriskWsProtocol().receive_text(bad)
        except AsteriskProtocolError:
            pass
    # 64 Ki packets with random-looking sequence numbers: each push is O(1) amortised.
    buf = JitterBuffer(target_ms=60, max_ms=400, payload_type=0)
    rng = np.random.default_rng(1)
    seqs, tss = rng.integers(0, 65536, KIB64), rng.integers(0, 2**32, KIB64)

    def flood() -> None:
        for seq, ts in zip(seqs.tolist(), tss.tolist(), strict=True):
            buf.push(RtpPacket(0, seq, ts, 7, False, b"\x7f" * 160))
            buf.pop()

    timed(flood, 5.0)
    assert len(buf) <= buf.max_frames
