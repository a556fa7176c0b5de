"""The WebRTC transport's pure parts: offer checks, ICE settings, the reply track's buffer."""

from __future__ import annotations

import asyncio
import contextlib

import numpy as np
import pytest

from kombain.loadtest.webrtc_offers import cases
from kombain.server.transports.webrtc.ice import ice_servers_json, parse_hosts, parse_ice_servers
from kombain.server.transports.webrtc.media import FRAME_SAMPLES, ReplyAudioTrack, frame_to_mono
from kombain.server.transports.webrtc.sdp import SdpError, check_offer

OFFER = """v=0
o=- 1 1 IN IP4 0.0.0.0
s=-
t=0 0
a=group:BUNDLE 0 1
m=audio 9 UDP/TLS/RTP/SAVPF 111 0
c=IN IP4 0.0.0.0
a=sendrecv
a=mid:0
a=rtcp-mux
a=ice-ufrag:abcd
a=ice-pwd:0123456789abcdef01234567
a=fingerprint:sha-256 00:11
a=setup:actpass
a=rtpmap:111 opus/48000/2
a=rtpmap:0 PCMU/8000
m=application 9 UDP/DTLS/SCTP webrtc-datachannel
a=mid:1
a=sctp-port:5000
a=ice-ufrag:abcd
a=ice-pwd:0123456789abcdef01234567
a=fingerprint:sha-256 00:11
a=setup:actpass
""".replace("\n", "\r\n")


def test_good_offer() -> None:
    text, info = check_offer(OFFER.encode(), 65536)
    assert text == OFFER and info.audio_codecs == ("opus", "PCMU") and info.has_data_channel


@pytest.mark.parametrize("raw,code,words", [
    (b"", "invalid_sdp", "empty"),
    (b"\xff\xfe", "invalid_sdp", "UTF-8"),
    (b"x" * 100, "sdp_too_large", "exceeds"),
    (b"o=- 1 1 IN IP4 0.0.0.0\r\n", "invalid_sdp", "v=0"),
    (OFFER.replace("m=audio 9", "m=video 9").encode(), "no_audio", "no audio"),
    (OFFER.replace("m=audio 9", "m=audio 0").encode(), "no_audio", "no audio"),
    (OFFER.replace("opus/", "SILK/").replace("PCMU/", "G722/").encode(), "unsupported_codec", "SILK, G722"),
    (OFFER.replace("a=fingerprint:sha-256 00:11\r\n", "").encode(), "invalid_sdp", "fingerprint"),
    # What aiortc took for granted (each was a 500 with a traceback):
    (OFFER.replace("a=mid:0\r\n", "").encode(), "invalid_sdp", "a=mid"),
    (OFFER.replace("a=mid:0", "a=mid::::").encode(), "invalid_sdp", "a=mid"),
    (OFFER.replace("a=mid:1", "a=mid:0").encode(), "invalid_sdp", "two media sections"),
    (OFFER.replace("BUNDLE 0 1", "BUNDLE 0 1 7").encode(), "invalid_sdp", "unknown mid '7'"),
    (OFFER.replace("a=mid:0", "a=mid:nan").encode(), "invalid_sdp", "unknown mid '0'"),
    (OFFER.replace("a=setup:actpass\r\n", "").encode(), "invalid_sdp", "a=setup"),
    (OFFER.replace("a=rtcp-mux\r\n", "").encode(), "invalid_sdp", "rtcp-mux"),
    (OFFER.replace("a=sendrecv\r\n", "").encode(), "invalid_sdp", "direction"),
    (OFFER.replace("a=sctp-port:5000\r\n", "").encode(), "invalid_sdp", "a=sctp-port"),
    (OFFER.replace("a=sctp-port:5000\r\n", "").replace("UDP/DTLS/SCTP webrtc-datachannel", "DTLS/SCTP 5000").encode(),
     None, ""),
    (OFFER.replace("m=audio 9", "m=audio nan").encode(), "invalid_sdp", "malformed"),
    (OFFER.replace("opus/48000/2", "opus/nan/2").encode(), "invalid_sdp", "malformed"),
    ("\u00a0".encode(), "invalid_sdp", "v=0"),
    ("\u2028\r\n\u2028".encode(), "invalid_sdp", "v=0"),
    (b"\x1e", "invalid_sdp", "v=0"),
])
def test_bad_offers(raw: bytes, code: str | None, words: str) -> None:
    if code is None:  # legacy DTLS/SCTP needs no a=sctp-port: its port is in the m= line
        check_offer(raw, 65536)
        return
    with pytest.raises(SdpError) as err:
        check_offer(raw, 64 if code == "sdp_too_large" else 65536)
    assert err.value.code == code and words in str(err.value)


@pytest.mark.parametrize("seed", range(4))
def test_mutated_offers_raise_only_sdp_error(seed: int) -> None:
    """The seeded mutations the HTTP fuzz sends (tests/fuzz/test_webrtc_offers.py), checked here
    without a server: nothing but SdpError escapes the checks."""
    for _, text in cases(seed, 200):
        with contextlib.suppress(SdpError):
            check_offer(text.encode(), 65536)


def test_ice_servers_setting() -> None:
    assert parse_ice_servers("") == []
    urls = parse_ice_servers("stun:stun.example.org:3478, turn:turn.example.org:3478")
    assert [s.urls for s in urls] == ["stun:stun.example.org:3478", "turn:turn.example.org:3478"]
    turn = parse_ice_servers('[{"urls": ["turn:t.example.org"], "username": "u", "credential": "p"}]')
    assert ice_servers_json(turn) == [{"urls": ["turn:t.example.org"], "username": "u", "credential": "p"}]
    with pytest.raises(ValueError):
        parse_ice_servers('[{"username": "u"}]')
    assert parse_hosts(" 127.0.0.1, ::1 ,") == ("127.0.0.1", "::1")


def test_reply_track_buffers_flushes_and_bounds() -> None:
    track = ReplyAudioTrack(max_ms=200)
    tone = (np.sin(np.arange(2400) / 5) * 10000).astype("<i2").tobytes()  # 100 ms at 24 kHz
    track.write_pcm(tone, 24000)
    assert 95 < track.buffered_ms <= 100
    track.flush()
    assert track.buffered_ms == 0
    for _ in range(5):  # 500 ms written into a 200 ms buffer: the oldest is dropped
        track.write_pcm(tone, 24000)
    assert track.buffered_ms <= 200 and track.dropped_samples > 0


def test_reply_track_frames_are_paced_20ms_and_silent_when_empty() -> None:
    async def frames() -> list:
        track = ReplyAudioTrack()
        track.write_pcm((np.ones(2400, "<i2") * 8000).tobytes(), 24000)  # 100 ms, as the session sends
        return [await track.recv() for _ in range(7)]

    out = asyncio.run(frames())
    assert [f.pts for f in out] == [960 * i for i in range(7)]
    assert all(f.samples == FRAME_SAMPLES and f.sample_rate == 48000 for f in out)
    assert np.abs(frame_to_mono(out[0])).max() > 0.1
    assert np.abs(frame_to_mono(out[6])).max() == 0
