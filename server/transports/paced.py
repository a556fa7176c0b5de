"""Reply audio as real-time 20 ms frames, for transports whose peer plays what arrives (AudioSocket,
RTP): the call's `AudioOutput`, with a pacer task that sends one frame per 20 ms.

`write` resamples a chunk to the peer's rate and splits it into frames; `hold` pauses the pacer
(a possible interruption), `clear` drops everything queued (barge-in stops sending at once). As
the last frame of each chunk leaves, `on_played(response_id, end_ms)` reports it: the peer plays on
arrival, so the send position is what was heard.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

import numpy as np

from kombain.streaming.audio import Resampler
from kombain.streaming.conversation import ResponseAudio

FRAME_S = 0.02
MAX_QUEUED_S = 5.0  # what the pacer may hold (upstream pacing keeps it near 0.5 s); oldest dropped


class PacedOutput:
    """Frames of PCM16 at `rate`, sent by `pace()` through `send` one per 20 ms."""

    def __init__(self, rate: int, send: Callable[[bytes], Awaitable[None] | None]) -> None:
        self.rate = rate
        self._send = send
        self._frames: deque[tuple[bytes, tuple[str, int] | None]] = deque()
        self._resampler: Resampler | None = None
        self._partial = bytearray()
        self.held = False
        self.on_played: Callable[[str, int], None] = lambda response_id, end_ms: None
        self._wake = asyncio.Event()
        self.frames_sent = 0
        self.dropped = 0

    @property
    def queued_s(self) -> float:
        return len(self._frames) * FRAME_S

    def write(self, audio: ResponseAudio, rate: int) -> None:
        samples = np.frombuffer(audio.pcm, "<i2")
        if rate != self.rate:
            if self._resampler is None or self._resampler.in_rate != rate:
                self._resampler = Resampler(rate, self.rate, quality="LQ")
            f = self._resampler.process(samples.astype(np.float32) / 32768)
            samples = (np.clip(f, -1, 1) * 32767).astype(np.int16)
        data = self._partial + samples.astype("<i2").tobytes()
        frame = int(self.rate * FRAME_S) * 2
        cut = len(data) - len(data) % frame
        self._partial = bytearray(data[cut:])
        frames = [bytes(data[i:i + frame]) for i in range(0, cut, frame)]
        for i, chunk in enumerate(frames):
            self._frames.append((chunk, (audio.response_id, audio.end_ms) if i == len(frames) - 1 else None))
        while self.queued_s > MAX_QUEUED_S:  # drop-oldest: a late reply is worse than a gap
            self._frames.popleft()
            self.dropped += 1
        self._wake.set()

    def hold(self, held: bool) -> None:
        self.held = held
        self._wake.set()

    def clear(self) -> None:
        self._frames.clear()
        self._partial.clear()
        self._resampler = None

    def set_rate(self, rate: int) -> None:
        if rate != self.rate:
            self.clear()
            self.rate = rate

    async def pace(self) -> None:
        """Send one frame per 20 ms while there is audio and no hold."""
        next_at = time.monotonic()
        while True:
            if not self._frames or self.held:
                self._wake.clear()
                await self._wake.wait()
                next_at = time.monotonic()
                continue
            pcm, report = self._frames.popleft()
            sent = self._send(pcm)
            if sent is not None:
                await sent
            self.frames_sent += 1
            if report is not None:
                self.on_played(*report)
            next_at += FRAME_S
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                next_at = time.monotonic()

    async def drained(self, within_s: float) -> None:
        """Wait (bounded) until everything queued has been sent, e.g. a goodbye."""
        deadline = time.monotonic() + within_s
        while self._frames and time.monotonic() < deadline:  # noqa: ASYNC110 - the pacer drains it
            await asyncio.sleep(0.05)
