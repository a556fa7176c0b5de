"""`SipCaller` against the real server over loopback: INVITE/ACK, 20 ms mu-law RTP both ways, BYE.

What the caller hears is checked by an independent recogniser (tiny.en in this process); the
server's reply must have no gaps of its own making (timestamp jumps without a sequence gap). With
5 % of the caller's packets dropped and 0-40 ms of jitter on the rest (netem-like, seeded), the
echo must be understood about as well as over a clean line.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from kombain.clients.sip_caller import RtpReceiveStats, SipCaller, build_sip, parse_sip
from kombain.loadtest.wer import wer
from tests.conftest import SPEECH_DIR
from tests.integration.test_audiosocket import clip
from tests.integration.test_telephony import recognise, recogniser, wait_quiet  # noqa: F401 - fixture

# The echo responder answers "You said: <what it recognised>".
REFERENCE = {name: "you said " + text for name, text in
             (r.split("\t", 1) for r in (SPEECH_DIR / "transcripts.tsv").read_text().strip().splitlines()[1:])}


async def _converse(server, clips: list[str], **impairment: float) -> tuple[SipCaller, list[np.ndarray]]:
    """One call saying each clip in turn and waiting for its echo; the reply audio of each."""
    caller = SipCaller("127.0.0.1", server.sip_port, seed=7, **impairment)  # type: ignore[arg-type]
    await caller.connect()
    loop = asyncio.get_running_loop()
    replies = []
    try:
        await asyncio.sleep(0.3)
        for name in clips:
            t0 = loop.time()
            caller.say(clip(name, 8000))
            await caller.wait_said()
            await wait_quiet(caller, since=t0)
            replies.append(caller.heard.pcm(t0))
    finally:
        await caller.stop()
    return caller, replies


def test_receive_counters_tell_loss_reordering_and_sender_gaps() -> None:
    rx = RtpReceiveStats()
    seqs = [65534, 65535, 1, 0, 2, 5, 5]  # wraps; 0 late (out of order); 3, 4 lost; 5 twice
    for seq in seqs:
        rx.feed(seq, 1000 + 160 * ((seq - 65534) & 0xFFFF), 7, False, 0.0)
    rx.feed(6, 1000 + 160 * 8 + 800, 7, True, 0.0)  # the sender skipped 100 ms: no packet lost
    assert (rx.received, rx.lost, rx.out_of_order, rx.duplicates) == (7, 2, 1, 1)
    assert rx.reply_gaps == 1 and abs(rx.reply_gap_s - 0.1) < 1e-9


def test_sip_messages_round_trip() -> None:
    data = build_sip("SIP/2.0 200 OK", [("v", "SIP/2.0/UDP 127.0.0.1:5;branch=z9hG4bKx"),
                                        ("To", "<sip:a@b>;tag=9"), ("CSeq", "1 INVITE")], b"v=0\r\n")
    msg = parse_sip(data)
    assert (msg.status, msg.cseq, msg.get("to"), msg.body) == (200, (1, "INVITE"), "<sip:a@b>;tag=9", b"v=0\r\n")
    assert msg.get("via").endswith("z9hG4bKx")  # compact header names are expanded


async def test_echo_round_trip_without_server_gaps(sip_server, recogniser):  # noqa: F811
    caller, (reply,) = await _converse(sip_server, ["arctic_a0009.wav"])
    heard = await asyncio.to_thread(recognise, recogniser, reply)
    print(f"\nheard: {heard!r}\nstats: {caller.stats()}")
    assert "turned sharply" in heard and "table" in heard, heard
    stats = caller.stats()
    assert stats["received"] > 50 and stats["lost"] == 0, stats
    assert stats["reply_gaps"] == 0, (stats, caller.rx.gaps[:5])
    assert stats["dropped"] == 0 and not caller.hung_up_by_server
    assert caller.closed.is_set()  # our BYE got its 200


async def test_lossy_line_is_understood_about_as_well(sip_server, recogniser):  # noqa: F811
    names = ["arctic_a0007.wav", "cards_005.wav"]  # no proper names: the recognisers agree on them
    (clean, clean_replies), (lossy, lossy_replies) = await asyncio.gather(
        _converse(sip_server, names), _converse(sip_server, names, loss=0.05, jitter_ms=40))
    scores = {}
    for label, replies in (("clean", clean_replies), ("lossy", lossy_replies)):
        heard = [await asyncio.to_thread(recognise, recogniser, r) for r in replies]
        scores[label] = wer([(REFERENCE[n], h) for n, h in zip(names, heard, strict=True)])
        print(f"\n{label}: WER {scores[label]:.3f} heard {heard}")
    print(f"clean caller {clean.stats()}\nlossy caller {lossy.stats()}")
    assert lossy.packets_dropped > 0 and clean.packets_dropped == 0
    assert lossy.rx.reply_gaps == 0 and clean.rx.reply_gaps == 0
    assert scores["lossy"] <= scores["clean"] + 0.05, scores


async def test_key_press_walks_the_ivr_and_the_server_hangs_up(sip_server, recogniser):  # noqa: F811
    from kombain.server.transports.sip import protocol as sip_protocol

    if not hasattr(sip_protocol, "call_options"):
        pytest.skip("this server does not read X-Kombain-* INVITE headers")
    caller = SipCaller("127.0.0.1", sip_server.sip_port, headers={"X-Kombain-Responder": "script"})
    await caller.connect()
    try:
        async with asyncio.timeout(20):
            while caller.heard.first_audio_after(0) is None:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        await asyncio.sleep(2.5)  # the start of the welcome prompt; a key press cuts it short
        welcome = await asyncio.to_thread(recognise, recogniser, caller.heard.pcm())
        assert "welcome" in welcome, welcome
        t = asyncio.get_running_loop().time()
        await caller.dtmf("0")  # agent: "Connecting you to an agent. Goodbye." and BYE
        async with asyncio.timeout(30):
            await caller.hangup.wait()
        bye = await asyncio.to_thread(recognise, recogniser, caller.heard.pcm(t))
        print(f"\nwelcome: {welcome!r}\nafter the key: {bye!r}\nstats: {caller.stats()}")
        assert "agent" in bye, bye
        assert caller.hung_up_by_server and caller.dtmf_packets == 7  # 4 updates, the end 3 times
    finally:
        await caller.stop()


def _invalid_rtp_count(url: str) -> float:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    for fam in text_string_to_metric_families(httpx.get(url + "/metrics", timeout=10).text):
        for s in fam.samples:
            if s.name == "kombain_telephony_events_total" and s.labels == {"transport": "sip", "code": "invalid_rtp"}:
                return s.value
    return 0.0


async def test_rtcp_on_the_media_port_is_not_counted_as_bad_rtp(sip_server):
    """rtcp-mux peers send their reports to the RTP port: dropped quietly; a datagram that is not
    RTP at all is counted as invalid_rtp, and the call goes on either way."""
    caller = SipCaller("127.0.0.1", sip_server.sip_port)
    await caller.connect()
    try:
        before = await asyncio.to_thread(_invalid_rtp_count, sip_server.url)
        rr = bytes([0x80, 201, 0, 1]) + (1234).to_bytes(4, "big")  # an empty RTCP receiver report
        for _ in range(5):
            caller._rtp.sendto(rr, caller._media)  # type: ignore[union-attr]
        caller._rtp.sendto(b"\x00not rtp at all", caller._media)  # type: ignore[union-attr]
        await asyncio.sleep(0.5)
        after = await asyncio.to_thread(_invalid_rtp_count, sip_server.url)
        assert after - before == 1, (before, after)
        assert not caller.closed.is_set()
    finally:
        await caller.stop()


async def test_rtp_counters_move_while_the_call_is_live(sip_server):
    """The RTP counters reach the metrics every second of a call, not only when it ends."""
    from tests.sip.inner.conftest import metric

    caller = SipCaller("127.0.0.1", sip_server.sip_port)
    await caller.connect()
    try:
        before = await asyncio.to_thread(metric, sip_server, "kombain_rtp_packets_total", '{kind="received"}')
        await asyncio.sleep(2.5)  # the caller sends silence in 20 ms packets: about 125
        after = await asyncio.to_thread(metric, sip_server, "kombain_rtp_packets_total", '{kind="received"}')
        assert not caller.closed.is_set()
        assert after - before >= 50, (before, after)
    finally:
        await caller.stop()
