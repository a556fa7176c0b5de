"""IngestPacer: a token bucket over seconds of audio (pure logic, a fake clock)."""

from __future__ import annotations

import pytest

from kombain.streaming.ingest import IngestPacer


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_real_time_audio_never_waits() -> None:
    clock = Clock()
    pacer = IngestPacer(speed=20, burst_s=60, clock=clock)
    for _ in range(10_000):  # 200 s of 20 ms frames at real time
        pacer.add(0.02)
        assert pacer.delay() == 0
        clock.t += 0.02


def test_a_burst_is_free_then_the_rate_holds() -> None:
    clock = Clock()
    pacer = IngestPacer(speed=20, burst_s=60, clock=clock)
    pacer.add(60)
    assert pacer.delay() == 0  # the whole allowance at once
    pacer.add(100)
    assert pacer.delay() == pytest.approx(5.0)  # 100 s of audio at 20x
    clock.t += 2
    assert pacer.delay() == pytest.approx(3.0)
    clock.t += 3
    assert pacer.delay() == 0
    clock.t += 1000  # idle: the allowance refills only to the burst
    pacer.add(61)
    assert pacer.delay() == pytest.approx(1 / 20)


def test_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        IngestPacer(speed=0, burst_s=60)
    with pytest.raises(ValueError):
        IngestPacer(speed=20, burst_s=0)
