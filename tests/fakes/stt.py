"""A scripted stand-in for `WhisperRuntime`: no model, transcripts from a script."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from kombain.streaming.whisper_runtime import DecodeOptions, DecodeResult, Segment

Script = str | Iterable[str] | Callable[[np.ndarray, str], str]


@dataclass(frozen=True, slots=True)
class DecodeCall:
    """One `transcribe` call the fake answered."""

    kind: str
    samples: int
    options: DecodeOptions


class FakeRuntime:
    """What `StreamingTranscriber` calls on the runtime (`transcribe`, `name`, `pending`), scripted.

    `script` is one text for every decode, a sequence of texts (each final decode takes the next;
    the last repeats; partials see the next one without taking it), or `f(audio, kind) -> text`.
    Speculative decodes are finals too: a turn usually costs one final, a resumed pause two.
    """

    def __init__(self, script: Script = "hello there", *, delay_s: float = 0.0, name: str = "fake-whisper",
                 language: str = "en") -> None:
        self.name = name
        self.multilingual = False
        self.language = language
        self.delay_s = delay_s
        self.calls: list[DecodeCall] = []
        self._fn: Callable[[np.ndarray, str], str] | None = None
        self._texts: list[str] = []
        if callable(script):
            self._fn = script
        elif isinstance(script, str):
            self._texts = [script]
        else:
            self._texts = list(script) or [""]
        self._running = 0

    @property
    def pending(self) -> int:
        """Decodes in progress (the real one counts queued ones too)."""
        return self._running

    def _text(self, audio: np.ndarray, kind: str) -> str:
        """The scripted text for this decode."""
        if self._fn is not None:
            return self._fn(audio, kind)
        if kind == "final" and len(self._texts) > 1:
            return self._texts.pop(0)
        return self._texts[0]

    async def transcribe(self, audio: np.ndarray, kind: str, options: DecodeOptions, key: Any = None,
                         on_segment: Callable[[Segment], None] | None = None) -> DecodeResult:
        """Answer with the script's text after `delay_s` (0: at the next loop turn)."""
        self.calls.append(DecodeCall(kind, len(audio), options))
        self._running += 1
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self._running -= 1
        text = self._text(audio, kind)
        duration = len(audio) / 16000
        segments = (Segment(0.0, duration, text, -0.1, 0.01, 1.0),) if text else ()
        if on_segment is not None:
            for seg in segments:
                on_segment(seg)
        return DecodeResult(text, segments, options.language or self.language, duration, self.delay_s)

    async def aclose(self) -> None:
        """Nothing to release."""
