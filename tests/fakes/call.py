"""Stand-ins for the call host and its calls, for testing a transport's lifecycle without models.

`FakeHost.open_call` has the host's contract (admission, `end` for deadline and drain, the call
bound to its output port) and yields a `FakeCall`, which records what the transport fed it and
speaks a goodbye as the real call does: written to the port, then a `HangupEvent`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np

from kombain.server.host import CallRefused
from kombain.server.metrics import Metrics
from kombain.server.settings import Settings
from kombain.streaming.call import AudioOutput, CallConfig, CallEvent, HangupEvent
from kombain.streaming.conversation import ResponseAudio


class FakeCall:
    """What a transport drives on a `Call`: audio, digits, run/close, goodbye; all recorded."""

    def __init__(self, emit: Callable[[CallEvent], None], output: AudioOutput | None, *, speaks: bool = True,
                 call_id: str = "call_fake", rate: int = 8000) -> None:
        self.id, self.emit, self.output, self.speaks, self.rate = call_id, emit, output, speaks, rate
        self.busy = False
        self.audio_s = 0.0
        self.digits: list[str] = []
        self.reports: list[tuple[str, int, bool]] = []
        self.started = asyncio.Event()
        self.closed = asyncio.Event()
        self.hangup_reason: str | None = None
        if output is not None:
            output.bind(self.playback)

    async def run(self) -> None:
        self.started.set()
        await self.closed.wait()

    def close(self) -> None:
        self.closed.set()

    def push_audio(self, samples: np.ndarray, rate: int) -> None:
        self.audio_s += len(samples) / rate

    async def receive_audio(self, samples: np.ndarray, rate: int) -> None:
        self.push_audio(samples, rate)
        await asyncio.sleep(0)

    async def paced(self) -> None:
        await asyncio.sleep(0)

    def push_dtmf(self, digit: str) -> None:
        self.digits.append(digit)

    def playback(self, response_id: str, position_ms: int, interrupted: bool = False) -> None:
        self.reports.append((response_id, position_ms, interrupted))

    def say(self, response_id: str, ms: int, chunk_ms: int = 100) -> None:
        """Write `ms` of reply audio to the port in `chunk_ms` chunks, as the conversation does."""
        assert self.output is not None
        for end in range(chunk_ms, ms + 1, chunk_ms):
            pcm = (np.ones(self.rate * chunk_ms // 1000) * 1000).astype("<i2").tobytes()
            self.output.write(ResponseAudio(response_id, "item_" + response_id, pcm, end), self.rate)

    def end(self, reason: str, goodbye: str | None = None) -> None:
        """The host's goodbye: said (200 ms of audio) where the call speaks, then the hang-up."""
        self.hangup_reason = self.hangup_reason or reason
        if goodbye and self.speaks and self.output is not None:
            self.say("resp_goodbye", 200)
        self.emit(HangupEvent(self.hangup_reason))


class FakeHost:
    """`CallHost`'s contract for a transport: `open_call`, `admit`, `settings`, `metrics`; `end_all`
    plays the host ending its calls (deadline, drain)."""

    def __init__(self, settings: Settings | None = None, *, refuse: str | None = None, speaks: bool = True) -> None:
        self.settings = settings or Settings()
        self.metrics = Metrics()
        self.refuse, self.speaks = refuse, speaks
        self.calls: list[FakeCall] = []
        self.ends: list[Callable[[str], None]] = []
        self.opened: list[tuple[str, CallConfig]] = []

    def admit(self, transport: str) -> None:
        if self.refuse:
            raise CallRefused("refused", self.refuse, 5)

    @contextlib.asynccontextmanager
    async def open_call(self, transport: str, config: CallConfig, emit: Callable[[CallEvent], None], *,
                        end: Callable[[str], None], output: AudioOutput | None = None, **kw: Any,
                        ) -> AsyncIterator[FakeCall]:
        self.admit(transport)
        call = FakeCall(emit, output, speaks=self.speaks, call_id=kw.get("call_id") or "call_fake")
        self.calls.append(call)
        self.ends.append(end)
        self.opened.append((transport, config))
        try:
            yield call
        finally:
            call.close()
            self.ends.remove(end)

    def end_all(self, reason: str = "server_shutting_down") -> None:
        for end in list(self.ends):
            end(reason)
