"""Media for a WebRTC call: the outgoing reply track (the session's audio sink) and frame decoding."""

from __future__ import annotations

import asyncio
import fractions
import time
from collections import deque
from collections.abc import Callable

import av
import numpy as np
from aiortc import MediaStreamTrack

from kombain.streaming.audio import Resampler, pcm16_to_float
from kombain.streaming.conversation import ResponseAudio

TRACK_RATE = 48000
FRAME_SAMPLES = TRACK_RATE // 50  # 20 ms, what Opus sends per packet
_TIME_BASE = fractions.Fraction(1, TRACK_RATE)


class PacedAudioTrack(MediaStreamTrack):
    """An audio track of 20 ms 48 kHz mono frames paced by their timestamps (real time).

    Subclasses provide `_take(n)`: the next n samples as int16, zero-filled when there is nothing.
    """

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._start: float | None = None
        self._pts = 0

    def _take(self, n: int) -> np.ndarray:
        raise NotImplementedError

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            from aiortc.mediastreams import MediaStreamError

            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._pts += FRAME_SAMPLES
            wait = self._start + self._pts / TRACK_RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        frame.planes[0].update(self._take(FRAME_SAMPLES).tobytes())
        frame.sample_rate = TRACK_RATE
        frame.pts = self._pts
        frame.time_base = _TIME_BASE
        return frame


class ReplyAudioTrack(PacedAudioTrack):
    """Reply audio as 20 ms 48 kHz frames paced by their timestamps; silence when nothing is queued.

    It is the call's `AudioOutput`: `write` resamples and buffers (bounded, oldest dropped past
    `max_ms`, which pacing upstream keeps from happening), `hold` pauses playback while a possible
    interruption is confirmed, `clear` drops everything at once. As each chunk of a response is
    handed to the sender, `on_played(response_id, end_ms)` reports it (the send position).
    """

    def __init__(self, max_ms: int = 2000) -> None:
        super().__init__()
        self._chunks: deque[np.ndarray] = deque()
        self._marks: deque[tuple[int, str, int]] = deque()  # (samples left to the mark, response, ms)
        self.on_played: Callable[[str, int], None] = lambda response_id, end_ms: None
        self._buffered = 0
        self._max = max(FRAME_SAMPLES, TRACK_RATE * max_ms // 1000)
        self._resampler: Resampler | None = None
        self.dropped_samples = 0
        self._held = False

    @property
    def buffered_ms(self) -> float:
        return self._buffered * 1000 / TRACK_RATE

    def write(self, audio: ResponseAudio, rate: int) -> None:
        """One chunk of a response (the AudioOutput port)."""
        self.write_pcm(audio.pcm, rate)
        self._marks.append((self._buffered, audio.response_id, audio.end_ms))

    def write_pcm(self, pcm: bytes, rate: int) -> None:
        if self._resampler is None or self._resampler.in_rate != rate:
            # Low quality is plenty for upsampling speech, and with the session's 100 ms chunks it
            # holds back ~2 ms instead of HQ's 31 ms, which would sit there at the end of a reply.
            self._resampler = Resampler(rate, TRACK_RATE, quality="LQ")
        samples = self._resampler.process(pcm16_to_float(pcm))
        if not len(samples):
            return
        self._chunks.append(np.clip(samples * 32767, -32768, 32767).astype(np.int16))
        self._buffered += len(samples)
        while self._buffered > self._max:  # drop-oldest: a late reply is worse than a gap
            old = self._chunks.popleft()
            self._buffered -= len(old)
            self.dropped_samples += len(old)
            self._advance_marks(len(old), report=False)

    def hold(self, held: bool) -> None:
        """Pause (True) or resume playback of the buffered reply; frames stay silent meanwhile."""
        self._held = held

    def flush(self) -> None:
        self._chunks.clear()
        self._marks.clear()
        self._buffered = 0
        self._resampler = None  # no tail of the cancelled reply leaks into the next one

    def _take(self, n: int) -> np.ndarray:
        out = np.zeros(n, np.int16)
        if self._held:
            return out
        filled = 0
        while filled < n and self._chunks:
            chunk = self._chunks[0]
            k = min(n - filled, len(chunk))
            out[filled:filled + k] = chunk[:k]
            filled += k
            if k == len(chunk):
                self._chunks.popleft()
            else:
                self._chunks[0] = chunk[k:]
        self._buffered -= filled
        if filled:
            self._advance_marks(filled, report=True)
        return out

    clear = flush

    def _advance_marks(self, taken: int, *, report: bool) -> None:
        marks = self._marks
        for i in range(len(marks)):
            left, rid, ms = marks[i]
            marks[i] = (left - taken, rid, ms)
        while marks and marks[0][0] <= 0:
            _left, rid, ms = marks.popleft()
            if report:
                self.on_played(rid, ms)


def frame_to_mono(frame: av.AudioFrame) -> np.ndarray:
    """Float32 mono samples of a decoded frame (aiortc's Opus decoder gives packed s16 stereo)."""
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if data.dtype == np.int16:
        samples = data.astype(np.float32) / 32768
    else:
        samples = data.astype(np.float32)
    if frame.format.is_planar:
        return samples.reshape(channels, -1).mean(axis=0) if channels > 1 else samples.reshape(-1)
    return samples.reshape(-1, channels).mean(axis=1) if channels > 1 else samples.reshape(-1)
