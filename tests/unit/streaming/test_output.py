"""The audio output bases (streaming/output.py): resampling, framing, pacing, hold, clear, playback
reports and waiting for play-out, with recording ports and a fake clock (no real time)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from kombain.streaming.conversation import ResponseAudio
from kombain.streaming.output import MarkedOutput, PacedOutput, PulledOutput
from tests.fakes.clock import FakeClock


def chunk(rid: str, end_ms: int, ms: int = 100, rate: int = 8000, level: int = 1000) -> ResponseAudio:
    pcm = (np.ones(rate * ms // 1000) * level).astype("<i2").tobytes()
    return ResponseAudio(rid, "item_" + rid, pcm, end_ms)


class Marked(MarkedOutput):
    """A peer that buffers and echoes marks (Twilio-like; `can_pause` for Asterisk-like)."""

    def __init__(self, rate: int = 8000, frame_s: float | None = None, can_pause: bool = False) -> None:
        super().__init__(rate, frame_s)
        self.can_pause = can_pause
        self.sent: list[tuple[str, object]] = []
        self.reports: list[tuple[str, int, bool]] = []
        self.bind(lambda rid, ms, interrupted: self.reports.append((rid, ms, interrupted)))

    def send_frame(self, pcm: bytes) -> None:
        self.sent.append(("frame", len(pcm) // 2))

    def send_mark(self, name: str) -> None:
        self.sent.append(("mark", name))

    def send_pause(self, held: bool) -> None:
        self.sent.append(("pause", held))

    def send_clear(self) -> None:
        self.sent.append(("clear", None))

    def ops(self) -> list[tuple[str, object]]:
        return [s for s in self.sent if s[0] != "frame"]

    def samples(self) -> int:
        return sum(int(n) for op, n in self.sent if op == "frame")  # type: ignore[call-overload]


class Paced(PacedOutput):
    def __init__(self, clock: FakeClock, rate: int = 8000) -> None:
        super().__init__(rate, clock=clock, sleep=clock.sleep)
        self.clock = clock
        self.sent: list[tuple[float, int]] = []
        self.reports: list[tuple[float, str, int]] = []
        self.bind(lambda rid, ms, interrupted: self.reports.append((clock(), rid, ms)))

    def send_frame(self, pcm: bytes) -> None:
        self.sent.append((self.clock(), len(pcm) // 2))


async def test_marked_sends_each_chunk_then_its_mark_and_reports_the_echo() -> None:
    out = Marked()
    out.write(chunk("resp_a", 100), 8000)
    out.write(chunk("resp_a", 200), 8000)
    assert out.sent == [("frame", 800), ("mark", "resp_a.100"), ("frame", 800), ("mark", "resp_a.200")]
    out.mark_played("resp_a.100")
    assert out.reports == [("resp_a", 100, False)] and out.marks_out == 1
    out.mark_played("not-ours")  # ignored
    out.mark_played("resp_a.200")
    assert out.reports[-1] == ("resp_a", 200, False) and out.marks_out == 0


async def test_a_later_echo_covers_the_earlier_marks() -> None:
    out = Marked()
    for end in (100, 200, 300):
        out.write(chunk("resp_a", end), 8000)
    out.mark_played("resp_a.300")
    assert out.reports == [("resp_a", 300, False)] and out.marks_out == 0


async def test_resampled_to_the_peers_rate() -> None:
    out = Marked(rate=8000)
    for end in range(100, 1100, 100):  # 1 s at 24 kHz
        out.write(chunk("resp_a", end, rate=24000), 24000)
    assert 7800 <= out.samples() <= 8000  # the resampler holds back a few samples at most
    up = Marked(rate=48000, frame_s=0.02)
    up.write(chunk("resp_b", 100, rate=16000), 16000)
    assert all(n == 960 for op, n in up.sent if op == "frame")


async def test_framing_carries_a_partial_frame_to_the_next_chunk() -> None:
    out = Marked(frame_s=0.02)  # 160 samples at 8 kHz
    out.write(chunk("resp_a", 30, ms=30), 8000)
    assert [n for op, n in out.sent if op == "frame"] == [160]  # 80 samples wait for the next chunk
    out.write(chunk("resp_a", 60, ms=30), 8000)  # 80 + 240 samples: two frames, nothing left
    assert [n for op, n in out.sent if op == "frame"] == [160] * 3
    out.write(chunk("resp_a", 90, ms=30), 8000)  # 80 samples left over again
    out.write(chunk("resp_b", 20, ms=20), 8000)  # a new response: the old tail goes out first, padded
    assert [n for op, n in out.sent if op == "frame"] == [160] * 6  # 4, the padded tail, resp_b
    assert out.ops()[-2:] == [("mark", "resp_a.90"), ("mark", "resp_b.20")]


async def test_hold_pauses_a_peer_that_can_pause_and_keeps_new_audio_back() -> None:
    out = Marked(can_pause=True)
    out.write(chunk("resp_a", 100), 8000)
    out.hold(True)
    out.hold(True)  # once
    out.write(chunk("resp_a", 200), 8000)
    assert out.ops() == [("mark", "resp_a.100"), ("pause", True)]
    out.hold(False)
    assert out.ops()[2:] == [("pause", False), ("mark", "resp_a.200")]
    assert out.samples() == 1600


async def test_hold_on_a_peer_that_cannot_pause_only_stops_sending() -> None:
    out = Marked(can_pause=False)
    out.hold(True)
    out.write(chunk("resp_a", 100), 8000)
    assert out.sent == []
    out.hold(False)
    assert out.sent == [("frame", 800), ("mark", "resp_a.100")]


async def test_clear_drops_what_is_held_tells_the_peer_and_reports_the_cut() -> None:
    out = Marked()
    out.write(chunk("resp_a", 100), 8000)
    out.mark_played("resp_a.100")
    out.write(chunk("resp_a", 200), 8000)
    out.hold(True)
    out.write(chunk("resp_a", 300), 8000)
    out.clear()
    assert out.ops()[-1] == ("clear", None)
    assert out.reports == [("resp_a", 100, False), ("resp_a", 100, True)]  # heard 100 ms, then cut
    assert out.marks_out == 0
    out.mark_played("resp_a.200")  # Twilio echoes cleared marks: not a report
    assert len(out.reports) == 2
    out.hold(False)
    assert out.samples() == 1600  # the held chunk never went


async def test_wait_for_playout_waits_for_the_last_echo() -> None:
    out = Marked()
    out.write(chunk("resp_a", 100), 8000)
    waiter = asyncio.ensure_future(out.wait_for_playout())
    await asyncio.sleep(0)
    assert not waiter.done()
    out.mark_played("resp_a.100")
    await asyncio.wait_for(waiter, 1)


async def test_paced_sends_one_frame_per_20ms_and_reports_as_the_chunk_leaves() -> None:
    clock = FakeClock()
    out = Paced(clock)
    start = clock()
    pacer = asyncio.ensure_future(out.pace())
    out.write(chunk("resp_a", 100), 8000)
    out.write(chunk("resp_a", 200), 8000)
    await asyncio.wait_for(out.wait_for_playout(), 1)
    assert [n for _, n in out.sent] == [160] * 10
    times = [round((t - start) * 1000) for t, _ in out.sent]
    assert times == list(range(0, 200, 20))
    assert [(round((t - start) * 1000), rid, ms) for t, rid, ms in out.reports] == [(80, "resp_a", 100),
                                                                                  (180, "resp_a", 200)]
    pacer.cancel()


async def test_paced_hold_stops_the_pacer_and_release_goes_on() -> None:
    clock = FakeClock()
    out = Paced(clock)
    pacer = asyncio.ensure_future(out.pace())
    out.hold(True)
    out.write(chunk("resp_a", 100), 8000)
    for _ in range(5):
        await asyncio.sleep(0)
    assert out.sent == []
    out.hold(False)
    await asyncio.wait_for(out.wait_for_playout(), 1)
    assert len(out.sent) == 5
    pacer.cancel()


async def test_paced_queue_is_bounded_oldest_dropped() -> None:
    out = Paced(FakeClock())
    out.max_queued_s = 0.5
    for end in range(100, 1100, 100):
        out.write(chunk("resp_a", end), 8000)
    assert out.queued_s == pytest.approx(0.5) and out.dropped == 25


async def test_set_rate_drops_what_was_queued_at_the_old_rate() -> None:
    out = Paced(FakeClock())
    out.write(chunk("resp_a", 100), 8000)
    out.set_rate(16000)
    assert out.queued_s == 0 and out.rate == 16000 and out.frame_bytes == 640


async def test_pulled_gives_frames_silence_when_held_and_reports_as_taken() -> None:
    out = PulledOutput(48000)
    reports: list[tuple[str, int, bool]] = []
    out.bind(lambda *r: reports.append(r))
    out.write(chunk("resp_a", 100, rate=48000), 48000)
    assert out.queued_s == pytest.approx(0.1)
    first = out.next_frame()
    assert first is not None and len(first) == 960 * 2
    out.hold(True)
    assert out.next_frame() is None
    out.hold(False)
    frames = [out.next_frame() for _ in range(5)]
    assert frames[-1] is None and all(f is not None for f in frames[:4])
    assert reports == [("resp_a", 100, False)]
    await asyncio.wait_for(out.wait_for_playout(), 1)


async def test_wait_for_playout_sends_the_last_partial_frame() -> None:
    out = PulledOutput(8000)
    out.write(chunk("resp_a", 30, ms=30), 8000)
    waiter = asyncio.ensure_future(out.wait_for_playout())
    await asyncio.sleep(0)
    assert out.next_frame() is not None and out.next_frame() is not None  # 20 ms, then 10 ms padded
    await asyncio.wait_for(waiter, 1)


async def test_pulled_plays_a_replys_last_partial_frame_when_the_queue_runs_dry() -> None:
    out = PulledOutput(8000)
    out.write(chunk("resp_a", 30, ms=30), 8000)
    assert out.next_frame() is not None  # 20 ms
    tail = out.next_frame()  # the last 10 ms, padded: not held back for the next reply
    assert tail is not None and tail[160:] == bytes(160) and out.next_frame() is None
