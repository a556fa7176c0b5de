"""A stand-in for `VoicePool`: each pushed text becomes a constant tone, ~60 ms a word, at once."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import numpy as np

from kombain.streaming.tts import MAX_RATE, MIN_RATE, SpeechChunk, UnknownVoice

DEFAULT_VOICE = "fake-voice"


def tone_pcm16(duration_s: float, rate: int, freq: float = 300.0, amp: float = 0.3) -> bytes:
    """PCM16 LE mono of a sine tone."""
    t = np.arange(round(duration_s * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t) * 32767).astype("<i2").tobytes()


class FakeSpeechStream:
    """Like `SpeechStream`: text in, one `SpeechChunk` per non-empty `push_text` out, in order."""

    def __init__(self, pool: FakeVoicePool, voice: str, rate: int) -> None:
        self.pool, self.voice, self.rate = pool, voice, rate
        self.pushed: list[str] = []
        self._queue: deque[str] = deque()
        self._wake = asyncio.Event()
        self._ended = False
        self._closed = False

    def push_text(self, text: str) -> None:
        """Queue one chunk of text (whitespace-only text is ignored)."""
        if self._ended or self._closed:
            raise RuntimeError("push_text after end_input or aclose")
        self.pushed.append(text)
        if text.strip():
            self._queue.append(text.strip())
            self._wake.set()

    def flush(self) -> None:
        """Nothing buffered: every push is already a chunk."""

    def end_input(self) -> None:
        """No more text: iteration ends once the queue is spoken."""
        self._ended = True
        self._wake.set()

    def cancel(self) -> None:
        """Stop now; queued text is dropped."""
        self._closed = True
        self._queue.clear()
        self._wake.set()

    async def aclose(self) -> None:
        """Async `cancel`."""
        self.cancel()

    @property
    def closed(self) -> bool:
        return self._closed

    def __aiter__(self) -> FakeSpeechStream:
        return self

    async def __anext__(self) -> SpeechChunk:
        """The next chunk as soon as its text is there (`delay_s` of the pool, 0 by default)."""
        while True:
            if self._closed:
                raise StopAsyncIteration
            if self._queue:
                text = self._queue.popleft()
                if self.pool.delay_s:
                    await asyncio.sleep(self.pool.delay_s)
                words = max(1, len(text.split()))
                return SpeechChunk(tone_pcm16(words * self.pool.word_ms / 1000, self.rate), self.rate, text)
            if self._ended:
                raise StopAsyncIteration
            self._wake.clear()
            await self._wake.wait()

    async def __aenter__(self) -> FakeSpeechStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cancel()


class FakeVoicePool:
    """`catalog`, `default_voice`, `stream(voice, rate)`; records every stream it made."""

    def __init__(self, voices: tuple[str, ...] = (DEFAULT_VOICE,), *, word_ms: int = 60,
                 delay_s: float = 0.0) -> None:
        self.catalog: dict[str, Any] = {v: v for v in voices}
        self.default_voice = voices[0]
        self.word_ms = word_ms
        self.delay_s = delay_s
        self.streams: list[FakeSpeechStream] = []

    def resolve(self, voice: str | None) -> str:
        """A voice id (None for the default); raises UnknownVoice."""
        if not voice:
            return self.default_voice
        if voice not in self.catalog:
            raise UnknownVoice(f"unknown voice {voice!r}")
        return voice

    def stream(self, voice: str | None = None, rate: int = 24000, speed: float = 1.0,
               **_: Any) -> FakeSpeechStream:
        """A new stream for one reply."""
        if not MIN_RATE <= rate <= MAX_RATE:
            raise ValueError(f"sample rate must be {MIN_RATE} to {MAX_RATE} Hz, not {rate}")
        stream = FakeSpeechStream(self, self.resolve(voice), rate)
        self.streams.append(stream)
        return stream

    @property
    def pending(self) -> int:
        return 0

    def close(self) -> None:
        """Nothing to stop."""
