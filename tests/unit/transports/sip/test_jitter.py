"""server.transports.jitter: the receive jitter buffer for 20 ms G.711 frames, and G.711 concealment."""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import pytest

from kombain.server.transports.sip.jitter import JitterBuffer, JitterStats, conceal
from kombain.server.transports.sip.rtp import RtpPacket
from kombain.streaming.audio import alaw_decode, alaw_encode, mulaw_decode, mulaw_encode

FRAME = 160


def frame(n: int) -> bytes:
    """A recognisable payload for frame n."""
    return bytes([n % 256]) * FRAME


def pkt(n: int, *, seq0: int = 1000, ts0: int = 80_000, ssrc: int = 0xABC, pt: int = 0,
        payload: bytes | None = None, ts: int | None = None) -> RtpPacket:
    """Frame n of a 20 ms stream: sequence seq0 + n, timestamp ts0 + 160 n (both wrapping)."""
    timestamp = (ts0 + FRAME * n) & 0xFFFFFFFF if ts is None else ts
    data = frame(n) if payload is None else payload
    return RtpPacket(pt, (seq0 + n) & 0xFFFF, timestamp, ssrc, n == 0, data)


def pops(buf: JitterBuffer, count: int) -> list[int | None]:
    """The frame numbers that `count` pops return (None for a missing frame)."""
    out = []
    for _ in range(count):
        data = buf.pop()
        out.append(None if data is None else data[0])
    return out


def test_in_order_waits_for_target_then_plays() -> None:
    buf = JitterBuffer()
    assert buf.target_frames == 3 and buf.max_frames == 20
    buf.push(pkt(0))
    buf.push(pkt(1))
    assert not buf.ready
    assert pops(buf, 5) == [None] * 5  # still buffering: no advance, nothing counted
    buf.push(pkt(2))
    assert buf.ready
    for n in range(3, 6):
        buf.push(pkt(n))
    assert pops(buf, 7) == [0, 1, 2, 3, 4, 5, None]
    assert buf.stats == JitterStats(received=6, concealed=1)


def test_reordered_within_target_loses_nothing() -> None:
    buf = JitterBuffer()
    for n in (1, 0, 2, 4, 3, 5, 7, 6):
        buf.push(pkt(n))
    assert pops(buf, 8) == list(range(8))
    stats = buf.stats
    assert (stats.lost, stats.late, stats.concealed, stats.reordered) == (0, 0, 0, 3)


def test_reorder_while_playing() -> None:
    buf = JitterBuffer()
    played = []
    order = [0, 1, 2, 4, 3, 5, 7, 6, 8, 9]
    for n in order:
        buf.push(pkt(n))
        played += pops(buf, 1)
    played += pops(buf, 3)
    assert [p for p in played if p is not None] == list(range(10))
    assert buf.stats.lost == 0 and buf.stats.late == 0


def test_duplicates_are_counted_and_dropped() -> None:
    buf = JitterBuffer()
    for n in (0, 1, 1, 2, 0, 2, 3):
        buf.push(pkt(n))
    assert pops(buf, 5) == [0, 1, 2, 3, None]
    buf.push(pkt(1))  # a duplicate of a frame already played is still a duplicate, not late
    assert buf.stats.duplicates == 4
    assert buf.stats.late == 0
    assert buf.stats.received == 8


def test_lost_packet_gives_none_at_its_slot() -> None:
    buf = JitterBuffer()
    for n in (0, 1, 2, 4, 5):
        buf.push(pkt(n))
    assert buf.stats.lost == 1
    assert pops(buf, 5) == [0, 1, 2, None, 4]
    stats = buf.stats
    assert (stats.lost, stats.concealed, stats.late) == (1, 1, 0)


def test_late_packet_is_counted_and_dropped() -> None:
    buf = JitterBuffer()
    for n in (0, 1, 2, 4, 5):
        buf.push(pkt(n))
    assert pops(buf, 4) == [0, 1, 2, None]
    buf.push(pkt(3))  # arrives after its slot was played
    stats = buf.stats
    assert (stats.late, stats.lost, stats.reordered, stats.concealed) == (1, 0, 1, 1)
    assert pops(buf, 3) == [4, 5, None]


def test_sequence_and_timestamp_wrap() -> None:
    buf = JitterBuffer()
    seq0, ts0 = 65533, 0xFFFFFFFF - 2 * FRAME + 1
    for n in (0, 1, 3, 2, 4, 6, 5, 7):
        buf.push(pkt(n, seq0=seq0, ts0=ts0))
    assert pops(buf, 9) == [0, 1, 2, 3, 4, 5, 6, 7, None]
    assert buf.stats.resets == 0 and buf.stats.lost == 0


def test_overflow_drops_oldest_and_resyncs() -> None:
    buf = JitterBuffer(max_ms=400)  # 20 frames
    for n in range(30):  # nobody pops: a stalled reader
        buf.push(pkt(n))
        assert len(buf) <= buf.max_frames
    stats = buf.stats
    assert stats.dropped > 0 and stats.resyncs >= 1
    assert stats.lost == 0
    played = [p for p in pops(buf, 40) if p is not None]
    assert played == sorted(played)
    assert played[-1] == 29
    assert len(played) < 30


def test_overflow_after_a_timestamp_jump_keeps_the_buffer_bounded() -> None:
    buf = JitterBuffer()
    for n in range(3):
        buf.push(pkt(n))
    buf.push(pkt(3, ts=80_000 + FRAME * 500))  # a sender jumping 10 s ahead
    buf.push(pkt(4, ts=80_000 + FRAME * 501))
    buf.push(pkt(5, ts=80_000 + FRAME * 502))
    assert len(buf) <= buf.max_frames
    assert pops(buf, 3) == [3, 4, 5]


def test_new_ssrc_resets_the_buffer() -> None:
    buf = JitterBuffer()
    for n in range(5):
        buf.push(pkt(n, ssrc=1))
    assert pops(buf, 2) == [0, 1]
    buf.push(pkt(100, ssrc=2, seq0=7, ts0=3))  # a new stream (a re-INVITE), anywhere in seq/ts space
    assert not buf.ready and len(buf) == 1
    assert pops(buf, 2) == [None, None]  # buffering again
    buf.push(pkt(101, ssrc=2, seq0=7, ts0=3))
    buf.push(pkt(102, ssrc=2, seq0=7, ts0=3))
    assert pops(buf, 4) == [100, 101, 102, None]
    stats = buf.stats
    assert stats.resets == 1 and stats.dropped == 3 and stats.lost == 0


def test_large_sequence_jump_resets_once_confirmed() -> None:
    buf = JitterBuffer()
    for n in range(4):
        buf.push(pkt(n))
    # A lone packet far away (a stray) does not flush the buffer...
    buf.push(pkt(30_000))
    assert pops(buf, 2) == [0, 1]
    # ...but two in a row are a restarted stream (same SSRC, sequence jumped by more than 100).
    buf.push(pkt(5000, ts0=9))
    buf.push(pkt(5001, ts0=9))
    assert buf.stats.resets == 1
    assert not buf.ready
    buf.push(pkt(5002, ts0=9))
    assert pops(buf, 3) == [5000 % 256, 5001 % 256, 5002 % 256]


def test_timestamp_gap_plays_missing_frames_without_counting_loss() -> None:
    # Silence suppression (or an RFC 4733 event instead of audio): sequence numbers stay
    # contiguous while the timestamp jumps; the gap plays out as None and nothing is lost.
    buf = JitterBuffer()
    for n in range(3):
        buf.push(pkt(n))
    buf.push(RtpPacket(0, 1003, 80_000 + 6 * FRAME, 0xABC, True, frame(6)))
    assert pops(buf, 7) == [0, 1, 2, None, None, None, 6]
    stats = buf.stats
    assert (stats.lost, stats.concealed) == (0, 3)


def test_other_payload_types_count_for_sequence_but_carry_no_audio() -> None:
    buf = JitterBuffer(payload_type=0)
    for n in range(3):
        buf.push(pkt(n))
    buf.push(pkt(3, pt=101, payload=b"\x05\x0a\x00\xa0"))  # a telephone-event in place of audio
    buf.push(pkt(4))
    assert pops(buf, 5) == [0, 1, 2, None, 4]
    assert buf.stats.lost == 0


def test_multi_frame_packets_are_split_into_20ms_frames() -> None:
    buf = JitterBuffer()
    buf.push(RtpPacket(0, 1, 0, 5, False, frame(0) + frame(1)))  # ptime 40
    buf.push(RtpPacket(0, 2, 2 * FRAME, 5, False, frame(2) + frame(3)))
    assert buf.ready
    data = [buf.pop() for _ in range(4)]
    assert all(d is not None and len(d) == FRAME for d in data)
    assert [d[0] for d in data if d] == [0, 1, 2, 3]


def test_run_of_late_packets_resyncs_playout() -> None:
    # The reader kept popping while the sender stalled; packets then arrive in order, all behind
    # the playout point. A few are dropped as late, then playout restarts from where they are.
    buf = JitterBuffer()
    for n in range(3):
        buf.push(pkt(n))
    assert pops(buf, 13) == [0, 1, 2] + [None] * 10
    for n in range(3, 13):
        buf.push(pkt(n))
    stats = buf.stats
    assert stats.late == 4 and stats.resyncs == 1
    assert pops(buf, 7) == [7, 8, 9, 10, 11, 12, None]


def test_surplus_above_target_shrinks_one_frame_a_second() -> None:
    # 160 ms buffered against a 60 ms target, and the sender keeps pace: after a second of
    # never dipping below target + 2 frames, one frame is skipped to cut the latency.
    buf = JitterBuffer()
    for n in range(8):
        buf.push(pkt(n))
    played = []
    for n in range(8, 8 + 120):
        played += pops(buf, 1)
        buf.push(pkt(n))
    frames = [p for p in played if p is not None]
    assert frames == played  # nothing missing
    assert frames[:49] == list(range(49))
    assert sorted(set(range(max(frames))) - set(frames)) == [49, 100]  # one skip per 50 pops
    assert frames == sorted(frames)
    assert buf.stats.dropped == 2
    assert 5 <= len(buf) <= 7


def test_late_packets_need_not_be_consecutive_to_resync() -> None:
    # A drained buffer (the sender's clock a little slow): packets straddle their slot, some late.
    buf = JitterBuffer()
    for n in range(3):
        buf.push(pkt(n))
    assert pops(buf, 4) == [0, 1, 2, None]
    late = 0
    for n in range(3, 20):
        if n % 2:
            buf.push(pkt(n))  # just after its slot was played: late
            late += 1
            if buf.stats.resyncs:
                break
            assert pops(buf, 1) == [None]
        else:
            pops(buf, 1)
            buf.push(pkt(n))  # just in time for the next pop... but the cursor is ahead
    assert buf.stats.resyncs == 1
    assert buf.stats.late == 4


def test_timestamps_restarting_backwards_restart_the_timeline() -> None:
    buf = JitterBuffer()
    for n in range(4):
        buf.push(pkt(n))
    assert pops(buf, 2) == [0, 1]
    for n in range(4, 8):  # sequence numbers continue; timestamps jump 10 s back
        buf.push(pkt(n, ts=FRAME * n))
    assert buf.stats.resyncs == 1 and buf.stats.dropped == 2
    assert pops(buf, 5) == [4, 5, 6, 7, None]


@pytest.mark.parametrize("seed", range(5))
def test_random_network_jitter_within_target_loses_nothing(seed: int) -> None:
    # Packets sent every 20 ms, each delayed 0-40 ms (so reordered); pops every 20 ms once ready.
    rng = random.Random(seed)
    arrivals = sorted((20 * n + rng.uniform(0, 40), n) for n in range(200))
    buf = JitterBuffer(target_ms=60)
    played: list[int] = []
    i, t = 0, 0
    while t < 20 * 220:
        while i < len(arrivals) and arrivals[i][0] <= t:
            buf.push(pkt(arrivals[i][1], seq0=65500, ts0=0xFFFFF000))
            i += 1
        data = buf.pop()
        if data is not None:
            played.append(data[0])
        t += 20
    assert played == [n % 256 for n in range(200)]
    stats = buf.stats
    assert (stats.lost, stats.late, stats.duplicates) == (0, 0, 0)


def test_reset_forgets_the_stream() -> None:
    buf = JitterBuffer()
    for n in range(4):
        buf.push(pkt(n))
    buf.reset()
    assert not buf.ready and len(buf) == 0
    assert buf.stats.dropped == 4
    buf.push(pkt(0, ssrc=9))
    assert buf.stats.resets == 0  # reset() already forgot the old stream


@pytest.mark.parametrize("kwargs", [
    {"target_ms": 0}, {"target_ms": 400, "max_ms": 400}, {"frame_samples": 0}, {"rate": 0},
])
def test_bad_parameters(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        JitterBuffer(**kwargs)


def test_frame_counts_from_milliseconds() -> None:
    buf = JitterBuffer(frame_samples=320, target_ms=50, max_ms=200, rate=16000)
    assert (buf.target_frames, buf.max_frames) == (3, 10)


# --- concealment ----------------------------------------------------------------------------

def test_conceal_silence_without_a_previous_frame() -> None:
    assert conceal(None, 160, "mulaw") == b"\xff" * 160
    assert conceal(None, 160, "alaw") == b"\xd5" * 160
    assert conceal(b"", 80, "PCMU") == b"\xff" * 80
    assert conceal(None, 80, "pcma") == b"\xd5" * 80
    with pytest.raises(ValueError):
        conceal(None, 160, "opus")


@pytest.mark.parametrize(("codec", "dec", "enc"), [
    ("mulaw", mulaw_decode, mulaw_encode), ("alaw", alaw_decode, alaw_encode),
])
def test_conceal_repeats_the_previous_frame_attenuated(
    codec: str, dec: Callable[[bytes], np.ndarray], enc: Callable[[np.ndarray], bytes]
) -> None:
    tone = (8000 * np.sin(2 * np.pi * 440 * np.arange(160) / 8000)).astype(np.int16)
    previous = enc(tone)
    out = conceal(previous, 160, codec)
    assert len(out) == 160
    before = dec(previous).astype(np.float64)
    after = dec(out).astype(np.float64)
    # Half the amplitude, within G.711's quantisation (a few percent at these levels).
    assert np.allclose(after, before * 0.5, atol=0.04 * np.abs(before).max())
    assert np.sign(after[np.abs(before) > 500]).tolist() == np.sign(before[np.abs(before) > 500]).tolist()
    # Fed back, a longer gap fades towards silence.
    frame_ = out
    for _ in range(12):
        frame_ = conceal(frame_, 160, codec)
    assert np.abs(dec(frame_)).max() <= 16
    # Shorter or longer previous frames are repeated or trimmed to the frame size.
    assert len(conceal(previous[:100], 160, codec)) == 160
    assert len(conceal(previous, 80, codec)) == 80


# --- fuzz -----------------------------------------------------------------------------------

def test_hypothesis_push_pop_never_raises_and_stays_bounded() -> None:
    hypothesis = pytest.importorskip("hypothesis")
    st = pytest.importorskip("hypothesis.strategies")

    push = st.tuples(
        st.sampled_from([1, 2]),  # SSRC
        st.one_of(st.integers(-5, 8), st.integers(-40_000, 40_000)),  # sequence step
        st.one_of(st.sampled_from([0, 160, 320, -160]), st.integers(-(1 << 31), 1 << 31)),  # ts step
        st.sampled_from([0, 1, 80, 160, 320, 1440]),  # payload size
        st.sampled_from([0, 101]),
    )
    ops = st.lists(st.one_of(st.none(), push), max_size=300)

    @hypothesis.settings(max_examples=300, deadline=None)
    @hypothesis.given(ops, st.sampled_from([20, 60, 100]), st.sampled_from([120, 400]))
    def check(steps: list[tuple[int, int, int, int, int] | None], target_ms: int, max_ms: int) -> None:
        buf = JitterBuffer(target_ms=target_ms, max_ms=max_ms, payload_type=0)
        seq, ts = 65530, 0xFFFFFF00
        for step in steps:
            if step is None:
                out = buf.pop()
                assert out is None or isinstance(out, bytes)
            else:
                ssrc, dseq, dts, size, pt = step
                seq, ts = (seq + dseq) & 0xFFFF, (ts + dts) & 0xFFFFFFFF
                buf.push(RtpPacket(pt, seq, ts, ssrc, False, b"\x7f" * size))
            assert len(buf) <= buf.max_frames
            assert len(buf._seen) <= 2 * 128 + 1
        stats = buf.stats
        assert min(stats.received, stats.duplicates, stats.late, stats.lost, stats.reordered,
                   stats.concealed, stats.dropped, stats.resets, stats.resyncs) >= 0
        assert stats.received == len([s for s in steps if s is not None])

    check()
