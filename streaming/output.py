"""Reply audio to a peer, written once for every transport: resampling, framing, pacing, hold,
clear, playback reports and waiting for play-out.

A transport declares its rate and frame length and says how a frame (and, where its peer has
them, a mark, a pause and a clear) reaches the peer; one of three bases does the rest, by how
the peer plays what it is sent:

- `MarkedOutput`: frames leave as they come; the peer echoes a mark once everything sent before
  it has played (Twilio marks, Asterisk MARK_MEDIA), and that echo is the playback report.
- `PacedOutput`: the peer plays what arrives (AudioSocket, RTP): `pace()` sends one frame per
  frame length, so a frame's send time is when it is heard.
- `PulledOutput`: the consumer takes frames at its own pace (a WebRTC track's `recv`).

The call binds itself at construction (`bind`): reports reach it through the port, as
`(response_id, position_ms, interrupted)`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

import numpy as np

from kombain.streaming.audio import Resampler
from kombain.streaming.conversation import ResponseAudio

# (response_id, position_ms heard, interrupted): the call's `playback`.
PlaybackListener = Callable[[str, int, bool], None]
Report = tuple[str, int]

MAX_QUEUED_S = 5.0  # what a port may hold (upstream pacing keeps it near 0.5 s); oldest dropped


def _nobody(response_id: str, position_ms: int, interrupted: bool) -> None:
    pass


class OutputBase:
    """Resampling to `rate`, framing in `frame_s` frames, hold, clear and reports; the queue of
    frames not yet sent (or played) is `_items`, each a frame (PCM16 at `rate`, or None for a bare
    report) and the report to give once it has gone."""

    can_pause = False  # True: `hold` pauses what the peer already has, not only what we send

    def __init__(self, rate: int, frame_s: float | None = 0.02, *, max_queued_s: float = MAX_QUEUED_S) -> None:
        self.rate = rate
        self.frame_s = frame_s  # None: each chunk is sent as written (a peer that takes any size)
        self.max_queued_s = max_queued_s
        self.held = False
        self.dropped = 0  # frames dropped from a full queue
        self._items: deque[tuple[bytes | None, Report | None]] = deque()
        self._queued_samples = 0
        self._partial = b""
        self._partial_of: str | None = None  # the response the partial frame belongs to
        self._resampler: Resampler | None = None
        self._listener: PlaybackListener = _nobody
        self._heard: Report | None = None  # the last position reported
        self._idle = asyncio.Event()
        self._idle.set()

    # --- the port (streaming.call.AudioOutput) ------------------------------------------------------

    def bind(self, listener: PlaybackListener) -> None:
        """Where playback reports go (the call, which binds itself when it is built)."""
        self._listener = listener

    def write(self, audio: ResponseAudio, rate: int) -> None:
        """One chunk of a response: resampled to the peer's rate, framed, queued or sent."""
        if self._partial and self._partial_of != audio.response_id:
            self._close_partial()  # the previous response's tail plays, padded, before this one
        pcm = self._resample(audio.pcm, rate)
        report = (audio.response_id, audio.end_ms)
        frames = self._frame(pcm, audio.response_id)
        for i, frame in enumerate(frames):
            self._items.append((frame, report if i == len(frames) - 1 else None))
            self._queued_samples += len(frame) // 2
        if not frames:
            self._items.append((None, report))
        self._bound()
        self._idle.clear()
        self._queued()

    def hold(self, held: bool) -> None:
        """Pause (True) or resume (False): a possible interruption is being confirmed."""
        if held == self.held:
            return
        self.held = held
        if self.can_pause:
            self.send_pause(held)
        if not held:
            self._queued()

    def clear(self) -> None:
        """Barge-in: drop everything not yet played, tell the peer, report the cut."""
        cut = self._pending_response()
        self._items.clear()
        self._queued_samples = 0
        self._partial, self._partial_of = b"", None
        self._resampler = None  # no tail of the cancelled reply leaks into the next one
        self._cleared()
        self._idle.set()
        if cut is not None:
            heard = self._heard[1] if self._heard is not None and self._heard[0] == cut else 0
            self._listener(cut, heard, True)

    async def wait_for_playout(self) -> None:
        """Until everything written has been played (bound it with `asyncio.timeout`)."""
        if self._partial:
            self._close_partial()
            self._queued()
        await self._idle.wait()

    @property
    def queued_s(self) -> float:
        return self._queued_samples / self.rate

    def set_rate(self, rate: int) -> None:
        """The peer changed its rate: what was queued at the old one is dropped."""
        if rate != self.rate:
            self.clear()
            self.rate = rate

    # --- what a transport provides ------------------------------------------------------------------

    def send_pause(self, held: bool) -> None:
        """Pause or resume the peer's own buffer (only where `can_pause`)."""

    def send_clear(self) -> None:
        """Tell the peer to drop what it has buffered (where it buffers)."""

    # --- for the subclasses -------------------------------------------------------------------------

    def _queued(self) -> None:
        """Something was queued or released from a hold."""

    def _cleared(self) -> None:
        self.send_clear()

    def _played(self, report: Report) -> None:
        self._heard = report
        self._listener(report[0], report[1], False)

    def _pop(self) -> tuple[bytes | None, Report | None]:
        frame, report = self._items.popleft()
        if frame is not None:
            self._queued_samples -= len(frame) // 2
        return frame, report

    def _check_idle(self) -> None:
        if not self._items:
            self._idle.set()

    def _pending_response(self) -> str | None:
        for _frame, report in reversed(self._items):
            if report is not None:
                return report[0]
        return self._partial_of

    def _resample(self, pcm: bytes, rate: int) -> bytes:
        if rate == self.rate:
            return pcm
        if self._resampler is None or self._resampler.in_rate != rate or self._resampler.out_rate != self.rate:
            # Low quality is plenty for speech, and with 100 ms chunks it holds back ~2 ms instead of
            # HQ's 31 ms, which would sit there at the end of a reply.
            self._resampler = Resampler(rate, self.rate, quality="LQ")
        samples = self._resampler.process(np.frombuffer(pcm, "<i2").astype(np.float32) / 32768)
        return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()

    def _frame(self, pcm: bytes, response_id: str) -> list[bytes]:
        if self.frame_s is None:
            return [pcm] if pcm else []
        size = self.frame_bytes
        data = self._partial + pcm
        cut = len(data) - len(data) % size
        self._partial, self._partial_of = data[cut:], response_id
        return [data[i:i + size] for i in range(0, cut, size)]

    @property
    def frame_bytes(self) -> int:
        return max(2, round(self.rate * (self.frame_s or 0.02)) * 2)

    def _close_partial(self) -> None:
        """A response's last partial frame, padded with silence, so it is not held back."""
        frame = self._partial + bytes(self.frame_bytes - len(self._partial))
        self._partial, self._partial_of = b"", None
        self._items.append((frame, None))
        self._queued_samples += len(frame) // 2
        self._idle.clear()

    def _bound(self) -> None:
        """Drop the oldest frames past `max_queued_s`: a late reply is worse than a gap."""
        while self._queued_samples + len(self._partial) // 2 > self.max_queued_s * self.rate and self._items:
            frame, _report = self._pop()
            if frame is not None:
                self.dropped += 1


class MarkedOutput(OutputBase):
    """A peer that buffers what it is sent and echoes marks once they are played (Twilio, Asterisk).

    Frames leave at once (the call paces them); while held they wait here, and where the peer
    `can_pause` its own buffer pauses too. Call `mark_played(name)` for each echo."""

    def __init__(self, rate: int, frame_s: float | None = None, *, max_queued_s: float = MAX_QUEUED_S) -> None:
        super().__init__(rate, frame_s, max_queued_s=max_queued_s)
        self._marks: deque[tuple[str, Report]] = deque()  # sent, not yet echoed

    def send_frame(self, pcm: bytes) -> None:
        raise NotImplementedError

    def send_mark(self, name: str) -> None:
        raise NotImplementedError

    @property
    def marks_out(self) -> int:
        return len(self._marks)

    def mark_played(self, name: str) -> None:
        """The peer's echo of a mark: it has played everything up to it."""
        if not any(n == name for n, _ in self._marks):
            return  # a mark from before a clear, or not ours
        while self._marks:
            n, report = self._marks.popleft()
            if n == name:
                self._played(report)
                break
        self._check_idle()

    def _queued(self) -> None:
        while self._items and not self.held:
            frame, report = self._pop()
            if frame is not None:
                self.send_frame(frame)
            if report is not None:
                name = f"{report[0]}.{report[1]}"  # mark names: [A-Za-z0-9._~-] (Asterisk), 64 at most
                self._marks.append((name, report))
                self.send_mark(name)

    def _cleared(self) -> None:
        self._marks.clear()
        self.send_clear()

    def _check_idle(self) -> None:
        if not self._items and not self._marks:
            self._idle.set()

    def _pending_response(self) -> str | None:
        if self._marks:
            return self._marks[-1][1][0]
        return super()._pending_response()


class PacedOutput(OutputBase):
    """A peer that plays what arrives (AudioSocket, RTP): run `pace()`, which sends one frame per
    frame length through `send_frame` and reports each chunk as its last frame leaves."""

    def __init__(self, rate: int, frame_s: float = 0.02, *, max_queued_s: float = MAX_QUEUED_S,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        super().__init__(rate, frame_s, max_queued_s=max_queued_s)
        self._clock, self._sleep = clock, sleep
        self._wake = asyncio.Event()
        self.frames_sent = 0

    def send_frame(self, pcm: bytes) -> Awaitable[None] | None:
        raise NotImplementedError

    def _queued(self) -> None:
        self._wake.set()

    async def pace(self) -> None:
        """Send one frame per frame length while there is audio and no hold."""
        step = self.frame_s or 0.02
        next_at = self._clock()
        while True:
            if not self._items or self.held:
                self._check_idle()
                self._wake.clear()
                await self._wake.wait()
                next_at = self._clock()
                continue
            frame, report = self._pop()
            if frame is not None:
                sent = self.send_frame(frame)
                if sent is not None:
                    await sent
                self.frames_sent += 1
            if report is not None:
                self._played(report)
            if frame is None:
                continue
            next_at += step
            delay = next_at - self._clock()
            if delay > 0:
                await self._sleep(delay)
            else:
                next_at = self._clock()
            self._check_idle()


class PulledOutput(OutputBase):
    """A consumer that takes a frame each frame length on its own clock (a WebRTC track)."""

    def next_frame(self) -> bytes | None:
        """The next frame to play, or None (silence) when there is none or the reply is held. A
        partial frame left when the queue runs dry (a reply's end) plays at once, padded."""
        if self.held:
            return None
        if not self._items and self._partial:
            self._close_partial()
        while self._items:
            frame, report = self._pop()
            if report is not None:
                self._played(report)
            if frame is not None:
                self._check_idle()
                return frame
        self._check_idle()
        return None
