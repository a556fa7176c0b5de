"""The audio of a turn being recognised, and the pre-roll kept before speech starts (so a turn
begins with its prefix padding). Positions are samples on the session's 16 kHz clock."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from kombain.streaming.partial_window import PartialWindow
from kombain.streaming.whisper_runtime import DecodeResult


@dataclass
class Turn:
    """One turn's audio and the decodes in flight for it."""

    item_id: str
    start: int  # first sample of the turn audio
    chunks: list[np.ndarray]
    length: int = 0
    last_partial_at: int = 0
    speculative: asyncio.Task[DecodeResult | None] | None = None
    speculative_end: int = -1
    window: PartialWindow = field(default_factory=PartialWindow)  # where its next partial decodes

    def audio(self, end: int | None = None) -> np.ndarray:
        data = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)
        self.chunks = [data]
        return data if end is None else data[: max(0, end - self.start)]

    def speculative_text(self) -> str | None:
        """The speculative decode's words if it has finished (it starts at the same pause), else
        None: the end-of-turn verdict is not held for them. No partial: a word or two behind ("10
        of" for "ten of clubs"), its last word would mislead the cue."""
        spec = self.speculative
        if spec is None or not spec.done() or spec.cancelled() or spec.exception() is not None:
            return None
        result = spec.result()
        return result.text if result else None


class Preroll:
    """The most recent audio before a turn, bounded to what a turn's start can reach back to."""

    def __init__(self) -> None:
        self._chunks: deque[np.ndarray] = deque()
        self._len = 0

    def push(self, samples: np.ndarray, keep: int) -> None:
        """Add audio, dropping the oldest chunks while `keep` samples remain without them."""
        self._chunks.append(samples)
        self._len += len(samples)
        while self._chunks and self._len - len(self._chunks[0]) >= keep:
            self._len -= len(self._chunks.popleft())

    def take(self, start: int, total: int) -> tuple[int, np.ndarray]:
        """The held audio from sample `start` (or from the oldest held, if later) up to `total`,
        the samples received so far, and that start; the pre-roll is emptied."""
        first = total - self._len
        start = max(start, first)
        buf = np.concatenate(list(self._chunks)) if self._chunks else np.zeros(0, np.float32)
        self._chunks.clear()
        self._len = 0
        return start, buf[start - first:]
