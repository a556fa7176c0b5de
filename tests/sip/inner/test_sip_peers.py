"""Real SIP user agents against the real server, inside the test's network namespace.

sipp calls and streams recorded speech as PCMU RTP (the timing of a phone: a packet every 20 ms,
silence between words, RFC 4733 events in place of audio while a key is down); a raw-socket
recorder takes what the server sends back; an independent recogniser checks it. baresip is a second,
unrelated user agent that dials, speaks a WAV and records what it hears.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import SPEECH_DIR, LiveServer
from tests.integration.test_telephony import recognise, recogniser  # noqa: F401 - fixture
from tests.sip import pcap
from tests.sip.inner.conftest import RTP_RANGE
from tests.sip.peers import (
    RtpRecorder,
    SippResult,
    free_udp_port,
    run_baresip,
    run_sipp,
    send_garbage_sip,
)

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.skipif(shutil.which("sipp") is None or shutil.which("baresip") is None,
                       reason="needs sipp (sip-tester) and baresip"),
]

REPLY_PEAK = 300  # a received packet with a sample above this carries reply speech
VOICED_RMS = 0.01 * 32768  # a sent packet above -40 dBFS RMS carries the caller's speech


def speech(name: str) -> np.ndarray:
    return pcap.load_speech_8k(SPEECH_DIR / name)


def target(server: LiveServer) -> str:
    return f"127.0.0.1:{server.sip_port}"


async def sipp_call(server: LiveServer, tmp: Path, packets: list[pcap.TimedPacket], *, scenario: str = "uac_call",
                    responder: str = "", extra_s: float = 0.0,
                    uplink: bool = False) -> tuple[SippResult, RtpRecorder, RtpRecorder | None]:
    """One sipp call that plays `packets` and then (uac_call) hangs up, or (uac_wait_bye) waits for
    the server's BYE. Returns sipp's result, what arrived at sipp's media port, and (uplink) what
    arrived at the server's RTP ports."""
    path = pcap.write_pcap(tmp / "call.pcap", packets)
    duration = pcap.pcap_duration_s(path)
    media = free_udp_port(4)
    down = RtpRecorder(media)
    up = RtpRecorder(0, ports=RTP_RANGE) if uplink else None
    await down.start()
    if up:
        await up.start()
    try:
        result = await run_sipp(scenario, target(server), media_port=media, workdir=tmp / "sipp",
                                params={"speech_pcap": str(path), "pause_ms": str(int((duration + extra_s) * 1000)),
                                        "responder": responder},
                                timeout_s=duration + extra_s + 30)
    finally:
        down.stop()
        if up:
            up.stop()
    return result, down, up


def voiced_times(rec: RtpRecorder, threshold: float, rms: bool) -> list[float]:
    out = []
    for p in rec.of_type(pcap.PT_PCMU, pcap.PT_PCMA):
        x = pcap.g711_decode(p.rtp.payload, p.rtp.payload_type).astype(np.float64)
        level = float(np.sqrt(np.mean(x * x))) if rms else float(np.abs(x).max(initial=0))
        if level > threshold:
            out.append(p.t)
    return out


async def test_cancel_options_and_a_malformed_flood_leave_the_server_answering(sip_server, tmp_path):
    # First in the module: the flood's two legal INVITEs (bare LF, odd bytes in the user part) are
    # answered and, never ACKed, end 32 s later (RFC 3261 timer H); the server fixture checks at
    # the end that no call is left.
    r = await run_sipp("options", target(sip_server), workdir=tmp_path / "options", timeout_s=10)
    assert r.ok, r.explain()
    r = await run_sipp("uac_cancel", target(sip_server), workdir=tmp_path / "cancel", timeout_s=15,
                       params={"cancel_after_ms": "300"})
    assert r.ok, r.explain()
    replies = await send_garbage_sip(target(sip_server), listen_s=0.5)
    statuses = {d.split(b" ", 2)[1] for d, _ in replies if d.startswith(b"SIP/2.0 ")}
    assert b"400" in statuses and not any(s.startswith(b"5") and s != b"503" for s in statuses), statuses
    r = await run_sipp("options", target(sip_server), workdir=tmp_path / "options2", timeout_s=10)
    assert r.ok, r.explain()
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{sip_server.url}/healthz", timeout=5)).status_code == 200


async def test_sipp_caller_hears_its_words_echoed(sip_server, recogniser, tmp_path):  # noqa: F811
    packets = pcap.call_packets(9.0, speech=[(0.5, speech("arctic_a0009.wav"))])
    result, down, _ = await sipp_call(sip_server, tmp_path, packets)
    assert result.ok, result.explain()
    # Symmetric RTP: the reply comes from one server port, to the port sipp sent from.
    assert len(down.sources) == 1 and next(iter(down.sources))[1] in RTP_RANGE, down.sources
    heard = await asyncio.to_thread(recognise, recogniser, down.audio())
    assert "turned sharply" in heard and "table" in heard, heard
    # Paced 20 ms packets of one stream: consecutive sequence numbers and timestamps, no gaps
    # the server made (the network here loses nothing).
    pkts = down.of_type(pcap.PT_PCMU)
    seqs = [p.rtp.seq for p in pkts]
    assert all((b - a) % 65536 == 1 for a, b in zip(seqs, seqs[1:], strict=False)), "sequence gaps"
    assert all(len(p.rtp.payload) == 160 for p in pkts)


async def test_sipp_keys_walk_the_ivr_and_the_server_hangs_up(sip_server, recogniser, tmp_path):  # noqa: F811
    # welcome (~7 s) -> "2" cards -> "anything else?" -> "2" no -> goodbye and the server's BYE.
    packets = pcap.call_packets(40.0, keys=[(9.0, "2"), (21.0, "2")])
    result, down, _ = await sipp_call(sip_server, tmp_path, packets, scenario="uac_wait_bye", responder="script")
    assert result.ok, result.explain()
    assert "BYE sip:" in result.messages_log, "the server never sent its BYE"
    t0 = down.started_at
    assert t0 is not None
    cut = [p.t for p in down.packets]
    assert cut and cut[-1] - t0 < 32, "the call went on after the goodbye"
    audio = down.timeline()
    welcome = await asyncio.to_thread(recognise, recogniser, audio[: 9 * 8000])
    cards = await asyncio.to_thread(recognise, recogniser, audio[9 * 8000: 21 * 8000])
    bye = await asyncio.to_thread(recognise, recogniser, audio[21 * 8000:])
    assert "welcome" in welcome, welcome
    assert "blocked" in cards and "anything else" in cards, cards
    assert "thank you for calling" in bye, bye


async def test_interruption_cuts_the_reply(sip_server, tmp_path):
    # The reply to the first clip starts about 1 s after it ends (~4.6 s) and runs ~3.5 s; the
    # caller talks over it from 5.6 s on.
    first = speech("arctic_a0009.wav")
    packets = pcap.call_packets(12.0, speech=[(0.5, first), (5.6, speech("goforward.wav"))])
    result, down, up = await sipp_call(sip_server, tmp_path, packets, uplink=True)
    assert result.ok, result.explain()
    assert up is not None
    said = voiced_times(up, VOICED_RMS, rms=True)
    heard = voiced_times(down, REPLY_PEAK, rms=False)
    onset = next(t for t in said if t > said[0] + 4.0)  # the interruption's first voiced packet
    assert any(t < onset for t in heard), "the reply had not started when the caller talked over it"
    after = [t for t in heard if onset <= t < onset + 2.0]
    cut_ms = ((after[-1] - onset) * 1000) if after else 0.0
    print(f"interruption: reply audio stopped {cut_ms:.0f} ms after the caller's voice reached the server")
    # The reply would run ~2.5 s past the onset if nothing cut it. The 300 ms goal is measured by
    # the load test (`python -m kombain.loadtest conversation --transport sip`), not timed here:
    # on a loaded 2-core machine this one measurement reached 400 ms with barge-in working.
    assert cut_ms < 1000, cut_ms


async def test_baresip_dials_and_hears_the_echo(sip_server, recogniser, tmp_path):  # noqa: F811
    wav = pcap.write_wav_pcm16(tmp_path / "say.wav", np.concatenate(
        [np.zeros(4000, np.int16), speech("arctic_a0009.wav")]))
    result = await run_baresip(f"sip:kombain@{target(sip_server)}", wav_in=wav, wav_out=tmp_path / "heard.wav",
                               seconds=9.0, workdir=tmp_path / "baresip")
    assert result.established and result.ended_by == "local", result.explain()
    heard_audio, rate = pcap.read_wav(result.wav_out)
    assert rate == 8000
    heard = await asyncio.to_thread(recognise, recogniser, heard_audio)
    assert "turned sharply" in heard and "table" in heard, heard
