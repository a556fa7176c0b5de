"""Self-check of the SIP test harness against sipp's and baresip's own behaviour (no kombain).

The harness (pcap.py, peers.py, scenarios/) must be right before it can judge the server: here
its pieces talk to sipp's built-in UAS (`sipp -sn uas`), to the harness's own sipp UAS
scenarios and to a second baresip. Runs only inside a network namespace with nothing but
loopback (KOMBAIN_NETNS_INNER=1), e.g.:

    unshare -n sh -c 'ip link set lo up && KOMBAIN_NETNS_INNER=1 .venv/bin/python -m pytest -q tests/sip/test_harness_selfcheck.py'
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import struct
import subprocess
import time
import wave

import numpy as np
import pytest

from tests.conftest import SPEECH_DIR
from tests.sip import pcap
from tests.sip.peers import (
    BaresipPeer,
    RtpRecorder,
    free_udp_port,
    in_test_netns,
    netem,
    netem_available,
    run_baresip,
    run_sipp,
    send_garbage_sip,
    sipp_uas,
    udp_port_bound,
)

pytestmark = [
    pytest.mark.skipif(not in_test_netns(), reason="runs only in the test network namespace (KOMBAIN_NETNS_INNER=1)"),
    pytest.mark.skipif(shutil.which("sipp") is None or shutil.which("baresip") is None,
                       reason="needs sipp (sip-tester) and baresip"),
]

SPEECH = SPEECH_DIR / "cards_001.wav"  # 1.1 s: short calls keep the self-check quick
SPEECH_LONG = SPEECH_DIR / "arctic_a0009.wav"  # 3.1 s


def expected_audio(path) -> np.ndarray:
    """The audio a pcap carries, as a receiver decodes it."""
    return np.concatenate([pcap.mulaw_decode(pcap.parse_rtp(p.payload).payload) for p in pcap.read_pcap(path)])


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Peak normalised cross-correlation of b within a (a may be longer and hold b anywhere)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    if len(a) < len(b):
        a = np.concatenate([a, np.zeros(len(b) - len(a))])
    n = 1 << int(np.ceil(np.log2(len(a) + len(b))))
    xc = np.fft.irfft(np.fft.rfft(a, n) * np.conj(np.fft.rfft(b, n)), n)[: len(a) - len(b) + 1]
    energy = np.sqrt(np.convolve(a * a, np.ones(len(b)), "valid") * np.sum(b * b)) + 1e-9
    return float(np.max(xc / energy))


@pytest.fixture
def media(tmp_path):
    speech = pcap.write_speech_pcap(tmp_path / "speech.pcap", SPEECH, trail_ms=300)
    dtmf = pcap.write_dtmf_pcap(tmp_path / "dtmf.pcap", "123#")
    return speech, dtmf


# --- files -------------------------------------------------------------------------------------

def test_mulaw_reference_values():
    # G.711 mu-law (ITU/Sun g711.c): 0 -> 0xFF, full scale -> 0x80 / 0x00, small negatives 0x7E.
    assert pcap.mulaw_encode(np.array([0, 32767, -32768, -1, 8, -8], dtype=np.int16)) == bytes(
        [0xFF, 0x80, 0x00, 0x7E, 0xFE, 0x7E])
    every = bytes(range(256))
    assert pcap.mulaw_encode(pcap.mulaw_decode(every)) == every.replace(b"\x7f", b"\xff")
    assert pcap.alaw_encode(pcap.alaw_decode(every)) == every


def test_speech_pcap_is_what_sipp_reads(tmp_path):
    path = pcap.write_speech_pcap(tmp_path / "s.pcap", SPEECH, lead_ms=100, trail_ms=200)
    raw = path.read_bytes()
    magic, vmaj, vmin, _, _, snaplen, link = struct.unpack("<IHHiIII", raw[:24])
    assert (magic, vmaj, vmin, link) == (0xA1B2C3D4, 2, 4, 1) and snaplen >= 65535  # Ethernet
    pkts = pcap.read_pcap(path)
    with wave.open(str(SPEECH)) as w:
        seconds = w.getnframes() / w.getframerate() + 0.3
    assert len(pkts) == int(np.ceil(seconds * 50))
    assert all(p.ip_checksum_ok and p.udp_checksum_ok for p in pkts)
    assert np.allclose(np.diff([p.t for p in pkts]), 0.020)
    rtp = [pcap.parse_rtp(p.payload) for p in pkts]
    assert [r.version for r in rtp] == [2] * len(rtp)
    assert {r.payload_type for r in rtp} == {0} and {len(r.payload) for r in rtp} == {160}
    assert len({r.ssrc for r in rtp}) == 1
    assert np.all(np.diff([r.seq for r in rtp]) == 1) and np.all(np.diff([r.timestamp for r in rtp]) == 160)
    assert rtp[0].marker and not any(r.marker for r in rtp[1:])
    audio = np.concatenate([pcap.mulaw_decode(r.payload) for r in rtp])
    assert not audio[:800].any() and not audio[-1600:].any()  # lead and trail silence
    speech = pcap.load_speech_8k(SPEECH)
    assert np.array_equal(audio[800:800 + len(speech)], pcap.mulaw_decode(pcap.mulaw_encode(speech)))
    assert pcap.pcap_duration_s(path) == pytest.approx(len(pkts) * 0.02)


def test_dtmf_pcap_is_rfc4733(tmp_path):
    pkts = pcap.read_pcap(pcap.write_dtmf_pcap(tmp_path / "d.pcap", "5*", tone_ms=160, gap_ms=100))
    rtp = [pcap.parse_rtp(p.payload) for p in pkts]
    assert {r.payload_type for r in rtp} == {101} and np.all(np.diff([r.seq for r in rtp]) == 1)
    events = {}
    for p, r in zip(pkts, rtp, strict=True):
        ev, flags, duration = struct.unpack("!BBH", r.payload)
        events.setdefault(r.timestamp, []).append((p.t, ev, flags, duration, r.marker))
    assert len(events) == 2
    (ts1, first), (ts2, second) = sorted(events.items())
    assert ts2 - ts1 == (160 + 100) * 8
    for packets, code in ((first, 5), (second, 10)):
        assert {e[1] for e in packets} == {code}
        assert packets[0][4] and not any(e[4] for e in packets[1:])  # marker on the first only
        ends = [e for e in packets if e[2] & 0x80]
        assert len(ends) == 3 and {e[3] for e in ends} == {160 * 8}  # three end packets, 160 ms
        assert [e[3] for e in packets if not e[2] & 0x80] == [160 * k for k in range(1, 8)]
        assert all(e[2] & 0x3F == 10 for e in packets)  # volume -10 dBm0
    assert second[0][0] - first[0][0] == pytest.approx(0.26)


def test_mulaw_files(tmp_path):
    samples = pcap.load_speech_8k(SPEECH)
    assert pcap.write_rtp_stream_raw(tmp_path / "s.ulaw", samples).read_bytes() == pcap.mulaw_encode(samples)
    path = pcap.write_wav_pcmu(tmp_path / "s.wav", samples)
    raw = path.read_bytes()
    assert raw[:4] == b"RIFF" and raw[8:16] == b"WAVEfmt " and raw[36:40] == b"data"
    fmt, channels, rate, byte_rate, align, bits = struct.unpack("<HHIIHH", raw[20:36])
    assert (fmt, channels, rate, byte_rate, align, bits) == (7, 1, 8000, 8000, 1, 8)
    assert raw[44:] == pcap.mulaw_encode(samples)


# --- sipp as the caller ------------------------------------------------------------------------

async def test_uac_call_against_sipp_uas(media, tmp_path):
    speech, dtmf = media
    async with sipp_uas() as uas, RtpRecorder(uas.media_port) as heard:
        res = await run_sipp("uac_call.xml", uas.target, timeout_s=20, workdir=tmp_path / "uac", params={
            "speech_pcap": str(speech), "pause_ms": str(int(pcap.pcap_duration_s(speech) * 1000) + 300),
            "dtmf_pcap": str(dtmf), "dtmf_pause_ms": "1200"})
        await asyncio.sleep(0.2)
    assert res.ok and res.successful_calls == 1, res.explain()
    assert "BYE sip:" in res.messages_log and "m=audio" in res.messages_log
    uas_res = uas.result  # stopped while the call is in its timewait: the log, not the counters
    assert uas_res is not None and "UDP message received" in uas_res.messages_log
    assert "CSeq: 2 BYE" in uas_res.messages_log, uas_res.explain()
    # sipp sent the pcap's RTP, unchanged, from its -mp port to the UAS's SDP port.
    sender_media_port = int(res.command[res.command.index("-mp") + 1])
    assert heard.sources == {("127.0.0.1", sender_media_port)}
    assert len(heard.of_type(0)) == len(pcap.read_pcap(speech))
    gaps = np.diff([p.t for p in heard.of_type(0)])
    assert np.median(gaps) == pytest.approx(0.020, abs=0.003)  # paced by the pcap's timestamps
    assert np.array_equal(heard.audio(), expected_audio(speech))
    sent = [pcap.parse_rtp(p.payload) for p in pcap.read_pcap(speech)]
    got = [p.rtp for p in heard.of_type(0)]
    assert [(r.seq, r.timestamp, r.ssrc, r.marker) for r in got] == [
        (r.seq, r.timestamp, r.ssrc, r.marker) for r in sent]  # RTP headers as written: no re-stamping
    assert heard.digits() == "123#" and all(e.ended and e.duration_ms == 160 for e in heard.dtmf_events())


async def test_options_against_sipp_uas(tmp_path):
    async with sipp_uas() as uas:
        res = await run_sipp("options.xml", uas.target, timeout_s=10, workdir=tmp_path)
    assert res.ok and res.successful_calls == 1, res.explain()
    assert "OPTIONS sip:kombain@" in res.messages_log and "SIP/2.0 200 OK" in res.messages_log


async def test_uac_wait_bye_and_record_next_to_sipp(media, tmp_path):
    """The far end plays audio and hangs up; the recorder hears it on sipp's own media port."""
    speech, _ = media
    reply = pcap.write_speech_pcap(tmp_path / "reply.pcap", SPEECH_LONG, trail_ms=200)
    hangup_ms = int(pcap.pcap_duration_s(reply) * 1000) + 500
    async with sipp_uas("uas_answer.xml", params={"reply_pcap": str(reply), "play_reply": "1",
                                                  "hangup_after_ms": str(hangup_ms)}, calls=1) as uas:
        media_port = free_udp_port(4)
        async with RtpRecorder(media_port) as heard:
            res = await run_sipp("uac_wait_bye.xml", uas.target, media_port=media_port, timeout_s=20,
                                 workdir=tmp_path / "uac", params={"speech_pcap": str(speech), "pause_ms": "500"})
        uas_res = await uas.wait(10)
    assert res.ok and res.successful_calls == 1, res.explain()
    assert uas_res.returncode == 0 and uas_res.successful_calls == 1, uas_res.explain()
    assert "BYE sip:caller@" in res.messages_log  # the BYE came from the UAS, to our Contact
    assert res.elapsed_s >= hangup_ms / 1000
    assert heard.sources == {("127.0.0.1", uas.media_port)}
    assert np.array_equal(heard.audio(), expected_audio(reply))
    # The timeline puts the reply where it was heard: it starts within the first 0.5 s.
    timeline = heard.timeline()
    first_sound = np.flatnonzero(np.abs(timeline) > 100)[0] / 8000
    assert first_sound < 0.6 + (heard.packets[0].t - heard.started_at)


async def test_uac_wait_bye_when_the_far_end_hangs_up_early(media, tmp_path):
    """A BYE in the middle of the caller's speech is answered at once, not an 'unexpected message'."""
    speech, _ = media
    async with sipp_uas("uas_answer.xml", params={"reply_pcap": str(speech), "hangup_after_ms": "300"},
                        calls=1) as uas:
        res = await run_sipp("uac_wait_bye.xml", uas.target, timeout_s=20, workdir=tmp_path / "uac",
                             params={"speech_pcap": str(speech), "pause_ms": "5000"})
        uas_res = await uas.wait(10)
    assert res.ok and res.successful_calls == 1, res.explain()
    assert uas_res.returncode == 0, uas_res.explain()
    assert res.elapsed_s < 3


async def test_uac_cancel_against_ringing_uas(tmp_path):
    async with sipp_uas("uas_ring_cancel.xml", calls=1) as uas:
        res = await run_sipp("uac_cancel.xml", uas.target, timeout_s=10, workdir=tmp_path / "uac",
                             params={"cancel_after_ms": "500"})
        uas_res = await uas.wait(10)
    assert res.ok and res.successful_calls == 1, res.explain()
    assert uas_res.returncode == 0, uas_res.explain()
    log = res.messages_log
    assert "CANCEL sip:kombain@" in log and "487 Request Terminated" in log and "ACK sip:kombain@" in log
    # CANCEL and the ACK of the 487 carry the INVITE's branch (RFC 3261 9.1, 17.1.1.3).
    branches = set(re.findall(r"^Via: .*branch=(\S+)", log, re.MULTILINE))
    assert len(branches) == 1, branches


async def test_sipp_ends_when_nobody_answers(media, tmp_path):
    speech, _ = media
    t0 = time.monotonic()
    res = await run_sipp("uac_call.xml", f"127.0.0.1:{free_udp_port()}", timeout_s=3, workdir=tmp_path,
                         params={"speech_pcap": str(speech)})
    assert res.returncode != 0 and not res.ok
    assert time.monotonic() - t0 < 10


# --- baresip -----------------------------------------------------------------------------------

def wav_info(path) -> tuple[int, int, int, float]:
    with wave.open(str(path)) as w:
        return w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes() / w.getframerate()


async def test_baresip_calls_sipp_uas(tmp_path):
    async with sipp_uas() as uas, RtpRecorder(uas.media_port) as heard:
        res = await run_baresip(uas.uri(), wav_in=SPEECH, wav_out=tmp_path / "heard.wav", seconds=2.0,
                                workdir=tmp_path / "ua")
        await asyncio.sleep(0.3)
    assert res.established and res.ended_by == "local" and res.returncode == 0, res.explain()
    assert res.call_s == pytest.approx(2.0, abs=0.3)
    assert uas.result is not None and " BYE" in uas.result.messages_log, uas.result.explain()
    assert "m=audio" in res.remote_sdp and "PCMU" in res.remote_sdp
    # sipp -sn uas sends no audio: the recording is silence, as long as the call.
    rate, channels, width, seconds = wav_info(res.wav_out)
    assert (rate, channels, width) == (8000, 1, 2) and seconds == pytest.approx(res.call_s, abs=0.05)
    assert res.rtp_received == 0
    # What baresip said reached the UAS: the speech, PCMU.
    assert {p.rtp.payload_type for p in heard.packets} == {0}
    assert heard.sources == {("127.0.0.1", res.rtp_port)}
    assert correlation(heard.audio(), pcap.load_speech_8k(SPEECH)) > 0.9


async def test_baresip_when_the_far_end_hangs_up(tmp_path):
    async with sipp_uas("uas_answer.xml", params={"reply_pcap": str(pcap.write_speech_pcap(
            tmp_path / "r.pcap", SPEECH)), "play_reply": "1", "hangup_after_ms": "1500"}, calls=1) as uas:
        res = await run_baresip(uas.uri(), wav_in=SPEECH, wav_out=tmp_path / "heard.wav", seconds=10,
                                workdir=tmp_path / "ua")
        uas_res = await uas.wait(10)
    assert res.established and res.ended_by == "remote" and res.returncode == 0, res.explain()
    assert uas_res.returncode == 0, uas_res.explain()
    assert res.call_s == pytest.approx(1.5, abs=0.4)
    assert wav_info(res.wav_out)[3] == pytest.approx(res.call_s, abs=0.05)
    heard = pcap.read_wav(res.wav_out)[0]
    assert correlation(heard, expected_audio(tmp_path / "r.pcap")) > 0.99


async def test_baresip_is_bounded_when_nobody_answers(tmp_path):
    # baresip 1.0 ignores ICMP port unreachable: on its own it gives up after SIP timer B (32 s).
    t0 = time.monotonic()
    res = await run_baresip(f"sip:kombain@127.0.0.1:{free_udp_port()}", wav_in=SPEECH,
                            wav_out=tmp_path / "heard.wav", seconds=2, timeout_s=4, workdir=tmp_path / "ua")
    assert not res.established and res.ended_by == "timeout", res.explain()
    assert time.monotonic() - t0 < 12
    assert res.wav_out.exists() and wav_info(res.wav_out)[3] == 0


async def test_baresip_dtmf_reaches_far_end(tmp_path):
    async with sipp_uas("uas_answer.xml", params={"reply_pcap": str(pcap.write_speech_pcap(
            tmp_path / "r.pcap", SPEECH))}, calls=1) as uas, RtpRecorder(uas.media_port) as heard:
        res = await run_baresip(uas.uri(), wav_in=SPEECH, wav_out=tmp_path / "heard.wav", seconds=3.0,
                                dtmf="12#", dtmf_at_s=0.5, workdir=tmp_path / "ua")
        uas_res = await uas.wait(10)
    assert res.established and res.ended_by == "local" and res.dtmf_sent == "12#", res.explain()
    assert uas_res.returncode == 0, uas_res.explain()
    assert "telephone-event" in res.remote_sdp
    assert heard.digits() == "12#", heard.dtmf_events()
    assert all(e.ended for e in heard.dtmf_events())


async def test_sipp_calls_baresip_which_records(media, tmp_path):
    """A second user agent checks the caller's media: baresip hears the speech pcap and DTMF."""
    speech, dtmf = media
    peer = BaresipPeer(None, wav_in=SPEECH_LONG, wav_out=tmp_path / "heard.wav", seconds=15,
                       workdir=tmp_path / "ua")
    async with peer:
        runner = asyncio.ensure_future(peer.run())
        res = await run_sipp("uac_call.xml", f"127.0.0.1:{peer.sip_port}", timeout_s=20, workdir=tmp_path / "uac",
                             params={"to_user": "harness", "speech_pcap": str(speech),
                                     "pause_ms": str(int(pcap.pcap_duration_s(speech) * 1000) + 300),
                                     "dtmf_pcap": str(dtmf), "dtmf_pause_ms": "1200"})
        bres = await runner
    assert res.ok and res.successful_calls == 1, res.explain()
    assert bres.established and bres.ended_by == "remote", bres.explain()
    assert "answering call" in bres.log, bres.explain()
    heard = pcap.read_wav(bres.wav_out)[0]
    assert wav_info(bres.wav_out)[3] == pytest.approx(bres.call_s, abs=0.05)
    assert correlation(heard, expected_audio(speech)) > 0.99
    # baresip's own decoder (sndfile dump) heard the same speech.
    assert bres.decoded_wav is not None
    decoded, rate = pcap.read_wav(bres.decoded_wav)
    assert rate == 8000 and correlation(decoded, expected_audio(speech)) > 0.99
    assert bres.dtmf_received == "123#"  # RFC 4733 at baresip's RTP port (1.0 logs none)


# --- robustness helpers ------------------------------------------------------------------------

async def test_garbage_datagrams_then_a_call(media, tmp_path):
    speech, _ = media
    async with sipp_uas() as uas:
        replies = await send_garbage_sip(uas.target)
        assert uas.proc is not None and uas.proc.returncode is None, "sipp uas died of garbage"
        res = await run_sipp("options.xml", uas.target, timeout_s=10, workdir=tmp_path)
    assert res.ok, res.explain()
    assert all(isinstance(r[0], bytes) for r in replies)


def test_netem_refuses_outside_the_test_namespace(monkeypatch):
    monkeypatch.setenv("KOMBAIN_NETNS_INNER", "0")
    with pytest.raises(RuntimeError, match="namespace"), netem(delay_ms=10):
        pass


def test_netem_on_loopback():
    reason = netem_available()
    if reason:
        pytest.skip(f"no netem here: {reason}")
    a, b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.bind(("127.0.0.1", 0))
    b.bind(("127.0.0.1", 0))
    b.settimeout(2)

    def one_way() -> float:
        t0 = time.monotonic()
        a.sendto(b"x", b.getsockname())
        b.recvfrom(10)
        return time.monotonic() - t0

    try:
        with netem(delay_ms=80) as spec:
            assert "delay 80" in spec
            assert "netem" in subprocess.run(["tc", "qdisc", "show", "dev", "lo"], capture_output=True,
                                             text=True).stdout
            assert one_way() >= 0.075
        assert "netem" not in subprocess.run(["tc", "qdisc", "show", "dev", "lo"], capture_output=True,
                                             text=True).stdout
        assert one_way() < 0.02
        with netem(loss_pct=100):
            a.sendto(b"x", b.getsockname())
            b.settimeout(0.3)
            with pytest.raises(TimeoutError):
                b.recvfrom(10)
    finally:
        a.close()
        b.close()


def test_udp_port_helpers():
    p = free_udp_port(4)
    assert p % 2 == 0 and not udp_port_bound(p)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", p + 2))
        assert udp_port_bound(p + 2)
