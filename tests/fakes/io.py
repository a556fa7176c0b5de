"""A stand-in for a transport's `AudioOutput`: records what the call wrote, held and cleared."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from kombain.streaming.conversation import ResponseAudio


@dataclass(frozen=True, slots=True)
class PortCall:
    """One call on the port: `op` is write / hold / clear; `arg` the audio, the hold flag, or None."""

    op: str
    at: float
    arg: object = None
    rate: int = 0


class FakeAudioOutput:
    """Records `write`, `hold` and `clear` with clock times; `on_write` sees each chunk as it comes."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 on_write: Callable[[ResponseAudio, int], None] | None = None) -> None:
        self.clock = clock
        self.on_write = on_write
        self.calls: list[PortCall] = []
        self.listener: Callable[[str, int, bool], None] = lambda rid, ms, interrupted: None

    def write(self, audio: ResponseAudio, rate: int) -> None:
        """Take one paced chunk of PCM16 at `rate`."""
        self.calls.append(PortCall("write", self.clock(), audio, rate))
        if self.on_write is not None:
            self.on_write(audio, rate)

    def hold(self, held: bool) -> None:
        """Pause (True) or resume (False) playback."""
        self.calls.append(PortCall("hold", self.clock(), held))

    def clear(self) -> None:
        """Drop what is buffered (barge-in)."""
        self.calls.append(PortCall("clear", self.clock()))

    def bind(self, listener: Callable[[str, int, bool], None]) -> None:
        """The call's playback reports: a test plays the peer with `report(...)`."""
        self.listener = listener

    def report(self, response_id: str, position_ms: int, interrupted: bool = False) -> None:
        """What a peer would report as heard."""
        self.listener(response_id, position_ms, interrupted)

    @property
    def writes(self) -> list[ResponseAudio]:
        """Every chunk written, in order."""
        return [c.arg for c in self.calls if isinstance(c.arg, ResponseAudio)]

    def ops(self, *, writes: bool = False) -> list[tuple[str, object]]:
        """(op, arg) in order, without writes unless asked: e.g. [("hold", True), ("clear", None)]."""
        return [(c.op, c.arg) for c in self.calls if writes or c.op != "write"]

    def audio_ms(self, response_id: str | None = None) -> int:
        """Milliseconds of audio written (for one response, or all)."""
        total = 0
        for c in self.calls:
            audio = c.arg
            if isinstance(audio, ResponseAudio) and response_id in (None, audio.response_id):
                total += round(len(audio.pcm) / 2 / c.rate * 1000)
        return total
