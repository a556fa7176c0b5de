"""Media for a WebRTC call: the outgoing reply track (the session's audio sink) and frame decoding."""

from __future__ import annotations

import asyncio
import fractions
import time

import av
import numpy as np
from aiortc import MediaStreamTrack

from kombain.streaming.conversation import ResponseAudio
from kombain.streaming.output import PulledOutput

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


class ReplyAudioTrack(PacedAudioTrack, PulledOutput):
    """Reply audio as 20 ms 48 kHz frames paced by their timestamps; silence when nothing is queued.

    It is the call's audio output (`streaming.output.PulledOutput`: resampling, framing, hold,
    clear, reports and play-out live there): the sender pulls a frame every 20 ms, and as each
    chunk of a response is handed to it, the call hears of it (the send position). At most
    `max_ms` is buffered, oldest dropped (pacing upstream keeps that from happening).
    """

    def __init__(self, max_ms: int = 2000) -> None:
        PacedAudioTrack.__init__(self)
        PulledOutput.__init__(self, TRACK_RATE, FRAME_SAMPLES / TRACK_RATE, max_queued_s=max(20, max_ms) / 1000)

    @property
    def buffered_ms(self) -> float:
        return (self._queued_samples + len(self._partial) // 2) * 1000 / TRACK_RATE

    @property
    def dropped_samples(self) -> int:
        return self.dropped * FRAME_SAMPLES

    def write_pcm(self, pcm: bytes, rate: int) -> None:
        """Audio that belongs to no response (nothing is reported when it has played)."""
        self.write(ResponseAudio("", "", pcm, 0), rate)

    def flush(self) -> None:
        self.clear()

    def _take(self, n: int) -> np.ndarray:
        frame = self.next_frame()
        return np.frombuffer(frame, "<i2") if frame is not None else np.zeros(n, np.int16)


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
