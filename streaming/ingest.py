"""How fast a caller may send audio: a token bucket over seconds of audio.

A client may stream ahead of real time (a file, a catch-up after a network stall), but every
second of audio costs VAD and resampling on the event loop that all calls share. `IngestPacer`
lets a call take `burst_s` of audio at once and then at most `speed` times real time; a transport
asks `delay()` after each message and waits that long before reading the next one, so a flood is
slowed by TCP back-pressure instead of freezing every other call. Nothing is dropped.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class IngestPacer:
    def __init__(self, speed: float, burst_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if speed <= 0 or burst_s <= 0:
            raise ValueError("speed and burst_s must be positive")
        self.speed, self.burst_s = speed, burst_s
        self._clock = clock
        self._tokens = burst_s  # seconds of audio the caller may still send at once
        self._at = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst_s, self._tokens + (now - self._at) * self.speed)
        self._at = now

    def add(self, audio_s: float) -> None:
        """`audio_s` seconds of audio arrived."""
        self._refill()
        self._tokens -= audio_s

    def delay(self) -> float:
        """Seconds to wait before reading more: until the bucket is back to empty (not negative)."""
        self._refill()
        return max(0.0, -self._tokens / self.speed)
